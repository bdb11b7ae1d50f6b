// Trust end to end with real processes: policyctl keygen/sign/verify, a gateway with a trust store and a
// builtin signing key, and trust-store reload by RPC and SIGHUP (a bad file keeps the last good store).
#include <signal.h>
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <thread>

#include "absl/strings/match.h"
#include "policy/policy_file.h"
#include "absl/synchronization/mutex.h"
#include "sandbox_client/sandbox_client.h"
#include "tests/gateway_fixture.h"

using namespace osh::test;

namespace {

// Makes a key pair with policyctl keygen; returns the public PEM.
std::string FirstLine(const std::string& text) { return text.substr(0, text.find('\n')); }

// A trust store's JSON (TrustStoreJson) with `key_id` listed as revoked.
std::string WithRevoked(std::string json, const std::string& key_id) {
  json.insert(json.rfind('}'), ", \"revoked_key_ids\": [\"" + key_id + "\"]");
  return json;
}

// The builtin driver's signing key (id gateway-key) and another, both trusted in `trust`.
struct BuiltinSigningKeys {
  BuiltinSigningKeys() : pub(Keygen(keys, "gateway")), other(Keygen(keys, "other")), trust(keys / "trust.json") { TrustBoth(); }
  std::string Json() const { return TrustStoreJson({{"gateway-key", pub}, {"other", other}}); }
  void TrustBoth() const { WriteFile(trust, Json()); }
  void RevokeGatewayKey() const { WriteFile(trust, WithRevoked(Json(), "gateway-key")); }
  // The gateway's flags that make the builtin driver sign with it.
  std::vector<std::string> SigningArgs() const {
    return {"--builtin-signing-key", keys / "gateway.key", "--builtin-signing-key-id", "gateway-key"};
  }

  TempDir keys;
  const std::string pub, other, trust;
};

// Keys a and b, both trusted in `trust`, and a fake driver serving github.yaml signed by a, taking
// `stall_ms` per call (AcquireHandle and GetProjection).
struct SlowSignedDriver {
  explicit SlowSignedDriver(int stall_ms)
      : a(Keygen(keys, "a")), b(Keygen(keys, "b")), trust(keys / "trust.json"),
        driver(keys, "fake",
               {OSH_FAKE_DRIVER_BINARY, "--response-file", keys / "response.json", "--stall-ms", std::to_string(stall_ms)}) {
    WriteFile(trust, TrustStoreJson({{"a", a}, {"b", b}}));
    const std::string policy = std::string(OSH_SOURCE_DIR) + "/examples/policies/github.yaml";
    std::string out, err;
    REQUIRE(CtlOffline({"sign", "--policy", policy, "--key", keys / "a.key", "--key-id", "a", "--out", keys / "p.json"},
                       &out, &err) == 0);
    WriteFile(keys / "response.json", "{\"projection\": " + ReadFile(keys / "p.json") + "}");
    driver.Start();
  }
  void RevokeA() { WriteFile(trust, WithRevoked(TrustStoreJson({{"a", a}, {"b", b}}), "a")); }

  TempDir keys;
  const std::string a, b, trust;
  DriverProcess driver;
};

}  // namespace

TEST_CASE("policyctl keygen, sign and verify: ok, each refusal, --now, and exit codes", "[integration][trust][cli]") {
  TempDir dir;
  const std::string algorithm = GENERATE(std::string("ed25519"), std::string("ecdsa-p256"));
  INFO(algorithm);
  const std::string pub = Keygen(dir, "authority", algorithm);
  struct stat st {};
  REQUIRE(::stat((dir / "authority.key").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  const std::string policy = std::string(OSH_SOURCE_DIR) + "/examples/policies/github.yaml";
  WriteFile(dir / "trust.json", TrustStoreJson({{"authority", pub}}));

  std::string out, err;
  REQUIRE(CtlOffline({"sign", "--policy", policy, "--key", dir / "authority.key", "--key-id", "authority", "--sandbox", "sb-1",
               "--subject", "alice@example.com", "--attr", "tenant_id=acme", "--version", "4", "--expires-in", "3600",
               "--audit", "ticket=T-1", "--out", dir / "p.json"}, &out, &err) == 0);

  const std::vector<std::string> verify = {"verify", "--projection", dir / "p.json", "--trust-store", dir / "trust.json"};
  auto with = [&](std::vector<std::string> extra) {
    auto args = verify;
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  };
  CHECK(CtlOffline(with({"--sandbox", "sb-1", "--subject", "alice@example.com", "--attr", "tenant_id=acme"}), &out, &err) == 0);
  CHECK(FirstLine(out) == "ok");
  CHECK(CtlOffline(with({"--sandbox", "sb-2", "--subject", "alice@example.com", "--attr", "tenant_id=acme"}), &out) == 1);
  CHECK(FirstLine(out) == "context_mismatch");
  // Without a context the binding cannot be checked; the rest is, and the output says so.
  CHECK(CtlOffline(verify, &out) == 0);
  CHECK(absl::StrContains(out, "not checked"));
  // An auditor's question: valid then? Two hours on, it has expired; long ago it was fine.
  const int64_t now = std::time(nullptr);
  CHECK(CtlOffline(with({"--now", std::to_string(now + 7200)}), &out) == 1);
  CHECK(FirstLine(out) == "expired");
  CHECK(CtlOffline(with({"--now", std::to_string(now - 7200)}), &out) == 0);
  CHECK(CtlOffline(with({"--accepted-surface", "other.v1"}), &out) == 1);
  CHECK(FirstLine(out) == "surface_not_accepted");
  CHECK(CtlOffline(with({"-o", "json"}), &out) == 0);
  CHECK(absl::StrContains(out, "\"result\":\"ok\""));
  CHECK(absl::StrContains(out, "\"verified_key_ids\":[\"authority\"]"));
  // 64-bit versions keep every digit: JSON from the CLI writes them as protobuf's JSON mapping does.
  REQUIRE(CtlOffline({"sign", "--policy", policy, "--key", dir / "authority.key", "--key-id", "authority",
                      "--version", "1152921504606846977", "--out", dir / "big.json"}, &out, &err) == 0);
  CHECK(CtlOffline({"verify", "--projection", dir / "big.json", "--trust-store", dir / "trust.json", "-o", "json"}, &out) == 0);
  CHECK(absl::StrContains(out, "\"policy_version\":\"1152921504606846977\""));

  SECTION("a key the trust store does not know") {
    const std::string other = Keygen(dir, "other", algorithm);
    WriteFile(dir / "other-trust.json", TrustStoreJson({{"other", other}}));
    CHECK(CtlOffline({"verify", "--projection", dir / "p.json", "--trust-store", dir / "other-trust.json"}, &out) == 1);
    CHECK(FirstLine(out) == "unknown_key");
    // Same id, different key: the signature does not verify.
    WriteFile(dir / "swapped-trust.json", TrustStoreJson({{"authority", other}}));
    CHECK(CtlOffline({"verify", "--projection", dir / "p.json", "--trust-store", dir / "swapped-trust.json"}, &out) == 1);
    CHECK(FirstLine(out) == "bad_signature");
  }
  SECTION("a tampered body") {
    std::string text = ReadFile(dir / "p.json");
    const auto at = text.find("\"body\": \"") + 9;
    text[at] = text[at] == 'C' ? 'D' : 'C';
    WriteFile(dir / "p.json", text);
    CHECK(CtlOffline(verify, &out) == 1);
    CHECK(FirstLine(out) == "digest_mismatch");
  }
  SECTION("usage and I/O errors exit 2 and name the problem") {
    CHECK(CtlOffline({"verify", "--projection", dir / "missing.json", "--trust-store", dir / "trust.json"}, &out, &err) == 2);
    CHECK(absl::StrContains(err, "missing.json"));
    WriteFile(dir / "bad.json", "{ not json");
    CHECK(CtlOffline({"verify", "--projection", dir / "bad.json", "--trust-store", dir / "trust.json"}, &out, &err) == 2);
    CHECK(absl::StrContains(err, "bad.json"));
    CHECK(CtlOffline({"keygen", "--algorithm", "rsa", "--out-private", dir / "x", "--out-public", dir / "y"}, &out, &err) == 2);
    CHECK(CtlOffline({"sign", "--policy", policy, "--key", dir / "authority.key"}, &out, &err) == 2);
    CHECK(CtlOffline({"sign", "--policy", policy, "--key", dir / "authority.pub", "--key-id", "a"}, &out, &err) == 2);
    CHECK(CtlOffline({"verify", "--projection", dir / "p.json", "--trust-store", dir / "trust.json", "--subject", "x"}, &out,
              &err) == 2);
  }
}

TEST_CASE("gateway with a trust store: builtin signing verifies end to end, unsigned is refused", "[integration][trust]") {
  TempDir keys;
  const std::string pub = Keygen(keys, "gateway");
  WriteFile(keys / "trust.json", TrustStoreJson({{"gateway-key", pub}}));

  SECTION("signed by the gateway key: admitted verified, and the sandbox can verify what it fetched") {
    GatewayFixture g({"--trust-store", keys / "trust.json", "--builtin-signing-key", keys / "gateway.key",
                      "--builtin-signing-key-id", "gateway-key"});
    REQUIRE(g.SetPolicy("default", osh::policy::RestrictiveDefaultPolicy()).ok());
    gw::AdmitSandboxResponse admitted;
    auto status = g.Admit("sb-signed", &admitted);
    INFO(status.error_message());
    REQUIRE(status.ok());
    CHECK(admitted.verification() == "verified");
    REQUIRE(admitted.signing_key_ids_size() == 1);
    CHECK(admitted.signing_key_ids(0) == "gateway-key");
    std::string out;
    REQUIRE(Ctl(g, {"fetch", "--handle-file", HandleFile(admitted.sandbox_handle()), "--out", keys / "fetched.json"}, &out) == 0);
    CHECK(CtlOffline({"verify", "--projection", keys / "fetched.json", "--trust-store", keys / "trust.json", "--sandbox",
               "sb-signed", "--subject", "alice@example.com"}, &out) == 0);
    CHECK(FirstLine(out) == "ok");
    // A restart re-verifies the stored envelope and serves it.
    REQUIRE(g.Stop() == 0);
    g.Start();
    drv::Projection fetched;
    CHECK(g.Fetch(admitted.sandbox_handle(), &fetched).ok());
  }
  SECTION("a trust store but a driver that does not sign: refused `unsigned`, nothing admitted") {
    GatewayFixture g({"--trust-store", keys / "trust.json"});
    REQUIRE(g.SetPolicy("default", osh::policy::RestrictiveDefaultPolicy()).ok());
    gw::AdmitSandboxResponse admitted;
    auto status = g.Admit("sb-unsigned", &admitted);
    CHECK(status.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
    CHECK(absl::StartsWith(status.error_message(), "unsigned: "));
    gw::GetSandboxRequest get;
    get.set_sandbox_id("sb-unsigned");
    gw::SandboxInfo info;
    CHECK(g.admin().GetSandbox(GatewayFixture::Context().get(), get, &info).error_code() == grpc::StatusCode::NOT_FOUND);
  }
}

TEST_CASE("trust store reload: good, then bad keeps good, then a new good store takes over (RPC and SIGHUP)",
          "[integration][trust]") {
  TempDir keys;
  const std::string pub = Keygen(keys, "gateway");
  const std::string other = Keygen(keys, "other");
  const std::string trust = keys / "trust.json";
  WriteFile(trust, TrustStoreJson({{"gateway-key", pub}}));
  GatewayFixture g({"--trust-store", trust, "--builtin-signing-key", keys / "gateway.key", "--builtin-signing-key-id",
                    "gateway-key"});
  REQUIRE(g.SetPolicy("default", osh::policy::RestrictiveDefaultPolicy()).ok());
  gw::AdmitSandboxResponse admitted;
  REQUIRE(g.Admit("sb-1", &admitted).ok());

  // A bad file: refused, the last good store stays in force.
  WriteFile(trust, "{\"keys\": [");
  std::string out, err;
  CHECK(Ctl(g, {"trust", "reload"}, &out, &err) == 1);
  CHECK(absl::StrContains(err, "trust_store_invalid"));
  REQUIRE(g.Admit("sb-2", &admitted).ok());
  CHECK(admitted.verification() == "verified");
  // SIGHUP with the bad file: same.
  g.Signal(SIGHUP);
  REQUIRE(g.Admit("sb-3", &admitted).ok());

  // A good store that no longer trusts the gateway key: admissions are now refused `unknown_key`.
  WriteFile(trust, TrustStoreJson({{"other", other}}));
  REQUIRE(Ctl(g, {"trust", "reload", "-o", "json"}, &out, &err) == 0);
  CHECK(absl::StrContains(out, "\"keys\":1"));
  auto status = g.Admit("sb-4", &admitted);
  CHECK(absl::StartsWith(status.error_message(), "unknown_key: "));

  // Back to the gateway key, by SIGHUP this time: admissions resume once the reload has run.
  WriteFile(trust, TrustStoreJson({{"gateway-key", pub}, {"other", other}}));
  g.Signal(SIGHUP);
  grpc::Status last;
  for (int i = 0; i < 100; ++i) {
    last = g.Admit("sb-5", &admitted);
    if (last.ok()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  CHECK(last.ok());
  gw::GetStatusResponse status_response;
  REQUIRE(g.admin().GetStatus(GatewayFixture::Context().get(), gw::GetStatusRequest(), &status_response).ok());
  CHECK(status_response.trust_keys_size() == 2);
  CHECK(absl::StrContains(g.log(), "trust store reload failed"));
}

TEST_CASE("trust store reload: a revoked key reaches admitted sandboxes at once, re-signed ones keep being served",
          "[integration][trust]") {
  const BuiltinSigningKeys k;
  std::vector<std::string> args = k.SigningArgs();
  args.insert(args.end(), {"--trust-store", k.trust});
  GatewayFixture g(args);
  REQUIRE(g.SetPolicy("default", osh::policy::RestrictiveDefaultPolicy()).ok());
  gw::AdmitSandboxResponse admitted;
  REQUIRE(g.Admit("sb-1", &admitted).ok());
  drv::Projection fetched;
  REQUIRE(g.Fetch(admitted.sandbox_handle(), &fetched).ok());

  // Revoke the key that signed it. The builtin driver still signs with it, so the refresh tried at once
  // cannot replace it: the sandbox is refused to fetchers, with the reason, audited and shown.
  k.RevokeGatewayKey();
  std::string out, err;
  REQUIRE(Ctl(g, {"trust", "reload", "-o", "json"}, &out, &err) == 0);
  CHECK(absl::StrContains(out, "\"sandboxes_refused\":\"1\""));
  auto refused = g.Fetch(admitted.sandbox_handle(), &fetched);
  CHECK(refused.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
  CHECK(absl::StartsWith(refused.error_message(), "key_revoked: "));
  gw::GetSandboxRequest get;
  get.set_sandbox_id("sb-1");
  gw::SandboxInfo info;
  REQUIRE(g.admin().GetSandbox(GatewayFixture::Context().get(), get, &info).ok());
  CHECK(absl::StartsWith(info.last_refresh_error(), "key_revoked: "));
  gw::GetStatusResponse status;
  REQUIRE(g.admin().GetStatus(GatewayFixture::Context().get(), gw::GetStatusRequest(), &status).ok());
  CHECK(status.revoked_sandboxes() == 1);
  CHECK(absl::StrContains(g.log(), "sandbox sb-1: key_revoked"));

  // Trusted again: the next reload serves it again.
  k.TrustBoth();
  REQUIRE(Ctl(g, {"trust", "reload"}, &out, &err) == 0);
  CHECK(g.Fetch(admitted.sandbox_handle(), &fetched).ok());
  REQUIRE(g.admin().GetStatus(GatewayFixture::Context().get(), gw::GetStatusRequest(), &status).ok());
  CHECK(status.revoked_sandboxes() == 0);
}

namespace {

// A supervisor on the client library watching `g`'s sandbox socket with `handle` (sandbox sb-1): counts
// what it applied and withdrew, and keeps each kRevoked event's detail. Stopped and joined at destruction.
// A gateway signing with "gateway-key" (SigningGatewayArgs: keys/trust.json trusts it) under which sb-1 is
// admitted, on the restrictive default policy.
struct SignedSandbox {
  explicit SignedSandbox(const TempDir& keys) : g(SigningGatewayArgs(keys)) {
    REQUIRE(g.SetPolicy("default", osh::policy::RestrictiveDefaultPolicy()).ok());
    REQUIRE(g.Admit("sb-1", &admitted).ok());
  }
  GatewayFixture g;
  gw::AdmitSandboxResponse admitted;
};

class WatchingSupervisor {
 public:
  WatchingSupervisor(GatewayFixture& g, const std::string& handle) {
    osh::sandbox_client::ClientOptions options;
    options.endpoint.unix_socket = g.sandbox_socket();
    options.handle = handle;
    options.context = ContextFor("sb-1");
    options.initial_backoff = std::chrono::milliseconds(50);
    options.max_backoff = std::chrono::milliseconds(200);
    auto client = osh::sandbox_client::SandboxClient::Connect(options);
    REQUIRE(client.ok());
    client_ = *std::move(client);
    thread_ = std::thread([this] {
      absl::Status ended = client_->Watch(
          [this](const osh::sandbox_client::VerifiedPolicy&) {
            absl::MutexLock lock(&mu_);
            ++applied_;
            return absl::OkStatus();
          },
          [this](const osh::sandbox_client::WatchEvent& event) {
            // What the client says is in force as it tells of the revocation: nothing (it was in force
            // until the event and the report had gone out; the tests read it, now and then, too soon).
            const bool none_in_force = client_->current() == nullptr;
            absl::MutexLock lock(&mu_);
            if (event.kind == osh::sandbox_client::WatchEvent::kRevoked) {
              revoked_.push_back(event.detail);
              if (!none_in_force) ++in_force_when_revoked_;
            }
          },
          [this](const osh::sandbox_client::VerifiedPolicy&) {
            absl::MutexLock lock(&mu_);
            ++withdrawn_;
            return absl::OkStatus();
          });
      absl::MutexLock lock(&mu_);
      ended_ = std::move(ended);
    });
  }
  ~WatchingSupervisor() { Stop().IgnoreError(); }
  // Stops the watch; what it ended with.
  absl::Status Stop() {
    client_->Stop();
    if (thread_.joinable()) thread_.join();
    absl::MutexLock lock(&mu_);
    return ended_;
  }
  int applied() {
    absl::MutexLock lock(&mu_);
    return applied_;
  }
  int withdrawn() {
    absl::MutexLock lock(&mu_);
    return withdrawn_;
  }
  // kRevoked events told while current() still returned the withdrawn policy.
  int in_force_when_revoked() {
    absl::MutexLock lock(&mu_);
    return in_force_when_revoked_;
  }
  std::vector<std::string> revoked() {
    absl::MutexLock lock(&mu_);
    return revoked_;
  }
  osh::sandbox_client::SandboxClient& client() { return *client_; }

 private:
  std::unique_ptr<osh::sandbox_client::SandboxClient> client_;
  std::thread thread_;
  absl::Mutex mu_;
  int applied_ = 0, withdrawn_ = 0, in_force_when_revoked_ = 0;
  std::vector<std::string> revoked_;
  absl::Status ended_;
};

}  // namespace

TEST_CASE("trust store reload: a sandbox admitted with no trust store is refused when the key verifying it is revoked",
          "[integration][trust]") {
  // Review 116, mended at stop 70: a sandbox admitted while no trust store was in force (verification
  // none) is served after a restart with one only if it verifies under it — but a reload revoking the key
  // that verifies it re-checked only the sandboxes admitted verified, so it went on being served.
  const BuiltinSigningKeys k;
  std::vector<std::string> args = k.SigningArgs();
  GatewayFixture g(args);
  REQUIRE(g.SetPolicy("default", osh::policy::RestrictiveDefaultPolicy()).ok());
  gw::AdmitSandboxResponse admitted;
  REQUIRE(g.Admit("sb-1", &admitted).ok());
  CHECK(admitted.verification() == "none");
  REQUIRE(g.Stop() == 0);
  args.insert(args.end(), {"--trust-store", k.trust});
  g.SetExtraArgs(args);
  g.Start();
  drv::Projection fetched;
  REQUIRE(g.Fetch(admitted.sandbox_handle(), &fetched).ok());  // it verifies under the trust store now in force

  k.RevokeGatewayKey();
  std::string out, err;
  REQUIRE(Ctl(g, {"trust", "reload", "-o", "json"}, &out, &err) == 0);
  CHECK(absl::StrContains(out, "\"sandboxes_refused\":\"1\""));
  const auto refused = g.Fetch(admitted.sandbox_handle(), &fetched);
  CHECK(refused.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
  CHECK(absl::StartsWith(refused.error_message(), "key_revoked: "));
}

TEST_CASE("trust store reload: a revoked key ends open watches with key_revoked, and the supervisor withdraws the policy",
          "[integration][trust][sandbox_client]") {
  // Review 115: fetches were refused key_revoked while open watches stayed silent: every watching
  // supervisor kept enforcing the revoked key's policy, and after a reconnect kept it too (retrying).
  TempDir keys;
  SignedSandbox signed_sandbox(keys);
  GatewayFixture& g = signed_sandbox.g;
  const std::string pub = ReadFile(keys / "gateway.pub"), trust = keys / "trust.json";
  WatchingSupervisor supervisor(g, signed_sandbox.admitted.sandbox_handle());
  REQUIRE(Eventually([&] { return supervisor.applied() == 1; }));

  // Revoked; the builtin driver still signs with the key, so no refresh replaces the projection.
  WriteFile(trust, WithRevoked(TrustStoreJson({{"gateway-key", pub}}), "gateway-key"));
  std::string out, err;
  REQUIRE(Ctl(g, {"trust", "reload"}, &out, &err) == 0);
  CHECK(Eventually([&] { return supervisor.withdrawn() == 1; }));
  CHECK(Eventually([&] { return supervisor.client().current() == nullptr; }));
  CHECK(supervisor.in_force_when_revoked() == 0);  // out of current() as it is withdrawn, before it is told
  REQUIRE(supervisor.revoked().size() == 1);
  CHECK(absl::StartsWith(supervisor.revoked()[0], "key_revoked: "));
  // The gateway heard the supervisor's FAILED report.
  CHECK(Eventually([&] {
    gw::GetSandboxRequest get;
    get.set_sandbox_id("sb-1");
    gw::SandboxInfo info;
    return g.admin().GetSandbox(GatewayFixture::Context().get(), get, &info).ok() &&
           absl::StartsWith(info.load_error(), "key_revoked: ");
  }));

  // Trusted again: served again, and the watch, retrying meanwhile, applies it again.
  WriteFile(trust, TrustStoreJson({{"gateway-key", pub}}));
  REQUIRE(Ctl(g, {"trust", "reload"}, &out, &err) == 0);
  CHECK(Eventually([&] { return supervisor.applied() == 2; }));
  CHECK(supervisor.withdrawn() == 1);
  CHECK(supervisor.Stop().ok());
  CHECK(g.Stop() == 0);
}

TEST_CASE("trust store: a gateway restarted without the key of a watched sandbox's policy makes its supervisor withdraw it",
          "[integration][trust][sandbox_client]") {
  // Review 116: after a restart the stored envelope fails re-verification with the check's own code
  // (unknown_key here), not key_revoked; the client withdrew on key_revoked only, and a reconnecting
  // supervisor kept enforcing the policy of a key the gateway no longer trusts.
  TempDir keys;
  SignedSandbox signed_sandbox(keys);
  GatewayFixture& g = signed_sandbox.g;
  const std::string other = Keygen(keys, "other"), trust = keys / "trust.json";
  WatchingSupervisor supervisor(g, signed_sandbox.admitted.sandbox_handle());
  REQUIRE(Eventually([&] { return supervisor.applied() == 1; }));
  CHECK(supervisor.withdrawn() == 0);

  // Restarted with another signing key, and a trust store that knows only it: what it stored for sb-1 no
  // longer verifies (unknown_key); the supervisor, reconnecting, withdraws what it enforced.
  REQUIRE(g.Stop() == 0);
  WriteFile(trust, TrustStoreJson({{"other-key", other}}));
  g.SetExtraArgs({"--trust-store", trust, "--builtin-signing-key", keys / "other.key", "--builtin-signing-key-id",
                  "other-key"});
  g.Start();
  CHECK(Eventually([&] { return supervisor.withdrawn() == 1; }));
  CHECK(Eventually([&] { return supervisor.client().current() == nullptr; }));
  CHECK(supervisor.in_force_when_revoked() == 0);  // out of current() as it is withdrawn, before it is told
  REQUIRE(supervisor.revoked().size() == 1);
  CHECK(absl::StartsWith(supervisor.revoked()[0], "unknown_key: "));
  CHECK(g.Stop() == 0);
}

TEST_CASE("trust store reload: a sandbox whose key is revoked is re-signed from the driver at once and kept",
          "[integration][trust][remote]") {
  TempDir keys;
  const std::string a = Keygen(keys, "a");
  const std::string b = Keygen(keys, "b");
  const std::string trust = keys / "trust.json";
  WriteFile(trust, TrustStoreJson({{"a", a}, {"b", b}}));
  const std::string policy = std::string(OSH_SOURCE_DIR) + "/examples/policies/github.yaml";
  DriverProcess driver(keys, "null", {OSH_NULL_DRIVER_BINARY, "--policy", policy, "--key", keys / "a.key", "--key-id",
                                      "a", "--handles-file", keys / "handles.txt"});
  driver.Start();
  GatewayFixture g({"--driver-socket", driver.socket(), "--trust-store", trust});
  gw::AdmitSandboxResponse admitted;
  REQUIRE(g.Admit("sb-1", &admitted).ok());
  CHECK(admitted.signing_key_ids(0) == "a");
  // The authority rotates: the driver now signs with b (its handles survive the restart), a is revoked.
  driver.Stop();
  // Same name, so the same socket path the gateway knows; a separate log.
  DriverProcess restarted(keys, "null", {OSH_NULL_DRIVER_BINARY, "--policy", policy, "--key", keys / "b.key", "--key-id",
                                         "b", "--handles-file", keys / "handles.txt"});
  restarted.Start();
  WriteFile(trust, WithRevoked(TrustStoreJson({{"a", a}, {"b", b}}), "a"));
  std::string out, err;
  REQUIRE(Ctl(g, {"trust", "reload", "-o", "json"}, &out, &err) == 0);
  CHECK(absl::StrContains(out, "\"sandboxes_refused\":\"0\""));
  drv::Projection fetched;
  REQUIRE(g.Fetch(admitted.sandbox_handle(), &fetched).ok());
  CHECK(fetched.signing_key_id() == "b");
}

TEST_CASE("trust store reload: a burst of SIGHUPs runs at most one reload and one more, and stalls nothing else",
          "[integration][trust][remote][limits]") {
  // Issue 15 item 5: each reload here waits on a driver that takes 600 ms per call (the revoked
  // sandbox is refreshed at once), so 20 SIGHUPs within 100 ms would queue 20 slow reloads uncoalesced.
  SlowSignedDriver slow(600);
  GatewayFixture g({"--driver-socket", slow.driver.socket(), "--trust-store", slow.trust});
  gw::AdmitSandboxResponse admitted;
  REQUIRE(g.Admit("sb-1", &admitted).ok());

  slow.RevokeA();
  for (int i = 0; i < 20; ++i) {
    g.Signal(SIGHUP);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  // Calls that do not wait on the driver answer at once meanwhile.
  gw::GetStatusResponse status;
  auto quick = GatewayFixture::Context();
  quick->set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
  CHECK(g.admin().GetStatus(quick.get(), gw::GetStatusRequest(), &status).ok());
  // The reloads end (the sandbox is refused: its key is revoked and the driver still serves a-signed).
  REQUIRE(Eventually([&] {
    return g.admin().GetStatus(GatewayFixture::Context().get(), gw::GetStatusRequest(), &status).ok() &&
           status.revoked_sandboxes() == 1;
  }));
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));  // room for a pending reload to run
  gw::ListAuditEventsRequest list;
  list.set_limit(1000);
  gw::ListAuditEventsResponse events;
  REQUIRE(g.admin().ListAuditEvents(GatewayFixture::Context().get(), list, &events).ok());
  int reloads = 0;
  for (const auto& e : events.events()) reloads += e.type() == "trust_store_reload" ? 1 : 0;
  INFO(g.log());
  CHECK(reloads >= 1);
  CHECK(reloads <= 2);
  CHECK(absl::StrContains(g.log(), "a trust-store reload is already under way"));
  CHECK(g.Stop() == 0);
}

TEST_CASE("trust store reload: a revoked key's projections are refused at once, not after a slow driver's refreshes",
          "[integration][trust][remote]") {
  // Review finding (helper 77): the reload refreshed each failing sandbox one after another (each waiting
  // on the driver up to its call timeout) and only then refused the ones still failing, so a slow or dead
  // driver kept a revoked key's projections served for N x the timeout. Here each refresh takes 1.5 s.
  SlowSignedDriver slow(1500);
  GatewayFixture g({"--driver-socket", slow.driver.socket(), "--trust-store", slow.trust});
  gw::AdmitSandboxResponse first, second;
  REQUIRE(g.Admit("sb-1", &first).ok());
  REQUIRE(g.Admit("sb-2", &second).ok());
  drv::Projection fetched;
  REQUIRE(g.Fetch(second.sandbox_handle(), &fetched).ok());

  slow.RevokeA();
  g.Signal(SIGHUP);
  // The first refresh alone takes 1.5 s; both sandboxes are refused well before it ends.
  const auto start = std::chrono::steady_clock::now();
  grpc::Status served;
  while (std::chrono::steady_clock::now() - start < std::chrono::milliseconds(1200)) {
    served = g.Fetch(second.sandbox_handle(), &fetched);
    if (!served.ok()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  INFO(g.log());
  CHECK(served.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
  // While the refreshes run: revocation_pending, which no supervisor withdraws on (a re-signed projection
  // may replace it in a moment: review 116); key_revoked once no refresh did.
  CHECK(absl::StartsWith(served.error_message(), "revocation_pending: "));
  CHECK(g.Fetch(first.sandbox_handle(), &fetched).error_code() == grpc::StatusCode::FAILED_PRECONDITION);
  // When the refreshes end (the driver still serves a-signed), both stay refused.
  gw::GetStatusResponse status;
  REQUIRE(Eventually([&] {
    return absl::StrContains(g.log(), "sandbox sb-2: key_revoked") &&
           g.admin().GetStatus(GatewayFixture::Context().get(), gw::GetStatusRequest(), &status).ok() &&
           status.revoked_sandboxes() == 2;
  }));
  const grpc::Status after = g.Fetch(second.sandbox_handle(), &fetched);
  CHECK(after.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
  CHECK(absl::StartsWith(after.error_message(), "key_revoked: "));
  CHECK(g.Stop() == 0);
}

TEST_CASE("policyctl trust init, add-key, revoke and show: a store the gateway loads, bad edits change nothing",
          "[integration][trust][cli]") {
  TempDir keys;
  Keygen(keys, "gateway");
  Keygen(keys, "other", "ecdsa-p256");
  const std::string trust = keys / "trust.json";
  std::string out, err;
  REQUIRE(CtlOffline({"trust", "init", "--file", trust, "--key-id", "gateway-key", "--public-key", keys / "gateway.pub"},
                     &out, &err) == 0);
  struct stat st {};
  REQUIRE(::stat(trust.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  REQUIRE(CtlOffline({"trust", "add-key", "--file", trust, "--key-id", "other", "--public-key", keys / "other.pub",
                      "--not-after", "2100-01-01T00:00:00Z"}, &out, &err) == 0);
  // Refused edits name the problem and leave the file as it was.
  const std::string before = ReadFile(trust);
  CHECK(CtlOffline({"trust", "add-key", "--file", trust, "--key-id", "again", "--public-key", keys / "gateway.pub"},
                   &out, &err) == 2);
  CHECK_THAT(err, Catch::Contains("the same public key is already listed as 'gateway-key'"));
  CHECK(CtlOffline({"trust", "add-key", "--file", trust, "--key-id", "bad id", "--public-key", keys / "other.pub"},
                   &out, &err) == 2);
  CHECK_THAT(err, Catch::Contains("invalid key id 'bad id'"));
  CHECK(CtlOffline({"trust", "add-key", "--file", trust, "--key-id", "x", "--public-key", keys / "other.pub",
                    "--threshold", "5"}, &out, &err) == 2);
  CHECK(CtlOffline({"trust", "init", "--file", trust, "--key-id", "k", "--public-key", keys / "other.pub"}, &out, &err) == 2);
  CHECK_THAT(err, Catch::Contains("exists (use --force to replace it)"));
  CHECK(ReadFile(trust) == before);
  CHECK(CtlOffline({"-o", "json", "trust", "show", "--file", trust}, &out, &err) == 0);
  CHECK_THAT(out, Catch::Contains("\"key_id\":\"other\""));
  CHECK_THAT(out, Catch::Contains("\"not_after\":\"2100-01-01T00:00:00Z\""));

  // The gateway loads it and verifies with it; a revocation by the tool and a reload stop admissions.
  GatewayFixture g({"--trust-store", trust, "--builtin-signing-key", keys / "gateway.key", "--builtin-signing-key-id",
                    "gateway-key"});
  REQUIRE(g.SetPolicy("default", osh::policy::RestrictiveDefaultPolicy()).ok());
  gw::AdmitSandboxResponse admitted;
  REQUIRE(g.Admit("sb-1", &admitted).ok());
  CHECK(admitted.verification() == "verified");
  REQUIRE(CtlOffline({"trust", "revoke", "--file", trust, "--key-id", "gateway-key"}, &out, &err) == 0);
  CHECK(CtlOffline({"trust", "show", "--file", trust}, &out, &err) == 0);
  CHECK_THAT(out, Catch::Matches("(.|\n)*gateway-key +ed25519 .* revoked\n(.|\n)*"));
  REQUIRE(Ctl(g, {"trust", "reload"}, &out, &err) == 0);
  auto refused = g.Admit("sb-2", &admitted);
  CHECK(absl::StartsWith(refused.error_message(), "key_revoked: "));
}
