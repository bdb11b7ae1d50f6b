// Applied state and drift (issue 29, item 1) against the real gateway with real supervisors: one that
// loads, one that fails to, one that never reports. `policyctl wait`, `policyctl list --drift` (table and
// JSON), GetSandbox's desired/served/loaded fields and the drift metrics.
#include <google/protobuf/util/json_util.h>
#include <httplib.h>

#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "policy/policy_file.h"
#include "tests/gateway_fixture.h"

namespace osh::test {
namespace {

// The example supervisor for `sandbox_id` (no trust store: the builtin driver signs nothing), applying
// to `policy_out`; one whose folder does not exist cannot apply and reports FAILED (its state files are
// in `dir`: a state file's folder that does not exist stops it at start).
std::unique_ptr<Process> StartDriftSupervisor(const GatewayFixture& g, const TempDir& dir, const std::string& sandbox_id,
                                              const std::string& handle, const std::string& policy_out) {
  const std::string handle_file = dir / (sandbox_id + ".handle");
  WriteFile(handle_file, handle + "\n");
  return std::make_unique<Process>(
      std::vector<std::string>{OSH_EXAMPLE_SUPERVISOR_BINARY, "--socket", g.sandbox_socket(), "--handle-file",
                               handle_file, "--sandbox-id", sandbox_id, "--user-subject", "alice@example.com",
                               "--policy-out", policy_out, "--state-file", dir / (sandbox_id + ".state"),
                               "--log-state-file", dir / (sandbox_id + ".log-state")},
      dir / (sandbox_id + ".supervisor.log"));
}

gw::SandboxInfo DriftInfo(GatewayFixture& g, const std::string& sandbox_id) {
  gw::GetSandboxRequest request;
  request.set_sandbox_id(sandbox_id);
  gw::SandboxInfo info;
  REQUIRE(g.admin().GetSandbox(GatewayFixture::Context().get(), request, &info).ok());
  return info;
}

}  // namespace

TEST_CASE("drift: wait, list --drift and the metrics with a supervisor that loads, one that fails, one silent",
          "[integration][drift]") {
  TempDir dir;
  GatewayFixture g({"--metrics-listen", "127.0.0.1:0"});
  gw::PolicyRevision first;
  REQUIRE(g.SetPolicy("default", Example("github.yaml"), &first).ok());
  gw::AdmitSandboxResponse ok, failing, silent;
  REQUIRE(g.Admit("sb-ok", &ok).ok());
  REQUIRE(g.Admit("sb-fail", &failing).ok());
  REQUIRE(g.Admit("sb-silent", &silent).ok());

  // Freshly admitted, nobody has reported: every one drifts (not_reported), and says what it should get.
  gw::SandboxInfo fresh = DriftInfo(g, "sb-ok");
  CHECK(fresh.drift() == gw::DRIFT_NOT_REPORTED);
  CHECK(fresh.drift_state() == "not_reported");
  CHECK(fresh.desired_known());
  CHECK(fresh.desired_digest() == fresh.policy_digest());
  CHECK(fresh.desired_version() == fresh.policy_version());
  CHECK(fresh.desired_source() == "scope default revision 1");

  auto loader = StartDriftSupervisor(g, dir, "sb-ok", ok.sandbox_handle(), dir / "ok.json");
  auto failer = StartDriftSupervisor(g, dir, "sb-fail", failing.sandbox_handle(), dir / "missing/fail.json");

  std::string out, err;
  CHECK(Ctl(g, {"wait", "--sandbox", "sb-ok", "--timeout", "20s"}, &out, &err) == 0);
  CHECK_THAT(out, Catch::Contains("sandbox sb-ok loaded " + ok.policy_digest().substr(0, 12)));
  CHECK(Ctl(g, {"wait", "--sandbox", "sb-ok", "--digest", ok.policy_digest(), "--timeout", "5"}, &out, &err) == 0);

  // FAILED: exit 1, with the sandbox's own load error.
  err.clear();
  CHECK(Ctl(g, {"wait", "--sandbox", "sb-fail", "--loaded", "--timeout", "20s"}, &out, &err) == 1);
  CHECK_THAT(err, Catch::Contains("sandbox sb-fail failed to load " + failing.policy_digest().substr(0, 12)));
  const gw::SandboxInfo failed = DriftInfo(g, "sb-fail");
  REQUIRE(failed.load_status() == gw::FAILED);
  CHECK_FALSE(failed.load_error().empty());
  CHECK_THAT(err, Catch::Contains(failed.load_error()));
  CHECK(failed.drift() == gw::DRIFT_LOAD_FAILED);

  // Never reports: exit 3 once the timeout passes, saying why it is still drifting.
  const auto before = std::chrono::steady_clock::now();
  CHECK(Ctl(g, {"wait", "--sandbox", "sb-silent", "--timeout", "1500ms"}, &out, &err) == 3);
  CHECK(std::chrono::steady_clock::now() - before >= std::chrono::milliseconds(1500));
  CHECK_THAT(err, Catch::Contains("timed out") && Catch::Contains("not_reported"));
  // Unknown sandbox: the gateway's answer (NOT_FOUND), not a timeout.
  CHECK(Ctl(g, {"wait", "--sandbox", "sb-none", "--timeout", "10s"}, &out, &err) == 1);
  CHECK(Ctl(g, {"wait", "--sandbox", "sb-ok", "--timeout", "soon"}, &out, &err) == 2);

  CHECK(DriftInfo(g, "sb-ok").drift() == gw::DRIFT_IN_SYNC);
  CHECK(DriftInfo(g, "sb-ok").drift_reason().empty());

  // list --drift: the drifting ones only, with the reason.
  REQUIRE(Ctl(g, {"list", "--drift"}, &out, &err) == 0);
  INFO(out);
  CHECK_FALSE(absl::StrContains(out, "sb-ok"));
  CHECK(CountLines(out, "sb-fail") == 1);
  CHECK(CountLines(out, "load_failed") == 1);
  CHECK(CountLines(out, "sb-silent") == 1);
  CHECK(CountLines(out, "not_reported") == 1);
  CHECK_THAT(out, Catch::Contains("no report yet for " + silent.policy_digest().substr(0, 12)));
  CHECK_THAT(out, Catch::Contains("2 drifting sandbox(es)"));
  REQUIRE(Ctl(g, {"-o", "json", "list", "--drift"}, &out, &err) == 0);
  gw::ListSandboxesResponse listed;
  REQUIRE(google::protobuf::util::JsonStringToMessage(out, &listed).ok());
  std::map<std::string, std::string> states;
  for (const auto& s : listed.sandboxes()) states[s.context().sandbox_id()] = s.drift_state();
  CHECK(states == std::map<std::string, std::string>{{"sb-fail", "load_failed"}, {"sb-silent", "not_reported"}});
  // Without --drift every sandbox is listed, as before.
  REQUIRE(Ctl(g, {"list"}, &out, &err) == 0);
  CHECK_THAT(out, Catch::Contains("3 sandbox(es)"));

  // Metrics: sandboxes by drift state, every state present.
  httplib::Client metrics(LoggedAfter([&] { return g.log(); }, "metrics: serving http://"));
  auto scraped = metrics.Get("/metrics");
  REQUIRE(scraped);
  INFO(scraped->body);
  CHECK_THAT(scraped->body, Catch::Contains("\npolicy_gateway_sandboxes_by_drift{state=\"in_sync\"} 1\n"));
  CHECK_THAT(scraped->body, Catch::Contains("\npolicy_gateway_sandboxes_by_drift{state=\"load_failed\"} 1\n"));
  CHECK_THAT(scraped->body, Catch::Contains("\npolicy_gateway_sandboxes_by_drift{state=\"not_reported\"} 1\n"));
  CHECK_THAT(scraped->body, Catch::Contains("\npolicy_gateway_sandboxes_by_drift{state=\"refresh_pending\"} 0\n"));

  // A new revision: re-projected at once, so the loading sandbox drifts until it reports the new digest,
  // and `wait` (for the current digest) returns once it has.
  gw::PolicyRevision second;
  REQUIRE(g.SetPolicy("default", Example("restrictive-default.yaml"), &second).ok());
  const gw::SandboxInfo moved = DriftInfo(g, "sb-ok");
  REQUIRE(moved.policy_digest() == second.policy_digest());
  CHECK(moved.desired_source() == "scope default revision 2");
  REQUIRE(Ctl(g, {"wait", "--sandbox", "sb-ok", "--timeout", "20s"}, &out, &err) == 0);
  CHECK_THAT(out, Catch::Contains("loaded " + second.policy_digest().substr(0, 12)));
  CHECK(DriftInfo(g, "sb-ok").drift() == gw::DRIFT_IN_SYNC);
  // The old digest is no longer what it loads: waiting for it times out.
  CHECK(Ctl(g, {"wait", "--sandbox", "sb-ok", "--digest", ok.policy_digest(), "--timeout", "1"}, &out, &err) == 3);

  loader->Signal(SIGTERM);
  failer->Signal(SIGTERM);
  loader->Wait();
  failer->Wait();
}

}  // namespace osh::test

namespace osh::test {
namespace {

// A fake driver's response file: `policy` signed by the gateway key of SigningGatewayArgs.
void WriteSignedResponse(const TempDir& keys, const openshell::sandbox::v1::SandboxPolicy& policy,
                         const std::string& name) {
  WriteFile(keys / (name + ".yaml"), osh::policy::PolicyToYaml(policy));
  std::string out, err;
  REQUIRE(CtlOffline({"sign", "--policy", keys / (name + ".yaml"), "--key", keys / "gateway.key", "--key-id",
                      "gateway-key", "--out", keys / (name + ".json")},
                     &out, &err) == 0);
  WriteFile(keys / "response.json", "{\"projection\": " + ReadFile(keys / (name + ".json")) + "}");
}

}  // namespace

TEST_CASE("drift: wait says a change the ceiling refused, rather than loaded", "[integration][drift]") {
  // Review finding (helper 79): `wait` answered 0 "loaded" when the change it waited for was refused by
  // the ceiling — the last good projection still served and loaded, drift refused_by_ceiling.
  TempDir keys;
  std::vector<std::string> args = SigningGatewayArgs(keys);
  WriteSignedResponse(keys, Example("github.yaml"), "narrow");
  DriverProcess driver(keys, "fake", {OSH_FAKE_DRIVER_BINARY, "--response-file", keys / "response.json"});
  driver.Start();
  GatewayFixture g({"--driver-socket", driver.socket(), "--trust-store", keys / "trust.json"});
  std::string out, err;
  const std::string ceiling = SignCeiling(keys, std::string(OSH_SOURCE_DIR) + "/examples/policies/github.yaml", 1, "c1.json");
  REQUIRE(Ctl(g, {"ceiling", "set", ceiling}, &out, &err) == 0);
  gw::AdmitSandboxResponse admitted;
  REQUIRE(g.Admit("sb-1", &admitted).ok());
  auto supervisor = StartDriftSupervisor(g, keys, "sb-1", admitted.sandbox_handle(), keys / "applied.json");
  REQUIRE(Ctl(g, {"wait", "--sandbox", "sb-1", "--timeout", "20s"}, &out, &err) == 0);

  // The driver now serves a wider policy: the refresh is refused by the ceiling, the last good stays.
  auto wider = Example("github.yaml");
  auto& pypi = (*wider.mutable_network_policies())["pypi"];
  pypi.add_binaries()->set_path("/usr/bin/python3");
  auto* ep = pypi.add_endpoints();
  ep->set_host("pypi.org");
  ep->set_port(443);
  WriteSignedResponse(keys, wider, "wide");
  CHECK(Ctl(g, {"refresh", "--sandbox", "sb-1"}, &out, &err) != 0);
  CHECK(DriftInfo(g, "sb-1").drift() == gw::DRIFT_REFUSED_BY_CEILING);
  err.clear();
  CHECK(Ctl(g, {"wait", "--sandbox", "sb-1", "--timeout", "10s"}, &out, &err) == 1);
  CHECK_THAT(err, Catch::Contains("the change was refused by the ceiling"));

  // The driver serves the admitted projection again: the refusal is over (cleared, audited), and it is in sync.
  WriteSignedResponse(keys, Example("github.yaml"), "narrow-again");
  CHECK(Ctl(g, {"refresh", "--sandbox", "sb-1"}, &out, &err) == 0);
  CHECK(DriftInfo(g, "sb-1").drift() == gw::DRIFT_IN_SYNC);
  CHECK(Ctl(g, {"wait", "--sandbox", "sb-1", "--timeout", "10s"}, &out, &err) == 0);
  bool cleared = false;
  for (const auto& event : g.AuditEvents()) {
    cleared = cleared || absl::StrContains(event.reason(), "the driver serves the admitted projection again; cleared: exceeds_ceiling");
  }
  CHECK(cleared);

  // An offered projection refused for itself (its digest is not its body's), then the admitted one again:
  // that refusal is over too (review 104: only the driver's and the ceiling's errors were cleared, so an
  // offered mistake, reverted, left the sandbox refresh_failed and `wait` timing out for good).
  std::string tampered = ReadFile(keys / "narrow-again.json");
  const auto at = tampered.find("\"policy_digest\": \"");
  REQUIRE(at != std::string::npos);
  const auto value = at + std::string("\"policy_digest\": \"").size();
  tampered.replace(value, 64, std::string(64, '0'));
  WriteFile(keys / "response.json", "{\"projection\": " + tampered + "}");
  CHECK(Ctl(g, {"refresh", "--sandbox", "sb-1"}, &out, &err) != 0);
  CHECK(DriftInfo(g, "sb-1").drift() == gw::DRIFT_REFRESH_FAILED);
  WriteSignedResponse(keys, Example("github.yaml"), "narrow-third");
  CHECK(Ctl(g, {"refresh", "--sandbox", "sb-1"}, &out, &err) == 0);
  CHECK(DriftInfo(g, "sb-1").drift() == gw::DRIFT_IN_SYNC);
  CHECK(Ctl(g, {"wait", "--sandbox", "sb-1", "--timeout", "10s"}, &out, &err) == 0);
}

}  // namespace osh::test
