#include "store/sqlite_store.h"

#include "common/errors.h"

#include <chrono>
#include <iterator>
#include <filesystem>
#include <thread>
#include <type_traits>

#include "store/audit_actor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "policy/body_codec.h"
#include "policy/digest.h"
#include "store/row_codec.h"
#include "store/status_macros.h"
#include "store/storage_error.h"
#include "trust/secure_path.h"

namespace osh::store {
namespace {

using openshell::policy::gateway::v1::LoadStatus;

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
    // 4: envelopes are content-addressed like bodies, so a scope's re-projection moves every sandbox
    // with one statement per distinct envelope. The rows are filled in by MigrateEnvelopes (SHA-256 is
    // not an SQL function), then the per-row envelope column goes.
    R"sql(
CREATE TABLE envelopes (
  id            BLOB PRIMARY KEY,                      -- SHA-256 of header
  header        BLOB NOT NULL,                         -- serialized Projection without its body
  policy_digest TEXT NOT NULL REFERENCES bodies(digest)
) WITHOUT ROWID;
CREATE INDEX envelopes_by_digest ON envelopes(policy_digest);
ALTER TABLE sandboxes ADD COLUMN envelope_id BLOB NOT NULL DEFAULT x'';
)sql",
    // 5: the signed ceiling in force (one row), stored verbatim with its signatures.
    R"sql(
CREATE TABLE ceiling (
  id      INTEGER PRIMARY KEY CHECK (id = 1),
  version INTEGER NOT NULL,
  ceiling BLOB NOT NULL                                  -- serialized openshell.policy.ceiling.v1.Ceiling
);
)sql",
    // 6: the idempotency key an admission's AcquireHandle was sent with (SPEC §3.2), so recovery
    // re-acquires exactly that handle.
    R"sql(
ALTER TABLE pending_releases ADD COLUMN idempotency_key TEXT NOT NULL DEFAULT '';
)sql",
    // 7: who caused each audit event (the admin caller); '' for events of the gateway itself and for
    // every event written before, which hash as they always did.
    R"sql(
ALTER TABLE audit_events ADD COLUMN actor TEXT NOT NULL DEFAULT '';
)sql",
    // 8: the newest ceiling_set event is found at start without a scan (it names the ceiling the database
    // must hold: issue 25.17).
    R"sql(
CREATE INDEX audit_ceiling_sets ON audit_events(seq) WHERE type = 'ceiling_set';
)sql",
    // 9: the OpenShell interceptor's record per sandbox name (the base of mergeOperations), so it survives
    // a restart (InterceptorRecordStore).
    R"sql(
CREATE TABLE interceptor_records (
  sandbox    TEXT PRIMARY KEY,                        -- the OpenShell sandbox's name
  record     BLOB NOT NULL,                           -- serialized openshell.policy.interceptor.v1.InterceptorRecord
  updated_at INTEGER NOT NULL                         -- unix ms
) WITHOUT ROWID;
)sql",
    // 10: the provider-profile catalogue the interceptor serves (ProviderProfileStore), one row per id.
    R"sql(
CREATE TABLE provider_profiles (
  id         TEXT PRIMARY KEY,                        -- the profile's id
  profile    BLOB NOT NULL,                           -- serialized openshell.v1.ProviderProfile (signature annotations included)
  updated_at INTEGER NOT NULL                         -- unix ms
) WITHOUT ROWID;
)sql",
    // 11: the catalogue's generation, stepped with every profile change (ProviderProfileGeneration): the
    // interceptor keeps the verified catalogue and reads this one row to know whether it is still current.
    R"sql(
CREATE TABLE provider_profile_generation (
  id         INTEGER PRIMARY KEY CHECK (id = 1),
  generation INTEGER NOT NULL
);
INSERT INTO provider_profile_generation VALUES (1, 0);
)sql",
};
static_assert(std::size(kMigrations) == SqliteStore::kSchemaVersion, "one migration per schema version");


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

constexpr char kRevisionColumnsWithoutBody[] =
    "SELECT r.seq, r.scope, r.revision, r.digest, r.created_at, NULL FROM policy_revisions r ";
constexpr char kRevisionColumns[] =
    "SELECT r.seq, r.scope, r.revision, r.digest, r.created_at, b.body FROM policy_revisions r "
    "LEFT JOIN bodies b ON b.digest = r.digest ";

}  // namespace

absl::StatusOr<std::unique_ptr<SqliteStore>> SqliteStore::Open(const std::string& path, const Clock* clock) {
  StoreOptions options;
  options.clock = clock;
  return Open(path, options);
}

absl::StatusOr<std::unique_ptr<SqliteStore>> SqliteStore::Open(const std::string& path, const StoreOptions& options) {
  std::optional<common::StateLock> state_lock;
  if (options.exclusive) {
    // Whoever can write the database's folder can replace the database (and with it, bring back deleted
    // sandboxes): only root and this user may. Then, before anything touches the database, the lock: a
    // second gateway on it would corrupt the first's chain and release its in-flight handles.
    if (options.role == StoreRole::kGateway) {
      const std::string folder = std::filesystem::absolute(path).parent_path().string();
      OSH_RETURN_IF_ERROR(trust::EnsurePrivateDir(folder));
      OSH_RETURN_IF_ERROR(trust::CheckNoOneElseCanWrite(folder, "database folder"));
    }
    auto lock = common::StateLock::Acquire(path);
    if (!lock.ok()) return lock.status();
    state_lock.emplace(*std::move(lock));
  }
  auto store = OpenUnguarded(path, options);
  if (!store.ok()) return store.status();
  (*store)->commit_observer_ = options.commit_observer;
  auto anchor = AnchorOpenedStore(store->get(), options);
  if (!anchor.ok()) return anchor.status();
  (*store)->anchor_ = *std::move(anchor);
  (*store)->state_lock_ = std::move(state_lock);
  return store;
}

SqliteStore::~SqliteStore() {
  queue_.Stop();    // writes still queued commit first, under the state lock
  anchor_.reset();  // its last record reads the chain head
  {
    absl::MutexLock lock(&checkpoint_mu_);
    stop_checkpoints_ = true;
  }
  if (checkpointer_.joinable()) checkpointer_.join();
}

namespace {
constexpr absl::Duration kCheckpointInterval = absl::Milliseconds(200);
constexpr absl::Duration kIdleCheckpoint = absl::Seconds(2);
constexpr int kCheckpointFrames = 1000;
constexpr int64_t kWalSizeLimitBytes = int64_t{64} << 20;
constexpr int kCopiesBeside = 4;      // copies beside the commits, at most, before one holding the writer off
constexpr int kHeldCopyFrames = 256;  // frames the commits may have added since the last of them
}  // namespace

SqliteStore::Copied SqliteStore::CheckpointOnce() {
  auto stmt = checkpoint_db_->Prepare("PRAGMA wal_checkpoint(PASSIVE)");
  if (!stmt.ok()) return {};
  auto row = stmt->Step();  // busy, frames in the log, frames copied
  if (!row.ok() || !*row) return {};
  const int frames = static_cast<int>(stmt->Int(1));
  return {stmt->Int(0) == 0 && frames == stmt->Int(2), frames};
}

void SqliteStore::CheckpointLoop() {
  int copied_at = 0;  // the log's frames when it was last copied: nothing new while it still reads so
  absl::Time last = absl::Now();
  for (;;) {
    {
      absl::MutexLock lock(&checkpoint_mu_);
      auto stop = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(checkpoint_mu_) { return stop_checkpoints_; };
      if (checkpoint_mu_.AwaitWithTimeout(absl::Condition(&stop), kCheckpointInterval)) return;
    }
    const int frames = wal_frames_.load(std::memory_order_relaxed);
    if (frames == copied_at) continue;
    const absl::Time now = absl::Now();
    if (frames < kCheckpointFrames && now - last < kIdleCheckpoint) continue;
    // PASSIVE: copies what no reader still needs, waits for nobody; what it could not copy (a reader still
    // on it) is tried again at the next tick, written to meanwhile or not. The bulk beside the commits,
    // then again what they added meanwhile (less each time), then the rest with the writer held off
    // between two groups. Under steady writes a group always commits during a copy made beside them (or
    // is in flight, its frames not yet in the log's header), so only the last leaves the log copied whole
    // when the next group begins — and only then does SQLite start the log over (its next frames written
    // from the top, over the old ones). Without it the log never restarted under load: it grew without end
    // (36 MB/s under 4 admitting clients), and each commit's flush also wrote the grown file's size and new
    // blocks' map. The writer is held off only once a copy beside the commits was whole and they added at
    // most kHeldCopyFrames during it, so it waits for a few frames and one flush of the database file, not
    // for the bulk (review 120: a huge log, or a reader that held the copies back and just ended); else the
    // next tick tries again.
    bool whole = false;
    Copied before = CheckpointOnce();
    for (int pass = 0; pass < kCopiesBeside && before.frames >= 0; ++pass) {
      const Copied after = CheckpointOnce();
      if (after.frames < 0) break;
      if (after.frames < before.frames) {  // the log started over meanwhile: copied whole before a group began
        whole = true;
        break;
      }
      if (after.whole && after.frames - before.frames <= kHeldCopyFrames) {
        absl::MutexLock writer(&mu_);
        whole = CheckpointOnce().whole;
        break;
      }
      before = after;
    }
    copied_at = whole ? frames : -1;
    last = now;
  }
}

absl::StatusOr<std::unique_ptr<SqliteStore>> SqliteStore::OpenUnguarded(const std::string& path,
                                                                        const StoreOptions& options) {
  auto db = Db::Open(path);
  if (!db.ok()) return db.status();
  std::unique_ptr<SqliteStore> store(new SqliteStore(*std::move(db), options.clock));
  absl::MutexLock lock(&store->mu_);
  OSH_RETURN_IF_ERROR(store->db_.Exec("PRAGMA journal_mode=WAL"));
  OSH_RETURN_IF_ERROR(store->db_.Exec("PRAGMA synchronous=FULL"));
  // A log that grew (a long read held its restart off, or an older gateway's) is cut back to this size
  // when it starts over; below it, the file is reused as it is (no flush pays for growing it).
  OSH_RETURN_IF_ERROR(store->db_.Exec(absl::StrCat("PRAGMA journal_size_limit=", kWalSizeLimitBytes)));
  OSH_RETURN_IF_ERROR(store->db_.Exec("PRAGMA foreign_keys=ON"));
  OSH_RETURN_IF_ERROR(store->Migrate());
  OSH_RETURN_IF_ERROR(store->LoadChainHead());
  // No admission is in flight in a store just opened: handles noted by one that crashed are now due.
  OSH_RETURN_IF_ERROR(store->db_.Exec("UPDATE pending_releases SET in_flight = 0 WHERE in_flight = 1"));
  // Reads go through a second connection: in WAL mode it reads the last committed state and never waits
  // for a write transaction in progress (a scope's whole re-projection, say).
  auto reader = Db::Open(path);
  if (!reader.ok()) return reader.status();
  absl::MutexLock read_lock(&store->read_mu_);
  store->read_db_.emplace(*std::move(reader));
  OSH_RETURN_IF_ERROR(store->read_db_->Exec("PRAGMA foreign_keys=ON"));
  auto checkpointer = Db::Open(path);
  if (!checkpointer.ok()) return checkpointer.status();
  store->checkpoint_db_.emplace(*std::move(checkpointer));
  OSH_RETURN_IF_ERROR(store->db_.Exec("PRAGMA wal_autocheckpoint=0"));
  store->db_.CountWalFrames(&store->wal_frames_);  // after the pragma, which would remove the hook
  store->checkpointer_ = std::thread([raw = store.get()] { raw->CheckpointLoop(); });
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
    if (v + 1 == kEnvelopesVersion) OSH_RETURN_IF_ERROR(MigrateEnvelopes());
    OSH_RETURN_IF_ERROR(db_.Exec(absl::StrCat("PRAGMA user_version = ", v + 1)));
    OSH_RETURN_IF_ERROR(txn.Commit());
  }
  return absl::OkStatus();
}

absl::Status SqliteStore::CreateSchemaAt(Db& db, int version) {
  if (version < 0 || version >= kEnvelopesVersion) {  // v4 on needs the store's own code (MigrateEnvelopes)
    return absl::InvalidArgumentError(absl::StrCat("CreateSchemaAt: versions 0 to ", kEnvelopesVersion - 1));
  }
  for (int v = 0; v < version; ++v) OSH_RETURN_IF_ERROR(db.Exec(kMigrations[v]));
  return db.Exec(absl::StrCat("PRAGMA user_version = ", version));
}

absl::Status SqliteStore::MigrateEnvelopes() {
  auto rows = db_.Prepare("SELECT sandbox_id, envelope FROM sandboxes");
  if (!rows.ok()) return rows.status();
  std::vector<std::pair<std::string, std::string>> moved;
  for (;;) {
    auto row = rows->Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    moved.emplace_back(rows->Text(0), rows->Blob(1));
  }
  for (const auto& [sandbox_id, header] : moved) {
    const std::string id = policy::Sha256(header);
    Projection decoded;
    if (!decoded.ParseFromString(header)) return SqliteStorageError(absl::StatusCode::kDataLoss, "a sandbox envelope does not decode");
    auto put = db_.Prepare("INSERT OR IGNORE INTO envelopes (id, header, policy_digest) VALUES (?, ?, ?)");
    if (!put.ok()) return put.status();
    put->BindBlob(1, id).BindBlob(2, header).Bind(3, decoded.policy_digest());
    OSH_RETURN_IF_ERROR(put->Run());
    auto link = db_.Prepare("UPDATE sandboxes SET envelope_id = ? WHERE sandbox_id = ?");
    if (!link.ok()) return link.status();
    link->BindBlob(1, id).Bind(2, sandbox_id);
    OSH_RETURN_IF_ERROR(link->Run());
  }
  OSH_RETURN_IF_ERROR(db_.Exec("ALTER TABLE sandboxes DROP COLUMN envelope"));
  return db_.Exec("CREATE INDEX sandboxes_by_envelope ON sandboxes(envelope_id)");
}

absl::Status SqliteStore::LoadChainHead() {
  auto stmt = db_.Prepare("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1");
  if (!stmt.ok()) return stmt.status();
  auto row = stmt->Step();
  if (!row.ok()) return row.status();
  if (*row) chain_.Reset({static_cast<uint64_t>(stmt->Int(0)), stmt->Text(1)});
  return absl::OkStatus();
}

void SqliteStore::SetChangeListener(ChangeListener* listener) { listener_ = listener; }

StoreStats SqliteStore::Stats() {
  absl::MutexLock lock(&mu_);
  StoreStats stats = counters_;
  stats.audit_head_seq = chain_.head().seq;
  return stats;
}

// --- Group commit -------------------------------------------------------------------------------

absl::Status SqliteStore::Write(std::function<absl::Status()> run, std::function<void()> committed) {
  GroupWrite self;
  self.run = std::move(run);
  self.committed = std::move(committed);
  self.actor = AuditActorScope::Current();
  queue_.Submit(&self, [this](const std::vector<GroupWrite*>& group) { LeadGroup(group); });
  return self.status;
}

void SqliteStore::WriteAsync(std::function<absl::Status()> run, std::function<void()> committed,
                             std::function<void(absl::Status)> done) {
  auto write = std::make_unique<GroupWrite>();
  write->run = std::move(run);
  write->committed = std::move(committed);
  write->actor = AuditActorScope::Current();
  write->on_done = std::move(done);
  queue_.SubmitAsync(std::move(write), [this](const std::vector<GroupWrite*>& group) { LeadGroup(group); });
}

void SqliteStore::LeadGroup(const std::vector<GroupWrite*>& group) {
  absl::MutexLock lock(&mu_);
  const trust::ChainSealer::Mark start = chain_.head();
  Transaction txn(db_);
  if (!txn.begin_status().ok()) {
    for (GroupWrite* w : group) w->status = txn.begin_status();
    return;
  }
  const size_t succeeded = RunInSavepoints(
      group,
      [this](const char* sql) ABSL_NO_THREAD_SAFETY_ANALYSIS {
        for (absl::string_view statement : absl::StrSplit(sql, "; ")) OSH_RETURN_IF_ERROR(db_.Run(std::string(statement)));
        return absl::OkStatus();
      },
      chain_);
  if (succeeded == 0) {
    chain_.Rewind(start);
    return;  // the Transaction rolls back
  }
  const absl::Time commit_started = absl::Now();
  absl::Status committed = txn.Commit();
  if (commit_observer_) commit_observer_(absl::Now() - commit_started);
  if (!committed.ok()) {
    chain_.Rewind(start);
    for (GroupWrite* w : group) {
      if (w->status.ok()) w->status = committed;
    }
    return;
  }
  ++counters_.transactions;
  counters_.writes += succeeded;
  // Durable now: the followers' "after commit" work, in commit order, before anyone returns.
  for (GroupWrite* w : group) {
    if (w->status.ok() && w->committed) w->committed();
  }
}

// --- Changes --------------------------------------------------------------------------------

// One batch's statements and its after-commit step, shared by Commit and CommitAsync.
struct SqliteStore::PendingCommit {
  ChangeBatch batch;
  CommitResult result;
};

std::pair<std::function<absl::Status()>, std::function<void()>> SqliteStore::CommitSteps(PendingCommit* pending) {
  auto run = [this, pending]() ABSL_NO_THREAD_SAFETY_ANALYSIS -> absl::Status {  // by the leader, under mu_
    ChangeBatch& batch = pending->batch;
    CommitResult& result = pending->result;
    result.rows.assign(batch.changes.size(), 0);
    if (batch.checked_ceiling) OSH_RETURN_IF_ERROR(CheckCeilingUnchanged(*batch.checked_ceiling));
    if (batch.checked_revisions) OSH_RETURN_IF_ERROR(CheckRevisionsKnown(*batch.checked_revisions));
    auto writes_events = WritesEvents(batch, [this](const change::RecordReport& r) ABSL_NO_THREAD_SAFETY_ANALYSIS {
      return SameReportRecorded(r);
    });
    if (!writes_events.ok()) return writes_events.status();
    result.events_written = *writes_events;
    passed_by_.clear();
    for (size_t i = 0; i < batch.changes.size(); ++i) {
      OSH_RETURN_IF_ERROR(ApplyChange(batch.changes[i], &result.rows[i]));
    }
    if (result.events_written) {
      OSH_RETURN_IF_ERROR(InsertEvents(batch, passed_by_, [this](AuditEvent* event) ABSL_NO_THREAD_SAFETY_ANALYSIS {
        return InsertAudit(event);
      }));
    }
    result.passed_by.assign(passed_by_.begin(), passed_by_.end());
    return absl::OkStatus();
  };
  auto committed = [this, pending] {
    if (listener_ != nullptr) listener_->OnCommitted(pending->batch, pending->result);
  };
  return {std::move(run), std::move(committed)};
}

absl::StatusOr<CommitResult> SqliteStore::Commit(ChangeBatch batch) {
  PendingCommit pending{std::move(batch), {}};
  auto [run, committed] = CommitSteps(&pending);
  OSH_RETURN_IF_ERROR(Write(std::move(run), std::move(committed)));
  return std::move(pending.result);
}

void SqliteStore::CommitAsync(ChangeBatch batch, CommitDone done) {
  auto pending = std::make_shared<PendingCommit>(PendingCommit{std::move(batch), {}});
  auto [run, committed] = CommitSteps(pending.get());
  WriteAsync(std::move(run), std::move(committed), [pending, done = std::move(done)](absl::Status status) {
    if (!status.ok()) {
      done(std::move(status));
    } else {
      done(std::move(pending->result));
    }
  });
}

absl::Status SqliteStore::ApplyChange(const Change& change, int64_t* rows) {
  return std::visit(
      [&](const auto& c) ABSL_NO_THREAD_SAFETY_ANALYSIS -> absl::Status {
        using T = std::decay_t<decltype(c)>;
        if constexpr (std::is_same_v<T, change::AdmitSandbox>) {
          return Admit(c, rows);
        } else if constexpr (std::is_same_v<T, change::ReplaceProjection>) {
          return Replace(c, rows);
        } else if constexpr (std::is_same_v<T, change::DeleteSandbox>) {
          return Delete(c, rows);
        } else if constexpr (std::is_same_v<T, change::SetRefreshError>) {
          auto stmt = db_.Prepare("UPDATE sandboxes SET last_refresh_error = ? WHERE sandbox_id = ?");
          if (!stmt.ok()) return stmt.status();
          stmt->Bind(1, c.error).Bind(2, c.sandbox_id);
          OSH_RETURN_IF_ERROR(stmt->Run());
          *rows = db_.Changes();
          return absl::OkStatus();
        } else {
          static_assert(std::is_same_v<T, change::RecordReport>);
          auto stmt = db_.Prepare(
              "UPDATE sandboxes SET load_status = ?, load_error = ?, reported_digest = ?, reported_at = ? "
              "WHERE sandbox_id = ?");
          if (!stmt.ok()) return stmt.status();
          stmt->Bind(1, static_cast<int64_t>(c.status)).Bind(2, c.error).Bind(3, c.digest).Bind(4, c.now_unix)
              .Bind(5, c.sandbox_id);
          OSH_RETURN_IF_ERROR(stmt->Run());
          *rows = db_.Changes();
          if (*rows == 0) return absl::NotFoundError(absl::StrCat("no sandbox '", c.sandbox_id, "'"));
          return absl::OkStatus();
        }
      },
      change);
}

absl::Status SqliteStore::InsertAudit(AuditEvent* event) {
  if (event->actor.empty()) event->actor = AuditActorScope::Current();
  chain_.Seal(event, NowMs());
  auto stmt = db_.Prepare(
      "INSERT INTO audit_events (seq, time_unix_ms, type, sandbox_id, surface_id, policy_digest, policy_version, "
      "key_ids, outcome, reason, audit_context, prev_hash, hash, actor) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)");
  if (!stmt.ok()) return stmt.status();
  stmt->Bind(1, static_cast<int64_t>(event->seq)).Bind(2, event->time_unix_ms).Bind(3, event->type.name())
      .Bind(4, event->sandbox_id).Bind(5, event->surface_id).Bind(6, event->policy_digest)
      .Bind(7, static_cast<int64_t>(event->policy_version)).Bind(8, JoinIds(event->key_ids))
      .Bind(9, event->outcome.name()).Bind(10, event->reason).BindBlob(11, EncodeContextMap(event->audit_context))
      .Bind(12, event->prev_hash).Bind(13, event->hash).Bind(14, event->actor);
  return stmt->Run();
}

absl::Status SqliteStore::PutBody(const std::string& digest, const std::string& body) {
  // Most bodies are stored already (every sandbox admitted on a policy shares its body): asked first, so the
  // body (up to megabytes) is not copied into a bound parameter and a row built of it only to be ignored —
  // `bodies` keeps its rows in the key's B-tree (WITHOUT ROWID). One writer: nothing lands in between.
  auto stored = db_.Prepare("SELECT 1 FROM bodies WHERE digest = ?");
  if (!stored.ok()) return stored.status();
  stored->Bind(1, digest);
  auto found = stored->Step();
  if (!found.ok()) return found.status();
  if (*found) return absl::OkStatus();
  auto stmt = db_.Prepare("INSERT OR IGNORE INTO bodies (digest, body) VALUES (?, ?)");
  if (!stmt.ok()) return stmt.status();
  stmt->Bind(1, digest).BindBlob(2, body);
  return stmt->Run();
}

absl::Status SqliteStore::PutEnvelope(const Envelope& envelope, std::string* id, std::string* digest_out) {
  const std::string digest = envelope.policy_digest();
  *digest_out = digest;
  OSH_RETURN_IF_ERROR(PutBody(digest, envelope.body()));
  const std::string& header = envelope.header_bytes();
  *id = policy::Sha256(header);
  auto stmt = db_.Prepare("INSERT OR IGNORE INTO envelopes (id, header, policy_digest) VALUES (?, ?, ?)");
  if (!stmt.ok()) return stmt.status();
  stmt->BindBlob(1, *id).BindBlob(2, header).Bind(3, digest);
  return stmt->Run();
}

absl::Status SqliteStore::DropEnvelopeIfUnused(const std::string& id) {
  auto digest = db_.Prepare("SELECT policy_digest FROM envelopes WHERE id = ?1 AND NOT EXISTS "
                            "(SELECT 1 FROM sandboxes WHERE envelope_id = ?1)");
  if (!digest.ok()) return digest.status();
  digest->BindBlob(1, id);
  auto row = digest->Step();
  if (!row.ok()) return row.status();
  if (!*row) return absl::OkStatus();
  const std::string body_digest = digest->Text(0);
  auto drop = db_.Prepare("DELETE FROM envelopes WHERE id = ?");
  if (!drop.ok()) return drop.status();
  drop->BindBlob(1, id);
  OSH_RETURN_IF_ERROR(drop->Run());
  return DropBodyIfUnused(body_digest);
}

absl::Status SqliteStore::DropBodyIfUnused(const std::string& digest) {
  auto stmt = db_.Prepare(
      "DELETE FROM bodies WHERE digest = ?1 AND NOT EXISTS (SELECT 1 FROM envelopes WHERE policy_digest = ?1) "
      "AND NOT EXISTS (SELECT 1 FROM policy_revisions WHERE digest = ?1)");
  if (!stmt.ok()) return stmt.status();
  stmt->Bind(1, digest);
  return stmt->Run();
}

absl::Status SqliteStore::Admit(const change::AdmitSandbox& c, int64_t* rows) {
  const SandboxRecord& r = c.record;
  std::string envelope_id, digest;
  OSH_RETURN_IF_ERROR(PutEnvelope(*r.envelope, &envelope_id, &digest));
  auto stmt = db_.Prepare(
      "INSERT INTO sandboxes (sandbox_id, context, handle_sha256, driver_handle, envelope_id, policy_digest, "
      "verification, signing_key_ids, admitted_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)");
  if (!stmt.ok()) return stmt.status();
  stmt->Bind(1, r.context.sandbox_id()).BindBlob(2, policy::SerializeDeterministic(r.context))
      .BindBlob(3, r.handle_sha256).Bind(4, r.driver_handle).BindBlob(5, envelope_id)
      .Bind(6, digest).Bind(7, std::string(NameOf(r.verification))).Bind(8, JoinIds(r.signing_key_ids))
      .Bind(9, r.admitted_at_unix).Bind(10, r.updated_at_unix);
  if (absl::Status s = stmt->Run(); !s.ok()) {
    if (absl::IsAlreadyExists(s)) {
      return absl::AlreadyExistsError(absl::StrCat("sandbox '", r.context.sandbox_id(), "' is already admitted"));
    }
    return s;
  }
  if (r.acquisition_id != 0) {
    auto settle = db_.Prepare("DELETE FROM pending_releases WHERE id = ?");  // in flight or not: admitted
    if (!settle.ok()) return settle.status();
    settle->Bind(1, r.acquisition_id);
    OSH_RETURN_IF_ERROR(settle->Run());
  }
  *rows = 1;
  return absl::OkStatus();
}

absl::Status SqliteStore::Replace(const change::ReplaceProjection& c, int64_t* rows) {
  auto ids = JsonIdList(c.sandbox_ids);
  if (!ids.ok()) return ids.status();
  if (!c.handle_sha256s.empty()) {
    // Only those still admitted under the handle the caller listed (change.h).
    auto handles = db_.Prepare(
        "SELECT sandbox_id, handle_sha256 FROM sandboxes WHERE sandbox_id IN (SELECT value FROM json_each(?))");
    if (!handles.ok()) return handles.status();
    handles->Bind(1, *ids);
    std::map<std::string, std::string> stored;
    for (;;) {
      auto row = handles->Step();
      if (!row.ok()) return row.status();
      if (!*row) break;
      stored[handles->Text(0)] = handles->Blob(1);
    }
    const std::vector<std::string> moving = change::StillAdmitted(c, stored, &passed_by_);
    ids = JsonIdList(moving);
    if (!ids.ok()) return ids.status();
  }
  // The envelopes being left, to collect once nobody uses them.
  auto old = db_.Prepare(
      "SELECT DISTINCT envelope_id FROM sandboxes WHERE sandbox_id IN (SELECT value FROM json_each(?))");
  if (!old.ok()) return old.status();
  old->Bind(1, *ids);
  std::vector<std::string> old_ids;
  for (;;) {
    auto row = old->Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    old_ids.push_back(old->Blob(0));
  }
  if (c.replacing) {
    const std::string was = policy::Sha256(c.replacing->header_bytes());
    for (const auto& stored : old_ids) {
      if (stored != was) return ProjectionChangedError(c.sandbox_ids.size() == 1 ? c.sandbox_ids[0] : "(several)");
    }
  }
  std::string envelope_id, digest;
  OSH_RETURN_IF_ERROR(PutEnvelope(*c.envelope, &envelope_id, &digest));
  auto stmt = db_.Prepare(
      "UPDATE sandboxes SET envelope_id = ?, policy_digest = ?, verification = ?, signing_key_ids = ?, "
      "updated_at = ?, last_refresh_error = '' WHERE sandbox_id IN (SELECT value FROM json_each(?))");
  if (!stmt.ok()) return stmt.status();
  stmt->BindBlob(1, envelope_id).Bind(2, digest).Bind(3, std::string(NameOf(c.verification)))
      .Bind(4, JoinIds(c.key_ids)).Bind(5, c.now_unix).Bind(6, *ids);
  OSH_RETURN_IF_ERROR(stmt->Run());
  *rows = db_.Changes();
  if (c.require_all && *rows != static_cast<int64_t>(c.sandbox_ids.size())) {
    return absl::NotFoundError(c.sandbox_ids.size() == 1 ? absl::StrCat("no sandbox '", c.sandbox_ids[0], "'")
                                                         : "some of the sandboxes are gone");
  }
  for (const auto& id : old_ids) {
    if (id != envelope_id) OSH_RETURN_IF_ERROR(DropEnvelopeIfUnused(id));
  }
  return absl::OkStatus();
}

absl::Status SqliteStore::Delete(const change::DeleteSandbox& c, int64_t* rows) {
  auto find = db_.Prepare("SELECT driver_handle, envelope_id FROM sandboxes WHERE sandbox_id = ?");
  if (!find.ok()) return find.status();
  find->Bind(1, c.sandbox_id);
  auto row = find->Step();
  if (!row.ok()) return row.status();
  if (!*row) return absl::NotFoundError(absl::StrCat("no sandbox '", c.sandbox_id, "'"));
  const std::string driver_handle = find->Text(0);
  const std::string envelope_id = find->Blob(1);
  auto del = db_.Prepare("DELETE FROM sandboxes WHERE sandbox_id = ?");
  if (!del.ok()) return del.status();
  del->Bind(1, c.sandbox_id);
  OSH_RETURN_IF_ERROR(del->Run());
  OSH_RETURN_IF_ERROR(DropEnvelopeIfUnused(envelope_id));
  auto queue = db_.Prepare("INSERT INTO pending_releases (driver_handle, queued_at) VALUES (?, ?)");
  if (!queue.ok()) return queue.status();
  queue->Bind(1, driver_handle).Bind(2, NowMs() / 1000);
  OSH_RETURN_IF_ERROR(queue->Run());
  *rows = 1;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<SandboxRecord>> SqliteStore::LoadSandboxes() {
  absl::MutexLock lock(&mu_);
  // Bodies, then envelopes, each once; sandboxes then share them.
  absl::flat_hash_map<std::string, BodyPtr> bodies;
  {
    auto stmt = db_.Prepare("SELECT digest, body FROM bodies WHERE digest IN (SELECT policy_digest FROM envelopes)");
    if (!stmt.ok()) return stmt.status();
    for (;;) {
      auto row = stmt->Step();
      if (!row.ok()) return row.status();
      if (!*row) break;
      std::string digest = stmt->Text(0);
      bodies[digest] = envelopes().InternBody(digest, stmt->Blob(1));
    }
  }
  // Envelopes on the read connection, in a second thread, while this one reads the sandbox rows.
  absl::flat_hash_map<std::string, EnvelopePtr> by_id;
  absl::Status envelopes_read;
  std::thread envelope_reader([&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    absl::MutexLock read_lock(&read_mu_);
    envelopes_read = [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS -> absl::Status {
      auto stmt = read_db_->Prepare("SELECT id, header, policy_digest FROM envelopes");
      if (!stmt.ok()) return stmt.status();
      for (;;) {
        auto row = stmt->Step();
        if (!row.ok()) return row.status();
        if (!*row) return absl::OkStatus();
        auto body = bodies.find(stmt->Text(2));
        if (body == bodies.end()) return SqliteStorageError(absl::StatusCode::kDataLoss, "an envelope's body is missing");
        auto envelope = envelopes().Intern(stmt->Blob(1), body->second);
        if (!envelope.ok()) return SqliteStorageError(absl::StatusCode::kDataLoss, envelope.status().message());
        by_id.emplace(stmt->Blob(0), *std::move(envelope));
      }
    }();
  });
  std::vector<SandboxRecord> out;
  std::vector<std::string> envelope_ids;
  absl::Status sandboxes_read = [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS -> absl::Status {
    auto stmt = db_.Prepare(
        "SELECT context, handle_sha256, driver_handle, envelope_id, verification, signing_key_ids, admitted_at, "
        "updated_at, load_status, load_error, reported_digest, reported_at, last_refresh_error FROM sandboxes");
    if (!stmt.ok()) return stmt.status();
    for (;;) {
      auto row = stmt->Step();
      if (!row.ok()) return row.status();
      if (!*row) return absl::OkStatus();
      SandboxRecord r;
      r.context_bytes = stmt->Blob(0);
      if (!r.context.ParseFromString(r.context_bytes)) return SqliteStorageError(absl::StatusCode::kDataLoss, "a sandbox row does not decode");
      r.handle_sha256 = stmt->Blob(1);
      r.driver_handle = stmt->Text(2);
      envelope_ids.push_back(stmt->Blob(3));
      r.verification = VerificationFromStored(stmt->Text(4));
      r.signing_key_ids = SplitIds(stmt->Text(5));
      r.admitted_at_unix = stmt->Int(6);
      r.updated_at_unix = stmt->Int(7);
      r.load_status = static_cast<LoadStatus>(stmt->Int(8));
      r.load_error = stmt->Text(9);
      r.reported_digest = stmt->Text(10);
      r.reported_at_unix = stmt->Int(11);
      r.last_refresh_error = stmt->Text(12);
      out.push_back(std::move(r));
    }
  }();
  envelope_reader.join();
  OSH_RETURN_IF_ERROR(sandboxes_read);
  OSH_RETURN_IF_ERROR(envelopes_read);
  for (size_t i = 0; i < out.size(); ++i) {
    auto envelope = by_id.find(envelope_ids[i]);
    if (envelope == by_id.end()) return SqliteStorageError(absl::StatusCode::kDataLoss, "a sandbox's envelope is missing");
    out[i].envelope = envelope->second;
  }
  return out;
}

std::function<absl::Status()> SqliteStore::NoteStep(const RuntimeContext& context, const std::string& idempotency_key,
                                                    int64_t* id) {
  return [this, id, context_bytes = policy::SerializeDeterministic(context),
          idempotency_key]() ABSL_NO_THREAD_SAFETY_ANALYSIS -> absl::Status {
    auto stmt = db_.Prepare(
        "INSERT INTO pending_releases (driver_handle, queued_at, in_flight, context, idempotency_key) "
        "VALUES ('', ?, 1, ?, ?)");
    if (!stmt.ok()) return stmt.status();
    stmt->Bind(1, NowMs() / 1000).BindBlob(2, context_bytes).Bind(3, idempotency_key);
    OSH_RETURN_IF_ERROR(stmt->Run());
    *id = db_.LastInsertRowId();
    return absl::OkStatus();
  };
}

absl::StatusOr<int64_t> SqliteStore::RecordAdmissionIntent(const RuntimeContext& context,
                                                         const std::string& idempotency_key) {
  int64_t id = 0;
  OSH_RETURN_IF_ERROR(Write(NoteStep(context, idempotency_key, &id)));
  return id;
}

void SqliteStore::RecordAdmissionIntentAsync(const RuntimeContext& context, const std::string& idempotency_key,
                                             std::function<void(absl::StatusOr<int64_t>)> done) {
  auto id = std::make_shared<int64_t>(0);
  WriteAsync(NoteStep(context, idempotency_key, id.get()), nullptr,
             [id, done = std::move(done)](absl::Status status) {
               if (!status.ok()) {
                 done(std::move(status));
               } else {
                 done(*id);
               }
             });
}

absl::Status SqliteStore::QueueAcquiredRelease(int64_t id, const std::string& driver_handle) {
  return Write([&]() ABSL_NO_THREAD_SAFETY_ANALYSIS -> absl::Status {
    auto stmt = db_.Prepare("UPDATE pending_releases SET in_flight = 0, driver_handle = ? WHERE id = ?");
    if (!stmt.ok()) return stmt.status();
    stmt->Bind(1, driver_handle).Bind(2, id);
    return stmt->Run();
  });
}

absl::Status SqliteStore::DropAdmissionIntent(int64_t id) {
  return Write([&]() ABSL_NO_THREAD_SAFETY_ANALYSIS -> absl::Status {
    auto stmt = db_.Prepare("DELETE FROM pending_releases WHERE id = ? AND in_flight = 1");
    if (!stmt.ok()) return stmt.status();
    stmt->Bind(1, id);
    return stmt->Run();
  });
}

absl::StatusOr<std::vector<PendingRelease>> SqliteStore::PendingReleases() {
  absl::MutexLock lock(&read_mu_);
  auto stmt = read_db_->Prepare("SELECT id, driver_handle, context, idempotency_key FROM pending_releases WHERE in_flight = 0 ORDER BY id");
  if (!stmt.ok()) return stmt.status();
  std::vector<PendingRelease> out;
  for (;;) {
    auto row = stmt->Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    PendingRelease release{stmt->Int(0), stmt->Text(1), {}, stmt->Text(3)};
    if (!release.context.ParseFromString(stmt->Blob(2))) return SqliteStorageError(absl::StatusCode::kDataLoss, "a pending release does not decode");
    out.push_back(std::move(release));
  }
  return out;
}

absl::Status SqliteStore::CompleteRelease(int64_t id, AuditEvent event) {
  return Write([&]() ABSL_NO_THREAD_SAFETY_ANALYSIS -> absl::Status {
    auto stmt = db_.Prepare("DELETE FROM pending_releases WHERE id = ?");
    if (!stmt.ok()) return stmt.status();
    stmt->Bind(1, id);
    OSH_RETURN_IF_ERROR(stmt->Run());
    if (db_.Changes() == 0) return absl::OkStatus();  // already completed: nothing to record twice
    return InsertAudit(&event);
  });
}

absl::StatusOr<std::optional<PolicyRevisionRecord>> SqliteStore::LatestIn(Db& db, const std::string& scope) {
  auto stmt = db.Prepare(absl::StrCat(kRevisionColumns, "WHERE r.scope = ? ORDER BY r.revision DESC LIMIT 1"));
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
  PolicyRevisionRecord record;
  OSH_RETURN_IF_ERROR(Write([&]() ABSL_NO_THREAD_SAFETY_ANALYSIS -> absl::Status {
  auto latest = LatestIn(db_, scope);
  if (!latest.ok()) return latest.status();
  const uint64_t current = *latest ? (*latest)->revision : 0;
  const uint64_t live = (*latest && !(*latest)->deleted()) ? current : 0;
  if (expected_revision && *expected_revision != live) {
    return absl::AbortedError(absl::StrCat("scope '", scope, "' is at revision ", live, ", expected ", *expected_revision));
  }
  if (!body && live == 0) return absl::NotFoundError(absl::StrCat("scope '", scope, "' has no policy"));
  const std::string digest = body ? policy::Sha256Hex(*body) : std::string();
  AuditEvent attempt = event;  // this run's (a group's write may run again; the caller's event stays as given)
  if (auto unchanged = UnchangedRevision(*latest, digest, &attempt)) {
    record = *std::move(unchanged);
    return InsertAudit(&attempt);
  }
  record = PolicyRevisionRecord();
  record.scope = scope;
  record.revision = current + 1;
  record.created_at_unix = now_unix;
  if (body) {
    record.body = *body;
    record.digest = digest;
    OSH_RETURN_IF_ERROR(PutBody(record.digest, record.body));
  }
  auto stmt = db_.Prepare("INSERT INTO policy_revisions (scope, revision, digest, created_at) VALUES (?, ?, ?, ?)");
  if (!stmt.ok()) return stmt.status();
  stmt->Bind(1, scope).Bind(2, static_cast<int64_t>(record.revision)).Bind(3, record.digest).Bind(4, now_unix);
  OSH_RETURN_IF_ERROR(stmt->Run());
  record.seq = static_cast<uint64_t>(db_.LastInsertRowId());
  attempt.policy_digest = record.digest;
  attempt.policy_version = record.seq;
  return InsertAudit(&attempt);
  }, [&] {
    if (!record.unchanged) revision_listeners().ForEach([&](RevisionListener& l) { l.OnPolicyRevision(record, /*remote=*/false); });
  }));
  return record;
}

absl::StatusOr<std::optional<PolicyRevisionRecord>> SqliteStore::LatestPolicyRevision(const std::string& scope) {
  absl::MutexLock lock(&read_mu_);
  return LatestIn(*read_db_, scope);
}

absl::StatusOr<PolicyRevisionRecord> SqliteStore::GetPolicyRevision(const std::string& scope, uint64_t revision) {
  absl::MutexLock lock(&read_mu_);
  auto stmt = read_db_->Prepare(absl::StrCat(kRevisionColumns, "WHERE r.scope = ? AND r.revision = ?"));
  if (!stmt.ok()) return stmt.status();
  stmt->Bind(1, scope).Bind(2, static_cast<int64_t>(revision));
  auto row = stmt->Step();
  if (!row.ok()) return row.status();
  if (!*row) return absl::NotFoundError(absl::StrCat("scope '", scope, "' has no revision ", revision));
  return RevisionFrom(*stmt);
}

namespace {

// Every row a revisions query steps to, in its order.
absl::StatusOr<std::vector<PolicyRevisionRecord>> RevisionsOf(Stmt* stmt) {
  std::vector<PolicyRevisionRecord> out;
  for (;;) {
    auto row = stmt->Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    out.push_back(RevisionFrom(*stmt));
  }
  return out;
}

}  // namespace

absl::StatusOr<std::vector<PolicyRevisionRecord>> SqliteStore::ListPolicyRevisions(const std::string& scope,
                                                                                uint64_t after_seq, uint32_t limit,
                                                                                bool bodies) {
  absl::MutexLock lock(&read_mu_);
  auto stmt = read_db_->Prepare(absl::StrCat(bodies ? kRevisionColumns : kRevisionColumnsWithoutBody, "WHERE r.seq > ? ", scope.empty() ? "" : "AND r.scope = ? ",
                                             "ORDER BY r.seq", limit == 0 ? "" : " LIMIT ?"));
  if (!stmt.ok()) return stmt.status();
  int next = 1;
  stmt->Bind(next++, static_cast<int64_t>(after_seq));
  if (!scope.empty()) stmt->Bind(next++, scope);
  if (limit != 0) stmt->Bind(next++, static_cast<int64_t>(limit));
  return RevisionsOf(&*stmt);
}

absl::StatusOr<std::vector<PolicyRevisionRecord>> SqliteStore::LatestPolicyRevisions() {
  absl::MutexLock lock(&read_mu_);
  auto stmt = read_db_->Prepare(absl::StrCat(
      kRevisionColumns, "WHERE r.revision = (SELECT MAX(revision) FROM policy_revisions WHERE scope = r.scope) ORDER BY r.seq"));
  if (!stmt.ok()) return stmt.status();
  return RevisionsOf(&*stmt);
}


absl::StatusOr<uint64_t> SqliteStore::CountLivePolicies() {
  absl::MutexLock lock(&read_mu_);
  auto stmt = read_db_->Prepare(
      "SELECT COUNT(*) FROM policy_revisions r WHERE r.digest != '' AND r.revision = "
      "(SELECT MAX(revision) FROM policy_revisions WHERE scope = r.scope)");
  if (!stmt.ok()) return stmt.status();
  auto row = stmt->Step();
  if (!row.ok()) return row.status();
  return static_cast<uint64_t>(stmt->Int(0));
}

absl::Status SqliteStore::CheckCeilingUnchanged(int64_t checked) {
  auto current = db_.Prepare("SELECT version FROM ceiling WHERE id = 1");
  if (!current.ok()) return current.status();
  auto row = current->Step();
  if (!row.ok()) return row.status();
  const int64_t stored = *row ? current->Int(0) : kNoCeiling;
  if (stored != checked) return CeilingChangedError(checked, stored);
  return absl::OkStatus();
}

absl::StatusOr<bool> SqliteStore::SameReportRecorded(const change::RecordReport& r) {
  // A report of another digest than the admitted one (a supervisor behind) is recorded every time: its
  // event says so (review 118), and being behind is what an operator must see.
  auto stmt = db_.Prepare("SELECT 1 FROM sandboxes WHERE sandbox_id = ? AND load_status = ? AND load_error = ? "
                          "AND reported_digest = ?4 AND policy_digest = ?4");
  if (!stmt.ok()) return stmt.status();
  stmt->Bind(1, r.sandbox_id).Bind(2, static_cast<int64_t>(r.status)).Bind(3, r.error).Bind(4, r.digest);
  return stmt->Step();
}

absl::Status SqliteStore::CheckRevisionsKnown(const std::map<std::string, uint64_t>& checked) {
  auto latest = db_.Prepare("SELECT scope, MAX(revision) FROM policy_revisions GROUP BY scope");
  if (!latest.ok()) return latest.status();
  std::vector<std::pair<std::string, uint64_t>> stored;
  for (;;) {
    auto row = latest->Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    stored.emplace_back(latest->Text(0), static_cast<uint64_t>(latest->Int(1)));
  }
  return store::CheckRevisionsKnown(checked, stored);
}

absl::StatusOr<std::optional<AuditEvent>> SqliteStore::LatestAuditEvent(trust::audit::Type type_enum,
                                                                        trust::audit::Outcome outcome_enum) {
  const std::string type(trust::audit::NameOf(type_enum)), outcome(trust::audit::NameOf(outcome_enum));
  std::optional<uint64_t> seq;
  {
    absl::MutexLock lock(&read_mu_);
    // The literal type lets SQLite use the partial index for ceiling_set.
    const std::string literal = type == "ceiling_set" ? "'ceiling_set'" : "?2";
    auto stmt = read_db_->Prepare(absl::StrCat("SELECT seq FROM audit_events WHERE type = ", literal,
                                               " AND outcome = ?1 ORDER BY seq DESC LIMIT 1"));
    if (!stmt.ok()) return stmt.status();
    stmt->Bind(1, outcome);
    if (type != "ceiling_set") stmt->Bind(2, type);
    auto row = stmt->Step();
    if (!row.ok()) return row.status();
    if (*row) seq = static_cast<uint64_t>(stmt->Int(0));
  }
  if (!seq) return std::optional<AuditEvent>();
  auto events = ListAuditEvents(*seq - 1, 1);
  if (!events.ok()) return events.status();
  if (events->empty() || events->front().seq != *seq) return SqliteStorageError(absl::StatusCode::kDataLoss, "an audit event vanished");
  return std::optional<AuditEvent>(std::move(events->front()));
}

absl::Status SqliteStore::SaveCeiling(const std::string& ceiling_bytes, uint64_t version, AuditEvent event,
                                      const CeilingEventCompleter& complete) {
  return Write([&]() ABSL_NO_THREAD_SAFETY_ANALYSIS -> absl::Status {
    auto current = db_.Prepare("SELECT version FROM ceiling WHERE id = 1");
    if (!current.ok()) return current.status();
    auto row = current->Step();
    if (!row.ok()) return row.status();
    if (*row && static_cast<uint64_t>(current->Int(0)) >= version) {
      return common::Refused(absl::StatusCode::kAborted, "rollback",
                             absl::StrCat("ceiling version ", version, " is not above the stored version ",
                                          current->Int(0)));
    }
    auto stmt = db_.Prepare("INSERT OR REPLACE INTO ceiling (id, version, ceiling) VALUES (1, ?, ?)");
    if (!stmt.ok()) return stmt.status();
    stmt->Bind(1, static_cast<int64_t>(version)).BindBlob(2, ceiling_bytes);
    OSH_RETURN_IF_ERROR(stmt->Run());
    if (complete) {
      auto bodies = db_.Prepare(
          "SELECT b.body, COUNT(*) FROM sandboxes s JOIN bodies b ON b.digest = s.policy_digest GROUP BY s.policy_digest");
      if (!bodies.ok()) return bodies.status();
      std::vector<AdmittedBody> admitted;
      for (;;) {
        auto row = bodies->Step();
        if (!row.ok()) return row.status();
        if (!*row) break;
        admitted.push_back({bodies->Blob(0), static_cast<uint64_t>(bodies->Int(1))});
      }
      complete(admitted, &event);
    }
    return InsertAudit(&event);
  }, [&] { ceiling_listeners().ForEach([&](CeilingListener& l) { l.OnCeiling(ceiling_bytes, version, /*remote=*/false); }); });
}

absl::StatusOr<std::optional<std::string>> SqliteStore::LoadCeiling() {
  absl::MutexLock lock(&read_mu_);
  auto stmt = read_db_->Prepare("SELECT ceiling FROM ceiling WHERE id = 1");
  if (!stmt.ok()) return stmt.status();
  auto row = stmt->Step();
  if (!row.ok()) return row.status();
  if (!*row) return std::optional<std::string>();
  return std::optional<std::string>(stmt->Blob(0));
}

absl::Status SqliteStore::AppendAudit(AuditEvent event) {
  return Write([&]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return InsertAudit(&event); });
}

AuditLog::ChainHead SqliteStore::AuditChainHead() {
  absl::MutexLock lock(&mu_);
  return {chain_.head().seq, chain_.head().hash};
}

absl::StatusOr<std::vector<AuditEvent>> SqliteStore::ListAuditEvents(uint64_t after_seq, uint32_t limit) {
  absl::MutexLock lock(&read_mu_);
  auto stmt = read_db_->Prepare(
      "SELECT seq, time_unix_ms, type, sandbox_id, surface_id, policy_digest, policy_version, key_ids, outcome, "
      "reason, audit_context, prev_hash, hash, actor FROM audit_events WHERE seq > ? ORDER BY seq LIMIT ?");
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
    e.type = trust::audit::TypeWord::FromStored(stmt->Text(2));
    e.sandbox_id = stmt->Text(3);
    e.surface_id = stmt->Text(4);
    e.policy_digest = stmt->Text(5);
    e.policy_version = static_cast<uint64_t>(stmt->Int(6));
    e.key_ids = SplitIds(stmt->Text(7));
    e.outcome = trust::audit::OutcomeWord::FromStored(stmt->Text(8));
    e.reason = stmt->Text(9);
    e.audit_context = DecodeContextMap(stmt->Blob(10));
    e.prev_hash = stmt->Text(11);
    e.hash = stmt->Text(12);
    e.actor = stmt->Text(13);
    out.push_back(std::move(e));
  }
  return out;
}

// --- Interceptor records ----------------------------------------------------------------------

absl::Status SqliteStore::PutInterceptorRecord(const std::string& sandbox, const std::string& record,
                                               std::optional<uint64_t> expected_generation,
                                               const std::optional<std::string>* expected_previous, AuditEvent* event) {
  return WriteInterceptorRecord(sandbox, &record, event, expected_generation, expected_previous);
}

absl::Status SqliteStore::DeleteInterceptorRecord(const std::string& sandbox) {
  return WriteInterceptorRecord(sandbox, nullptr, nullptr);
}

absl::Status SqliteStore::ForgetInterceptorRecord(const std::string& sandbox, AuditEvent event) {
  return Write([&]() ABSL_NO_THREAD_SAFETY_ANALYSIS -> absl::Status {
    auto stmt = db_.Prepare("DELETE FROM interceptor_records WHERE sandbox = ?");
    if (!stmt.ok()) return stmt.status();
    stmt->Bind(1, sandbox);
    OSH_RETURN_IF_ERROR(stmt->Run());
    if (db_.Changes() == 0) return absl::NotFoundError("no interceptor record of that sandbox is stored");
    return InsertAudit(&event);
  });
}

absl::Status SqliteStore::WriteInterceptorRecord(const std::string& sandbox, const std::string* record, AuditEvent* event,
                                                 std::optional<uint64_t> expected_generation,
                                                 const std::optional<std::string>* expected_previous) {
  return Write([&]() ABSL_NO_THREAD_SAFETY_ANALYSIS -> absl::Status {
    if (expected_previous != nullptr) {
      auto stored = db_.Prepare("SELECT record FROM interceptor_records WHERE sandbox = ?");
      if (!stored.ok()) return stored.status();
      stored->Bind(1, sandbox);
      auto row = stored->Step();
      if (!row.ok()) return row.status();
      if (*row != expected_previous->has_value() || (*row && stored->Blob(0) != **expected_previous)) {
        return RecordChanged(sandbox);
      }
    }
    if (expected_generation.has_value()) {
      // One writer: a catalogue change and its check are one transaction, so this reads the generation
      // either before the change began or after it committed.
      auto generation = db_.Prepare("SELECT generation FROM provider_profile_generation WHERE id = 1");
      if (!generation.ok()) return generation.status();
      auto row = generation->Step();
      if (!row.ok()) return row.status();
      if (!*row) return SqliteStorageError(absl::StatusCode::kDataLoss, "the provider-profile generation row is missing");
      if (static_cast<uint64_t>(generation->Int(0)) != *expected_generation) return CatalogueChanged(*expected_generation);
    }
    if (record != nullptr && expected_previous != nullptr && expected_previous->has_value() &&
        **expected_previous == *record) {
      // Stored as it is already (checked above): only the event is written.
      return event != nullptr ? InsertAudit(event) : absl::OkStatus();
    }
    auto stmt = db_.Prepare(record != nullptr
                                ? "INSERT INTO interceptor_records (sandbox, record, updated_at) VALUES (?, ?, ?) ON "
                                  "CONFLICT (sandbox) DO UPDATE SET record = excluded.record, updated_at = excluded.updated_at"
                                : "DELETE FROM interceptor_records WHERE sandbox = ?");
    if (!stmt.ok()) return stmt.status();
    stmt->Bind(1, sandbox);
    if (record != nullptr) stmt->BindBlob(2, *record).Bind(3, NowMs());
    OSH_RETURN_IF_ERROR(stmt->Run());
    return event != nullptr ? InsertAudit(event) : absl::OkStatus();
  });
}

absl::StatusOr<std::optional<std::string>> SqliteStore::ReadBlobByKey(const char* sql, const std::string& key) {
  absl::MutexLock lock(&read_mu_);
  auto stmt = read_db_->Prepare(sql);
  if (!stmt.ok()) return stmt.status();
  stmt->Bind(1, key);
  auto row = stmt->Step();
  if (!row.ok()) return row.status();
  if (!*row) return std::optional<std::string>();
  return std::optional<std::string>(stmt->Blob(0));
}

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> SqliteStore::ReadKeyedBlobs(const char* sql) {
  absl::MutexLock lock(&read_mu_);
  auto stmt = read_db_->Prepare(sql);
  if (!stmt.ok()) return stmt.status();
  std::vector<std::pair<std::string, std::string>> out;
  for (;;) {
    auto row = stmt->Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    out.emplace_back(stmt->Text(0), stmt->Blob(1));
  }
  return out;
}

absl::StatusOr<std::optional<std::string>> SqliteStore::GetInterceptorRecord(const std::string& sandbox) {
  return ReadBlobByKey("SELECT record FROM interceptor_records WHERE sandbox = ?", sandbox);
}

absl::StatusOr<std::vector<InterceptorRecordRow>> SqliteStore::ListInterceptorRecords() {
  auto rows = ReadKeyedBlobs("SELECT sandbox, record FROM interceptor_records ORDER BY sandbox");
  if (!rows.ok()) return rows.status();
  std::vector<InterceptorRecordRow> out;
  for (auto& [sandbox, record] : *rows) out.push_back({std::move(sandbox), std::move(record), {}});
  return out;
}

absl::StatusOr<std::vector<InterceptorRecordRow>> SqliteStore::ListInterceptorRecordsPage(
    const std::optional<std::string>& after, size_t limit) {
  // Ranges of the primary key, in byte order (SQLite's BINARY).
  return ListRecordPartsAfter(after, limit, [this](bool with_separator, const std::string& from, size_t n)
                                                -> absl::StatusOr<std::vector<InterceptorRecordRow>> {
    absl::MutexLock lock(&read_mu_);
    auto stmt = read_db_->Prepare(absl::StrCat("SELECT sandbox, record FROM interceptor_records WHERE sandbox > ? AND "
                                               "instr(sandbox, char(31)) ", with_separator ? "> 0" : "= 0",
                                               " ORDER BY sandbox LIMIT ?"));
    if (!stmt.ok()) return stmt.status();
    stmt->Bind(1, from).Bind(2, static_cast<int64_t>(n));
    std::vector<InterceptorRecordRow> rows;
    for (;;) {
      auto row = stmt->Step();
      if (!row.ok()) return row.status();
      if (!*row) return rows;
      rows.push_back({stmt->Text(0), stmt->Blob(1), {}});
    }
  });
}

// --- Provider profiles ----------------------------------------------------------------------
// Every change steps the catalogue's generation in its transaction (ProviderProfileGeneration).

namespace {
constexpr char kSqliteStepProfileGeneration[] =
    "UPDATE provider_profile_generation SET generation = generation + 1 WHERE id = 1";
}  // namespace

absl::Status SqliteStore::StepProfileGeneration(std::optional<uint64_t> expected) {
  if (!expected.has_value()) return db_.Exec(kSqliteStepProfileGeneration);
  auto stmt = db_.Prepare(absl::StrCat(kSqliteStepProfileGeneration, " AND generation = ?"));
  if (!stmt.ok()) return stmt.status();
  stmt->Bind(1, static_cast<int64_t>(*expected));
  OSH_RETURN_IF_ERROR(stmt->Run());
  if (db_.Changes() == 0) return CatalogueChanged(*expected);
  return absl::OkStatus();
}

absl::Status SqliteStore::RunProfileChangeCheck(const ProfileChangeCheck& check) {
  if (!check) return absl::OkStatus();
  auto stmt = db_.Prepare("SELECT sandbox, record FROM interceptor_records ORDER BY sandbox");
  if (!stmt.ok()) return stmt.status();
  std::vector<InterceptorRecordRow> records;
  for (;;) {
    auto row = stmt->Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    records.push_back({stmt->Text(0), stmt->Blob(1), {}});
  }
  // No versions kept: every record, whatever `check.seen` holds.
  return check.run(records);
}

absl::Status SqliteStore::PutProviderProfile(const std::string& id, const std::string& profile, AuditEvent event,
                                             std::optional<uint64_t> expected_generation,
                                             const ProfileChangeCheck& check, std::optional<int64_t> checked_ceiling) {
  return Write([&]() ABSL_NO_THREAD_SAFETY_ANALYSIS -> absl::Status {
    if (checked_ceiling) OSH_RETURN_IF_ERROR(CheckCeilingUnchanged(*checked_ceiling));
    OSH_RETURN_IF_ERROR(StepProfileGeneration(expected_generation));
    auto stmt = db_.Prepare(
        "INSERT INTO provider_profiles (id, profile, updated_at) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
        "profile = excluded.profile, updated_at = excluded.updated_at");
    if (!stmt.ok()) return stmt.status();
    stmt->Bind(1, id).BindBlob(2, profile).Bind(3, NowMs());
    OSH_RETURN_IF_ERROR(stmt->Run());
    OSH_RETURN_IF_ERROR(RunProfileChangeCheck(check));
    return InsertAudit(&event);
  });
}

absl::Status SqliteStore::DeleteProviderProfile(const std::string& id, AuditEvent event,
                                                std::optional<uint64_t> expected_generation,
                                                const ProfileChangeCheck& check, std::optional<int64_t> checked_ceiling) {
  return Write([&]() ABSL_NO_THREAD_SAFETY_ANALYSIS -> absl::Status {
    if (checked_ceiling) OSH_RETURN_IF_ERROR(CheckCeilingUnchanged(*checked_ceiling));
    OSH_RETURN_IF_ERROR(StepProfileGeneration(expected_generation));
    auto stmt = db_.Prepare("DELETE FROM provider_profiles WHERE id = ?");
    if (!stmt.ok()) return stmt.status();
    stmt->Bind(1, id);
    OSH_RETURN_IF_ERROR(stmt->Run());
    if (db_.Changes() == 0) return absl::NotFoundError(absl::StrCat("no provider profile '", id, "' is stored"));
    OSH_RETURN_IF_ERROR(RunProfileChangeCheck(check));
    return InsertAudit(&event);
  });
}

absl::StatusOr<std::optional<std::string>> SqliteStore::GetProviderProfile(const std::string& id) {
  return ReadBlobByKey("SELECT profile FROM provider_profiles WHERE id = ?", id);
}

absl::StatusOr<std::vector<ProviderProfileRow>> SqliteStore::ListProviderProfiles() {
  auto rows = ReadKeyedBlobs("SELECT id, profile FROM provider_profiles ORDER BY id");
  if (!rows.ok()) return rows.status();
  std::vector<ProviderProfileRow> out;
  for (auto& [id, profile] : *rows) out.push_back({std::move(id), std::move(profile)});
  return out;
}

absl::StatusOr<uint64_t> SqliteStore::ProviderProfileGeneration() {
  absl::MutexLock lock(&read_mu_);
  auto stmt = read_db_->Prepare("SELECT generation FROM provider_profile_generation WHERE id = 1");
  if (!stmt.ok()) return stmt.status();
  auto row = stmt->Step();
  if (!row.ok()) return row.status();
  if (!*row) return SqliteStorageError(absl::StatusCode::kDataLoss, "the provider-profile generation row is missing");
  return static_cast<uint64_t>(stmt->Int(0));
}

}  // namespace osh::store
