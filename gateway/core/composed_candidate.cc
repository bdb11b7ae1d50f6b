#include "gateway/core/composed_candidate.h"

#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_cat.h"
#include "policy/body_codec.h"
#include "policy/digest.h"
#include "policy/provider_profile.h"

namespace osh::gateway {

using openshell::sandbox::v1::SandboxPolicy;

namespace {

bool Inside(const CeilingGuard& ceiling, const std::shared_ptr<const CeilingGuard::Active>& active,
            const SandboxPolicy& policy, const std::string& digest, absl::string_view which, ComposedVerdict* out) {
  if (absl::Status valid = ceiling.Validate(policy, digest); !valid.ok()) {
    // ValidatePolicy's message is already "invalid_policy: <path>: <message>".
    absl::string_view message = valid.message();
    absl::ConsumePrefix(&message, "invalid_policy: ");
    out->reason = "invalid_policy";
    out->detail = absl::StrCat(which, message);
    return false;
  }
  const trust::CheckResult checked = ceiling.CheckAgainst(active, policy, digest);
  if (!checked.ok()) {
    out->reason = checked.reason;
    out->detail = absl::StrCat(which, checked.detail);
    return false;
  }
  return true;
}

}  // namespace

ComposedVerdict CheckComposedCandidate(const CeilingGuard& ceiling, const SandboxPolicy& own,
                                       const std::vector<ProviderLayer>& layers) {
  return CheckComposedCandidate(ceiling, ceiling.current(), own, layers);
}

ComposedCandidate ComposeCandidate(const SandboxPolicy& own, const std::vector<ProviderLayer>& layers) {
  ComposedCandidate composed;
  composed.candidate = policy::ComposeProviderLayers(own, layers);
  composed.candidate_digest = policy::Sha256Hex(policy::SerializeDeterministic(composed.candidate));
  if (!layers.empty()) composed.own_digest = policy::Sha256Hex(policy::SerializeDeterministic(own));
  return composed;
}

ComposedVerdict CheckComposed(const CeilingGuard& ceiling, const std::shared_ptr<const CeilingGuard::Active>& active,
                              const SandboxPolicy& own, const ComposedCandidate& composed) {
  ComposedVerdict out;
  out.candidate_digest = composed.candidate_digest;
  if (!Inside(ceiling, active, composed.candidate, composed.candidate_digest, "", &out)) return out;
  if (!composed.own_digest.empty()) {
    Inside(ceiling, active, own, composed.own_digest, "the sandbox's own policy, without its providers' layers: ", &out);
  }
  return out;
}

ComposedVerdict CheckComposedCandidate(const CeilingGuard& ceiling, const std::shared_ptr<const CeilingGuard::Active>& active,
                                       const SandboxPolicy& own, const std::vector<ProviderLayer>& layers) {
  return CheckComposed(ceiling, active, own, ComposeCandidate(own, layers));
}

}  // namespace osh::gateway
