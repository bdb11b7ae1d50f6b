#include "gateway/core/projection_gate.h"

#include "absl/strings/str_cat.h"
#include "gateway/core/log.h"
#include "trust/audit_vocabulary.h"

namespace osh::gateway {

namespace audit = trust::audit;
namespace driver_v1 = openshell::policy::driver::v1;

ProjectionGate::ProjectionGate(const Config& config, store::CeilingStore* ceilings, store::AuditLog* log,
                               const store::Clock* clock, AuditRecorder* audit,
                               std::shared_ptr<const trust::TrustStore> trust)
    : config_(config), clock_(clock), audit_(audit), ceilings_(ceilings), ceiling_(ceilings, log, config.ceiling_id), trust_(std::move(trust)) {
  ceilings_->ceiling_listeners().Add(this);
}

ProjectionGate::~ProjectionGate() { ceilings_->ceiling_listeners().Remove(this); }

void ProjectionGate::OnCeiling(const std::string& ceiling_bytes, uint64_t version, bool remote) {
  if (absl::Status s = ceiling_.Adopt(ceiling_bytes, trust().get(), clock_->NowUnix(), config_.clock_skew_s); !s.ok()) {
    LogError(absl::StrCat("ceiling version ", version, remote ? " set by another replica" : "", ": ", s.message()));
  }
}

std::shared_ptr<const trust::TrustStore> ProjectionGate::trust() const {
  absl::MutexLock lock(&trust_mu_);
  return trust_;
}

void ProjectionGate::SetTrust(std::shared_ptr<const trust::TrustStore> trust) {
  {
    absl::MutexLock lock(&trust_mu_);
    trust_ = std::move(trust);
  }
  ceiling_.TrustChanged();  // no verdict taken under the old trust store is reused
}

store::Verification ProjectionGate::VerificationWith(const trust::TrustStore* trust) {
  return trust != nullptr ? store::Verification::kVerified : store::Verification::kNone;
}

ProjectionGate::Verdict ProjectionGate::CheckNew(const driver_v1::Projection& projection,
                                                 const driver_v1::RuntimeContext& context, int64_t now,
                                                 std::optional<uint64_t> admitted_version,
                                                 const trust::TrustStore* trust,
                                                 const std::shared_ptr<const CeilingGuard::Active>* ceiling) {
  Verdict verdict;
  verdict.verification = VerificationWith(trust);
  trust::CheckInput input;
  input.context = &context;
  input.accepted_surfaces = &config_.accepted_surfaces;
  input.trust_store = trust;
  input.now_unix = now;
  input.clock_skew_s = config_.clock_skew_s;
  input.admitted_version = admitted_version;
  input.body_cache = &body_cache_;
  verdict.result = trust::CheckProjection(projection, input);
  if (!verdict.result.ok()) return verdict;
  trust::CheckResult inside;
  if (ceiling != nullptr) {
    inside = ceiling_.CheckAgainst(*ceiling, *verdict.result.policy, projection.policy_digest());
    verdict.ceiling_stamp = CeilingGuard::StampOf(*ceiling);
  } else {
    inside = ceiling_.Check(*verdict.result.policy, projection.policy_digest(), &verdict.ceiling_stamp);
  }
  if (!inside.ok()) {
    verdict.result.reason = std::move(inside.reason);
    verdict.result.detail = std::move(inside.detail);
  }
  return verdict;
}

ProjectionGate::Verdict ProjectionGate::CheckNew(const driver_v1::Projection& projection,
                                                 const driver_v1::RuntimeContext& context, int64_t now,
                                                 std::optional<uint64_t> admitted_version) {
  const auto in_force = trust();
  return CheckNew(projection, context, now, admitted_version, in_force.get());
}

absl::Status ProjectionGate::ReloadCeiling() {
  return ceiling_.Load(trust().get(), clock_->NowUnix(), config_.clock_skew_s);
}

trust::CheckResult ProjectionGate::CheckCeiling(const openshell::sandbox::v1::SandboxPolicy& policy,
                                                const std::string& digest, int64_t* stamp) {
  return ceiling_.Check(policy, digest, stamp);
}

absl::Status ProjectionGate::CheckStored(const std::string& sandbox_id, const driver_v1::RuntimeContext& context,
                                         const store::Envelope& envelope, store::Verification verification,
                                         int64_t updated_at_unix, const trust::TrustStore* trust) {
  if (verification == store::Verification::kVerified && trust == nullptr) {
    return absl::FailedPreconditionError("admitted with verification but no trust store is configured now");
  }
  // Re-verify what was admitted, as of when it was admitted: digest, signatures, key windows, context
  // binding and body. A row rewritten in the database fails here and is not served.
  driver_v1::Projection full;
  envelope.CopyTo(&full);
  trust::CheckInput input;
  input.context = &context;
  input.accepted_surfaces = &config_.accepted_surfaces;
  // Against the trust store in force, whenever there is one: a sandbox admitted while none was configured
  // (verification none) is served by a gateway that now has one only if its envelope would have been
  // admitted under it (issue 30: a restart with a trust store kept serving unsigned projections).
  input.trust_store = trust;
  input.now_unix = updated_at_unix;
  input.clock_skew_s = config_.clock_skew_s;
  input.body_cache = &body_cache_;
  const auto result = trust::CheckProjection(full, input);
  if (!result.ok()) {
    audit_->Record(AuditRecorder::For(audit::Type::kReverificationFailed, sandbox_id, &full), audit::Outcome::kRefused,
                   result.Message());
    return result.ToStatus();
  }
  return absl::OkStatus();
}

void ProjectionGate::SetRevoked(RevokedEnvelopes revoked, uint64_t sandboxes) {
  {
    absl::MutexLock lock(&revoked_mu_);
    revoked_ = std::move(revoked);
  }
  revoked_sandboxes_.store(sandboxes, std::memory_order_relaxed);
}

void ProjectionGate::AddRevoked(RevokedEnvelopes revoked,
                                const absl::flat_hash_map<const store::Envelope*, uint64_t>& holders) {
  uint64_t added = 0;
  {
    absl::MutexLock lock(&revoked_mu_);
    for (auto& [envelope, entry] : revoked) {
      if (!revoked_.try_emplace(envelope, std::move(entry)).second) continue;
      if (auto it = holders.find(envelope); it != holders.end()) added += it->second;
    }
  }
  revoked_sandboxes_.fetch_add(added, std::memory_order_relaxed);
}

absl::Status ProjectionGate::VerifyLoaded(const std::string& sandbox_id, const std::string& context_bytes,
                                          const store::Envelope& envelope, store::Verification verification,
                                          int64_t updated_at_unix) {
  driver_v1::RuntimeContext context;
  if (!context.ParseFromString(context_bytes)) context.set_sandbox_id(sandbox_id);
  const auto in_force = trust();
  return CheckStored(sandbox_id, context, envelope, verification, updated_at_unix, in_force.get());
}

absl::Status ProjectionGate::ServingError(const store::Envelope& envelope, int64_t now_unix) const {
  if (revoked_sandboxes_.load(std::memory_order_relaxed) > 0) {
    absl::MutexLock lock(&revoked_mu_);
    if (auto it = revoked_.find(&envelope); it != revoked_.end()) return absl::FailedPreconditionError(it->second.second);
  }
  if (envelope.expires_at_unix() != 0 && envelope.expires_at_unix() <= now_unix - config_.clock_skew_s) {
    return absl::FailedPreconditionError(absl::StrCat(trust::reason::kExpired, ": the admitted projection expired at ",
                                                      envelope.expires_at_unix(), " and no fresh one was admitted"));
  }
  return absl::OkStatus();
}

}  // namespace osh::gateway
