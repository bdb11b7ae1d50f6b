// UpdatePolicy's merge operations (SPEC §5) applied to a policy. Pure; the input is changed only when
// every operation applies.
#pragma once

#include <google/protobuf/repeated_field.h>

#include "absl/status/status.h"
#include "openshell/policy/gateway/v1/gateway.pb.h"
#include "openshell/sandbox/v1/sandbox.pb.h"

namespace osh::policy {

// Applies `operations` in order. Errors: INVALID_ARGUMENT for a malformed operation, NOT_FOUND naming
// the rule, endpoint or binary an operation refers to that does not exist ("operations[2]: ...").
absl::Status ApplyMergeOperations(
    const google::protobuf::RepeatedPtrField<openshell::policy::gateway::v1::PolicyMergeOperation>& operations,
    openshell::sandbox::v1::SandboxPolicy* policy);

}  // namespace osh::policy
