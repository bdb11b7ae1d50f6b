// The interceptor's payload conversions (../shared/interceptor/README.md §4): an OpenShell request arrives
// as a google.protobuf.Struct holding its ProtoJSON; it is decided on the typed message, never on the
// Struct. Both directions go through protobuf's own JSON utilities (the one JSON parser of the payload):
// Struct -> JSON text -> typed message with default (strict) options, which refuse unknown fields, a
// second member of a oneof and a non-integral number for an integer, and accept 443.0 for a uint32.
// Pure functions, thread-safe.
#pragma once

#include <string>

#include <google/protobuf/message.h>
#include <google/protobuf/struct.pb.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace osh::gateway {

// Decodes `payload` into `request` (cleared first). INVALID_ARGUMENT "<Type>: <protobuf's reason>".
// A payload decoded before into the same type is not converted again: its decoded bytes are kept (a
// bounded memo keyed on the SHA-256 of the type and the payload's deterministic serialization).
absl::Status DecodeInterceptorPayload(const google::protobuf::Struct& payload, google::protobuf::Message* request);
// The same without the memo: the JSON conversion every time.
absl::Status DecodeInterceptorPayloadUncached(const google::protobuf::Struct& payload, google::protobuf::Message* request);

// A message as a google.protobuf.Value holding its ProtoJSON (a patch's value).
absl::StatusOr<google::protobuf::Value> MessageToInterceptorValue(const google::protobuf::Message& message);

// A message's ProtoJSON as a Struct (what the OpenShell gateway sends; used by tests and the bench).
absl::StatusOr<google::protobuf::Struct> MessageToInterceptorStruct(const google::protobuf::Message& message);

}  // namespace osh::gateway
