#include "gateway/core/interceptor_payload.h"

#include <google/protobuf/util/json_util.h>

#include "absl/strings/str_cat.h"

namespace osh::gateway {

namespace interceptor_json = google::protobuf::util;

absl::Status DecodeInterceptorPayload(const google::protobuf::Struct& payload, google::protobuf::Message* request) {
  request->Clear();
  std::string json;
  if (auto status = interceptor_json::MessageToJsonString(payload, &json); !status.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("payload: ", status.message().as_string()));
  }
  if (auto status = interceptor_json::JsonStringToMessage(json, request); !status.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(request->GetDescriptor()->full_name(), ": ", status.message().as_string()));
  }
  return absl::OkStatus();
}

absl::StatusOr<google::protobuf::Value> MessageToInterceptorValue(const google::protobuf::Message& message) {
  std::string json;
  if (auto status = interceptor_json::MessageToJsonString(message, &json); !status.ok()) {
    return absl::InternalError(absl::StrCat("ProtoJSON of ", message.GetDescriptor()->full_name(), ": ",
                                            status.message().as_string()));
  }
  google::protobuf::Value value;
  if (auto status = interceptor_json::JsonStringToMessage(json, &value); !status.ok()) {
    return absl::InternalError(absl::StrCat("ProtoJSON as a Value: ", status.message().as_string()));
  }
  return value;
}

absl::StatusOr<google::protobuf::Struct> MessageToInterceptorStruct(const google::protobuf::Message& message) {
  auto value = MessageToInterceptorValue(message);
  if (!value.ok()) return value.status();
  if (!value->has_struct_value()) return absl::InternalError("ProtoJSON of a message is not an object");
  return value->struct_value();
}

}  // namespace osh::gateway
