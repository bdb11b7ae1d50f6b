#include "gateway/core/change_explainer.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/errors.h"
#include "policy/body_codec.h"
#include "policy/explain.h"
#include "policy/explain_wire.h"
#include "policy/validation.h"

namespace osh::gateway {

namespace gateway_v1 = openshell::policy::gateway::v1;

absl::StatusOr<openshell::sandbox::v1::SandboxPolicy> ChangeExplainer::Resolve(const gateway_v1::PolicySource& source,
                                                                              const char* side) const {
  switch (source.source_case()) {
    case gateway_v1::PolicySource::kPolicy: {
      if (absl::Status valid = policy::ValidatePolicy(source.policy()); !valid.ok()) {
        return common::Refused(absl::StatusCode::kInvalidArgument, "invalid_policy",
                               absl::StrCat(side, ": ", absl::StripPrefix(valid.message(), "invalid_policy: ")));
      }
      return source.policy();
    }
    case gateway_v1::PolicySource::kScopeRevision: {
      gateway_v1::GetPolicyRequest get;
      get.set_scope(source.scope_revision().scope());
      get.set_revision(source.scope_revision().revision());
      auto got = get_policy_(get);
      if (!got.ok()) return got.status();
      if (got->revision().deleted()) {
        return common::Refused(absl::StatusCode::kFailedPrecondition, "deleted_revision",
                               absl::StrCat(side, ": scope '", got->revision().scope(), "' revision ",
                                            got->revision().revision(), " is a deletion: it has no policy"));
      }
      return got->policy();
    }
    case gateway_v1::PolicySource::kSandboxId: {
      // What the sandbox is served, under the same rule as its fetches (as EvaluateEgress).
      auto served = registry_->Lookup(source.sandbox_id(), clock_->NowUnix());
      if (!served.ok()) return served.status();
      return policy::ParseBodyStrict((*served)->envelope->body());
    }
    default:
      return common::Refused(absl::StatusCode::kInvalidArgument, "invalid_policy",
                             absl::StrCat(side, ": give a policy, a scope revision or a sandbox id"));
  }
}

absl::StatusOr<gateway_v1::ExplainChangeResponse> ChangeExplainer::Explain(
    const gateway_v1::ExplainChangeRequest& request) const {
  auto from = Resolve(request.from(), "from");
  if (!from.ok()) return from.status();
  auto to = Resolve(request.to(), "to");
  if (!to.ok()) return to.status();
  return policy::ExplanationToProto(policy::ExplainChange(*from, *to));
}

}  // namespace osh::gateway
