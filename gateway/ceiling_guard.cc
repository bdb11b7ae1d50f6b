#include "gateway/ceiling_guard.h"

#include "absl/strings/str_cat.h"
#include "gateway/audit_recorder.h"
#include "gateway/log.h"
#include "policy/body_codec.h"
#include "policy/containment.h"
#include "policy/digest.h"
#include "trust/audit_vocabulary.h"

namespace osh::gateway {

namespace gateway_v1 = openshell::policy::gateway::v1;
namespace audit = trust::audit;

namespace {

constexpr size_t kCacheCapacity = 4096;

trust::CheckResult Refusal(const char* reason, std::string detail) {
  trust::CheckResult result;
  result.reason = reason;
  result.detail = std::move(detail);
  return result;
}

}  // namespace

gateway_v1::CeilingInfo CeilingGuard::InfoOf(const Active& active) {
  gateway_v1::CeilingInfo info;
  info.set_ceiling_id(active.ceiling.ceiling_id());
  info.set_version(active.ceiling.version());
  info.set_audit_label(active.ceiling.audit_label());
  info.set_policy_digest(active.ceiling.policy_digest());
  info.set_issued_at_unix(active.ceiling.issued_at_unix());
  for (const auto& id : active.key_ids) info.add_key_ids(id);
  return info;
}

absl::Status CeilingGuard::Load(const trust::TrustStore* trust, int64_t now_unix, int64_t skew_s) {
  auto stored = store_->LoadCeiling();
  if (!stored.ok()) return stored.status();
  if (!stored->has_value()) return absl::OkStatus();
  auto active = std::make_shared<Active>();
  if (!active->ceiling.ParseFromString(**stored)) return absl::DataLossError("the stored ceiling does not decode");
  trust::CeilingCheckInput input;
  input.trust_store = trust;
  input.now_unix = now_unix;
  input.clock_skew_s = skew_s;
  const trust::CheckResult verified = trust::CheckCeiling(active->ceiling, input);
  if (verified.ok()) {
    active->policy = verified.policy;
    active->key_ids = verified.verified_key_ids;
  } else {
    // It only ever narrows: keep it in force, but say loudly that it no longer verifies.
    auto parsed = policy::ParseBodyStrict(active->ceiling.body());
    if (!parsed.ok()) return absl::DataLossError(absl::StrCat("the stored ceiling's body: ", parsed.status().message()));
    active->policy = std::make_shared<const openshell::sandbox::v1::SandboxPolicy>(*std::move(parsed));
    active->verified = false;
    LogWarning(absl::StrCat("the stored ceiling '", active->ceiling.ceiling_id(), "' version ",
                            active->ceiling.version(), " no longer verifies (", verified.Message(),
                            "); it stays in force because a ceiling only narrows — set a newly signed one"));
  }
  absl::MutexLock lock(&mu_);
  active_ = std::move(active);
  return absl::OkStatus();
}

std::shared_ptr<const CeilingGuard::Active> CeilingGuard::current() const {
  absl::MutexLock lock(&mu_);
  return active_;
}

trust::CheckResult CeilingGuard::Check(const openshell::sandbox::v1::SandboxPolicy& candidate,
                                       const std::string& digest) const {
  auto active = current();
  if (active == nullptr) return {};
  const std::string key = absl::StrCat(active->ceiling.version(), ":", digest);
  {
    absl::MutexLock lock(&mu_);
    if (auto it = cache_.find(key); it != cache_.end()) return it->second;
  }
  const policy::ContainmentResult contained = policy::CheckContainment(candidate, *active->policy);
  trust::CheckResult result;
  if (contained.verdict == policy::Containment::kOutside) {
    result = Refusal(trust::reason::kExceedsCeiling, contained.detail);
  } else if (contained.verdict == policy::Containment::kUnknown) {
    result = Refusal(trust::reason::kContainmentUnknown, contained.detail);
  }
  absl::MutexLock lock(&mu_);
  if (cache_.emplace(key, result).second) {
    order_.push_back(key);
    while (order_.size() > kCacheCapacity) {
      cache_.erase(order_.front());
      order_.pop_front();
    }
  }
  return result;
}

trust::CheckResult CeilingGuard::CheckBody(const std::string& body) const {
  if (current() == nullptr) return {};
  auto parsed = policy::ParseBodyStrict(body);
  if (!parsed.ok()) return Refusal(trust::reason::kIncompleteProjection, std::string(parsed.status().message()));
  return Check(*parsed, policy::Sha256Hex(body));
}

absl::StatusOr<gateway_v1::SetCeilingResponse> CeilingGuard::Set(
    const trust::CeilingMessage& ceiling, const trust::TrustStore* trust, int64_t now_unix, int64_t skew_s,
    const std::function<uint64_t(const openshell::sandbox::v1::SandboxPolicy&)>& count_outside) {
  AuditRecorder audit(store_);
  store::AuditEvent event = AuditRecorder::For(audit::type::kCeilingSet, "");
  event.policy_digest = ceiling.policy_digest();
  event.policy_version = ceiling.version();
  auto in_force = current();
  trust::CeilingCheckInput input;
  input.trust_store = trust;
  input.now_unix = now_unix;
  input.clock_skew_s = skew_s;
  if (in_force != nullptr) input.in_force_version = in_force->ceiling.version();
  const trust::CheckResult verified = trust::CheckCeiling(ceiling, input);
  if (!verified.ok()) {
    audit.Record(event, audit::outcome::kRefused,
                 absl::StrCat(verified.Message(), " (ceiling '", ceiling.ceiling_id(), "' version ", ceiling.version(), ")"));
    return verified.ToStatus();
  }
  const uint64_t outside = count_outside(*verified.policy);
  event.outcome = audit::outcome::kOk;
  event.key_ids = verified.verified_key_ids;
  event.reason = absl::StrCat("ceiling '", ceiling.ceiling_id(), "' version ", ceiling.version(),
                              ceiling.audit_label().empty() ? "" : absl::StrCat(" label '", ceiling.audit_label(), "'"),
                              " in force; ", outside, " admitted sandbox(es) outside it");
  if (absl::Status saved = store_->SaveCeiling(ceiling.SerializeAsString(), ceiling.version(), event); !saved.ok()) {
    if (absl::IsAborted(saved)) return absl::FailedPreconditionError(saved.message());  // "rollback: ..." (a race)
    return saved;
  }
  auto active = std::make_shared<Active>();
  active->ceiling = ceiling;
  active->policy = verified.policy;
  active->key_ids = verified.verified_key_ids;
  gateway_v1::SetCeilingResponse response;
  *response.mutable_ceiling() = InfoOf(*active);
  response.set_sandboxes_outside(outside);
  {
    absl::MutexLock lock(&mu_);
    active_ = std::move(active);
  }
  LogInfo(event.reason);
  return response;
}

}  // namespace osh::gateway
