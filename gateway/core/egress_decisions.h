// PolicyGateway.EvaluateEgress: what a policy would decide for one egress intent — the projection body
// of an admitted sandbox, or a policy given inline (validated first). Read-only; changes nothing.
// Compiled evaluators are cached by the body's recomputed digest (bounded, oldest evicted), so asking
// many questions of one policy compiles it once. Thread-safe.
#pragma once

#include <deque>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "gateway/core/sandbox_registry.h"
#include "store/clock.h"
#include "openshell/policy/gateway/v1/gateway.pb.h"
#include "gateway/core/egress_intent.h"
#include "policy/egress.h"

namespace osh::gateway {

class EgressDecisions {
 public:
  // `registry` and `clock` must outlive this object.
  EgressDecisions(SandboxRegistry* registry, const store::Clock* clock, size_t capacity = 64)
      : registry_(registry), clock_(clock), capacity_(capacity) {}

  // For a sandbox: its served projection under the registry's serving rule (SandboxRegistry::Lookup:
  // NOT_FOUND for no servable sandbox, FAILED_PRECONDITION "key_revoked: ..." / "expired: ..." as a fetch
  // gets). INVALID_ARGUMENT "invalid_policy: <field>: ..." for an invalid inline policy or a missing
  // policy source.
  absl::StatusOr<openshell::policy::gateway::v1::EvaluateEgressResponse> Evaluate(
      const openshell::policy::gateway::v1::EvaluateEgressRequest& request) const;

 private:
  // The compiled policy for `body` (its digest `digest`), from the cache or compiled now.
  absl::StatusOr<std::shared_ptr<const policy::EgressPolicy>> Compiled(const std::string& digest,
                                                                       const std::string& body) const;

  SandboxRegistry* const registry_;
  const store::Clock* const clock_;
  const size_t capacity_;
  mutable absl::Mutex mu_;
  mutable absl::flat_hash_map<std::string, std::shared_ptr<const policy::EgressPolicy>> cache_ ABSL_GUARDED_BY(mu_);
  mutable std::deque<std::string> order_ ABSL_GUARDED_BY(mu_);
};


}  // namespace osh::gateway
