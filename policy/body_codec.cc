#include "policy/body_codec.h"

#include "common/errors.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/unknown_field_set.h>

#include "absl/strings/str_cat.h"
#include "policy/strict_wire.h"

namespace osh::policy {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

absl::Status CheckRecursive(const Message& message, const std::string& path) {
  const Reflection* reflection = message.GetReflection();
  const auto& unknown = reflection->GetUnknownFields(message);
  if (!unknown.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown field number ", unknown.field(0).number(), " in ",
                     path.empty() ? std::string(message.GetDescriptor()->full_name()) : path));
  }
  std::vector<const FieldDescriptor*> fields;
  reflection->ListFields(message, &fields);
  for (const FieldDescriptor* field : fields) {
    if (field->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE) continue;
    const std::string field_path = JoinFieldPath(path, field->name());
    if (field->is_repeated()) {
      const int n = reflection->FieldSize(message, field);
      for (int i = 0; i < n; ++i) {
        const Message& child = reflection->GetRepeatedMessage(message, field, i);
        std::string child_path = absl::StrCat(field_path, "[", i, "]");
        if (field->is_map()) {
          // Name map entries by key where the key is a string.
          const auto* key_field = child.GetDescriptor()->map_key();
          if (key_field->cpp_type() == FieldDescriptor::CPPTYPE_STRING) {
            child_path = JoinFieldPath(field_path, child.GetReflection()->GetString(child, key_field));
          }
        }
        if (auto status = CheckRecursive(child, child_path); !status.ok()) return status;
      }
    } else {
      const Message& child = reflection->GetMessage(message, field);
      if (auto status = CheckRecursive(child, field_path); !status.ok()) return status;
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::string JoinFieldPath(const std::string& path, const std::string& name) {
  return path.empty() ? name : absl::StrCat(path, ".", name);
}

std::string SerializeDeterministic(const Message& message) {
  std::string out;
  {
    google::protobuf::io::StringOutputStream stream(&out);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    message.SerializeToCodedStream(&coded);
  }
  return out;
}

absl::Status CheckNoUnknownFields(const Message& message) { return CheckRecursive(message, ""); }

absl::StatusOr<openshell::sandbox::v1::SandboxPolicy> ParseBodyStrict(absl::string_view body) {
  openshell::sandbox::v1::SandboxPolicy policy;
  if (!policy.ParseFromArray(body.data(), static_cast<int>(body.size()))) {
    return absl::InvalidArgumentError(
        "incomplete_projection: body is not a valid openshell.sandbox.v1.SandboxPolicy encoding");
  }
  if (auto status = CheckNoUnknownFields(policy); !status.ok()) {
    return common::Refused(absl::StatusCode::kInvalidArgument, "incomplete_projection", status.message());
  }
  // What the parse merged away: a field or map key given twice, a map entry's extra field.
  if (auto status = CheckStrictWire(*policy.GetDescriptor(), body); !status.ok()) {
    return common::Refused(absl::StatusCode::kInvalidArgument, "incomplete_projection", status.message());
  }
  return policy;
}

}  // namespace osh::policy
