// The one rule for a sandbox's whole composed candidate against the ceiling in force (docs/
// openshell-interceptor.md, "Provider profiles"; ../shared/interceptor/README.md §7 "Composition"): the
// sandbox's own policy plus one `_provider_<name>` layer per provider (policy::ComposeProviderLayers) must be
// a valid policy inside the ceiling, and so must the own policy alone — a layer's deny rules can hide what
// the policy allows beyond the ceiling, and what is enforced without the layers (an OpenShell gateway
// without providers v2, a provider detached, a profile deleted) is the policy. Every reader asks this: the
// interceptor's Evaluate (InterceptorEvaluator) and a change of the profile catalogue (ProfileChangeCheck).
// Pure apart from the ceiling guard's verdict cache; thread-safe.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "gateway/core/ceiling_guard.h"
#include "openshell/sandbox/v1/sandbox.pb.h"
#include "openshell/v1/openshell_v1_subset.pb.h"

namespace osh::gateway {

struct ComposedVerdict {
  std::string reason;            // empty: inside; else invalid_policy, exceeds_ceiling or containment_unknown
  std::string detail;            // the first widening found (or the invalid field), as the ceiling check says it
  std::string candidate_digest;  // SHA-256 hex of the composed candidate's deterministic serialization
  bool ok() const { return reason.empty(); }
};

// A provider's layer: the provider's name (the layer's key is derived from it) and its profile (not owned).
using ProviderLayer = std::pair<std::string, const openshell::v1::ProviderProfile*>;

// A composition made once and checked as often as asked (a validate repeated: the same own policy and the
// same profiles compose the same candidate): the candidate, its digest and, when it has layers, the own
// policy's digest. Immutable once made; share it as a shared_ptr<const ComposedCandidate>.
struct ComposedCandidate {
  openshell::sandbox::v1::SandboxPolicy candidate;
  std::string candidate_digest;
  std::string own_digest;  // empty when there is no layer (the own policy is the candidate)
};
ComposedCandidate ComposeCandidate(const openshell::sandbox::v1::SandboxPolicy& own, const std::vector<ProviderLayer>& layers);

// `composed` (made by ComposeCandidate from `own`) against `active`, as CheckComposedCandidate says.
ComposedVerdict CheckComposed(const CeilingGuard& ceiling, const std::shared_ptr<const CeilingGuard::Active>& active,
                              const openshell::sandbox::v1::SandboxPolicy& own, const ComposedCandidate& composed);

// Against the ceiling in force when called.
ComposedVerdict CheckComposedCandidate(const CeilingGuard& ceiling, const openshell::sandbox::v1::SandboxPolicy& own,
                                       const std::vector<ProviderLayer>& layers);
// Against `active` (CeilingGuard::current() as read once by the caller; null: no ceiling, every valid
// candidate is inside), so that a caller checking many candidates checks them all against one ceiling.
ComposedVerdict CheckComposedCandidate(const CeilingGuard& ceiling, const std::shared_ptr<const CeilingGuard::Active>& active,
                                       const openshell::sandbox::v1::SandboxPolicy& own,
                                       const std::vector<ProviderLayer>& layers);

}  // namespace osh::gateway
