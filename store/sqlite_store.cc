#include "store/sqlite_store.h"

#include <chrono>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "policy/body_codec.h"
#include "policy/digest.h"

namespace osh::store {
namespace {

using openshell::policy::gateway::v1::LoadStatus;

#define OSH_RETURN_IF_ERROR(expr)              \
  do {                                         \
    if (absl::Status _s = (expr); !_s.ok()) return _s; \
  } while (0)

// Forward-only migrations: kMigrations[i] takes the schema from version i to i + 1.
const char* const kMigrations[] = {
    R"sql(
CREATE TABLE bodies (
  digest TEXT PRIMARY KEY,            -- lowercase hex SHA-256 of body
  body   BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE sandboxes (
  sandbox_id         TEXT PRIMARY KEY,
  context            BLOB NOT NULL,   -- serialized RuntimeContext
  handle_sha256      BLOB NOT NULL UNIQUE,
  driver_handle      TEXT NOT NULL,
  envelope           BLOB NOT NULL,   -- serialized Projection without its body
  policy_digest      TEXT NOT NULL REFERENCES bodies(digest),
  verification       TEXT NOT NULL,
  signing_key_ids    TEXT NOT NULL,   -- comma-separated
  admitted_at        INTEGER NOT NULL,
  updated_at         INTEGER NOT NULL,
  load_status        INTEGER NOT NULL DEFAULT 0,
  load_error         TEXT NOT NULL DEFAULT '',
  reported_digest    TEXT NOT NULL DEFAULT '',
  reported_at        INTEGER NOT NULL DEFAULT 0,
  last_refresh_error TEXT NOT NULL DEFAULT ''
);
CREATE TABLE pending_releases (
  id            INTEGER PRIMARY KEY AUTOINCREMENT,
  driver_handle TEXT NOT NULL,
  queued_at     INTEGER NOT NULL
);
CREATE TABLE policy_revisions (
  seq        INTEGER PRIMARY KEY AUTOINCREMENT,   -- global order
  scope      TEXT NOT NULL,
  revision   INTEGER NOT NULL,                    -- per scope, from 1
  digest     TEXT NOT NULL,                       -- '' for a deletion
  created_at INTEGER NOT NULL,
  UNIQUE (scope, revision)
);
CREATE TABLE audit_events (
  seq           INTEGER PRIMARY KEY,
  time_unix_ms  INTEGER NOT NULL,
  type          TEXT NOT NULL,
  sandbox_id    TEXT NOT NULL,
  surface_id    TEXT NOT NULL,
  policy_digest TEXT NOT NULL,
  policy_version INTEGER NOT NULL,
  key_ids       TEXT NOT NULL,
  outcome       TEXT NOT NULL,
  reason        TEXT NOT NULL,
  audit_context BLOB NOT NULL,                    -- serialized map as a Projection's audit_context
  prev_hash     TEXT NOT NULL,
  hash          TEXT NOT NULL
);
)sql",
    // 2: admissions in flight note their driver handle before anything else is written.
    R"sql(
ALTER TABLE pending_releases ADD COLUMN in_flight INTEGER NOT NULL DEFAULT 0;
)sql",
    // 3: the note is taken before the handle is acquired: it carries the context to release by.
    R"sql(
ALTER TABLE pending_releases ADD COLUMN context BLOB NOT NULL DEFAULT x'';
)sql",
};
static_assert(std::size(kMigrations) == SqliteStore::kSchemaVersion, "one migration per schema version");

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string JoinIds(const std::vector<std::string>& ids) { return absl::StrJoin(ids, ","); }
std::vector<std::string> SplitIds(const std::string& text) {
  if (text.empty()) return {};
  return absl::StrSplit(text, ',');
}

// The audit context travels as a Projection with only audit_context set: one deterministic encoding.
std::string EncodeContextMap(const std::map<std::string, std::string>& map) {
  Projection holder;
  for (const auto& [k, v] : map) (*holder.mutable_audit_context())[k] = v;
  return policy::SerializeDeterministic(holder);
}
std::map<std::string, std::string> DecodeContextMap(const std::string& bytes) {
  Projection holder;
  holder.ParseFromString(bytes);
  return {holder.audit_context().begin(), holder.audit_context().end()};
}

PolicyRevisionRecord RevisionFrom(const Stmt& row) {
  PolicyRevisionRecord r;
  r.seq = static_cast<uint64_t>(row.Int(0));
  r.scope = row.Text(1);
  r.revision = static_cast<uint64_t>(row.Int(2));
  r.digest = row.Text(3);
  r.created_at_unix = row.Int(4);
  r.body = row.Blob(5);
  return r;
}

constexpr char kRevisionColumns[] =
    "SELECT r.seq, r.scope, r.revision, r.digest, r.created_at, b.body FROM policy_revisions r "
    "LEFT JOIN bodies b ON b.digest = r.digest ";

}  // namespace

absl::StatusOr<std::unique_ptr<SqliteStore>> SqliteStore::Open(const std::string& path) {
  auto db = Db::Open(path);
  if (!db.ok()) return db.status();
  std::unique_ptr<SqliteStore> store(new SqliteStore(*std::move(db)));
  absl::MutexLock lock(&store->mu_);
  OSH_RETURN_IF_ERROR(store->db_.Exec("PRAGMA journal_mode=WAL"));
  OSH_RETURN_IF_ERROR(store->db_.Exec("PRAGMA synchronous=FULL"));
  OSH_RETURN_IF_ERROR(store->db_.Exec("PRAGMA foreign_keys=ON"));
  OSH_RETURN_IF_ERROR(store->Migrate());
  OSH_RETURN_IF_ERROR(store->LoadChainHead());
  // No admission is in flight in a store just opened: handles noted by one that crashed are now due.
  OSH_RETURN_IF_ERROR(store->db_.Exec("UPDATE pending_releases SET in_flight = 0 WHERE in_flight = 1"));
  return store;
}

absl::Status SqliteStore::Migrate() {
  auto stmt = db_.Prepare("PRAGMA user_version");
  if (!stmt.ok()) return stmt.status();
  auto row = stmt->Step();
  if (!row.ok()) return row.status();
  const int64_t version = stmt->Int(0);
  if (version > kSchemaVersion) {
    return absl::FailedPreconditionError(absl::StrCat("database schema version ", version,
                                                      " is newer than this gateway's ", kSchemaVersion));
  }
  for (int64_t v = version; v < kSchemaVersion; ++v) {
    Transaction txn(db_);
    OSH_RETURN_IF_ERROR(txn.begin_status());
    OSH_RETURN_IF_ERROR(db_.Exec(kMigrations[v]));
    OSH_RETURN_IF_ERROR(db_.Exec(absl::StrCat("PRAGMA user_version = ", v + 1)));
    OSH_RETURN_IF_ERROR(txn.Commit());
  }
  return absl::OkStatus();
}

absl::Status SqliteStore::LoadChainHead() {
  auto stmt = db_.Prepare("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1");
  if (!stmt.ok()) return stmt.status();
  auto row = stmt->Step();
  if (!row.ok()) return row.status();
  last_seq_ = *row ? static_cast<uint64_t>(stmt->Int(0)) : 0;
  last_hash_ = *row ? stmt->Text(1) : trust::kGenesisHash;
  return absl::OkStatus();
}

absl::Status SqliteStore::InsertAudit(AuditEvent* event) {
  trust::MakeTextUtf8(event);
  event->seq = last_seq_ + 1;
  if (event->time_unix_ms == 0) event->time_unix_ms = NowMs();
  event->prev_hash = last_hash_;
  event->hash = trust::ChainHash(last_hash_, *event);
  auto stmt = db_.Prepare(
      "INSERT INTO audit_events (seq, time_unix_ms, type, sandbox_id, surface_id, policy_digest, policy_version, "
      "key_ids, outcome, reason, audit_context, prev_hash, hash) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)");
  if (!stmt.ok()) return stmt.status();
  stmt->Bind(1, static_cast<int64_t>(event->seq)).Bind(2, event->time_unix_ms).Bind(3, event->type)
      .Bind(4, event->sandbox_id).Bind(5, event->surface_id).Bind(6, event->policy_digest)
      .Bind(7, static_cast<int64_t>(event->policy_version)).Bind(8, JoinIds(event->key_ids))
      .Bind(9, event->outcome).Bind(10, event->reason).BindBlob(11, EncodeContextMap(event->audit_context))
      .Bind(12, event->prev_hash).Bind(13, event->hash);
  return stmt->Run();
}

absl::Status SqliteStore::CommitWithAudit(Transaction& txn, const AuditEvent& event) {
  OSH_RETURN_IF_ERROR(txn.Commit());
  last_seq_ = event.seq;
  last_hash_ = event.hash;
  return absl::OkStatus();
}

absl::Status SqliteStore::PutBody(const std::string& digest, const std::string& body) {
  auto stmt = db_.Prepare("INSERT OR IGNORE INTO bodies (digest, body) VALUES (?, ?)");
  if (!stmt.ok()) return stmt.status();
  stmt->Bind(1, digest).BindBlob(2, body);
  return stmt->Run();
}

absl::Status SqliteStore::DropBodyIfUnused(const std::string& digest) {
  auto stmt = db_.Prepare(
      "DELETE FROM bodies WHERE digest = ?1 AND NOT EXISTS (SELECT 1 FROM sandboxes WHERE policy_digest = ?1) "
      "AND NOT EXISTS (SELECT 1 FROM policy_revisions WHERE digest = ?1)");
  if (!stmt.ok()) return stmt.status();
  stmt->Bind(1, digest);
  return stmt->Run();
}

absl::Status SqliteStore::InsertSandbox(const SandboxRecord& r, AuditEvent event) {
  absl::MutexLock lock(&mu_);
  Transaction txn(db_);
  OSH_RETURN_IF_ERROR(txn.begin_status());
  OSH_RETURN_IF_ERROR(PutBody(r.projection.policy_digest(), r.projection.body()));
  Projection envelope = r.projection;
  envelope.clear_body();
  auto stmt = db_.Prepare(
      "INSERT INTO sandboxes (sandbox_id, context, handle_sha256, driver_handle, envelope, policy_digest, "
      "verification, signing_key_ids, admitted_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)");
  if (!stmt.ok()) return stmt.status();
  stmt->Bind(1, r.context.sandbox_id()).BindBlob(2, policy::SerializeDeterministic(r.context))
      .BindBlob(3, r.handle_sha256).Bind(4, r.driver_handle).BindBlob(5, policy::SerializeDeterministic(envelope))
      .Bind(6, r.projection.policy_digest()).Bind(7, r.verification).Bind(8, JoinIds(r.signing_key_ids))
      .Bind(9, r.admitted_at_unix).Bind(10, r.updated_at_unix);
  if (absl::Status s = stmt->Run(); !s.ok()) {
    if (absl::IsAlreadyExists(s)) return absl::AlreadyExistsError(absl::StrCat("sandbox '", r.context.sandbox_id(), "' is already admitted"));
    return s;
  }
  if (r.acquisition_id != 0) {
    auto settle = db_.Prepare("DELETE FROM pending_releases WHERE id = ?");  // in flight or not: admitted
    if (!settle.ok()) return settle.status();
    settle->Bind(1, r.acquisition_id);
    OSH_RETURN_IF_ERROR(settle->Run());
  }
  OSH_RETURN_IF_ERROR(InsertAudit(&event));
  return CommitWithAudit(txn, event);
}

absl::Status SqliteStore::ReplaceProjection(const std::string& sandbox_id, const Projection& projection,
                                            const std::string& verification, const std::vector<std::string>& key_ids,
                                            int64_t now_unix, AuditEvent event) {
  absl::MutexLock lock(&mu_);
  Transaction txn(db_);
  OSH_RETURN_IF_ERROR(txn.begin_status());
  auto old = db_.Prepare("SELECT policy_digest FROM sandboxes WHERE sandbox_id = ?");
  if (!old.ok()) return old.status();
  old->Bind(1, sandbox_id);
  auto row = old->Step();
  if (!row.ok()) return row.status();
  if (!*row) return absl::NotFoundError(absl::StrCat("no sandbox '", sandbox_id, "'"));
  const std::string old_digest = old->Text(0);
  OSH_RETURN_IF_ERROR(PutBody(projection.policy_digest(), projection.body()));
  Projection envelope = projection;
  envelope.clear_body();
  auto stmt = db_.Prepare(
      "UPDATE sandboxes SET envelope = ?, policy_digest = ?, verification = ?, signing_key_ids = ?, updated_at = ?, "
      "last_refresh_error = '' WHERE sandbox_id = ?");
  if (!stmt.ok()) return stmt.status();
  stmt->BindBlob(1, policy::SerializeDeterministic(envelope)).Bind(2, projection.policy_digest())
      .Bind(3, verification).Bind(4, JoinIds(key_ids)).Bind(5, now_unix).Bind(6, sandbox_id);
  OSH_RETURN_IF_ERROR(stmt->Run());
  if (old_digest != projection.policy_digest()) OSH_RETURN_IF_ERROR(DropBodyIfUnused(old_digest));
  OSH_RETURN_IF_ERROR(InsertAudit(&event));
  return CommitWithAudit(txn, event);
}

absl::Status SqliteStore::SetRefreshError(const std::string& sandbox_id, const std::string& error, AuditEvent event) {
  absl::MutexLock lock(&mu_);
  Transaction txn(db_);
  OSH_RETURN_IF_ERROR(txn.begin_status());
  auto stmt = db_.Prepare("UPDATE sandboxes SET last_refresh_error = ? WHERE sandbox_id = ?");
  if (!stmt.ok()) return stmt.status();
  stmt->Bind(1, error).Bind(2, sandbox_id);
  OSH_RETURN_IF_ERROR(stmt->Run());
  OSH_RETURN_IF_ERROR(InsertAudit(&event));
  return CommitWithAudit(txn, event);
}

absl::StatusOr<bool> SqliteStore::DeleteSandbox(const std::string& sandbox_id, AuditEvent event) {
  absl::MutexLock lock(&mu_);
  Transaction txn(db_);
  OSH_RETURN_IF_ERROR(txn.begin_status());
  auto find = db_.Prepare("SELECT driver_handle, policy_digest FROM sandboxes WHERE sandbox_id = ?");
  if (!find.ok()) return find.status();
  find->Bind(1, sandbox_id);
  auto row = find->Step();
  if (!row.ok()) return row.status();
  if (!*row) return false;
  const std::string driver_handle = find->Text(0);
  const std::string digest = find->Text(1);
  auto del = db_.Prepare("DELETE FROM sandboxes WHERE sandbox_id = ?");
  if (!del.ok()) return del.status();
  del->Bind(1, sandbox_id);
  OSH_RETURN_IF_ERROR(del->Run());
  OSH_RETURN_IF_ERROR(DropBodyIfUnused(digest));
  auto queue = db_.Prepare("INSERT INTO pending_releases (driver_handle, queued_at) VALUES (?, ?)");
  if (!queue.ok()) return queue.status();
  queue->Bind(1, driver_handle).Bind(2, NowMs() / 1000);
  OSH_RETURN_IF_ERROR(queue->Run());
  OSH_RETURN_IF_ERROR(InsertAudit(&event));
  OSH_RETURN_IF_ERROR(CommitWithAudit(txn, event));
  return true;
}

absl::Status SqliteStore::RecordReport(const std::string& sandbox_id, const std::string& digest, LoadStatus status,
                                       const std::string& error, int64_t now_unix, AuditEvent event) {
  absl::MutexLock lock(&mu_);
  Transaction txn(db_);
  OSH_RETURN_IF_ERROR(txn.begin_status());
  auto stmt = db_.Prepare(
      "UPDATE sandboxes SET load_status = ?, load_error = ?, reported_digest = ?, reported_at = ? WHERE sandbox_id = ?");
  if (!stmt.ok()) return stmt.status();
  stmt->Bind(1, static_cast<int64_t>(status)).Bind(2, error).Bind(3, digest).Bind(4, now_unix).Bind(5, sandbox_id);
  OSH_RETURN_IF_ERROR(stmt->Run());
  if (db_.Changes() == 0) return absl::NotFoundError(absl::StrCat("no sandbox '", sandbox_id, "'"));
  OSH_RETURN_IF_ERROR(InsertAudit(&event));
  return CommitWithAudit(txn, event);
}

absl::StatusOr<std::vector<SandboxRecord>> SqliteStore::LoadSandboxes() {
  absl::MutexLock lock(&mu_);
  auto stmt = db_.Prepare(
      "SELECT s.context, s.handle_sha256, s.driver_handle, s.envelope, b.body, s.verification, s.signing_key_ids, "
      "s.admitted_at, s.updated_at, s.load_status, s.load_error, s.reported_digest, s.reported_at, "
      "s.last_refresh_error FROM sandboxes s JOIN bodies b ON b.digest = s.policy_digest ORDER BY s.sandbox_id");
  if (!stmt.ok()) return stmt.status();
  std::vector<SandboxRecord> out;
  for (;;) {
    auto row = stmt->Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    SandboxRecord r;
    if (!r.context.ParseFromString(stmt->Blob(0)) || !r.projection.ParseFromString(stmt->Blob(3))) {
      return absl::DataLossError("sqlite: a sandbox row does not decode");
    }
    r.handle_sha256 = stmt->Blob(1);
    r.driver_handle = stmt->Text(2);
    r.projection.set_body(stmt->Blob(4));
    r.verification = stmt->Text(5);
    r.signing_key_ids = SplitIds(stmt->Text(6));
    r.admitted_at_unix = stmt->Int(7);
    r.updated_at_unix = stmt->Int(8);
    r.load_status = static_cast<LoadStatus>(stmt->Int(9));
    r.load_error = stmt->Text(10);
    r.reported_digest = stmt->Text(11);
    r.reported_at_unix = stmt->Int(12);
    r.last_refresh_error = stmt->Text(13);
    out.push_back(std::move(r));
  }
  return out;
}

absl::StatusOr<int64_t> SqliteStore::RecordAdmissionIntent(const RuntimeContext& context) {
  absl::MutexLock lock(&mu_);
  auto stmt = db_.Prepare(
      "INSERT INTO pending_releases (driver_handle, queued_at, in_flight, context) VALUES ('', ?, 1, ?)");
  if (!stmt.ok()) return stmt.status();
  stmt->Bind(1, NowMs() / 1000).BindBlob(2, policy::SerializeDeterministic(context));
  OSH_RETURN_IF_ERROR(stmt->Run());
  return db_.LastInsertRowId();
}

absl::Status SqliteStore::QueueAcquiredRelease(int64_t id, const std::string& driver_handle) {
  absl::MutexLock lock(&mu_);
  auto stmt = db_.Prepare("UPDATE pending_releases SET in_flight = 0, driver_handle = ? WHERE id = ?");
  if (!stmt.ok()) return stmt.status();
  stmt->Bind(1, driver_handle).Bind(2, id);
  return stmt->Run();
}

absl::Status SqliteStore::DropAdmissionIntent(int64_t id) {
  absl::MutexLock lock(&mu_);
  auto stmt = db_.Prepare("DELETE FROM pending_releases WHERE id = ? AND in_flight = 1");
  if (!stmt.ok()) return stmt.status();
  stmt->Bind(1, id);
  return stmt->Run();
}

absl::StatusOr<std::vector<PendingRelease>> SqliteStore::PendingReleases() {
  absl::MutexLock lock(&mu_);
  auto stmt = db_.Prepare("SELECT id, driver_handle, context FROM pending_releases WHERE in_flight = 0 ORDER BY id");
  if (!stmt.ok()) return stmt.status();
  std::vector<PendingRelease> out;
  for (;;) {
    auto row = stmt->Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    PendingRelease release{stmt->Int(0), stmt->Text(1), {}};
    if (!release.context.ParseFromString(stmt->Blob(2))) return absl::DataLossError("sqlite: a pending release does not decode");
    out.push_back(std::move(release));
  }
  return out;
}

absl::Status SqliteStore::CompleteRelease(int64_t id, AuditEvent event) {
  absl::MutexLock lock(&mu_);
  Transaction txn(db_);
  OSH_RETURN_IF_ERROR(txn.begin_status());
  auto stmt = db_.Prepare("DELETE FROM pending_releases WHERE id = ?");
  if (!stmt.ok()) return stmt.status();
  stmt->Bind(1, id);
  OSH_RETURN_IF_ERROR(stmt->Run());
  if (db_.Changes() == 0) return absl::OkStatus();  // already completed: nothing to record twice
  OSH_RETURN_IF_ERROR(InsertAudit(&event));
  return CommitWithAudit(txn, event);
}

absl::StatusOr<std::optional<PolicyRevisionRecord>> SqliteStore::LatestLocked(const std::string& scope) {
  auto stmt = db_.Prepare(absl::StrCat(kRevisionColumns, "WHERE r.scope = ? ORDER BY r.revision DESC LIMIT 1"));
  if (!stmt.ok()) return stmt.status();
  stmt->Bind(1, scope);
  auto row = stmt->Step();
  if (!row.ok()) return row.status();
  if (!*row) return std::optional<PolicyRevisionRecord>();
  return std::optional<PolicyRevisionRecord>(RevisionFrom(*stmt));
}

absl::StatusOr<PolicyRevisionRecord> SqliteStore::AppendPolicyRevision(const std::string& scope,
                                                                       const std::optional<std::string>& body,
                                                                       std::optional<uint64_t> expected_revision,
                                                                       int64_t now_unix, AuditEvent event) {
  absl::MutexLock lock(&mu_);
  Transaction txn(db_);
  OSH_RETURN_IF_ERROR(txn.begin_status());
  auto latest = LatestLocked(scope);
  if (!latest.ok()) return latest.status();
  const uint64_t current = *latest ? (*latest)->revision : 0;
  const uint64_t live = (*latest && !(*latest)->deleted()) ? current : 0;
  if (expected_revision && *expected_revision != live) {
    return absl::AbortedError(absl::StrCat("scope '", scope, "' is at revision ", live, ", expected ", *expected_revision));
  }
  if (!body && live == 0) return absl::NotFoundError(absl::StrCat("scope '", scope, "' has no policy"));
  PolicyRevisionRecord record;
  record.scope = scope;
  record.revision = current + 1;
  record.created_at_unix = now_unix;
  if (body) {
    record.body = *body;
    record.digest = policy::Sha256Hex(*body);
    OSH_RETURN_IF_ERROR(PutBody(record.digest, record.body));
  }
  auto stmt = db_.Prepare("INSERT INTO policy_revisions (scope, revision, digest, created_at) VALUES (?, ?, ?, ?)");
  if (!stmt.ok()) return stmt.status();
  stmt->Bind(1, scope).Bind(2, static_cast<int64_t>(record.revision)).Bind(3, record.digest).Bind(4, now_unix);
  OSH_RETURN_IF_ERROR(stmt->Run());
  record.seq = static_cast<uint64_t>(db_.LastInsertRowId());
  event.policy_digest = record.digest;
  event.policy_version = record.seq;
  OSH_RETURN_IF_ERROR(InsertAudit(&event));
  OSH_RETURN_IF_ERROR(CommitWithAudit(txn, event));
  return record;
}

absl::StatusOr<std::optional<PolicyRevisionRecord>> SqliteStore::LatestPolicyRevision(const std::string& scope) {
  absl::MutexLock lock(&mu_);
  return LatestLocked(scope);
}

absl::StatusOr<PolicyRevisionRecord> SqliteStore::GetPolicyRevision(const std::string& scope, uint64_t revision) {
  absl::MutexLock lock(&mu_);
  auto stmt = db_.Prepare(absl::StrCat(kRevisionColumns, "WHERE r.scope = ? AND r.revision = ?"));
  if (!stmt.ok()) return stmt.status();
  stmt->Bind(1, scope).Bind(2, static_cast<int64_t>(revision));
  auto row = stmt->Step();
  if (!row.ok()) return row.status();
  if (!*row) return absl::NotFoundError(absl::StrCat("scope '", scope, "' has no revision ", revision));
  return RevisionFrom(*stmt);
}

absl::StatusOr<std::vector<PolicyRevisionRecord>> SqliteStore::ListPolicyRevisions(const std::string& scope) {
  absl::MutexLock lock(&mu_);
  auto stmt = db_.Prepare(absl::StrCat(kRevisionColumns, scope.empty() ? "" : "WHERE r.scope = ? ", "ORDER BY r.seq"));
  if (!stmt.ok()) return stmt.status();
  if (!scope.empty()) stmt->Bind(1, scope);
  std::vector<PolicyRevisionRecord> out;
  for (;;) {
    auto row = stmt->Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    out.push_back(RevisionFrom(*stmt));
  }
  return out;
}

absl::StatusOr<uint64_t> SqliteStore::CountLivePolicies() {
  absl::MutexLock lock(&mu_);
  auto stmt = db_.Prepare(
      "SELECT COUNT(*) FROM policy_revisions r WHERE r.digest != '' AND r.revision = "
      "(SELECT MAX(revision) FROM policy_revisions WHERE scope = r.scope)");
  if (!stmt.ok()) return stmt.status();
  auto row = stmt->Step();
  if (!row.ok()) return row.status();
  return static_cast<uint64_t>(stmt->Int(0));
}

absl::Status SqliteStore::AppendAudit(AuditEvent event) {
  absl::MutexLock lock(&mu_);
  Transaction txn(db_);
  OSH_RETURN_IF_ERROR(txn.begin_status());
  OSH_RETURN_IF_ERROR(InsertAudit(&event));
  return CommitWithAudit(txn, event);
}

Store::ChainHead SqliteStore::AuditChainHead() {
  absl::MutexLock lock(&mu_);
  return {last_seq_, last_hash_};
}

absl::StatusOr<std::vector<AuditEvent>> SqliteStore::ListAuditEvents(uint64_t after_seq, uint32_t limit) {
  absl::MutexLock lock(&mu_);
  auto stmt = db_.Prepare(
      "SELECT seq, time_unix_ms, type, sandbox_id, surface_id, policy_digest, policy_version, key_ids, outcome, "
      "reason, audit_context, prev_hash, hash FROM audit_events WHERE seq > ? ORDER BY seq LIMIT ?");
  if (!stmt.ok()) return stmt.status();
  stmt->Bind(1, static_cast<int64_t>(after_seq)).Bind(2, static_cast<int64_t>(limit == 0 ? 1000 : limit));
  std::vector<AuditEvent> out;
  for (;;) {
    auto row = stmt->Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    AuditEvent e;
    e.seq = static_cast<uint64_t>(stmt->Int(0));
    e.time_unix_ms = stmt->Int(1);
    e.type = stmt->Text(2);
    e.sandbox_id = stmt->Text(3);
    e.surface_id = stmt->Text(4);
    e.policy_digest = stmt->Text(5);
    e.policy_version = static_cast<uint64_t>(stmt->Int(6));
    e.key_ids = SplitIds(stmt->Text(7));
    e.outcome = stmt->Text(8);
    e.reason = stmt->Text(9);
    e.audit_context = DecodeContextMap(stmt->Blob(10));
    e.prev_hash = stmt->Text(11);
    e.hash = stmt->Text(12);
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace osh::store
