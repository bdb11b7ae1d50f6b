// UpdatePolicy's merge operations (SPEC §5) applied to a policy. Pure; the input is changed only when
// every operation applies.
#pragma once

#include <google/protobuf/repeated_field.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "openshell/policy/gateway/v1/gateway.pb.h"
#include "openshell/sandbox/v1/sandbox.pb.h"

namespace osh::policy {

// Applies `operations` in order. Errors: INVALID_ARGUMENT for a malformed operation, for more than
// kMaxMergeOperations, or for rules added past an endpoint's bound (kMaxL7RulesPerEndpoint rules and
// deny_rules: refused before they are copied, so that one operation cannot multiply a policy past what
// validation would take); NOT_FOUND naming the rule, endpoint or binary an operation refers to that does
// not exist ("operations[2]: ...").
inline constexpr int kMaxMergeOperations = 1024;
// The bytes of rules the add_allow_rules / add_deny_rules of one update may copy (rules × the endpoints
// their selector matches): twice the largest policy validation takes.
inline constexpr uint64_t kMaxMergeCopiedBytes = 8 << 20;
absl::Status ApplyMergeOperations(
    const google::protobuf::RepeatedPtrField<openshell::policy::gateway::v1::PolicyMergeOperation>& operations,
    openshell::sandbox::v1::SandboxPolicy* policy);
// One operation, applied to `policy` in place (left part-changed on error: apply to a copy); `where`
// prefixes its errors; `copied` (may be null) carries the bytes copied so far across one update's
// operations, against kMaxMergeCopiedBytes.
absl::Status ApplyMergeOperation(const openshell::policy::gateway::v1::PolicyMergeOperation& operation,
                                 absl::string_view where, openshell::sandbox::v1::SandboxPolicy* policy,
                                 uint64_t* copied = nullptr);

}  // namespace osh::policy
