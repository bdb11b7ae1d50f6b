// The gateway's persistent state (SPEC §7), as narrow roles a Database hands out. Implementations are
// thread-safe.
//
// Every method that changes state does so in one transaction together with the audit event that
// records it: after a crash either all of it is there or none of it. Acknowledged writes are durable.
// Errors are values: NOT_FOUND, ALREADY_EXISTS, ABORTED (expected revision mismatch), DATA_LOSS /
// INTERNAL for storage failures.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/base/thread_annotations.h"
#include "openshell/policy/driver/v1/driver.pb.h"
#include "openshell/policy/gateway/v1/gateway.pb.h"
#include "absl/time/time.h"
#include "store/change.h"
#include "store/clock.h"
#include "trust/audit_chain.h"

namespace osh::store {

using openshell::policy::driver::v1::Projection;
using openshell::policy::driver::v1::RuntimeContext;
using osh::trust::AuditEvent;

struct PolicyRevisionRecord {
  std::string scope;
  uint64_t revision = 0;  // per scope, from 1
  uint64_t seq = 0;       // global, increasing across all scopes (the builtin driver's policy_version)
  std::string digest;     // "" for a deletion
  std::string body;       // deterministic serialization of the policy; "" for a deletion
  int64_t created_at_unix = 0;
  // AppendPolicyRevision's answer only (never stored): the body set was the scope's live policy already, so
  // nothing was appended — the record is that live revision, and only the audit event was written.
  bool unchanged = false;
  bool deleted() const { return digest.empty(); }
};

struct PendingRelease {
  int64_t id = 0;
  std::string driver_handle;  // "" when the handle never reached the store: re-acquire by `context` to release
  RuntimeContext context;
  std::string idempotency_key;  // the key the acquisition was sent with ("": none)
};

// Another replica's re-projection of a scope, and the newest revision of the scope it was made from.
struct RemoteReprojection {
  std::string scope;
  uint64_t revision = 0;  // 0: none (a driver without revisions)
};
// The sandboxes other replicas committed to a shared store (PostgresStore's change feed), as they stand
// now: those they changed, read back after the change (present), and those they deleted (removed).
// Policy revisions and the ceiling reach their own listeners (RevisionListener, CeilingListener).
struct RemoteChanges {
  std::vector<SandboxRecord> sandboxes;
  std::vector<std::string> removed;
};
// Told of remote changes on the store's feed thread, in commit order, never concurrently with the
// ChangeListener (so the view never applies an older state over a newer one). Must not write to the store.
class RemoteChangeListener {
 public:
  virtual ~RemoteChangeListener() = default;
  virtual void OnRemoteChanges(const RemoteChanges& changes) = 0;
  // Other replicas committed re-projections (ChangeBatch::reprojected_scope), in commit order. Told after
  // the same round's changes and policy revisions, on the same thread.
  virtual void OnRemoteReprojections(const std::vector<RemoteReprojection>& /*reprojections*/) {}
};

// This process's place among the gateways sharing the store.
struct ReplicaStatus {
  std::string database_kind;  // "sqlite" or "postgresql"
  std::string replica_id;     // unique among live replicas
  uint32_t live_replicas = 1; // replicas whose heartbeat is fresh, this one included
  bool database_reachable = true;
  // This replica's change feed (0 for an embedded store): changes other replicas committed that it has not
  // read yet (at most 100,000; 0 when the database cannot be read), and how long ago it last read the
  // feed (ms, known also when the database cannot be read).
  int64_t feed_changes_behind = 0;
  int64_t feed_read_age_ms = 0;
};

// One OpenShell sandbox's interceptor record (InterceptorRecordStore): the sandbox's name and the record
// as stored (a serialized openshell.policy.interceptor.v1.InterceptorRecord, opaque to the store).
struct InterceptorRecordRow {
  std::string sandbox;
  std::string record;
  // A token that differs each time the row is written again (PostgreSQL: the row version's xmin with the
  // write's time), or empty where the store keeps none (SQLite). Equal tokens of one sandbox name one write
  // of its record.
  std::string version;
};

// One profile of the provider-profile catalogue (ProviderProfileStore): its id and the profile as stored
// (a serialized openshell.v1.ProviderProfile, signature annotations included; opaque to the store).
struct ProviderProfileRow {
  std::string id;
  std::string profile;
};

// A store's state as `policy-gateway migrate` moves it (everything but the audit chain, which moves
// in pages): sandboxes with their handle hashes and driver handles, due driver-handle releases, every
// policy revision with its global seq, the ceiling in force, the interceptor's records and the
// provider-profile catalogue.
struct StoreImage {
  std::vector<SandboxRecord> sandboxes;
  std::vector<PendingRelease> releases;
  std::vector<PolicyRevisionRecord> revisions;
  std::optional<std::string> ceiling;
  uint64_t ceiling_version = 0;
  std::vector<InterceptorRecordRow> interceptor_records;
  std::vector<ProviderProfileRow> provider_profiles;
};

// Listeners of one kind of change (RevisionListener, CeilingListener), not owned: each must outlive its
// subscription. Deliveries hold the set's lock, so Remove waits for one in progress; listeners never call
// back into the store (their contract), so this cannot deadlock with a commit. Delivered in the order
// they were added.
template <typename Listener>
class ListenerSet {
 public:
  void Add(Listener* listener) {
    absl::MutexLock lock(&mu_);
    listeners_.push_back(listener);
  }
  void Remove(Listener* listener) {
    absl::MutexLock lock(&mu_);
    listeners_.erase(std::remove(listeners_.begin(), listeners_.end(), listener), listeners_.end());
  }
  template <typename Deliver>
  void ForEach(const Deliver& deliver) {
    absl::MutexLock lock(&mu_);
    for (Listener* listener : listeners_) deliver(*listener);
  }

 private:
  absl::Mutex mu_;
  std::vector<Listener*> listeners_ ABSL_GUARDED_BY(mu_);
};

// --- The roles -------------------------------------------------------------------------------------
// A Database (below) hands out one object per role; each consumer takes only the role it needs (the
// builtin driver PolicyRevisions, the driver-handle protocol ReleaseQueue and SandboxStore, the audit
// recorder AuditLog, ...). Every role is thread-safe and lives as long as its Database.

// Admitted sandboxes: committed as change batches (change.h) with their audit events.
class SandboxStore {
 public:
  virtual ~SandboxStore() = default;
  // Commits the batch in one transaction with its events; concurrent commits share one fsync (group
  // commit). On success the change listener has applied the batch before this returns.
  virtual absl::StatusOr<CommitResult> Commit(ChangeBatch batch) = 0;
  using CommitDone = std::function<void(absl::StatusOr<CommitResult>)>;
  // Commit without waiting: returns at once; `done` runs once the batch is durable (the listener has
  // applied it) or refused — on the store's completion thread for a group its committer thread led, or on
  // the Commit caller's thread that led it — and must not block on the disk or the network. The audit
  // actor is the calling thread's (AuditActorScope). The default commits on the calling thread and then calls `done`.
  virtual void CommitAsync(ChangeBatch batch, CommitDone done);
  // The one listener (the in-memory view); nullptr removes it. Set before concurrent use.
  virtual void SetChangeListener(ChangeListener* listener) = 0;
  // Every admitted sandbox; records with equal envelopes share one Envelope (and one body).
  virtual absl::StatusOr<std::vector<SandboxRecord>> LoadSandboxes() = 0;
  // The listed sandboxes that exist (any order).
  virtual absl::StatusOr<std::vector<SandboxRecord>> LoadSandboxesById(const std::vector<std::string>& ids);

  // One-change conveniences over Commit.
  absl::Status InsertSandbox(SandboxRecord record, AuditEvent event);
  absl::Status ReplaceProjection(const std::string& sandbox_id, EnvelopePtr envelope, Verification verification,
                                 const std::vector<std::string>& key_ids, int64_t now_unix, AuditEvent event);
  absl::Status SetRefreshError(const std::string& sandbox_id, const std::string& error, AuditEvent event);
  // false (nothing written) when there was no such sandbox.
  absl::StatusOr<bool> DeleteSandbox(const std::string& sandbox_id, AuditEvent event);
  // A repeat of the report recorded, of the admitted digest, moves reported_at and writes no event
  // (change::RecordReport).
  absl::Status RecordReport(const std::string& sandbox_id, const std::string& digest,
                            openshell::policy::gateway::v1::LoadStatus status, const std::string& error,
                            int64_t now_unix, AuditEvent event);

  // Content-addressed envelopes and bodies: what LoadSandboxes returns and what the gateway admits share
  // one copy of each distinct envelope and body.
  EnvelopeInterner& envelopes() { return envelopes_; }

 private:
  EnvelopeInterner envelopes_;
};

// Driver handle releases (a durable queue). Before a driver handle is acquired for an admission, its
// context is durably noted ("release whatever is acquired for this unless admitted"), so a crash at any
// later point cannot leak the handle. SandboxStore::InsertSandbox with the returned id removes the note in
// its transaction; QueueAcquiredRelease makes the release due (with the handle when known);
// DropAdmissionIntent forgets it (nothing was acquired). Notes left in flight by a crash become due,
// without a handle, when the store is opened again.
class ReleaseQueue {
 public:
  virtual ~ReleaseQueue() = default;
  virtual absl::StatusOr<int64_t> RecordAdmissionIntent(const RuntimeContext& context,
                                                        const std::string& idempotency_key = "") = 0;
  // RecordAdmissionIntent without waiting; `done` as SandboxStore::CommitAsync's. The default records on
  // the calling thread and then calls `done`.
  virtual void RecordAdmissionIntentAsync(const RuntimeContext& context, const std::string& idempotency_key,
                                          std::function<void(absl::StatusOr<int64_t>)> done);
  virtual absl::Status QueueAcquiredRelease(int64_t id, const std::string& driver_handle) = 0;
  virtual absl::Status DropAdmissionIntent(int64_t id) = 0;
  // Releases that are due (not in flight), oldest first.
  virtual absl::StatusOr<std::vector<PendingRelease>> PendingReleases() = 0;
  virtual absl::Status CompleteRelease(int64_t id, AuditEvent event) = 0;
  // How many releases are due (for status; unlike PendingReleases it claims nothing).
  virtual absl::StatusOr<uint64_t> CountPendingReleases();
};

// Told of every policy revision appended — by this process (on the committing thread, after the commit,
// before AppendPolicyRevision returns) and by another replica (on the store's feed thread, read back
// from the database) — in commit order per scope. Must not call back into the store.
class RevisionListener {
 public:
  virtual ~RevisionListener() = default;
  virtual void OnPolicyRevision(const PolicyRevisionRecord& revision, bool remote) = 0;
};

// The builtin driver's policies: revisions per scope.
class PolicyRevisions {
 public:
  virtual ~PolicyRevisions() = default;
  // Appends a revision to `scope`: `body` set = a new policy, nullopt = a deletion. With
  // `expected_revision`, ABORTED unless the scope's latest revision equals it (0: no live policy).
  // Deleting a scope without a live policy is NOT_FOUND. The revision listeners have been told of it
  // before this returns. A body equal to the scope's live one appends nothing and tells no listener: the
  // answer is the live revision marked `unchanged`, and `event` is written all the same, its reason ending
  // in "(unchanged: revision N kept)" and audit_context["change.unchanged"] = "true".
  virtual absl::StatusOr<PolicyRevisionRecord> AppendPolicyRevision(const std::string& scope,
                                                                    const std::optional<std::string>& body,
                                                                    std::optional<uint64_t> expected_revision,
                                                                    int64_t now_unix, AuditEvent event) = 0;
  // The latest revision of a scope (possibly a deletion), or nullopt if it never had one.
  virtual absl::StatusOr<std::optional<PolicyRevisionRecord>> LatestPolicyRevision(const std::string& scope) = 0;
  virtual absl::StatusOr<PolicyRevisionRecord> GetPolicyRevision(const std::string& scope, uint64_t revision) = 0;
  // The revisions of `scope` ("" = all scopes) with seq > `after_seq`, oldest first, at most `limit`
  // (0: every one — an import's copy; a listing pages). Without `bodies`, each record's body is left empty
  // (a listing shows digests: it does not read the policies).
  virtual absl::StatusOr<std::vector<PolicyRevisionRecord>> ListPolicyRevisions(const std::string& scope,
                                                                                uint64_t after_seq, uint32_t limit,
                                                                                bool bodies) = 0;
  // The latest revision of every scope (a deletion included), by seq: what a driver starts from, one row a
  // scope however long the history.
  virtual absl::StatusOr<std::vector<PolicyRevisionRecord>> LatestPolicyRevisions() = 0;
  // Number of scopes whose latest revision is a live policy.
  virtual absl::StatusOr<uint64_t> CountLivePolicies() = 0;

 protected:
  // AppendPolicyRevision's answer when `body_digest` is the live revision `latest`'s (both stores ask it):
  // that revision marked unchanged, with `event` said so. Nullopt when there is something to append.
  static std::optional<PolicyRevisionRecord> UnchangedRevision(const std::optional<PolicyRevisionRecord>& latest,
                                                               const std::string& body_digest, AuditEvent* event);

 public:

  // Who is told of each revision (implementations deliver every committed one: see RevisionListener).
  ListenerSet<RevisionListener>& revision_listeners() { return revision_listeners_; }

 private:
  ListenerSet<RevisionListener> revision_listeners_;
};

// Told of every ceiling stored — by this process (on the committing thread, after the commit, before
// SaveCeiling returns) and by another replica (on the feed thread, read back from the database): the
// serialized ceiling as stored and its version. Must not call back into the store.
class CeilingListener {
 public:
  virtual ~CeilingListener() = default;
  virtual void OnCeiling(const std::string& ceiling_bytes, uint64_t version, bool remote) = 0;
};

// The ceiling (managed maximum) in force.
class CeilingStore {
 public:
  virtual ~CeilingStore() = default;
  // One distinct admitted body and how many sandboxes hold it (SaveCeiling's completer).
  struct AdmittedBody {
    std::string body;
    uint64_t sandboxes = 0;
  };
  // Called inside SaveCeiling's transaction, after the new ceiling is written and before `event` is
  // appended, with every distinct admitted body as the transaction sees it: completes the event (how many
  // sandboxes the new ceiling leaves outside, say). Runs under the store's write lock: must not call
  // back into the store.
  using CeilingEventCompleter = std::function<void(const std::vector<AdmittedBody>& admitted, AuditEvent* event)>;
  // Replaces the ceiling in force with `ceiling_bytes` (a serialized, already verified Ceiling) of
  // `version`, with `event`, in one transaction. ABORTED "rollback: ..." unless `version` is above the
  // stored one (so of two concurrent sets, the lower loses). Serialised against every batch that carries
  // checked_ceiling (change.h): those committed before it are what `complete` sees, those after it must
  // have been checked against this ceiling. The ceiling listeners have been told before this returns.
  virtual absl::Status SaveCeiling(const std::string& ceiling_bytes, uint64_t version, AuditEvent event,
                                   const CeilingEventCompleter& complete = nullptr) = 0;
  // The ceiling in force, serialized as stored, or nullopt.
  virtual absl::StatusOr<std::optional<std::string>> LoadCeiling() = 0;

  // Who is told of each ceiling stored (see CeilingListener).
  ListenerSet<CeilingListener>& ceiling_listeners() { return ceiling_listeners_; }

 private:
  ListenerSet<CeilingListener> ceiling_listeners_;
};

// The audit log.
class AuditLog {
 public:
  virtual ~AuditLog() = default;
  // Appends an event that records no state change (a refusal, a driver going down, ...).
  virtual absl::Status AppendAudit(AuditEvent event) = 0;
  // Events with seq > after_seq, oldest first, at most `limit` (0: 1000).
  virtual absl::StatusOr<std::vector<AuditEvent>> ListAuditEvents(uint64_t after_seq, uint32_t limit) = 0;
  // The newest event's seq and hash (0 and 64 zeros while the chain is empty).
  struct ChainHead {
    uint64_t seq = 0;
    std::string hash;
  };
  virtual ChainHead AuditChainHead() = 0;
  // The newest event of `type` with `outcome`, or nullopt (indexed for ceiling_set).
  virtual absl::StatusOr<std::optional<AuditEvent>> LatestAuditEvent(trust::audit::Type type,
                                                                     trust::audit::Outcome outcome) = 0;
};

// The OpenShell gateway interceptor's records (gateway/core/interceptor_records.h), one per OpenShell
// sandbox name: the base later mergeOperations are applied to. Kept here so that they survive a restart
// and every replica on a shared store reads the same one. The record is opaque bytes to the store (a
// serialized openshell.policy.interceptor.v1.InterceptorRecord). These writes carry no audit event of
// their own: the interceptor audits each decision (type interception) by itself.
class InterceptorRecordStore {
 public:
  virtual ~InterceptorRecordStore() = default;
  // Creates or replaces the sandbox's record; durable when this returns OK. With `expected_generation`
  // (the provider-profile catalogue's generation the record was composed at, ProviderProfileStore::
  // ProviderProfileGeneration), only if the catalogue is still there when the record commits: ABORTED
  // "catalogue_changed: ...", and nothing written, otherwise — also while another process's catalogue
  // change is being checked and committed (not waited for). Such a write and a catalogue change are
  // serialised across every process on the database (the change's check runs while no such write can
  // commit: ProviderProfileStore's ProfileChangeCheck), so a change's check either sees the record or the
  // record is refused.
  // With `expected_previous` (not null), only if the record stored then is still `*expected_previous`
  // (nullopt: none is stored): ABORTED "record_changed: ...", and nothing written, when another write
  // replaced, removed or created it since it was read (a read-modify-write of the record, never lost).
  // When `*expected_previous` is `record` itself, the row is left as it is (its version too) and only
  // `event` is written.
  // With `event` (not null; an operator's seed), the event is appended in the same transaction.
  virtual absl::Status PutInterceptorRecord(const std::string& sandbox, const std::string& record,
                                            std::optional<uint64_t> expected_generation = std::nullopt,
                                            const std::optional<std::string>* expected_previous = nullptr,
                                            AuditEvent* event = nullptr) = 0;
  // The sandbox's record as last committed (by any replica), or nullopt.
  virtual absl::StatusOr<std::optional<std::string>> GetInterceptorRecord(const std::string& sandbox) = 0;
  // Removes the sandbox's record (OK when there was none).
  virtual absl::Status DeleteInterceptorRecord(const std::string& sandbox) = 0;
  // An operator's forget: removes the record with `event`, in one transaction; NOT_FOUND, and nothing
  // written, when there is none. The record need not decode.
  virtual absl::Status ForgetInterceptorRecord(const std::string& sandbox, AuditEvent event) = 0;
  // Every record, ordered by sandbox name (policy-gateway migrate).
  virtual absl::StatusOr<std::vector<InterceptorRecordRow>> ListInterceptorRecords() = 0;
  // One page of the records, for an operator's listing: at most `limit` rows (`version` left empty), the
  // keys without U+001F (gateway::InterceptorRecords::Key's default workspace) before those with it, each
  // part in key byte order — so (workspace, name) order — from the first key after `after` in that order
  // (nullopt: from the first). Returns the rows of the page, not every record (SQLite reads ranges of its
  // key; PostgreSQL sorts the keys on the server, its key index being in the database's collation).
  virtual absl::StatusOr<std::vector<InterceptorRecordRow>> ListInterceptorRecordsPage(const std::optional<std::string>& after,
                                                                                       size_t limit) = 0;
};

// The one rule of ListInterceptorRecordsPage's order, for the stores: whether `key` is listed in the second
// part (it holds U+001F), and the queries' bounds.
inline constexpr char kInterceptorKeySeparator = '\x1f';
inline bool InterceptorKeyInSecondPart(const std::string& key) {
  return key.find(kInterceptorKeySeparator) != std::string::npos;
}
// ListInterceptorRecordsPage's walk over its two parts, for the stores: `read(with_separator, after, n)` reads
// at most n rows of one part (keys with the separator or without), in key byte order, with keys greater
// than `after` ("": from the part's first).
using ReadRecordPart = std::function<absl::StatusOr<std::vector<InterceptorRecordRow>>(
    bool with_separator, const std::string& after, size_t n)>;
absl::StatusOr<std::vector<InterceptorRecordRow>> ListRecordPartsAfter(const std::optional<std::string>& after,
                                                                       size_t limit, const ReadRecordPart& read);

// The provider-profile catalogue the OpenShell interceptor serves and composes (gateway/core/
// provider_catalogue.h), one row per profile id. Like a policy change, every change is committed in one
// transaction with its audit event and a step of the catalogue's generation. Reads go to the database
// each time, so every replica on a shared store serves the same catalogue as soon as it is committed; a
// reader that keeps a copy reads the generation (one small row) to know whether its copy is still the
// catalogue as committed.
// The refusal of a catalogue change made against an older generation (ProviderProfileStore's
// expected_generation): ABORTED "catalogue_changed: ...", not a storage error (never led again by a store).
absl::Status CatalogueChanged(uint64_t expected);
// The refusal of a record write whose record changed since it was read (PutInterceptorRecord's
// expected_previous): ABORTED "record_changed: ...", not a storage error.
absl::Status RecordChanged(const std::string& sandbox);

// A catalogue change's check of the interceptor records (gateway/core/profile_change_check.h), run inside
// the change's transaction once the catalogue's generation is taken for it: `records` are every
// interceptor record as committed then, and none that names this generation can commit until the change
// has (InterceptorRecordStore::PutInterceptorRecord's expected_generation). A non-OK status refuses the
// change: nothing written, and the status returned as it is. It runs on the store's writing thread and
// must not write to the store; it may read from it.
// With `seen` (sandbox → InterceptorRecordRow::version, as a ListInterceptorRecords before the change
// read them; not owned, must outlive the call), a store that keeps versions hands over only the records
// whose version is not the one seen — new or written since — and reads nothing else of the records inside
// the transaction; one that keeps none hands every record, as without it.
struct ProfileChangeCheck {
  using Run = std::function<absl::Status(const std::vector<InterceptorRecordRow>& records)>;
  ProfileChangeCheck() = default;
  ProfileChangeCheck(std::nullptr_t) {}  // NOLINT: no check, as a null function
  template <typename F, typename = std::enable_if_t<std::is_invocable_r_v<absl::Status, F&,
                                                                          const std::vector<InterceptorRecordRow>&>>>
  ProfileChangeCheck(F f, const absl::flat_hash_map<std::string, std::string>* seen_versions = nullptr)  // NOLINT
      : run(std::move(f)), seen(seen_versions) {}
  explicit operator bool() const { return static_cast<bool>(run); }
  Run run;
  const absl::flat_hash_map<std::string, std::string>* seen = nullptr;
};

class ProviderProfileStore {
 public:
  virtual ~ProviderProfileStore() = default;
  // Creates or replaces the profile `id` with `event`; durable when this returns OK. With
  // `expected_generation`, only if the catalogue is still at that generation when the change commits
  // (a change checked against the catalogue as read then): ABORTED "catalogue_changed: ...", and nothing
  // written, when another change committed since. With `check`, only if it allows the change (above).
  // With `checked_ceiling` (the ceiling the change was checked against: its version, or kNoCeiling;
  // change.h), only if that is still the ceiling in the database when the change commits: ABORTED
  // "ceiling_changed: ..." (CeilingChangedError), and nothing written, otherwise. Serialised with
  // CeilingStore::SaveCeiling across every process on the database, as a change batch's checked_ceiling.
  virtual absl::Status PutProviderProfile(const std::string& id, const std::string& profile, AuditEvent event,
                                          std::optional<uint64_t> expected_generation = std::nullopt,
                                          const ProfileChangeCheck& check = nullptr,
                                          std::optional<int64_t> checked_ceiling = std::nullopt) = 0;
  // Removes the profile `id` with `event`; NOT_FOUND, and nothing written, when there is none;
  // `expected_generation`, `check` and `checked_ceiling` as for Put (the check runs only when the profile
  // exists).
  virtual absl::Status DeleteProviderProfile(const std::string& id, AuditEvent event,
                                             std::optional<uint64_t> expected_generation = std::nullopt,
                                             const ProfileChangeCheck& check = nullptr,
                                             std::optional<int64_t> checked_ceiling = std::nullopt) = 0;
  // The profile `id` as stored, or nullopt.
  virtual absl::StatusOr<std::optional<std::string>> GetProviderProfile(const std::string& id) = 0;
  // Every profile, ordered by id (bytewise).
  virtual absl::StatusOr<std::vector<ProviderProfileRow>> ListProviderProfiles() = 0;
  // The catalogue's generation: a counter that steps in the transaction of every change committed to the
  // catalogue (a put, a delete, a migration's copy), by any process on the database, and never goes back.
  // A List read after a Generation read holds at least that generation's changes.
  virtual absl::StatusOr<uint64_t> ProviderProfileGeneration() = 0;
};

// This process's place among the gateways sharing the store. The defaults are a single-process store's:
// one replica, no feed, every lease granted, always reachable.
class Replication {
 public:
  virtual ~Replication() = default;
  // The listener for sandbox changes other processes commit; nullptr removes it.
  virtual void SetRemoteChangeListener(RemoteChangeListener* /*listener*/) {}
  virtual ReplicaStatus replica_status() { return {"sqlite", "local", 1, true}; }
  // Whether the database answered the last heartbeat (always true for an embedded store), and a
  // listener told of every change of that, on the store's own thread (must not call back into the store).
  virtual bool reachable() const { return true; }
  // Whether other processes share the database and follow its change feed (false for an embedded store).
  virtual bool shared() const { return false; }
  virtual void SetReachabilityListener(std::function<void(bool reachable)> /*listener*/) {}
  // Takes or renews the fleet-wide lease `name` for `duration_ms` (true: this replica holds it; false:
  // another live replica does). Work that must run once per fleet (refresh scheduling) runs under it.
  virtual absl::StatusOr<bool> TryLease(const std::string& /*name*/, int64_t /*duration_ms*/) { return true; }
  // Runs `load` with the change feed held: nothing other processes commit reaches the remote listener
  // while it runs, and what they committed meanwhile reaches it after (the feed reads the rows as they
  // are then, from where it stood). A read of the whole view and its installation run under it, so a
  // change applied during the read is never overwritten by the read's older snapshot (review 108).
  // `load` must not commit. An embedded store has no feed: `load` just runs.
  virtual absl::Status WithFeedHeld(absl::FunctionRef<absl::Status()> load) { return load(); }
};

// Migration into this store (policy-gateway migrate).
class Importer {
 public:
  virtual ~Importer() = default;
  // Writes `image` as it is (seqs and revisions kept) into this store, which must hold no sandbox,
  // policy, ceiling or interceptor record (FAILED_PRECONDITION otherwise; audit events may be there: a
  // resumed migration keeps the chain it copied).
  virtual absl::Status ImportImage(const StoreImage& image) = 0;
  // Appends already sealed events verbatim; each must link to the chain's head (DATA_LOSS otherwise).
  virtual absl::Status ImportAuditEvents(const std::vector<AuditEvent>& events) = 0;
  // How BeginImport treats a target that holds an interrupted migration's marker.
  enum class Begin {
    kFresh,    // the target must be empty (unmarked)
    kReplace,  // it must hold the marker: everything in it is removed, the marker kept
    kResume,   // it must hold the marker of a migration from the same source: the state (sandboxes,
               // releases, revisions, ceiling, interceptor records) is removed, the audit chain copied so
               // far is kept for MigrateStore to continue after checking it against the source's
  };
  // Marks this store as the target of a migration from `source` (a display name, never a password),
  // committed before anything is copied, so that a copy cut short is never served (see
  // MigrationMarker). FAILED_PRECONDITION when the target is not what `begin` requires; what it removes
  // goes in the same transaction as the marker is (re)written.
  virtual absl::Status BeginImport(const std::string& source, Begin begin) = 0;
  // The migration's final commit: removes the marker if the chain's head is `expected` (DATA_LOSS
  // otherwise, the marker stays).
  virtual absl::Status FinishImport(const AuditLog::ChainHead& expected) = 0;
  // The marker of a migration into this store that has not finished, or nullopt. A gateway refuses a
  // store that holds one.
  struct Mark {
    std::string source;  // MigrationOptions::source_name of the migration that wrote it
    int64_t started_unix = 0;
    std::string Describe() const;  // "from <source>, started <RFC 3339 time>"
  };
  virtual absl::StatusOr<std::optional<Mark>> MigrationMarker() = 0;
};

// What the metrics show of a store.
struct StoreStats {
  uint64_t transactions = 0;  // committed write transactions (group commit: each may carry several writes)
  uint64_t writes = 0;
  uint64_t audit_head_seq = 0;
};

// Who opens a store: a gateway (on PostgreSQL: a replica with a heartbeat and the change feed, refused
// on the target of an unfinished migration) or `policy-gateway migrate` (no heartbeat, no feed: it must
// not count as a live replica, and it may open an unfinished migration's target to replace it).
enum class StoreRole { kGateway, kMigration };

// How a store is opened (open_store.h). The defaults open it plainly, as tests and tools do.
struct StoreOptions {
  const Clock* clock = Clock::System();  // not owned; must outlive the store. Stamps events and releases.
  StoreRole role = StoreRole::kGateway;
  // SQLite: this process is the state's only user (a gateway; `migrate` reading a SQLite source). Open
  // takes the one-process lock "<file>.lock" for as long as the store is open (FAILED_PRECONDITION naming
  // the holder's pid); for a gateway it first creates the file's folder (0700) if missing and refuses a
  // folder anyone but root and this user can write (whoever can could replace the database and bring
  // deleted sandboxes back).
  bool exclusive = false;
  // Rollback detection (head_anchor.h): the file that records the audit head outside the database (""
  // none; AnchorPathFor gives a gateway's). A database that no longer holds the recorded head is refused
  // (FAILED_PRECONDITION "state_rollback: ...") unless `accept_state_rollback`, which appends a
  // state_rollback_accepted event and says so through `notice`.
  std::string anchor_path;
  bool accept_state_rollback = false;
  // Housekeeping worth a log line (an accepted rollback, expired replica rows, settled admission notes),
  // on whichever thread found it; must not call back into the store.
  std::function<void(const std::string& notice)> notice;
  // How long each write transaction's commit (the fsync) took, on the committing thread (SQLite). Cheap;
  // must not call back into the store.
  std::function<void(absl::Duration took)> commit_observer;
};

// One opened store (open_store.h): hands out its roles. Owns them; they live as long as it does.
class Database {
 public:
  virtual ~Database() = default;
  virtual SandboxStore& sandboxes() = 0;
  virtual ReleaseQueue& releases() = 0;
  virtual PolicyRevisions& revisions() = 0;
  virtual CeilingStore& ceiling() = 0;
  virtual AuditLog& audit() = 0;
  virtual Replication& replication() = 0;
  virtual InterceptorRecordStore& interceptor_records() = 0;
  virtual ProviderProfileStore& provider_profiles() = 0;
  // nullptr when this kind of store cannot be migrated into.
  virtual Importer* importer() { return nullptr; }
  virtual StoreStats Stats() = 0;
};

// A Database whose one object plays every role but Importer (both backends are built so).
class SingleObjectDatabase : public Database,
                             public SandboxStore,
                             public ReleaseQueue,
                             public PolicyRevisions,
                             public CeilingStore,
                             public AuditLog,
                             public Replication,
                             public InterceptorRecordStore,
                             public ProviderProfileStore {
 public:
  SandboxStore& sandboxes() final { return *this; }
  ReleaseQueue& releases() final { return *this; }
  PolicyRevisions& revisions() final { return *this; }
  CeilingStore& ceiling() final { return *this; }
  AuditLog& audit() final { return *this; }
  Replication& replication() final { return *this; }
  InterceptorRecordStore& interceptor_records() final { return *this; }
  ProviderProfileStore& provider_profiles() final { return *this; }
};

}  // namespace osh::store
