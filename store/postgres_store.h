// The multi-replica store on PostgreSQL (libpq). Several gateways ("replicas") may open one database at
// once; each runs with its own sockets and in-memory view, and the database is the one truth:
//  - writes wait for no fleet-wide lock: a write takes the audit chain's head row only if it is free
//    (SKIP LOCKED) and then writes its events and feed rows sealed, after sealing what is pending;
//    otherwise it appends them unsealed (audit_pending, changes_pending). Only rows it shares with
//    another write (a sandbox, an envelope, the ceiling's and the revisions' advisory locks) make writes
//    queue; a transaction PostgreSQL picks as a deadlock's victim is led again;
//  - the sealer (SealPending) moves what is pending into the audit chain (numbered, chained) and the
//    change feed (numbered), under the audit chain's head row lock: one sealer at a time across the
//    fleet, so events form one chain (no forks, no gaps) and feed rows one gap-free sequence. Any replica
//    seals: its feed before each read, and every reader of the audit log before it reads;
//  - every committed change is also written to the change feed (table `changes`, announced with NOTIFY
//    osh_changes): the other replicas read it (on the notification, and at least every second in case
//    one was missed) and apply what changed to their own view (SetRemoteChangeListener);
//  - each replica keeps a heartbeat row; admission notes left in flight by a replica whose heartbeat is
//    older than kReplicaLeaseMs are due for release, and due releases are claimed (FOR UPDATE SKIP
//    LOCKED, for kReleaseClaimMs) so one replica delivers each.
// Schema versioned in table osh_schema with forward-only migrations run under an advisory lock (replicas
// starting together migrate once); a database written by a newer gateway is refused.
//
// Thread-safe. Writes are group-committed over one connection; reads use a second one; the feed, the
// heartbeat and the sealer one each. A broken connection is re-established on the next use (UNAVAILABLE meanwhile:
// nothing is acknowledged that did not commit).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "store/clock.h"
#include "store/group_commit.h"
#include "store/head_anchor.h"
#include "store/pg_conn.h"
#include "store/store.h"

namespace osh::store {

// One object plays every role (store.h).
class PostgresStore final : public SingleObjectDatabase, public Importer {
 public:
  // `conninfo`: a postgresql:// URL or libpq connection string. `clock` (not owned) stamps events.
  // UNAVAILABLE (naming the database, without its password) when it cannot be reached.
  // `replica`: a gateway replica (heartbeat, change feed; FAILED_PRECONDITION on the target of an
  // unfinished migration); false for `policy-gateway migrate`, which neither heartbeats nor reads the feed.
  static absl::StatusOr<std::unique_ptr<PostgresStore>> Open(const std::string& conninfo,
                                                             const Clock* clock = Clock::System(), bool replica = true);
  // The same with options (store.h): role kMigration opens it as `replica` = false; anchor_path adds
  // rollback detection; notice is told of expired replicas and settled admission notes.
  static absl::StatusOr<std::unique_ptr<PostgresStore>> Open(const std::string& conninfo, const StoreOptions& options);
  ~PostgresStore() override;
  static constexpr int kSchemaVersion = 8;
  static constexpr int64_t kReplicaLeaseMs = 10000;  // a replica silent this long is dead
  static constexpr int64_t kReplicaExpiryMs = 60000;  // a replica row silent this long is deleted
  static constexpr int64_t kExpiryPassMs = 5000;      // how often each replica looks for such rows
  static constexpr int64_t kSweepPassMs = 60000;      // how often each replica sweeps unused envelopes (first at start)
  static constexpr int64_t kReleaseClaimMs = 30000;  // a claimed release not completed by then is due again
  static constexpr int64_t kFeedPollMs = 1000;       // the feed is read at least this often

  absl::StatusOr<CommitResult> Commit(ChangeBatch batch) override;
  void CommitAsync(ChangeBatch batch, CommitDone done) override;
  void SetChangeListener(ChangeListener* listener) override;
  absl::StatusOr<std::vector<SandboxRecord>> LoadSandboxes() override;
  absl::StatusOr<std::vector<SandboxRecord>> LoadSandboxesById(const std::vector<std::string>& ids) override;

  absl::StatusOr<int64_t> RecordAdmissionIntent(const RuntimeContext& context,
                                                const std::string& idempotency_key = "") override;
  void RecordAdmissionIntentAsync(const RuntimeContext& context, const std::string& idempotency_key,
                                  std::function<void(absl::StatusOr<int64_t>)> done) override;
  absl::Status QueueAcquiredRelease(int64_t id, const std::string& driver_handle) override;
  absl::Status DropAdmissionIntent(int64_t id) override;
  absl::StatusOr<std::vector<PendingRelease>> PendingReleases() override;
  absl::Status CompleteRelease(int64_t id, AuditEvent event) override;
  absl::StatusOr<uint64_t> CountPendingReleases() override;

  absl::StatusOr<PolicyRevisionRecord> AppendPolicyRevision(const std::string& scope,
                                                            const std::optional<std::string>& body,
                                                            std::optional<uint64_t> expected_revision,
                                                            int64_t now_unix, AuditEvent event) override;
  absl::StatusOr<std::optional<PolicyRevisionRecord>> LatestPolicyRevision(const std::string& scope) override;
  absl::StatusOr<PolicyRevisionRecord> GetPolicyRevision(const std::string& scope, uint64_t revision) override;
  absl::StatusOr<std::vector<PolicyRevisionRecord>> ListPolicyRevisions(const std::string& scope, uint64_t after_seq,
                                                                        uint32_t limit, bool bodies) override;
  absl::StatusOr<std::vector<PolicyRevisionRecord>> LatestPolicyRevisions() override;
  absl::StatusOr<uint64_t> CountLivePolicies() override;
  absl::Status SaveCeiling(const std::string& ceiling_bytes, uint64_t version, AuditEvent event,
                           const CeilingEventCompleter& complete = nullptr) override;
  absl::StatusOr<std::optional<AuditEvent>> LatestAuditEvent(trust::audit::Type type, trust::audit::Outcome outcome) override;
  absl::StatusOr<std::optional<std::string>> LoadCeiling() override;

  absl::Status AppendAudit(AuditEvent event) override;
  absl::StatusOr<std::vector<AuditEvent>> ListAuditEvents(uint64_t after_seq, uint32_t limit) override;
  ChainHead AuditChainHead() override;

  absl::Status PutInterceptorRecord(const std::string& sandbox, const std::string& record,
                                    std::optional<uint64_t> expected_generation = std::nullopt,
                                    const std::optional<std::string>* expected_previous = nullptr,
                                    AuditEvent* event = nullptr) override;
  absl::StatusOr<std::optional<std::string>> GetInterceptorRecord(const std::string& sandbox) override;
  absl::Status DeleteInterceptorRecord(const std::string& sandbox) override;
  absl::Status ForgetInterceptorRecord(const std::string& sandbox, AuditEvent event) override;
  absl::StatusOr<std::vector<InterceptorRecordRow>> ListInterceptorRecords() override;
  absl::StatusOr<std::vector<InterceptorRecordRow>> ListInterceptorRecordsPage(const std::optional<std::string>& after,
                                                                               size_t limit) override;

  absl::Status PutProviderProfile(const std::string& id, const std::string& profile, AuditEvent event,
                                  std::optional<uint64_t> expected_generation = std::nullopt,
                                  const ProfileChangeCheck& check = nullptr,
                                  std::optional<int64_t> checked_ceiling = std::nullopt) override;
  absl::Status DeleteProviderProfile(const std::string& id, AuditEvent event,
                                     std::optional<uint64_t> expected_generation = std::nullopt,
                                     const ProfileChangeCheck& check = nullptr,
                                  std::optional<int64_t> checked_ceiling = std::nullopt) override;
  absl::StatusOr<std::optional<std::string>> GetProviderProfile(const std::string& id) override;
  absl::StatusOr<std::vector<ProviderProfileRow>> ListProviderProfiles() override;
  absl::StatusOr<uint64_t> ProviderProfileGeneration() override;

  absl::Status ImportImage(const StoreImage& image) override;
  absl::Status ImportAuditEvents(const std::vector<AuditEvent>& events) override;
  absl::Status BeginImport(const std::string& source, Begin begin) override;
  absl::Status FinishImport(const ChainHead& expected) override;
  absl::StatusOr<std::optional<Mark>> MigrationMarker() override;

  void SetRemoteChangeListener(RemoteChangeListener* listener) override;
  ReplicaStatus replica_status() override;
  bool shared() const override { return replica_; }
  bool reachable() const override { return reachable_; }
  void SetReachabilityListener(std::function<void(bool reachable)> listener) override;
  absl::StatusOr<bool> TryLease(const std::string& name, int64_t duration_ms) override;
  absl::Status WithFeedHeld(absl::FunctionRef<absl::Status()> load) override;

  Importer* importer() override { return this; }
  StoreStats Stats() override;

 private:
  PostgresStore(PgConn writer, PgConn reader, PgConn feed, PgConn beat, PgConn sealer, const Clock* clock,
                std::string replica_id, std::function<void(const std::string&)> notice);
  int64_t NowMs() const { return clock_->NowUnixMillis(); }
  absl::Status Migrate() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // `touches_chain`: false for a write with no audit event and no change a view applies (an admission
  // note): it does not hold off the feed.
  // `locks`: GroupWrite::locks.
  absl::Status Write(std::function<absl::Status()> run, std::function<void()> committed = nullptr,
                     bool touches_chain = true, GroupWrite::Locks locks = {});
  // Write without waiting: `done` gets the status once final (GroupWrite::on_done).
  void WriteAsync(std::function<absl::Status()> run, std::function<void()> committed, bool touches_chain,
                  GroupWrite::Locks locks, std::function<void(absl::Status)> done);
  struct PendingCommit;
  // The statements of a change batch and its after-commit step; `pending` must outlive both.
  std::pair<std::function<absl::Status()>, std::function<void()>> CommitSteps(PendingCommit* pending);
  // The admission note's statement; `id` gets its row id and must outlive it.
  std::function<absl::Status()> NoteStep(const RuntimeContext& context, const std::string& idempotency_key,
                                         int64_t* id);
  // Write for an import: the group locks and reads the chain's head first (GroupWrite::head_first).
  absl::Status WriteHeadFirst(std::function<absl::Status()> run, GroupWrite::Locks locks = {});
  // Leads the group (LeadOnce), then leads again, alone, each write PostgreSQL rolled back as a deadlock's
  // victim or a serialization failure, up to kConflictAttempts - 1 more times.
  void LeadGroup(const std::vector<GroupWrite*>& group) ABSL_LOCKS_EXCLUDED(mu_);
  void LeadOnce(const std::vector<GroupWrite*>& group) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves every pending event and feed row committed so far into audit_events and changes (a transaction
  // per kSealBatch, under the head row lock; waits for another replica's seal in progress). On its own
  // connection: it never waits for this replica's writes, nor they for it.
  // `wait`: kNever (the feed) skips the seal when the head is held elsewhere; kBriefly (readers of the log,
  // the destructor) waits up to kSealWaitMs for it (then an error: the caller reads what is sealed).
  // Returns false when it skipped.
  enum class SealWait { kNever, kBriefly };
  absl::StatusOr<bool> SealPending(SealWait wait) ABSL_LOCKS_EXCLUDED(seal_mu_);
  // One sealing transaction, begun by the caller (and ended, except on error). kSkipped: with kNever, the
  // head was held elsewhere and nothing moved; kMore: more may be pending.
  enum class SealOutcome { kSkipped, kDone, kMore };
  absl::StatusOr<SealOutcome> SealBatch(SealWait wait) ABSL_EXCLUSIVE_LOCKS_REQUIRED(seal_mu_);
  // Moves up to kSealBatch pending events (sealed with `chain`) and feed rows, in the open transaction on
  // `conn`, which must hold the head row; `changes` gets how many feed rows moved. True when more may be
  // pending.
  static absl::StatusOr<bool> MovePending(PgConn& conn, trust::ChainSealer& chain, int64_t* changes);
  static void AddAuditParams(const AuditEvent& event, PgParams& params);
  absl::Status ApplyChange(const Change& change, int64_t* rows) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Appends `event` unsealed (audit_pending), in the open transaction.
  absl::Status InsertAudit(AuditEvent* event) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Steps the provider-profile catalogue's generation, only from `expected` when given (CatalogueChanged
  // otherwise).
  absl::Status StepProfileGeneration(std::optional<uint64_t> expected) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Inside a catalogue change's transaction (the generation's row taken): every interceptor record as
  // committed, for its check.
  absl::Status RunProfileChangeCheck(const ProfileChangeCheck& check) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // OK when the stored ceiling is `checked` (its version, or kNoCeiling); else ABORTED ceiling_changed.
  // Its group holds the ceiling's advisory lock (GroupWrite::locks) and read the ceiling once
  // (group_ceiling_); read again after a SetCeiling earlier in the group.
  absl::Status CheckCeilingUnchanged(int64_t checked) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes the ceiling's advisory lock (shared, or exclusive) and reads the stored ceiling's version.
  absl::StatusOr<int64_t> LockCeiling(bool exclusive) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The stored ceiling's version, kNoCeiling if none; a statement of its own, so in READ COMMITTED it
  // sees a SaveCeiling that committed while this transaction waited for the lock.
  absl::StatusOr<int64_t> ReadCeilingVersion() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // ChangeBatch::checked_revisions, read on the write connection; its group holds the revisions' advisory
  // lock (GroupWrite::locks; AppendPolicyRevision's group holds it exclusive).
  absl::Status CheckRevisionsKnown(const std::map<std::string, uint64_t>& checked) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether the sandbox's recorded report is this one (digest, status and error), of its admitted digest;
  // false when absent.
  absl::StatusOr<bool> SameReportRecorded(const change::RecordReport& report) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The members the batch being run passed by (change::StillAdmitted): its events naming them are not written.
  std::set<std::string> passed_by_ ABSL_GUARDED_BY(mu_);
  // INSERTs an already sealed event as it is.
  absl::Status InsertSealedAudit(const AuditEvent& event) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status PutEnvelope(const Envelope& envelope, std::string* id, std::string* digest) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status PutBody(const std::string& digest, const std::string& body) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Deletes, in the transaction open on `conn`, the envelopes of `envelope_ids` (every one, when null)
  // that no sandbox names and no other transaction holds, then the bodies of those (every one, when null)
  // that no envelope or revision names and no other transaction holds. Waits for no row lock.
  static absl::Status DeleteUnused(PgConn& conn, const std::vector<std::string>* envelope_ids);
  // DeleteUnused for drops_, after every write of the group ran, in a savepoint of its own: a failure is
  // left to the sweep and fails no write.
  void DropUnusedEnvelopes() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Appends to the change feed in the current transaction (`kind`: sandboxes, policy, ceiling).
  absl::Status Announce(const std::string& kind, const std::string& payload) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sandboxes matching `where` (SQL over table s, with $1 = `arg` when not empty), on the read connection.
  // A row that does not decode is left out, said through notice_, and its id added to `skipped` (if given).
  absl::StatusOr<std::vector<SandboxRecord>> ReadSandboxes(const std::string& where, const std::string& arg,
                                                           std::vector<std::string>* skipped = nullptr)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(read_mu_);
  // A read on the read connection, reconnecting once if it had broken.
  absl::StatusOr<PgResult> Read(const std::string& sql, const PgParams& params = {}) ABSL_EXCLUSIVE_LOCKS_REQUIRED(read_mu_);
  void FeedLoop();
  // After each read, records in this replica's row of `replicas` how far the feed has read (feed_seq,
  // feed_read_at: its lag, for operators). Holds the feed connection only; a failure is told once.
  void RecordFeedPosition() ABSL_EXCLUSIVE_LOCKS_REQUIRED(feed_conn_mu_);
  // Every kFeedPollMs / 2, on a thread and a connection of its own: the heartbeat never waits for the
  // feed (which waits for this replica's writes, which may wait for rows another replica holds), and a
  // heartbeat that stalls holds up nothing else.
  void HeartbeatLoop();
  // The replica's heartbeat (and, every kExpiryPassMs, the expiry pass).
  absl::Status Heartbeat() ABSL_EXCLUSIVE_LOCKS_REQUIRED(beat_mu_);
  // Reads the change feed from feed_seq_ and applies it to this replica's view. Under feed_mu_: a write
  // that changes what replicas serve holds it from before it begins until its own view is updated.
  absl::Status ReadFeed() ABSL_EXCLUSIVE_LOCKS_REQUIRED(feed_mu_, feed_conn_mu_);
  // Deletes replica rows silent for kReplicaExpiryMs and makes admission notes left in flight by a
  // replica that is gone due (in_flight_owner cleared), telling the notice listener of each.
  absl::Status ExpireDeadReplicas() ABSL_EXCLUSIVE_LOCKS_REQUIRED(beat_mu_);
  // Deletes envelopes no sandbox names and bodies no envelope or revision names, that no transaction holds
  // (SKIP LOCKED): what two replicas' drops left when each skipped the row the other held
  // (DeleteUnused). Never waits for a lock longer than kSealWaitMs.
  absl::Status SweepUnusedEnvelopes() ABSL_EXCLUSIVE_LOCKS_REQUIRED(beat_mu_);

  const Clock* const clock_;
  const std::string replica_id_;
  const std::function<void(const std::string&)> notice_;  // StoreOptions::notice (may be empty)
  mutable absl::Mutex mu_;  // the write connection and the chain head
  PgConn writer_ ABSL_GUARDED_BY(mu_);
  trust::ChainSealer chain_ ABSL_GUARDED_BY(mu_);
  bool announced_ ABSL_GUARDED_BY(mu_) = false;  // the open transaction wrote to the feed
  // The open transaction holds the chain's head (it was free): its events and feed rows are written sealed.
  bool sealed_ ABSL_GUARDED_BY(mu_) = false;
  // The open transaction holds the ceiling's lock, taken before any of its writes ran (outside their
  // savepoints, so no write's rollback lets it go): the ceiling's version it read then, which holds until
  // the commit.
  std::optional<int64_t> group_ceiling_ ABSL_GUARDED_BY(mu_);
  // Envelopes the open transaction's writes stopped using (a deleted sandbox's, a re-projection's old
  // ones): dropped if unused once every write of the group ran (DropUnusedEnvelopes).
  std::vector<std::string> drops_ ABSL_GUARDED_BY(mu_);
  GroupCommitQueue queue_;
  ChangeListener* listener_ = nullptr;  // set before concurrent use

  absl::Mutex read_mu_;
  PgConn reader_ ABSL_GUARDED_BY(read_mu_);

  absl::Mutex feed_mu_;  // the feed's position and listeners: applying remote changes, ordered with writes
  int64_t feed_seq_ ABSL_GUARDED_BY(feed_mu_) = 0;
  // A COMMIT whose outcome this replica does not know (the connection lost before its answer): the
  // commit may have landed while this replica's view was not updated. Until then the feed applies this
  // replica's own rows as it applies others' (re-reading is harmless), for kOwnRowsWindowMs of feed
  // reads after the first that succeeds (own rows sealed late by another writer arrive in it) — review 108.
  bool own_rows_uncertain_ ABSL_GUARDED_BY(feed_mu_) = false;
  bool commit_uncertain_ ABSL_GUARDED_BY(mu_) = false;  // LeadOnce's COMMIT failed after it was sent
  static constexpr int64_t kOwnRowsWindowMs = 30000;
  int64_t own_rows_until_ms_ ABSL_GUARDED_BY(feed_mu_) = 0;  // steady clock; 0: the window has not begun
  std::atomic<int64_t> feed_seq_read_{0};  // feed_seq_, for RecordFeedPosition (which does not hold feed_mu_)
  std::atomic<int64_t> feed_read_ok_ms_{0};  // SteadyMs() of the last round that read the feed (and at open)
  RemoteChangeListener* remote_listener_ ABSL_GUARDED_BY(feed_mu_) = nullptr;
  std::function<void(bool)> reachability_listener_ ABSL_GUARDED_BY(feed_mu_);
  // The feed connection (taken after feed_mu_ when both are held).
  absl::Mutex feed_conn_mu_ ABSL_ACQUIRED_AFTER(feed_mu_);
  PgConn feed_ ABSL_GUARDED_BY(feed_conn_mu_);
  // Pacing (the feed's poll, the heartbeat and its passes) is on the steady clock: a step of the wall
  // clock back never stops the heartbeat (review 108).
  int64_t last_feed_round_ms_ ABSL_GUARDED_BY(feed_conn_mu_) = 0;
  bool position_failed_ ABSL_GUARDED_BY(feed_conn_mu_) = false;
  // The heartbeat's connection, and the expiry pass that runs with it.
  absl::Mutex beat_mu_;
  PgConn beat_ ABSL_GUARDED_BY(beat_mu_);
  int64_t last_heartbeat_ok_ms_ ABSL_GUARDED_BY(beat_mu_) = 0;
  int64_t last_expiry_pass_ms_ ABSL_GUARDED_BY(beat_mu_) = 0;
  int64_t last_sweep_pass_ms_ ABSL_GUARDED_BY(beat_mu_) = 0;
  bool replica_ = true;  // set before the feed thread starts
  std::atomic<bool> reachable_{true};
  std::atomic<bool> heartbeat_ok_{true};  // the last heartbeat was sent
  std::atomic<bool> stopping_{false};
  // The sealer's connection, and the head it last sealed (AuditChainHead's answer while unreachable).
  absl::Mutex seal_mu_;
  PgConn sealer_ ABSL_GUARDED_BY(seal_mu_);
  // Its own mutex: a write updates it after its commit and must not wait for a seal in progress.
  absl::Mutex sealed_head_mu_;
  trust::ChainSealer::Mark sealed_head_ ABSL_GUARDED_BY(sealed_head_mu_);
  std::atomic<bool> seal_skipped_{false};  // the feed's last seal found the head held elsewhere
  std::thread feed_thread_;
  std::thread beat_thread_;
  std::unique_ptr<HeadAnchor> anchor_;  // StoreOptions::anchor_path; reset first in the destructor
};

}  // namespace osh::store
