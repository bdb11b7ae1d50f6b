#include "gateway/core/interceptor_payload.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <deque>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gateway/core/bounded_memo.h"
#include "policy/body_codec.h"
#include "policy/digest.h"

namespace osh::gateway {

namespace interceptor_json = google::protobuf::util;

namespace {

// Payloads decoded before (a retried or repeated evaluation of one request): the target type's name and
// the payload's digest -> the decoded message, shared (never changed once kept).
BoundedMemo<std::shared_ptr<const google::protobuf::Message>>& DecodedPayloads() {
  static auto* memo = new BoundedMemo<std::shared_ptr<const google::protobuf::Message>>(
      [](const std::shared_ptr<const google::protobuf::Message>& message) { return message->SpaceUsedLong(); });
  return *memo;
}

// Messages encoded before (the same admitted or merged policy patched into many requests): the message's
// type name and identity (the caller's, or the SHA-256 of its deterministic serialization) -> its ProtoJSON
// as a Value, shared (never changed once kept).
BoundedMemo<std::shared_ptr<const google::protobuf::Value>>& EncodedMessages() {
  static auto* memo = new BoundedMemo<std::shared_ptr<const google::protobuf::Value>>(
      [](const std::shared_ptr<const google::protobuf::Value>& value) { return value->SpaceUsedLong(); });
  return *memo;
}

// A length as a base-128 varint (seven bits a byte, the high bit set on every byte but the last):
// self-delimiting, so the fingerprint stays unambiguous, and one byte for the short strings a policy is
// made of (the fingerprint is hashed whole: its size is the hash's cost).
void AppendLength(size_t length, std::string* out) {
  if (length < 0x80) {
    out->push_back(static_cast<char>(length));
    return;
  }
  char bytes[10];
  size_t used = 0;
  for (uint64_t n = length;; n >>= 7) {
    if (n < 0x80) {
      bytes[used++] = static_cast<char>(n);
      break;
    }
    bytes[used++] = static_cast<char>(0x80 | (n & 0x7f));
  }
  out->append(bytes, used);
}

using Member = google::protobuf::MapPair<std::string, google::protobuf::Value>;

// The walk's members, sorted per object: one vector for the whole walk, each object's members a range at
// its end (taken by index, since a nested object's members grow it), so an object costs no allocation.
void AppendFingerprint(const google::protobuf::Struct& object, std::string* out, std::vector<const Member*>* stack);

void AppendFingerprint(const google::protobuf::Value& value, std::string* out, std::vector<const Member*>* stack) {
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
    case google::protobuf::Value::kStructValue: AppendFingerprint(value.struct_value(), out, stack); return;
    case google::protobuf::Value::kListValue:
      out->push_back('[');
      AppendLength(value.list_value().values_size(), out);
      for (const auto& item : value.list_value().values()) AppendFingerprint(item, out, stack);
      return;
    case google::protobuf::Value::KIND_NOT_SET: out->push_back('0'); return;
  }
  out->push_back('?');
}

void AppendFingerprint(const google::protobuf::Struct& object, std::string* out, std::vector<const Member*>* stack) {
  // Members in key order (a Struct's map has none of its own), each length-prefixed.
  const size_t first = stack->size();
  for (const auto& member : object.fields()) stack->push_back(&member);
  const size_t count = stack->size() - first;
  std::sort(stack->begin() + first, stack->end(), [](const Member* a, const Member* b) { return a->first < b->first; });
  out->push_back('{');
  AppendLength(count, out);
  for (size_t i = 0; i < count; ++i) {
    const Member* member = (*stack)[first + i];
    AppendLength(member->first.size(), out);
    out->append(member->first);
    AppendFingerprint(member->second, out, stack);
  }
  stack->resize(first);
}

void AppendFingerprint(const google::protobuf::Struct& object, std::string* out) {
  std::vector<const Member*> stack;
  stack.reserve(256);
  AppendFingerprint(object, out, &stack);
}

}  // namespace

absl::StatusOr<std::shared_ptr<const google::protobuf::Message>> DecodeInterceptorPayloadShared(
    const google::protobuf::Struct& payload, const google::protobuf::Message& prototype, absl::string_view payload_digest) {
  const std::string key =
      absl::StrCat(prototype.GetDescriptor()->full_name(), "\n",
                   payload_digest.empty() ? InterceptorPayloadDigest(payload) : std::string(payload_digest));
  std::shared_ptr<const google::protobuf::Message> decoded;
  if (DecodedPayloads().Find(key, &decoded)) return decoded;
  std::shared_ptr<google::protobuf::Message> request(prototype.New());
  if (absl::Status status = DecodeInterceptorPayloadUncached(payload, request.get()); !status.ok()) return status;
  DecodedPayloads().Keep(key, request);
  return std::shared_ptr<const google::protobuf::Message>(std::move(request));
}

absl::Status DecodeInterceptorPayload(const google::protobuf::Struct& payload, google::protobuf::Message* request,
                                      absl::string_view payload_digest) {
  request->Clear();
  auto decoded = DecodeInterceptorPayloadShared(payload, *request, payload_digest);
  if (!decoded.ok()) return decoded.status();
  request->CopyFrom(**decoded);
  return absl::OkStatus();
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

InterceptorMemoStats InterceptorPayloadMemoStats() {
  const auto decoded = DecodedPayloads().counts();
  const auto encoded = EncodedMessages().counts();
  return {{decoded.hits, decoded.misses}, {encoded.hits, encoded.misses}};
}

std::string InterceptorPayloadDigest(const google::protobuf::Struct& payload) {
  // The fingerprint is only hashed: built in this thread's buffer, which keeps its capacity between calls.
  thread_local std::string buffer;
  buffer.clear();
  AppendFingerprint(payload, &buffer);
  std::string digest = policy::Sha256(buffer);
  if (buffer.capacity() > (4 << 20)) std::string().swap(buffer);  // not a huge payload's for ever
  return digest;
}

absl::StatusOr<std::shared_ptr<const google::protobuf::Value>> MessageToInterceptorValue(
    const google::protobuf::Message& message, absl::string_view identity) {
  // The two kinds of key cannot meet: a caller's identity is marked as such.
  const std::string key =
      identity.empty()
          ? policy::Sha256(absl::StrCat(message.GetDescriptor()->full_name(), "\n", policy::SerializeDeterministic(message)))
          : absl::StrCat(message.GetDescriptor()->full_name(), "\nidentity\n", identity);
  std::shared_ptr<const google::protobuf::Value> value;
  if (EncodedMessages().Find(key, &value)) return value;
  auto encoded = MessageToInterceptorValueUncached(message);
  if (!encoded.ok()) return encoded.status();
  value = std::make_shared<const google::protobuf::Value>(*std::move(encoded));
  EncodedMessages().Keep(key, value);
  return value;
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
  if (!(*value)->has_struct_value()) return absl::InternalError("ProtoJSON of a message is not an object");
  return (*value)->struct_value();
}

}  // namespace osh::gateway
