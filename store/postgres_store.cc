#include "store/postgres_store.h"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <iterator>
#include <random>
#include <set>
#include <type_traits>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/bounded_text.h"
#include "common/errors.h"
#include "policy/body_codec.h"
#include "policy/digest.h"
#include "store/audit_actor.h"
#include "store/row_codec.h"
#include "store/status_macros.h"
#include "store/storage_error.h"

namespace osh::store {
namespace {

using openshell::policy::gateway::v1::LoadStatus;

// Forward-only migrations: kMigrations[i] takes the schema from version i to i + 1. Column meanings
// are SQLite's (store/sqlite_store.cc); what is new here serves replicas.
const char* const kMigrations[] = {
    R"sql(
CREATE TABLE bodies (
  digest TEXT PRIMARY KEY,
  body   BYTEA NOT NULL
);
CREATE TABLE envelopes (
  id            BYTEA PRIMARY KEY,
  header        BYTEA NOT NULL,
  policy_digest TEXT NOT NULL REFERENCES bodies(digest)
);
CREATE INDEX envelopes_by_digest ON envelopes(policy_digest);
CREATE TABLE sandboxes (
  sandbox_id         TEXT PRIMARY KEY,
  context            BYTEA NOT NULL,
  handle_sha256      BYTEA NOT NULL UNIQUE,
  driver_handle      TEXT NOT NULL,
  envelope_id        BYTEA NOT NULL REFERENCES envelopes(id),
  policy_digest      TEXT NOT NULL,
  verification       TEXT NOT NULL,
  signing_key_ids    TEXT NOT NULL,
  admitted_at        BIGINT NOT NULL,
  updated_at         BIGINT NOT NULL,
  load_status        INTEGER NOT NULL DEFAULT 0,
  load_error         TEXT NOT NULL DEFAULT '',
  reported_digest    TEXT NOT NULL DEFAULT '',
  reported_at        BIGINT NOT NULL DEFAULT 0,
  last_refresh_error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX sandboxes_by_envelope ON sandboxes(envelope_id);
-- in_flight_owner: the replica whose admission is in flight ('' = due); claimed_*: who is delivering it.
CREATE TABLE pending_releases (
  id              BIGSERIAL PRIMARY KEY,
  driver_handle   TEXT NOT NULL,
  queued_at       BIGINT NOT NULL,
  in_flight_owner TEXT NOT NULL DEFAULT '',
  context         BYTEA NOT NULL DEFAULT '',
  idempotency_key TEXT NOT NULL DEFAULT '',
  claimed_by      TEXT NOT NULL DEFAULT '',
  claimed_until   BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE policy_revisions (
  seq        BIGSERIAL PRIMARY KEY,
  scope      TEXT NOT NULL,
  revision   BIGINT NOT NULL,
  digest     TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  UNIQUE (scope, revision)
);
CREATE TABLE audit_events (
  seq            BIGINT PRIMARY KEY,
  time_unix_ms   BIGINT NOT NULL,
  type           TEXT NOT NULL,
  sandbox_id     TEXT NOT NULL,
  surface_id     TEXT NOT NULL,
  policy_digest  TEXT NOT NULL,
  policy_version BIGINT NOT NULL,
  key_ids        TEXT NOT NULL,
  outcome        TEXT NOT NULL,
  reason         TEXT NOT NULL,
  audit_context  BYTEA NOT NULL,
  prev_hash      TEXT NOT NULL,
  hash           TEXT NOT NULL,
  actor          TEXT NOT NULL DEFAULT ''
);
-- The chain's head, locked by every write transaction first: the one serialisation point of all replicas.
CREATE TABLE audit_head (
  id   INTEGER PRIMARY KEY CHECK (id = 1),
  seq  BIGINT NOT NULL,
  hash TEXT NOT NULL
);
INSERT INTO audit_head VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
CREATE TABLE ceiling (
  id      INTEGER PRIMARY KEY CHECK (id = 1),
  version BIGINT NOT NULL,
  ceiling BYTEA NOT NULL
);
-- The change feed: one row per committed batch that other replicas must apply.
CREATE TABLE changes (
  seq     BIGSERIAL PRIMARY KEY,
  origin  TEXT NOT NULL,
  kind    TEXT NOT NULL,                -- sandboxes (payload: JSON id list), policy (scope), ceiling, reprojection (<revision> <scope>)
  payload TEXT NOT NULL
);
CREATE TABLE replicas (
  id           TEXT PRIMARY KEY,
  started_at   BIGINT NOT NULL,
  heartbeat_at BIGINT NOT NULL
);
CREATE TABLE leases (
  name    TEXT PRIMARY KEY,
  holder  TEXT NOT NULL,
  expires BIGINT NOT NULL
);
)sql",
    // 1 -> 2: the marker of a migration into this database that has not finished (policy-gateway migrate
    // writes it before copying and removes it in its final commit; a gateway refuses the database meanwhile).
    R"sql(
CREATE TABLE migration_marker (
  id         INTEGER PRIMARY KEY CHECK (id = 1),
  source     TEXT NOT NULL,
  started_at BIGINT NOT NULL
);
)sql",
    // 2 -> 3: the newest ceiling_set event is found at start without a scan (issue 25.17).
    R"sql(
CREATE INDEX audit_ceiling_sets ON audit_events(seq) WHERE type = 'ceiling_set';
)sql",
    // 3 -> 4: the OpenShell interceptor's record per sandbox name (the base of mergeOperations), shared by
    // the replicas and kept across restarts (InterceptorRecordStore).
    R"sql(
CREATE TABLE interceptor_records (
  sandbox    TEXT PRIMARY KEY,
  record     BYTEA NOT NULL,
  updated_at BIGINT NOT NULL
);
)sql",
    // 4 -> 5: the provider-profile catalogue the interceptor serves (ProviderProfileStore), shared by the
    // replicas.
    R"sql(
CREATE TABLE provider_profiles (
  id         TEXT COLLATE "C" PRIMARY KEY,
  profile    BYTEA NOT NULL,
  updated_at BIGINT NOT NULL
);
)sql",
    // 5 -> 6: the catalogue's generation, stepped with every profile change by any replica
    // (ProviderProfileGeneration): each replica keeps the verified catalogue and reads this one row to know
    // whether it is still current.
    R"sql(
CREATE TABLE provider_profile_generation (
  id         INTEGER PRIMARY KEY CHECK (id = 1),
  generation BIGINT NOT NULL
);
INSERT INTO provider_profile_generation VALUES (1, 0);
)sql",
    // 6 -> 7: how far each replica's change feed has read (the feed's lag, for operators; written by the
    // feed after each read).
    R"sql(
ALTER TABLE replicas ADD COLUMN IF NOT EXISTS feed_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE replicas ADD COLUMN IF NOT EXISTS feed_read_at BIGINT NOT NULL DEFAULT 0;
)sql",
    // 7 -> 8: replicas write without the fleet-wide head lock (issue 27). A write appends its audit events
    // and feed rows unsealed (audit_pending, changes_pending); the sealer (SealPending: any replica, one at
    // a time under the head lock, before its feed or a reader of the log reads) moves them into
    // audit_events (numbered and chained) and changes (numbered), so both stay one gap-free sequence in
    // commit order of the seals. Migrate refuses this step while a replica of an earlier release
    // heartbeats (kPendingSchema).
    R"sql(
CREATE TABLE audit_pending (
  id             BIGSERIAL PRIMARY KEY,
  time_unix_ms   BIGINT NOT NULL,
  type           TEXT NOT NULL,
  sandbox_id     TEXT NOT NULL,
  surface_id     TEXT NOT NULL,
  policy_digest  TEXT NOT NULL,
  policy_version BIGINT NOT NULL,
  key_ids        TEXT NOT NULL,
  outcome        TEXT NOT NULL,
  reason         TEXT NOT NULL,
  audit_context  BYTEA NOT NULL,
  actor          TEXT NOT NULL
);
-- Rows written by this protocol carry writer_schema = 8 (no default): a replica of an earlier release,
-- which writes sealed rows itself, fails its write instead of writing beside it.
ALTER TABLE audit_events ADD COLUMN IF NOT EXISTS writer_schema INTEGER NOT NULL DEFAULT 7;
ALTER TABLE audit_events ALTER COLUMN writer_schema DROP DEFAULT;
ALTER TABLE changes ADD COLUMN IF NOT EXISTS writer_schema INTEGER NOT NULL DEFAULT 7;
ALTER TABLE changes ALTER COLUMN writer_schema DROP DEFAULT;
CREATE TABLE changes_pending (
  id      BIGSERIAL PRIMARY KEY,
  origin  TEXT NOT NULL,
  kind    TEXT NOT NULL,
  payload TEXT NOT NULL
);
COMMENT ON TABLE audit_head IS 'the sealed chain''s head: locked by the sealer (and imports) only, from schema 8';
)sql",
};
static_assert(std::size(kMigrations) == PostgresStore::kSchemaVersion, "one migration per schema version");

constexpr int64_t kMigrationLock = 0x6f73680001;  // pg_advisory_xact_lock key: "osh" + 1
// Held shared by a write that checked a batch against the ceiling in force (CheckCeilingUnchanged), from
// that check to its commit; exclusive by SaveCeiling: no ceiling is stored between a check and its commit,
// and SaveCeiling counts every batch checked against the one before.
constexpr int64_t kCeilingLock = 0x6f73680002;
// Held shared by a write that checked a batch against the policy revisions it knew (CheckRevisionsKnown),
// exclusive by AppendPolicyRevision (which also reads the next revision number, then writes it).
constexpr int64_t kRevisionLock = 0x6f73680003;
constexpr int64_t kPendingSchema = 8;  // the first schema whose writers append events unsealed
// How many times LeadGroup leads a write PostgreSQL chose as a deadlock's victim (or a serialization
// failure's): the others of its group committed; it is led again, in a group of its own.
constexpr int kConflictAttempts = 6;  // the first, and up to five more (backing off: 10 ms, doubling)
constexpr int kSealBatch = 1000;  // pending events (14 parameters each) and feed rows sealed per transaction
constexpr int kSealRounds = 16;    // batches one SealPending call seals at most
constexpr int64_t kSealWaitMs = 1000;  // how long a reader of the log waits for the head before reading on
// A column among the ids of a JSON list ($1): an index scan. (`IN (SELECT json_array_elements_text(..))`
// planned a hash join over the whole table for each statement: a re-projection of N sandboxes, one change
// each, read N² rows.)
constexpr char kInJsonList[] = " = ANY(ARRAY(SELECT json_array_elements_text($1::json)))";
// When an envelope or a body is no longer used (DeleteUnused): `e`, `b`.
constexpr char kEnvelopeUnused[] = "NOT EXISTS (SELECT 1 FROM sandboxes s WHERE s.envelope_id = e.id)";
constexpr char kBodyUnused[] =
    "NOT EXISTS (SELECT 1 FROM envelopes e WHERE e.policy_digest = b.digest) AND "
    "NOT EXISTS (SELECT 1 FROM policy_revisions r WHERE r.digest = b.digest)";
constexpr char kInsertAuditColumns[] =
    "INSERT INTO audit_events (seq, time_unix_ms, type, sandbox_id, surface_id, policy_digest, policy_version, "
    "key_ids, outcome, reason, audit_context, prev_hash, hash, actor, writer_schema) VALUES ";
// The database's clock in milliseconds: replicas compare heartbeats and leases on one clock.
constexpr char kDbNowMs[] = "(extract(epoch from clock_timestamp()) * 1000)::bigint";
constexpr int64_t kFeedBehindCountCap = 100000;  // ReplicaStatus::feed_changes_behind counts no further
// Milliseconds on the steady clock: for ages measured here (a step of the wall clock does not move them).
int64_t SteadyMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string NewReplicaId() {
  char host[256] = {};
  ::gethostname(host, sizeof(host) - 1);
  std::random_device random;
  return absl::StrFormat("%s:%d:%04x", host, ::getpid(), random() & 0xffff);
}

PolicyRevisionRecord RevisionFrom(const PgResult& r, int row) {
  PolicyRevisionRecord out;
  out.seq = static_cast<uint64_t>(r.Int(row, 0));
  out.scope = r.Bytes(row, 1);
  out.revision = static_cast<uint64_t>(r.Int(row, 2));
  out.digest = r.Bytes(row, 3);
  out.created_at_unix = r.Int(row, 4);
  out.body = r.IsNull(row, 5) ? "" : r.Bytes(row, 5);
  return out;
}

// Columns 1-10 of a row of audit_events or audit_pending, in the order both tables list them (time_unix_ms,
// type, sandbox_id, surface_id, policy_digest, policy_version, key_ids, outcome, reason, audit_context).
void DecodeEventColumns(const PgResult& r, int row, AuditEvent* e) {
  e->time_unix_ms = r.Int(row, 1);
  e->type = trust::audit::TypeWord::FromStored(r.Bytes(row, 2));
  e->sandbox_id = r.Bytes(row, 3);
  e->surface_id = r.Bytes(row, 4);
  e->policy_digest = r.Bytes(row, 5);
  e->policy_version = static_cast<uint64_t>(r.Int(row, 6));
  e->key_ids = SplitIds(r.Bytes(row, 7));
  e->outcome = trust::audit::OutcomeWord::FromStored(r.Bytes(row, 8));
  e->reason = r.Bytes(row, 9);
  e->audit_context = DecodeContextMap(r.Bytes(row, 10));
}

// One row: 1 when anything waits to be sealed.
constexpr char kAnyPending[] =
    "SELECT (EXISTS (SELECT 1 FROM audit_pending) OR EXISTS (SELECT 1 FROM changes_pending))::int::int8";

constexpr char kRevisionColumnsWithoutBody[] =
    "SELECT r.seq, r.scope, r.revision, r.digest, r.created_at, NULL::bytea FROM policy_revisions r ";
constexpr char kRevisionColumns[] =
    "SELECT r.seq, r.scope, r.revision, r.digest, r.created_at, b.body FROM policy_revisions r "
    "LEFT JOIN bodies b ON b.digest = r.digest ";

}  // namespace

PostgresStore::PostgresStore(PgConn writer, PgConn reader, PgConn feed, PgConn beat, PgConn sealer,
                             const Clock* clock, std::string replica_id, std::function<void(const std::string&)> notice)
    : clock_(clock), replica_id_(std::move(replica_id)), notice_(std::move(notice)), writer_(std::move(writer)),
      reader_(std::move(reader)), feed_(std::move(feed)), beat_(std::move(beat)), sealer_(std::move(sealer)) {}

absl::StatusOr<std::unique_ptr<PostgresStore>> PostgresStore::Open(const std::string& conninfo, const Clock* clock,
                                                                  bool replica) {
  StoreOptions options;
  options.clock = clock;
  options.role = replica ? StoreRole::kGateway : StoreRole::kMigration;
  return Open(conninfo, options);
}

absl::StatusOr<std::unique_ptr<PostgresStore>> PostgresStore::Open(const std::string& conninfo,
                                                                  const StoreOptions& options) {
  const Clock* const clock = options.clock;
  const bool replica = options.role == StoreRole::kGateway;
  auto writer = PgConn::Connect(conninfo);
  if (!writer.ok()) return writer.status();
  auto reader = PgConn::Connect(conninfo);
  if (!reader.ok()) return reader.status();
  auto feed = PgConn::Connect(conninfo);
  if (!feed.ok()) return feed.status();
  auto beat = PgConn::Connect(conninfo);
  if (!beat.ok()) return beat.status();
  auto sealer = PgConn::Connect(conninfo);
  if (!sealer.ok()) return sealer.status();
  std::unique_ptr<PostgresStore> store(new PostgresStore(*std::move(writer), *std::move(reader), *std::move(feed),
                                                         *std::move(beat), *std::move(sealer), clock, NewReplicaId(),
                                                         options.notice));
  {
    absl::MutexLock lock(&store->mu_);
    OSH_RETURN_IF_ERROR(store->Migrate());
  }
  store->replica_ = replica;
  if (!replica) return store;  // policy-gateway migrate: no heartbeat, no feed
  // Before this replica registers: the target of a migration that has not finished holds part of a state
  // (and part of its audit chain, which would fork from the source's if served).
  if (auto marker = store->MigrationMarker(); !marker.ok()) {
    return marker.status();
  } else if (marker->has_value()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the database is the target of a migration that did not finish (", (*marker)->Describe(),
        "): it holds only part of that state and is not served. Run `policy-gateway migrate --from <the same "
        "source> --to <this database> --resume` to finish it, or `--replace-target` to copy it again (stop every gateway on "
        "it first)"));
  }
  {
    absl::MutexLock lock(&store->feed_mu_);
    absl::MutexLock conn_lock(&store->feed_conn_mu_);
    PgConn& feed_conn = store->feed_;
    OSH_RETURN_IF_ERROR(feed_conn.Exec("LISTEN osh_changes"));
    auto registered = feed_conn.Query(absl::StrCat("INSERT INTO replicas (id, started_at, heartbeat_at) VALUES ($1, ",
                                                   kDbNowMs, ", ", kDbNowMs, ")"),
                                      PgParams().Add(store->replica_id_));
    if (!registered.ok()) return registered.status();
    // The view is loaded after this: changes from here on are applied from the feed.
    auto head = feed_conn.Query("SELECT COALESCE(MAX(seq), 0) FROM changes");
    if (!head.ok()) return head.status();
    store->feed_seq_ = head->Int(0, 0);
    store->feed_seq_read_ = store->feed_seq_;
    store->feed_read_ok_ms_ = SteadyMs();
    store->last_feed_round_ms_ = SteadyMs();
  }
  {
    absl::MutexLock lock(&store->beat_mu_);
    store->last_heartbeat_ok_ms_ = SteadyMs();
  }
  store->feed_thread_ = std::thread([s = store.get()] { s->FeedLoop(); });
  store->beat_thread_ = std::thread([s = store.get()] { s->HeartbeatLoop(); });
  auto anchor = AnchorOpenedStore(store.get(), options);
  if (!anchor.ok()) return anchor.status();
  store->anchor_ = *std::move(anchor);
  return store;
}

PostgresStore::~PostgresStore() {
  queue_.Stop();    // writes still queued commit first (before the replica announces it is gone)
  SealPending(SealWait::kBriefly).IgnoreError();  // and what they appended is sealed (else the next replica does it)
  anchor_.reset();  // its last record reads the chain head
  stopping_ = true;
  if (feed_thread_.joinable()) feed_thread_.join();
  if (beat_thread_.joinable()) beat_thread_.join();
  if (!replica_) return;
  absl::MutexLock lock(&feed_conn_mu_);
  // A clean stop: this replica's admissions in flight are due at once, and it no longer counts as live.
  feed_.Query("UPDATE pending_releases SET in_flight_owner = '' WHERE in_flight_owner = $1", PgParams().Add(replica_id_))
      .IgnoreError();
  feed_.Query("UPDATE pending_releases SET claimed_by = '' WHERE claimed_by = $1", PgParams().Add(replica_id_))
      .IgnoreError();
  feed_.Query("DELETE FROM replicas WHERE id = $1", PgParams().Add(replica_id_)).IgnoreError();
}

absl::Status PostgresStore::Migrate() {
  OSH_RETURN_IF_ERROR(writer_.Exec("BEGIN"));
  auto migrate = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> absl::Status {
    OSH_RETURN_IF_ERROR(writer_.Query("SELECT pg_advisory_xact_lock($1)", PgParams().Add(kMigrationLock)).status());
    OSH_RETURN_IF_ERROR(writer_.Exec("CREATE TABLE IF NOT EXISTS osh_schema (version INTEGER NOT NULL)"));
    auto version = writer_.Query("SELECT version FROM osh_schema");
    if (!version.ok()) return version.status();
    int64_t current = 0;
    if (version->rows() == 0) {
      OSH_RETURN_IF_ERROR(writer_.Exec("INSERT INTO osh_schema VALUES (0)"));
    } else {
      current = version->Int(0, 0);
    }
    if (current > kSchemaVersion) {
      return absl::FailedPreconditionError(absl::StrCat("database schema version ", current,
                                                        " is newer than this gateway's ", kSchemaVersion));
    }
    if (current >= 1 && current < kPendingSchema) {
      // Replicas of an earlier release take the head lock for every write and check the ceiling under it:
      // beside this release's writes (the ceiling and revisions on locks of their own) they could commit
      // outside a new ceiling. They must be stopped first (a clean stop removes a replica's row; a crashed
      // one's stops counting after kReplicaLeaseMs). One this check cannot see (starting in the same
      // moment, or its heartbeat stalled) fails its writes instead: schema 8's writer_schema columns have
      // no default, and only this release fills them.
      auto live = writer_.Query(absl::StrCat("SELECT id FROM replicas WHERE heartbeat_at > ", kDbNowMs,
                                             " - $1 ORDER BY id"),
                                PgParams().Add(kReplicaLeaseMs));
      if (!live.ok()) return live.status();
      if (live->rows() > 0) {
        std::vector<std::string> ids;
        for (int i = 0; i < live->rows() && i < 5; ++i) ids.push_back(live->Bytes(i, 0));
        return absl::FailedPreconditionError(absl::StrCat(
            "database schema version ", current, " is in use by ", live->rows(),
            " running replica(s) of an earlier release (", absl::StrJoin(ids, ", "), live->rows() > 5 ? ", ..." : "",
            "): stop them before this release upgrades it to ", kSchemaVersion,
            " (the two write differently and must not share a database: docs/replicas.md, \"Upgrading\")"));
      }
    }
    for (int64_t v = current; v < kSchemaVersion; ++v) OSH_RETURN_IF_ERROR(writer_.Exec(kMigrations[v]));
    return writer_.Query("UPDATE osh_schema SET version = $1", PgParams().Add(int64_t{kSchemaVersion})).status();
  };
  if (absl::Status s = migrate(); !s.ok()) {
    writer_.Exec("ROLLBACK").IgnoreError();
    return s;
  }
  return writer_.ExecCommit("COMMIT");
}

void PostgresStore::SetChangeListener(ChangeListener* listener) { listener_ = listener; }

void PostgresStore::SetRemoteChangeListener(RemoteChangeListener* listener) {
  absl::MutexLock lock(&feed_mu_);
  remote_listener_ = listener;
}

// --- Group commit -------------------------------------------------------------------------------

absl::Status PostgresStore::Write(std::function<absl::Status()> run, std::function<void()> committed,
                                  bool touches_chain, GroupWrite::Locks locks) {
  GroupWrite self;
  self.run = std::move(run);
  self.committed = std::move(committed);
  self.actor = AuditActorScope::Current();
  self.touches_chain = touches_chain;
  self.locks = locks;
  queue_.Submit(&self, [this](const std::vector<GroupWrite*>& group) { LeadGroup(group); });
  return self.status;
}

void PostgresStore::WriteAsync(std::function<absl::Status()> run, std::function<void()> committed, bool touches_chain,
                               GroupWrite::Locks locks, std::function<void(absl::Status)> done) {
  auto write = std::make_unique<GroupWrite>();
  write->run = std::move(run);
  write->committed = std::move(committed);
  write->actor = AuditActorScope::Current();
  write->touches_chain = touches_chain;
  write->locks = locks;
  write->on_done = std::move(done);
  queue_.SubmitAsync(std::move(write), [this](const std::vector<GroupWrite*>& group) { LeadGroup(group); });
}

absl::Status PostgresStore::WriteHeadFirst(std::function<absl::Status()> run, GroupWrite::Locks locks) {
  GroupWrite self;
  self.run = std::move(run);
  self.locks = locks;
  self.actor = AuditActorScope::Current();
  self.head_first = true;
  queue_.Submit(&self, [this](const std::vector<GroupWrite*>& group) { LeadGroup(group); });
  return self.status;
}

void PostgresStore::LeadGroup(const std::vector<GroupWrite*>& group) {
  absl::MutexLock lock(&mu_);
  const bool touches_chain =
      std::any_of(group.begin(), group.end(), [](const GroupWrite* w) { return w->touches_chain; });
  std::vector<GroupWrite*> round = group;
  for (int attempt = 1;; ++attempt) {
    {
      // A group that changes what replicas serve holds off this replica's feed from before it begins until
      // its own view is updated (in LeadOnce, as each write commits): a remote change the feed reads
      // afterwards is applied after ours (never an older state over a newer one).
      std::optional<absl::MutexLock> apply;
      if (touches_chain) apply.emplace(&feed_mu_);
      commit_uncertain_ = false;
      LeadOnce(round);
      if (commit_uncertain_ && touches_chain) {
        feed_mu_.AssertHeld();
        own_rows_uncertain_ = true;
        own_rows_until_ms_ = 0;
      }
    }
    // A deadlock's victim (SQLSTATE 40P01) or a serialization failure (40001), a storage error ABORTED:
    // rolled back alone (its savepoint, or its transaction when alone), the others committed. Replicas'
    // transactions overlap, so PostgreSQL may pick one; it is led again, without the others.
    std::vector<GroupWrite*> victims;
    for (GroupWrite* w : round) {
      if (absl::IsAborted(w->status) && common::IsStorageError(w->status)) victims.push_back(w);
    }
    if (victims.empty() || attempt == kConflictAttempts) return;
    for (GroupWrite* w : victims) w->status = absl::OkStatus();
    round = std::move(victims);
    // Give the transaction that won a moment to take the rows it waited for: led again at once, this one
    // can take them back before the winner's backend wakes, and the two deadlock again (seen under load:
    // four victims in a row). 10, 20, 40, ... ms, with the feed free to deliver meanwhile.
    absl::SleepFor(absl::Milliseconds(10 << (attempt - 1)));
  }
}

void PostgresStore::LeadOnce(const std::vector<GroupWrite*>& group) {
  auto fail_all = [&](const absl::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    writer_.Exec("ROLLBACK").IgnoreError();
    for (GroupWrite* w : group) {
      if (w->status.ok()) w->status = status;
    }
  };
  if (!writer_.healthy()) {
    if (absl::Status s = writer_.Reconnect(); !s.ok()) return fail_all(s);
  }
  if (absl::Status s = writer_.Exec("BEGIN"); !s.ok()) return fail_all(s);
  const bool head_first = std::any_of(group.begin(), group.end(), [](const GroupWrite* w) { return w->head_first; });
  const bool touches_chain =
      std::any_of(group.begin(), group.end(), [](const GroupWrite* w) { return w->touches_chain; });
  sealed_ = false;
  announced_ = false;
  group_ceiling_.reset();
  drops_.clear();
  if (head_first || touches_chain) {
    // An import waits for the head (it writes sealed events itself). Any other write takes the head only
    // if it is free (SKIP LOCKED): then it seals what is pending and writes its own events and feed rows
    // sealed, as one sealer (no replica's write waits for it: the next one finds it taken and appends
    // unsealed, InsertAudit and Announce). Either way replicas' writes overlap, and only rows they share
    // make them queue.
    auto head = writer_.Query(head_first ? "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE"
                                         : "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE SKIP LOCKED");
    if (!head.ok()) return fail_all(head.status());
    if (head_first && head->rows() != 1) {
      return fail_all(PostgresStorageError(absl::StatusCode::kDataLoss, ": the audit head row is missing"));
    }
    if (head->rows() == 1) {
      chain_.Reset({static_cast<uint64_t>(head->Int(0, 0)), head->Bytes(0, 1)});
      sealed_ = true;
    }
  }
  const uint64_t start_seq = chain_.head().seq;
  if (sealed_ && !head_first) {
    // What other writes appended while the head was taken goes first: the chain and the feed keep the
    // order in which the head was held. One look when nothing is (a single replica, always).
    auto any = writer_.Query(kAnyPending);
    if (!any.ok()) return fail_all(any.status());
    bool more = any->Int(0, 0) != 0;
    for (int round = 0; more && round < kSealRounds; ++round) {
      int64_t changes = 0;
      auto moved = MovePending(writer_, chain_, &changes);
      if (!moved.ok()) return fail_all(moved.status());
      if (changes > 0) announced_ = true;
      more = *moved;
    }
  }
  // Before any write runs, so before any row lock a write takes (GroupWrite::locks). After the head and
  // the pending rows moved, which no holder of these locks waits for: only an import's group (head_first)
  // and a sealer wait for the head, and they hold neither lock while they wait.
  using LockUse = GroupWrite::LockUse;
  LockUse ceiling_use = LockUse::kNone, revisions_use = LockUse::kNone;
  for (const GroupWrite* w : group) {
    ceiling_use = std::max(ceiling_use, w->locks.ceiling);
    revisions_use = std::max(revisions_use, w->locks.revisions);
  }
  if (ceiling_use != LockUse::kNone) {
    auto ceiling = LockCeiling(ceiling_use == LockUse::kSets);
    if (!ceiling.ok()) return fail_all(ceiling.status());
    group_ceiling_ = *ceiling;
  }
  if (revisions_use != LockUse::kNone) {
    auto locked = writer_.Query(revisions_use == LockUse::kSets ? "SELECT pg_advisory_xact_lock($1)"
                                                                : "SELECT pg_advisory_xact_lock_shared($1)",
                                PgParams().Add(kRevisionLock));
    if (!locked.ok()) return fail_all(locked.status());
  }
  std::vector<std::string> rows;
  for (const GroupWrite* w : group) rows.insert(rows.end(), w->locks.sandbox_rows.begin(), w->locks.sandbox_rows.end());
  std::sort(rows.begin(), rows.end());
  rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
  // One row of a group of one write needs no order: its write locks it. Alone in a larger group it is
  // locked first too, before another write's admission takes a new row's key another replica may want.
  if (rows.size() > 1 || (rows.size() == 1 && group.size() > 1)) {
    auto ids = JsonIdList(rows);
    if (!ids.ok()) return fail_all(ids.status());
    auto locked = writer_.Query(
        absl::StrCat("SELECT 1 FROM sandboxes WHERE sandbox_id", kInJsonList, " ORDER BY sandbox_id FOR UPDATE"),
        PgParams().Add(*ids));
    if (!locked.ok()) return fail_all(locked.status());
  }
  const size_t succeeded = RunInSavepoints(
      group, [this](const char* sql) ABSL_NO_THREAD_SAFETY_ANALYSIS { return writer_.Exec(sql); }, chain_);
  if (succeeded == 0) {
    writer_.Exec("ROLLBACK").IgnoreError();
    return;
  }
  if (!drops_.empty()) DropUnusedEnvelopes();
  // The head, the notification and the commit in one round trip (values are digits and hex only).
  std::string finish;
  if (sealed_ && chain_.head().seq != start_seq) {
    finish = absl::StrCat("UPDATE audit_head SET seq = ", chain_.head().seq, ", hash = '", chain_.head().hash,
                          "' WHERE id = 1; ");
  }
  if (announced_) absl::StrAppend(&finish, "NOTIFY osh_changes; ");
  absl::StrAppend(&finish, "COMMIT");
  if (absl::Status s = writer_.ExecCommit(finish); !s.ok()) {
    // The COMMIT was sent: it may have landed with its answer lost. This replica's view was not updated
    // (no `committed`), and the feed skips its own rows: it reads them for a while (under feed_mu_, held
    // by LeadGroup for a group that changes what replicas serve, so the feed cannot have passed them).
    commit_uncertain_ = true;
    return fail_all(s);
  }
  if (sealed_ && chain_.head().seq != start_seq) {
    absl::MutexLock head_lock(&sealed_head_mu_);  // AuditChainHead's answer while the database is unreachable
    sealed_head_ = chain_.head();
  }
  for (GroupWrite* w : group) {
    if (w->status.ok() && w->committed) w->committed();
  }
}

absl::Status PostgresStore::Announce(const std::string& kind, const std::string& payload) {
  announced_ = true;
  return writer_.Query(sealed_ ? "INSERT INTO changes (origin, kind, payload, writer_schema) VALUES ($1, $2, $3, 8)"
                               : "INSERT INTO changes_pending (origin, kind, payload) VALUES ($1, $2, $3)",
                       PgParams().Add(replica_id_).Add(kind).Add(payload))
      .status();
}

// --- Changes --------------------------------------------------------------------------------

namespace {
// The sandboxes a batch changes: those it admits (new rows) and the existing ones it updates or deletes.
struct ChangedSandboxes {
  std::vector<std::string> admitted, existing;
};
ChangedSandboxes ChangedBy(const ChangeBatch& batch) {
  ChangedSandboxes out;
  for (const Change& change : batch.changes) {
    std::visit(
        [&](const auto& c) {
          using T = std::decay_t<decltype(c)>;
          if constexpr (std::is_same_v<T, change::AdmitSandbox>) {
            out.admitted.push_back(c.record.context.sandbox_id());
          } else if constexpr (std::is_same_v<T, change::ReplaceProjection>) {
            out.existing.insert(out.existing.end(), c.sandbox_ids.begin(), c.sandbox_ids.end());
          } else {
            out.existing.push_back(c.sandbox_id);
          }
        },
        change);
  }
  return out;
}
}  // namespace

// The locks a batch's group takes first (GroupWrite::locks): the advisory locks of what it is checked
// against, and the rows of the existing sandboxes it changes (a new row has nothing to lock: a second
// admission of one id waits on its unique key).
GroupWrite::Locks LocksOf(const ChangeBatch& batch) {
  return {.ceiling = batch.checked_ceiling ? GroupWrite::LockUse::kChecks : GroupWrite::LockUse::kNone,
          .revisions = batch.checked_revisions ? GroupWrite::LockUse::kChecks : GroupWrite::LockUse::kNone,
          .sandbox_rows = ChangedBy(batch).existing};
}

// One batch's statements and its after-commit step, shared by Commit and CommitAsync.
struct PostgresStore::PendingCommit {
  ChangeBatch batch;
  CommitResult result;
};

std::pair<std::function<absl::Status()>, std::function<void()>> PostgresStore::CommitSteps(PendingCommit* pending) {
  auto run = [this, pending]() ABSL_NO_THREAD_SAFETY_ANALYSIS -> absl::Status {  // by the leader, under mu_
    ChangeBatch& batch = pending->batch;
    CommitResult& result = pending->result;
    result.rows.assign(batch.changes.size(), 0);
    if (batch.checked_ceiling) OSH_RETURN_IF_ERROR(CheckCeilingUnchanged(*batch.checked_ceiling));
    if (batch.checked_revisions) OSH_RETURN_IF_ERROR(CheckRevisionsKnown(*batch.checked_revisions));
    // The rows of the existing sandboxes it changes are locked already, with the whole group's (LeadOnce).
    ChangedSandboxes changed = ChangedBy(batch);
    std::vector<std::string> touched = std::move(changed.admitted);
    touched.insert(touched.end(), changed.existing.begin(), changed.existing.end());
    auto writes_events = WritesEvents(batch, [this](const change::RecordReport& r) ABSL_NO_THREAD_SAFETY_ANALYSIS {
      return SameReportRecorded(r);
    });
    if (!writes_events.ok()) return writes_events.status();
    result.events_written = *writes_events;
    passed_by_.clear();
    for (size_t i = 0; i < batch.changes.size(); ++i) {
      OSH_RETURN_IF_ERROR(ApplyChange(batch.changes[i], &result.rows[i]));
    }
    if (!touched.empty()) {
      auto ids = JsonIdList(touched);
      if (!ids.ok()) return ids.status();
      OSH_RETURN_IF_ERROR(Announce("sandboxes", *ids));
    }
    if (batch.reprojected_scope) {  // "<revision> <scope>"
      OSH_RETURN_IF_ERROR(Announce("reprojection", absl::StrCat(batch.reprojected_revision, " ", *batch.reprojected_scope)));
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

absl::StatusOr<CommitResult> PostgresStore::Commit(ChangeBatch batch) {
  PendingCommit pending{std::move(batch), {}};
  const GroupWrite::Locks locks = LocksOf(pending.batch);
  auto [run, committed] = CommitSteps(&pending);
  OSH_RETURN_IF_ERROR(Write(std::move(run), std::move(committed), /*touches_chain=*/true, locks));
  return std::move(pending.result);
}

void PostgresStore::CommitAsync(ChangeBatch batch, CommitDone done) {
  auto pending = std::make_shared<PendingCommit>(PendingCommit{std::move(batch), {}});
  auto [run, committed] = CommitSteps(pending.get());
  WriteAsync(std::move(run), std::move(committed), /*touches_chain=*/true, LocksOf(pending->batch),
             [pending, done = std::move(done)](absl::Status status) {
               if (!status.ok()) {
                 done(std::move(status));
               } else {
                 done(std::move(pending->result));
               }
             });
}

absl::Status PostgresStore::ApplyChange(const Change& change, int64_t* rows) {
  return std::visit(
      [&](const auto& c) ABSL_NO_THREAD_SAFETY_ANALYSIS -> absl::Status {
        using T = std::decay_t<decltype(c)>;
        if constexpr (std::is_same_v<T, change::AdmitSandbox>) {
          const SandboxRecord& r = c.record;
          std::string envelope_id, digest;
          OSH_RETURN_IF_ERROR(PutEnvelope(*r.envelope, &envelope_id, &digest));
          auto inserted = writer_.Query(
              "INSERT INTO sandboxes (sandbox_id, context, handle_sha256, driver_handle, envelope_id, policy_digest, "
              "verification, signing_key_ids, admitted_at, updated_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)",
              PgParams().Add(r.context.sandbox_id()).AddBytes(policy::SerializeDeterministic(r.context))
                  .AddBytes(r.handle_sha256).Add(r.driver_handle).AddBytes(envelope_id).Add(digest)
                  .Add(std::string(NameOf(r.verification))).Add(JoinIds(r.signing_key_ids)).Add(r.admitted_at_unix).Add(r.updated_at_unix));
          if (!inserted.ok()) {
            if (absl::IsAlreadyExists(inserted.status())) {
              return absl::AlreadyExistsError(absl::StrCat("sandbox '", r.context.sandbox_id(), "' is already admitted"));
            }
            return inserted.status();
          }
          if (r.acquisition_id != 0) {
            // The admission's note settles only while it is still this replica's and in flight. Another
            // replica that counted this one as gone (no heartbeat for kReplicaLeaseMs) has made it due or
            // claimed it, and releases the driver handle: the admission must not commit on that handle.
            auto settled = writer_.Query(
                "DELETE FROM pending_releases WHERE id = $1 AND in_flight_owner = $2 AND claimed_by = ''",
                PgParams().Add(r.acquisition_id).Add(replica_id_));
            if (!settled.ok()) return settled.status();
            if (settled->affected() != 1) return AdmissionTakenOverError(r.context.sandbox_id(), replica_id_);
          }
          *rows = 1;
          return absl::OkStatus();
        } else if constexpr (std::is_same_v<T, change::ReplaceProjection>) {
          auto ids = JsonIdList(c.sandbox_ids);
          if (!ids.ok()) return ids.status();
          const std::string kListed = absl::StrCat("sandbox_id", kInJsonList);
          // The rows first, locked in one order (by id) before the envelope is inserted: two replicas moving
          // overlapping sets queue on the first row they share instead of each holding what the other waits for.
          auto locked = writer_.Query(
              absl::StrCat("SELECT envelope_id, sandbox_id, handle_sha256 FROM sandboxes WHERE ", kListed,
                           " ORDER BY sandbox_id FOR UPDATE"),
              PgParams().Add(*ids));
          if (!locked.ok()) return locked.status();
          std::map<std::string, std::string> stored;  // id -> handle hash, of the rows locked
          std::map<std::string, std::string> envelope_of;
          for (int i = 0; i < locked->rows(); ++i) {
            stored[locked->Bytes(i, 1)] = locked->Bytes(i, 2);
            envelope_of[locked->Bytes(i, 1)] = locked->Bytes(i, 0);
          }
          // Only those still admitted under the handle the caller listed (change.h); the rows are locked, so
          // no re-admission lands between this check and the update.
          const std::vector<std::string> moving = change::StillAdmitted(c, stored, c.handle_sha256s.empty() ? nullptr : &passed_by_);
          if (!c.handle_sha256s.empty()) {
            ids = JsonIdList(moving);
            if (!ids.ok()) return ids.status();
          }
          std::set<std::string> old;
          for (const std::string& id : moving) old.insert(envelope_of[id]);
          if (c.replacing) {
            const std::string was = policy::Sha256(c.replacing->header_bytes());
            for (const std::string& stored : old) {
              if (stored != was) return ProjectionChangedError(c.sandbox_ids.size() == 1 ? c.sandbox_ids[0] : "(several)");
            }
          }
          std::string envelope_id, digest;
          OSH_RETURN_IF_ERROR(PutEnvelope(*c.envelope, &envelope_id, &digest));
          auto moved = writer_.Query(
              absl::StrCat("UPDATE sandboxes SET envelope_id = $2, policy_digest = $3, verification = $4, "
                           "signing_key_ids = $5, updated_at = $6, last_refresh_error = '' WHERE ",
                           kListed),
              PgParams().Add(*ids).AddBytes(envelope_id).Add(digest).Add(std::string(NameOf(c.verification))).Add(JoinIds(c.key_ids))
                  .Add(c.now_unix));
          if (!moved.ok()) return moved.status();
          *rows = moved->affected();
          if (c.require_all && *rows != static_cast<int64_t>(c.sandbox_ids.size())) {
            return absl::NotFoundError(c.sandbox_ids.size() == 1 ? absl::StrCat("no sandbox '", c.sandbox_ids[0], "'")
                                                                 : "some of the sandboxes are gone");
          }
          for (const std::string& was : old) {
            if (was != envelope_id) drops_.push_back(was);
          }
          return absl::OkStatus();
        } else if constexpr (std::is_same_v<T, change::DeleteSandbox>) {
          auto gone = writer_.Query("DELETE FROM sandboxes WHERE sandbox_id = $1 RETURNING driver_handle, envelope_id",
                                    PgParams().Add(c.sandbox_id));
          if (!gone.ok()) return gone.status();
          if (gone->rows() == 0) return absl::NotFoundError(absl::StrCat("no sandbox '", c.sandbox_id, "'"));
          drops_.push_back(gone->Bytes(0, 1));
          OSH_RETURN_IF_ERROR(writer_.Query("INSERT INTO pending_releases (driver_handle, queued_at) VALUES ($1, $2)",
                                            PgParams().Add(gone->Bytes(0, 0)).Add(NowMs() / 1000))
                                  .status());
          *rows = 1;
          return absl::OkStatus();
        } else if constexpr (std::is_same_v<T, change::SetRefreshError>) {
          auto set = writer_.Query("UPDATE sandboxes SET last_refresh_error = $1 WHERE sandbox_id = $2",
                                   PgParams().Add(c.error).Add(c.sandbox_id));
          if (!set.ok()) return set.status();
          *rows = set->affected();
          return absl::OkStatus();
        } else {
          static_assert(std::is_same_v<T, change::RecordReport>);
          auto set = writer_.Query(
              "UPDATE sandboxes SET load_status = $1, load_error = $2, reported_digest = $3, reported_at = $4 "
              "WHERE sandbox_id = $5",
              PgParams().Add(static_cast<int64_t>(c.status)).Add(c.error).Add(c.digest).Add(c.now_unix).Add(c.sandbox_id));
          if (!set.ok()) return set.status();
          *rows = set->affected();
          if (*rows == 0) return absl::NotFoundError(absl::StrCat("no sandbox '", c.sandbox_id, "'"));
          return absl::OkStatus();
        }
      },
      change);
}

absl::Status PostgresStore::InsertAudit(AuditEvent* event) {
  if (event->actor.empty()) event->actor = AuditActorScope::Current();
  if (event->time_unix_ms == 0) event->time_unix_ms = NowMs();
  if (sealed_) {  // this transaction holds the head (LeadOnce)
    chain_.Seal(event, NowMs());
    return InsertSealedAudit(*event);
  }
  trust::MakeTextUtf8(event);  // as sealing would: TEXT columns take valid UTF-8 only
  trust::FitCanonicalSize(event);
  // Unsealed: no fleet-wide lock is waited for. SealPending numbers and chains it after this commits.
  return writer_
      .Query("INSERT INTO audit_pending (time_unix_ms, type, sandbox_id, surface_id, policy_digest, policy_version, "
             "key_ids, outcome, reason, audit_context, actor) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)",
             PgParams().Add(event->time_unix_ms).Add(event->type.name()).Add(event->sandbox_id).Add(event->surface_id)
                 .Add(event->policy_digest).Add(static_cast<int64_t>(event->policy_version)).Add(JoinIds(event->key_ids))
                 .Add(event->outcome.name()).Add(event->reason).AddBytes(EncodeContextMap(event->audit_context))
                 .Add(event->actor))
      .status();
}

void PostgresStore::AddAuditParams(const AuditEvent& event, PgParams& params) {
  params.Add(static_cast<int64_t>(event.seq)).Add(event.time_unix_ms).Add(event.type.name())
      .Add(event.sandbox_id).Add(event.surface_id).Add(event.policy_digest)
      .Add(static_cast<int64_t>(event.policy_version)).Add(JoinIds(event.key_ids)).Add(event.outcome.name())
      .Add(event.reason).AddBytes(EncodeContextMap(event.audit_context)).Add(event.prev_hash)
      .Add(event.hash).Add(event.actor);
}

absl::Status PostgresStore::InsertSealedAudit(const AuditEvent& event) {
  PgParams params;
  AddAuditParams(event, params);
  return writer_.Query(absl::StrCat(kInsertAuditColumns, "($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,8)"), params)
      .status();
}

namespace {

// Inserts a content-addressed row unless present and, either way, holds it (FOR KEY SHARE) until the
// transaction ends, in one statement: `insert` is an INSERT ... ON CONFLICT DO NOTHING RETURNING 1 and
// `held` a SELECT 1 ... FOR KEY SHARE of the same row. A replica dropping the row as unused at the same
// moment either commits first (the row is gone: inserted again on the next try) or waits for this
// transaction and then finds the row used (DeleteUnused).
absl::Status PutHeld(PgConn& conn, const std::string& insert, const std::string& held, const PgParams& params,
                     absl::string_view what) {
  const std::string sql =
      absl::StrCat("WITH ins AS (", insert, ") SELECT (SELECT count(*) FROM ins) + (SELECT count(*) FROM (", held, ") h)");
  for (int tries = 0; tries < 3; ++tries) {
    auto put = conn.Query(sql, params);
    if (!put.ok()) return put.status();
    if (put->Int(0, 0) > 0) return absl::OkStatus();
  }
  return PostgresStorageError(absl::StatusCode::kAborted, absl::StrCat(": the ", what, " kept being dropped"));
}

}  // namespace

absl::Status PostgresStore::PutBody(const std::string& digest, const std::string& body) {
  return PutHeld(writer_, "INSERT INTO bodies (digest, body) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING 1",
                 "SELECT 1 FROM bodies WHERE digest = $1 FOR KEY SHARE", PgParams().Add(digest).AddBytes(body),
                 "policy body");
}

absl::Status PostgresStore::PutEnvelope(const Envelope& envelope, std::string* id, std::string* digest_out) {
  // The envelope first, held (FOR KEY SHARE, as the foreign key of the sandbox row that names it would hold
  // it): a replica dropping it as unused then skips it (DeleteUnused), and its body stays because
  // the envelope names it. One statement when it is present (nearly always). Only a new envelope inserts its
  // body, held (PutHeld) — not merely found present, or a replica dropping the last envelope that used it
  // could delete it between that look and the envelope's insert, whose foreign key then fails (23503: led
  // again, but two replicas churning one envelope can lose that race on every try).
  *digest_out = envelope.policy_digest();
  *id = policy::Sha256(envelope.header_bytes());
  auto held = writer_.Query("SELECT 1 FROM envelopes WHERE id = $1 FOR KEY SHARE", PgParams().AddBytes(*id));
  if (!held.ok()) return held.status();
  if (held->rows() == 1) return absl::OkStatus();
  OSH_RETURN_IF_ERROR(PutBody(*digest_out, envelope.body()));
  // Held too: another replica may have inserted it meanwhile (this insert then does nothing) and a third
  // drop it again before this transaction's sandbox row names it.
  return PutHeld(writer_,
                 "INSERT INTO envelopes (id, header, policy_digest) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING 1",
                 "SELECT 1 FROM envelopes WHERE id = $1 FOR KEY SHARE",
                 PgParams().AddBytes(*id).AddBytes(envelope.header_bytes()).Add(*digest_out), "envelope");
}

void PostgresStore::DropUnusedEnvelopes() {
  // Last, when no write of the group will wait for anything: a drop's row locks are held to the commit,
  // and a later write waiting for another replica that waits for one of them would be a deadlock.
  std::sort(drops_.begin(), drops_.end());
  drops_.erase(std::unique(drops_.begin(), drops_.end()), drops_.end());
  if (!writer_.Exec("SAVEPOINT d").ok()) return;
  if (!DeleteUnused(writer_, &drops_).ok()) writer_.Exec("ROLLBACK TO d").IgnoreError();  // left to the sweep
  writer_.Exec("RELEASE d").IgnoreError();
}

absl::Status PostgresStore::DeleteUnused(PgConn& conn, const std::vector<std::string>* envelope_ids) {
  // A row is deleted only if it is free and unused: candidates no committed row uses are locked first
  // (FOR UPDATE SKIP LOCKED: skipped if another transaction holds one — one using it, by its sandbox
  // row's foreign key or PutEnvelope/PutHeld's FOR KEY SHARE until it commits, or one dropping it), then
  // deleted by a statement begun after the locks, which sees every sandbox, envelope and revision
  // committed before. Nothing here waits for a lock: never part of a deadlock. Lists go as JSON
  // (kInJsonList); envelope ids, which are bytes, hex-encoded in it.
  constexpr char kListedEnvelopes[] =
      "e.id = ANY(ARRAY(SELECT decode(h, 'hex') FROM json_array_elements_text($1::json) h))";
  auto hex_list = [](const std::vector<std::string>& ids) {
    std::vector<std::string> hex;
    for (const std::string& id : ids) hex.push_back(absl::BytesToHexString(id));
    return JsonIdList(hex);
  };
  PgParams listed;
  if (envelope_ids != nullptr) {
    if (envelope_ids->empty()) return absl::OkStatus();
    auto json = hex_list(*envelope_ids);
    if (!json.ok()) return json.status();
    listed.Add(*json);
  }
  auto locked = conn.Query(absl::StrCat("SELECT e.id FROM envelopes e WHERE ", envelope_ids ? kListedEnvelopes : "TRUE",
                                        " AND ", kEnvelopeUnused, " FOR UPDATE OF e SKIP LOCKED"),
                           listed);
  if (!locked.ok()) return locked.status();
  std::vector<std::string> digests;
  if (locked->rows() > 0) {
    std::vector<std::string> ids;
    for (int i = 0; i < locked->rows(); ++i) ids.push_back(locked->Bytes(i, 0));
    auto json = hex_list(ids);
    if (!json.ok()) return json.status();
    auto dropped = conn.Query(absl::StrCat("DELETE FROM envelopes e WHERE ", kListedEnvelopes, " AND ", kEnvelopeUnused,
                                           " RETURNING e.policy_digest"),
                              PgParams().Add(*json));
    if (!dropped.ok()) return dropped.status();
    for (int i = 0; i < dropped->rows(); ++i) digests.push_back(dropped->Bytes(i, 0));
  }
  // The bodies likewise (of the envelopes deleted, or every one): a revision or an envelope another
  // transaction is committing with a body holds it (PutHeld; policy_revisions has no foreign key to stop
  // the delete), and it is then kept.
  if (envelope_ids != nullptr && digests.empty()) return absl::OkStatus();
  const std::string listed_bodies = absl::StrCat("b.digest", kInJsonList);
  std::sort(digests.begin(), digests.end());
  digests.erase(std::unique(digests.begin(), digests.end()), digests.end());
  PgParams of_digests;
  if (envelope_ids != nullptr) {
    auto json = JsonIdList(digests);
    if (!json.ok()) return json.status();
    of_digests.Add(*json);
  }
  auto bodies = conn.Query(absl::StrCat("SELECT b.digest FROM bodies b WHERE ", envelope_ids ? listed_bodies : "TRUE",
                                        " AND ", kBodyUnused, " FOR UPDATE OF b SKIP LOCKED"),
                           of_digests);
  if (!bodies.ok()) return bodies.status();
  if (bodies->rows() == 0) return absl::OkStatus();
  std::vector<std::string> free;
  for (int i = 0; i < bodies->rows(); ++i) free.push_back(bodies->Bytes(i, 0));
  auto json = JsonIdList(free);
  if (!json.ok()) return json.status();
  return conn.Query(absl::StrCat("DELETE FROM bodies b WHERE ", listed_bodies, " AND ", kBodyUnused), PgParams().Add(*json))
      .status();
}

// --- Reads ----------------------------------------------------------------------------------

absl::StatusOr<PgResult> PostgresStore::Read(const std::string& sql, const PgParams& params) {
  if (!reader_.healthy()) OSH_RETURN_IF_ERROR(reader_.Reconnect());
  auto result = reader_.Query(sql, params);
  if (!result.ok() && absl::IsUnavailable(result.status()) && reader_.Reconnect().ok()) {
    return reader_.Query(sql, params);
  }
  return result;
}

absl::StatusOr<std::vector<SandboxRecord>> PostgresStore::ReadSandboxes(const std::string& where,
                                                                       const std::string& arg,
                                                                       std::vector<std::string>* skipped) {
  PgParams params;
  if (!arg.empty()) params.Add(arg);
  auto rows = Read(absl::StrCat(
                       "SELECT s.context, s.handle_sha256, s.driver_handle, e.header, e.policy_digest, s.verification, "
                       "s.signing_key_ids, s.admitted_at, s.updated_at, s.load_status, s.load_error, s.reported_digest, "
                       "s.reported_at, s.last_refresh_error, b.body, s.sandbox_id FROM sandboxes s "
                       "JOIN envelopes e ON e.id = s.envelope_id JOIN bodies b ON b.digest = e.policy_digest ",
                       where),
                   params);
  if (!rows.ok()) return rows.status();
  std::vector<SandboxRecord> out;
  out.reserve(rows->rows());
  for (int i = 0; i < rows->rows(); ++i) {
    SandboxRecord r;
    r.context_bytes = rows->Bytes(i, 0);
    // A row that does not decode is left out, said once per read, rather than failing the whole read: one
    // bad row stopped every replica's feed for good (and every start). A replica starting does not serve
    // it (its handle is unknown: fail closed); one that has it keeps what it verified before (the feed
    // neither applies nor removes it: removing would end its watchers as revoked and release its handle by
    // context — review 112). The others go on (review 108).
    const auto skip = [&](absl::string_view why) {
      if (skipped != nullptr) skipped->push_back(rows->Bytes(i, 15));
      if (notice_) {
        notice_(absl::StrCat("sandbox row '", common::BoundedText(rows->Bytes(i, 15), 256), "' is not served: ", why,
                             " (restore it from a backup, or delete the sandbox)"));
      }
    };
    if (!r.context.ParseFromString(r.context_bytes) || r.context.sandbox_id() != rows->Bytes(i, 15)) {
      skip("its context does not decode, or names another sandbox");
      continue;
    }
    r.handle_sha256 = rows->Bytes(i, 1);
    r.driver_handle = rows->Bytes(i, 2);
    auto envelope = envelopes().Intern(rows->Bytes(i, 3), envelopes().InternBody(rows->Bytes(i, 4), rows->Bytes(i, 14)));
    if (!envelope.ok()) {
      skip(envelope.status().message());
      continue;
    }
    r.envelope = *std::move(envelope);
    r.verification = VerificationFromStored(rows->Bytes(i, 5));
    r.signing_key_ids = SplitIds(rows->Bytes(i, 6));
    r.admitted_at_unix = rows->Int(i, 7);
    r.updated_at_unix = rows->Int(i, 8);
    r.load_status = static_cast<LoadStatus>(rows->Int(i, 9));
    r.load_error = rows->Bytes(i, 10);
    r.reported_digest = rows->Bytes(i, 11);
    r.reported_at_unix = rows->Int(i, 12);
    r.last_refresh_error = rows->Bytes(i, 13);
    out.push_back(std::move(r));
  }
  return out;
}

absl::StatusOr<std::vector<SandboxRecord>> PostgresStore::LoadSandboxes() {
  absl::MutexLock lock(&read_mu_);
  return ReadSandboxes("", "");
}

absl::StatusOr<std::vector<SandboxRecord>> PostgresStore::LoadSandboxesById(const std::vector<std::string>& ids) {
  auto json = JsonIdList(ids);
  if (!json.ok()) return json.status();
  absl::MutexLock lock(&read_mu_);
  return ReadSandboxes(absl::StrCat("WHERE s.sandbox_id", kInJsonList), *json);
}

// --- Releases -------------------------------------------------------------------------------

std::function<absl::Status()> PostgresStore::NoteStep(const RuntimeContext& context,
                                                      const std::string& idempotency_key, int64_t* id) {
  return [this, id, context_bytes = policy::SerializeDeterministic(context),
          idempotency_key]() ABSL_NO_THREAD_SAFETY_ANALYSIS -> absl::Status {
    auto inserted = writer_.Query(
        "INSERT INTO pending_releases (driver_handle, queued_at, in_flight_owner, context, idempotency_key) "
        "VALUES ('', $1, $2, $3, $4) RETURNING id",
        PgParams().Add(NowMs() / 1000).Add(replica_id_).AddBytes(context_bytes).Add(idempotency_key));
    if (!inserted.ok()) return inserted.status();
    *id = inserted->Int(0, 0);
    return absl::OkStatus();
  };
}

absl::StatusOr<int64_t> PostgresStore::RecordAdmissionIntent(const RuntimeContext& context,
                                                           const std::string& idempotency_key) {
  int64_t id = 0;
  OSH_RETURN_IF_ERROR(Write(NoteStep(context, idempotency_key, &id), nullptr, /*touches_chain=*/false));
  return id;
}

void PostgresStore::RecordAdmissionIntentAsync(const RuntimeContext& context, const std::string& idempotency_key,
                                               std::function<void(absl::StatusOr<int64_t>)> done) {
  auto id = std::make_shared<int64_t>(0);
  WriteAsync(NoteStep(context, idempotency_key, id.get()), nullptr, /*touches_chain=*/false, GroupWrite::Locks{},
             [id, done = std::move(done)](absl::Status status) {
               if (!status.ok()) {
                 done(std::move(status));
               } else {
                 done(*id);
               }
             });
}

absl::Status PostgresStore::QueueAcquiredRelease(int64_t id, const std::string& driver_handle) {
  return Write([&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return writer_
        .Query("UPDATE pending_releases SET in_flight_owner = '', driver_handle = $1 WHERE id = $2",
               PgParams().Add(driver_handle).Add(id))
        .status();
  }, nullptr, /*touches_chain=*/false);
}

absl::Status PostgresStore::DropAdmissionIntent(int64_t id) {
  return Write([&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return writer_.Query("DELETE FROM pending_releases WHERE id = $1 AND in_flight_owner <> ''", PgParams().Add(id))
        .status();
  }, nullptr, /*touches_chain=*/false);
}

absl::StatusOr<std::vector<PendingRelease>> PostgresStore::PendingReleases() {
  // Claims what is due and not being delivered by another live replica: notes no admission is settling
  // (none in flight, or in flight on another replica that is gone: never this one's own, which its
  // admission settles), not claimed, or claimed by this replica, by a replica that is gone, or so long
  // ago that the claimer must be stuck.
  absl::MutexLock lock(&read_mu_);
  auto claimed = Read(
      absl::StrCat("UPDATE pending_releases p SET claimed_by = $1, claimed_until = ", kDbNowMs, " + $2 "
                   "WHERE p.id IN (SELECT id FROM pending_releases WHERE "
                   "(in_flight_owner = '' OR (in_flight_owner <> $1 AND in_flight_owner NOT IN "
                   "(SELECT id FROM replicas WHERE heartbeat_at > ", kDbNowMs, " - $3))) AND (claimed_by IN ('', $1) OR claimed_until < ", kDbNowMs,
                   " OR claimed_by NOT IN (SELECT id FROM replicas WHERE heartbeat_at > ", kDbNowMs,
                   " - $3)) ORDER BY id LIMIT 1000 FOR UPDATE SKIP LOCKED) "
                   "RETURNING p.id, p.driver_handle, p.context, p.idempotency_key"),
      PgParams().Add(replica_id_).Add(kReleaseClaimMs).Add(kReplicaLeaseMs));
  if (!claimed.ok()) return claimed.status();
  std::vector<PendingRelease> out;
  for (int i = 0; i < claimed->rows(); ++i) {
    PendingRelease release{claimed->Int(i, 0), claimed->Bytes(i, 1), {}, claimed->Bytes(i, 3)};
    if (!release.context.ParseFromString(claimed->Bytes(i, 2))) {
      return PostgresStorageError(absl::StatusCode::kDataLoss, ": a pending release does not decode");
    }
    out.push_back(std::move(release));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
  return out;
}

absl::StatusOr<uint64_t> PostgresStore::CountPendingReleases() {
  absl::MutexLock lock(&read_mu_);
  auto count = Read(absl::StrCat("SELECT COUNT(*) FROM pending_releases WHERE in_flight_owner = '' OR (in_flight_owner "
                                 "<> $2 AND in_flight_owner NOT IN (SELECT id FROM replicas WHERE heartbeat_at > ",
                                 kDbNowMs, " - $1))"),
                    PgParams().Add(kReplicaLeaseMs).Add(replica_id_));
  if (!count.ok()) return count.status();
  return static_cast<uint64_t>(count->Int(0, 0));
}

absl::Status PostgresStore::CompleteRelease(int64_t id, AuditEvent event) {
  return Write([&]() ABSL_NO_THREAD_SAFETY_ANALYSIS -> absl::Status {
    auto done = writer_.Query("DELETE FROM pending_releases WHERE id = $1", PgParams().Add(id));
    if (!done.ok()) return done.status();
    if (done->affected() == 0) return absl::OkStatus();  // already completed: nothing to record twice
    return InsertAudit(&event);
  });
}

// --- Policies -------------------------------------------------------------------------------

absl::StatusOr<PolicyRevisionRecord> PostgresStore::AppendPolicyRevision(const std::string& scope,
                                                                         const std::optional<std::string>& body,
                                                                         std::optional<uint64_t> expected_revision,
                                                                         int64_t now_unix, AuditEvent event) {
  PolicyRevisionRecord record;
  OSH_RETURN_IF_ERROR(Write([&]() ABSL_NO_THREAD_SAFETY_ANALYSIS -> absl::Status {
    // One revision of any scope at a time across the fleet, after every batch checked against the
    // revisions before has committed: the group holds the revisions' lock exclusive, taken before any of
    // its writes ran (GroupWrite::locks; a batch checked against the revisions holds it shared).
    auto latest = writer_.Query(absl::StrCat(kRevisionColumns, "WHERE r.scope = $1 ORDER BY r.revision DESC LIMIT 1"),
                                PgParams().Add(scope));
    if (!latest.ok()) return latest.status();
    const uint64_t current = latest->rows() ? static_cast<uint64_t>(latest->Int(0, 2)) : 0;
    const uint64_t live = (latest->rows() && !latest->Bytes(0, 3).empty()) ? current : 0;
    if (expected_revision && *expected_revision != live) {
      return absl::AbortedError(absl::StrCat("scope '", scope, "' is at revision ", live, ", expected ", *expected_revision));
    }
    if (!body && live == 0) return absl::NotFoundError(absl::StrCat("scope '", scope, "' has no policy"));
    const std::string digest = body ? policy::Sha256Hex(*body) : std::string();
    std::optional<PolicyRevisionRecord> latest_record;
    if (latest->rows()) latest_record = RevisionFrom(*latest, 0);
    AuditEvent attempt = event;  // this run's (a group's write may run again; the caller's event stays as given)
    if (auto unchanged = UnchangedRevision(latest_record, digest, &attempt)) {
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
    auto inserted = writer_.Query(
        "INSERT INTO policy_revisions (scope, revision, digest, created_at) VALUES ($1, $2, $3, $4) RETURNING seq",
        PgParams().Add(scope).Add(static_cast<int64_t>(record.revision)).Add(record.digest).Add(now_unix));
    if (!inserted.ok()) return inserted.status();
    record.seq = static_cast<uint64_t>(inserted->Int(0, 0));
    OSH_RETURN_IF_ERROR(Announce("policy", scope));
    attempt.policy_digest = record.digest;
    attempt.policy_version = record.seq;
    return InsertAudit(&attempt);
  }, [&] {
    if (!record.unchanged) revision_listeners().ForEach([&](RevisionListener& l) { l.OnPolicyRevision(record, /*remote=*/false); });
  },
  /*touches_chain=*/true, GroupWrite::Locks{.revisions = GroupWrite::LockUse::kSets}));
  return record;
}

absl::StatusOr<std::optional<PolicyRevisionRecord>> PostgresStore::LatestPolicyRevision(const std::string& scope) {
  absl::MutexLock lock(&read_mu_);
  auto latest = Read(absl::StrCat(kRevisionColumns, "WHERE r.scope = $1 ORDER BY r.revision DESC LIMIT 1"),
                     PgParams().Add(scope));
  if (!latest.ok()) return latest.status();
  if (latest->rows() == 0) return std::optional<PolicyRevisionRecord>();
  return std::optional<PolicyRevisionRecord>(RevisionFrom(*latest, 0));
}

absl::StatusOr<PolicyRevisionRecord> PostgresStore::GetPolicyRevision(const std::string& scope, uint64_t revision) {
  absl::MutexLock lock(&read_mu_);
  auto found = Read(absl::StrCat(kRevisionColumns, "WHERE r.scope = $1 AND r.revision = $2"),
                    PgParams().Add(scope).Add(static_cast<int64_t>(revision)));
  if (!found.ok()) return found.status();
  if (found->rows() == 0) return absl::NotFoundError(absl::StrCat("scope '", scope, "' has no revision ", revision));
  return RevisionFrom(*found, 0);
}

absl::StatusOr<std::vector<PolicyRevisionRecord>> PostgresStore::ListPolicyRevisions(const std::string& scope,
                                                                                  uint64_t after_seq, uint32_t limit,
                                                                                  bool bodies) {
  absl::MutexLock lock(&read_mu_);
  PgParams params;
  params.Add(static_cast<int64_t>(after_seq));
  if (!scope.empty()) params.Add(scope);
  if (limit != 0) params.Add(static_cast<int64_t>(limit));
  const std::string limit_param = absl::StrCat(" LIMIT $", scope.empty() ? 2 : 3);
  auto found = Read(absl::StrCat(bodies ? kRevisionColumns : kRevisionColumnsWithoutBody, "WHERE r.seq > $1 ",
                                 scope.empty() ? "" : "AND r.scope = $2 ",
                                 "ORDER BY r.seq", limit == 0 ? "" : limit_param),
                    params);
  if (!found.ok()) return found.status();
  std::vector<PolicyRevisionRecord> out;
  for (int i = 0; i < found->rows(); ++i) out.push_back(RevisionFrom(*found, i));
  return out;
}

absl::StatusOr<std::vector<PolicyRevisionRecord>> PostgresStore::LatestPolicyRevisions() {
  absl::MutexLock lock(&read_mu_);
  auto found = Read(absl::StrCat(kRevisionColumns,
                                 "WHERE r.revision = (SELECT MAX(revision) FROM policy_revisions WHERE scope = r.scope) "
                                 "ORDER BY r.seq"));
  if (!found.ok()) return found.status();
  std::vector<PolicyRevisionRecord> out;
  for (int i = 0; i < found->rows(); ++i) out.push_back(RevisionFrom(*found, i));
  return out;
}

absl::StatusOr<uint64_t> PostgresStore::CountLivePolicies() {
  absl::MutexLock lock(&read_mu_);
  auto count = Read(
      "SELECT COUNT(*) FROM policy_revisions r WHERE r.digest <> '' AND r.revision = "
      "(SELECT MAX(revision) FROM policy_revisions WHERE scope = r.scope)");
  if (!count.ok()) return count.status();
  return static_cast<uint64_t>(count->Int(0, 0));
}

absl::StatusOr<int64_t> PostgresStore::LockCeiling(bool exclusive) {
  // The read is a statement of its own, after the lock: in READ COMMITTED it sees a SaveCeiling that
  // committed while this transaction waited for the lock (SaveCeiling holds it exclusive).
  OSH_RETURN_IF_ERROR(writer_
                          .Query(exclusive ? "SELECT pg_advisory_xact_lock($1)" : "SELECT pg_advisory_xact_lock_shared($1)",
                                 PgParams().Add(kCeilingLock))
                          .status());
  return ReadCeilingVersion();
}

absl::StatusOr<int64_t> PostgresStore::ReadCeilingVersion() {
  auto current = writer_.Query("SELECT version FROM ceiling WHERE id = 1");
  if (!current.ok()) return current.status();
  return current->rows() ? current->Int(0, 0) : kNoCeiling;
}

absl::Status PostgresStore::CheckCeilingUnchanged(int64_t checked) {
  if (!group_ceiling_) {  // a SetCeiling earlier in the group: read again (the group holds the lock)
    auto stored = ReadCeilingVersion();
    if (!stored.ok()) return stored.status();
    group_ceiling_ = *stored;
  }
  if (*group_ceiling_ != checked) return CeilingChangedError(checked, *group_ceiling_);
  return absl::OkStatus();
}

absl::StatusOr<bool> PostgresStore::SameReportRecorded(const change::RecordReport& r) {
  // The row locked here (a group of one locks it only with its write, review 118): another replica's report
  // committed meanwhile is waited for and read, not compared with the row as it was. Locked by its id alone
  // and compared here: with the comparison in the WHERE, a row this transaction's snapshot shows with the
  // old report does not match, so it was neither locked nor waited for, and two replicas taking the same new
  // report at once each audited it (stop 69's two-replica test). A report of another digest than the
  // admitted one (a supervisor behind) is recorded every time, as in SQLite.
  auto row = writer_.Query("SELECT load_status, load_error, reported_digest, policy_digest FROM sandboxes "
                           "WHERE sandbox_id = $1 FOR UPDATE",
                           PgParams().Add(r.sandbox_id));
  if (!row.ok()) return row.status();
  return row->rows() > 0 && row->Int(0, 0) == static_cast<int64_t>(r.status) && row->Bytes(0, 1) == r.error &&
         row->Bytes(0, 2) == r.digest && row->Bytes(0, 3) == r.digest;
}

absl::Status PostgresStore::CheckRevisionsKnown(const std::map<std::string, uint64_t>& checked) {
  // The group holds the revisions' lock (GroupWrite::locks: LocksOf the batch), taken before any of its
  // writes ran; every revision's append holds it exclusive.
  auto latest = writer_.Query("SELECT scope, MAX(revision) FROM policy_revisions GROUP BY scope");
  if (!latest.ok()) return latest.status();
  std::vector<std::pair<std::string, uint64_t>> stored;
  for (int i = 0; i < latest->rows(); ++i) stored.emplace_back(latest->Bytes(i, 0), static_cast<uint64_t>(latest->Int(i, 1)));
  return store::CheckRevisionsKnown(checked, stored);
}

absl::StatusOr<std::optional<AuditEvent>> PostgresStore::LatestAuditEvent(trust::audit::Type type_enum,
                                                                          trust::audit::Outcome outcome_enum) {
  const std::string type(trust::audit::NameOf(type_enum)), outcome(trust::audit::NameOf(outcome_enum));
  SealPending(SealWait::kBriefly).IgnoreError();
  std::optional<uint64_t> seq;
  {
    absl::MutexLock lock(&read_mu_);
    // The literal type lets PostgreSQL use the partial index for ceiling_set.
    auto found = type == "ceiling_set"
                     ? Read("SELECT seq FROM audit_events WHERE type = 'ceiling_set' AND outcome = $1 "
                            "ORDER BY seq DESC LIMIT 1",
                            PgParams().Add(outcome))
                     : Read("SELECT seq FROM audit_events WHERE type = $2 AND outcome = $1 ORDER BY seq DESC LIMIT 1",
                            PgParams().Add(outcome).Add(type));
    if (!found.ok()) return found.status();
    if (found->rows() > 0) seq = static_cast<uint64_t>(found->Int(0, 0));
  }
  if (!seq) return std::optional<AuditEvent>();
  auto events = ListAuditEvents(*seq - 1, 1);
  if (!events.ok()) return events.status();
  if (events->empty() || events->front().seq != *seq) return PostgresStorageError(absl::StatusCode::kDataLoss, ": an audit event vanished");
  return std::optional<AuditEvent>(std::move(events->front()));
}

absl::Status PostgresStore::SaveCeiling(const std::string& ceiling_bytes, uint64_t version, AuditEvent event,
                                        const CeilingEventCompleter& complete) {
  return Write([&]() ABSL_NO_THREAD_SAFETY_ANALYSIS -> absl::Status {
    // A write after this one in its group checks against what this one stores (or, if it is rolled
    // back, the ceiling in force): it reads the ceiling again, not the version its group read first.
    group_ceiling_.reset();
    // Every transaction that checked a batch against the ceiling in force has committed (or ended): the
    // group holds the ceiling's lock exclusive, taken before any of its writes ran (GroupWrite::locks).
    auto current = ReadCeilingVersion();
    if (!current.ok()) return current.status();
    if (*current != kNoCeiling && static_cast<uint64_t>(*current) >= version) {
      return common::Refused(absl::StatusCode::kAborted, "rollback",
                             absl::StrCat("ceiling version ", version, " is not above the stored version ", *current));
    }
    OSH_RETURN_IF_ERROR(writer_
                            .Query("INSERT INTO ceiling (id, version, ceiling) VALUES (1, $1, $2) "
                                   "ON CONFLICT (id) DO UPDATE SET version = $1, ceiling = $2",
                                   PgParams().Add(static_cast<int64_t>(version)).AddBytes(ceiling_bytes))
                            .status());
    OSH_RETURN_IF_ERROR(Announce("ceiling", ""));
    if (complete) {
      // Under the ceiling's lock: every batch checked against an older ceiling committed before this
      // statement (and is counted) or will be refused (ceiling_changed).
      auto bodies = writer_.Query(
          "SELECT b.body, COUNT(*) FROM sandboxes s JOIN bodies b ON b.digest = s.policy_digest GROUP BY b.digest, b.body");
      if (!bodies.ok()) return bodies.status();
      std::vector<AdmittedBody> admitted;
      for (int i = 0; i < bodies->rows(); ++i) {
        admitted.push_back({bodies->Bytes(i, 0), static_cast<uint64_t>(bodies->Int(i, 1))});
      }
      complete(admitted, &event);
    }
    return InsertAudit(&event);
  }, [&] { ceiling_listeners().ForEach([&](CeilingListener& l) { l.OnCeiling(ceiling_bytes, version, /*remote=*/false); }); },
  /*touches_chain=*/true, GroupWrite::Locks{.ceiling = GroupWrite::LockUse::kSets});
}

absl::StatusOr<std::optional<std::string>> PostgresStore::LoadCeiling() {
  absl::MutexLock lock(&read_mu_);
  auto found = Read("SELECT ceiling FROM ceiling WHERE id = 1");
  if (!found.ok()) return found.status();
  if (found->rows() == 0) return std::optional<std::string>();
  return std::optional<std::string>(found->Bytes(0, 0));
}

// --- Audit ----------------------------------------------------------------------------------

absl::Status PostgresStore::AppendAudit(AuditEvent event) {
  return Write([&]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return InsertAudit(&event); });
}

StoreStats PostgresStore::Stats() {
  StoreStats stats;
  stats.audit_head_seq = AuditChainHead().seq;
  return stats;
}

absl::StatusOr<bool> PostgresStore::SealPending(SealWait wait) {
  absl::MutexLock lock(&seal_mu_);
  if (!sealer_.healthy()) OSH_RETURN_IF_ERROR(sealer_.Reconnect());
  // At most kSealRounds batches a call: writers that keep appending never keep a reader here.
  for (int round = 0; round < kSealRounds; ++round) {
    // Nothing pending (the common case between writes): no transaction, no lock.
    auto any = sealer_.Query(kAnyPending);
    if (!any.ok()) return any.status();
    if (any->Int(0, 0) == 0) return true;
    OSH_RETURN_IF_ERROR(sealer_.Exec("BEGIN"));
    absl::StatusOr<SealOutcome> outcome = SealBatch(wait);
    if (!outcome.ok()) {
      sealer_.Exec("ROLLBACK").IgnoreError();
      return outcome.status();
    }
    if (*outcome == SealOutcome::kSkipped) return false;  // the head was taken: its holder seals, or the next try
    if (*outcome == SealOutcome::kDone) return true;
  }
  return true;
}

absl::StatusOr<PostgresStore::SealOutcome> PostgresStore::SealBatch(SealWait wait) {
  // The head row stays locked until this transaction ends: one sealer at a time across the fleet, and
  // each sees (a statement begun after the lock) everything the one before moved. The feed never waits
  // for it (a write holding it seals, and notifies); a reader of the log waits a little.
  if (wait == SealWait::kBriefly) {
    OSH_RETURN_IF_ERROR(sealer_.Exec(absl::StrCat("SET LOCAL lock_timeout = '", kSealWaitMs, "ms'")));
  }
  auto head = sealer_.Query(wait == SealWait::kNever
                                ? "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE SKIP LOCKED"
                                : "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE");
  if (!head.ok()) return head.status();
  if (head->rows() == 0 && wait == SealWait::kNever) {
    OSH_RETURN_IF_ERROR(sealer_.Exec("ROLLBACK"));
    return SealOutcome::kSkipped;
  }
  if (head->rows() != 1) return PostgresStorageError(absl::StatusCode::kDataLoss, ": the audit head row is missing");
  trust::ChainSealer chain;
  chain.Reset({static_cast<uint64_t>(head->Int(0, 0)), head->Bytes(0, 1)});
  const uint64_t start_seq = chain.head().seq;
  int64_t changes = 0;
  auto more = MovePending(sealer_, chain, &changes);
  if (!more.ok()) return more.status();
  std::string finish;
  if (chain.head().seq != start_seq) {
    finish = absl::StrCat("UPDATE audit_head SET seq = ", chain.head().seq, ", hash = '", chain.head().hash,
                          "' WHERE id = 1; ");
  }
  if (changes > 0) absl::StrAppend(&finish, "NOTIFY osh_changes; ");
  absl::StrAppend(&finish, "COMMIT");
  OSH_RETURN_IF_ERROR(sealer_.ExecCommit(finish));
  if (chain.head().seq != start_seq) {
    absl::MutexLock head_lock(&sealed_head_mu_);
    sealed_head_ = chain.head();
  }
  return *more ? SealOutcome::kMore : SealOutcome::kDone;
}

absl::StatusOr<bool> PostgresStore::MovePending(PgConn& conn, trust::ChainSealer& chain, int64_t* changes) {
  auto rows = conn.Query(absl::StrCat(
      "SELECT id, time_unix_ms, type, sandbox_id, surface_id, policy_digest, policy_version, key_ids, outcome, "
      "reason, audit_context, actor FROM audit_pending ORDER BY id LIMIT ", kSealBatch));
  if (!rows.ok()) return rows.status();
  std::vector<int64_t> ids;
  PgParams params;
  std::string values;
  int n = 0;
  for (int i = 0; i < rows->rows(); ++i) {
    AuditEvent e;
    ids.push_back(rows->Int(i, 0));
    DecodeEventColumns(*rows, i, &e);
    e.actor = rows->Bytes(i, 11);
    chain.Seal(&e, e.time_unix_ms);
    absl::StrAppend(&values, i == 0 ? "(" : ",(");
    for (int k = 0; k < 14; ++k) absl::StrAppend(&values, k == 0 ? "$" : ",$", ++n);
    values += ",8)";
    AddAuditParams(e, params);
  }
  if (!ids.empty()) {
    OSH_RETURN_IF_ERROR(conn.Query(absl::StrCat(kInsertAuditColumns, values), params).status());
    OSH_RETURN_IF_ERROR(conn.Query("DELETE FROM audit_pending WHERE id = ANY($1::bigint[])",
                                   PgParams().Add(absl::StrCat("{", absl::StrJoin(ids, ","), "}")))
                            .status());
  }
  // Feed rows keep the order they were appended in (a re-projection's announcement after its sandboxes).
  auto moved = conn.Query(absl::StrCat(
      "WITH moved AS (DELETE FROM changes_pending WHERE id IN (SELECT id FROM changes_pending ORDER BY id LIMIT ",
      kSealBatch, ") RETURNING id, origin, kind, payload), ins AS (INSERT INTO changes (origin, kind, payload, "
      "writer_schema) SELECT origin, kind, payload, 8 FROM moved ORDER BY id RETURNING 1) SELECT COUNT(*) FROM ins"));
  if (!moved.ok()) return moved.status();
  *changes = moved->Int(0, 0);
  return static_cast<int>(ids.size()) == kSealBatch || *changes == kSealBatch;
}

AuditLog::ChainHead PostgresStore::AuditChainHead() {
  // What was appended so far is counted; a head held elsewhere past kSealWaitMs (or a database that fails):
  // what is sealed.
  SealPending(SealWait::kBriefly).IgnoreError();
  {
    absl::MutexLock lock(&read_mu_);
    auto head = Read("SELECT seq, hash FROM audit_head WHERE id = 1");
    if (head.ok() && head->rows() == 1) return {static_cast<uint64_t>(head->Int(0, 0)), head->Bytes(0, 1)};
  }
  absl::MutexLock head_lock(&sealed_head_mu_);  // unreachable database: the last head this replica sealed
  return {sealed_head_.seq, sealed_head_.hash};
}

absl::StatusOr<std::vector<AuditEvent>> PostgresStore::ListAuditEvents(uint64_t after_seq, uint32_t limit) {
  // Every event appended before this call is listed, unless the head stays held elsewhere past
  // kSealWaitMs: then what is sealed (the rest follows on a later call).
  SealPending(SealWait::kBriefly).IgnoreError();
  absl::MutexLock lock(&read_mu_);
  auto rows = Read(
      "SELECT seq, time_unix_ms, type, sandbox_id, surface_id, policy_digest, policy_version, key_ids, outcome, "
      "reason, audit_context, prev_hash, hash, actor FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2",
      PgParams().Add(static_cast<int64_t>(after_seq)).Add(static_cast<int64_t>(limit == 0 ? 1000 : limit)));
  if (!rows.ok()) return rows.status();
  std::vector<AuditEvent> out;
  for (int i = 0; i < rows->rows(); ++i) {
    AuditEvent e;
    e.seq = static_cast<uint64_t>(rows->Int(i, 0));
    DecodeEventColumns(*rows, i, &e);
    e.prev_hash = rows->Bytes(i, 11);
    e.hash = rows->Bytes(i, 12);
    e.actor = rows->Bytes(i, 13);
    out.push_back(std::move(e));
  }
  return out;
}

// --- Interceptor records ----------------------------------------------------------------------
// No audit event (but an operator's seed's) and nothing a view applies: these writes neither take the
// fleet-wide head lock (a seed's does, for its event) nor hold off the feed. Reads go to the database every time, so a record another replica wrote is seen at once.

absl::Status PostgresStore::PutInterceptorRecord(const std::string& sandbox, const std::string& record,
                                                 std::optional<uint64_t> expected_generation,
                                                 const std::optional<std::string>* expected_previous, AuditEvent* event) {
  return Write([&]() ABSL_NO_THREAD_SAFETY_ANALYSIS -> absl::Status {
    if (expected_generation.has_value()) {
      // Shared with every other such record write, exclusive against a catalogue change (which updates
      // the row, then checks the records inside its transaction): while one is being checked and committed
      // the row is skipped, not waited for (this replica's other writes would wait with it), and the write
      // is refused as the change's commit would refuse it.
      auto generation =
          writer_.Query("SELECT generation FROM provider_profile_generation WHERE id = 1 FOR SHARE SKIP LOCKED");
      if (!generation.ok()) return generation.status();
      if (generation->rows() == 0) {
        // Taken by a change, or missing altogether (which no change would ever end).
        auto exists = writer_.Query("SELECT 1 FROM provider_profile_generation WHERE id = 1");
        if (!exists.ok()) return exists.status();
        if (exists->rows() == 0) {
          return PostgresStorageError(absl::StatusCode::kDataLoss, ": the provider-profile generation row is missing");
        }
        return CatalogueChanged(*expected_generation);
      }
      if (static_cast<uint64_t>(generation->Int(0, 0)) != *expected_generation) {
        return CatalogueChanged(*expected_generation);
      }
    }
    if (expected_previous != nullptr && expected_previous->has_value() && **expected_previous == record) {
      // Stored as it is already: the row is held (a concurrent writer's is waited for, and the condition
      // read again on it) and only the event is written; the row and its version stay as they are.
      auto held = writer_.Query("SELECT 1 FROM interceptor_records WHERE sandbox = $1 AND record = $2 FOR SHARE",
                                PgParams().Add(sandbox).AddBytes(record));
      if (!held.ok()) return held.status();
      if (held->rows() != 1) return RecordChanged(sandbox);
      return event != nullptr ? InsertAudit(event) : absl::OkStatus();
    }
    if (expected_previous != nullptr) {
      // One statement each: a concurrent writer's row is waited for and the condition read again on it.
      auto written = expected_previous->has_value()
                         ? writer_.Query("UPDATE interceptor_records SET record = $2, updated_at = $3 "
                                         "WHERE sandbox = $1 AND record = $4",
                                         PgParams().Add(sandbox).AddBytes(record).Add(NowMs()).AddBytes(**expected_previous))
                         : writer_.Query("INSERT INTO interceptor_records (sandbox, record, updated_at) VALUES ($1, $2, $3) "
                                         "ON CONFLICT (sandbox) DO NOTHING",
                                         PgParams().Add(sandbox).AddBytes(record).Add(NowMs()));
      if (!written.ok()) return written.status();
      if (written->affected() != 1) return RecordChanged(sandbox);
      return event != nullptr ? InsertAudit(event) : absl::OkStatus();
    }
    OSH_RETURN_IF_ERROR(writer_
        .Query("INSERT INTO interceptor_records (sandbox, record, updated_at) VALUES ($1, $2, $3) "
               "ON CONFLICT (sandbox) DO UPDATE SET record = $2, updated_at = $3",
               PgParams().Add(sandbox).AddBytes(record).Add(NowMs()))
        .status());
    return event != nullptr ? InsertAudit(event) : absl::OkStatus();
  }, nullptr, /*touches_chain=*/event != nullptr);
}

absl::StatusOr<std::optional<std::string>> PostgresStore::GetInterceptorRecord(const std::string& sandbox) {
  absl::MutexLock lock(&read_mu_);
  auto found = Read("SELECT record FROM interceptor_records WHERE sandbox = $1", PgParams().Add(sandbox));
  if (!found.ok()) return found.status();
  if (found->rows() == 0) return std::optional<std::string>();
  return std::optional<std::string>(found->Bytes(0, 0));
}

absl::Status PostgresStore::DeleteInterceptorRecord(const std::string& sandbox) {
  return Write([&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return writer_.Query("DELETE FROM interceptor_records WHERE sandbox = $1", PgParams().Add(sandbox)).status();
  }, nullptr, /*touches_chain=*/false);
}

absl::Status PostgresStore::ForgetInterceptorRecord(const std::string& sandbox, AuditEvent event) {
  return Write([&]() ABSL_NO_THREAD_SAFETY_ANALYSIS -> absl::Status {
    auto deleted = writer_.Query("DELETE FROM interceptor_records WHERE sandbox = $1", PgParams().Add(sandbox));
    if (!deleted.ok()) return deleted.status();
    if (deleted->affected() == 0) return absl::NotFoundError("no interceptor record of that sandbox is stored");
    return InsertAudit(&event);
  });
}

namespace {
// A record row's version (InterceptorRecordRow::version): its xmin, which every write of the row changes,
// with the time of that write (xmin alone could recur after 2^32 transactions on a row never written since).
constexpr char kRecordVersion[] = "xmin::text || '.' || updated_at::text";
}  // namespace

absl::StatusOr<std::vector<InterceptorRecordRow>> PostgresStore::ListInterceptorRecords() {
  absl::MutexLock lock(&read_mu_);
  auto found = Read(absl::StrCat("SELECT sandbox, record, ", kRecordVersion, " FROM interceptor_records ORDER BY sandbox"));
  if (!found.ok()) return found.status();
  std::vector<InterceptorRecordRow> out;
  out.reserve(found->rows());
  for (int i = 0; i < found->rows(); ++i) out.push_back({found->Bytes(i, 0), found->Bytes(i, 1), found->Bytes(i, 2)});
  return out;
}

absl::StatusOr<std::vector<InterceptorRecordRow>> PostgresStore::ListInterceptorRecordsPage(
    const std::optional<std::string>& after, size_t limit) {
  // Byte order whatever the column's or the database's collation ("C").
  return ListRecordPartsAfter(after, limit, [this](bool with_separator, const std::string& from, size_t n)
                                                -> absl::StatusOr<std::vector<InterceptorRecordRow>> {
    absl::MutexLock lock(&read_mu_);
    auto found = Read(absl::StrCat("SELECT sandbox, record FROM interceptor_records WHERE sandbox COLLATE \"C\" > $1 AND "
                                   "strpos(sandbox, chr(31)) ", with_separator ? "> 0" : "= 0",
                                   " ORDER BY sandbox COLLATE \"C\" LIMIT $2"),
                      PgParams().Add(from).Add(static_cast<int64_t>(n)));
    if (!found.ok()) return found.status();
    std::vector<InterceptorRecordRow> rows;
    for (int i = 0; i < found->rows(); ++i) rows.push_back({found->Bytes(i, 0), found->Bytes(i, 1), {}});
    return rows;
  });
}

// --- Provider profiles ----------------------------------------------------------------------
// Each change with its audit event (the chain's head lock, like a policy change) and a step of the
// catalogue's generation; reads go to the database every time, so a profile another replica wrote is
// served at once, and a replica that keeps the catalogue sees the generation move.

namespace {
constexpr char kPgStepProfileGeneration[] =
    "UPDATE provider_profile_generation SET generation = generation + 1 WHERE id = 1";
}  // namespace

absl::Status PostgresStore::StepProfileGeneration(std::optional<uint64_t> expected) {
  if (!expected.has_value()) return writer_.Exec(kPgStepProfileGeneration);
  // A second replica's change waits for this row, then finds the generation moved: nothing to update.
  auto stepped = writer_.Query(absl::StrCat(kPgStepProfileGeneration, " AND generation = $1"),
                               PgParams().Add(static_cast<int64_t>(*expected)));
  if (!stepped.ok()) return stepped.status();
  if (stepped->affected() == 0) return CatalogueChanged(*expected);
  return absl::OkStatus();
}

absl::Status PostgresStore::RunProfileChangeCheck(const ProfileChangeCheck& check) {
  if (!check) return absl::OkStatus();
  // After StepProfileGeneration updated the generation's row: every record write that names a generation
  // (PutInterceptorRecord) takes that row FOR SHARE, so those before have committed (the update waited for
  // them) and those after find it locked and are refused. READ COMMITTED: these statements see them all.
  // With the versions seen before, only the names and versions first (a row's xmin changes with every
  // write of it), then the records not seen as they are: the rest of the replica's writes wait behind
  // this transaction, and reading every record here held them for seconds with 10,000 records.
  std::string changed;  // a JSON list of the names to read ("": every record)
  if (check.seen != nullptr) {
    auto versions = writer_.Query(absl::StrCat("SELECT sandbox, ", kRecordVersion, " FROM interceptor_records"));
    if (!versions.ok()) return versions.status();
    std::vector<std::string> names;
    for (int i = 0; i < versions->rows(); ++i) {
      const auto it = check.seen->find(versions->Bytes(i, 0));
      if (it == check.seen->end() || it->second != versions->Bytes(i, 1)) names.push_back(versions->Bytes(i, 0));
    }
    if (names.empty()) return check.run({});
    // A name that is not UTF-8 (a database of another encoding) cannot be listed: every record, then.
    if (auto ids = JsonIdList(names); ids.ok()) changed = *std::move(ids);
  }
  auto found = changed.empty()
                   ? writer_.Query(absl::StrCat("SELECT sandbox, record, ", kRecordVersion, " FROM interceptor_records ORDER BY sandbox"))
                   : writer_.Query(absl::StrCat("SELECT sandbox, record, ", kRecordVersion, " FROM interceptor_records WHERE sandbox",
                                                kInJsonList, " ORDER BY sandbox"),
                                   PgParams().Add(changed));
  if (!found.ok()) return found.status();
  std::vector<InterceptorRecordRow> records;
  records.reserve(found->rows());
  for (int i = 0; i < found->rows(); ++i) {
    records.push_back({found->Bytes(i, 0), found->Bytes(i, 1), found->Bytes(i, 2)});
  }
  return check.run(records);
}

namespace {
// A catalogue change checked against a ceiling takes the ceiling's lock shared with its group, before any of
// its writes (as a change batch's checked_ceiling): a SaveCeiling committed before it is what it compares
// with, and one after it waits for the change to commit.
GroupWrite::Locks ProfileChangeLocks(std::optional<int64_t> checked_ceiling) {
  return {.ceiling = checked_ceiling ? GroupWrite::LockUse::kChecks : GroupWrite::LockUse::kNone};
}
}  // namespace

absl::Status PostgresStore::PutProviderProfile(const std::string& id, const std::string& profile, AuditEvent event,
                                               std::optional<uint64_t> expected_generation,
                                               const ProfileChangeCheck& check, std::optional<int64_t> checked_ceiling) {
  return Write(
      [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS -> absl::Status {
        if (checked_ceiling) OSH_RETURN_IF_ERROR(CheckCeilingUnchanged(*checked_ceiling));
        OSH_RETURN_IF_ERROR(StepProfileGeneration(expected_generation));
        OSH_RETURN_IF_ERROR(writer_
                                .Query("INSERT INTO provider_profiles (id, profile, updated_at) VALUES ($1, $2, $3) "
                                       "ON CONFLICT (id) DO UPDATE SET profile = $2, updated_at = $3",
                                       PgParams().Add(id).AddBytes(profile).Add(NowMs()))
                                .status());
        OSH_RETURN_IF_ERROR(RunProfileChangeCheck(check));
        return InsertAudit(&event);
      },
      nullptr, /*touches_chain=*/true, ProfileChangeLocks(checked_ceiling));
}

absl::Status PostgresStore::DeleteProviderProfile(const std::string& id, AuditEvent event,
                                                  std::optional<uint64_t> expected_generation,
                                                  const ProfileChangeCheck& check, std::optional<int64_t> checked_ceiling) {
  return Write(
      [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS -> absl::Status {
        if (checked_ceiling) OSH_RETURN_IF_ERROR(CheckCeilingUnchanged(*checked_ceiling));
        OSH_RETURN_IF_ERROR(StepProfileGeneration(expected_generation));
        auto deleted = writer_.Query("DELETE FROM provider_profiles WHERE id = $1", PgParams().Add(id));
        if (!deleted.ok()) return deleted.status();
        if (deleted->affected() == 0) {
          return absl::NotFoundError(absl::StrCat("no provider profile '", id, "' is stored"));
        }
        OSH_RETURN_IF_ERROR(RunProfileChangeCheck(check));
        return InsertAudit(&event);
      },
      nullptr, /*touches_chain=*/true, ProfileChangeLocks(checked_ceiling));
}

absl::StatusOr<std::optional<std::string>> PostgresStore::GetProviderProfile(const std::string& id) {
  absl::MutexLock lock(&read_mu_);
  auto found = Read("SELECT profile FROM provider_profiles WHERE id = $1", PgParams().Add(id));
  if (!found.ok()) return found.status();
  if (found->rows() == 0) return std::optional<std::string>();
  return std::optional<std::string>(found->Bytes(0, 0));
}

absl::StatusOr<std::vector<ProviderProfileRow>> PostgresStore::ListProviderProfiles() {
  absl::MutexLock lock(&read_mu_);
  auto found = Read("SELECT id, profile FROM provider_profiles ORDER BY id");
  if (!found.ok()) return found.status();
  std::vector<ProviderProfileRow> out;
  for (int i = 0; i < found->rows(); ++i) out.push_back({found->Bytes(i, 0), found->Bytes(i, 1)});
  return out;
}

absl::StatusOr<uint64_t> PostgresStore::ProviderProfileGeneration() {
  absl::MutexLock lock(&read_mu_);
  auto found = Read("SELECT generation FROM provider_profile_generation WHERE id = 1");
  if (!found.ok()) return found.status();
  if (found->rows() == 0) return absl::DataLossError("the provider-profile generation row is missing");
  return static_cast<uint64_t>(found->Int(0, 0));
}

// --- Migration ----------------------------------------------------------------------------

absl::Status PostgresStore::ImportImage(const StoreImage& image) {
  // It stores a ceiling and revisions: their locks exclusive, as SaveCeiling and AppendPolicyRevision.
  const GroupWrite::Locks locks{.ceiling = GroupWrite::LockUse::kSets, .revisions = GroupWrite::LockUse::kSets};
  return WriteHeadFirst([&]() ABSL_NO_THREAD_SAFETY_ANALYSIS -> absl::Status {
    auto used = writer_.Query(
        "SELECT (SELECT COUNT(*) FROM sandboxes) + (SELECT COUNT(*) FROM policy_revisions) + "
        "(SELECT COUNT(*) FROM ceiling) + (SELECT COUNT(*) FROM interceptor_records) + "
        "(SELECT COUNT(*) FROM provider_profiles)");
    if (!used.ok()) return used.status();
    if (used->Int(0, 0) != 0) return absl::FailedPreconditionError("the target database's state is not empty");
    for (const auto& r : image.revisions) {
      if (!r.deleted()) OSH_RETURN_IF_ERROR(PutBody(r.digest, r.body));
      OSH_RETURN_IF_ERROR(writer_
                              .Query("INSERT INTO policy_revisions (seq, scope, revision, digest, created_at) "
                                     "VALUES ($1, $2, $3, $4, $5)",
                                     PgParams().Add(static_cast<int64_t>(r.seq)).Add(r.scope)
                                         .Add(static_cast<int64_t>(r.revision)).Add(r.digest).Add(r.created_at_unix))
                              .status());
    }
    // The next revision continues the global sequence (the builtin driver's policy_version only grows).
    OSH_RETURN_IF_ERROR(writer_
                            .Exec("SELECT setval(pg_get_serial_sequence('policy_revisions', 'seq'), "
                                  "GREATEST((SELECT MAX(seq) FROM policy_revisions), 1), "
                                  "(SELECT MAX(seq) FROM policy_revisions) IS NOT NULL)"));
    for (const auto& record : image.sandboxes) {
      int64_t rows = 0;
      OSH_RETURN_IF_ERROR(ApplyChange(change::AdmitSandbox{record}, &rows));
      OSH_RETURN_IF_ERROR(
          writer_
              .Query("UPDATE sandboxes SET load_status = $1, load_error = $2, reported_digest = $3, reported_at = $4, "
                     "last_refresh_error = $5 WHERE sandbox_id = $6",
                     PgParams().Add(static_cast<int64_t>(record.load_status)).Add(record.load_error)
                         .Add(record.reported_digest).Add(record.reported_at_unix).Add(record.last_refresh_error)
                         .Add(record.context.sandbox_id()))
              .status());
    }
    for (const auto& release : image.releases) {
      OSH_RETURN_IF_ERROR(writer_
                              .Query("INSERT INTO pending_releases (driver_handle, queued_at, context, idempotency_key) "
                                     "VALUES ($1, $2, $3, $4)",
                                     PgParams().Add(release.driver_handle).Add(NowMs() / 1000)
                                         .AddBytes(policy::SerializeDeterministic(release.context))
                                         .Add(release.idempotency_key))
                              .status());
    }
    if (image.ceiling) {
      group_ceiling_.reset();  // a write after this one in its group compares with what this stores
      OSH_RETURN_IF_ERROR(writer_
                              .Query("INSERT INTO ceiling (id, version, ceiling) VALUES (1, $1, $2)",
                                     PgParams().Add(static_cast<int64_t>(image.ceiling_version)).AddBytes(*image.ceiling))
                              .status());
    }
    for (const auto& row : image.interceptor_records) {
      OSH_RETURN_IF_ERROR(writer_
                              .Query("INSERT INTO interceptor_records (sandbox, record, updated_at) VALUES ($1, $2, $3)",
                                     PgParams().Add(row.sandbox).AddBytes(row.record).Add(NowMs()))
                              .status());
    }
    for (const auto& row : image.provider_profiles) {
      OSH_RETURN_IF_ERROR(writer_
                              .Query("INSERT INTO provider_profiles (id, profile, updated_at) VALUES ($1, $2, $3)",
                                     PgParams().Add(row.id).AddBytes(row.profile).Add(NowMs()))
                              .status());
    }
    OSH_RETURN_IF_ERROR(writer_.Exec(kPgStepProfileGeneration));  // a replica's kept catalogue is not this one
    return absl::OkStatus();
  }, locks);
}

absl::Status PostgresStore::ImportAuditEvents(const std::vector<AuditEvent>& events) {
  return WriteHeadFirst([&]() ABSL_NO_THREAD_SAFETY_ANALYSIS -> absl::Status {
    for (const auto& event : events) {
      if (event.seq != chain_.head().seq + 1 || event.prev_hash != chain_.head().hash ||
          event.hash != trust::ChainHash(event.prev_hash, event)) {
        return absl::DataLossError(absl::StrCat("audit event ", event.seq, " does not link to the chain's head (seq ",
                                                chain_.head().seq, ")"));
      }
      OSH_RETURN_IF_ERROR(InsertSealedAudit(event));
      chain_.Reset({event.seq, event.hash});  // LeadGroup writes the new head with the transaction
    }
    return absl::OkStatus();
  });
}

absl::Status PostgresStore::BeginImport(const std::string& source, Begin begin) {
  return WriteHeadFirst([&]() ABSL_NO_THREAD_SAFETY_ANALYSIS -> absl::Status {
    auto marker = writer_.Query("SELECT source FROM migration_marker WHERE id = 1");
    if (!marker.ok()) return marker.status();
    const bool marked = marker->rows() != 0;
    if (marked && begin == Begin::kFresh) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the target database holds part of a migration that did not finish (from ", marker->Bytes(0, 0),
          "): run again with --resume to continue it, or --replace-target to empty it and copy again"));
    }
    if (!marked) {
      if (begin == Begin::kResume) {
        return absl::FailedPreconditionError(
            "the target database holds no unfinished migration: there is nothing to --resume");
      }
      auto used = writer_.Query(
          "SELECT (SELECT COUNT(*) FROM sandboxes) + (SELECT COUNT(*) FROM policy_revisions) + "
          "(SELECT COUNT(*) FROM audit_events) + (SELECT COUNT(*) FROM audit_pending) + (SELECT COUNT(*) FROM ceiling) + (SELECT COUNT(*) FROM pending_releases) + "
          "(SELECT COUNT(*) FROM interceptor_records) + (SELECT COUNT(*) FROM provider_profiles)");
      if (!used.ok()) return used.status();
      if (used->Int(0, 0) != 0) {
        return absl::FailedPreconditionError(
            begin == Begin::kReplace
                ? "the target database is not empty and holds no unfinished migration: --replace-target only "
                  "replaces what an interrupted migration left, never a database gateways wrote"
                : "the target database is not empty");
      }
    } else if (begin == Begin::kResume) {
      if (marker->Bytes(0, 0) != source) {
        return absl::FailedPreconditionError(absl::StrCat(
            "the target's unfinished migration is from ", marker->Bytes(0, 0), ", not from ", source,
            ": --resume continues only the same source's copy (--replace-target copies again)"));
      }
      // The state is copied again whole (one transaction, cheap); the audit chain copied so far stays
      // and MigrateStore continues it once it has checked it is a prefix of the source's.
      OSH_RETURN_IF_ERROR(writer_.Exec(
          "TRUNCATE sandboxes, envelopes, bodies, pending_releases, policy_revisions, ceiling, changes, changes_pending, leases, "
          "interceptor_records, provider_profiles RESTART IDENTITY"));
      OSH_RETURN_IF_ERROR(writer_.Exec(kPgStepProfileGeneration));
      return absl::OkStatus();  // the marker stays as it was
    } else {
      // An interrupted migration's partial copy: removed, with the marker kept (rewritten below), in this
      // transaction — a crash here leaves either the old partial copy or an empty, marked target.
      OSH_RETURN_IF_ERROR(writer_.Exec(
          "TRUNCATE sandboxes, envelopes, bodies, pending_releases, policy_revisions, audit_events, audit_pending, ceiling, changes, changes_pending, "
          "leases, interceptor_records, provider_profiles RESTART IDENTITY"));
      OSH_RETURN_IF_ERROR(writer_.Exec(kPgStepProfileGeneration));
      OSH_RETURN_IF_ERROR(writer_.Exec(
          "UPDATE audit_head SET seq = 0, hash = '0000000000000000000000000000000000000000000000000000000000000000'"));
      chain_.Reset({0, std::string(64, '0')});
    }
    return writer_
        .Query("INSERT INTO migration_marker (id, source, started_at) VALUES (1, $1, $2) "
               "ON CONFLICT (id) DO UPDATE SET source = $1, started_at = $2",
               PgParams().Add(source).Add(NowMs() / 1000))
        .status();
  });
}

absl::Status PostgresStore::FinishImport(const ChainHead& expected) {
  return WriteHeadFirst([&]() ABSL_NO_THREAD_SAFETY_ANALYSIS -> absl::Status {
    if (chain_.head().seq != expected.seq || chain_.head().hash != expected.hash) {
      return absl::DataLossError(absl::StrCat("the copied chain ends at seq ", chain_.head().seq, ", the source's at ",
                                              expected.seq, ": the target stays marked as unfinished"));
    }
    return writer_.Exec("DELETE FROM migration_marker");
  });
}

absl::StatusOr<std::optional<Importer::Mark>> PostgresStore::MigrationMarker() {
  absl::MutexLock lock(&read_mu_);
  auto marker = Read("SELECT source, started_at FROM migration_marker WHERE id = 1");
  if (!marker.ok()) return marker.status();
  if (marker->rows() == 0) return std::optional<Mark>();
  return std::optional<Mark>(Mark{marker->Bytes(0, 0), marker->Int(0, 1)});
}

// --- Replicas -------------------------------------------------------------------------------

void PostgresStore::SetReachabilityListener(std::function<void(bool reachable)> listener) {
  absl::MutexLock lock(&feed_mu_);
  reachability_listener_ = std::move(listener);
}

ReplicaStatus PostgresStore::replica_status() {
  ReplicaStatus status{"postgresql", replica_id_, 0, true};
  absl::MutexLock lock(&read_mu_);
  // The feed's position is taken before the changes after it are counted: a round between the two can only
  // make the figure larger than it is, never hide a change not read. This replica's own changes are not
  // counted (it applied them when it committed them); the count stops at kFeedBehindCountCap.
  const int64_t read_up_to = feed_seq_read_;
  status.feed_read_age_ms = std::max<int64_t>(0, SteadyMs() - feed_read_ok_ms_);
  auto live = Read(absl::StrCat("SELECT (SELECT COUNT(*) FROM replicas WHERE heartbeat_at > ", kDbNowMs,
                                " - $1), (SELECT COUNT(*) FROM (SELECT 1 FROM changes WHERE seq > $2 AND origin <> $3 "
                                "LIMIT ", kFeedBehindCountCap, ") behind)"),
                   PgParams().Add(kReplicaLeaseMs).Add(read_up_to).Add(replica_id_));
  if (!live.ok()) {
    status.database_reachable = false;
    return status;
  }
  status.live_replicas = static_cast<uint32_t>(live->Int(0, 0));
  status.feed_changes_behind = live->Int(0, 1);
  return status;
}

absl::Status PostgresStore::ExpireDeadReplicas() {
  // A replica's row outlives it only as long as a takeover may still need to tell it is dead (its claims
  // and in-flight notes name it); after kReplicaExpiryMs it is removed, so `replicas` holds the fleet that
  // is, not every process that ever ran. A replica that comes back re-registers with its next heartbeat.
  auto expired = beat_.Query(absl::StrCat("DELETE FROM replicas WHERE heartbeat_at < ", kDbNowMs,
                                          " - $1 RETURNING id, ", kDbNowMs, " - heartbeat_at"),
                             PgParams().Add(kReplicaExpiryMs));
  if (!expired.ok()) return expired.status();
  // Admission notes still marked in flight on a replica that is gone are settled: made due (no owner),
  // so every replica counts and delivers them as any other release, and none refers to a deleted row.
  auto settled = beat_.Query(
      absl::StrCat("UPDATE pending_releases p SET in_flight_owner = '' FROM pending_releases old "
                   "WHERE p.id = old.id AND p.in_flight_owner <> '' AND p.in_flight_owner NOT IN "
                   "(SELECT id FROM replicas WHERE heartbeat_at > ", kDbNowMs, " - $1) "
                   "RETURNING p.id, old.in_flight_owner"),
      PgParams().Add(kReplicaLeaseMs));
  if (!settled.ok()) return settled.status();
  if (!notice_) return absl::OkStatus();
  for (int i = 0; i < expired->rows(); ++i) {
    notice_(absl::StrCat("replica ", expired->Bytes(i, 0), " expired: no heartbeat for ",
                                  expired->Int(i, 1) / 1000, " s (its row in `replicas` is deleted)"));
  }
  for (int i = 0; i < settled->rows(); ++i) {
    notice_(absl::StrCat("admission note #", settled->Int(i, 0), " was left in flight by replica ",
                                  settled->Bytes(i, 1), ", which is gone: its driver handle is due for release"));
  }
  return absl::OkStatus();
}

absl::Status PostgresStore::WithFeedHeld(absl::FunctionRef<absl::Status()> load) {
  // The feed applies under feed_mu_ (ReadFeed); a read under it takes read_mu_ after, as the feed does.
  absl::MutexLock lock(&feed_mu_);
  return load();
}

absl::StatusOr<bool> PostgresStore::TryLease(const std::string& name, int64_t duration_ms) {
  absl::MutexLock lock(&read_mu_);
  auto taken = Read(absl::StrCat("INSERT INTO leases (name, holder, expires) VALUES ($1, $2, ", kDbNowMs, " + $3) "
                                 "ON CONFLICT (name) DO UPDATE SET holder = $2, expires = ", kDbNowMs, " + $3 "
                                 "WHERE leases.holder = $2 OR leases.expires < ", kDbNowMs, " RETURNING holder"),
                    PgParams().Add(name).Add(replica_id_).Add(duration_ms));
  if (!taken.ok()) return taken.status();
  return taken->rows() == 1;
}

void PostgresStore::FeedLoop() {
  while (!stopping_) {
    int socket = -1;
    {
      absl::MutexLock lock(&feed_conn_mu_);
      socket = Pq().PQsocket(feed_.raw());
    }
    if (socket >= 0) {
      pollfd pfd{socket, POLLIN, 0};
      // Short, so a stop is prompt; the feed is read at least every kFeedPollMs, and soon again after a
      // seal it could not make (the head held elsewhere).
      ::poll(&pfd, 1, seal_skipped_ ? 50 : 200);
    } else {
      ::usleep(200 * 1000);
    }
    {
      absl::MutexLock lock(&feed_conn_mu_);
      bool notified = false;
      if (Pq().PQconsumeInput(feed_.raw()) == 1) {
        while (PGnotify* n = Pq().PQnotifies(feed_.raw())) {
          notified = true;
          Pq().PQfreemem(n);
        }
      }
      if (!notified && !seal_skipped_ && SteadyMs() - last_feed_round_ms_ < kFeedPollMs / 2) continue;
      last_feed_round_ms_ = SteadyMs();
    }
    auto read = [this] {
      // Other replicas' feed rows reach `changes` when sealed: by whoever takes the head first (this
      // feed, another replica's, a reader of the log, a write that found it free). The feed never waits
      // for it: held elsewhere, its holder seals and notifies, and the feed looks again soon. A seal that
      // fails leaves the feed reading what is sealed.
      auto sealed = SealPending(SealWait::kNever);
      seal_skipped_ = sealed.ok() && !*sealed;
      absl::MutexLock lock(&feed_mu_);
      absl::MutexLock conn_lock(&feed_conn_mu_);
      return ReadFeed();
    };
    absl::Status polled = read();
    if (!polled.ok()) {
      bool reconnected = false;
      {
        absl::MutexLock conn_lock(&feed_conn_mu_);
        if (!feed_.healthy() && feed_.Reconnect().ok()) {
          feed_.Exec("LISTEN osh_changes").IgnoreError();
          reconnected = true;
        }
      }
      if (reconnected) polled = read();  // catch up on what was missed meanwhile
    }
    if (polled.ok()) {
      feed_read_ok_ms_ = SteadyMs();
      absl::MutexLock conn_lock(&feed_conn_mu_);  // the connection only: a write may commit meanwhile
      RecordFeedPosition();
    }
    // Reachable: the feed reads, and the heartbeat is sent (the others count this replica as live).
    const bool reachable = polled.ok() && heartbeat_ok_;
    absl::MutexLock lock(&feed_mu_);
    if (reachable_.exchange(reachable) != reachable && reachability_listener_) reachability_listener_(reachable);
  }
}

void PostgresStore::RecordFeedPosition() {
  absl::Status recorded =
      feed_
          .Query(absl::StrCat("UPDATE replicas SET feed_seq = $2, feed_read_at = ", kDbNowMs, " WHERE id = $1"),
                 PgParams().Add(replica_id_).Add(int64_t{feed_seq_read_}))
          .status();
  // For operators only: a failure is logged once (until it succeeds again); the feed goes on.
  if (!recorded.ok() && !position_failed_ && notice_) {
    notice_(absl::StrCat("the change feed's position is not recorded in `replicas`: ", recorded.ToString()));
  }
  position_failed_ = !recorded.ok();
}

void PostgresStore::HeartbeatLoop() {
  int64_t last_try_ms = SteadyMs();
  while (!stopping_) {
    ::usleep(100 * 1000);  // short, so a stop is prompt
    absl::MutexLock lock(&beat_mu_);
    if (SteadyMs() - last_try_ms < kFeedPollMs / 2) continue;
    last_try_ms = SteadyMs();
    absl::Status beat = Heartbeat();
    if (!beat.ok() && !beat_.healthy()) {
      if (absl::Status reconnected = beat_.Reconnect(); reconnected.ok()) beat = Heartbeat();
    }
    // Not sent: this replica is unreachable (FeedLoop tells the listener), and said once until it is sent.
    if (!beat.ok() && heartbeat_ok_ && notice_) {
      notice_(absl::StrCat("the heartbeat is not sent (the other replicas count this one as gone after ",
                                    kReplicaLeaseMs / 1000, " s): ", beat.ToString()));
    }
    heartbeat_ok_ = beat.ok();
  }
}

absl::Status PostgresStore::Heartbeat() {
  // Re-registers after the row was lost, say to a database restored from backup.
  OSH_RETURN_IF_ERROR(beat_
                          .Query(absl::StrCat("INSERT INTO replicas (id, started_at, heartbeat_at) VALUES ($1, ",
                                              kDbNowMs, ", ", kDbNowMs, ") ON CONFLICT (id) DO UPDATE SET heartbeat_at = ",
                                              kDbNowMs),
                                 PgParams().Add(replica_id_))
                          .status());
  last_heartbeat_ok_ms_ = SteadyMs();
  if (last_heartbeat_ok_ms_ - last_expiry_pass_ms_ >= kExpiryPassMs) {
    OSH_RETURN_IF_ERROR(ExpireDeadReplicas());
    last_expiry_pass_ms_ = last_heartbeat_ok_ms_;
  }
  if (last_sweep_pass_ms_ == 0 || last_heartbeat_ok_ms_ - last_sweep_pass_ms_ >= kSweepPassMs) {
    last_sweep_pass_ms_ = last_heartbeat_ok_ms_;  // tried again next pass, not next beat, if it fails
    if (absl::Status swept = SweepUnusedEnvelopes(); !swept.ok()) {
      beat_.Exec("ROLLBACK").IgnoreError();
      if (notice_) notice_(absl::StrCat("unused envelopes were not swept: ", swept.ToString()));
    }
  }
  return absl::OkStatus();
}

absl::Status PostgresStore::SweepUnusedEnvelopes() {
  OSH_RETURN_IF_ERROR(beat_.Exec(absl::StrCat("BEGIN; SET LOCAL lock_timeout = '", kSealWaitMs, "ms'")));
  OSH_RETURN_IF_ERROR(DeleteUnused(beat_, nullptr));
  return beat_.ExecCommit("COMMIT");
}

absl::Status PostgresStore::ReadFeed() {
  auto rows = feed_.Query("SELECT seq, origin, kind, payload FROM changes WHERE seq > $1 ORDER BY seq LIMIT 10000",
                          PgParams().Add(feed_seq_));
  if (!rows.ok()) return rows.status();
  const bool own_rows_too = own_rows_uncertain_;
  if (own_rows_uncertain_) {
    // The window of reading this replica's own rows begins at the first read that succeeds after the
    // uncertain commit (the database may have been unreachable until now).
    if (own_rows_until_ms_ == 0) {
      own_rows_until_ms_ = SteadyMs() + kOwnRowsWindowMs;
    } else if (SteadyMs() >= own_rows_until_ms_) {
      own_rows_uncertain_ = false;
    }
  }
  if (rows->rows() == 0) return absl::OkStatus();
  std::set<std::string> sandbox_ids, scopes;
  bool ceiling = false;
  std::vector<RemoteReprojection> reprojected;  // other replicas' re-projections, in commit order
  for (int i = 0; i < rows->rows(); ++i) {
    if (!own_rows_too && rows->Bytes(i, 1) == replica_id_) continue;  // applied when committed
    const std::string kind = rows->Bytes(i, 2);
    if (kind == "sandboxes") {
      auto ids = ParseJsonIdList(rows->Bytes(i, 3));
      if (!ids.ok()) return ids.status();
      sandbox_ids.insert(ids->begin(), ids->end());
    } else if (kind == "policy") {
      scopes.insert(rows->Bytes(i, 3));
    } else if (kind == "ceiling") {
      ceiling = true;
    } else if (kind == "reprojection") {
      const std::string payload = rows->Bytes(i, 3);
      const size_t space = payload.find(' ');
      RemoteReprojection r;
      if (space != std::string::npos && absl::SimpleAtoi(payload.substr(0, space), &r.revision)) {
        r.scope = payload.substr(space + 1);
        reprojected.push_back(std::move(r));
      }
    }
  }
  const int64_t last_seq = rows->Int(rows->rows() - 1, 0);
  // Everything is read before anything is delivered: a read that fails leaves the position where it was,
  // and the whole range is read again on the next poll.
  std::vector<PolicyRevisionRecord> revisions;
  for (const auto& scope : scopes) {
    auto latest = feed_.Query(absl::StrCat(kRevisionColumns, "WHERE r.scope = $1 ORDER BY r.revision DESC LIMIT 1"),
                              PgParams().Add(scope));
    if (!latest.ok()) return latest.status();
    if (latest->rows() != 0) revisions.push_back(RevisionFrom(*latest, 0));
  }
  std::optional<std::pair<std::string, uint64_t>> stored_ceiling;
  if (ceiling) {
    auto found = feed_.Query("SELECT ceiling, version FROM ceiling WHERE id = 1");
    if (!found.ok()) return found.status();
    if (found->rows() != 0) stored_ceiling.emplace(found->Bytes(0, 0), static_cast<uint64_t>(found->Int(0, 1)));
  }
  if (remote_listener_ != nullptr && !sandbox_ids.empty()) {
    RemoteChanges changes;
    auto json = JsonIdList({sandbox_ids.begin(), sandbox_ids.end()});
    if (!json.ok()) return json.status();
    // Lock order: feed_mu_, then read_mu_ (a commit waiting for feed_mu_ holds only mu_).
    std::vector<std::string> unreadable;  // rows present that do not decode: neither applied nor removed
    auto present = [&]() -> absl::StatusOr<std::vector<SandboxRecord>> {
      absl::MutexLock read_lock(&read_mu_);
      return ReadSandboxes(absl::StrCat("WHERE s.sandbox_id", kInJsonList), *json, &unreadable);
    }();
    if (!present.ok()) return present.status();
    std::set<std::string> gone = sandbox_ids;
    for (const auto& r : *present) gone.erase(r.context.sandbox_id());
    for (const auto& id : unreadable) gone.erase(id);
    changes.sandboxes = *std::move(present);
    changes.removed.assign(gone.begin(), gone.end());
    remote_listener_->OnRemoteChanges(changes);
  }
  for (const auto& revision : revisions) revision_listeners().ForEach([&](RevisionListener& l) { l.OnPolicyRevision(revision, /*remote=*/true); });
  if (stored_ceiling) ceiling_listeners().ForEach([&](CeilingListener& l) { l.OnCeiling(stored_ceiling->first, stored_ceiling->second, /*remote=*/true); });
  if (remote_listener_ != nullptr && !reprojected.empty()) remote_listener_->OnRemoteReprojections(reprojected);
  feed_seq_ = last_seq;
  feed_seq_read_ = last_seq;
  return absl::OkStatus();
}

}  // namespace osh::store
