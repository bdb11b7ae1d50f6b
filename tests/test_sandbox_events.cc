// WatchSandboxes and `policyctl events` (issue 29 item 1): sandbox state changes pushed to operators from
// the audit chain — admitted, reported (loaded / failed), re-projected, deleted — with the audit seq as a
// cursor that resumes across a gateway restart; the per-sandbox filter; and which audit types are changes.
#include <google/protobuf/util/json_util.h>

#include <mutex>
#include <thread>

#include "absl/strings/str_split.h"
#include "gateway/core/sandbox_events.h"
#include "tests/gateway_fixture.h"
#include "tests/stream_reader.h"
#include "trust/audit_vocabulary.h"

namespace osh::test {
namespace {

void Report(GatewayFixture& g, const gw::AdmitSandboxResponse& admitted, gw::LoadStatus status, const std::string& error) {
  gw::ReportPolicyStatusRequest report;
  report.set_policy_digest(admitted.policy_digest());
  report.set_status(status);
  report.set_error(error);
  gw::ReportPolicyStatusResponse ignored;
  REQUIRE(g.sandbox().ReportPolicyStatus(GatewayFixture::Context(admitted.sandbox_handle()).get(), report, &ignored).ok());
}

// The `change sandbox-or-scope` of each JSON line of `text` (stderr notes skipped), and their seqs.
std::vector<std::string> JsonChanges(const std::string& text, std::vector<uint64_t>* seqs = nullptr) {
  std::vector<std::string> out;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!absl::StartsWith(line, "{")) continue;
    gw::SandboxEvent event;
    REQUIRE(google::protobuf::util::JsonStringToMessage(std::string(line), &event).ok());
    out.push_back(event.change() + " " + (event.sandbox_id().empty() ? event.scope() : event.sandbox_id()));
    if (seqs != nullptr) seqs->push_back(event.seq());
  }
  return out;
}

}  // namespace

TEST_CASE("sandbox events: each audit type is a sandbox change or deliberately not", "[sandbox_events]") {
  // A new audit type must be classified here on purpose (a change operators watch, or not).
  const std::map<std::string, std::string> expected = {
      {"admission", "admitted"}, {"refusal", "refused"}, {"refresh", "refreshed"}, {"reprojection", "reprojected"},
      {"reverification_failed", "unservable"}, {"deletion", "deleted"}, {"report", "reported"}};
  for (const auto& [type, name] : osh::trust::audit::kTypeNames) {
    gw::AuditEvent event;
    event.set_seq(7);
    event.set_type(std::string(name));
    event.set_sandbox_id("sb-1");
    event.set_outcome("ok");
    auto change = osh::gateway::SandboxEventOf(event);
    INFO(name);
    const auto it = expected.find(std::string(name));
    if (it == expected.end()) {
      CHECK_FALSE(change.has_value());
    } else {
      REQUIRE(change.has_value());
      CHECK(change->change() == it->second);
      CHECK(change->seq() == 7);
    }
  }
  gw::AuditEvent refresh;
  refresh.set_type("refresh");
  refresh.set_sandbox_id("sb-1");
  refresh.set_outcome("kept_last_good");
  CHECK(osh::gateway::SandboxEventOf(refresh)->change() == "refresh_failed");
  // An error cleared with nothing admitted is not "refreshed" (a newer projection admitted; review 104).
  refresh.set_outcome("ok");
  refresh.set_reason("the driver serves the admitted projection again; cleared: driver_unavailable: down");
  CHECK(osh::gateway::SandboxEventOf(refresh)->change() == "refresh_recovered");
  refresh.set_reason("cleared openshell_push_refused");
  CHECK(osh::gateway::SandboxEventOf(refresh)->change() == "refresh_recovered");
  // A scope's summary names no sandbox: a scope change, which a per-sandbox filter keeps.
  gw::AuditEvent summary;
  summary.set_type("reprojection");
  summary.set_outcome("ok");
  summary.set_reason("scope tenant:acme: 3 to abc; 0 unchanged; 0 kept the last good");
  auto scope_change = osh::gateway::SandboxEventOf(summary);
  REQUIRE(scope_change.has_value());
  CHECK(scope_change->change() == "scope_reprojected");
  CHECK(scope_change->scope() == "tenant:acme");
  CHECK(osh::gateway::SandboxFilterKeeps(*scope_change, "sb-9"));
  // Gateway-wide events of a sandbox-shaped type but no sandbox (none today) are not changes.
  gw::AuditEvent anonymous;
  anonymous.set_type("admission");
  CHECK_FALSE(osh::gateway::SandboxEventOf(anonymous).has_value());
}

TEST_CASE("sandbox events: admitted, reported, re-projected and deleted pushed as they happen, resumed after a restart",
          "[integration][sandbox_events]") {
  GatewayFixture g;
  REQUIRE(g.SetPolicy("default", Example("github.yaml")).ok());

  // `policyctl -o json events` follows on its own, across the restart below.
  const std::string follow_log = g.dir() / "events.log";
  Process follow({OSH_POLICYCTL_BINARY, "--admin-socket", g.admin_socket(), "--timeout", "5", "-o", "json", "events"},
                 follow_log);
  auto all = std::make_unique<SandboxStreamReader>(g, 0);
  auto only_sb1 = std::make_unique<SandboxStreamReader>(g, 0, "sb-1");

  gw::AdmitSandboxResponse sb1, sb2;
  REQUIRE(g.Admit("sb-1", &sb1).ok());
  REQUIRE(g.Admit("sb-2", &sb2).ok());
  Report(g, sb1, gw::LOADED, "");
  Report(g, sb2, gw::FAILED, "landlock: unsupported ABI");
  REQUIRE(g.SetPolicy("default", Example("restrictive-default.yaml")).ok());  // both move: one scope summary
  gw::DeleteSandboxRequest del;
  del.set_sandbox_id("sb-2");
  gw::DeleteSandboxResponse deleted;
  REQUIRE(g.admin().DeleteSandbox(GatewayFixture::Context().get(), del, &deleted).ok());

  const std::vector<std::string> expected = {"admitted sb-1",  "admitted sb-2",  "reported sb-1",
                                             "reported sb-2",  "scope_reprojected default", "deleted sb-2"};
  REQUIRE(Eventually([&] { return all->events().size() >= expected.size(); }));
  CHECK(all->changes() == expected);
  const std::vector<gw::SandboxEvent> seen = all->events();
  CHECK(seen[2].outcome() == "loaded");
  CHECK(seen[3].outcome() == "failed");
  CHECK(seen[3].reason() == "landlock: unsupported ABI");
  CHECK(seen[0].policy_digest() == sb1.policy_digest());
  CHECK(seen[5].actor().rfind("uid:", 0) == 0);
  // Only state changes: the two policy mutations are audited between them but are not sandbox changes.
  const std::vector<gw::AuditEvent> audit = g.AuditEvents();
  for (const auto& e : seen) {
    REQUIRE(e.seq() >= 1);
    REQUIRE(e.seq() <= audit.size());
    CHECK(audit[e.seq() - 1].seq() == e.seq());
    CHECK(audit[e.seq() - 1].type() != "mutation");
  }
  // The filter keeps sb-1's own changes and the scope's re-projection.
  REQUIRE(Eventually([&] { return only_sb1->events().size() >= 3; }));
  CHECK(only_sb1->changes() == std::vector<std::string>{"admitted sb-1", "reported sb-1", "scope_reprojected default"});

  // A restart ends the streams UNAVAILABLE gateway_stopping; the last seq received is the cursor.
  REQUIRE(Eventually([&] { return JsonChanges(ReadAll(follow_log)).size() == expected.size(); }));
  REQUIRE(g.Stop() == 0);
  REQUIRE(Eventually([&] { return all->done(); }));
  CHECK(all->status().error_code() == grpc::StatusCode::UNAVAILABLE);
  const uint64_t cursor = all->events().back().seq();
  g.Start();
  gw::AdmitSandboxResponse sb3;
  REQUIRE(g.Admit("sb-3", &sb3).ok());
  auto resumed = std::make_unique<SandboxStreamReader>(g, cursor);
  REQUIRE(Eventually([&] { return !resumed->events().empty(); }));
  CHECK(resumed->changes() == std::vector<std::string>{"admitted sb-3"});

  // The CLI reconnected and printed each change once, in seq order.
  REQUIRE(Eventually([&] { return JsonChanges(ReadAll(follow_log)).size() == expected.size() + 1; },
                     std::chrono::seconds(20)));
  follow.Signal(SIGTERM);
  follow.Wait();
  std::vector<uint64_t> seqs;
  const std::string followed = ReadAll(follow_log);
  INFO(followed);
  std::vector<std::string> printed = JsonChanges(followed, &seqs);
  CHECK(printed.back() == "admitted sb-3");
  CHECK(std::is_sorted(seqs.begin(), seqs.end()));
  CHECK(std::adjacent_find(seqs.begin(), seqs.end()) == seqs.end());
  CHECK_THAT(followed, Catch::Contains("resuming after seq " + std::to_string(cursor)));

  // --count: what a script waits for, then exit 0; the table line names the change.
  std::string out, err;
  REQUIRE(Ctl(g, {"events", "--count", "2", "--sandbox", "sb-1"}, &out, &err) == 0);
  CHECK(CountLines(out, " admitted sandbox=sb-1 ") == 1);
  CHECK(CountLines(out, " reported sandbox=sb-1 ") == 1);
  CHECK_THAT(out, Catch::Contains("outcome=loaded"));
}

TEST_CASE("sandbox events: with the verifiable log, a re-projection names each sandbox it moved",
          "[integration][sandbox_events]") {
  TempDir keys;
  auto key = osh::trust::PrivateKey::Generate("ed25519");
  REQUIRE(key.ok());
  WriteFile(keys / "log.key", key->ToPem(), 0600);
  GatewayFixture g({"--log-signing-key", keys / "log.key", "--log-origin", "test.example/gw",
                    "--log-integrate-interval-ms", "20"});
  REQUIRE(g.SetPolicy("default", Example("github.yaml")).ok());
  gw::AdmitSandboxResponse admitted;
  REQUIRE(g.Admit("sb-1", &admitted).ok());
  REQUIRE(g.Admit("sb-2", &admitted).ok());
  auto reader = std::make_unique<SandboxStreamReader>(g, 0);
  REQUIRE(g.SetPolicy("default", Example("restrictive-default.yaml")).ok());
  REQUIRE(Eventually([&] { return reader->events().size() >= 5; }));
  std::vector<std::string> changes = reader->changes();
  std::sort(changes.begin() + 3, changes.end());
  CHECK(changes == std::vector<std::string>{"admitted sb-1", "admitted sb-2", "scope_reprojected default",
                                            "reprojected sb-1", "reprojected sb-2"});
  CHECK(reader->events()[3].scope() == "default");
}

}  // namespace osh::test
