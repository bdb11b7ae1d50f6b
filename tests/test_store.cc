// What is particular to the SQLite store: its file (0600, content-addressed rows, no sandbox handle in
// it) and its schema migrations. The behaviour every store shares is in test_store_contract.cc.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include <catch2/catch.hpp>

#include "policy/digest.h"
#include "store/sqlite_db.h"
#include "store/sqlite_store.h"
#include "tests/test_support.h"
#include "trust/audit_chain.h"

using osh::store::AuditEvent;
using osh::store::SqliteStore;

namespace {

osh::store::SandboxRecord Sandbox(const std::string& id, const std::string& handle, const std::string& body) {
  osh::store::SandboxRecord r;
  r.context.set_sandbox_id(id);
  r.context.set_user_subject("alice");
  (*r.context.mutable_attributes())["tenant_id"] = "acme";
  r.handle_sha256 = osh::policy::Sha256(handle);
  r.driver_handle = "dh-" + id;
  openshell::policy::driver::v1::Projection p;
  p.set_surface_id("openshell.sandbox.v1");
  p.set_body(body);
  p.set_policy_digest(osh::policy::Sha256Hex(body));
  p.set_policy_version(7);
  (*p.mutable_audit_context())["k"] = "v";
  static osh::store::EnvelopeInterner interner;
  r.envelope = interner.Intern(p);
  r.verification = osh::store::Verification::kNone;
  r.admitted_at_unix = r.updated_at_unix = 1000;
  return r;
}

int64_t Count(const std::string& db_path, const std::string& table) {
  auto db = osh::store::Db::Open(db_path);
  REQUIRE(db.ok());
  auto stmt = db->Prepare("SELECT COUNT(*) FROM " + table);
  REQUIRE(stmt.ok());
  REQUIRE(*stmt->Step());
  return stmt->Int(0);
}

}  // namespace

TEST_CASE("sqlite: the file is 0600, rows are content-addressed and collected, and no sandbox handle is in it",
          "[store]") {
  osh::test::TempDir dir;
  const std::string path = dir / "g.db";
  {
    auto store = SqliteStore::Open(path);
    REQUIRE(store.ok());
    REQUIRE((*store)->InsertSandbox(Sandbox("sb-1", "secret-handle-1", "same-body"), osh::test::StoredEvent("admission")).ok());
    REQUIRE((*store)->InsertSandbox(Sandbox("sb-2", "secret-handle-2", "same-body"), osh::test::StoredEvent("admission")).ok());
  }
  CHECK(Count(path, "bodies") == 1);  // content-addressed
  CHECK(Count(path, "envelopes") == 1);
  struct stat st;
  REQUIRE(stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  std::string raw = osh::test::ReadFile(path);
  if (access((path + "-wal").c_str(), F_OK) == 0) raw += osh::test::ReadFile(path + "-wal");
  CHECK(raw.find("secret-handle-1") == std::string::npos);
  auto store = SqliteStore::Open(path);
  REQUIRE(store.ok());
  REQUIRE(*(*store)->DeleteSandbox("sb-1", osh::test::StoredEvent("deletion")));
  CHECK(Count(path, "bodies") == 1);  // still used by sb-2
  REQUIRE(*(*store)->DeleteSandbox("sb-2", osh::test::StoredEvent("deletion")));
  CHECK(Count(path, "envelopes") == 0);  // collected with their last sandbox
  CHECK(Count(path, "bodies") == 0);
}

TEST_CASE("store: a database from a newer gateway is refused", "[store]") {
  osh::test::TempDir dir;
  const std::string path = dir / "g.db";
  {
    auto db = osh::store::Db::Open(path);
    REQUIRE(db.ok());
    REQUIRE(db->Exec("PRAGMA user_version = 99").ok());
  }
  auto store = SqliteStore::Open(path);
  REQUIRE_FALSE(store.ok());
  CHECK_THAT(std::string(store.status().message()), Catch::Contains("schema version 99 is newer"));
}

TEST_CASE("store: a schema v2 database (as the remote-driver release shipped it) is migrated with its queue", "[store]") {
  osh::test::TempDir dir;
  const std::string path = dir / "gateway.db";
  const std::string body = "v2-body";
  openshell::policy::driver::v1::Projection envelope;  // a v2 row keeps its envelope (no body) inline
  envelope.set_surface_id("openshell.sandbox.v1");
  envelope.set_policy_digest(osh::policy::Sha256Hex(body));
  envelope.set_policy_version(3);
  {  // A v2 database as that release wrote it: an admitted sandbox and a release queued the v2 way.
    auto db = osh::store::Db::Open(path);
    REQUIRE(db.ok());
    REQUIRE(SqliteStore::CreateSchemaAt(*db, 2).ok());
    REQUIRE(db->Exec("INSERT INTO pending_releases (driver_handle, queued_at, in_flight) VALUES ('dh-v2', 1, 0)").ok());
    auto put = db->Prepare("INSERT INTO bodies (digest, body) VALUES (?, ?)");
    REQUIRE(put.ok());
    put->Bind(1, envelope.policy_digest()).BindBlob(2, body);
    REQUIRE(put->Run().ok());
    openshell::policy::driver::v1::RuntimeContext context;
    context.set_sandbox_id("sb-v2");
    context.set_user_subject("alice");
    auto row = db->Prepare(
        "INSERT INTO sandboxes (sandbox_id, context, handle_sha256, driver_handle, envelope, policy_digest, "
        "verification, signing_key_ids, admitted_at, updated_at) VALUES ('sb-v2', ?, ?, 'dh-1', ?, ?, 'none', '', 1, 1)");
    REQUIRE(row.ok());
    row->BindBlob(1, context.SerializeAsString()).BindBlob(2, osh::policy::Sha256("h"))
        .BindBlob(3, envelope.SerializeAsString()).Bind(4, envelope.policy_digest());
    REQUIRE(row->Run().ok());
  }
  {  // v4 moved the envelope into the content-addressed table: the sandbox loads whole.
    auto store = SqliteStore::Open(path);
    REQUIRE(store.ok());
    auto loaded = (*store)->LoadSandboxes();
    REQUIRE(loaded.ok());
    REQUIRE(loaded->size() == 1);
    CHECK((*loaded)[0].envelope->body() == body);
    CHECK((*loaded)[0].envelope->Header().policy_version() == 3);
    CHECK((*loaded)[0].driver_handle == "dh-1");
  }
  auto store = SqliteStore::Open(path);
  REQUIRE(store.ok());
  auto due = (*store)->PendingReleases();
  REQUIRE(due.ok());
  REQUIRE(due->size() == 1);
  CHECK((*due)[0].driver_handle == "dh-v2");
  CHECK((*due)[0].context.sandbox_id().empty());
  auto intent = (*store)->RecordAdmissionIntent(openshell::policy::driver::v1::RuntimeContext());
  CHECK(intent.ok());
}

TEST_CASE("sqlite: a statement prepared again comes from the cache reset, with no old bindings or row", "[store]") {
  osh::test::TempDir dir;
  auto db = osh::store::Db::Open(dir / "cache.db");
  REQUIRE(db.ok());
  REQUIRE(db->Exec("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'one'), (2, 'two')").ok());
  const std::string select = "SELECT v FROM t WHERE k = ?";
  {
    auto stmt = db->Prepare(select);
    REQUIRE(stmt.ok());
    stmt->Bind(1, int64_t{2});
    auto row = stmt->Step();
    REQUIRE(row.ok());
    REQUIRE(*row);
    CHECK(stmt->Text(0) == "two");
  }  // left on its row: the cache resets it
  {
    auto again = db->Prepare(select);
    REQUIRE(again.ok());
    auto row = again->Step();  // not bound this time: k = NULL matches nothing
    REQUIRE(row.ok());
    CHECK_FALSE(*row);
  }
  // A write is not blocked by a cached reader left mid-row (its read transaction ended at reset).
  CHECK(db->Run("INSERT INTO t VALUES (3, 'three')").ok());
  // The schema changes under a cached statement: it is recompiled, not stale.
  REQUIRE(db->Run("ALTER TABLE t ADD COLUMN w TEXT DEFAULT 'x'").ok());
  {
    auto star = db->Prepare("SELECT * FROM t WHERE k = 3");
    REQUIRE(star.ok());
    auto row = star->Step();
    REQUIRE(row.ok());
    REQUIRE(*row);
    CHECK(star->Text(2) == "x");
  }
  // Many statements of one text alive at once, and a bad statement refused with SQLite's message.
  std::vector<osh::store::Stmt> held;
  for (int i = 0; i < 10; ++i) {
    auto stmt = db->Prepare(select);
    REQUIRE(stmt.ok());
    held.push_back(*std::move(stmt));
  }
  held.clear();
  auto bad = db->Prepare("SELEC nothing");
  REQUIRE_FALSE(bad.ok());
  CHECK_THAT(std::string(bad.status().message()), Catch::Contains("syntax error"));
  CHECK_FALSE(db->Run("   ").ok());
}

TEST_CASE("sqlite: an exclusive open takes the one-gateway lock and a gateway's checks its folder", "[store]") {
  // Issue 26.2: the state lock and the folder check live in SqliteStore::Open (StoreOptions), not the daemon.
  osh::test::TempDir dir;
  const std::string path = (dir.path() / "state" / "gateway.db").string();
  osh::store::StoreOptions options;
  options.exclusive = true;
  auto first = SqliteStore::Open(path, options);
  INFO(first.status());
  REQUIRE(first.ok());  // the missing folder was created (0700)
  struct stat st {};
  REQUIRE(::stat((dir / "state").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0700);
  auto second = SqliteStore::Open(path, options);
  REQUIRE(absl::IsFailedPrecondition(second.status()));
  CHECK(second.status().message().find(std::to_string(::getpid())) != std::string::npos);  // names the holder
  CHECK(SqliteStore::Open(path).ok());  // a plain open (tests, tools) takes no lock
  first->reset();                        // closing releases it
  CHECK(SqliteStore::Open(path, options).ok());

  ::chmod((dir / "state").c_str(), 0777);  // anyone could replace the database
  auto loose = SqliteStore::Open(path, options);
  REQUIRE(absl::IsPermissionDenied(loose.status()));
  CHECK(loose.status().message().find("database folder") != std::string::npos);
}

TEST_CASE("sqlite: a store opened with an anchor refuses a rolled-back copy unless accepted, then audits it", "[store]") {
  osh::test::TempDir dir;
  const std::string path = dir / "gateway.db";
  osh::store::StoreOptions options;
  options.anchor_path = path + ".head";
  std::vector<std::string> notices;
  options.notice = [&](const std::string& n) { notices.push_back(n); };
  {
    auto store = SqliteStore::Open(path, options);
    REQUIRE(store.ok());
    AuditEvent event;
    event.type = osh::trust::audit::Type::kRelease;
    REQUIRE((*store)->AppendAudit(event).ok());
    REQUIRE((*store)->AppendAudit(event).ok());
  }  // closing records the head: event 2
  REQUIRE(osh::test::ReadFile(path + ".head").rfind("2 ", 0) == 0);
  REQUIRE_FALSE(std::filesystem::exists(path + "-wal"));  // closed: everything is in the file
  std::filesystem::copy_file(path, dir / "genuine.db");
  // Roll the database back to a one-event chain: a fresh store with one event stands for an old copy.
  std::filesystem::remove(path);
  std::filesystem::remove(path + "-wal");
  std::filesystem::remove(path + "-shm");
  {
    auto fresh = SqliteStore::Open(path);
    REQUIRE(fresh.ok());
    AuditEvent event;
    event.type = osh::trust::audit::Type::kRelease;
    REQUIRE((*fresh)->AppendAudit(event).ok());
  }
  auto refused = SqliteStore::Open(path, options);
  REQUIRE(absl::IsFailedPrecondition(refused.status()));
  CHECK(refused.status().message().find("state_rollback") == 0);
  {
    // The older copy given a row 2 that states the recorded hash (review 106: only the stored hash was
    // compared): its contents do not hash to it.
    const std::string recorded = osh::test::ReadFile(path + ".head").substr(2, 64);
    auto db = osh::store::Db::Open(path);
    REQUIRE(db.ok());
    auto forge = db->Prepare(
        "INSERT INTO audit_events (seq, time_unix_ms, type, sandbox_id, surface_id, policy_digest, policy_version, "
        "key_ids, outcome, reason, audit_context, prev_hash, hash) SELECT 2, time_unix_ms, type, sandbox_id, "
        "surface_id, policy_digest, policy_version, key_ids, outcome, reason, audit_context, hash, ? FROM audit_events "
        "WHERE seq = 1");
    REQUIRE(forge.ok());
    forge->Bind(1, recorded);
    REQUIRE(forge->Run().ok());
  }
  auto forged = SqliteStore::Open(path, options);
  REQUIRE(absl::IsFailedPrecondition(forged.status()));
  INFO(forged.status().message());
  CHECK(forged.status().message().find("state_rollback") == 0);
  CHECK(forged.status().message().find("whose contents do not hash to the hash it states") != std::string::npos);
  {
    // The genuine row 2 copied alone into the older copy (review 107): it does not link to its event 1.
    auto db = osh::store::Db::Open(path);
    REQUIRE(db.ok());
    const std::vector<std::string> statements = {
        "DELETE FROM audit_events WHERE seq = 2", "ATTACH DATABASE '" + (dir / "genuine.db") + "' AS genuine",
        "INSERT INTO audit_events SELECT * FROM genuine.audit_events WHERE seq = 2"};
    for (const std::string& sql : statements) {
      auto stmt = db->Prepare(sql);
      REQUIRE(stmt.ok());
      REQUIRE(stmt->Run().ok());
    }
  }
  auto copied = SqliteStore::Open(path, options);
  REQUIRE(absl::IsFailedPrecondition(copied.status()));
  CHECK(copied.status().message().find("does not link event 2 to an event 1 before it") != std::string::npos);
  // And an anchor that cannot be read is not taken for none.
  std::filesystem::rename(path + ".head", path + ".head.kept");
  std::filesystem::create_directory(path + ".head");
  CHECK(absl::IsFailedPrecondition(SqliteStore::Open(path, options).status()));
  std::filesystem::remove(path + ".head");
  std::filesystem::rename(path + ".head.kept", path + ".head");
  {
    auto db = osh::store::Db::Open(path);
    REQUIRE(db.ok());
    auto unforge = db->Prepare("DELETE FROM audit_events WHERE seq = 2");
    REQUIRE(unforge.ok());
    REQUIRE(unforge->Run().ok());
  }
  options.accept_state_rollback = true;
  auto accepted = SqliteStore::Open(path, options);
  INFO(accepted.status());
  REQUIRE(accepted.ok());
  auto events = (*accepted)->ListAuditEvents(0, 10);
  REQUIRE(events.ok());
  REQUIRE(events->size() == 2);
  CHECK(events->back().type == osh::trust::audit::Type::kStateRollbackAccepted);
  REQUIRE(notices.size() == 1);
  CHECK(notices[0].find("accepted (--accept-state-rollback)") != std::string::npos);
}
