#include "gateway/core/interceptor_payload.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/util/json_util.h>

#include <deque>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "policy/digest.h"

namespace osh::gateway {

namespace interceptor_json = google::protobuf::util;

namespace {

// Payloads decoded before (a retried or repeated evaluation of one request): the SHA-256 of the target type's
// name and the payload's deterministic serialization -> the decoded message's bytes. A memo of a pure
// function (nothing it depends on can change), bounded in entries and bytes, the oldest dropped first. Only
// successful decodes are kept; a payload too large to keep is decoded every time.
class DecodedPayloadMemo {
 public:
  static DecodedPayloadMemo& Instance() {
    static DecodedPayloadMemo* memo = new DecodedPayloadMemo();
    return *memo;
  }
  bool Find(const std::string& key, std::string* bytes) {
    absl::MutexLock lock(&mu_);
    auto it = kept_.find(key);
    if (it == kept_.end()) return false;
    *bytes = it->second;
    return true;
  }
  void Keep(const std::string& key, std::string bytes) {
    if (bytes.size() > kMaxEntryBytes) return;
    absl::MutexLock lock(&mu_);
    if (kept_.contains(key)) return;
    bytes_ += bytes.size();
    kept_.emplace(key, std::move(bytes));
    order_.push_back(key);
    while (kept_.size() > kMaxEntries || bytes_ > kMaxBytes) {
      auto oldest = kept_.find(order_.front());
      bytes_ -= oldest->second.size();
      kept_.erase(oldest);
      order_.pop_front();
    }
  }

 private:
  static constexpr size_t kMaxEntries = 1024;
  static constexpr size_t kMaxBytes = 32 << 20;
  static constexpr size_t kMaxEntryBytes = 1 << 20;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::string> kept_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> order_ ABSL_GUARDED_BY(mu_);
  size_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

std::string DecodedPayloadKey(const google::protobuf::Struct& payload, const google::protobuf::Message& request) {
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream stream(&bytes);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    payload.SerializeToCodedStream(&coded);
  }
  return policy::Sha256(absl::StrCat(request.GetDescriptor()->full_name(), "\n", bytes));
}

}  // namespace

absl::Status DecodeInterceptorPayload(const google::protobuf::Struct& payload, google::protobuf::Message* request) {
  request->Clear();
  const std::string key = DecodedPayloadKey(payload, *request);
  std::string decoded;
  if (DecodedPayloadMemo::Instance().Find(key, &decoded) && request->ParseFromString(decoded)) return absl::OkStatus();
  request->Clear();
  absl::Status status = DecodeInterceptorPayloadUncached(payload, request);
  if (status.ok()) DecodedPayloadMemo::Instance().Keep(key, request->SerializeAsString());
  return status;
}

absl::Status DecodeInterceptorPayloadUncached(const google::protobuf::Struct& payload, google::protobuf::Message* request) {
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
