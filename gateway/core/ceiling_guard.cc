#include "gateway/core/ceiling_guard.h"

#include "absl/strings/str_cat.h"
#include "common/errors.h"
#include "gateway/core/audit_recorder.h"
#include "gateway/core/context_limits.h"
#include "gateway/core/log.h"
#include "policy/body_codec.h"
#include "policy/containment.h"
#include "policy/digest.h"
#include "policy/validation.h"
#include "trust/audit_vocabulary.h"

namespace osh::gateway {

namespace gateway_v1 = openshell::policy::gateway::v1;
namespace audit = trust::audit;

namespace {

// Keeps `value` under `key` in a memo bounded to CeilingGuard::kCacheCapacity entries (the oldest go first).
template <typename Value>
void CeilingKeepBounded(absl::flat_hash_map<std::string, Value>* kept, std::deque<std::string>* order,
                        const std::string& key, Value value) {
  if (!kept->emplace(key, std::move(value)).second) return;
  order->push_back(key);
  while (order->size() > CeilingGuard::kCacheCapacity) {
    kept->erase(order->front());
    order->pop_front();
  }
}

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
  if (!stored->has_value()) {
    const auto in_force = current();
    if (in_force == nullptr) return absl::OkStatus();
    return absl::DataLossError(absl::StrCat(trust::reason::kCeilingMissing, ": the ceiling in force here ('",
                                            in_force->ceiling.ceiling_id(), "' version ", in_force->ceiling.version(),
                                            ") is no longer in the database; it stays in force, and nothing checked "
                                            "against it commits until a ceiling is stored again"));
  }
  return Adopt(**stored, trust, now_unix, skew_s);
}

absl::Status CeilingGuard::Adopt(const std::string& ceiling_bytes, const trust::TrustStore* trust, int64_t now_unix,
                                 int64_t skew_s) {
  const auto in_force = current();
  auto active = std::make_shared<Active>();
  if (!active->ceiling.ParseFromString(ceiling_bytes)) return absl::DataLossError("the stored ceiling does not decode");
  if (!expected_id_.empty() && active->ceiling.ceiling_id() != expected_id_) {
    // Another fleet's ceiling (stored by a gateway without ceiling_id, or written into the database) is never
    // adopted, however well signed: not over this fleet's in force (which stays, and nothing checked against
    // it commits while the database holds another: their commits are refused ceiling_changed, checked again,
    // refused again), and not at start, where it could be wider than this fleet's (the start fails).
    return absl::DataLossError(absl::StrCat(
        trust::reason::kCeilingMissing, ": the database holds ceiling '", active->ceiling.ceiling_id(), "' version ",
        active->ceiling.version(), ", not one of this gateway's ceiling_id '", expected_id_, "'; ",
        in_force != nullptr
            ? absl::StrCat("ceiling '", in_force->ceiling.ceiling_id(), "' version ", in_force->ceiling.version(),
                           " stays in force and nothing commits until this fleet's ceiling is set again, of a higher "
                           "version")
            : "refusing to run under it: set this fleet's ceiling (of a higher version) from a gateway without "
              "ceiling_id, or restore the database from a backup that has it"));
  }
  if (in_force != nullptr && active->ceiling.version() <= in_force->ceiling.version()) {
    if (active->ceiling.version() == in_force->ceiling.version()) {
      if (active->ceiling.ceiling_id() == in_force->ceiling.ceiling_id() &&
          active->ceiling.policy_digest() == in_force->ceiling.policy_digest()) {
        return absl::OkStatus();  // already in force
      }
      return absl::DataLossError(absl::StrCat(
          trust::reason::kCeilingMissing, ": the database holds another ceiling of version ", active->ceiling.version(),
          " ('", active->ceiling.ceiling_id(), "', policy digest ", active->ceiling.policy_digest(),
          ") than the one in force here ('", in_force->ceiling.ceiling_id(), "', policy digest ",
          in_force->ceiling.policy_digest(), "); the one in force stays"));
    }
    return absl::DataLossError(absl::StrCat(trust::reason::kCeilingMissing, ": the database holds ceiling version ",
                                            active->ceiling.version(), ", older than the one in force here (",
                                            in_force->ceiling.version(), "); the newer one stays in force"));
  }
  trust::CeilingCheckInput input;
  input.trust_store = trust;
  input.now_unix = now_unix;
  input.clock_skew_s = skew_s;
  input.expected_ceiling_id = expected_id_;
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
  Install(std::move(active));
  return absl::OkStatus();
}

void CeilingGuard::Install(std::shared_ptr<const Active> active) {
  absl::MutexLock lock(&mu_);
  if (active_ != nullptr && active_->ceiling.version() >= active->ceiling.version()) return;
  active_ = std::move(active);
}

absl::Status CeilingGuard::CheckAgainstAudit() const {
  auto latest = log_->LatestAuditEvent(audit::Type::kCeilingSet, audit::Outcome::kOk);
  if (!latest.ok()) return latest.status();
  if (!latest->has_value()) return absl::OkStatus();  // no ceiling was ever put in force
  const store::AuditEvent& set = **latest;
  const auto active = current();
  const std::string recorded = absl::StrCat("the audit chain records that ceiling version ", set.policy_version,
                                            " (policy digest ", set.policy_digest, ") was put in force (event ",
                                            set.seq, ")");
  if (active == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        trust::reason::kCeilingMissing, ": ", recorded,
        ", but the database holds no ceiling (its row was deleted, or the database was restored without it); "
        "refusing to run without it: restore the database from a backup that has it"));
  }
  if (active->ceiling.version() != set.policy_version || active->ceiling.policy_digest() != set.policy_digest) {
    return absl::FailedPreconditionError(absl::StrCat(
        trust::reason::kCeilingMissing, ": ", recorded, ", but the database holds version ", active->ceiling.version(),
        " (policy digest ", active->ceiling.policy_digest(),
        "); the ceiling row was replaced behind the gateway's back: restore the database from a backup that has it"));
  }
  return absl::OkStatus();
}

int64_t CeilingGuard::StampOf(const std::shared_ptr<const Active>& active) {
  return active == nullptr ? store::kNoCeiling : static_cast<int64_t>(active->ceiling.version());
}

std::shared_ptr<const CeilingGuard::Active> CeilingGuard::current() const {
  absl::MutexLock lock(&mu_);
  return active_;
}

trust::CheckResult CeilingGuard::Check(const openshell::sandbox::v1::SandboxPolicy& candidate,
                                       const std::string& digest, int64_t* stamp) const {
  const auto active = current();
  if (stamp != nullptr) *stamp = StampOf(active);
  return CheckAgainst(active, candidate, digest);
}

trust::CheckResult CeilingGuard::CheckAgainst(const std::shared_ptr<const Active>& active,
                                              const openshell::sandbox::v1::SandboxPolicy& candidate,
                                              const std::string& digest) const {
  if (active == nullptr) return {};
  std::string key;
  {
    absl::MutexLock lock(&mu_);
    key = absl::StrCat(trust_epoch_, ":", active->ceiling.version(), ":", active->ceiling.policy_digest(), ":", digest);
    if (auto it = cache_.find(key); it != cache_.end()) {
      ++hits_;
      return it->second;
    }
    ++misses_;
  }
  const policy::ContainmentResult contained = policy::CheckContainment(candidate, *active->policy);
  trust::CheckResult result;
  if (contained.verdict == policy::Containment::kOutside) {
    result = Refusal(trust::reason::kExceedsCeiling, contained.detail);
  } else if (contained.verdict == policy::Containment::kUnknown) {
    result = Refusal(trust::reason::kContainmentUnknown, contained.detail);
  }
  absl::MutexLock lock(&mu_);
  CeilingKeepBounded(&cache_, &order_, key, result);
  return result;
}

absl::Status CeilingGuard::Validate(const openshell::sandbox::v1::SandboxPolicy& candidate,
                                    const std::string& digest) const {
  {
    absl::MutexLock lock(&mu_);
    if (auto it = validated_.find(digest); it != validated_.end()) return it->second;
  }
  absl::Status valid = policy::ValidatePolicy(candidate);
  absl::MutexLock lock(&mu_);
  CeilingKeepBounded(&validated_, &validated_order_, digest, valid);
  return valid;
}

void CeilingGuard::TrustChanged() {
  absl::MutexLock lock(&mu_);
  ++trust_epoch_;
  cache_.clear();
  order_.clear();
}

CeilingGuard::CacheStats CeilingGuard::cache_stats() const {
  absl::MutexLock lock(&mu_);
  return {cache_.size(), hits_, misses_};
}

trust::CheckResult CeilingGuard::CheckBody(const std::string& body) const {
  if (current() == nullptr) return {};
  auto parsed = policy::ParseBodyStrict(body);
  if (!parsed.ok()) return Refusal(trust::reason::kIncompleteProjection, std::string(parsed.status().message()));
  return Check(*parsed, policy::Sha256Hex(body));
}

absl::StatusOr<gateway_v1::SetCeilingResponse> CeilingGuard::Set(const trust::CeilingMessage& ceiling,
                                                                 const trust::TrustStore* trust, int64_t now_unix,
                                                                 int64_t skew_s) {
  AuditRecorder audit(log_);
  store::AuditEvent event = AuditRecorder::For(audit::Type::kCeilingSet, "");
  // The caller's words until checked (review 114: a 70 KB digest made the event too large for the log and
  // stopped its integration for good; control characters reached `audit tail`'s terminal).
  event.policy_digest = BoundedText(ceiling.policy_digest(), kMaxAuditFieldBytes);
  event.policy_version = ceiling.version();
  auto in_force = current();
  trust::CeilingCheckInput input;
  input.trust_store = trust;
  input.now_unix = now_unix;
  input.clock_skew_s = skew_s;
  if (in_force != nullptr) input.in_force_version = in_force->ceiling.version();
  input.expected_ceiling_id = expected_id_;
  const trust::CheckResult verified = trust::CheckCeiling(ceiling, input);
  if (!verified.ok()) {
    audit.Record(event, audit::Outcome::kRefused,
                 absl::StrCat(verified.Message(), " (ceiling '", ceiling.ceiling_id(), "' version ", ceiling.version(), ")"));
    return verified.ToStatus();
  }
  event.outcome = audit::Outcome::kOk;
  event.key_ids = verified.verified_key_ids;
  // Counted inside SaveCeiling's transaction: every projection put in force before it is counted, and
  // every later commit must have been checked against this ceiling (store::ChangeBatch::checked_ceiling).
  uint64_t outside = 0;
  const auto& ceiling_policy = *verified.policy;
  auto complete = [&](const std::vector<store::CeilingStore::AdmittedBody>& admitted, store::AuditEvent* e) {
    outside = 0;
    for (const auto& held : admitted) {
      auto parsed = policy::ParseBodyStrict(held.body);
      const bool inside =
          parsed.ok() && policy::CheckContainment(*parsed, ceiling_policy).verdict == policy::Containment::kInside;
      if (!inside) outside += held.sandboxes;
    }
    e->reason = absl::StrCat("ceiling '", ceiling.ceiling_id(), "' version ", ceiling.version(),
                             ceiling.audit_label().empty() ? "" : absl::StrCat(" label '", ceiling.audit_label(), "'"),
                             " in force; ", outside, " admitted sandbox(es) outside it");
  };
  if (absl::Status saved = store_->SaveCeiling(ceiling.SerializeAsString(), ceiling.version(), event, complete);
      !saved.ok()) {
    // "rollback: ..." (a race); a storage error (a serialization failure) stays one, to be scrubbed.
    if (absl::IsAborted(saved) && !common::IsStorageError(saved)) return absl::FailedPreconditionError(saved.message());
    return saved;
  }
  Active stored;  // in force already: the store told the gate, which adopted it
  stored.ceiling = ceiling;
  stored.key_ids = verified.verified_key_ids;
  gateway_v1::SetCeilingResponse response;
  *response.mutable_ceiling() = InfoOf(stored);
  response.set_sandboxes_outside(outside);
  LogInfo(absl::StrCat("ceiling '", ceiling.ceiling_id(), "' version ", ceiling.version(), " in force; ", outside,
                       " admitted sandbox(es) outside it"));
  return response;
}

}  // namespace osh::gateway
