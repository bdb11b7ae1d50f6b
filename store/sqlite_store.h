// The embedded Store: one SQLite file (WAL, synchronous=FULL, file mode 0600), schema versioned by
// PRAGMA user_version with forward-only migrations. Thread-safe: one connection behind a mutex.
#pragma once

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "store/sqlite_db.h"
#include "store/store.h"

namespace osh::store {

class SqliteStore final : public Store {
 public:
  // Opens or creates the database at `path` and migrates it to the current schema. Refuses a
  // database written by a newer gateway (FAILED_PRECONDITION).
  static absl::StatusOr<std::unique_ptr<SqliteStore>> Open(const std::string& path);
  static constexpr int kSchemaVersion = 3;

  absl::Status InsertSandbox(const SandboxRecord& record, AuditEvent event) override;
  absl::Status ReplaceProjection(const std::string& sandbox_id, const Projection& projection,
                                 const std::string& verification, const std::vector<std::string>& key_ids,
                                 int64_t now_unix, AuditEvent event) override;
  absl::Status SetRefreshError(const std::string& sandbox_id, const std::string& error, AuditEvent event) override;
  absl::StatusOr<bool> DeleteSandbox(const std::string& sandbox_id, AuditEvent event) override;
  absl::Status RecordReport(const std::string& sandbox_id, const std::string& digest,
                            openshell::policy::gateway::v1::LoadStatus status, const std::string& error,
                            int64_t now_unix, AuditEvent event) override;
  absl::StatusOr<std::vector<SandboxRecord>> LoadSandboxes() override;

  absl::StatusOr<int64_t> RecordAdmissionIntent(const RuntimeContext& context) override;
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
  absl::StatusOr<std::vector<PolicyRevisionRecord>> ListPolicyRevisions(const std::string& scope) override;
  absl::StatusOr<uint64_t> CountLivePolicies() override;

  absl::Status AppendAudit(AuditEvent event) override;
  absl::StatusOr<std::vector<AuditEvent>> ListAuditEvents(uint64_t after_seq, uint32_t limit) override;
  ChainHead AuditChainHead() override;

 private:
  explicit SqliteStore(Db db) : db_(std::move(db)) {}
  absl::Status Migrate() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status LoadChainHead() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Inserts the event inside the caller's open transaction; the chain head advances only after the
  // caller commits (CommitWithAudit).
  absl::Status InsertAudit(AuditEvent* event) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CommitWithAudit(Transaction& txn, const AuditEvent& event) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status PutBody(const std::string& digest, const std::string& body) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status DropBodyIfUnused(const std::string& digest) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::optional<PolicyRevisionRecord>> LatestLocked(const std::string& scope)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  Db db_ ABSL_GUARDED_BY(mu_);
  uint64_t last_seq_ ABSL_GUARDED_BY(mu_) = 0;
  std::string last_hash_ ABSL_GUARDED_BY(mu_);
};

}  // namespace osh::store
