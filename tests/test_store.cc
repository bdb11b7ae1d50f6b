// The SQLite store: revisions and expected-revision conflicts, atomic transactions, persistence across
// reopen, 0600 files, hashed handles only, the audit chain.
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "policy/digest.h"
#include "store/sqlite_db.h"
#include "store/sqlite_store.h"
#include "tests/test_support.h"
#include "trust/audit_chain.h"

using osh::store::AuditEvent;
using osh::store::SqliteStore;

namespace {

AuditEvent Event(const std::string& type) {
  AuditEvent e;
  e.type = type;
  e.outcome = "ok";
  return e;
}

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
  r.verification = "none";
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

TEST_CASE("store: policy revisions per scope with expected-revision checks", "[store]") {
  osh::test::TempDir dir;
  auto store = SqliteStore::Open(dir / "g.db");
  REQUIRE(store.ok());
  auto& s = **store;

  auto r1 = s.AppendPolicyRevision("default", std::string("body-1"), std::optional<uint64_t>(0), 10, Event("mutation"));
  REQUIRE(r1.ok());
  CHECK(r1->revision == 1);
  CHECK(r1->digest == osh::policy::Sha256Hex("body-1"));

  // expected 0 means "no live policy": now wrong
  auto conflict = s.AppendPolicyRevision("default", std::string("body-2"), std::optional<uint64_t>(0), 11, Event("mutation"));
  CHECK(absl::IsAborted(conflict.status()));
  auto stale = s.AppendPolicyRevision("default", std::string("body-2"), std::optional<uint64_t>(5), 11, Event("mutation"));
  CHECK(absl::IsAborted(stale.status()));
  CHECK_THAT(std::string(stale.status().message()), Catch::Contains("at revision 1, expected 5"));

  auto r2 = s.AppendPolicyRevision("default", std::string("body-2"), std::optional<uint64_t>(1), 12, Event("mutation"));
  REQUIRE(r2.ok());
  CHECK(r2->revision == 2);
  auto t1 = s.AppendPolicyRevision("tenant:acme", std::string("body-t"), std::nullopt, 13, Event("mutation"));
  REQUIRE(t1.ok());
  CHECK(t1->revision == 1);
  CHECK(t1->seq > r2->seq);  // the global sequence keeps growing across scopes

  auto deleted = s.AppendPolicyRevision("tenant:acme", std::nullopt, std::nullopt, 14, Event("mutation"));
  REQUIRE(deleted.ok());
  CHECK(deleted->deleted());
  CHECK(absl::IsNotFound(s.AppendPolicyRevision("tenant:acme", std::nullopt, std::nullopt, 15, Event("mutation")).status()));

  auto latest = s.LatestPolicyRevision("default");
  REQUIRE(latest.ok());
  REQUIRE(latest->has_value());
  CHECK((*latest)->body == "body-2");
  auto old = s.GetPolicyRevision("default", 1);
  REQUIRE(old.ok());
  CHECK(old->body == "body-1");
  CHECK(absl::IsNotFound(s.GetPolicyRevision("default", 9).status()));
  auto all = s.ListPolicyRevisions("");
  REQUIRE(all.ok());
  CHECK(all->size() == 4);
  CHECK(*s.CountLivePolicies() == 1);
}

TEST_CASE("store: a transaction interrupted halfway leaves nothing", "[store]") {
  osh::test::TempDir dir;
  const std::string path = dir / "g.db";
  auto store = SqliteStore::Open(path);
  REQUIRE(store.ok());
  REQUIRE((*store)->InsertSandbox(Sandbox("sb-1", "handle-1", "body-a"), Event("admission")).ok());
  const int64_t bodies = Count(path, "bodies");
  const int64_t events = Count(path, "audit_events");

  // The second admission writes its new body, then fails on the sandbox row (same id): the body and
  // the audit event must be rolled back with it.
  auto status = (*store)->InsertSandbox(Sandbox("sb-1", "handle-2", "body-b"), Event("admission"));
  CHECK(absl::IsAlreadyExists(status));
  CHECK(Count(path, "bodies") == bodies);
  CHECK(Count(path, "audit_events") == events);
  // Fails on the unique handle hash after inserting a new body: also nothing.
  status = (*store)->InsertSandbox(Sandbox("sb-2", "handle-1", "body-c"), Event("admission"));
  CHECK(absl::IsAlreadyExists(status));
  CHECK(Count(path, "bodies") == bodies);
  CHECK(Count(path, "sandboxes") == 1);

  // The chain head was not advanced by the failed attempts: the next event links to the last good one.
  REQUIRE((*store)->AppendAudit(Event("note")).ok());
  auto chain = (*store)->ListAuditEvents(0, 100);
  REQUIRE(chain.ok());
  REQUIRE(chain->size() == 2);
  CHECK((*chain)[1].prev_hash == (*chain)[0].hash);
  CHECK((*chain)[1].seq == 2);
}

TEST_CASE("store: sandboxes persist across reopen, bodies once per digest, handles hashed", "[store]") {
  osh::test::TempDir dir;
  const std::string path = dir / "g.db";
  {
    auto store = SqliteStore::Open(path);
    REQUIRE(store.ok());
    REQUIRE((*store)->InsertSandbox(Sandbox("sb-1", "secret-handle-1", "same-body"), Event("admission")).ok());
    REQUIRE((*store)->InsertSandbox(Sandbox("sb-2", "secret-handle-2", "same-body"), Event("admission")).ok());
    REQUIRE((*store)->RecordReport("sb-1", "d", openshell::policy::gateway::v1::LOADED, "", 2000, Event("report")).ok());
  }
  CHECK(Count(path, "bodies") == 1);  // content-addressed
  struct stat st;
  REQUIRE(stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  // The handle itself is nowhere in the file.
  std::string raw = osh::test::ReadFile(path);
  if (access((path + "-wal").c_str(), F_OK) == 0) raw += osh::test::ReadFile(path + "-wal");
  CHECK(raw.find("secret-handle-1") == std::string::npos);

  auto store = SqliteStore::Open(path);
  REQUIRE(store.ok());
  auto loaded = (*store)->LoadSandboxes();
  REQUIRE(loaded.ok());
  REQUIRE(loaded->size() == 2);
  const auto& r = (*loaded)[0];
  CHECK(r.context.attributes().at("tenant_id") == "acme");
  CHECK(r.envelope->body() == "same-body");
  CHECK(r.envelope->Header().policy_version() == 7);
  CHECK(r.envelope->Header().audit_context().at("k") == "v");
  CHECK(r.envelope == (*loaded)[1].envelope);  // one envelope (and body) shared by both sandboxes
  CHECK(r.load_status == openshell::policy::gateway::v1::LOADED);
  CHECK(r.handle_sha256 == osh::policy::Sha256("secret-handle-1"));

  // Delete queues the release in the same transaction; completing it twice records it once.
  auto deleted = (*store)->DeleteSandbox("sb-1", Event("deletion"));
  REQUIRE(deleted.ok());
  CHECK(*deleted);
  CHECK_FALSE(*(*store)->DeleteSandbox("sb-1", Event("deletion")));
  auto pending = (*store)->PendingReleases();
  REQUIRE(pending.ok());
  REQUIRE(pending->size() == 1);
  CHECK((*pending)[0].driver_handle == "dh-sb-1");
  REQUIRE((*store)->CompleteRelease((*pending)[0].id, Event("release")).ok());
  REQUIRE((*store)->CompleteRelease((*pending)[0].id, Event("release")).ok());
  CHECK((*store)->PendingReleases()->empty());
  CHECK(Count(path, "bodies") == 1);  // still used by sb-2
}

TEST_CASE("store: the audit chain links every event and survives reopen", "[store][audit]") {
  osh::test::TempDir dir;
  const std::string path = dir / "g.db";
  {
    auto store = SqliteStore::Open(path);
    REQUIRE(store.ok());
    for (int i = 0; i < 3; ++i) REQUIRE((*store)->AppendAudit(Event("e" + std::to_string(i))).ok());
  }
  auto store = SqliteStore::Open(path);
  REQUIRE(store.ok());
  REQUIRE((*store)->AppendAudit(Event("after-reopen")).ok());
  auto events = (*store)->ListAuditEvents(0, 100);
  REQUIRE(events.ok());
  REQUIRE(events->size() == 4);
  std::string prev = osh::trust::kGenesisHash;
  for (const auto& e : *events) {
    CHECK(e.prev_hash == prev);
    CHECK(e.hash == osh::trust::ChainHash(prev, e));
    prev = e.hash;
  }
  CHECK((*store)->ListAuditEvents(2, 1)->front().seq == 3);
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

TEST_CASE("store: an admission intent is settled by its admission, or its release is due after a crash", "[store]") {
  osh::test::TempDir dir;
  const std::string path = dir / "gateway.db";
  auto context = [](const std::string& id) {
    openshell::policy::driver::v1::RuntimeContext c;
    c.set_sandbox_id(id);
    c.set_user_subject("alice@example.com");
    return c;
  };
  {
    auto store = osh::store::SqliteStore::Open(path);
    REQUIRE(store.ok());
    auto admitted = (*store)->RecordAdmissionIntent(context("sb-a"));
    auto refused = (*store)->RecordAdmissionIntent(context("sb-r"));
    auto failed = (*store)->RecordAdmissionIntent(context("sb-f"));
    auto crashed = (*store)->RecordAdmissionIntent(context("sb-c"));
    REQUIRE((admitted.ok() && refused.ok() && failed.ok() && crashed.ok()));
    CHECK((*store)->PendingReleases()->empty());  // in flight: not due
    auto record = Sandbox("sb-a", "handle-a", "body-a");
    record.driver_handle = "dh-admitted";
    record.acquisition_id = *admitted;
    REQUIRE((*store)->InsertSandbox(record, Event("admission")).ok());
    REQUIRE((*store)->QueueAcquiredRelease(*refused, "dh-refused").ok());
    REQUIRE((*store)->DropAdmissionIntent(*failed).ok());
    auto due = (*store)->PendingReleases();
    REQUIRE(due->size() == 1);
    CHECK((*due)[0].driver_handle == "dh-refused");
    CHECK((*due)[0].context.sandbox_id() == "sb-r");
  }  // "crash": sb-c's intent was never settled
  auto reopened = osh::store::SqliteStore::Open(path);
  REQUIRE(reopened.ok());
  auto due = (*reopened)->PendingReleases();
  REQUIRE(due->size() == 2);
  CHECK((*due)[1].driver_handle.empty());
  CHECK((*due)[1].context.sandbox_id() == "sb-c");
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
