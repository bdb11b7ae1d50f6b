#include "gateway/core/egress_decisions.h"

#include "absl/strings/str_cat.h"
#include "policy/body_codec.h"
#include "policy/digest.h"
#include "policy/validation.h"

namespace osh::gateway {

namespace gateway_v1 = openshell::policy::gateway::v1;

absl::StatusOr<std::shared_ptr<const policy::EgressPolicy>> EgressDecisions::Compiled(const std::string& digest,
                                                                                      const std::string& body) const {
  {
    absl::MutexLock lock(&mu_);
    if (auto it = cache_.find(digest); it != cache_.end()) return it->second;
  }
  auto parsed = policy::ParseBodyStrict(body);
  if (!parsed.ok()) return parsed.status();
  auto compiled = policy::EgressPolicy::Compile(*parsed);
  absl::MutexLock lock(&mu_);
  if (cache_.emplace(digest, compiled).second) {
    order_.push_back(digest);
    while (order_.size() > capacity_) {
      cache_.erase(order_.front());
      order_.pop_front();
    }
  }
  return compiled;
}

absl::StatusOr<gateway_v1::EvaluateEgressResponse> EgressDecisions::Evaluate(
    const gateway_v1::EvaluateEgressRequest& request) const {
  std::string body;
  switch (request.policy_source_case()) {
    case gateway_v1::EvaluateEgressRequest::kSandboxId: {
      // What the sandbox is served, under the same rule as its fetches: nothing is answered for a sandbox
      // whose projection is unverified, revoked or expired.
      auto served = registry_->Lookup(request.sandbox_id(), clock_->NowUnix());
      if (!served.ok()) return served.status();
      body = (*served)->envelope->body();
      break;
    }
    case gateway_v1::EvaluateEgressRequest::kPolicy:
      if (absl::Status valid = policy::ValidatePolicy(request.policy()); !valid.ok()) return valid;
      body = policy::SerializeDeterministic(request.policy());
      break;
    default:
      return absl::InvalidArgumentError("policy_source: give sandbox_id or an inline policy");
  }
  const std::string digest = policy::Sha256Hex(body);
  auto compiled = Compiled(digest, body);
  if (!compiled.ok()) return compiled.status();
  const policy::EgressDecision decision = (*compiled)->Decide(IntentFrom(request));
  gateway_v1::EvaluateEgressResponse out;
  out.set_decision(std::string(policy::VerdictName(decision.verdict)));
  out.set_matched_policy(decision.matched_policy);
  out.set_endpoint(decision.endpoint);
  out.set_rule(decision.rule);
  out.set_reason(decision.reason);
  out.set_policy_digest(digest);
  return out;
}

}  // namespace osh::gateway
