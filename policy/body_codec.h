// Canonical bytes of a policy and strict parsing of a projection body.
//
// A body is serialized exactly once, deterministically (map entries sorted); the digest is taken over
// those bytes and the same bytes are stored and relayed. Parsing is strict: a body with any field this
// build does not know is refused, because enforcing a subset would silently narrow the policy.
#pragma once

#include <string>
#include "absl/strings/string_view.h"

#include <google/protobuf/message.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "openshell/sandbox/v1/sandbox.pb.h"

namespace osh::policy {

// A field path as every error message names one: "network_policies.api.endpoints" ("" + name = name).
std::string JoinFieldPath(const std::string& path, const std::string& name);

// Deterministic serialization of any message (maps in key order).
std::string SerializeDeterministic(const google::protobuf::Message& message);

// OK when `message` and every message inside it carry no unknown fields; otherwise
// INVALID_ARGUMENT naming the field path and the unknown field number.
absl::Status CheckNoUnknownFields(const google::protobuf::Message& message);

// Parses a body as openshell.sandbox.v1.SandboxPolicy. Errors (INVALID_ARGUMENT) begin with
// "incomplete_projection: " for bytes that do not parse, carry unknown fields, or mean something only
// by protobuf's merge rules (see CheckStrictWire: a field or map key given twice, and the like).
absl::StatusOr<openshell::sandbox::v1::SandboxPolicy> ParseBodyStrict(absl::string_view body);

}  // namespace osh::policy
