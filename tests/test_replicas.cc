// Active-active replicas (issue 11, docs/replicas.md): three real gateway processes on one real
// PostgreSQL database (a throw-away cluster started by the test), each with its own sockets.
#include <signal.h>

#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <catch2/catch.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "policy/body_codec.h"
#include "policy/digest.h"
#include "trust/ceiling.h"
#include "trust/keys.h"

#include "grpc/health/v1/health.grpc.pb.h"
#include "tests/gateway_fixture.h"
#include "tests/pg_cluster.h"
#include "tests/test_support.h"

using namespace osh::test;

namespace {

// The audit chain as `g` exports it, checked link by link from genesis; returns its length.
size_t VerifiedChainLength(GatewayFixture& g) {
  std::string out, err;
  const std::string exported = g.dir() / "audit.jsonl";
  REQUIRE(Ctl(g, {"audit", "export", "--out", exported}, &out, &err) == 0);
  INFO(out << err);
  REQUIRE(Ctl(g, {"audit", "verify", exported}, &out, &err) == 0);
  size_t lines = 0;
  for (char c : ReadAll(exported)) lines += c == '\n';
  return lines;
}

std::vector<std::string> Database(const std::string& url) { return {"--database", url}; }

// A fresh database and one null-policy-driver process (a handle per acquisition, its live handles in a
// file) that every replica started with `args` uses.
struct ReplicasOfOneDriver {
  ReplicasOfOneDriver()
      : handles_file(dir / "handles.txt"),
        driver(dir, "null",
               {OSH_NULL_DRIVER_BINARY, "--policy", kExamples + "github.yaml", "--handles-file", handles_file,
                "--handle-per-acquire"}) {
    driver.Start();
    args = Database(PgCluster::Shared().CreateDatabase());
    args.insert(args.end(), {"--driver-socket", driver.socket()});
  }
  // The sandbox ids of the driver's live handles (one per handle).
  std::multiset<std::string> Held() const {
    std::multiset<std::string> ids;
    for (absl::string_view line : absl::StrSplit(ReadAll(handles_file), '\n', absl::SkipEmpty())) {
      const std::vector<absl::string_view> fields = absl::StrSplit(line, ' ');  // handle, sandbox id, ...
      if (fields.size() >= 2) ids.insert(std::string(fields[1]));
    }
    return ids;
  }
  TempDir dir;
  std::string handles_file;
  DriverProcess driver;
  std::vector<std::string> args;
};

}  // namespace

TEST_CASE("replicas: admit on 1, fetch on 2, watch on 3 while the policy changes on 1, delete on 2 refused on 1 and 3",
          "[integration][postgres][replicas]") {
  const std::string url = PgCluster::Shared().CreateDatabase();
  GatewayFixture g1(Database(url)), g2(Database(url)), g3(Database(url));
  REQUIRE(g1.SetPolicy("default", Example("github.yaml")).ok());

  gw::AdmitSandboxResponse admitted;
  REQUIRE(g1.Admit("sb-1", &admitted).ok());
  drv::Projection fetched;
  REQUIRE(Eventually([&] { return g2.Fetch(admitted.sandbox_handle(), &fetched).ok(); }));
  CHECK(fetched.policy_digest() == admitted.policy_digest());

  REQUIRE(Eventually([&] {
    drv::Projection p;
    return g3.Fetch(admitted.sandbox_handle(), &p).ok();
  }));
  auto watch_ctx = GatewayFixture::Context(admitted.sandbox_handle());
  auto reader = g3.sandbox().WatchProjection(watch_ctx.get(), gw::WatchProjectionRequest());
  drv::Projection first;
  REQUIRE(reader->Read(&first));
  CHECK(first.policy_digest() == admitted.policy_digest());

  // A mutation on replica 1 reaches the watcher on replica 3, and replica 2's own builtin driver serves it.
  gw::UpdatePolicyRequest update;
  update.set_scope("default");
  auto* op = update.add_operations()->mutable_remove_binary();
  op->set_rule_id("github_api");
  op->set_path("/usr/bin/curl");
  gw::PolicyRevision revision;
  REQUIRE(g1.admin().UpdatePolicy(GatewayFixture::Context().get(), update, &revision).ok());
  CHECK(revision.sandboxes_updated() == 1);
  drv::Projection second;
  REQUIRE(reader->Read(&second));
  CHECK(second.policy_digest() == revision.policy_digest());
  CHECK(second.policy_version() > first.policy_version());
  gw::AdmitSandboxResponse on_two;
  REQUIRE(g2.Admit("sb-2", &on_two).ok());
  CHECK(on_two.policy_digest() == revision.policy_digest());

  // Every replica knows the others and the database.
  std::set<std::string> replica_ids;
  for (GatewayFixture* g : {&g1, &g2, &g3}) {
    CHECK(Eventually([&] { return g->Status().admitted_sandboxes() == 2; }));  // sb-2 applied from the feed
    const auto status = g->Status();
    CHECK(status.database_kind() == "postgresql");
    CHECK(status.live_replicas() == 3);
    CHECK(status.database_reachable());
    replica_ids.insert(status.replica_id());
  }
  CHECK(replica_ids.size() == 3);
  std::string out, err;
  REQUIRE(Ctl(g2, {"status"}, &out, &err) == 0);
  CHECK_THAT(out, Catch::Contains("database:           postgresql, reachable; replica "));
  CHECK_THAT(out, Catch::Contains(" of 3 live"));

  // Delete on 2: the handle is refused on 1 and 3, and 3's watch stream ends.
  gw::DeleteSandboxRequest del;
  del.set_sandbox_id("sb-1");
  gw::DeleteSandboxResponse deleted;
  REQUIRE(g2.admin().DeleteSandbox(GatewayFixture::Context().get(), del, &deleted).ok());
  for (GatewayFixture* g : {&g1, &g3}) {
    CHECK(Eventually([&] {
      drv::Projection p;
      return g->Fetch(admitted.sandbox_handle(), &p).error_code() == grpc::StatusCode::UNAUTHENTICATED;
    }));
  }
  // 3's watch stream ends. Before it does it may carry one more projection of the same policy: when 3
  // learns of the revision before it has applied 1's re-projection of sb-1, it re-projects sb-1 itself
  // (a second version of the same digest; seen once under ctest -j6, noted for issue 27). Nothing else.
  drv::Projection after_delete;
  int extra = 0;
  while (reader->Read(&after_delete)) {
    CHECK(after_delete.policy_digest() == revision.policy_digest());
    REQUIRE(++extra <= 2);
  }

  // One audit chain, whole from any replica.
  const size_t length = VerifiedChainLength(g3);
  CHECK(length >= 6);  // policy set, 2 admissions, update, re-projection, deletion
  CHECK(VerifiedChainLength(g1) == length);
}

TEST_CASE("replicas: the same sandbox id admitted on two replicas at once: exactly one wins", "[integration][postgres][replicas]") {
  ReplicasOfOneDriver setup;
  const std::vector<std::string>& args = setup.args;
  GatewayFixture g1(args), g2(args);
  constexpr int kIds = 20;
  int wins = 0, already = 0, other = 0;
  for (int i = 0; i < kIds; ++i) {
    const std::string id = "race-" + std::to_string(i);
    grpc::Status s1, s2;
    gw::AdmitSandboxResponse r1, r2;
    std::thread t1([&] { s1 = g1.Admit(id, &r1); });
    std::thread t2([&] { s2 = g2.Admit(id, &r2); });
    t1.join();
    t2.join();
    for (const grpc::Status* s : {&s1, &s2}) {
      if (s->ok()) {
        ++wins;
      } else if (s->error_code() == grpc::StatusCode::ALREADY_EXISTS) {
        ++already;
      } else {
        ++other;
        WARN(s->error_message());
      }
    }
  }
  CHECK(wins == kIds);
  CHECK(already == kIds);
  CHECK(other == 0);
  // Each loser's driver handle is released: the driver ends holding one handle per admitted sandbox.
  CHECK(Eventually([&] {
    const std::multiset<std::string> held = setup.Held();
    if (held.size() != kIds) return false;
    for (int i = 0; i < kIds; ++i) {
      if (held.count("race-" + std::to_string(i)) != 1) return false;
    }
    return true;
  }));
  CHECK(g1.Status().pending_releases() == 0);
}

TEST_CASE("replicas: kill -9 of a replica during an admission storm on all three", "[integration][postgres][replicas]") {
  ReplicasOfOneDriver setup;
  const std::vector<std::string>& args = setup.args;
  GatewayFixture g1(args), g2(args), g3(args);
  std::vector<GatewayFixture*> replicas = {&g1, &g2, &g3};

  std::mutex mu;
  std::map<std::string, std::string> acknowledged;  // sandbox id -> handle
  std::atomic<bool> stop{false};
  std::vector<std::thread> clients;
  for (int r = 0; r < 3; ++r) {
    for (int c = 0; c < 2; ++c) {
      clients.emplace_back([&, r, c] {
        auto stub = gw::PolicyGateway::NewStub(GatewayFixture::Channel(replicas[r]->admin_socket()));
        for (int n = 0; !stop; ++n) {
          const std::string id = "storm-" + std::to_string(r) + "-" + std::to_string(c) + "-" + std::to_string(n);
          gw::AdmitSandboxRequest request;
          request.mutable_context()->set_sandbox_id(id);
          request.mutable_context()->set_user_subject("alice@example.com");
          gw::AdmitSandboxResponse response;
          auto ctx = GatewayFixture::Context();
          ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
          if (stub->AdmitSandbox(ctx.get(), request, &response).ok()) {
            std::lock_guard<std::mutex> lock(mu);
            acknowledged[id] = response.sandbox_handle();
          } else if (r == 0) {
            std::this_thread::sleep_for(std::chrono::milliseconds(20));  // replica 1 is gone
          }
        }
      });
    }
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(800));
  g1.Kill9();
  std::this_thread::sleep_for(std::chrono::milliseconds(800));
  stop = true;
  for (auto& t : clients) t.join();
  {
    std::lock_guard<std::mutex> lock(mu);
    REQUIRE(acknowledged.size() > 10);
    for (const auto& [id, handle] : acknowledged) {
      INFO("acknowledged admission " << id);
      drv::Projection p;
      // On the replica that acknowledged it at once; on the other once its feed has applied it (the last
      // admissions of the storm may be a feed round behind there: docs/replicas.md, consistency bounds).
      CHECK(Eventually([&] { return g2.Fetch(handle, &p).ok(); }, std::chrono::seconds(10)));
      CHECK(Eventually([&] { return g3.Fetch(handle, &p).ok(); }, std::chrono::seconds(10)));
    }
  }
  // The dead replica's admissions in flight are released by the survivors once its heartbeat is stale:
  // the driver ends holding exactly one handle per admitted sandbox.
  auto listed = [&] {
    gw::ListSandboxesRequest request;
    request.set_page_size(1000);
    gw::ListSandboxesResponse response;
    std::multiset<std::string> ids;
    if (g2.admin().ListSandboxes(GatewayFixture::Context().get(), request, &response).ok()) {
      for (const auto& s : response.sandboxes()) ids.insert(s.context().sandbox_id());
    }
    return ids;
  };
  CHECK(Eventually([&] { return setup.Held() == listed(); }, std::chrono::seconds(40)));
  CHECK(Eventually([&] { return g2.Status().live_replicas() == 2; }, std::chrono::seconds(30)));
  CHECK(VerifiedChainLength(g2) >= acknowledged.size());
}

TEST_CASE("replicas: PostgreSQL stopped and restarted underneath, and an unreachable database stops the start", "[integration][postgres][replicas]") {
  {
    TempDir dir;
    std::string out, err;
    const int code = RunCommand({OSH_GATEWAY_BINARY, "--state-dir", dir / "var", "--database",
                                 "postgresql://gateway:s3cret@127.0.0.1:1/fleet?connect_timeout=2"},
                                &out, &err);
    CHECK(code != 0);
    CHECK_THAT(err + out, Catch::Contains("dbname=fleet"));
    CHECK_THAT(err + out, !Catch::Contains("s3cret"));
  }
  auto cluster = std::make_unique<PgCluster>();
  const std::string url = cluster->CreateDatabase();
  GatewayFixture g1(Database(url)), g2(Database(url));
  REQUIRE(g1.SetPolicy("default", Example("github.yaml")).ok());
  gw::AdmitSandboxResponse before;
  REQUIRE(g1.Admit("sb-before", &before).ok());
  drv::Projection known;  // replica 2 has applied the admission before the database goes
  REQUIRE(Eventually([&] { return g2.Fetch(before.sandbox_handle(), &known).ok(); }));
  // Database down: each replica says so (status and admission health) and refuses admissions; fetches go on.
  cluster->StopServer();
  CHECK(Eventually([&] { return !g1.Status().database_reachable(); }));
  CHECK(Eventually([&] { return g2.AdmissionHealth() == grpc::health::v1::HealthCheckResponse::NOT_SERVING; }));
  gw::AdmitSandboxResponse refused;
  CHECK_FALSE(g1.Admit("sb-during", &refused).ok());
  drv::Projection served;
  CHECK(g2.Fetch(before.sandbox_handle(), &served).ok());
  cluster->StartServer();
  CHECK(Eventually([&] { return g2.AdmissionHealth() == grpc::health::v1::HealthCheckResponse::SERVING; },
                   std::chrono::seconds(30)));
  // Admissions resume on both replicas once they reconnect; nothing acknowledged is lost.
  gw::AdmitSandboxResponse after1, after2;
  CHECK(Eventually([&] { return g1.Admit("sb-after-1", &after1).ok(); }, std::chrono::seconds(30)));
  CHECK(Eventually([&] { return g2.Admit("sb-after-2", &after2).ok(); }, std::chrono::seconds(30)));
  drv::Projection p;
  CHECK(g2.Fetch(before.sandbox_handle(), &p).ok());
  CHECK(Eventually([&] { return g1.Fetch(after2.sandbox_handle(), &p).ok(); }));
  CHECK(Eventually([&] { return g1.Status().live_replicas() == 2; }));
  CHECK(VerifiedChainLength(g2) >= 4);
}

TEST_CASE("replicas: migrate moves a single-node SQLite state to PostgreSQL, the same chain", "[integration][postgres][replicas]") {
  const std::string url = PgCluster::Shared().CreateDatabase();
  GatewayFixture single;
  REQUIRE(single.SetPolicy("default", Example("github.yaml")).ok());
  REQUIRE(single.SetPolicy("tenant:acme", Example("restrictive-default.yaml")).ok());
  std::vector<gw::AdmitSandboxResponse> admitted(3);
  for (int i = 0; i < 3; ++i) REQUIRE(single.Admit("sb-" + std::to_string(i), &admitted[i]).ok());
  gw::DeleteSandboxRequest del;
  del.set_sandbox_id("sb-2");
  gw::DeleteSandboxResponse deleted;
  REQUIRE(single.admin().DeleteSandbox(GatewayFixture::Context().get(), del, &deleted).ok());
  std::string out, err;
  const std::string single_chain = single.dir() / "single.jsonl";
  REQUIRE(Ctl(single, {"audit", "export", "--out", single_chain}, &out, &err) == 0);
  REQUIRE(single.Stop() == 0);

  const std::string from = "sqlite:" + single.state_dir() + "/gateway.db";
  REQUIRE(RunCommand({OSH_GATEWAY_BINARY, "migrate", "--from", from, "--to", url, "-o", "json"}, &out, &err) == 0);
  INFO(out << err);
  CHECK_THAT(out, Catch::Contains("\"sandboxes\":2"));
  CHECK_THAT(out, Catch::Contains("\"policy_revisions\":2"));
  // A second migration into the same database is refused and changes nothing.
  std::string out2, err2;
  CHECK(RunCommand({OSH_GATEWAY_BINARY, "migrate", "--from", from, "--to", url}, &out2, &err2) != 0);
  CHECK_THAT(err2, Catch::Contains("not empty"));

  GatewayFixture r1(Database(url)), r2(Database(url));
  drv::Projection p;
  CHECK(r1.Fetch(admitted[0].sandbox_handle(), &p).ok());
  CHECK(p.policy_digest() == admitted[0].policy_digest());
  CHECK(r2.Fetch(admitted[1].sandbox_handle(), &p).ok());
  CHECK(r2.Fetch(admitted[2].sandbox_handle(), &p).error_code() == grpc::StatusCode::UNAUTHENTICATED);
  // The chain is the same chain: the PostgreSQL export starts with every line of the SQLite one.
  const size_t length = VerifiedChainLength(r1);
  const std::string single_lines = ReadAll(single_chain);
  CHECK(ReadAll(r1.dir() / "audit.jsonl").substr(0, single_lines.size()) == single_lines);
  CHECK(length > 5);
  // Policy revisions continue where they were: the next one is revision 2 of default, above every seq.
  gw::PolicyRevision next;
  REQUIRE(r2.SetPolicy("default", Example("restrictive-default.yaml"), &next).ok());
  CHECK(next.revision() == 2);
  CHECK(Eventually([&] { return r1.Fetch(admitted[0].sandbox_handle(), &p).ok() && p.policy_version() == 3; }));
}

TEST_CASE("replicas: a policy change on one replica reaches what another is admitting at the same time",
          "[integration][postgres][replicas]") {
  // Regression (issue 25.2): six threads admitting on B while A narrowed `default` left some of B's new
  // sandboxes on the withdrawn policy indefinitely, with no error anywhere: A re-projected only what it
  // knew of, and B's feed only reloaded the scope.
  const std::vector<std::string> args = Database(PgCluster::Shared().CreateDatabase());
  GatewayFixture a(args), b(args);
  REQUIRE(a.SetPolicy("default", Example("github.yaml")).ok());
  auto narrowed = Example("github.yaml");
  narrowed.mutable_network_policies()->clear();
  const std::string narrowed_digest = osh::policy::Sha256Hex(osh::policy::SerializeDeterministic(narrowed));
  std::mutex mu;
  std::vector<std::string> handles;
  std::atomic<bool> stop{false};
  std::vector<std::thread> admitters;
  for (int t = 0; t < 6; ++t) {
    admitters.emplace_back([&, t] {
      for (int i = 0; !stop; ++i) {
        gw::AdmitSandboxResponse admitted;
        if (b.Admit(absl::StrCat("sb-", t, "-", i), &admitted).ok()) {
          std::lock_guard<std::mutex> lock(mu);
          handles.push_back(admitted.sandbox_handle());
        }
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  REQUIRE(a.SetPolicy("default", narrowed).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  stop = true;
  for (auto& t : admitters) t.join();
  REQUIRE(handles.size() > 20);
  // Every sandbox, on either replica, ends on the narrowed policy.
  for (const auto& handle : handles) {
    for (GatewayFixture* g : {&a, &b}) {
      CHECK(Eventually([&] {
        drv::Projection p;
        return g->Fetch(handle, &p).ok() && p.policy_digest() == narrowed_digest;
      }, std::chrono::seconds(20)));
    }
  }
}

TEST_CASE("replicas: after a restart on PostgreSQL the builtin driver serves every scope's own policy",
          "[integration][postgres][replicas]") {
  // Regression (issue 25.1) on the replicated store: revisions filed under "" after a restart.
  GatewayFixture g(Database(PgCluster::Shared().CreateDatabase()));
  REQUIRE(g.SetPolicy("default", Example("github.yaml")).ok());
  REQUIRE(g.SetPolicy("tenant:acme", Example("restrictive-default.yaml")).ok());
  REQUIRE(g.Stop() == 0);
  g.Start();
  gw::AdmitSandboxResponse plain, acme;
  REQUIRE(g.Admit("sb-plain", &plain).ok());
  REQUIRE(g.Admit("sb-acme", &acme, {{"tenant_id", "acme"}}).ok());
  CHECK(plain.policy_digest() == osh::policy::Sha256Hex(osh::policy::SerializeDeterministic(Example("github.yaml"))));
  CHECK(acme.policy_digest() ==
        osh::policy::Sha256Hex(osh::policy::SerializeDeterministic(Example("restrictive-default.yaml"))));
  CHECK(g.Stop() == 0);
}

namespace {

// Runs `sql` on `url` with the cluster's own psql; its exit status.
// The "hash" of the last event in a `policyctl audit export` file.
std::string LastHash(const std::string& exported) {
  const std::string text = ReadAll(exported);
  const size_t line = text.rfind('\n', text.size() >= 2 ? text.size() - 2 : 0);
  const std::string last = text.substr(line == std::string::npos ? 0 : line + 1);
  const size_t at = last.find("\"hash\":\"");
  if (at == std::string::npos) return "";
  return last.substr(at + 8, 64);
}

}  // namespace

TEST_CASE("replicas: a PostgreSQL database restored from an older dump is refused until an operator accepts it",
          "[integration][postgres][replicas]") {
  // Regression (issue 25.11): the head anchor existed only for SQLite, so a PostgreSQL database restored
  // from a dump brought a deleted sandbox back and its revoked handle worked again, unnoticed.
  REQUIRE_FALSE(PgCluster::BinDir().empty());
  const std::string url = PgCluster::Shared().CreateDatabase();
  GatewayFixture g(Database(url));
  REQUIRE(g.SetPolicy("default", Example("restrictive-default.yaml")).ok());
  gw::AdmitSandboxResponse deleted_later;
  REQUIRE(g.Admit("sb-1", &deleted_later).ok());
  REQUIRE(g.Stop() == 0);
  g.Start();  // a second start on the same database serves it
  // The "backup": a dump taken with the cluster's own pg_dump while sb-1 is admitted.
  const std::string dump = g.dir() / "dump.sql";
  std::string out, err;
  REQUIRE(RunCommand({PgCluster::BinDir() + "/pg_dump", "--no-owner", "-f", dump, "-d", url}, &out, &err) == 0);
  gw::DeleteSandboxRequest del;
  del.set_sandbox_id("sb-1");
  gw::DeleteSandboxResponse deleted;
  REQUIRE(g.admin().DeleteSandbox(GatewayFixture::Context().get(), del, &deleted).ok());
  REQUIRE(deleted.deleted());
  REQUIRE(g.Stop() == 0);

  // Restored into a fresh database, whose URL the replica is then given with the same state_dir.
  const std::string restored = PgCluster::Shared().CreateDatabase();
  REQUIRE(RunCommand({PgCluster::BinDir() + "/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", restored, "-f", dump},
                     &out, &err) == 0);
  {
    Process refused({OSH_GATEWAY_BINARY, "--state-dir", g.state_dir(), "--database", restored}, g.dir() / "refused.log");
    const int code = refused.Wait(std::chrono::seconds(20));
    INFO(ReadAll(g.dir() / "refused.log"));
    CHECK(code == 1);  // -1: still running, serving the restored state
    CHECK_THAT(ReadAll(g.dir() / "refused.log"),
               Catch::Contains("state_rollback: the database's audit chain ends at event") &&
                   Catch::Contains("--accept-state-rollback") && Catch::Contains("postgresql.head"));
  }
  // The operator confirms: it serves that state, and the acceptance is audited.
  {
    Process accepted({OSH_GATEWAY_BINARY, "--state-dir", g.state_dir(), "--database", restored, "--accept-state-rollback"},
                     g.dir() / "accepted.log");
    REQUIRE(WaitForSocket(g.sandbox_socket()));
    REQUIRE(WaitForSocket(g.admin_socket()));
    drv::Projection fetched;
    auto sandbox = gw::SandboxPolicy::NewStub(GatewayFixture::Channel(g.sandbox_socket()));
    CHECK(sandbox->GetProjection(GatewayFixture::Context(deleted_later.sandbox_handle()).get(),
                                 gw::GetProjectionRequest(), &fetched).ok());
    REQUIRE(Ctl(g, {"audit", "export", "--out", g.dir() / "audit.jsonl"}, &out, &err) == 0);
    INFO(ReadAll(g.dir() / "accepted.log"));
    CHECK(absl::StrContains(ReadAll(g.dir() / "audit.jsonl"), "state_rollback_accepted"));
    accepted.Signal(SIGTERM);
    CHECK(accepted.Wait() == 0);
  }
  // From then on the record follows the accepted state: a plain restart on it serves.
  Process plain({OSH_GATEWAY_BINARY, "--state-dir", g.state_dir(), "--database", restored}, g.dir() / "plain.log");
  CHECK(WaitForSocket(g.admin_socket()));
  CHECK(plain.running());
  plain.Signal(SIGTERM);
  CHECK(plain.Wait() == 0);
}

namespace {

// `policy-gateway migrate` from `from` into `url` with audit pages of 5 events, killed (-9) once its first
// page is committed; returns the events the target holds then.
int MigrateCutShort(const std::string& from, const std::string& url, const TempDir& work, const std::string& log) {
  Process migrate({OSH_GATEWAY_BINARY, "migrate", "--from", from, "--to", url}, work / log, "",
                  {"OSH_TEST_MIGRATE_SLOW_PAGES=5"});
  REQUIRE(Eventually([&] { return absl::StrContains(ReadAll(work / log), "event(s) copied"); }));
  migrate.Signal(SIGKILL);
  migrate.Wait();
  INFO(ReadAll(work / log));
  CHECK_THAT(ReadAll(work / log), !Catch::Contains("migrated"));
  std::string count;
  REQUIRE(PgCluster::Psql(url, "SELECT COUNT(*) FROM audit_events", &count) == 0);
  return std::stoi(count);
}

}  // namespace

TEST_CASE("replicas: a migration cut short by kill -9 leaves a target gateways refuse, and --replace-target copies it again",
          "[integration][postgres][replicas]") {
  // Regression (issue 25.12): kill -9 mid-copy left a target with part of the sandboxes and of the chain
  // that a gateway served silently, its chain forking from the source's.
  GatewayFixture single;
  REQUIRE(single.SetPolicy("default", Example("github.yaml")).ok());
  std::vector<gw::AdmitSandboxResponse> admitted(30);
  for (int i = 0; i < 30; ++i) REQUIRE(single.Admit("sb-" + std::to_string(i), &admitted[i]).ok());
  gw::DeleteSandboxRequest del;
  del.set_sandbox_id("sb-29");
  gw::DeleteSandboxResponse deleted;
  REQUIRE(single.admin().DeleteSandbox(GatewayFixture::Context().get(), del, &deleted).ok());
  std::string out, err;
  const std::string single_chain = single.dir() / "single.jsonl";
  REQUIRE(Ctl(single, {"audit", "export", "--out", single_chain}, &out, &err) == 0);
  const std::string source_head = LastHash(single_chain);
  REQUIRE(source_head.size() == 64);
  REQUIRE(single.Stop() == 0);
  const std::string from = "sqlite:" + single.state_dir() + "/gateway.db";

  // No migration into (or out of) a database a replica is heartbeating on.
  {
    const std::string busy = PgCluster::Shared().CreateDatabase();
    GatewayFixture replica(Database(busy));
    CHECK(RunCommand({OSH_GATEWAY_BINARY, "migrate", "--from", from, "--to", busy}, &out, &err) != 0);
    CHECK_THAT(err, Catch::Contains("live gateway replica"));
    CHECK(RunCommand({OSH_GATEWAY_BINARY, "migrate", "--from", busy, "--to", PgCluster::Shared().CreateDatabase()},
                     &out, &err) != 0);
    CHECK_THAT(err, Catch::Contains("the source has 1 live gateway replica"));
  }

  // kill -9 mid-copy: the audit chain goes in pages of 5 events (test hook), the migration is killed
  // after its first page is committed.
  const std::string url = PgCluster::Shared().CreateDatabase();
  TempDir work;
  CHECK(MigrateCutShort(from, url, work, "migrate.log") < 31);

  // A gateway refuses the marked target, naming the fix.
  {
    Process refused({OSH_GATEWAY_BINARY, "--state-dir", work / "var", "--database", url}, work / "refused.log");
    const int code = refused.Wait(std::chrono::seconds(20));
    INFO(ReadAll(work / "refused.log"));
    CHECK(code == 1);
    CHECK_THAT(ReadAll(work / "refused.log"),
               Catch::Contains("migration that did not finish") && Catch::Contains("--replace-target"));
  }
  // A plain migration into it is refused too; --replace-target empties it and copies again.
  CHECK(RunCommand({OSH_GATEWAY_BINARY, "migrate", "--from", from, "--to", url}, &out, &err) != 0);
  CHECK_THAT(err, Catch::Contains("--replace-target"));
  REQUIRE(RunCommand({OSH_GATEWAY_BINARY, "migrate", "--from", from, "--to", url, "--replace-target", "-o", "json"},
                     &out, &err) == 0);
  INFO(out << err);
  CHECK_THAT(out, Catch::Contains("\"sandboxes\":29"));
  CHECK_THAT(out, Catch::Contains(absl::StrCat("\"audit_head_hash\":\"", source_head, "\"")));
  // --replace-target never empties a database that is not an unfinished migration's target.
  CHECK(RunCommand({OSH_GATEWAY_BINARY, "migrate", "--from", from, "--to", url, "--replace-target"}, &out, &err) != 0);
  CHECK_THAT(err, Catch::Contains("holds no unfinished migration"));

  // Served now: the same chain as the source's, verified from genesis, and the same handles.
  GatewayFixture r1(Database(url));
  drv::Projection p;
  CHECK(r1.Fetch(admitted[0].sandbox_handle(), &p).ok());
  CHECK(r1.Fetch(admitted[29].sandbox_handle(), &p).error_code() == grpc::StatusCode::UNAUTHENTICATED);
  VerifiedChainLength(r1);
  const std::string single_lines = ReadAll(single_chain);
  CHECK(ReadAll(r1.dir() / "audit.jsonl").substr(0, single_lines.size()) == single_lines);
}


TEST_CASE("replicas: --resume finishes a migration cut short, and refuses one whose source changed under it",
          "[integration][postgres][replicas]") {
  // Issue 25.12: an interrupted migration is continued, not only copied again: the state is written
  // again whole and the chain from where the copy stopped, once its copied part is checked against the
  // source's.
  GatewayFixture single;
  REQUIRE(single.SetPolicy("default", Example("github.yaml")).ok());
  std::vector<gw::AdmitSandboxResponse> admitted(31);
  for (int i = 0; i < 30; ++i) REQUIRE(single.Admit("sb-" + std::to_string(i), &admitted[i]).ok());
  REQUIRE(single.Stop() == 0);
  const std::string from = "sqlite:" + single.state_dir() + "/gateway.db";
  TempDir work;
  std::string out, err;

  const std::string url = PgCluster::Shared().CreateDatabase();
  const int copied = MigrateCutShort(from, url, work, "migrate.log");
  REQUIRE(copied > 0);
  REQUIRE(copied < 31);
  // --resume and --replace-target together are a usage error; the gateway's refusal names both ways.
  CHECK(RunCommand({OSH_GATEWAY_BINARY, "migrate", "--from", from, "--to", url, "--resume", "--replace-target"}, &out,
                   &err) != 0);
  {
    Process refused({OSH_GATEWAY_BINARY, "--state-dir", work / "var", "--database", url}, work / "refused.log");
    CHECK(refused.Wait(std::chrono::seconds(20)) == 1);
    CHECK_THAT(ReadAll(work / "refused.log"), Catch::Contains("--resume") && Catch::Contains("--replace-target"));
  }

  // The source goes on meanwhile (its chain grows, a sandbox is added): what --resume writes is the
  // source as it is now.
  single.Start();
  REQUIRE(single.Admit("sb-30", &admitted[30]).ok());
  const std::string source_chain = single.dir() / "source.jsonl";
  REQUIRE(Ctl(single, {"audit", "export", "--out", source_chain}, &out, &err) == 0);
  const std::string source_head = LastHash(source_chain);
  REQUIRE(single.Stop() == 0);

  REQUIRE(RunCommand({OSH_GATEWAY_BINARY, "migrate", "--from", from, "--to", url, "--resume", "-o", "json"}, &out,
                     &err) == 0);
  INFO(out << err);
  CHECK_THAT(err, Catch::Contains(absl::StrCat("resuming after seq ", copied)));
  CHECK_THAT(out, Catch::Contains("\"sandboxes\":31"));
  CHECK_THAT(out, Catch::Contains(absl::StrCat("\"audit_resumed_after\":", copied)));
  CHECK_THAT(out, Catch::Contains(absl::StrCat("\"audit_head_hash\":\"", source_head, "\"")));
  // Finished: nothing left to resume.
  CHECK(RunCommand({OSH_GATEWAY_BINARY, "migrate", "--from", from, "--to", url, "--resume"}, &out, &err) != 0);
  CHECK_THAT(err, Catch::Contains("nothing to --resume"));
  {
    GatewayFixture r1(Database(url));
    drv::Projection p;
    CHECK(r1.Fetch(admitted[0].sandbox_handle(), &p).ok());
    CHECK(r1.Fetch(admitted[30].sandbox_handle(), &p).ok());
    VerifiedChainLength(r1);
    const std::string source_lines = ReadAll(source_chain);
    CHECK(ReadAll(r1.dir() / "audit.jsonl").substr(0, source_lines.size()) == source_lines);
  }

  // Another interrupted migration; then the source is another database at the same path (a restored or
  // replaced file): its chain does not continue what was copied, so --resume refuses and writes nothing.
  const std::string url2 = PgCluster::Shared().CreateDatabase();
  const int copied2 = MigrateCutShort(from, url2, work, "migrate2.log");
  REQUIRE(copied2 > 0);
  GatewayFixture other;
  REQUIRE(other.SetPolicy("default", Example("github.yaml")).ok());
  gw::AdmitSandboxResponse other_admitted;
  REQUIRE(other.Admit("other-0", &other_admitted).ok());
  REQUIRE(other.Stop() == 0);
  CHECK(RunCommand({OSH_GATEWAY_BINARY, "migrate", "--from", "sqlite:" + other.state_dir() + "/gateway.db", "--to",
                    url2, "--resume"}, &out, &err) != 0);
  CHECK_THAT(err, Catch::Contains("not from") && Catch::Contains("--replace-target"));
  for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(single.state_dir() + "/gateway.db" + suffix);
  std::filesystem::copy_file(other.state_dir() + "/gateway.db", single.state_dir() + "/gateway.db");
  CHECK(RunCommand({OSH_GATEWAY_BINARY, "migrate", "--from", from, "--to", url2, "--resume"}, &out, &err) != 0);
  CHECK_THAT(err, Catch::Contains("not a prefix of the source's chain") && Catch::Contains("--replace-target"));
  std::string count;
  REQUIRE(PgCluster::Psql(url2, "SELECT COUNT(*) FROM audit_events", &count) == 0);
  CHECK(std::stoi(count) == copied2);
  REQUIRE(PgCluster::Psql(url2, "SELECT COUNT(*) FROM migration_marker", &count) == 0);
  CHECK(std::stoi(count) == 1);
}

TEST_CASE("replicas: a dead replica's row expires and an admission note it left in flight is settled",
          "[integration][postgres][replicas]") {
  // Regression (issue 25.17): rows of replicas that died stayed in `replicas` for good, and so did the
  // in-flight mark of an admission note a dead replica left.
  REQUIRE_FALSE(PgCluster::BinDir().empty());
  ReplicasOfOneDriver setup;
  const std::string url = setup.args[1];
  GatewayFixture g(setup.args);
  // The driver is down meanwhile, so nothing delivers the note before the live replica settles it.
  REQUIRE(setup.driver.Stop() == 0);
  // A replica that died minutes ago: its row and an admission note it left in flight for sb-ghost.
  const std::string context = osh::policy::SerializeDeterministic(ContextFor("sb-ghost"));
  REQUIRE(PgCluster::Psql(url, absl::StrCat(
                        "INSERT INTO replicas (id, started_at, heartbeat_at) VALUES ('ghost:1:dead', 0, "
                        "(extract(epoch from clock_timestamp()) * 1000)::bigint - 300000); "
                        "INSERT INTO pending_releases (driver_handle, queued_at, in_flight_owner, context, idempotency_key) "
                        "VALUES ('', 0, 'ghost:1:dead', '\\x",
                        absl::BytesToHexString(context), "'::bytea, 'adm_ghost')")) == 0);
  auto query = [&](const std::string& sql) {
    std::string rows;
    if (PgCluster::Psql(url, sql, &rows) != 0) return std::string("error");
    return std::string(absl::StripAsciiWhitespace(rows));
  };
  // The live replica deletes the row and settles the note (due, no owner), and says so in its log.
  CHECK(Eventually([&] { return query("SELECT COUNT(*) FROM replicas WHERE id = 'ghost:1:dead'") == "0"; },
                   std::chrono::seconds(20)));
  CHECK(Eventually([&] { return query("SELECT COUNT(*) FROM pending_releases WHERE in_flight_owner <> ''") == "0"; },
                   std::chrono::seconds(20)));
  CHECK(Eventually([&] {
    const std::string log = ReadAll(g.log_path());
    return absl::StrContains(log, "replica ghost:1:dead expired") &&
           absl::StrContains(log, "left in flight by replica ghost:1:dead");
  }));
  // With the driver back, the settled note is delivered like any due release.
  setup.driver.Start();
  CHECK(Eventually([&] { return query("SELECT COUNT(*) FROM pending_releases") == "0"; }, std::chrono::seconds(30)));
  CHECK(setup.Held().count("sb-ghost") == 0);
  CHECK(g.Status().pending_releases() == 0);
  CHECK(g.Status().live_replicas() == 1);
  // A replica that is alive is never expired.
  std::string rows;
  REQUIRE(PgCluster::Psql(url, "SELECT COUNT(*) FROM replicas", &rows) == 0);
  CHECK(absl::StripAsciiWhitespace(rows) == "1");
}

// Issue 25.10 across replicas: an admission on B checked against the ceiling B had in memory committed
// after A's SetCeiling had stored (and been acknowledged for) a narrower one, until B's feed caught up.
TEST_CASE("replicas: no admission on B commits outside a ceiling A's SetCeiling acknowledged",
          "[integration][postgres][replicas][ceiling][issue25]") {
  TempDir keys;
  for (const char* name : {"authority", "gateway"}) {
    auto key = osh::trust::PrivateKey::Generate("ed25519");
    REQUIRE(key.ok());
    WriteFile(keys / (std::string(name) + ".key"), key->ToPem());
    WriteFile(keys / (std::string(name) + ".pub"), key->PublicKeyPem());
  }
  WriteFile(keys / "trust.json", TrustStoreJson({{"authority", ReadFile(keys / "authority.pub")},
                                                 {"gateway-key", ReadFile(keys / "gateway.pub")}}));
  auto sign = [&](const std::string& policy_file, int version, const std::string& name) {
    std::string out, err;
    REQUIRE(CtlOffline({"ceiling", "sign", "-f", policy_file, "--id", "corp-max", "--version", std::to_string(version),
                        "--key", keys / "authority.key", "--key-id", "authority", "--out", keys / name},
                       &out, &err) == 0);
    auto parsed = osh::trust::ParseCeilingJson(ReadFile(keys / name), name);
    REQUIRE(parsed.ok());
    gw::SetCeilingRequest request;
    *request.mutable_ceiling() = *std::move(parsed);
    return request;
  };
  const char* other = std::getenv("OSH_TEST_GATEWAY_BINARY");  // another build (to show the test fails there)
  const std::string binary = other != nullptr && *other != '\0' ? other : OSH_GATEWAY_BINARY;
  std::vector<std::string> args = Database(PgCluster::Shared().CreateDatabase());
  args.insert(args.end(), {"--trust-store", keys / "trust.json", "--builtin-signing-key", keys / "gateway.key",
                           "--builtin-signing-key-id", "gateway-key"});
  GatewayFixture a(args, {}, binary), b(args, {}, binary);
  REQUIRE(a.SetPolicy("default", Example("github.yaml")).ok());
  gw::SetCeilingResponse set;
  REQUIRE(a.admin().SetCeiling(GatewayFixture::Context().get(), sign(kExamples + "github.yaml", 1, "wide.json"), &set).ok());
  REQUIRE(Eventually([&] { return b.Status().ceiling().version() == 1; }));
  const gw::SetCeilingRequest narrow = sign(kExamples + "restrictive-default.yaml", 2, "narrow.json");

  // Admissions on B from 6 threads (inside the wide ceiling, outside the narrow one) while A sets the narrow one.
  std::atomic<bool> stop{false}, acknowledged{false};
  std::atomic<int> next{0}, admitted{0}, admitted_after_ack{0}, other_errors{0};
  std::mutex mu;
  std::vector<std::string> unexpected;
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&] {
      while (!stop) {
        const bool started_after_ack = acknowledged;
        gw::AdmitSandboxResponse response;
        const grpc::Status status = b.Admit(absl::StrCat("sb-", next++), &response);
        if (status.ok()) {
          ++admitted;
          if (started_after_ack) ++admitted_after_ack;
        } else if (!absl::StartsWith(status.error_message(), "exceeds_ceiling: ")) {
          ++other_errors;
          std::lock_guard<std::mutex> lock(mu);
          unexpected.push_back(status.error_message());
        }
      }
    });
  }
  REQUIRE(Eventually([&] { return admitted >= 20; }));
  const grpc::Status set_status = a.admin().SetCeiling(GatewayFixture::Context().get(), narrow, &set);
  acknowledged = true;
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  stop = true;
  for (auto& thread : threads) thread.join();
  REQUIRE(set_status.ok());
  INFO("unexpected errors: " << absl::StrJoin(unexpected, " | "));
  CHECK(other_errors == 0);
  // Every sandbox B admitted is outside the narrow ceiling: each one must have committed before A's
  // ceiling did — none after A acknowledged it — and A's count is exactly them.
  CHECK(admitted_after_ack == 0);
  CHECK(set.sandboxes_outside() == static_cast<uint64_t>(admitted.load()));
  REQUIRE(Eventually([&] { return a.Status().admitted_sandboxes() == static_cast<uint64_t>(admitted.load()); }));
  CHECK(b.Status().admitted_sandboxes() == static_cast<uint64_t>(admitted.load()));
}

TEST_CASE("replicas: a replica whose feed is behind never puts an older policy over the one another replica put in force",
          "[integration][postgres][replicas]") {
  // Regression (found in review, stop 45): B's change feed had not brought A's new revision of scope
  // sandbox:sb-1 when B changed `default`; B's re-projection of every sandbox, made from the revisions
  // B knew, committed sb-1's older revision over the one A had put in force, and every replica served it.
  const std::string url = PgCluster::Shared().CreateDatabase();
  GatewayFixture a(Database(url)), b(Database(url));
  auto digest = [](const openshell::sandbox::v1::SandboxPolicy& p) {
    return osh::policy::Sha256Hex(osh::policy::SerializeDeterministic(p));
  };
  const auto base = Example("github.yaml"), own = Example("restrictive-default.yaml");
  auto narrowed = own, widened = base;
  narrowed.mutable_filesystem()->add_read_only("/opt/narrowed");
  widened.mutable_filesystem()->add_read_only("/opt/widened");
  REQUIRE(a.SetPolicy("default", base).ok());
  REQUIRE(a.SetPolicy("sandbox:sb-1", own).ok());
  gw::AdmitSandboxResponse one, two;
  REQUIRE(a.Admit("sb-1", &one).ok());
  REQUIRE(a.Admit("sb-2", &two).ok());
  REQUIRE(one.policy_digest() == digest(own));
  auto served = [](GatewayFixture& g, const std::string& handle) {
    drv::Projection p;
    return g.Fetch(handle, &p).ok() ? p.policy_digest() : std::string("(refused)");
  };
  auto stored = [&](const std::string& id) {
    std::string out;
    REQUIRE(PgCluster::Psql(url, "SELECT policy_digest FROM sandboxes WHERE sandbox_id = '" + id + "'", &out) == 0);
    return std::string(absl::StripAsciiWhitespace(out));
  };
  REQUIRE(Eventually([&] { return served(b, one.sandbox_handle()) == digest(own); }));

  // B's feed stalls (each of its rounds first records its position in B's row, held here, then reads).
  HeldRows held(url, "SELECT id FROM replicas WHERE id = '" + b.Status().replica_id() + "' FOR UPDATE");
  REQUIRE(Eventually([&] { return WaitingOnLock(url, "UPDATE replicas SET feed_seq") == 1; }));
  REQUIRE(a.SetPolicy("sandbox:sb-1", narrowed).ok());
  CHECK(served(a, one.sandbox_handle()) == digest(narrowed));
  // Operators see B's lag: changes it has not read, and the time since it last read the feed.
  CHECK(Eventually([&] {
    const auto status = b.Status();
    return status.feed_changes_behind() >= 1 && status.feed_read_age_ms() >= 1500;
  }));
  std::string status_out, status_err;
  REQUIRE(Ctl(b, {"status"}, &status_out, &status_err) == 0);
  const size_t feed_line = status_out.find("change feed:");
  REQUIRE(feed_line != std::string::npos);
  CHECK_THAT(status_out.substr(feed_line, status_out.find('\n', feed_line) - feed_line),
             Catch::Matches(R"re(change feed:        [1-9][0-9]* change\(s\) not read yet; last read [0-9]+\.[0-9] s ago)re"));
  // A stops: it would re-project on B's revision and repair what B wrote, but a replica may be gone.
  REQUIRE(a.Stop() == 0);
  // B knows only revision 1 of sb-1's scope. Its change of `default` would put it back: the database
  // refuses that commit, B re-reads the revisions from it and runs the change again.
  gw::PolicyRevision changed;
  REQUIRE(b.SetPolicy("default", widened, &changed).ok());
  CHECK(stored("sb-1") == digest(narrowed));
  CHECK(stored("sb-2") == digest(widened));
  CHECK(changed.sandboxes_updated() >= 1);
  CHECK_THAT(b.log(), Catch::Contains("re-projection of scope default: policy_changed: scope sandbox:sb-1 is at "
                                      "revision 2 in the database; the projections were made from revision 1; "
                                      "nothing moved, re-reading the policy revisions and running it again"));

  // Its feed back, B serves each sandbox on its own scope's newest, and has read every change.
  held.Release();
  CHECK(Eventually([&] { return b.Status().feed_changes_behind() == 0; }, std::chrono::seconds(20)));
  CHECK(Eventually([&] { return served(b, one.sandbox_handle()) == digest(narrowed); }, std::chrono::seconds(20)));
  CHECK(Eventually([&] { return served(b, two.sandbox_handle()) == digest(widened); }, std::chrono::seconds(20)));
  CHECK(stored("sb-1") == digest(narrowed));
  CHECK(stored("sb-2") == digest(widened));
  a.Start();
  CHECK(served(a, one.sandbox_handle()) == digest(narrowed));
  CHECK(served(a, two.sandbox_handle()) == digest(widened));
  CHECK(a.Stop() == 0);
  CHECK(b.Stop() == 0);
}

namespace {
// Every admission's commit takes the ceiling's advisory lock shared (the store checks the batch against the
// ceiling in force); a session holding it exclusive (as SetCeiling's commit does) holds every admission
// there. The key is the store's kCeilingLock ("osh" + 2).
constexpr char kHoldCeilingChecks[] = "SELECT pg_advisory_xact_lock(478677565442), 1";
constexpr char kCeilingCheck[] = "SELECT pg_advisory_xact_lock_shared";
// What `sql` prints on the database at `url` (tuples only, unaligned, trimmed).
std::string PsqlValue(const std::string& url, const std::string& sql) {
  std::string out;
  REQUIRE(PgCluster::Psql(url, sql, &out) == 0);
  return std::string(absl::StripAsciiWhitespace(out));
}
// Admits `id` on `g` on a thread of its own, with a deadline long enough to wait out a replica's lease;
// the call's status lands in `status` when the thread is joined.
std::thread AdmitWaiting(GatewayFixture& g, const std::string& id, grpc::Status* status) {
  return std::thread([&g, id, status] {
    gw::AdmitSandboxRequest request;
    request.mutable_context()->set_sandbox_id(id);
    request.mutable_context()->set_user_subject("alice@example.com");
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(90));
    gw::AdmitSandboxResponse response;
    *status = g.admin().AdmitSandbox(&context, request, &response);
  });
}
}  // namespace

TEST_CASE("replicas: an admission on a replica the others counted as gone is refused, never committed on a released "
          "handle",
          "[integration][postgres][replicas]") {
  // Regression (found in review, stop 45): B's heartbeat stalled past the lease while an admission of
  // B's waited to commit; A took over B's admission note and released its driver handle, then B's commit
  // went through anyway, serving a sandbox on a handle the driver had let go.
  ReplicasOfOneDriver fleet;
  const std::string url = fleet.args[1];
  GatewayFixture a(fleet.args), b(fleet.args);
  auto query = [&](const std::string& sql) { return PsqlValue(url, sql); };
  gw::AdmitSandboxResponse first;
  REQUIRE(b.Admit("sb-first", &first).ok());

  // B's heartbeat stalls, and so does the ceiling's lock: B's next admission waits at its commit, its note
  // recorded and its driver handle acquired.
  const std::string b_id = b.Status().replica_id();
  HeldRows heartbeat(url, "SELECT id FROM replicas WHERE id = '" + b_id + "' FOR UPDATE");
  REQUIRE(Eventually([&] { return WaitingOnLock(url, "INSERT INTO replicas") == 1; }));
  HeldRows head(url, kHoldCeilingChecks);
  grpc::Status admitted;
  std::thread admitting = AdmitWaiting(b, "sb-late", &admitted);
  CHECK(Eventually([&] { return WaitingOnLock(url, kCeilingCheck) == 1; }));
  CHECK(fleet.Held().count("sb-late") == 1);
  // After the lease (10 s without a heartbeat) A counts B as gone and takes B's note over to release its
  // handle (B never claims a note of its own admission in flight): either A's expiry pass settles it first
  // (A's log names it "left in flight by replica B, which is gone") or A's release loop claims it directly
  // (nothing logged but the release) — whichever of the two runs first after the lease. Either way it is
  // no longer B's unclaimed note, which is what B's commit needs to go through.
  CHECK(Eventually([&] {
    return query("SELECT COUNT(*) FROM pending_releases WHERE in_flight_owner = '" + b_id + "' AND claimed_by = ''") ==
           "0";
  }, std::chrono::seconds(40)));
  head.Release();
  admitting.join();
  CHECK(admitted.error_code() == grpc::StatusCode::ABORTED);
  CHECK_THAT(admitted.error_message(), Catch::StartsWith("admission_taken_over: the admission of 'sb-late' was taken "
                                                         "over by another replica"));
  CHECK(query("SELECT COUNT(*) FROM sandboxes WHERE sandbox_id = 'sb-late'") == "0");
  CHECK(Eventually([&] { return fleet.Held().count("sb-late") == 0; }, std::chrono::seconds(20)));

  // B's heartbeat back, it admits the sandbox anew, on a new handle.
  heartbeat.Release();
  gw::AdmitSandboxResponse again;
  CHECK(Eventually([&] { return b.Admit("sb-late", &again).ok(); }, std::chrono::seconds(20)));
  CHECK(fleet.Held().count("sb-late") == 1);
  drv::Projection p;
  CHECK(a.Fetch(first.sandbox_handle(), &p).ok());
  CHECK(a.Stop() == 0);
  CHECK(b.Stop() == 0);
}

TEST_CASE("replicas: a replica whose heartbeat stalls past the lease never takes over its own admission in flight",
          "[integration][postgres][replicas]") {
  // Regression (found in review, stop 45): a replica counted itself as gone, claimed the note of its own
  // admission in flight for release, and the admission was then refused as taken over "by another replica".
  ReplicasOfOneDriver fleet;
  const std::string url = fleet.args[1];
  GatewayFixture g(fleet.args);
  auto query = [&](const std::string& sql) { return PsqlValue(url, sql); };
  HeldRows heartbeat(url, "SELECT id FROM replicas WHERE id = '" + g.Status().replica_id() + "' FOR UPDATE");
  REQUIRE(Eventually([&] { return WaitingOnLock(url, "INSERT INTO replicas") == 1; }));
  HeldRows head(url, kHoldCeilingChecks);
  grpc::Status admitted;
  std::thread admitting = AdmitWaiting(g, "sb-slow", &admitted);
  CHECK(Eventually([&] { return WaitingOnLock(url, kCeilingCheck) == 1; }));
  // Past the lease, and a few of the gateway's release rounds (one a second) after it: nothing claimed.
  REQUIRE(Eventually([&] {
    return query(absl::StrCat("SELECT COUNT(*) FROM replicas WHERE heartbeat_at < ",
                              "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT - 13000")) == "1";
  }, std::chrono::seconds(40)));
  CHECK(query("SELECT COUNT(*) FROM pending_releases WHERE claimed_by <> ''") == "0");
  head.Release();
  admitting.join();
  CHECK(admitted.ok());
  INFO(admitted.error_message());
  heartbeat.Release();
  CHECK(fleet.Held().count("sb-slow") == 1);
  CHECK(g.Stop() == 0);
}

TEST_CASE("replicas: a replica whose write waits long for a lock stays live, and its feed's position "
          "is recorded",
          "[integration][postgres][replicas]") {
  // Regression (found in review, stop 45): a write waiting for a lock (then the fleet-wide head lock; now
  // the ceiling's, which SetCeiling holds) holds its replica's feed,
  // and the heartbeat ran on the feed's thread: past 10 s the others counted the replica as gone (and
  // took over its admissions in flight). The heartbeat now has a thread and a connection of its own.
  ReplicasOfOneDriver fleet;
  const std::string url = fleet.args[1];
  GatewayFixture g(fleet.args);
  auto query = [&](const std::string& sql) { return PsqlValue(url, sql); };
  const std::string id = g.Status().replica_id();
  gw::AdmitSandboxResponse first;
  REQUIRE(g.Admit("sb-first", &first).ok());
  // The feed records how far it has read: up to the newest change (the admission's).
  CHECK(Eventually([&] {
    return query("SELECT feed_seq = (SELECT MAX(seq) FROM changes) AND feed_read_at > 0 FROM replicas WHERE id = '" +
                 id + "'") == "t";
  }));
  // docs/replicas.md's query of the feeds' lag.
  const std::string lag = query(R"sql(
  SELECT id, (SELECT COALESCE(MAX(seq), 0) FROM changes) - feed_seq AS changes_behind,
         (extract(epoch from clock_timestamp()) * 1000)::bigint - feed_read_at AS ms_since_read
  FROM replicas ORDER BY id;)sql");
  CHECK_THAT(lag, Catch::StartsWith(id + "|0|"));
  HeldRows head(url, kHoldCeilingChecks);
  grpc::Status admitted;
  std::thread admitting = AdmitWaiting(g, "sb-waiting", &admitted);
  CHECK(Eventually([&] { return WaitingOnLock(url, kCeilingCheck) == 1; }));
  const std::string started = query("SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT");
  // Past the lease: the replica's heartbeat is still fresh (within the last 2 s).
  REQUIRE(Eventually([&] {
    return query("SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT - " + started + " > 12000") == "t";
  }, std::chrono::seconds(40)));
  CHECK(query("SELECT COUNT(*) FROM replicas WHERE id = '" + id + "' AND heartbeat_at > "
              "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT - 2000") == "1");
  CHECK(WaitingOnLock(url, kCeilingCheck) == 1);  // the write did wait all along
  head.Release();
  admitting.join();
  INFO(admitted.error_message());
  CHECK(admitted.ok());
  CHECK(g.Stop() == 0);
}

TEST_CASE("replicas: a replica whose heartbeat cannot be sent says the database is unreachable, then recovers",
          "[integration][postgres][replicas]") {
  // Regression (found in review, stop 45): with the heartbeat on a connection of its own, a heartbeat
  // connection that could not be re-established (the database refusing new connections while the old
  // ones worked) went unnoticed: the replica said it was reachable while the others counted it as gone.
  const std::string url = PgCluster::Shared().CreateDatabase();
  const std::string dbname = url.substr(url.rfind('/') + 1);
  const std::string admin = PgCluster::Shared().Url("postgres");
  GatewayFixture g(Database(url));
  REQUIRE(g.SetPolicy("default", Example("github.yaml")).ok());
  REQUIRE(PgCluster::Psql(admin, "ALTER DATABASE " + dbname + " ALLOW_CONNECTIONS false") == 0);
  // Cut the heartbeat's connection (the statements only it runs): it cannot connect again.
  CHECK(Eventually([&] {
    REQUIRE(PgCluster::Psql(admin, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '" + dbname +
                                       "' AND (starts_with(query, 'INSERT INTO replicas') OR starts_with(query, "
                                       "'DELETE FROM replicas') OR starts_with(query, 'UPDATE pending_releases p'))") == 0);
    return absl::StrContains(g.log(), ": unreachable; admissions and changes are refused");
  }, std::chrono::seconds(20)));
  CHECK_THAT(g.log(), Catch::Contains("the heartbeat is not sent (the other replicas count this one as gone after 10 s)"));
  REQUIRE(PgCluster::Psql(admin, "ALTER DATABASE " + dbname + " ALLOW_CONNECTIONS true") == 0);
  CHECK(Eventually([&] { return absl::StrContains(g.log(), ": reachable again; admitting"); }, std::chrono::seconds(20)));
  gw::AdmitSandboxResponse admitted;
  CHECK(Eventually([&] { return g.Admit("sb-1", &admitted).ok(); }));
  CHECK(g.Stop() == 0);
}

TEST_CASE("replicas: a policy change is re-projected by the replica that made it, and by another only once that one "
          "committed or did not",
          "[integration][postgres][replicas]") {
  // Regression (bench_replicas, stop 45): the other replica's feed brought the revision before the
  // origin's re-projection, found none of the scope's sandboxes current, and signed and committed every
  // one of them a second time. It now waits for the origin's re-projection (announced on the feed), then
  // moves only what that one did not; if the origin stops first, it moves them all after a wait
  // (replica_reprojection_wait_ms: 60 s for B here, so that only the announcement ends B's wait in time).
  const std::string url = PgCluster::Shared().CreateDatabase();
  auto waiting = [&](const std::string& ms) {
    auto args = Database(url);
    args.insert(args.end(), {"--replica-reprojection-wait-ms", ms});
    return args;
  };
  GatewayFixture a(Database(url)), b(waiting("60000"));
  const std::string a_id = a.Status().replica_id();
  auto digest = [](const openshell::sandbox::v1::SandboxPolicy& p) {
    return osh::policy::Sha256Hex(osh::policy::SerializeDeterministic(p));
  };
  auto base = Example("github.yaml"), widened = base, narrowed = base;
  widened.mutable_filesystem()->add_read_only("/opt/widened");
  narrowed.mutable_filesystem()->add_read_only("/opt/narrowed");
  REQUIRE(a.SetPolicy("default", base).ok());
  std::vector<std::string> handles;
  for (int i = 1; i <= 6; ++i) {
    gw::AdmitSandboxResponse admitted;
    REQUIRE(a.Admit("sb-" + std::to_string(i), &admitted).ok());
    handles.push_back(admitted.sandbox_handle());
  }
  auto all_served = [&](GatewayFixture& g, const std::string& want) {
    for (const auto& handle : handles) {
      drv::Projection p;
      if (!g.Fetch(handle, &p).ok() || p.policy_digest() != want) return false;
    }
    return true;
  };
  REQUIRE(Eventually([&] { return all_served(b, digest(base)); }));
  auto summaries = [&] {
    return PsqlValue(url, "SELECT COUNT(*) FROM audit_events WHERE type = 'reprojection' AND sandbox_id = ''");
  };
  const std::string before = summaries();
  // A's re-projection waits on one sandbox's row, long enough for B's feed to bring the revision alone.
  auto change_on_a = [&](const openshell::sandbox::v1::SandboxPolicy& policy, grpc::Status* status,
                         gw::PolicyRevision* out) {
    return std::thread([&a, policy, status, out] {
      gw::SetPolicyRequest request;
      request.set_scope("default");
      *request.mutable_policy() = policy;
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
      *status = a.admin().SetPolicy(&context, request, out);
    });
  };
  {
    HeldRows held(url, "SELECT sandbox_id FROM sandboxes WHERE sandbox_id = 'sb-1' FOR UPDATE");
    grpc::Status changed;
    gw::PolicyRevision revision;
    std::thread changing = change_on_a(widened, &changed, &revision);
    REQUIRE(Eventually([&] { return WaitingOnLock(url, "SELECT 1 FROM sandboxes") + WaitingOnLock(url, "SELECT envelope_id FROM sandboxes") == 1; }));
    // B's feed brought the revision alone: B waits for A's re-projection (queued, not run).
    CHECK(Eventually([&] { return b.Status().reprojections_pending() == 1; }));
    // An announcement made from an older revision of the scope (as A's re-projection of the previous
    // change would be, had it reached the feed late) is not the one B waits for: B reads it and waits on.
    REQUIRE(PgCluster::Psql(url, "INSERT INTO changes (origin, kind, payload, writer_schema) VALUES ('" + a_id +
                                     "', 'reprojection', '1 default', 8); NOTIFY osh_changes") == 0);
    CHECK(Eventually([&] { return b.Status().feed_changes_behind() == 0; }));
    std::this_thread::sleep_for(std::chrono::seconds(1));  // time for a wait it wrongly ended to show
    CHECK(b.Status().reprojections_pending() == 1);
    CHECK(WaitingOnLock(url, "SELECT 1 FROM sandboxes") + WaitingOnLock(url, "SELECT envelope_id FROM sandboxes") == 1);
    held.Release();
    changing.join();
    INFO(changed.error_message());
    REQUIRE(changed.ok());
    CHECK(revision.sandboxes_updated() == 6);
  }
  CHECK(Eventually([&] { return all_served(b, digest(widened)); }));
  // A's re-projection arrived, announced: B ran its own at once (long before its 60 s wait), found nothing
  // left to move, wrote nothing.
  CHECK(Eventually([&] { return b.Status().reprojections_pending() == 0; }, std::chrono::seconds(20)));
  std::this_thread::sleep_for(std::chrono::seconds(2));  // taken off the queue; its run (finding nothing) ends
  CHECK(summaries() == std::to_string(std::stoi(before) + 1));
  CHECK_FALSE(absl::StrContains(b.log(), "re-projected here"));
  // A change with nothing to move on A is announced too: B may hold sandboxes of the scope A does not know.
  REQUIRE(a.SetPolicy("sandbox:sb-none", base).ok());
  CHECK(PsqlValue(url, "SELECT COUNT(*) FROM changes WHERE kind = 'reprojection' AND payload = '1 sandbox:sb-none'") ==
        "1");
  CHECK(Eventually([&] {  // B read A's revision (its feed is past it), and its wait ended long before its 60 s
    const auto status = b.Status();
    return status.feed_changes_behind() == 0 && status.reprojections_pending() == 0;
  }, std::chrono::seconds(20)));
  // Only A, whose changes they were, announced re-projections; B's own runs did not.
  std::this_thread::sleep_for(std::chrono::seconds(1));
  CHECK(PsqlValue(url, "SELECT COUNT(*) FROM changes WHERE kind = 'reprojection' AND origin <> '" + a_id + "'") == "0");

  // B waits 2 s from here on (a restart with another wait).
  REQUIRE(b.Stop() == 0);
  b.SetExtraArgs(waiting("2000"));
  b.Start();
  REQUIRE(Eventually([&] { return all_served(b, digest(widened)); }));

  // A is killed between its revision's commit and its re-projection's: B moves every sandbox itself.
  {
    HeldRows held(url, "SELECT sandbox_id FROM sandboxes WHERE sandbox_id = 'sb-1' FOR UPDATE");
    grpc::Status changed;
    gw::PolicyRevision revision;
    std::thread changing = change_on_a(narrowed, &changed, &revision);
    REQUIRE(Eventually([&] { return WaitingOnLock(url, "SELECT 1 FROM sandboxes") + WaitingOnLock(url, "SELECT envelope_id FROM sandboxes") == 1; }));
    a.Kill9();
    changing.join();
    CHECK_FALSE(changed.ok());
  }
  CHECK(Eventually([&] { return all_served(b, digest(narrowed)); }, std::chrono::seconds(30)));
  CHECK_THAT(b.log(), Catch::Contains("policy scope default changed: 6 sandbox(es) re-projected here"));
  CHECK(b.Stop() == 0);
}

TEST_CASE("replicas: events a replica appended are sealed into the chain by another after it is killed",
          "[integration][postgres][replicas]") {
  // Issue 27: replicas append their events unsealed, without the fleet-wide head lock; the sealer numbers
  // and chains them. Held by a session of the test's own (as another replica's sealer would hold it), the
  // head stops no admission; A is then killed with its events still pending, and B's next read of the
  // log seals them: every acknowledged admission is in B's chain, which verifies link by link.
  ReplicasOfOneDriver fleet;
  const std::string url = fleet.args[1];
  GatewayFixture a(fleet.args), b(fleet.args);
  const size_t before = VerifiedChainLength(b);
  std::vector<std::string> handles;
  {
    HeldRows head(url, "SELECT seq FROM audit_head WHERE id = 1 FOR UPDATE");
    for (int i = 0; i < 3; ++i) {
      gw::AdmitSandboxResponse admitted;
      REQUIRE(a.Admit("sb-" + std::to_string(i), &admitted).ok());  // commits: no write waits for the head
      handles.push_back(admitted.sandbox_handle());
    }
    CHECK(PsqlValue(url, "SELECT COUNT(*) FROM audit_pending WHERE type = 'admission'") == "3");
    CHECK(PsqlValue(url, "SELECT COUNT(*) FROM audit_events WHERE type = 'admission'") == "0");  // not sealed
    a.Kill9();
  }
  std::set<std::string> admitted;
  CHECK(Eventually([&] {
    admitted.clear();
    for (const auto& e : b.AuditEvents()) {
      if (e.type() == "admission") admitted.insert(e.sandbox_id());
    }
    return admitted.size() == 3;
  }));
  CHECK(admitted == std::set<std::string>{"sb-0", "sb-1", "sb-2"});
  CHECK(VerifiedChainLength(b) >= before + 3);
  CHECK(PsqlValue(url, "SELECT COUNT(*) FROM audit_pending") == "0");
  // A's feed rows were sealed too, and B's view holds the three sandboxes A admitted.
  CHECK(Eventually([&] { return PsqlValue(url, "SELECT COUNT(*) FROM changes_pending") == "0"; }));
  for (const std::string& handle : handles) {
    drv::Projection p;
    CHECK(Eventually([&] { return b.Fetch(handle, &p).ok(); }));
  }
  CHECK(b.Stop() == 0);
}

TEST_CASE("replicas: the same report sent to two replicas at once is audited once", "[integration][postgres][replicas]") {
  // Stop 68's report dedupe compares inside the transaction that records a report (PostgreSQL: the row read
  // FOR UPDATE). Here two replicas take the same report for one sandbox at once, over and over: the
  // comparison must see the other replica's commit, or each would audit its own copy.
  const std::string url = PgCluster::Shared().CreateDatabase();
  const std::vector<std::string> args = {"--database", url, "--reports-per-second", "1000", "--report-burst", "100000"};
  GatewayFixture a(args), b(args);
  REQUIRE(a.SetPolicy("default", Example("github.yaml")).ok());
  gw::AdmitSandboxResponse admitted;
  REQUIRE(a.Admit("sb-1", &admitted).ok());
  auto report = [&](GatewayFixture& g, gw::LoadStatus status, const std::string& error) {
    gw::ReportPolicyStatusRequest request;
    request.set_policy_digest(admitted.policy_digest());
    request.set_status(status);
    request.set_error(error);
    gw::ReportPolicyStatusResponse response;
    return g.sandbox().ReportPolicyStatus(GatewayFixture::Context(admitted.sandbox_handle()).get(), request, &response);
  };
  REQUIRE(Eventually([&] { return report(b, gw::LOADED, "").ok(); }));  // B's view holds the sandbox
  const std::string count = "SELECT (SELECT COUNT(*) FROM audit_events WHERE type = 'report') + "
                            "(SELECT COUNT(*) FROM audit_pending WHERE type = 'report')";
  REQUIRE(PsqlValue(url, count) == "1");
  // 25 reports from each replica at once; Catch's assertions stay on this thread (each sender counts its
  // failures).
  auto both_at_once = [&](gw::LoadStatus status, const std::string& error) {
    std::atomic<int> failed{0};
    std::vector<std::thread> senders;
    for (GatewayFixture* g : {&a, &b}) {
      senders.emplace_back([&, g] {
        for (int i = 0; i < 25; ++i) failed += report(*g, status, error).ok() ? 0 : 1;
      });
    }
    for (auto& t : senders) t.join();
    return failed.load();
  };
  CHECK(both_at_once(gw::LOADED, "") == 0);
  CHECK(PsqlValue(url, count) == "1");  // each the same as the one recorded
  // Another status is a change: audited once, whichever replica took it first (before the mend, each
  // replica's first FAILED report was audited: its snapshot's row, still LOADED, did not match the locking
  // query's comparison, so the other's commit was not waited for).
  CHECK(both_at_once(gw::FAILED, "no landlock") == 0);
  CHECK(PsqlValue(url, count) == "2");
}
