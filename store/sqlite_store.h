// The embedded store: one SQLite file (WAL, synchronous=FULL, file mode 0600), schema versioned by
// PRAGMA user_version with forward-only migrations. Thread-safe: one connection behind a mutex.
//
// Writes are group-committed: a writer that finds another commit under way queues behind it, and the
// next leader runs every queued write in one transaction (each inside its own savepoint, so one write's
// failure leaves the others intact) and pays one fsync for all. Each writer returns only once its write
// is durable (or refused).
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
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "store/clock.h"
#include "store/group_commit.h"
#include "store/head_anchor.h"
#include "store/sqlite_db.h"
#include "common/state_lock.h"
#include "store/store.h"

namespace osh::store {

// One object plays every role (store.h); Replication is a single process's (the defaults).
class SqliteStore final : public SingleObjectDatabase {
 public:
  // Opens or creates the database at `path` and migrates it to the current schema. Refuses a
  // database written by a newer gateway (FAILED_PRECONDITION). With options.exclusive: the folder check
  // and the state lock; with options.anchor_path: rollback detection (see StoreOptions).
  static absl::StatusOr<std::unique_ptr<SqliteStore>> Open(const std::string& path, const StoreOptions& options);
  // A plain open (tests, tools): `clock` (not owned; must outlive the store) stamps events and releases.
  static absl::StatusOr<std::unique_ptr<SqliteStore>> Open(const std::string& path,
                                                           const Clock* clock = Clock::System());
  ~SqliteStore() override;
  static constexpr int kSchemaVersion = 11;
  static constexpr int kEnvelopesVersion = 4;  // the migration that moves envelopes into their own table
  // Creates the schema as `version` left it (user_version set), in an empty database: for testing the
  // migrations from a database an older release wrote.
  static absl::Status CreateSchemaAt(Db& db, int version);

  absl::StatusOr<CommitResult> Commit(ChangeBatch batch) override;
  void CommitAsync(ChangeBatch batch, CommitDone done) override;
  void SetChangeListener(ChangeListener* listener) override;
  absl::StatusOr<std::vector<SandboxRecord>> LoadSandboxes() override;

  absl::StatusOr<int64_t> RecordAdmissionIntent(const RuntimeContext& context,
                                                const std::string& idempotency_key = "") override;
  void RecordAdmissionIntentAsync(const RuntimeContext& context, const std::string& idempotency_key,
                                  std::function<void(absl::StatusOr<int64_t>)> done) override;
  absl::Status QueueAcquiredRelease(int64_t id, const std::string& driver_handle) override;
  absl::Status DropAdmissionIntent(int64_t id) override;
  absl::StatusOr<std::vector<PendingRelease>> PendingReleases() override;
  absl::Status CompleteRelease(int64_t id, AuditEvent event) override;

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

  // Transactions committed and the writes they carried (group commit at work), and the audit head.
  StoreStats Stats() override;

 private:
  SqliteStore(Db db, const Clock* clock) : clock_(clock), db_(std::move(db)) {}
  // Open without the folder check, the lock and the anchor.
  static absl::StatusOr<std::unique_ptr<SqliteStore>> OpenUnguarded(const std::string& path, const StoreOptions& options);
  int64_t NowMs() const { return clock_->NowUnixMillis(); }
  absl::Status Migrate() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status MigrateEnvelopes() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status LoadChainHead() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Runs `run` in a group-committed transaction; `committed` runs after the commit is durable, in
  // commit order, before this returns (on the leader's thread).
  absl::Status Write(std::function<absl::Status()> run, std::function<void()> committed = nullptr);
  // Write without waiting: `done` gets the status once final (GroupWrite::on_done).
  void WriteAsync(std::function<absl::Status()> run, std::function<void()> committed,
                  std::function<void(absl::Status)> done);
  struct PendingCommit;
  // The statements of a change batch and its after-commit step; `pending` must outlive both.
  std::pair<std::function<absl::Status()>, std::function<void()>> CommitSteps(PendingCommit* pending);
  // The admission note's statement; `id` gets its row id and must outlive it.
  std::function<absl::Status()> NoteStep(const RuntimeContext& context, const std::string& idempotency_key,
                                         int64_t* id);
  void LeadGroup(const std::vector<GroupWrite*>& group) ABSL_LOCKS_EXCLUDED(mu_);

  absl::Status ApplyChange(const Change& change, int64_t* rows) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Admit(const change::AdmitSandbox& c, int64_t* rows) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Replace(const change::ReplaceProjection& c, int64_t* rows) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Delete(const change::DeleteSandbox& c, int64_t* rows) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status InsertAudit(AuditEvent* event) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Steps the provider-profile catalogue's generation, only from `expected` when given (CatalogueChanged
  // otherwise).
  absl::Status StepProfileGeneration(std::optional<uint64_t> expected) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // On the read connection: the blob (column 0) of the one row `sql` selects with `key` bound to its ?,
  // or nullopt; every (text, blob) row `sql` selects.
  absl::StatusOr<std::optional<std::string>> ReadBlobByKey(const char* sql, const std::string& key);
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ReadKeyedBlobs(const char* sql);
  // Stores `*record` as the sandbox's interceptor record, or removes it (nullptr).
  absl::Status WriteInterceptorRecord(const std::string& sandbox, const std::string* record, AuditEvent* event,
                                      std::optional<uint64_t> expected_generation = std::nullopt,
                                      const std::optional<std::string>* expected_previous = nullptr);
  // Inside a catalogue change's transaction: every interceptor record as it stands, for its check.
  absl::Status RunProfileChangeCheck(const ProfileChangeCheck& check) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // OK when the stored ceiling is `checked` (its version, or kNoCeiling); else ABORTED ceiling_changed.
  absl::Status CheckCeilingUnchanged(int64_t checked) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // ChangeBatch::checked_revisions (the one writer: nothing appends meanwhile).
  absl::Status CheckRevisionsKnown(const std::map<std::string, uint64_t>& checked) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether the sandbox's recorded report is this one (digest, status and error), of its admitted digest;
  // false when absent.
  absl::StatusOr<bool> SameReportRecorded(const change::RecordReport& report) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The members the batch being run passed by (change::StillAdmitted): its events naming them are not written.
  std::set<std::string> passed_by_ ABSL_GUARDED_BY(mu_);
  // Stores the envelope (and its body) if new; its id and policy digest.
  absl::Status PutEnvelope(const Envelope& envelope, std::string* id, std::string* digest)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status PutBody(const std::string& digest, const std::string& body) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status DropEnvelopeIfUnused(const std::string& id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status DropBodyIfUnused(const std::string& digest) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static absl::StatusOr<std::optional<PolicyRevisionRecord>> LatestIn(Db& db, const std::string& scope);

  const Clock* const clock_;
  mutable absl::Mutex mu_;  // the connection and the chain head
  Db db_ ABSL_GUARDED_BY(mu_);
  trust::ChainSealer chain_ ABSL_GUARDED_BY(mu_);
  StoreStats counters_ ABSL_GUARDED_BY(mu_);
  std::function<void(absl::Duration)> commit_observer_;

  absl::Mutex read_mu_;  // the read connection
  std::optional<Db> read_db_ ABSL_GUARDED_BY(read_mu_);

  GroupCommitQueue queue_;

  // WAL checkpoints off the commit path: the write connection never checkpoints; this thread runs a
  // PASSIVE checkpoint on its own connection (it waits for no reader or writer), so no commit pays for
  // copying the log into the database file. It copies once the log holds kCheckpointFrames (SQLite's own
  // threshold), at most every kCheckpointInterval, and a smaller log once kIdleCheckpoint has passed since
  // the last copy: each copy ends in a flush of the database file, which a commit's own flush can queue
  // behind, so copies are not made more often than the log's size asks for. Copies beside the commits
  // are repeated (at most kCopiesBeside) until one is whole and the commits added few frames during it;
  // then a last one holds the writer off between two groups (mu_), so the log is copied whole and starts
  // over at the next commit however steady the writes (the log's size stays bounded).
  void CheckpointLoop();
  // One PASSIVE checkpoint on the checkpoint connection: whether it copied the whole log, and the log's
  // frames then (-1: it failed).
  struct Copied {
    bool whole = false;
    int frames = -1;
  };
  Copied CheckpointOnce();
  std::atomic<int> wal_frames_{0};  // frames in the log after the last commit (the writer's WAL hook)
  absl::Mutex checkpoint_mu_;
  bool stop_checkpoints_ ABSL_GUARDED_BY(checkpoint_mu_) = false;
  std::optional<Db> checkpoint_db_;  // used by the checkpoint thread only
  std::thread checkpointer_;

  ChangeListener* listener_ = nullptr;  // set before concurrent use

  std::optional<common::StateLock> state_lock_;  // StoreOptions::exclusive: held as long as the store is open
  std::unique_ptr<HeadAnchor> anchor_;   // destroyed first (its thread reads the chain head)
};

}  // namespace osh::store
