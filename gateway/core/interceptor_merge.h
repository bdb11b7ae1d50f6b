// Upstream OpenShell's UpdateConfig mergeOperations applied the way this product applies its own
// UpdatePolicy (SPEC §5, policy/merge.h), so the interceptor can hand upstream the absolute result
// (../shared/interceptor/README.md §9, "Merge operations"). Each operation maps onto one of ours:
//   addRule{ruleName, rule}            -> AddRule (the rule's name defaults to ruleName)
//   removeRule{ruleName}               -> RemoveRule
//   removeBinary{ruleName, binaryPath} -> RemoveBinary
//   removeEndpoint{ruleName, host, port} -> RemoveEndpoint
//   addAllowRules / addDenyRules{host, port, ...} and removeEndpoint without ruleName name only host and
//   port: they apply to the one rule holding such an endpoint at that point; none is not_found, more than
//   one is refused as ambiguous.
// Pure; `policy` changes only when every operation applies.
#pragma once

#include <google/protobuf/repeated_field.h>

#include "absl/status/status.h"
#include "openshell/sandbox/v1/sandbox.pb.h"
#include "openshell/v1/openshell_v1_subset.pb.h"

namespace osh::gateway {

// OK, or FAILED_PRECONDITION "invalid_merge_operation: mergeOperations[i]: ..." (common::Refused).
// At most this many operations in one request (more: invalid_merge_operation).
inline constexpr int kMaxUpstreamMergeOperations = 256;
absl::Status ApplyUpstreamMergeOperations(
    const google::protobuf::RepeatedPtrField<openshell::v1::PolicyMergeOperation>& operations,
    openshell::sandbox::v1::SandboxPolicy* policy);

}  // namespace osh::gateway
