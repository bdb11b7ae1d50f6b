#include "store/row_codec.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "openshell/policy/driver/v1/driver.pb.h"
#include "policy/body_codec.h"

namespace osh::store {

std::string JoinIds(const std::vector<std::string>& ids) { return absl::StrJoin(ids, ","); }

std::vector<std::string> SplitIds(const std::string& text) {
  if (text.empty()) return {};
  return absl::StrSplit(text, ',');
}

std::string EncodeContextMap(const std::map<std::string, std::string>& map) {
  openshell::policy::driver::v1::Projection holder;
  for (const auto& [k, v] : map) (*holder.mutable_audit_context())[k] = v;
  return policy::SerializeDeterministic(holder);
}

std::map<std::string, std::string> DecodeContextMap(const std::string& bytes) {
  openshell::policy::driver::v1::Projection holder;
  holder.ParseFromString(bytes);
  return {holder.audit_context().begin(), holder.audit_context().end()};
}

absl::StatusOr<std::string> JsonIdList(const std::vector<std::string>& ids) {
  google::protobuf::ListValue list;
  for (const auto& id : ids) list.add_values()->set_string_value(id);
  std::string json;
  if (auto status = google::protobuf::util::MessageToJsonString(list, &json); !status.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("sandbox ids: ", status.ToString()));
  }
  return json;
}

absl::StatusOr<std::vector<std::string>> ParseJsonIdList(const std::string& json) {
  google::protobuf::ListValue list;
  if (auto status = google::protobuf::util::JsonStringToMessage(json, &list); !status.ok()) {
    return absl::DataLossError(absl::StrCat("sandbox id list: ", status.ToString()));
  }
  std::vector<std::string> out;
  for (const auto& value : list.values()) out.push_back(value.string_value());
  return out;
}

}  // namespace osh::store
