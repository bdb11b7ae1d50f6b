#include "policy/strict_wire.h"

#include "policy/body_codec.h"

#include <map>
#include <set>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/wire_format_lite.h>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace osh::policy {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::internal::WireFormatLite;
using Coded = google::protobuf::io::CodedInputStream;

constexpr int kMaxDepth = 64;

absl::Status Refuse(const std::string& path, const std::string& what) {
  return absl::InvalidArgumentError(path.empty() ? what : absl::StrCat(path, ": ", what));
}

WireFormatLite::WireType ExpectedWireType(const FieldDescriptor& field) {
  return WireFormatLite::WireTypeForFieldType(static_cast<WireFormatLite::FieldType>(field.type()));
}

absl::Status CheckMessage(const Descriptor& type, absl::string_view bytes, const std::string& path, int depth);

// A map entry: key (1) and value (2), each at most once, nothing else. Returns its key's text in `key`.
absl::Status CheckMapEntry(const Descriptor& entry, absl::string_view bytes, const std::string& path, int depth,
                           std::string* key) {
  Coded in(reinterpret_cast<const uint8_t*>(bytes.data()), static_cast<int>(bytes.size()));
  bool seen[3] = {false, false, false};
  while (true) {
    const uint32_t tag = in.ReadTag();
    if (tag == 0) return in.ConsumedEntireMessage() || in.CurrentPosition() == static_cast<int>(bytes.size())
                             ? absl::OkStatus()
                             : Refuse(path, "a map entry does not decode");
    const int number = static_cast<int>(WireFormatLite::GetTagFieldNumber(tag));
    if (number != 1 && number != 2) return Refuse(path, absl::StrCat("field ", number, " in a map entry"));
    if (seen[number]) return Refuse(path, absl::StrCat(number == 1 ? "key" : "value", " given twice in a map entry"));
    seen[number] = true;
    const FieldDescriptor& field = *entry.FindFieldByNumber(number);
    if (WireFormatLite::GetTagWireType(tag) != ExpectedWireType(field)) {
      return Refuse(path, absl::StrCat("a map entry's ", field.name(), " has the wrong wire type"));
    }
    if (ExpectedWireType(field) == WireFormatLite::WIRETYPE_LENGTH_DELIMITED) {
      uint32_t length = 0;
      std::string value;
      if (!in.ReadVarint32(&length) || !in.ReadString(&value, static_cast<int>(length))) {
        return Refuse(path, "a map entry does not decode");
      }
      if (number == 1) {
        *key = value;
      } else if (field.type() == FieldDescriptor::TYPE_MESSAGE) {
        if (auto s = CheckMessage(*field.message_type(), value, path, depth + 1); !s.ok()) return s;
      }
    } else {
      uint64_t value = 0;
      bool read = false;
      switch (ExpectedWireType(field)) {
        case WireFormatLite::WIRETYPE_VARINT: read = in.ReadVarint64(&value); break;
        case WireFormatLite::WIRETYPE_FIXED64: read = in.ReadLittleEndian64(&value); break;
        case WireFormatLite::WIRETYPE_FIXED32: {
          uint32_t v32 = 0;
          read = in.ReadLittleEndian32(&v32);
          value = v32;
          break;
        }
        default: break;
      }
      if (!read) return Refuse(path, "a map entry does not decode");
      if (number == 1) *key = absl::StrCat(value);
    }
  }
}

absl::Status CheckMessage(const Descriptor& type, absl::string_view bytes, const std::string& path, int depth) {
  if (depth > kMaxDepth) return Refuse(path, "nested too deeply");
  Coded in(reinterpret_cast<const uint8_t*>(bytes.data()), static_cast<int>(bytes.size()));
  std::set<int> singular_seen;
  std::set<int> oneof_seen;
  std::map<int, std::set<std::string>> map_keys;
  std::map<int, int> repeated_index;
  while (true) {
    const uint32_t tag = in.ReadTag();
    if (tag == 0) {
      if (in.CurrentPosition() != static_cast<int>(bytes.size())) return Refuse(path, "does not decode");
      return absl::OkStatus();
    }
    const int number = static_cast<int>(WireFormatLite::GetTagFieldNumber(tag));
    const auto wire_type = WireFormatLite::GetTagWireType(tag);
    const FieldDescriptor* field = type.FindFieldByNumber(number);
    if (field == nullptr) {
      return Refuse(path, absl::StrCat("unknown field number ", number, " in ", type.full_name()));
    }
    const std::string field_path = JoinFieldPath(path, field->name());
    const bool packed = field->is_packable() && wire_type == WireFormatLite::WIRETYPE_LENGTH_DELIMITED;
    if (wire_type != ExpectedWireType(*field) && !packed) return Refuse(field_path, "wrong wire type");

    if (wire_type == WireFormatLite::WIRETYPE_LENGTH_DELIMITED) {
      uint32_t length = 0;
      std::string value;
      if (!in.ReadVarint32(&length) || !in.ReadString(&value, static_cast<int>(length))) {
        return Refuse(field_path, "does not decode");
      }
      if (field->is_map()) {
        std::string key;
        const std::string entry_path = absl::StrCat(field_path, "[", map_keys[number].size(), "]");
        if (auto s = CheckMapEntry(*field->message_type(), value, field_path, depth + 1, &key); !s.ok()) return s;
        if (!map_keys[number].insert(key).second) {
          return Refuse(absl::StrCat(field_path, "[\"", absl::CEscape(key.substr(0, 64)), "\"]"), "map key given twice");
        }
      } else if (field->type() == FieldDescriptor::TYPE_MESSAGE) {
        const std::string item_path =
            field->is_repeated() ? absl::StrCat(field_path, "[", repeated_index[number]++, "]") : field_path;
        if (auto s = CheckMessage(*field->message_type(), value, item_path, depth + 1); !s.ok()) return s;
      }
    } else {
      if (!WireFormatLite::SkipField(&in, tag)) return Refuse(field_path, "does not decode");
    }
    if (!field->is_repeated()) {
      if (!singular_seen.insert(number).second) return Refuse(field_path, "given twice");
      if (const auto* oneof = field->real_containing_oneof(); oneof != nullptr) {
        if (!oneof_seen.insert(oneof->index()).second) {
          return Refuse(field_path, absl::StrCat("a second member of oneof ", oneof->name()));
        }
      }
    }
  }
}

}  // namespace

absl::Status CheckStrictWire(const Descriptor& type, absl::string_view bytes) {
  return CheckMessage(type, bytes, "", 0);
}

}  // namespace osh::policy
