// The interceptor's payload conversions (../shared/interceptor/README.md §4): an OpenShell request arrives
// as a google.protobuf.Struct holding its ProtoJSON; it is decided on the typed message, never on the
// Struct. Both directions go through protobuf's own JSON utilities (the one JSON parser of the payload):
// Struct -> JSON text -> typed message with default (strict) options, which refuse unknown fields, a
// second member of a oneof and a non-integral number for an integer, and accept 443.0 for a uint32.
// Pure functions, thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <google/protobuf/message.h>
#include <google/protobuf/struct.pb.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace osh::gateway {

// Both directions keep what they converted before in a bounded memo (1024 entries, 32 MiB; the oldest
// dropped first; only successful conversions): the same request evaluated again (a retried or repeated
// call) and the same policy patched into many requests are converted once.

// Decodes `payload` into `request` (cleared first). INVALID_ARGUMENT "<Type>: <protobuf's reason>".
// A payload decoded before into the same type is not converted again: its decoded bytes are kept, keyed on
// the type's name and the payload's digest (InterceptorPayloadDigest). `payload_digest`, when not empty,
// must be InterceptorPayloadDigest(payload) (computed earlier, where the payload was still in cache);
// empty: computed here.
absl::Status DecodeInterceptorPayload(const google::protobuf::Struct& payload, google::protobuf::Message* request,
                                      absl::string_view payload_digest = {});
// The same, shared rather than copied: the decoded message (of `prototype`'s type, never changed once
// returned), the memo's own when the payload was decoded before.
absl::StatusOr<std::shared_ptr<const google::protobuf::Message>> DecodeInterceptorPayloadShared(
    const google::protobuf::Struct& payload, const google::protobuf::Message& prototype,
    absl::string_view payload_digest = {});
// The same without the memo: the JSON conversion every time.
absl::Status DecodeInterceptorPayloadUncached(const google::protobuf::Struct& payload, google::protobuf::Message* request);

// A message as a google.protobuf.Value holding its ProtoJSON (a patch's value), shared (never changed once
// returned: copy it into the response). A message encoded before is not converted again: the memo's key is
// its type and `identity` when given — which must name the message's content exactly, e.g. the SHA-256 of
// the bytes it was parsed from (a served body's digest) — or else the digest of its deterministic
// serialization (the message is serialized to find it).
absl::StatusOr<std::shared_ptr<const google::protobuf::Value>> MessageToInterceptorValue(
    const google::protobuf::Message& message, absl::string_view identity = {});
// The same without the memo: the JSON conversion every time.
absl::StatusOr<google::protobuf::Value> MessageToInterceptorValueUncached(const google::protobuf::Message& message);

// How often each memo was asked and held the answer (hits) or not (misses), since the process started.
struct InterceptorMemoStats {
  struct Counts {
    uint64_t hits = 0;
    uint64_t misses = 0;
  };
  Counts decoded;  // DecodeInterceptorPayload
  Counts encoded;  // MessageToInterceptorValue
};
InterceptorMemoStats InterceptorPayloadMemoStats();

// A Struct's content as bytes that two Structs share exactly when they hold the same members (compared by
// key, whatever the map's order) with the same kinds and values (numbers compared bit for bit): every
// member, string and list length-prefixed, so no two contents meet. The decode memo's key; not a format
// anyone else reads.
std::string InterceptorPayloadFingerprint(const google::protobuf::Struct& payload);
// The SHA-256 (32 bytes) of the payload's fingerprint.
std::string InterceptorPayloadDigest(const google::protobuf::Struct& payload);

// A message's ProtoJSON as a Struct (what the OpenShell gateway sends; used by tests and the bench).
absl::StatusOr<google::protobuf::Struct> MessageToInterceptorStruct(const google::protobuf::Message& message);

}  // namespace osh::gateway
