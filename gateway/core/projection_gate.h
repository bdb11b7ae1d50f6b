// The one place that decides whether a projection may be admitted, and whether an admitted one may
// still be served. It owns what those decisions read: the trust-store snapshot, the accepted surfaces
// and clock skew (config), the validated-body cache, the ceiling in force (CeilingGuard), and the
// envelopes refused to fetchers since the last trust-store reload (key_revoked).
//
// - CheckNew: a projection the driver just returned (admission, refresh, re-projection): the projection
//   check of SPEC §4 as of `now`, then containment in the ceiling.
// - CheckStored: an envelope the store holds (start-up, another replica's commit, a trust reload): the
//   projection check as of its admission; a failure is audited (reverification_failed).
// - ServingChecks (declared by the registry, which applies the serving rule): re-verification of a
//   loaded sandbox, and the revocation and expiry verdicts.
//
// Thread-safe. `store`, `clock` and `audit` must outlive the gate.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "gateway/core/audit_recorder.h"
#include "gateway/core/ceiling_guard.h"
#include "gateway/core/config.h"
#include "gateway/core/sandbox_registry.h"
#include "store/clock.h"
#include "store/store.h"
#include "trust/projection_check.h"
#include "trust/trust_store.h"
#include "trust/validated_body_cache.h"

namespace osh::gateway {

// The reason a projection is refused while a trust-store reload's refreshes may still replace it (its key
// no longer verifies): not key_revoked, which tells a supervisor to withdraw the policy in force.
inline constexpr char kRevocationPending[] = "revocation_pending";

class ProjectionGate final : public ServingChecks, private store::CeilingListener {
 public:
  // `ceilings` and `log` must outlive the gate; the gate listens to `ceilings` for as long as it lives,
  // so the ceiling in force follows the store — a ceiling set here or by another replica is adopted
  // (re-verified with the trust store in force) as the store commits it.
  ProjectionGate(const Config& config, store::CeilingStore* ceilings, store::AuditLog* log, const store::Clock* clock,
                 AuditRecorder* audit, std::shared_ptr<const trust::TrustStore> trust);
  ~ProjectionGate() override;

  // The trust store in force (null: no verification), and its replacement after a reload (which also
  // starts a new epoch of the ceiling's kept verdicts: CeilingGuard::TrustChanged).
  std::shared_ptr<const trust::TrustStore> trust() const;
  void SetTrust(std::shared_ptr<const trust::TrustStore> trust);
  // kVerified with a trust store in force, kNone without.
  static store::Verification VerificationWith(const trust::TrustStore* trust);

  CeilingGuard& ceiling() { return ceiling_; }
  const CeilingGuard& ceiling() const { return ceiling_; }
  trust::ValidatedBodyCache* body_cache() { return &body_cache_; }
  const trust::ValidatedBodyCache* body_cache() const { return &body_cache_; }

  // A new projection's verdict: the check's result (reason empty when admitted; the parsed policy and
  // counted keys then), the ceiling it was checked against (store::ChangeBatch::checked_ceiling) and the
  // verification it was admitted with.
  struct Verdict {
    trust::CheckResult result;
    int64_t ceiling_stamp = store::kNoCeiling;
    store::Verification verification = store::Verification::kNone;
    bool ok() const { return result.ok(); }
  };
  // The projection check as of `now` against `trust` (rollback against `admitted_version` when set; the
  // runtime context binding against `context`), then containment in `ceiling` — the ceiling in force
  // when null. Stateless apart from the caches: the caller commits or refuses.
  Verdict CheckNew(const openshell::policy::driver::v1::Projection& projection,
                   const openshell::policy::driver::v1::RuntimeContext& context, int64_t now,
                   std::optional<uint64_t> admitted_version, const trust::TrustStore* trust,
                   const std::shared_ptr<const CeilingGuard::Active>* ceiling = nullptr);
  // The same with the trust store in force.
  Verdict CheckNew(const openshell::policy::driver::v1::Projection& projection,
                   const openshell::policy::driver::v1::RuntimeContext& context, int64_t now,
                   std::optional<uint64_t> admitted_version = std::nullopt);
  // After the store refused a commit because another ceiling was stored (ceiling_changed): loads the
  // ceiling the database holds now. The caller then checks its candidate again (CheckCeiling).
  absl::Status ReloadCeiling();
  // Containment alone in the ceiling in force, for a candidate already past the projection check.
  trust::CheckResult CheckCeiling(const openshell::sandbox::v1::SandboxPolicy& policy, const std::string& digest,
                                  int64_t* stamp);

  // An envelope the store holds, checked as of its admission (`updated_at_unix`) with `trust` (the one
  // in force when omitted): digest, signatures, key windows, context binding and body. A failure is
  // audited (reverification_failed) and returned (FAILED_PRECONDITION "reason: detail").
  absl::Status CheckStored(const std::string& sandbox_id, const openshell::policy::driver::v1::RuntimeContext& context,
                           const store::Envelope& envelope, store::Verification verification, int64_t updated_at_unix,
                           const trust::TrustStore* trust);

  // The envelopes refused to fetchers after a trust-store reload (their signatures no longer verify),
  // each with its message — `key_revoked: …` once no refresh replaced it, `revocation_pending: …` while
  // the reload's refreshes run — and how many sandboxes hold them. Replaces the previous set.
  using RevokedEnvelopes = absl::flat_hash_map<const store::Envelope*, std::pair<store::EnvelopePtr, std::string>>;
  void SetRevoked(RevokedEnvelopes revoked, uint64_t sandboxes);
  // Adds to the set (sandboxes checked again after a reload that their check raced); `holders`: how many
  // sandboxes hold each envelope, counted only for an envelope not in the set already (whose sandboxes the
  // reload counted).
  void AddRevoked(RevokedEnvelopes revoked, const absl::flat_hash_map<const store::Envelope*, uint64_t>& holders);
  uint64_t revoked_sandboxes() const { return revoked_sandboxes_.load(std::memory_order_relaxed); }

  // ServingChecks (the registry's serving rule).
  absl::Status VerifyLoaded(const std::string& sandbox_id, const std::string& context_bytes,
                            const store::Envelope& envelope, store::Verification verification,
                            int64_t updated_at_unix) override;
  absl::Status ServingError(const store::Envelope& envelope, int64_t now_unix) const override;

 private:
  void OnCeiling(const std::string& ceiling_bytes, uint64_t version, bool remote) override;

  const Config& config_;
  const store::Clock* const clock_;
  AuditRecorder* const audit_;
  store::CeilingStore* const ceilings_;
  CeilingGuard ceiling_;
  trust::ValidatedBodyCache body_cache_;  // bodies that passed step 7, by recomputed digest

  mutable absl::Mutex trust_mu_;
  std::shared_ptr<const trust::TrustStore> trust_ ABSL_GUARDED_BY(trust_mu_);

  mutable absl::Mutex revoked_mu_;
  RevokedEnvelopes revoked_ ABSL_GUARDED_BY(revoked_mu_);
  std::atomic<uint64_t> revoked_sandboxes_{0};
};

}  // namespace osh::gateway
