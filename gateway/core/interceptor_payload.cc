#include "gateway/core/interceptor_payload.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <deque>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "policy/body_codec.h"
#include "policy/digest.h"

namespace osh::gateway {

namespace interceptor_json = google::protobuf::util;

namespace {

// A bounded memo of a pure function (nothing its result depends on can change): key -> value, the oldest
// dropped first, bounded in entries and in bytes (`bytes_of` a value); a value too large to keep is not kept.
// Only successful results are kept. Thread-safe.
template <typename Value>
class BoundedMemo {
 public:
  explicit BoundedMemo(size_t (*bytes_of)(const Value&)) : bytes_of_(bytes_of) {}
  bool Find(const std::string& key, Value* value) {
    absl::MutexLock lock(&mu_);
    auto it = kept_.find(key);
    if (it == kept_.end()) {
      ++misses_;
      return false;
    }
    ++hits_;
    *value = it->second;
    return true;
  }
  InterceptorMemoStats::Counts counts() {
    absl::MutexLock lock(&mu_);
    return {hits_, misses_};
  }
  void Keep(const std::string& key, const Value& value) {
    const size_t bytes = bytes_of_(value) + key.size();
    if (bytes > kMaxEntryBytes) return;
    absl::MutexLock lock(&mu_);
    if (kept_.contains(key)) return;
    bytes_ += bytes;
    kept_.emplace(key, value);
    order_.emplace_back(key, bytes);
    while (kept_.size() > kMaxEntries || bytes_ > kMaxBytes) {
      kept_.erase(order_.front().first);
      bytes_ -= order_.front().second;
      order_.pop_front();
    }
  }

 private:
  static constexpr size_t kMaxEntries = 1024;
  static constexpr size_t kMaxBytes = 32 << 20;
  static constexpr size_t kMaxEntryBytes = 1 << 20;
  size_t (*const bytes_of_)(const Value&);
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, Value> kept_ ABSL_GUARDED_BY(mu_);
  std::deque<std::pair<std::string, size_t>> order_ ABSL_GUARDED_BY(mu_);
  size_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t hits_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t misses_ ABSL_GUARDED_BY(mu_) = 0;
};

// Payloads decoded before (a retried or repeated evaluation of one request): the target type's name and
// the payload's digest -> the decoded message's bytes.
BoundedMemo<std::string>& DecodedPayloads() {
  static auto* memo = new BoundedMemo<std::string>([](const std::string& bytes) { return bytes.size(); });
  return *memo;
}

// Messages encoded before (the same admitted or merged policy patched into many requests): the SHA-256 of
// the message's type name and deterministic serialization -> its ProtoJSON as a Value.
BoundedMemo<google::protobuf::Value>& EncodedMessages() {
  static auto* memo = new BoundedMemo<google::protobuf::Value>(
      [](const google::protobuf::Value& value) { return value.SpaceUsedLong(); });
  return *memo;
}

void AppendLength(size_t length, std::string* out) {
  const uint64_t n = length;
  out->append(reinterpret_cast<const char*>(&n), sizeof(n));
}

void AppendFingerprint(const google::protobuf::Struct& object, std::string* out);

void AppendFingerprint(const google::protobuf::Value& value, std::string* out) {
  switch (value.kind_case()) {
    case google::protobuf::Value::kNullValue: out->push_back('n'); return;
    case google::protobuf::Value::kNumberValue: {
      const double number = value.number_value();
      out->push_back('d');
      out->append(reinterpret_cast<const char*>(&number), sizeof(number));
      return;
    }
    case google::protobuf::Value::kStringValue:
      out->push_back('s');
      AppendLength(value.string_value().size(), out);
      out->append(value.string_value());
      return;
    case google::protobuf::Value::kBoolValue: out->push_back(value.bool_value() ? 't' : 'f'); return;
    case google::protobuf::Value::kStructValue: AppendFingerprint(value.struct_value(), out); return;
    case google::protobuf::Value::kListValue:
      out->push_back('[');
      AppendLength(value.list_value().values_size(), out);
      for (const auto& item : value.list_value().values()) AppendFingerprint(item, out);
      return;
    case google::protobuf::Value::KIND_NOT_SET: out->push_back('0'); return;
  }
  out->push_back('?');
}

void AppendFingerprint(const google::protobuf::Struct& object, std::string* out) {
  // Members in key order (a Struct's map has none of its own), each length-prefixed.
  std::vector<const google::protobuf::MapPair<std::string, google::protobuf::Value>*> members;
  members.reserve(object.fields_size());
  for (const auto& member : object.fields()) members.push_back(&member);
  std::sort(members.begin(), members.end(), [](const auto* a, const auto* b) { return a->first < b->first; });
  out->push_back('{');
  AppendLength(members.size(), out);
  for (const auto* member : members) {
    AppendLength(member->first.size(), out);
    out->append(member->first);
    AppendFingerprint(member->second, out);
  }
}


}  // namespace

absl::Status DecodeInterceptorPayload(const google::protobuf::Struct& payload, google::protobuf::Message* request,
                                      absl::string_view payload_digest) {
  request->Clear();
  const std::string key =
      absl::StrCat(request->GetDescriptor()->full_name(), "\n",
                   payload_digest.empty() ? InterceptorPayloadDigest(payload) : std::string(payload_digest));
  std::string decoded;
  if (DecodedPayloads().Find(key, &decoded) && request->ParseFromString(decoded)) return absl::OkStatus();
  request->Clear();
  absl::Status status = DecodeInterceptorPayloadUncached(payload, request);
  if (status.ok()) DecodedPayloads().Keep(key, request->SerializeAsString());
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

std::string InterceptorPayloadFingerprint(const google::protobuf::Struct& payload) {
  std::string bytes;
  AppendFingerprint(payload, &bytes);
  return bytes;
}

InterceptorMemoStats InterceptorPayloadMemoStats() { return {DecodedPayloads().counts(), EncodedMessages().counts()}; }

std::string InterceptorPayloadDigest(const google::protobuf::Struct& payload) {
  return policy::Sha256(InterceptorPayloadFingerprint(payload));
}

absl::StatusOr<google::protobuf::Value> MessageToInterceptorValue(const google::protobuf::Message& message) {
  const std::string key =
      policy::Sha256(absl::StrCat(message.GetDescriptor()->full_name(), "\n", policy::SerializeDeterministic(message)));
  google::protobuf::Value value;
  if (EncodedMessages().Find(key, &value)) return value;
  auto encoded = MessageToInterceptorValueUncached(message);
  if (encoded.ok()) EncodedMessages().Keep(key, *encoded);
  return encoded;
}

absl::StatusOr<google::protobuf::Value> MessageToInterceptorValueUncached(const google::protobuf::Message& message) {
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
