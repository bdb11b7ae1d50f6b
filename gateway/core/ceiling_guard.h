// The ceiling in force and the containment check every policy path runs against it: builtin
// SetPolicy/UpdatePolicy (through the driver's policy guard), re-projection, and every admission and
// refresh under any driver. A ceiling is put in force only when it verifies against the trust store
// and its version is above the one in force; it is stored verbatim with its signatures and audited.
// At start-up the stored ceiling is loaded and re-verified; one that no longer verifies (a key revoked
// since) stays in force — it only ever narrows — and the log says so loudly.
//
// Check results are kept per (candidate body digest, ceiling in force: its version and policy digest,
// trust-store epoch), at most kCacheCapacity of them (the oldest go first), so 100k sandboxes sharing one
// policy cost one containment check, and a candidate seen before (the interceptor's repeated validate of
// one composed candidate) costs a lookup. A verdict is never reused across ceilings: another ceiling
// has another key; and never across trust stores: TrustChanged (the gate calls it on every reload)
// starts a new epoch and drops every kept verdict. Thread-safe.
#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "openshell/policy/gateway/v1/gateway.pb.h"
#include "store/store.h"
#include "trust/ceiling.h"
#include "trust/projection_check.h"
#include "trust/trust_store.h"

namespace osh::gateway {

class CeilingGuard {
 public:
  struct Active {
    trust::CeilingMessage ceiling;
    std::shared_ptr<const openshell::sandbox::v1::SandboxPolicy> policy;
    std::vector<std::string> key_ids;
    bool verified = true;  // false: loaded from the store and no longer verifies (still in force)
  };

  // `store` and `log` must outlive the guard.
  // `expected_id` not empty: only ceilings of that ceiling_id verify (config ceiling_id). One of another id
  // is refused by Set; found in the store (another replica's, a rewritten row) it is never adopted (Load and
  // the replica feed: DATA_LOSS ceiling_missing): the one in force stays and commits checked against it are
  // refused until this fleet's is set again; with none in force (at start) Load fails, and so does the start.
  CeilingGuard(store::CeilingStore* store, store::AuditLog* log, std::string expected_id = {})
      : store_(store), log_(log), expected_id_(std::move(expected_id)) {}

  // Loads the stored ceiling (if any) and re-verifies it with `trust` (may be null). A ceiling only
  // moves forward: a stored one not newer than the one in force changes nothing. DATA_LOSS when the
  // database holds no ceiling, or an older one, while a ceiling is in force here (its row was deleted or
  // rolled back): the one in force stays, and commits checked against it are refused until it is set again.
  absl::Status Load(const trust::TrustStore* trust, int64_t now_unix, int64_t skew_s);
  // The same for a ceiling as stored (`ceiling_bytes`), as the store tells its listeners of one.
  absl::Status Adopt(const std::string& ceiling_bytes, const trust::TrustStore* trust, int64_t now_unix, int64_t skew_s);

  // At start-up, after Load: FAILED_PRECONDITION "ceiling_missing: ..." when the audit chain's newest
  // successful ceiling_set names a ceiling (version and policy digest) that is not the one the database
  // holds — the row was deleted or replaced behind the gateway's back (issue 25.17).
  absl::Status CheckAgainstAudit() const;

  // The ceiling in force, or null.
  std::shared_ptr<const Active> current() const;
  // The stamp a commit carries for `active` (store::ChangeBatch::checked_ceiling): its version, or
  // store::kNoCeiling for null.
  static int64_t StampOf(const std::shared_ptr<const Active>& active);

  // OK (reason empty) when no ceiling is in force or `candidate` is inside it; otherwise reason
  // exceeds_ceiling or containment_unknown with the first widening or what cannot be decided.
  // `digest` is the candidate body's SHA-256 (the cache key). `stamp`, when given, receives the stamp
  // of the ceiling the candidate was checked against (the commit must carry it).
  trust::CheckResult Check(const openshell::sandbox::v1::SandboxPolicy& candidate, const std::string& digest,
                           int64_t* stamp = nullptr) const;
  // The same against a given ceiling (null: none in force).
  trust::CheckResult CheckAgainst(const std::shared_ptr<const Active>& active,
                                  const openshell::sandbox::v1::SandboxPolicy& candidate, const std::string& digest) const;
  // The same for a serialized body (parsed strictly; a body that does not parse is reported as such).
  trust::CheckResult CheckBody(const std::string& body) const;

  // Verifies `ceiling` and stores it, audited, in one transaction; it is in force once the store has told
  // its ceiling listeners (the projection gate, which Adopts it) — before this returns. How many admitted
  // sandboxes the verified ceiling leaves outside is counted inside that transaction (the store's
  // completer), so admissions racing it are either counted or refused (issue 25.10). A refusal is
  // FAILED_PRECONDITION "reason_code: detail" and is audited too.
  absl::StatusOr<openshell::policy::gateway::v1::SetCeilingResponse> Set(
      const trust::CeilingMessage& ceiling, const trust::TrustStore* trust, int64_t now_unix, int64_t skew_s);

  static openshell::policy::gateway::v1::CeilingInfo InfoOf(const Active& active);

  // policy::ValidatePolicy(candidate), kept per candidate digest like the verdicts (it is a pure function
  // of the candidate, so a candidate seen before is not validated again): OK or "invalid_policy: ...".
  absl::Status Validate(const openshell::sandbox::v1::SandboxPolicy& candidate, const std::string& digest) const;

  // The trust store in force changed (reloaded): no verdict taken before is reused.
  void TrustChanged();
  // How many check results are kept, and how many checks were answered from them.
  struct CacheStats {
    size_t kept = 0;
    uint64_t hits = 0;
    uint64_t misses = 0;
  };
  CacheStats cache_stats() const;
  static constexpr size_t kCacheCapacity = 4096;

 private:
  // Puts `active` in force unless the one in force is as new or newer.
  void Install(std::shared_ptr<const Active> active);

  store::CeilingStore* const store_;
  store::AuditLog* const log_;
  const std::string expected_id_;
  mutable absl::Mutex mu_;
  std::shared_ptr<const Active> active_ ABSL_GUARDED_BY(mu_);
  mutable absl::flat_hash_map<std::string, trust::CheckResult> cache_ ABSL_GUARDED_BY(mu_);
  // Validate's memo: candidate digest -> its status, at most kCacheCapacity (the oldest go first).
  mutable absl::flat_hash_map<std::string, absl::Status> validated_ ABSL_GUARDED_BY(mu_);
  mutable std::deque<std::string> validated_order_ ABSL_GUARDED_BY(mu_);
  mutable std::deque<std::string> order_ ABSL_GUARDED_BY(mu_);
  uint64_t trust_epoch_ ABSL_GUARDED_BY(mu_) = 0;
  mutable uint64_t hits_ ABSL_GUARDED_BY(mu_) = 0;
  mutable uint64_t misses_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace osh::gateway
