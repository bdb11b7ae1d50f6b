// The example supervisor (examples/supervisor/) on the client library, against the real gateway, for the
// fail-closed rules a sandbox cannot leave to the gateway (issue 25, item 9): no rollback after a restart
// (the highest version applied is persisted), no projection bound to a context it cannot check, no policy
// in force past its expiry, and a back-off that does not start again on every reconnect.
#include <sys/stat.h>

#include <filesystem>
#include <regex>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "tests/gateway_fixture.h"

namespace osh::test {
namespace {

// A signing authority "a" (trusted by the gateway and by the supervisor) and a fake driver serving what
// the test writes to its response file.
struct SignedSetup {
  TempDir dir;
  std::unique_ptr<DriverProcess> driver;

  explicit SignedSetup(bool require_context_binding = false) {
    const std::string a = Keygen(dir, "a");
    WriteFile(dir / "trust.json", TrustStoreJson({{"a", a}}, 1, require_context_binding));
    WriteFile(dir / "sandbox-trust.json", TrustStoreJson({{"a", a}}, 1, require_context_binding));
  }
  // Signs `policy` into `<name>.json`; `extra`: policyctl sign flags (--version, --sandbox, --expires-in ...).
  std::string Sign(const std::string& name, const std::string& policy, std::vector<std::string> extra) {
    std::vector<std::string> args = {"sign", "--policy", kExamples + policy, "--key", dir / "a.key", "--key-id", "a",
                                     "--out", dir / (name + ".json")};
    args.insert(args.end(), extra.begin(), extra.end());
    std::string out, err;
    INFO(err);
    REQUIRE(CtlOffline(args, &out, &err) == 0);
    return dir / (name + ".json");
  }
  void Serve(const std::string& projection_file) {
    WriteFile(dir / "response.json", "{\"projection\": " + ReadFile(projection_file) + "}");
  }
  void StartDriver() {
    driver = std::make_unique<DriverProcess>(dir, "fake", std::vector<std::string>{OSH_FAKE_DRIVER_BINARY, "--response-file",
                                                                                 dir / "response.json"});
    driver->Start();
  }
};

// The example supervisor on `g`'s sandbox socket with the handle in `handle_file`, logging to `log`.
std::unique_ptr<Process> StartSupervisor(const GatewayFixture& g, const std::string& handle_file, const std::string& log,
                                         std::vector<std::string> args) {
  std::vector<std::string> argv = {OSH_EXAMPLE_SUPERVISOR_BINARY, "--socket", g.sandbox_socket(), "--handle-file",
                                   handle_file};
  argv.insert(argv.end(), args.begin(), args.end());
  return std::make_unique<Process>(argv, log);
}

bool LoadStatusIs(GatewayFixture& g, const std::string& sandbox_id, gw::LoadStatus status,
                  gw::SandboxInfo* info = nullptr) {
  gw::GetSandboxRequest get;
  get.set_sandbox_id(sandbox_id);
  gw::SandboxInfo sandbox;
  if (!g.admin().GetSandbox(GatewayFixture::Context().get(), get, &sandbox).ok()) return false;
  if (info != nullptr) *info = sandbox;
  return sandbox.load_status() == status;
}

std::string Admit(GatewayFixture& g, const std::string& sandbox_id, const TempDir& dir) {
  gw::AdmitSandboxResponse admitted;
  const grpc::Status status = g.Admit(sandbox_id, &admitted);
  INFO(status.error_message());
  REQUIRE(status.ok());
  const std::string handle_file = dir / (sandbox_id + "." + admitted.sandbox_handle().substr(4, 8) + ".handle");
  WriteFile(handle_file, admitted.sandbox_handle() + "\n");
  return handle_file;
}

void Delete(GatewayFixture& g, const std::string& sandbox_id) {
  gw::DeleteSandboxRequest del;
  del.set_sandbox_id(sandbox_id);
  gw::DeleteSandboxResponse deleted;
  REQUIRE(g.admin().DeleteSandbox(GatewayFixture::Context().get(), del, &deleted).ok());
}

}  // namespace

TEST_CASE("example supervisor: the highest version applied survives a restart, and an older signed projection is refused",
          "[integration][sandbox_client][supervisor]") {
  SignedSetup s;
  const std::string v2 = s.Sign("v2", "restrictive-default.yaml", {"--version", "2"});
  const std::string v1 = s.Sign("v1", "github.yaml", {"--version", "1"});  // older and wider
  s.Serve(v2);
  s.StartDriver();
  GatewayFixture g({"--driver-socket", s.driver->socket(), "--trust-store", s.dir / "trust.json"});
  const std::string policy_out = s.dir / "policy.json", state_file = policy_out + ".state";
  const std::vector<std::string> args = {"--trust-store", s.dir / "sandbox-trust.json", "--sandbox-id", "sb-1",
                                         "--user-subject", "alice@example.com", "--policy-out", policy_out};

  auto supervisor = StartSupervisor(g, Admit(g, "sb-1", s.dir), s.dir / "supervisor.1.log", args);
  REQUIRE(Eventually([&] { return LoadStatusIs(g, "sb-1", gw::LOADED); }));
  REQUIRE(std::filesystem::exists(policy_out));
  CHECK_FALSE(absl::StrContains(ReadFile(policy_out), "github.com"));

  // The gateway ends the watch (UNAUTHENTICATED): the supervisor exits, as it should.
  Delete(g, "sb-1");
  REQUIRE(supervisor->Wait(std::chrono::seconds(10)) == 1);

  // The gateway now serves an older, wider, validly signed projection (it admits it: the sandbox is new to
  // it). Restarted, the supervisor remembers version 2 and refuses it; the restrictive policy stays.
  s.Serve(v1);
  supervisor = StartSupervisor(g, Admit(g, "sb-1", s.dir), s.dir / "supervisor.2.log", args);
  REQUIRE(Eventually([&] { return absl::StrContains(ReadFile(s.dir / "supervisor.2.log"), "rejected"); }));
  CHECK_THAT(ReadFile(s.dir / "supervisor.2.log"), Catch::Contains("rollback"));
  gw::SandboxInfo info;
  REQUIRE(Eventually([&] { return LoadStatusIs(g, "sb-1", gw::FAILED, &info); }));
  CHECK_THAT(info.load_error(), Catch::StartsWith("rollback"));
  CHECK_FALSE(absl::StrContains(ReadFile(policy_out), "github.com"));
  // The state beside the policy: private, naming the version.
  struct stat st {};
  REQUIRE(::stat(state_file.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK_THAT(ReadFile(state_file), Catch::Contains("policy_version 2\n"));
  supervisor->Signal(SIGTERM);
  CHECK(supervisor->Wait() == 0);

  // A corrupt state file, or a policy without its state file, stops it at start: never read as version 0.
  const std::string handle_file = Admit(g, "sb-2", s.dir);
  WriteFile(state_file, "garbage\n");
  ::chmod(state_file.c_str(), 0600);
  supervisor = StartSupervisor(g, handle_file, s.dir / "supervisor.3.log", args);
  CHECK(supervisor->Wait(std::chrono::seconds(10)) == 2);
  CHECK_THAT(ReadFile(s.dir / "supervisor.3.log"), Catch::Contains("state file " + state_file + ": corrupt"));
  WriteFile(state_file, "openshell.sandbox_client.state.v1\npolicy_version 2\npolicy_digest " + std::string(64, 'a') + "\n");
  ::chmod(state_file.c_str(), 0666);
  supervisor = StartSupervisor(g, handle_file, s.dir / "supervisor.5.log", args);
  CHECK(supervisor->Wait(std::chrono::seconds(10)) == 2);
  CHECK_THAT(ReadFile(s.dir / "supervisor.5.log"), Catch::Contains("writable by group or others"));
  std::filesystem::remove(state_file);
  supervisor = StartSupervisor(g, handle_file, s.dir / "supervisor.4.log", args);
  CHECK(supervisor->Wait(std::chrono::seconds(10)) == 2);
  CHECK_THAT(ReadFile(s.dir / "supervisor.4.log"), Catch::Contains("its state file " + state_file + " does not"));
  CHECK_FALSE(absl::StrContains(ReadFile(policy_out), "github.com"));
}

TEST_CASE("example supervisor: without its runtime context it refuses a projection bound to a context",
          "[integration][sandbox_client][supervisor]") {
  SignedSetup s;
  // Bound to sb-2, which the gateway admits; a supervisor given sb-2's handle but no context must not apply it.
  s.Serve(s.Sign("bound", "github.yaml", {"--version", "1", "--sandbox", "sb-2", "--subject", "alice@example.com"}));
  s.StartDriver();
  GatewayFixture g({"--driver-socket", s.driver->socket(), "--trust-store", s.dir / "trust.json"});
  const std::string handle_file = Admit(g, "sb-2", s.dir);

  auto unbound = StartSupervisor(g, handle_file, s.dir / "unbound.log",
                                 {"--trust-store", s.dir / "sandbox-trust.json", "--policy-out", s.dir / "unbound.json"});
  REQUIRE(Eventually([&] { return absl::StrContains(ReadFile(s.dir / "unbound.log"), "rejected"); }));
  CHECK_THAT(ReadFile(s.dir / "unbound.log"), Catch::Contains("context_mismatch"));
  CHECK_FALSE(std::filesystem::exists(s.dir / "unbound.json"));
  gw::SandboxInfo info;
  REQUIRE(Eventually([&] { return LoadStatusIs(g, "sb-2", gw::FAILED, &info); }));
  CHECK_THAT(info.load_error(), Catch::StartsWith("context_mismatch"));
  unbound->Signal(SIGTERM);
  CHECK(unbound->Wait() == 0);

  // Another sandbox's context: refused too; its own: applied.
  auto other = StartSupervisor(g, handle_file, s.dir / "other.log",
                               {"--sandbox-id", "sb-1", "--user-subject", "alice@example.com", "--policy-out",
                                s.dir / "other.json"});
  REQUIRE(Eventually([&] { return absl::StrContains(ReadFile(s.dir / "other.log"), "context_mismatch"); }));
  CHECK_FALSE(std::filesystem::exists(s.dir / "other.json"));
  other->Signal(SIGTERM);
  CHECK(other->Wait() == 0);
  auto own = StartSupervisor(g, handle_file, s.dir / "own.log",
                             {"--trust-store", s.dir / "sandbox-trust.json", "--sandbox-id", "sb-2", "--user-subject",
                              "alice@example.com", "--policy-out", s.dir / "own.json"});
  REQUIRE(Eventually([&] { return LoadStatusIs(g, "sb-2", gw::LOADED); }));
  CHECK_THAT(ReadFile(s.dir / "own.json"), Catch::Contains("github.com"));
  own->Signal(SIGTERM);
  CHECK(own->Wait() == 0);

  // Half a context, or none with a trust store that requires context binding: refused at start.
  std::string out, err;
  CHECK(RunCommand({OSH_EXAMPLE_SUPERVISOR_BINARY, "--socket", g.sandbox_socket(), "--handle-file", handle_file,
                    "--sandbox-id", "sb-2", "--policy-out", s.dir / "half.json"}, &out, &err) == 2);
  CHECK_THAT(err, Catch::Contains("both --sandbox-id and --user-subject"));
  const std::string key = ReadFile(s.dir / "a.pub");
  WriteFile(s.dir / "bound-trust.json", TrustStoreJson({{"a", key}}, 1, true));
  CHECK(RunCommand({OSH_EXAMPLE_SUPERVISOR_BINARY, "--socket", g.sandbox_socket(), "--handle-file", handle_file,
                    "--trust-store", s.dir / "bound-trust.json", "--policy-out", s.dir / "none.json"}, &out, &err) == 2);
  CHECK_THAT(err, Catch::Contains("requires context binding"));
}

TEST_CASE("example supervisor: a policy that expires with no newer one is reported FAILED and withdrawn (fail closed)",
          "[integration][sandbox_client][supervisor]") {
  SignedSetup s;
  s.Serve(s.Sign("short", "github.yaml", {"--version", "1", "--expires-in", "4"}));
  s.StartDriver();
  GatewayFixture g({"--driver-socket", s.driver->socket(), "--trust-store", s.dir / "trust.json"});
  const std::string handle_file = Admit(g, "sb-1", s.dir);
  const std::string policy_out = s.dir / "policy.json", kept = s.dir / "kept.json";
  auto supervisor = StartSupervisor(g, handle_file, s.dir / "supervisor.log",
                                    {"--trust-store", s.dir / "sandbox-trust.json", "--clock-skew-s", "0", "--policy-out",
                                     policy_out});
  // Another one that keeps an expired policy in force (it still reports FAILED).
  auto keeper = StartSupervisor(g, handle_file, s.dir / "keeper.log",
                                {"--trust-store", s.dir / "sandbox-trust.json", "--clock-skew-s", "0", "--keep-expired",
                                 "--policy-out", kept});
  REQUIRE(Eventually([&] { return std::filesystem::exists(policy_out) && std::filesystem::exists(kept); }));
  CHECK_THAT(ReadFile(policy_out), Catch::Contains("github.com"));

  // Past expires_at_unix: the policy file is gone, the gateway hears FAILED "expired", the supervisor runs on.
  REQUIRE(Eventually([&] { return !std::filesystem::exists(policy_out); }));
  gw::SandboxInfo info;
  REQUIRE(Eventually([&] { return LoadStatusIs(g, "sb-1", gw::FAILED, &info); }));
  CHECK_THAT(info.load_error(), Catch::StartsWith("expired"));
  REQUIRE(Eventually([&] { return absl::StrContains(ReadFile(s.dir / "supervisor.log"), "withdrawn: fail closed"); }));
  REQUIRE(Eventually([&] { return absl::StrContains(ReadFile(s.dir / "keeper.log"), "kept in force"); }));
  CHECK(std::filesystem::exists(kept));
  CHECK(supervisor->running());

  // A supervisor restarted past the expiry finds the policy a previous run left (here: the keeper's, with
  // its state) and nothing it could apply (the gateway still streams the expired projection within its own
  // skew, or refuses the watch `expired` past it): it withdraws the file rather than keep it enforced
  // (review 115: it kept it, the state holding no policy to end).
  const std::string left = s.dir / "left.json";
  std::filesystem::copy_file(kept, left);
  std::filesystem::copy_file(kept + ".state", left + ".state");
  ::chmod((left + ".state").c_str(), 0600);
  auto restarted = StartSupervisor(g, handle_file, s.dir / "restarted.log",
                                   {"--trust-store", s.dir / "sandbox-trust.json", "--clock-skew-s", "0",
                                    "--policy-out", left});
  CHECK(Eventually([&] { return !std::filesystem::exists(left); }));
  // (Said once the file is gone: waited for, not read at once.)
  CHECK(Eventually([&] {
    return absl::StrContains(ReadFile(s.dir / "restarted.log"), "nothing verifiable replaces the policy a previous run left");
  }));
  restarted->Signal(SIGTERM);
  CHECK(restarted->Wait() == 0);

  // A newer projection: applied again.
  s.Serve(s.Sign("fresh", "github.yaml", {"--version", "2", "--expires-in", "3600"}));
  gw::RefreshSandboxRequest refresh;
  refresh.set_sandbox_id("sb-1");
  gw::RefreshSandboxResponse refreshed;
  REQUIRE(g.admin().RefreshSandbox(GatewayFixture::Context().get(), refresh, &refreshed).ok());
  REQUIRE(Eventually([&] { return std::filesystem::exists(policy_out); }));
  CHECK_THAT(ReadFile(policy_out), Catch::Contains("github.com"));
  REQUIRE(Eventually([&] { return LoadStatusIs(g, "sb-1", gw::LOADED); }));
  supervisor->Signal(SIGTERM);
  CHECK(supervisor->Wait() == 0);
  keeper->Signal(SIGTERM);
  CHECK(keeper->Wait() == 0);
}

TEST_CASE("example supervisor: reconnecting does not start the back-off again, only a stream that stayed up does",
          "[integration][sandbox_client][supervisor]") {
  GatewayFixture g;
  REQUIRE(g.SetPolicy("default", Example("github.yaml")).ok());
  TempDir dir;
  const std::string handle_file = Admit(g, "sb-1", dir);
  const std::string log = dir / "supervisor.log";
  auto supervisor = StartSupervisor(g, handle_file, log,
                                    {"--sandbox-id", "sb-1", "--user-subject", "alice@example.com", "--policy-out",
                                     dir / "policy.json"});
  REQUIRE(Eventually([&] { return CountLines(ReadAll(log), "connected") - CountLines(ReadAll(log), "disconnected") == 1; }));
  // A gateway that goes down right after each reconnect: every stream delivers the projection, then ends.
  for (size_t restart = 1; restart <= 3; ++restart) {
    REQUIRE(g.Stop() == 0);
    g.Start();
    REQUIRE(Eventually(
        [&] {
          const std::string text = ReadAll(log);
          return CountLines(text, "connected") - CountLines(text, "disconnected") == restart + 1;
        },
        std::chrono::seconds(30)));
  }
  REQUIRE(g.Stop() == 0);
  REQUIRE(Eventually([&] { return CountLines(ReadAll(log), "disconnected") >= 4; }));
  // The wait announced at each disconnect that ended a stream which had connected.
  std::vector<int64_t> waits;
  bool connected = false;
  const std::regex retrying("retrying in ([0-9]+) ms");
  for (absl::string_view line : absl::StrSplit(ReadAll(log), '\n')) {
    const std::string text(line);
    if (text == "connected") connected = true;
    std::smatch match;
    if (absl::StartsWith(text, "disconnected") && std::regex_search(text, match, retrying)) {
      if (connected) waits.push_back(std::stoll(match[1]));
      connected = false;
    }
  }
  INFO(ReadAll(log));
  REQUIRE(waits.size() == 4);
  CHECK(waits[0] <= 200);  // the first: from initial_backoff
  // Never back to 200 ms: at least doubled at each of the streams that lasted under backoff_reset_after.
  CHECK(waits[1] >= 200);
  CHECK(waits[2] >= 400);
  CHECK(waits[3] >= 800);
  supervisor->Signal(SIGTERM);
  CHECK(supervisor->Wait() == 0);
}

}  // namespace osh::test
