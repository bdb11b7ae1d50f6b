// The admitted sandboxes in memory: what sandboxes fetch is served from here, never from disk.
//
// A cache of the store, never a second truth: it is filled from the store at start-up (Reset) and then
// changes only by applying the batches the store reports as committed (store::ChangeListener), in
// commit order. Each sandbox is an immutable AdmittedSandbox (gateway/core/admitted_sandbox.h): a change
// publishes a new one, so what Serve, Lookup and Watch hand out stays consistent without the lock. The
// envelope (and its body) is shared with every sandbox served the same projection; the runtime context
// is kept serialized. Reports and refresh errors are the report recorder's, beside it.
//
// Entries loaded at start-up are *unverified* until the gateway re-verifies them (lazily on first use,
// and in the background); nothing unverified is served (AdmittedSandbox::verified).
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
#include "gateway/core/admitted_sandbox.h"
#include "gateway/core/limits.h"
#include "gateway/core/report_recorder.h"
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
  // The projection the watcher was sent is no longer served (`why`: FAILED_PRECONDITION with its reason
  // code, e.g. key_revoked): the stream ends with it, so the sandbox stops enforcing a policy the gateway
  // refuses; or RESOURCE_EXHAUSTED watch_limit: a newer watch of the sandbox took its place. No more calls
  // follow.
  virtual void OnRefused(const absl::Status& why) = 0;
};

// The reason a sandbox whose stored envelope failed re-verification is refused with: the check's own
// (it starts with its reason code), then what it means.
std::string UnservableReason(const absl::Status& failed);

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
  // One sandbox's record as the store holds it, with what it reported (the envelope is shared, not
  // copied): for operators' reads.
  struct Snapshot {
    store::SandboxRecord record;
    bool verified = false;
    std::string unservable;  // see AdmittedSandbox::unservable ("" when not marked)
    store::BodyPtr previous_body;  // see AdmittedSandbox::previous_body
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
  // (Its watchers are sent the envelope if it came from another replica unverified: watchers_untold.)
  bool MarkVerified(const std::string& sandbox_id, const store::EnvelopePtr& envelope);
  // Marks the sandbox, if it still holds `envelope` unverified, as failing re-verification (`why`,
  // UnservableReason): refused with it, not checked again, until ClearUnservableMarks. Returns whether it did.
  bool MarkUnservable(const std::string& sandbox_id, const store::EnvelopePtr& envelope, std::string why);
  // A trust-store reload: every mark goes, and each marked sandbox is checked again when next asked for.
  void ClearUnservableMarks();
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

  // The sandboxes whose runtime context `matches` (called under the lock with the serialized context),
  // as they are admitted now. For a re-projection.
  template <typename Pred>
  std::vector<AdmittedPtr> Select(Pred matches) const {
    absl::ReaderMutexLock lock(&mu_);
    std::vector<AdmittedPtr> out;
    for (const auto& [id, e] : by_id_) {
      if (matches(e.admitted->context_bytes)) out.push_back(e.admitted);
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

  // Authenticates a sandbox handle: the sandbox as admitted now, or null. Not the serving rule (see
  // Serve): for calls that need only the sandbox's identity (ReportPolicyStatus).
  // The lookup is by SHA-256 of the handle; the stored hash is then compared in constant time.
  AdmittedPtr Authenticate(const std::string& handle) const;

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
  // What it returns is verified (and stays what it is: a later change publishes a new AdmittedSandbox).
  absl::StatusOr<AdmittedPtr> Serve(const std::string& handle, int64_t now_unix);
  // By sandbox id (operators' questions about a sandbox, e.g. EvaluateEgress): NOT_FOUND for no servable
  // sandbox of that id; the same FAILED_PRECONDITION refusals as Serve.
  absl::StatusOr<AdmittedPtr> Lookup(const std::string& sandbox_id, int64_t now_unix);

  // Registers a watcher for the sandbox the handle belongs to, once the serving rule (Serve) allows it,
  // and returns its current envelope. Serve's refusals; RESOURCE_EXHAUSTED ("watch_limit: ...") when the
  // gateway has its most watchers in all (SetWatchLimits; ended ones not yet gone count). A sandbox that has
  // its most already loses its oldest — OnRefused(RESOURCE_EXHAUSTED "watch_limit: a newer watch ..."),
  // counted until it Unwatches — unless as many it lost are still going: then the new one is refused.
  // Nothing registered on error.
  absl::StatusOr<AdmittedPtr> Watch(const std::string& handle, ProjectionWatcher* watcher, int64_t now_unix);
  void Unwatch(const std::string& sandbox_id, ProjectionWatcher* watcher);
  // Bounds on watch streams (Limits; each pins a serialized copy of the projection while gRPC writes
  // it). Defaults: Limits{}. Applies to later Watch calls.
  void SetWatchLimits(size_t per_sandbox, size_t total);
  // Ends the watch streams of every sandbox the serving rule (ServingChecks::ServingError) now refuses as
  // `key_revoked` — a projection whose key a trust-store reload revoked and no refresh replaced (review 115: fetches were
  // refused while open watches stayed silent, their supervisors enforcing the revoked policy) — each with
  // OnRefused(the refusal). Returns how many streams it ended.
  size_t CloseRefusedWatchers(int64_t now_unix);
  // Closes every watcher (gateway stopping); later Watch calls still work.
  void CloseAllWatchers();
  // `observer` is told the id of each sandbox whose served projection a batch committed by this process
  // replaced (a refresh or re-projection made here; another replica's changes are told by that replica's
  // registry). Called with the registry lock held: it must only note the id, never call back into the
  // registry. One observer; an empty function removes it.
  void SetProjectionObserver(std::function<void(const std::string& sandbox_id)> observer);

 private:
  using HandleHash = AdmittedSandbox::HandleHash;
  static HandleHash ToHandleHash(const std::string& sha256);
  // The registry's own state of a sandbox beside the published AdmittedSandbox.
  struct Entry {
    AdmittedPtr admitted;  // never null
    int64_t last_refresh_attempt = 0;
    std::vector<ProjectionWatcher*> watchers;
    // Watchers a newer watch took the place of (OnRefused watch_limit), until they Unwatch: still counted
    // (a stream whose reader takes nothing holds its write, and the projection, until it is cancelled).
    std::vector<ProjectionWatcher*> ending;
  };
  // The shared Verification for these values (the last one made, when equal; else a new one).
  std::shared_ptr<const AdmittedSandbox::Verification> SharedVerificationLocked(store::Verification verification,
                                                                                std::vector<std::string> key_ids)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void InsertLocked(store::SandboxRecord record, bool verified) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RemoveLocked(std::map<std::string, Entry>::iterator it, bool revoked) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Publishes `next` as the entry's sandbox (keeping the count of expiring envelopes).
  void PublishLocked(Entry& entry, std::shared_ptr<AdmittedSandbox> next) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sets the entry's sandbox verified (once), clears its mark, and sends watchers an envelope they were not.
  void SetVerifiedLocked(Entry& entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Hands the record's reports and refresh error to the report recorder.
  void RecordReportsLocked(store::SandboxRecord& record) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Snapshot SnapshotOf(const AdmittedSandbox& sandbox) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  std::pair<const std::string, Entry>* FindByHandleLocked(const std::string& handle) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // The serving rule's verified/revoked/expired part for a sandbox found by Serve or Lookup.
  // A sandbox whose stored envelope fails re-verification stays listed (operators see it, drift says
  // why) and is answered FAILED_PRECONDITION with the check's reason, never verified again at each fetch
  // (the sandbox is marked: AdmittedSandbox::unservable; a trust-store reload clears the marks and the
  // next fetch checks it again); null (OK) when `found`, unverified, was replaced or removed while it was verified: the
  // caller finds the sandbox again.
  absl::StatusOr<AdmittedPtr> Servable(AdmittedPtr found, int64_t now_unix);
  // Marks `found` verified if it is still the sandbox admitted under its id (the very object: not a
  // re-admission with an equal envelope); returns it, or null when `found` is gone.
  AdmittedPtr PublishVerified(const AdmittedPtr& found);

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
  // See SharedVerificationLocked.
  std::shared_ptr<const AdmittedSandbox::Verification> last_verification_ ABSL_GUARDED_BY(mu_);
  ReportRecorder reports_;  // its own lock, taken inside mu_ when both are held
};

}  // namespace osh::gateway
