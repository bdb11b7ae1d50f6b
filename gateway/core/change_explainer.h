// PolicyGateway.ExplainChange (docs/explain.md): the classes of request one policy allows and another
// does not, each side a policy body, a builtin scope's revision, or an admitted sandbox's served policy.
// Read-only; changes nothing. Thread-safe (the sources it reads are).
// The answer's wire form is policy/explain_wire.h's, as policyctl's offline `diff` prints it.
#pragma once

#include <functional>

#include "absl/status/statusor.h"
#include "gateway/core/sandbox_registry.h"
#include "openshell/policy/gateway/v1/gateway.pb.h"
#include "store/clock.h"

namespace osh::gateway {

class ChangeExplainer {
 public:
  using GetPolicyFn = std::function<absl::StatusOr<openshell::policy::gateway::v1::GetPolicyResponse>(
      const openshell::policy::gateway::v1::GetPolicyRequest&)>;

  // `registry` and `clock` must outlive this object; `get_policy` reads a scope's revision (the driver's
  // GetPolicy: NOT_FOUND for an unknown scope or revision).
  ChangeExplainer(SandboxRegistry* registry, const store::Clock* clock, GetPolicyFn get_policy)
      : registry_(registry), clock_(clock), get_policy_(std::move(get_policy)) {}

  // INVALID_ARGUMENT "invalid_policy: <side>: ..." for an invalid body or a missing source; NOT_FOUND for
  // an unknown scope, revision or sandbox; FAILED_PRECONDITION "deleted_revision: ..." for a revision that
  // is a deletion; a sandbox's serving-rule refusals ("key_revoked: ...", "expired: ...").
  absl::StatusOr<openshell::policy::gateway::v1::ExplainChangeResponse> Explain(
      const openshell::policy::gateway::v1::ExplainChangeRequest& request) const;

  // One side, resolved to a valid policy.
  absl::StatusOr<openshell::sandbox::v1::SandboxPolicy> Resolve(const openshell::policy::gateway::v1::PolicySource& source,
                                                                const char* side) const;

 private:
  SandboxRegistry* const registry_;
  const store::Clock* const clock_;
  const GetPolicyFn get_policy_;
};

}  // namespace osh::gateway
