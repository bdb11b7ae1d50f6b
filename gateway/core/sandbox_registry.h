// The admitted sandboxes in memory: what sandboxes fetch is served from here, never from disk.
//
// A cache of the store, never a second truth: it is filled from the store at start-up (Reset) and then
// changes only by applying the batches the store reports as committed (store::ChangeListener), in
// commit order. Entries are compact: the envelope (and its body) is shared with every sandbox served
// the same projection; the runtime context is kept serialized.
//
// Entries loaded at start-up are *unverified* until the gateway re-verifies them (lazily on first use,
// and in the background); nothing unverified is handed out as servable (Authenticated::verified).
//
// Thread-safe. Watchers are called with the registry lock held and must not call back into it.
#pragma once

#include <array>
#include <map>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "gateway/core/limits.h"
#include "store/change.h"

namespace osh::gateway {

using ProjectionPtr = std::shared_ptr<const openshell::policy::driver::v1::Projection>;

class ProjectionWatcher {
 public:
  virtual ~ProjectionWatcher() = default;
  // A newly admitted projection for the watched sandbox (shared by every watcher of that envelope).
  virtual void OnProjection(ProjectionPtr projection) = 0;
  // The sandbox was deleted (its handle revoked) or the gateway is stopping: no more calls follow.
  virtual void OnClosed(bool revoked) = 0;
};

// What the serving rule asks of the gate that owns the trust store (gateway/projection_gate.h). The
// registry declares it, so the rule has one home without the registry knowing of trust or ceilings.
class ServingChecks {
 public:
  virtual ~ServingChecks() = default;
  // A loaded sandbox's stored envelope re-verified as of its admission: OK, or why it fails (the
  // failure is audited by the implementation).
  virtual absl::Status VerifyLoaded(const std::string& sandbox_id, const std::string& context_bytes,
                                    const store::Envelope& envelope, store::Verification verification,
                                    int64_t updated_at_unix) = 0;
  // Whether an admitted envelope may be served at `now_unix`: FAILED_PRECONDITION "key_revoked: ..." (its
  // signatures no longer verify after a trust-store reload) or "expired: ...", OK otherwise.
  virtual absl::Status ServingError(const store::Envelope& envelope, int64_t now_unix) const = 0;
};

class SandboxRegistry final : public store::ChangeListener {
 public:
  // A consistent copy of one sandbox's record (the envelope is shared, not copied).
  struct Snapshot {
    store::SandboxRecord record;
    bool verified = false;
    // The body admitted before the current one, since this process started (not stored: after a restart
    // only the current one is known). A sandbox still reporting about it is behind, not wrong.
    store::BodyPtr previous_body;
  };

  // Replaces the whole content with what the store holds (start-up); every entry is unverified.
  void Reset(std::vector<store::SandboxRecord> records);
  // Applies a committed batch (see store::ChangeListener).
  void OnCommitted(const store::ChangeBatch& batch, const store::CommitResult& result) override;

  // Applies what another replica committed (store::RemoteChanges), in feed order: `removed` go (their
  // watchers closed as revoked); each of `present` is inserted or brought up to the stored record. A
  // record whose verdict in `verified` (same index) is false is dropped from what is served, as a
  // failed re-verification is. Watchers get a changed projection only when it is verified.
  void ApplyRemote(std::vector<store::SandboxRecord> present, const std::vector<bool>& verified,
                   const std::vector<std::string>& removed);
  // Marks the sandbox verified, if it still holds `envelope`. Returns whether it did.
  bool MarkVerified(const std::string& sandbox_id, const store::EnvelopePtr& envelope);
  // Drops a sandbox whose stored envelope failed re-verification from what is served (the store keeps
  // the row for the operator); closes its watchers. False if absent.
  bool Quarantine(const std::string& sandbox_id);
  // Up to `limit` sandboxes still unverified, after `after` (exclusive), in id order.
  std::vector<std::string> Unverified(const std::string& after, size_t limit) const;

  bool Contains(const std::string& sandbox_id) const;
  // Whether `sandbox_id` is admitted holding `driver_handle` (a driver may give one handle per context,
  // so a refused or recovered admission's handle can be an admitted sandbox's: it must stay live).
  bool HoldsDriverHandle(const std::string& sandbox_id, const std::string& driver_handle) const;
  std::optional<Snapshot> Get(const std::string& sandbox_id) const;
  // Sandbox ids in order, after `after` (exclusive), at most `limit`.
  std::vector<Snapshot> List(const std::string& after, size_t limit) const;
  size_t size() const;
  size_t watcher_count() const;
  // Sandboxes whose last refresh failed (last_refresh_error set).
  size_t refresh_error_count() const;

  // The sandboxes, with their driver handle and current envelope, whose runtime context `matches`
  // (called under the lock with the serialized context). For a re-projection.
  struct Member {
    std::string sandbox_id;
    std::string context_bytes;
    std::string driver_handle;
    store::EnvelopePtr envelope;
  };
  template <typename Pred>
  std::vector<Member> Select(Pred matches) const {
    absl::ReaderMutexLock lock(&mu_);
    std::vector<Member> out;
    for (const auto& [id, e] : by_id_) {
      if (matches(e.context_bytes)) out.push_back({id, e.context_bytes, e.driver_handle, e.envelope});
    }
    return out;
  }

  // Refresh scheduling without copying records: the sandboxes due (interval since the last attempt,
  // or within `lead(envelope)` seconds of expiry), each noted as attempted at `now`. O(1) when
  // interval_s is 0 and nothing admitted expires.
  std::vector<std::string> TakeDueForRefresh(int64_t now, int64_t interval_s,
                                             int64_t (*lead)(int64_t issued_at, int64_t expires_at));
  // How many records TakeDueForRefresh has looked at, in all (what its scans cost).
  uint64_t refresh_scan_visits() const;

  // Authenticates a sandbox handle: the sandbox id and its current envelope, or nothing. Not the serving
  // rule (see Serve): for calls that need only the sandbox's identity (ReportPolicyStatus).
  // The lookup is by SHA-256 of the handle; the stored hash is then compared in constant time.
  struct Authenticated {
    std::string sandbox_id;
    store::EnvelopePtr envelope;
    bool verified = false;
    std::string context_bytes;  // for re-verification when not verified
    int64_t updated_at_unix = 0;
    store::Verification verification = store::Verification::kNone;
  };
  std::optional<Authenticated> Authenticate(const std::string& handle) const;

  // The serving rule, the one answer to "may this sandbox be served now?", asked by fetches, watches and
  // egress decisions alike: the sandbox is admitted (and, by Serve, the handle is its own), its stored
  // envelope verified (a loaded sandbox not yet re-verified is verified now through `checks`; one that
  // fails is quarantined: taken out of what is served, its watchers closed), and its envelope neither
  // revoked nor expired (`checks`). `checks` must outlive the registry's use; until it is set nothing
  // unverified is served and nothing is judged revoked or expired.
  void SetServingChecks(ServingChecks* checks);
  // By sandbox handle (the sandbox API): UNAUTHENTICATED "a valid sandbox handle is required" for a handle
  // of no servable sandbox (unknown, or quarantined now); FAILED_PRECONDITION "key_revoked: ..." /
  // "expired: ..." from the checks.
  absl::StatusOr<Authenticated> Serve(const std::string& handle, int64_t now_unix);
  // By sandbox id (operators' questions about a sandbox, e.g. EvaluateEgress): NOT_FOUND for no servable
  // sandbox of that id; the same FAILED_PRECONDITION refusals as Serve.
  absl::StatusOr<Authenticated> Lookup(const std::string& sandbox_id, int64_t now_unix);

  // Registers a watcher for the sandbox the handle belongs to, once the serving rule (Serve) allows it,
  // and returns its current envelope. Serve's refusals; RESOURCE_EXHAUSTED ("watch_limit: ...") when the
  // sandbox already has its most watchers or the gateway its most in all (SetWatchLimits). Nothing
  // registered on error.
  absl::StatusOr<Authenticated> Watch(const std::string& handle, ProjectionWatcher* watcher, int64_t now_unix);
  void Unwatch(const std::string& sandbox_id, ProjectionWatcher* watcher);
  // Bounds on watch streams (Limits; each pins a serialized copy of the projection while gRPC writes
  // it). Defaults: Limits{}. Applies to later Watch calls.
  void SetWatchLimits(size_t per_sandbox, size_t total);
  // Closes every watcher (gateway stopping); later Watch calls still work.
  void CloseAllWatchers();
  // `observer` is told the id of each sandbox whose served projection a batch committed by this process
  // replaced (a refresh or re-projection made here; another replica's changes are told by that replica's
  // registry). Called with the registry lock held: it must only note the id, never call back into the
  // registry. One observer; an empty function removes it.
  void SetProjectionObserver(std::function<void(const std::string& sandbox_id)> observer);

 private:
  using HandleHash = std::array<char, 32>;  // SHA-256 of the sandbox handle, inline (no allocation)
  static HandleHash ToHandleHash(const std::string& sha256);
  // How a sandbox's projection was verified; one object shared by every sandbox verified alike.
  struct Verification {
    store::Verification verification = store::Verification::kNone;
    std::vector<std::string> key_ids;
  };
  // What a sandbox reported and its last refresh error: held only once one of them is set (most
  // sandboxes of a large fleet carry none, and these strings would cost ~100 bytes each).
  struct Reports {
    openshell::policy::gateway::v1::LoadStatus load_status = openshell::policy::gateway::v1::LOAD_STATUS_UNSPECIFIED;
    std::string load_error;
    std::string reported_digest;
    int64_t reported_at_unix = 0;
    std::string last_refresh_error;
  };
  struct Entry {
    std::string context_bytes;  // serialized RuntimeContext
    HandleHash handle_sha256;
    std::string driver_handle;
    store::EnvelopePtr envelope;
    std::shared_ptr<const Verification> verified_by;
    int64_t admitted_at_unix = 0;
    int64_t updated_at_unix = 0;
    int64_t last_refresh_attempt = 0;
    std::unique_ptr<Reports> reports;  // null: no report and no refresh error
    bool verified = false;
    store::BodyPtr previous_body;  // see Snapshot::previous_body
    std::vector<ProjectionWatcher*> watchers;
  };
  // The shared Verification for these values (the last one made, when equal; else a new one).
  std::shared_ptr<const Verification> SharedVerificationLocked(store::Verification verification,
                                                               std::vector<std::string> key_ids)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SetReportLocked(Entry& entry, openshell::policy::gateway::v1::LoadStatus status, std::string error,
                       std::string digest, int64_t at_unix) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void InsertLocked(store::SandboxRecord record, bool verified) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RemoveLocked(std::map<std::string, Entry>::iterator it, bool revoked) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SetEnvelopeLocked(Entry& entry, store::EnvelopePtr envelope) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves the record's stored state (verification, keys, times, load status, refresh error) into `entry`.
  void TakeRecordStateLocked(Entry& entry, store::SandboxRecord& record) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SetRefreshErrorLocked(Entry& entry, std::string error) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Snapshot SnapshotOf(const std::string& id, const Entry& entry) const;
  Authenticated AuthenticatedOf(const std::string& id, const Entry& entry) const;
  std::pair<const std::string, Entry>* FindByHandleLocked(const std::string& handle) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // The serving rule's verified/revoked/expired part for a sandbox found by Serve or Lookup.
  // `refused_unverified` is what a sandbox that fails re-verification answers.
  absl::StatusOr<Authenticated> Servable(Authenticated found, int64_t now_unix, const absl::Status& refused_unverified);

  ServingChecks* checks_ = nullptr;  // set once at wiring, before serving

  mutable absl::Mutex mu_;
  std::function<void(const std::string&)> projection_observer_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Entry> by_id_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<HandleHash, std::pair<const std::string, Entry>*> by_handle_hash_ ABSL_GUARDED_BY(mu_);
  size_t watchers_ ABSL_GUARDED_BY(mu_) = 0;
  size_t expiring_ ABSL_GUARDED_BY(mu_) = 0;  // entries whose envelope has an expiry
  size_t max_watchers_per_sandbox_ ABSL_GUARDED_BY(mu_) = Limits().max_watchers_per_sandbox;
  size_t max_watchers_ ABSL_GUARDED_BY(mu_) = Limits().max_watchers;
  uint64_t refresh_scan_visits_ ABSL_GUARDED_BY(mu_) = 0;
  std::shared_ptr<const Verification> last_verification_ ABSL_GUARDED_BY(mu_);  // see SharedVerificationLocked
  size_t refresh_errors_ ABSL_GUARDED_BY(mu_) = 0;  // entries with a last_refresh_error
};

}  // namespace osh::gateway
