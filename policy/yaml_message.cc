#include "policy/yaml_message.h"

#include "policy/body_codec.h"

#include <google/protobuf/stubs/common.h>

#include <algorithm>
#include <sstream>
#include <optional>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/struct.pb.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace osh::policy {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

// Parsing error carried up the recursion; converted to a Status at the module boundary.
struct ReadError {
  int line;
  std::string path;
  std::string message;
};

class Reader {
 public:
  Reader(const YamlReadOptions& options, LineMap* lines) : options_(options), lines_(lines) {}

  void ReadMessage(const YAML::Node& node, Message* out, const std::string& path, bool top_level) {
    Record(path, node);
    if (node.IsNull()) return;
    const Descriptor* descriptor = out->GetDescriptor();
    if (node.IsScalar()) {
      if (auto shorthand = options_.scalar_as_field.find(descriptor->full_name());
          shorthand != options_.scalar_as_field.end()) {
        const FieldDescriptor* field = descriptor->FindFieldByName(shorthand->second);
        if (field != nullptr) {
          SetScalar(node, out, field, path);
          return;
        }
      }
    }
    if (!node.IsMap()) Fail(node, path, "expected a mapping");
    if (descriptor->full_name() == "google.protobuf.Struct") {
      ReadStruct(node, static_cast<google::protobuf::Struct*>(out), path);
      return;
    }
    std::set<std::string> seen;
    for (const auto& entry : node) {
      const YAML::Node& key_node = entry.first;
      if (!key_node.IsScalar()) Fail(key_node, path, "keys must be plain strings");
      std::string key = key_node.Scalar();
      const std::string key_path = JoinFieldPath(path, key);
      if (!seen.insert(key).second) Fail(key_node, key_path, "duplicate key");
      std::string field_name = key;
      const FieldDescriptor* field = nullptr;
      if (top_level) {
        if (auto alias = options_.top_level_aliases.find(key); alias != options_.top_level_aliases.end()) {
          field_name = alias->second;
          field = descriptor->FindFieldByName(field_name);
        } else {
          bool aliased_away = false;
          for (const auto& [file_key, proto_name] : options_.top_level_aliases) {
            if (proto_name == key) aliased_away = true;
          }
          field = aliased_away ? nullptr : descriptor->FindFieldByName(key);
        }
      } else {
        field = descriptor->FindFieldByName(key);
      }
      if (field == nullptr) {
        if (auto entry_key = options_.map_entry_keys.find(absl::StrCat(descriptor->full_name(), ".", key));
            entry_key != options_.map_entry_keys.end()) {
          ReadMapEntryKey(entry.second, out, entry_key->second.first, entry_key->second.second, key_path);
          continue;
        }
      }
      if (field != nullptr && options_.refused_fields.contains(field->full_name())) field = nullptr;
      if (field == nullptr) Fail(key_node, key_path, UnknownKeyMessage(descriptor, key, top_level));
      ReadField(entry.second, out, field, key_path);
    }
  }

 private:
  [[noreturn]] void Fail(const YAML::Node& node, const std::string& path, std::string message) {
    throw ReadError{node.Mark().line + 1, path, std::move(message)};
  }

  void Record(const std::string& path, const YAML::Node& node) {
    if (lines_ != nullptr && !path.empty()) lines_->emplace(path, node.Mark().line + 1);
  }

  // `key: value` read as `<map_field>: {<entry_key>: value}` (YamlReadOptions::map_entry_keys).
  void ReadMapEntryKey(const YAML::Node& value, Message* out, const std::string& map_field,
                       const std::string& entry_key, const std::string& path) {
    const FieldDescriptor* field = out->GetDescriptor()->FindFieldByName(map_field);
    if (field == nullptr || !field->is_map()) Fail(value, path, "unsupported shorthand");
    const Reflection* reflection = out->GetReflection();
    Message* map_entry = reflection->AddMessage(out, field);
    const FieldDescriptor* key_field = field->message_type()->map_key();
    const FieldDescriptor* value_field = field->message_type()->map_value();
    map_entry->GetReflection()->SetString(map_entry, key_field, entry_key);
    Record(path, value);
    if (value_field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      ReadMessage(value, map_entry->GetReflection()->MutableMessage(map_entry, value_field), path, false);
    } else {
      SetScalar(value, map_entry, value_field, path);
    }
  }

  // An enum value by its full name, or (short_enum_names) by its last words.
  const google::protobuf::EnumValueDescriptor* FindEnumValue(const google::protobuf::EnumDescriptor* type,
                                                             const std::string& text) {
    if (const auto* exact = type->FindValueByName(text); exact != nullptr) return exact;
    if (!options_.short_enum_names || text.empty()) return nullptr;
    std::string wanted = absl::AsciiStrToUpper(text);
    std::replace(wanted.begin(), wanted.end(), '-', '_');
    if (wanted == "UNSPECIFIED") return nullptr;
    for (int i = 0; i < type->value_count(); ++i) {
      const std::string& name = type->value(i)->name();
      if (name.size() > wanted.size() && name.compare(name.size() - wanted.size(), wanted.size(), wanted) == 0 &&
          name[name.size() - wanted.size() - 1] == '_') {
        return type->value(i);
      }
    }
    return nullptr;
  }

  std::string UnknownKeyMessage(const Descriptor* descriptor, const std::string& key, bool top_level) {
    std::string known;
    for (int i = 0; i < descriptor->field_count(); ++i) {
      if (options_.refused_fields.contains(descriptor->field(i)->full_name())) continue;
      std::string name = descriptor->field(i)->name();
      if (top_level) {
        for (const auto& [file_key, proto_name] : options_.top_level_aliases) {
          if (proto_name == name) name = file_key;
        }
      }
      absl::StrAppend(&known, known.empty() ? "" : ", ", name);
    }
    return absl::StrCat("unknown key '", key, "' (known: ", known, ")");
  }

  void ReadField(const YAML::Node& node, Message* out, const FieldDescriptor* field, const std::string& path) {
    Record(path, node);
    if (node.IsNull()) return;  // `key:` with no value leaves the field unset.
    const Reflection* reflection = out->GetReflection();
    if (field->is_map()) {
      if (!node.IsMap()) Fail(node, path, "expected a mapping");
      const FieldDescriptor* key_field = field->message_type()->map_key();
      const FieldDescriptor* value_field = field->message_type()->map_value();
      std::set<std::string> seen;
      for (const auto& entry : node) {
        if (!entry.first.IsScalar()) Fail(entry.first, path, "map keys must be plain strings");
        const std::string key = entry.first.Scalar();
        const std::string entry_path = JoinFieldPath(path, key);
        if (!seen.insert(key).second) Fail(entry.first, entry_path, "duplicate key");
        Message* map_entry = reflection->AddMessage(out, field);
        SetScalar(entry.first, map_entry, key_field, entry_path);
        if (value_field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
          ReadMessage(entry.second, map_entry->GetReflection()->MutableMessage(map_entry, value_field), entry_path,
                      false);
        } else {
          Record(entry_path, entry.second);
          SetScalar(entry.second, map_entry, value_field, entry_path);
        }
      }
      return;
    }
    if (field->is_repeated()) {
      if (!node.IsSequence()) Fail(node, path, "expected a list");
      if (node.size() == 0 && options_.non_empty_lists.contains(field->full_name())) {
        Fail(node, path, "an empty list is refused here (leave the key out instead)");
      }
      for (size_t i = 0; i < node.size(); ++i) {
        const std::string item_path = absl::StrCat(path, "[", i, "]");
        const YAML::Node item = node[i];
        if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
          ReadMessage(item, reflection->AddMessage(out, field), item_path, false);
        } else {
          Record(item_path, item);
          AddScalar(item, out, field, item_path);
        }
      }
      return;
    }
    if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      ReadMessage(node, reflection->MutableMessage(out, field), path, false);
      return;
    }
    SetScalar(node, out, field, path);
  }

  std::string ScalarText(const YAML::Node& node, const std::string& path, const char* expected) {
    if (!node.IsScalar()) Fail(node, path, absl::StrCat("expected ", expected));
    return node.Scalar();
  }

  uint64_t ReadUnsigned(const YAML::Node& node, const std::string& path, uint64_t max) {
    const std::string text = ScalarText(node, path, "a number");
    uint64_t value = 0;
    const bool digits = !text.empty() && std::all_of(text.begin(), text.end(), absl::ascii_isdigit);
    if (!digits || !absl::SimpleAtoi(text, &value) || value > max) {
      Fail(node, path, absl::StrCat("expected a whole number from 0 to ", max, ", got '", text, "'"));
    }
    return value;
  }

  int64_t ReadSigned(const YAML::Node& node, const std::string& path, int64_t min, int64_t max) {
    const std::string text = ScalarText(node, path, "a number");
    int64_t value = 0;
    if (!absl::SimpleAtoi(text, &value) || value < min || value > max) {
      Fail(node, path, absl::StrCat("expected a whole number from ", min, " to ", max, ", got '", text, "'"));
    }
    return value;
  }

  bool ReadBool(const YAML::Node& node, const std::string& path) {
    const std::string text = ScalarText(node, path, "true or false");
    if (node.Tag() != "!" ) {
      if (text == "true") return true;
      if (text == "false") return false;
    }
    Fail(node, path, absl::StrCat("expected true or false, got '", text, "'"));
  }

  std::string ReadString(const YAML::Node& node, const std::string& path) {
    return ScalarText(node, path, "a string");
  }

  void SetScalar(const YAML::Node& node, Message* out, const FieldDescriptor* field, const std::string& path) {
    const Reflection* r = out->GetReflection();
    switch (field->cpp_type()) {
      case FieldDescriptor::CPPTYPE_STRING: r->SetString(out, field, ReadString(node, path)); break;
      case FieldDescriptor::CPPTYPE_BOOL: r->SetBool(out, field, ReadBool(node, path)); break;
      case FieldDescriptor::CPPTYPE_UINT32:
        r->SetUInt32(out, field, static_cast<uint32_t>(ReadUnsigned(node, path, std::numeric_limits<uint32_t>::max())));
        break;
      case FieldDescriptor::CPPTYPE_UINT64:
        r->SetUInt64(out, field, ReadUnsigned(node, path, std::numeric_limits<uint64_t>::max()));
        break;
      case FieldDescriptor::CPPTYPE_INT32:
        r->SetInt32(out, field, static_cast<int32_t>(ReadSigned(node, path, std::numeric_limits<int32_t>::min(),
                                                                std::numeric_limits<int32_t>::max())));
        break;
      case FieldDescriptor::CPPTYPE_INT64:
        r->SetInt64(out, field, ReadSigned(node, path, std::numeric_limits<int64_t>::min(),
                                           std::numeric_limits<int64_t>::max()));
        break;
      case FieldDescriptor::CPPTYPE_ENUM: {
        const std::string text = ScalarText(node, path, "an enum name");
        const auto* value = FindEnumValue(field->enum_type(), text);
        if (value == nullptr) Fail(node, path, absl::StrCat("unknown value '", text, "'"));
        r->SetEnum(out, field, value);
        break;
      }
      default: Fail(node, path, "unsupported field type");
    }
  }

  void AddScalar(const YAML::Node& node, Message* out, const FieldDescriptor* field, const std::string& path) {
    const Reflection* r = out->GetReflection();
    switch (field->cpp_type()) {
      case FieldDescriptor::CPPTYPE_STRING: r->AddString(out, field, ReadString(node, path)); break;
      case FieldDescriptor::CPPTYPE_BOOL: r->AddBool(out, field, ReadBool(node, path)); break;
      case FieldDescriptor::CPPTYPE_UINT32:
        r->AddUInt32(out, field, static_cast<uint32_t>(ReadUnsigned(node, path, std::numeric_limits<uint32_t>::max())));
        break;
      case FieldDescriptor::CPPTYPE_UINT64:
        r->AddUInt64(out, field, ReadUnsigned(node, path, std::numeric_limits<uint64_t>::max()));
        break;
      default: Fail(node, path, "unsupported list type");
    }
  }

  // google.protobuf.Struct: free-form configuration (middleware config).
  void ReadStruct(const YAML::Node& node, google::protobuf::Struct* out, const std::string& path) {
    std::set<std::string> seen;
    for (const auto& entry : node) {
      if (!entry.first.IsScalar()) Fail(entry.first, path, "keys must be plain strings");
      const std::string key = entry.first.Scalar();
      if (!seen.insert(key).second) Fail(entry.first, JoinFieldPath(path, key), "duplicate key");
      ReadValue(entry.second, &(*out->mutable_fields())[key], JoinFieldPath(path, key));
    }
  }

  void ReadValue(const YAML::Node& node, google::protobuf::Value* out, const std::string& path) {
    Record(path, node);
    if (node.IsNull()) {
      out->set_null_value(google::protobuf::NULL_VALUE);
    } else if (node.IsMap()) {
      ReadStruct(node, out->mutable_struct_value(), path);
    } else if (node.IsSequence()) {
      auto* list = out->mutable_list_value();
      for (size_t i = 0; i < node.size(); ++i) ReadValue(node[i], list->add_values(), absl::StrCat(path, "[", i, "]"));
    } else {
      const std::string& text = node.Scalar();
      double number = 0;
      if (node.Tag() == "!") {
        out->set_string_value(text);  // quoted: always a string
      } else if (text == "true" || text == "false") {
        out->set_bool_value(text == "true");
      } else if (absl::SimpleAtod(text, &number) && std::isfinite(number) && !text.empty() &&
                 (absl::ascii_isdigit(text[0]) || text[0] == '-' || text[0] == '+' || text[0] == '.')) {
        out->set_number_value(number);
      } else {
        out->set_string_value(text);
      }
    }
  }

  const YamlReadOptions& options_;
  LineMap* lines_;
};

void EmitMessage(YAML::Emitter& out, const Message& message, const std::map<std::string, std::string>* renames);

// A string as a plain scalar when it is plainly safe (paths, hosts, ids), else double-quoted: the
// emitter's own plain-scalar choice lets some text (leading or trailing spaces, a no-break space) read
// back differently, and `policy get` output must set back byte for byte.
void EmitString(YAML::Emitter& out, const std::string& text) {
  const bool plain = !text.empty() && std::all_of(text.begin(), text.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.' || c == '/' ||
           c == '@' || c == '+';
  }) && text.front() != '-';
  if (plain) {
    out << text;
  } else {
    out << YAML::DoubleQuoted << text;
  }
}

void EmitScalar(YAML::Emitter& out, const Message& message, const FieldDescriptor* field, int index) {
  const Reflection* r = message.GetReflection();
  const bool rep = index >= 0;
  switch (field->cpp_type()) {
    case FieldDescriptor::CPPTYPE_STRING:
      EmitString(out, rep ? r->GetRepeatedString(message, field, index) : r->GetString(message, field));
      break;
    case FieldDescriptor::CPPTYPE_BOOL: out << (rep ? r->GetRepeatedBool(message, field, index) : r->GetBool(message, field)); break;
    case FieldDescriptor::CPPTYPE_UINT32: out << (rep ? r->GetRepeatedUInt32(message, field, index) : r->GetUInt32(message, field)); break;
    case FieldDescriptor::CPPTYPE_UINT64: out << (rep ? r->GetRepeatedUInt64(message, field, index) : r->GetUInt64(message, field)); break;
    case FieldDescriptor::CPPTYPE_INT32: out << (rep ? r->GetRepeatedInt32(message, field, index) : r->GetInt32(message, field)); break;
    case FieldDescriptor::CPPTYPE_INT64: out << (rep ? r->GetRepeatedInt64(message, field, index) : r->GetInt64(message, field)); break;
    case FieldDescriptor::CPPTYPE_ENUM: out << (rep ? r->GetRepeatedEnum(message, field, index) : r->GetEnum(message, field))->name(); break;
    default: out << YAML::Null;
  }
}

void EmitValue(YAML::Emitter& out, const google::protobuf::Value& value) {
  switch (value.kind_case()) {
    case google::protobuf::Value::kStructValue:
      out << YAML::BeginMap;
      {
        std::map<std::string, const google::protobuf::Value*> sorted;
        for (const auto& [k, v] : value.struct_value().fields()) sorted[k] = &v;
        for (const auto& [k, v] : sorted) { out << YAML::Key << k << YAML::Value; EmitValue(out, *v); }
      }
      out << YAML::EndMap;
      break;
    case google::protobuf::Value::kListValue:
      out << YAML::BeginSeq;
      for (const auto& v : value.list_value().values()) EmitValue(out, v);
      out << YAML::EndSeq;
      break;
    case google::protobuf::Value::kBoolValue: out << value.bool_value(); break;
    case google::protobuf::Value::kNumberValue: out << value.number_value(); break;
    case google::protobuf::Value::kStringValue: out << YAML::DoubleQuoted << value.string_value(); break;
    default: out << YAML::Null;
  }
}

void EmitMessage(YAML::Emitter& out, const Message& message, const std::map<std::string, std::string>* renames) {
  if (message.GetDescriptor()->full_name() == "google.protobuf.Struct") {
    google::protobuf::Value value;
    value.mutable_struct_value()->CopyFrom(message);
    EmitValue(out, value);
    return;
  }
  const Reflection* r = message.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  r->ListFields(message, &fields);  // in field-number order, set fields only
  out << YAML::BeginMap;
  for (const FieldDescriptor* field : fields) {
    std::string name = field->name();
    if (renames != nullptr) {
      if (auto it = renames->find(name); it != renames->end()) name = it->second;
    }
    out << YAML::Key << name << YAML::Value;
    if (field->is_map()) {
      std::map<std::string, const Message*> sorted;
      const FieldDescriptor* key_field = field->message_type()->map_key();
      for (int i = 0; i < r->FieldSize(message, field); ++i) {
        const Message& entry = r->GetRepeatedMessage(message, field, i);
        sorted[entry.GetReflection()->GetString(entry, key_field)] = &entry;
      }
      out << YAML::BeginMap;
      for (const auto& [key, entry] : sorted) {
        out << YAML::Key;
        EmitString(out, key);
        out << YAML::Value;
        const FieldDescriptor* value_field = entry->GetDescriptor()->map_value();
        if (value_field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
          EmitMessage(out, entry->GetReflection()->GetMessage(*entry, value_field), nullptr);
        } else {
          EmitScalar(out, *entry, value_field, -1);
        }
      }
      out << YAML::EndMap;
    } else if (field->is_repeated()) {
      out << YAML::BeginSeq;
      for (int i = 0; i < r->FieldSize(message, field); ++i) {
        if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
          EmitMessage(out, r->GetRepeatedMessage(message, field, i), nullptr);
        } else {
          EmitScalar(out, message, field, i);
        }
      }
      out << YAML::EndSeq;
    } else if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      EmitMessage(out, r->GetMessage(message, field), nullptr);
    } else {
      EmitScalar(out, message, field, -1);
    }
  }
  out << YAML::EndMap;
}

}  // namespace

namespace {

// Text a policy string may not hold: a control character other than tab and newline, or bytes that are
// not UTF-8 (YAML escapes can produce them even from a valid file: yaml-cpp decodes "\_" to one byte).
bool HasControl(const std::string& text) {
  return std::any_of(text.begin(), text.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return (u < 0x20 && c != '\t' && c != '\n') || u == 0x7f;
  }) || !google::protobuf::internal::IsStructurallyValidUTF8(text.data(), static_cast<int>(text.size()));
}

// The field path of the first string (value or map key) holding a control character other than tab and
// newline: such text cannot be written back as YAML as it was read, and no policy field needs it.
std::optional<std::string> ControlCharacterAt(const Message& message, const std::string& prefix) {
  const auto* reflection = message.GetReflection();
  std::vector<const google::protobuf::FieldDescriptor*> fields;
  reflection->ListFields(message, &fields);
  for (const auto* field : fields) {
    const std::string path = prefix.empty() ? field->name() : absl::StrCat(prefix, ".", field->name());
    if (field->is_map()) {
      const auto* key_field = field->message_type()->map_key();
      const auto* value_field = field->message_type()->map_value();
      for (int i = 0; i < reflection->FieldSize(message, field); ++i) {
        const Message& entry = reflection->GetRepeatedMessage(message, field, i);
        const std::string key = key_field->cpp_type() == google::protobuf::FieldDescriptor::CPPTYPE_STRING
                                    ? entry.GetReflection()->GetString(entry, key_field)
                                    : "";
        const std::string entry_path = absl::StrCat(path, ".", key);
        if (HasControl(key)) return path;
        if (value_field->cpp_type() == google::protobuf::FieldDescriptor::CPPTYPE_STRING &&
            HasControl(entry.GetReflection()->GetString(entry, value_field))) {
          return entry_path;
        }
        if (value_field->cpp_type() == google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE) {
          if (auto inner = ControlCharacterAt(entry.GetReflection()->GetMessage(entry, value_field), entry_path)) return inner;
        }
      }
    } else if (field->cpp_type() == google::protobuf::FieldDescriptor::CPPTYPE_STRING) {
      if (field->is_repeated()) {
        for (int i = 0; i < reflection->FieldSize(message, field); ++i) {
          if (HasControl(reflection->GetRepeatedString(message, field, i))) return absl::StrCat(path, "[", i, "]");
        }
      } else if (HasControl(reflection->GetString(message, field))) {
        return path;
      }
    } else if (field->cpp_type() == google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE) {
      if (field->is_repeated()) {
        for (int i = 0; i < reflection->FieldSize(message, field); ++i) {
          if (auto inner = ControlCharacterAt(reflection->GetRepeatedMessage(message, field, i), absl::StrCat(path, "[", i, "]"))) {
            return inner;
          }
        }
      } else if (auto inner = ControlCharacterAt(reflection->GetMessage(message, field), path)) {
        return inner;
      }
    }
  }
  return std::nullopt;
}

// Counts the nodes a YAML document expands to, aliases included, without building it: an alias bomb (a
// few hundred bytes whose aliases expand to billions of nodes) is refused before YAML::Load builds or
// anything walks it. Counts saturate at the limit.
// Stops at the start of a document (the one after the policy's): its line, 1-based.
class DocumentProbe final : public YAML::EventHandler {
 public:
  struct Found {
    int line;
  };
  void OnDocumentStart(const YAML::Mark& mark) override { throw Found{mark.line + 1}; }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t, const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
  int line() const { return 1; }  // a document with no start event (never seen): the file's first line
};

class ExpansionCounter final : public YAML::EventHandler {
 public:
  struct TooLarge {
    YAML::Mark mark;
  };
  explicit ExpansionCounter(uint64_t limit) : limit_(limit) {}

  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark& mark, YAML::anchor_t anchor) override { Leaf(mark, anchor); }
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    auto it = sizes_.find(anchor);
    Add(mark, it == sizes_.end() ? 1 : it->second);
  }
  void OnScalar(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor, const std::string&) override {
    Leaf(mark, anchor);
  }
  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor, YAML::EmitterStyle::value) override {
    open_.push_back({anchor, 1, mark});
  }
  void OnSequenceEnd() override { Close(); }
  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor, YAML::EmitterStyle::value) override {
    open_.push_back({anchor, 1, mark});
  }
  void OnMapEnd() override { Close(); }

 private:
  struct Open {
    YAML::anchor_t anchor;
    uint64_t nodes;
    YAML::Mark mark;
  };
  void Leaf(const YAML::Mark& mark, YAML::anchor_t anchor) {
    if (anchor != YAML::NullAnchor) sizes_[anchor] = 1;
    Add(mark, 1);
  }
  void Add(const YAML::Mark& mark, uint64_t nodes) {
    uint64_t& into = open_.empty() ? total_ : open_.back().nodes;
    into = std::min(limit_ + 1, into + nodes);
    if (into > limit_ || total_ > limit_) throw TooLarge{mark};
  }
  void Close() {
    if (open_.empty()) return;
    const Open closed = open_.back();
    open_.pop_back();
    if (closed.anchor != YAML::NullAnchor) sizes_[closed.anchor] = closed.nodes;
    Add(closed.mark, closed.nodes);
  }

  const uint64_t limit_;
  uint64_t total_ = 0;
  std::vector<Open> open_;
  std::map<YAML::anchor_t, uint64_t> sizes_;
};

}  // namespace

absl::Status ReadYamlMessage(absl::string_view text, absl::string_view source, const YamlReadOptions& options,
                             Message* out, LineMap* lines) {
  out->Clear();
  // Protobuf strings are UTF-8: refuse other bytes here, with their line, rather than store text that
  // cannot be written back as it was read.
  const size_t valid = static_cast<size_t>(
      google::protobuf::internal::UTF8SpnStructurallyValid(google::protobuf::StringPiece(text.data(), text.size())));
  if (valid < text.size()) {
    const auto line = 1 + std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(valid), '\n');
    return absl::InvalidArgumentError(
        absl::StrCat(source, ":", line, ": not valid UTF-8 (byte ", valid, " of the file)"));
  }
  if (text.size() > kMaxYamlBytes) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", text.size(), " bytes, more than the ", kMaxYamlBytes,
                                                   " a policy file may have"));
  }
  std::istringstream stream{std::string(text)};
  YAML::Parser parser(stream);
  bool first = false;
  try {
    ExpansionCounter counter(kMaxYamlNodes);
    first = parser.HandleNextDocument(counter);
  } catch (const ExpansionCounter::TooLarge& error) {
    return absl::InvalidArgumentError(absl::StrCat(source, ":", error.mark.line + 1, ": the document expands to more than ",
                                                   kMaxYamlNodes, " nodes (aliases included): refused"));
  } catch (const YAML::Exception&) {
    // A syntax error: YAML::Load below reports it with its line.
  }
  if (first) {
    // One document only, as upstream's loader (serde) has it: YAML::Load would read the first and drop
    // the rest — settings the author wrote, silently not applied.
    DocumentProbe probe;
    int line = 0;
    try {
      if (parser.HandleNextDocument(probe)) line = probe.line();
    } catch (const DocumentProbe::Found& found) {
      line = found.line;
    } catch (const YAML::Exception& error) {
      line = error.mark.line + 1;
    }
    if (line > 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ":", line, ": a second YAML document: the file must hold exactly one (nothing after it is read)"));
    }
  }
  try {
    const YAML::Node root = YAML::Load(std::string(text));
    if (!root.IsDefined() || root.IsNull()) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": the document is empty"));
    }
    Reader reader(options, lines);
    reader.ReadMessage(root, out, "", true);
  } catch (const ReadError& error) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ":", error.line, ": ", error.path.empty() ? "" : error.path + ": ", error.message));
  } catch (const YAML::Exception& error) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ":", error.mark.line + 1, ": syntax error: ", error.msg));
  }
  if (auto path = ControlCharacterAt(*out, "")) {
    const int line = lines != nullptr && lines->contains(*path) ? lines->at(*path) : 0;
    return absl::InvalidArgumentError(absl::StrCat(source, line > 0 ? absl::StrCat(":", line) : "", ": ", *path,
                                                   ": a control character (only tab and newline are allowed) or text that is not UTF-8"));
  }
  return absl::OkStatus();
}

std::string WriteYamlMessage(const Message& message, const std::map<std::string, std::string>& top_level_aliases) {
  std::map<std::string, std::string> renames;
  for (const auto& [file_key, proto_name] : top_level_aliases) renames[proto_name] = file_key;
  YAML::Emitter out;
  EmitMessage(out, message, &renames);
  return std::string(out.c_str()) + "\n";
}

int LineOf(const LineMap& lines, absl::string_view path) {
  std::string current(path);
  while (!current.empty()) {
    if (auto it = lines.find(current); it != lines.end()) return it->second;
    const auto cut = current.find_last_of(".[");
    if (cut == std::string::npos) break;
    current.resize(cut);
  }
  return 0;
}

}  // namespace osh::policy
