// Sandboxes on other hosts: the TLS listeners (sandbox_listen, admin_listen), policyctl --server, and
// the supervisor client library (sandbox_client/) against the real gateway — plus, for what a real
// gateway never serves, a misbehaving SandboxPolicy server (a real gRPC server in this process).
#include <grp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "common/errors.h"
#include "common/grpc_status.h"
#include "sandbox_client/sandbox_client.h"
#include "tests/gateway_fixture.h"
#include "tests/link_proxy.h"
#include "tests/test_pki.h"
#include "trust/trust_store.h"

namespace osh::test {
namespace {

namespace sc = osh::sandbox_client;

// The host:port the gateway logged for `api` ("sandbox" or "admin").
std::string ListenAddress(const GatewayFixture& g, const std::string& api) {
  return LoggedAfter([&] { return g.log(); }, api + " API: listening on ");
}

std::shared_ptr<grpc::Channel> TlsChannel(const std::string& address, const CertFiles& ca, const CertFiles* client = nullptr) {
  grpc::SslCredentialsOptions tls;
  tls.pem_root_certs = ReadFile(ca.cert);
  if (client != nullptr) {
    tls.pem_cert_chain = ReadFile(client->cert);
    tls.pem_private_key = ReadFile(client->key);
  }
  return grpc::CreateChannel(address, grpc::SslCredentials(tls));
}

grpc::Status FetchOver(const std::shared_ptr<grpc::Channel>& channel, const std::string& handle, drv::Projection* out) {
  auto stub = gw::SandboxPolicy::NewStub(channel);
  auto context = GatewayFixture::Context(handle);
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  return stub->GetProjection(context.get(), gw::GetProjectionRequest(), out);
}

// A string field of a JSON object policyctl printed ("" when absent).
std::string JsonField(const std::string& json, const std::string& field) {
  google::protobuf::Struct doc;
  if (!google::protobuf::util::JsonStringToMessage(json, &doc).ok()) return "";
  auto it = doc.fields().find(field);
  return it == doc.fields().end() ? "" : it->second.string_value();
}

}  // namespace

TEST_CASE("TLS listeners: sandboxes with their handle over TLS, admin only with a client certificate of tls_client_ca",
          "[integration][tls]") {
  TempDir pki;
  const CertFiles ca = MakeCa(pki.path(), "ca");
  const CertFiles server = MakeLeaf(pki.path(), "server", ca);
  const CertFiles client = MakeLeaf(pki.path(), "client", ca);
  const CertFiles expired = MakeLeaf(pki.path(), "expired-client", ca, -7200, -3600);
  const CertFiles other_ca = MakeCa(pki.path(), "other-ca");
  const CertFiles stranger = MakeLeaf(pki.path(), "stranger", other_ca);
  // Supervisors have a CA of their own (sandbox_client_ca): their certificates open the sandbox listener
  // and never the admin one.
  const CertFiles supervisors_ca = MakeCa(pki.path(), "supervisors-ca");
  const CertFiles supervisor = MakeLeaf(pki.path(), "supervisor", supervisors_ca);
  GatewayFixture g({"--sandbox-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--tls-cert", server.cert,
                    "--tls-key", server.key, "--tls-client-ca", ca.cert, "--sandbox-client-ca", supervisors_ca.cert});
  const std::string admin_address = ListenAddress(g, "admin");
  const std::string sandbox_address = ListenAddress(g, "sandbox");
  CHECK_THAT(g.log(), Catch::Contains("client certificates required"));

  auto remote = [&](const std::vector<std::string>& tls, std::vector<std::string> args, std::string* out, std::string* err,
                    const char* timeout_s = "5") {
    std::vector<std::string> argv = {OSH_POLICYCTL_BINARY, "--timeout", timeout_s};
    argv.insert(argv.end(), tls.begin(), tls.end());
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommand(argv, out, err);
  };
  const std::vector<std::string> admin_tls = {"--server", admin_address, "--ca", ca.cert, "--cert", client.cert, "--key", client.key};
  std::string out, err;
  REQUIRE(remote(admin_tls, {"policy", "set", "default", "-f", kExamples + "github.yaml"}, &out, &err) == 0);
  REQUIRE(remote(admin_tls, {"-o", "json", "admit", "--sandbox", "sb-1", "--subject", "alice@example.com"}, &out, &err) == 0);
  const std::string handle = JsonField(out, "sandbox_handle");
  const std::string digest = JsonField(out, "policy_digest");
  REQUIRE(!handle.empty());

  // Admin refused: without a client certificate, with one another CA issued, with an expired one, and
  // to a client that does not trust the gateway's CA.
  const std::vector<std::vector<std::string>> refused = {
      {"--server", admin_address, "--ca", ca.cert},
      {"--server", admin_address, "--ca", ca.cert, "--cert", stranger.cert, "--key", stranger.key},
      {"--server", admin_address, "--ca", ca.cert, "--cert", expired.cert, "--key", expired.key},
      {"--server", admin_address, "--ca", other_ca.cert, "--cert", client.cert, "--key", client.key},
      // Regression (issue 25.4): a supervisor's certificate was an operator's when one CA gated both listeners.
      {"--server", admin_address, "--ca", ca.cert, "--cert", supervisor.cert, "--key", supervisor.key},
  };
  for (const auto& tls : refused) {
    INFO(absl::StrJoin(tls, " "));
    CHECK(remote(tls, {"policy", "get", "default"}, &out, &err, "2") == 2);
    CHECK_THAT(err, Catch::Contains("cannot connect to " + admin_address + " (TLS)"));
    // Issue 25.18: the hint, not gRPC core's raw log lines ("E1202 … ssl_transport_security.cc …").
    CHECK_THAT(err, !Catch::Contains("ssl_transport_security") && !Catch::Contains("Handshake failed"));
  }
  // Issue 25.18: the client library's endpoint defaults to the gateway's default sandbox socket (it was
  // empty: "no socket at :"), and a TLS mistake says where to look instead of a bare "Socket closed".
  CHECK(sc::Endpoint().unix_socket == "./var/sandbox.sock");
  {
    sc::ClientOptions wrong_ca;
    wrong_ca.endpoint.server = sandbox_address;
    wrong_ca.endpoint.ca_file = other_ca.cert;
    wrong_ca.handle = handle;
    wrong_ca.allow_unchecked_context = true;
    auto client = sc::SandboxClient::Connect(wrong_ca);
    REQUIRE(client.ok());
    auto fetched_wrong = (*client)->FetchUnverified();
    CHECK(absl::IsUnavailable(fetched_wrong.status()));
    CHECK_THAT(std::string(fetched_wrong.status().message()), Catch::Contains("does the CA file match its certificate"));
  }
  // Plaintext to a non-loopback address is refused by the client before it connects.
  CHECK(remote({"--server", "192.0.2.1:9"}, {"policy", "get", "default"}, &out, &err) == 2);
  CHECK_THAT(err, Catch::Contains("TLS only"));

  // The sandbox API over TLS: the handle is the credential, the client certificate an extra gate.
  WriteFile(pki.path() / "handle", handle + "\n");
  const std::vector<std::string> sandbox_tls = {"--server", sandbox_address, "--ca", ca.cert, "--cert", supervisor.cert,
                                                "--key", supervisor.key};
  REQUIRE(remote(sandbox_tls, {"-o", "json", "fetch", "--handle-file", pki.path() / "handle"}, &out, &err) == 0);
  CHECK(JsonField(out, "policy_digest") == digest);
  CHECK(remote(sandbox_tls, {"fetch", "--handle-file", HandleFile("sbh_not_a_handle")}, &out, &err) == 1);
  CHECK_THAT(err, Catch::Contains("UNAUTHENTICATED"));
  CHECK(remote({"--server", sandbox_address, "--ca", ca.cert}, {"fetch", "--handle-file", pki.path() / "handle"}, &out, &err) == 2);
  drv::Projection fetched;
  CHECK(FetchOver(TlsChannel(sandbox_address, ca, &supervisor), handle, &fetched).ok());
  CHECK_FALSE(FetchOver(TlsChannel(sandbox_address, ca, &expired), handle, &fetched).ok());
  // An operator's certificate is not a supervisor's either: the sandbox listener asks for sandbox_client_ca's.
  CHECK_FALSE(FetchOver(TlsChannel(sandbox_address, ca, &client), handle, &fetched).ok());
  // The Unix sockets serve as before.
  CHECK(g.Fetch(handle, &fetched).ok());
  // Who did it: the audit events of the remote admin calls name the client certificate's subject.
  gw::ListAuditEventsRequest list;
  list.set_limit(1000);
  gw::ListAuditEventsResponse events;
  REQUIRE(g.admin().ListAuditEvents(GatewayFixture::Context().get(), list, &events).ok());
  int remote_events = 0;
  for (const auto& event : events.events()) {
    if (event.type() != "mutation" && event.type() != "admission") continue;
    INFO(event.type() << " by " << event.actor());
    CHECK_THAT(event.actor(), Catch::StartsWith("x509:") && Catch::Contains("CN=client"));
    // The issuer and serial too (review 117): another CA's certificate of the same subject is told apart.
    CHECK_THAT(event.actor(), Catch::Matches("x509:.*CN=client.*; issuer .*CN=.*; serial [0-9A-F]+"));
    ++remote_events;
  }
  CHECK(remote_events == 2);
  // policyctl health over TLS.
  CHECK(remote(sandbox_tls, {"health", "--sandbox"}, &out, &err) == 0);
  CHECK(g.Stop() == 0);
}

TEST_CASE("TLS listeners: refused configurations, and plaintext on loopback only, loudly", "[integration][tls]") {
  TempDir dir;
  const CertFiles ca = MakeCa(dir.path(), "ca");
  const CertFiles server = MakeLeaf(dir.path(), "server", ca);
  const CertFiles other = MakeLeaf(dir.path(), "other", ca);
  struct Case {
    std::vector<std::string> args;
    std::string says;
  };
  const std::vector<Case> cases = {
      {{"--admin-listen", "127.0.0.1:0", "--tls-cert", server.cert, "--tls-key", server.key}, "requires mutual TLS"},
      {{"--admin-listen", "127.0.0.1:0"}, "requires mutual TLS"},
      {{"--sandbox-listen", "0.0.0.0:0"}, "requires TLS"},
      {{"--sandbox-listen", "127.0.0.1:0", "--tls-cert", server.cert}, "tls_cert and tls_key go together"},
      {{"--sandbox-listen", "127.0.0.1"}, "expected host:port"},
      {{"--tls-cert", server.cert, "--tls-key", server.key}, "none of sandbox_listen, admin_listen and interceptor_listen"},
      {{"--sandbox-listen", "127.0.0.1:0", "--tls-cert", server.cert, "--tls-key", other.key}, "does not match"},
      {{"--sandbox-listen", "127.0.0.1:0", "--tls-cert", dir.path() / "missing.pem", "--tls-key", server.key},
       "missing.pem"},
      // One CA for operators and supervisors would make every supervisor an operator (issue 25.4): refused by
      // path, and by content under another name.
      {{"--sandbox-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--tls-cert", server.cert, "--tls-key",
        server.key, "--tls-client-ca", ca.cert, "--sandbox-client-ca", ca.cert},
       "give supervisors a CA of their own"},
      {{"--sandbox-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--tls-cert", server.cert, "--tls-key",
        server.key, "--tls-client-ca", ca.cert, "--sandbox-client-ca", dir.path() / "ca-copy.pem"},
       "give supervisors a CA of their own"},
      {{"--sandbox-listen", "127.0.0.1:0", "--sandbox-client-ca", ca.cert}, "client certificates need TLS"},
      // A client CA others may replace would let them mint admin certificates (review 106).
      {{"--admin-listen", "127.0.0.1:0", "--tls-cert", server.cert, "--tls-key", server.key, "--tls-client-ca",
        dir.path() / "loose-ca.pem"},
       "is writable by group or others"},
      // The listeners' private key others can read: refused, naming it and the fix.
      {{"--sandbox-listen", "127.0.0.1:0", "--tls-cert", server.cert, "--tls-key", dir.path() / "loose-key.pem"},
       "tls_key " + (dir.path() / "loose-key.pem").string() + ": a private key must not be accessible to others"},
  };
  WriteFile(dir.path() / "ca-copy.pem", ReadFile(ca.cert));
  WriteFile(dir.path() / "loose-key.pem", ReadFile(server.key), 0644);
  WriteFile(dir.path() / "loose-ca.pem", ReadFile(ca.cert), 0666);
  for (const auto& c : cases) {
    INFO(absl::StrJoin(c.args, " "));
    std::vector<std::string> argv = {OSH_GATEWAY_BINARY, "--state-dir", dir.path() / "var"};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    std::string out, err;
    CHECK(RunCommand(argv, &out, &err) == 2);
    CHECK_THAT(out + err, Catch::Contains(c.says));
    CHECK_FALSE(std::filesystem::exists(dir.path() / "var" / "sandbox.sock"));
  }

  {
    // An expired server certificate: the gateway starts (saying so), and clients refuse the handshake.
    const CertFiles stale = MakeLeaf(dir.path(), "stale", ca, -7200, -3600);
    GatewayFixture expired({"--sandbox-listen", "127.0.0.1:0", "--tls-cert", stale.cert, "--tls-key", stale.key});
    CHECK_THAT(expired.log(), Catch::Contains("has expired: clients will refuse it"));
    drv::Projection ignored;
    const grpc::Status refused = FetchOver(TlsChannel(ListenAddress(expired, "sandbox"), ca), "sbh_any", &ignored);
    CHECK(refused.error_code() == grpc::StatusCode::UNAVAILABLE);  // no handshake: never reaches the handle check
  }
  GatewayFixture g({"--sandbox-listen", "127.0.0.1:0"});
  const std::string address = ListenAddress(g, "sandbox");
  CHECK_THAT(g.log(), Catch::Contains("PLAINTEXT"));
  REQUIRE(g.SetPolicy("default", Example("github.yaml")).ok());
  gw::AdmitSandboxResponse admitted;
  REQUIRE(g.Admit("sb-1", &admitted).ok());
  std::string out, err;
  REQUIRE(RunCommand({OSH_POLICYCTL_BINARY, "--server", address, "-o", "json", "fetch"}, &out, &err, "",
                     {"POLICY_GATEWAY_SANDBOX_HANDLE=" + admitted.sandbox_handle()}) == 0);
  CHECK(JsonField(out, "policy_digest") == admitted.policy_digest());
  // No handle anywhere: a usage error naming where it is looked for.
  CHECK(RunCommand({OSH_POLICYCTL_BINARY, "--server", address, "fetch"}, &out, &err) == 2);
  CHECK_THAT(err, Catch::Contains("POLICY_GATEWAY_SANDBOX_HANDLE"));
  // A second gateway on the port this one serves (issue 25.5): gRPC's default SO_REUSEPORT let it bind, and
  // the kernel split connections between the two. Now a configuration error, and the first keeps serving.
  {
    Process second({OSH_GATEWAY_BINARY, "--state-dir", dir.path() / "second", "--sandbox-listen", address},
                   dir.path() / "second.log");
    CHECK(second.Wait(std::chrono::seconds(10)) == 2);  // -1: it bound the port too and went on serving
    CHECK_THAT(ReadAll(dir.path() / "second.log"), Catch::Contains(address) && Catch::Contains("in use"));
    for (int i = 0; i < 20; ++i) {
      REQUIRE(RunCommand({OSH_POLICYCTL_BINARY, "--server", address, "-o", "json", "fetch"}, &out, &err, "",
                         {"POLICY_GATEWAY_SANDBOX_HANDLE=" + admitted.sandbox_handle()}) == 0);
    }
  }
}

TEST_CASE("TLS listeners: a connection made before the client CA was rotated does not stay authorized", "[integration][tls]") {
  // Regression (review 117): a client certificate is checked at the handshake only, and an admin_listen
  // connection lived as long as its peer kept it busy: an operator whose CA was rotated out kept calling on
  // it. Connections are now asked to go after max_connection_age_s; the next call reconnects and meets the
  // client CA in force.
  TempDir pki;
  const CertFiles ca = MakeCa(pki.path(), "ca");
  const CertFiles server = MakeLeaf(pki.path(), "server", ca);
  const CertFiles client = MakeLeaf(pki.path(), "client", ca);
  const CertFiles next_ca = MakeCa(pki.path(), "next-ca");
  const std::string client_ca = pki.path() / "client-ca.pem";
  WriteFile(client_ca, ReadFile(ca.cert));
  GatewayFixture g({"--admin-listen", "127.0.0.1:0", "--tls-cert", server.cert, "--tls-key", server.key,
                    "--tls-client-ca", client_ca, "--max-connection-age-s", "2"});
  const std::string admin_address = ListenAddress(g, "admin");
  auto channel = TlsChannel(admin_address, ca, &client);
  auto stub = gw::PolicyGateway::NewStub(channel);
  auto status = [&] {
    gw::GetStatusResponse out;
    auto context = GatewayFixture::Context();
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    return stub->GetStatus(context.get(), gw::GetStatusRequest(), &out);
  };
  REQUIRE(status().ok());
  // The operator's CA is rotated out.
  WriteFile(client_ca, ReadFile(next_ca.cert));
  g.Signal(SIGHUP);
  REQUIRE(Eventually([&] { return absl::StrContains(g.log(), "TLS reloaded"); }));
  // New connections are refused at once; the open one within about max_connection_age_s.
  // (gRPC takes the staged CA up within its refresh interval, a second.)
  CHECK(Eventually([&] {
    auto fresh = gw::PolicyGateway::NewStub(TlsChannel(admin_address, ca, &client));
    gw::GetStatusResponse out;
    auto context = GatewayFixture::Context();
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    return !fresh->GetStatus(context.get(), gw::GetStatusRequest(), &out).ok();
  }));
  CHECK(Eventually([&] { return !status().ok(); }));
  CHECK(g.Stop() == 0);
}

TEST_CASE("TLS listeners: SIGHUP loads a new certificate, keeps the last good on a bad file, and drops no watch",
          "[integration][tls]") {
  TempDir pki;
  const CertFiles ca1 = MakeCa(pki.path(), "ca1");
  const CertFiles ca2 = MakeCa(pki.path(), "ca2");
  const CertFiles first = MakeLeaf(pki.path(), "server1", ca1);
  const CertFiles second = MakeLeaf(pki.path(), "server2", ca2);
  const std::string cert = pki.path() / "tls.pem", key = pki.path() / "tls-key.pem";
  WriteFile(cert, ReadFile(first.cert));
  WriteFile(key, ReadFile(first.key));
  GatewayFixture g({"--sandbox-listen", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", key});
  const std::string address = ListenAddress(g, "sandbox");
  REQUIRE(g.SetPolicy("default", Example("github.yaml")).ok());
  gw::AdmitSandboxResponse admitted;
  REQUIRE(g.Admit("sb-1", &admitted).ok());

  // A watch over TLS, opened with the first certificate.
  auto watch_channel = TlsChannel(address, ca1);
  auto watch_stub = gw::SandboxPolicy::NewStub(watch_channel);
  grpc::ClientContext watch_context;
  watch_context.AddMetadata("authorization", "Bearer " + admitted.sandbox_handle());
  auto reader = watch_stub->WatchProjection(&watch_context, gw::WatchProjectionRequest());
  drv::Projection pushed;
  REQUIRE(reader->Read(&pushed));
  CHECK(pushed.policy_digest() == admitted.policy_digest());

  // A bad file: the reload fails, says so, and the first certificate stays in use.
  WriteFile(cert, "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n");
  g.Signal(SIGHUP);
  REQUIRE(Eventually([&] { return absl::StrContains(g.log(), "TLS reload failed, the last good certificate stays in use"); }));
  drv::Projection fetched;
  CHECK(FetchOver(TlsChannel(address, ca1), admitted.sandbox_handle(), &fetched).ok());

  // The new certificate: new connections get it within a second or so; the open watch stays.
  WriteFile(cert, ReadFile(second.cert));
  WriteFile(key, ReadFile(second.key));
  g.Signal(SIGHUP);
  REQUIRE(Eventually([&] { return absl::StrContains(g.log(), "TLS reloaded: certificate CN=server2"); }));
  REQUIRE(Eventually([&] { return FetchOver(TlsChannel(address, ca2), admitted.sandbox_handle(), &fetched).ok(); }));
  CHECK_FALSE(FetchOver(TlsChannel(address, ca1), admitted.sandbox_handle(), &fetched).ok());
  REQUIRE(g.SetPolicy("default", Example("restrictive-default.yaml")).ok());
  REQUIRE(reader->Read(&pushed));  // the stream opened before the rotation is still served
  CHECK(pushed.policy_digest() != admitted.policy_digest());

  // `policyctl trust reload` (ReloadTrustStore) reloads them too: an orchestrator without signals renews
  // certificates that way (review 110). The first one back.
  WriteFile(cert, ReadFile(first.cert));
  WriteFile(key, ReadFile(first.key));
  gw::ReloadTrustStoreResponse ignored;
  g.admin().ReloadTrustStore(GatewayFixture::Context().get(), gw::ReloadTrustStoreRequest(), &ignored);
  REQUIRE(Eventually([&] { return absl::StrContains(g.log(), "TLS reloaded: certificate CN=server1"); }));
  REQUIRE(Eventually([&] { return FetchOver(TlsChannel(address, ca1), admitted.sandbox_handle(), &fetched).ok(); }));
  watch_context.TryCancel();
  reader->Finish();
  CHECK(g.Stop() == 0);
}

namespace {

// A SandboxPolicy server that serves what the test tells it to — a tampered projection among them —
// and records reports. Its first watch streams the projections, then ends UNAVAILABLE; every later one
// ends UNAVAILABLE at once (so a client reconnects, backing off further each time).
class MisbehavingSandboxServer final : public gw::SandboxPolicy::Service {
 public:
  explicit MisbehavingSandboxServer(std::vector<drv::Projection> stream) : stream_(std::move(stream)) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(this);
    server_ = builder.BuildAndStart();
  }
  ~MisbehavingSandboxServer() override { server_->Shutdown(std::chrono::system_clock::now()); }
  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }

  grpc::Status GetProjection(grpc::ServerContext*, const gw::GetProjectionRequest*, drv::Projection* out) override {
    *out = stream_.front();
    return grpc::Status::OK;
  }
  grpc::Status WatchProjection(grpc::ServerContext*, const gw::WatchProjectionRequest*,
                               grpc::ServerWriter<drv::Projection>* writer) override {
    const int watch = watches++;
    if (watch < refuse_opens) return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "a valid sandbox handle is required");
    if (watch == refuse_opens || every_watch) {
      for (const auto& projection : stream_) writer->Write(projection);
    }
    return grpc::Status(end_code, "test server ends the stream");
  }
  grpc::Status ReportPolicyStatus(grpc::ServerContext*, const gw::ReportPolicyStatusRequest* request,
                                  gw::ReportPolicyStatusResponse*) override {
    absl::MutexLock lock(&mu_);
    if (fail_reports > 0) {
      --fail_reports;
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "test server refuses the report");
    }
    reports_.push_back(*request);
    return grpc::Status::OK;
  }
  // Misbehaviours, set before the client connects: the first `refuse_opens` watches are refused
  // UNAUTHENTICATED as they open; the first `fail_reports` reports fail UNAVAILABLE; every watch (not only
  // the first accepted) sends the stream; a stream ends with `end_code`.
  int refuse_opens = 0;
  int fail_reports = 0;
  bool every_watch = false;
  grpc::StatusCode end_code = grpc::StatusCode::UNAVAILABLE;
  std::vector<gw::ReportPolicyStatusRequest> reports() {
    absl::MutexLock lock(&mu_);
    return reports_;
  }
  std::atomic<int> watches{0};

 private:
  std::vector<drv::Projection> stream_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  absl::Mutex mu_;
  std::vector<gw::ReportPolicyStatusRequest> reports_;
};

drv::Projection ProjectionFromJson(const std::string& json) {
  drv::Projection projection;
  REQUIRE(google::protobuf::util::JsonStringToMessage(json, &projection).ok());
  return projection;
}

}  // namespace

TEST_CASE("sandbox client: a tampered projection is rejected, the last good kept, FAILED reported, and reconnects back off",
          "[integration][sandbox_client]") {
  TempDir dir;
  const std::string a = Keygen(dir, "a");
  WriteFile(dir / "trust.json", TrustStoreJson({{"a", a}}));
  std::string out, err;
  REQUIRE(CtlOffline({"sign", "--policy", kExamples + "github.yaml", "--key", dir / "a.key", "--key-id", "a", "--sandbox",
                      "sb-1", "--subject", "alice@example.com", "--version", "2", "--out", dir / "good.json"}, &out, &err) == 0);
  const drv::Projection good = ProjectionFromJson(ReadFile(dir / "good.json"));
  drv::Projection tampered = good;
  tampered.set_body(tampered.body() + "\x0a\x00");  // one more (empty) field: the bytes no longer match the digest
  drv::Projection older = good;  // validly signed but a rollback below version 2
  REQUIRE(CtlOffline({"sign", "--policy", kExamples + "restrictive-default.yaml", "--key", dir / "a.key", "--key-id", "a",
                      "--sandbox", "sb-1", "--subject", "alice@example.com", "--version", "1", "--out", dir / "old.json"},
                     &out, &err) == 0);
  older = ProjectionFromJson(ReadFile(dir / "old.json"));
  MisbehavingSandboxServer server({good, tampered, older});

  sc::ClientOptions options;
  options.endpoint.server = server.address();
  options.handle = "sbh_test";
  auto store = trust::TrustStore::Load(dir / "trust.json");
  REQUIRE(store.ok());
  options.trust_store = std::make_shared<const trust::TrustStore>(*std::move(store));
  options.context = ContextFor("sb-1");
  options.initial_backoff = std::chrono::milliseconds(20);
  options.max_backoff = std::chrono::milliseconds(80);
  auto client = sc::SandboxClient::Connect(options);
  REQUIRE(client.ok());

  std::vector<std::string> applied, rejected;
  std::vector<std::chrono::milliseconds> retries;
  const absl::Status ended = (*client)->Watch(
      [&](const sc::VerifiedPolicy& verified) {
        applied.push_back(verified.digest());
        CHECK(verified.policy != nullptr);
        CHECK(verified.verified_key_ids == std::vector<std::string>{"a"});
        return absl::OkStatus();
      },
      [&](const sc::WatchEvent& event) {
        if (event.kind == sc::WatchEvent::kRejected) rejected.push_back(event.detail);
        if (event.kind == sc::WatchEvent::kDisconnected) {
          retries.push_back(event.retry_in);
          if (retries.size() == 5) (*client)->Stop();
        }
      });
  CHECK(ended.ok());
  // The good projection is applied; the tampered and the rolled-back ones are refused, never applied.
  CHECK(applied == std::vector<std::string>{good.policy_digest()});
  REQUIRE(rejected.size() == 2);
  CHECK_THAT(rejected[0], Catch::StartsWith("digest_mismatch"));
  CHECK_THAT(rejected[1], Catch::StartsWith("rollback"));
  REQUIRE((*client)->current() != nullptr);
  CHECK((*client)->current()->digest() == good.policy_digest());
  // Reports: LOADED only for the verified digest, FAILED with the reason for the others.
  const auto reports = server.reports();
  REQUIRE(reports.size() == 3);
  CHECK(reports[0].status() == gw::LOADED);
  CHECK(reports[0].policy_digest() == good.policy_digest());
  CHECK(reports[1].status() == gw::FAILED);
  CHECK_THAT(reports[1].error(), Catch::StartsWith("digest_mismatch"));
  for (const auto& report : reports) {
    if (report.status() == gw::LOADED) CHECK(report.policy_digest() == good.policy_digest());
  }
  CHECK(reports[2].status() == gw::FAILED);
  CHECK_THAT(reports[2].error(), Catch::StartsWith("rollback"));
  // Back-off: doubling from 20 ms (the first stream had connected) to the 80 ms cap, each wait drawn
  // from [half, whole] of it.
  REQUIRE(retries.size() == 5);
  const int64_t caps[] = {20, 40, 80, 80, 80};
  for (size_t i = 0; i < retries.size(); ++i) {
    INFO("retry " << i);
    CHECK(retries[i].count() >= caps[i] / 2);
    CHECK(retries[i].count() <= caps[i]);
  }
  CHECK(server.watches >= 5);

  // Another trust store: the good projection itself is refused by Fetch, naming the reason.
  const std::string b = Keygen(dir, "b");
  WriteFile(dir / "other.json", TrustStoreJson({{"b", b}}));
  auto other_store = trust::TrustStore::Load(dir / "other.json");
  REQUIRE(other_store.ok());
  options.trust_store = std::make_shared<const trust::TrustStore>(*std::move(other_store));
  auto strict = sc::SandboxClient::Connect(options);
  REQUIRE(strict.ok());
  auto fetched = (*strict)->Fetch();
  REQUIRE_FALSE(fetched.ok());
  CHECK_THAT(std::string(fetched.status().message()), Catch::StartsWith("unknown_key"));
  // And a context it is not bound to.
  options.trust_store = nullptr;
  options.context = ContextFor("sb-2");
  auto elsewhere = sc::SandboxClient::Connect(options);
  REQUIRE(elsewhere.ok());
  CHECK_THAT(std::string((*elsewhere)->Fetch().status().message()), Catch::StartsWith("context_mismatch"));
}

TEST_CASE("sandbox client: a handle refused as a stream opens is tried again for a grace, one revoked while watched "
          "ends the watch, and a LOADED report that failed is sent again",
          "[integration][sandbox_client]") {
  // Review 104: a replica whose feed has not brought the admission yet refuses the handle; Watch ended for
  // good on the first refusal. And a LOADED report lost to a restart was never sent again (drift stayed
  // not_reported, `wait` timed out on a sandbox that had loaded).
  TempDir dir;
  const std::string a = Keygen(dir, "a");
  WriteFile(dir / "trust.json", TrustStoreJson({{"a", a}}));
  std::string out, err;
  REQUIRE(CtlOffline({"sign", "--policy", kExamples + "github.yaml", "--key", dir / "a.key", "--key-id", "a", "--sandbox",
                      "sb-1", "--subject", "alice@example.com", "--out", dir / "good.json"}, &out, &err) == 0);
  const drv::Projection good = ProjectionFromJson(ReadFile(dir / "good.json"));
  auto options_for = [&](const MisbehavingSandboxServer& server, std::chrono::milliseconds grace) {
    sc::ClientOptions options;
    options.endpoint.server = server.address();
    options.handle = "sbh_test";
    options.context = ContextFor("sb-1");
    options.initial_backoff = std::chrono::milliseconds(20);
    options.max_backoff = std::chrono::milliseconds(40);
    options.unknown_handle_grace = grace;
    return options;
  };
  struct Seen {
    std::vector<std::string> applied;
    int disconnects = 0;
    int report_failures = 0;
  };
  auto watch = [](sc::SandboxClient& client, Seen* seen, const std::function<bool(const Seen&)>& done) {
    return client.Watch(
        [&](const sc::VerifiedPolicy& verified) {
          seen->applied.push_back(verified.digest());
          return absl::OkStatus();
        },
        [&](const sc::WatchEvent& event) {
          if (event.kind == sc::WatchEvent::kDisconnected) ++seen->disconnects;
          if (event.kind == sc::WatchEvent::kReportFailed) ++seen->report_failures;
          if (done(*seen)) client.Stop();
        });
  };

  SECTION("refused as it opens, within the grace: tried again until the handle is known") {
    MisbehavingSandboxServer server({good});
    server.refuse_opens = 3;
    auto client = sc::SandboxClient::Connect(options_for(server, std::chrono::milliseconds(60000)));
    REQUIRE(client.ok());
    Seen seen;
    const absl::Status ended = watch(**client, &seen, [](const Seen& s) { return !s.applied.empty(); });
    CHECK(ended.ok());
    CHECK(seen.applied == std::vector<std::string>{good.policy_digest()});
    CHECK(server.watches >= 4);
    CHECK(seen.disconnects >= 3);
  }
  SECTION("no grace: the first refusal ends the watch") {
    MisbehavingSandboxServer server({good});
    server.refuse_opens = 1000;
    auto client = sc::SandboxClient::Connect(options_for(server, std::chrono::milliseconds(0)));
    REQUIRE(client.ok());
    Seen seen;
    const absl::Status ended = watch(**client, &seen, [](const Seen&) { return false; });
    CHECK(absl::IsUnauthenticated(ended));
    CHECK(server.watches == 1);
  }
  SECTION("revoked while watched: ends at once, whatever the grace") {
    MisbehavingSandboxServer server({good});
    server.end_code = grpc::StatusCode::UNAUTHENTICATED;
    auto client = sc::SandboxClient::Connect(options_for(server, std::chrono::milliseconds(60000)));
    REQUIRE(client.ok());
    Seen seen;
    const absl::Status ended = watch(**client, &seen, [](const Seen&) { return false; });
    CHECK(absl::IsUnauthenticated(ended));
    CHECK(server.watches == 1);
    CHECK(seen.applied.size() == 1);
  }
  SECTION("a LOADED report that failed is sent again when the stream hands the same projection again") {
    MisbehavingSandboxServer server({good});
    server.fail_reports = 1;
    server.every_watch = true;
    auto client = sc::SandboxClient::Connect(options_for(server, std::chrono::milliseconds(0)));
    REQUIRE(client.ok());
    Seen seen;
    const absl::Status ended = watch(**client, &seen, [&](const Seen& s) {
      return (s.report_failures >= 1 && !server.reports().empty()) || s.disconnects >= 50;  // bounded: fails, not hangs
    });
    CHECK(ended.ok());
    CHECK(seen.applied.size() == 1);  // applied once; the same projection again is not applied again
    const auto reports = server.reports();
    REQUIRE(reports.size() >= 1);
    CHECK(reports[0].status() == gw::LOADED);
    CHECK(reports[0].policy_digest() == good.policy_digest());
  }
}

TEST_CASE("sandbox client: a remote supervisor over TLS keeps the last good when its own trust store refuses a projection",
          "[integration][sandbox_client]") {
  // The gateway trusts keys a and b; the sandbox only a. The driver first serves a projection signed by
  // a, then one signed by b: the gateway admits and pushes it, the sandbox refuses it, says so, and
  // keeps the first.
  TempDir keys;
  const std::string a = Keygen(keys, "a");
  const std::string b = Keygen(keys, "b");
  WriteFile(keys / "gateway-trust.json", TrustStoreJson({{"a", a}, {"b", b}}));
  WriteFile(keys / "sandbox-trust.json", TrustStoreJson({{"a", a}}));
  std::string out, err;
  REQUIRE(CtlOffline({"sign", "--policy", kExamples + "github.yaml", "--key", keys / "a.key", "--key-id", "a", "--out",
                      keys / "p1.json"}, &out, &err) == 0);
  REQUIRE(CtlOffline({"sign", "--policy", kExamples + "restrictive-default.yaml", "--key", keys / "b.key", "--key-id", "b",
                      "--out", keys / "p2.json"}, &out, &err) == 0);
  WriteFile(keys / "response.json", "{\"projection\": " + ReadFile(keys / "p1.json") + "}");
  DriverProcess driver(keys, "fake", {OSH_FAKE_DRIVER_BINARY, "--response-file", keys / "response.json"});
  driver.Start();
  // The supervisor is "on another host": it reaches the sandbox API over TCP with TLS.
  const CertFiles ca = MakeCa(keys.path(), "ca");
  const CertFiles server = MakeLeaf(keys.path(), "server", ca);
  GatewayFixture g({"--driver-socket", driver.socket(), "--trust-store", keys / "gateway-trust.json", "--sandbox-listen",
                    "127.0.0.1:0", "--tls-cert", server.cert, "--tls-key", server.key});
  const std::string address = ListenAddress(g, "sandbox");
  gw::AdmitSandboxResponse admitted;
  REQUIRE(g.Admit("sb-1", &admitted).ok());
  WriteFile(keys / "handle", admitted.sandbox_handle() + "\n");

  // The example supervisor, as an operator would run it.
  const std::string policy_out = keys / "policy.json";
  Process supervisor({OSH_EXAMPLE_SUPERVISOR_BINARY, "--server", address, "--ca", ca.cert, "--handle-file", keys / "handle",
                      "--trust-store", keys / "sandbox-trust.json", "--sandbox-id", "sb-1", "--user-subject", "alice@example.com",
                      "--policy-out", policy_out},
                     keys / "supervisor.log");
  REQUIRE(Eventually([&] { return std::filesystem::exists(policy_out); }));
  CHECK_THAT(ReadFile(policy_out), Catch::Contains("github.com"));
  gw::GetSandboxRequest get;
  get.set_sandbox_id("sb-1");
  gw::SandboxInfo sandbox;
  REQUIRE(Eventually([&] {
    return g.admin().GetSandbox(GatewayFixture::Context().get(), get, &sandbox).ok() && sandbox.load_status() == gw::LOADED;
  }));

  WriteFile(keys / "response.json", "{\"projection\": " + ReadFile(keys / "p2.json") + "}");
  gw::RefreshSandboxRequest refresh;
  refresh.set_sandbox_id("sb-1");
  gw::RefreshSandboxResponse refreshed;
  REQUIRE(g.admin().RefreshSandbox(GatewayFixture::Context().get(), refresh, &refreshed).ok());
  // The whole line: the supervisor may write "rejected <digest>: " and its reason in two writes.
  REQUIRE(Eventually([&] { return absl::StrContains(ReadFile(keys / "supervisor.log"), "rejected"); }));
  CHECK(Eventually([&] { return absl::StrContains(ReadFile(keys / "supervisor.log"), "unknown_key"); }));
  CHECK_THAT(ReadFile(policy_out), Catch::Contains("github.com"));  // the last good stays in force
  REQUIRE(Eventually([&] {
    return g.admin().GetSandbox(GatewayFixture::Context().get(), get, &sandbox).ok() && sandbox.load_status() == gw::FAILED;
  }));
  CHECK_THAT(sandbox.load_error(), Catch::Contains("unknown_key"));

  // policyctl fetch verifies the same way.
  CHECK(Ctl(g, {"fetch", "--handle-file", keys / "handle", "--trust-store", keys / "sandbox-trust.json"}, &out, &err) == 1);
  CHECK_THAT(err, Catch::Contains("unknown_key"));
  CHECK(Ctl(g, {"fetch", "--handle-file", keys / "handle", "--trust-store", keys / "gateway-trust.json"}, &out, &err) == 0);

  // Deleting the sandbox revokes the handle: the supervisor's watch ends for good.
  gw::DeleteSandboxRequest del;
  del.set_sandbox_id("sb-1");
  gw::DeleteSandboxResponse deleted;
  REQUIRE(g.admin().DeleteSandbox(GatewayFixture::Context().get(), del, &deleted).ok());
  CHECK(supervisor.Wait(std::chrono::seconds(10)) == 1);
  CHECK_THAT(ReadFile(keys / "supervisor.log"), Catch::Contains("stopped: a valid sandbox handle is required"));
}

}  // namespace osh::test

namespace osh::test {
namespace {

// Whether a process with only group `gid` (as user nobody, when we are root) may connect to `path`.
bool CanConnectAs(gid_t gid, const std::string& path) {
  const pid_t child = ::fork();
  if (child == 0) {
    const gid_t groups[] = {gid};
    if (::setgroups(1, groups) != 0 || ::setgid(gid) != 0 || ::setuid(65534) != 0) ::_exit(3);
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
    ::_exit(::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 ? 0 : 1);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) != 3);
  return WEXITSTATUS(status) == 0;
}

}  // namespace

TEST_CASE("sandbox_socket_group opens the sandbox socket to one group of local supervisors, and only to it",
          "[integration][socket]") {
  TempDir dir;
  // As root the test proves it with another user; otherwise it checks the modes with our own group.
  const bool root = ::geteuid() == 0;
  const gid_t group = root ? 54321 : ::getegid();
  const std::string state = dir.path() / "var", shared = dir.path() / "run" / "sandbox";
  const std::string socket = shared + "/sandbox.sock";
  REQUIRE(::chmod(dir.path().c_str(), 0711) == 0);  // as /run is: others may pass through
  std::string out, err;
  // Beside the database and the admin socket it is refused: the group would be let into that folder.
  CHECK(RunCommand({OSH_GATEWAY_BINARY, "--state-dir", state, "--sandbox-socket-group", std::to_string(group)}, &out, &err) == 2);
  CHECK_THAT(out + err, Catch::Contains("needs sandbox_socket in a folder of its own"));
  CHECK(RunCommand({OSH_GATEWAY_BINARY, "--state-dir", state, "--sandbox-socket", socket, "--sandbox-socket-group",
                    "no-such-group-here"}, &out, &err) == 1);
  CHECK_THAT(out + err, Catch::Contains("no group named 'no-such-group-here'"));

  Process gateway({OSH_GATEWAY_BINARY, "--state-dir", state, "--sandbox-socket", socket, "--sandbox-socket-group",
                   std::to_string(group)}, dir.path() / "gateway.log");
  REQUIRE(WaitForSocket(socket));
  struct stat st {};
  REQUIRE(::stat(socket.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0660);
  CHECK(st.st_gid == group);
  REQUIRE(::stat(shared.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0710);
  CHECK(st.st_gid == group);
  REQUIRE(::stat((state + "/admin.sock").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);  // the admin socket stays private
  if (root) {
    CHECK(CanConnectAs(group, socket));
    CHECK_FALSE(CanConnectAs(group + 1, socket));
    CHECK_FALSE(CanConnectAs(group, state + "/admin.sock"));
  }
  gateway.Signal(SIGTERM);
  CHECK(gateway.Wait() == 0);
}

// A stop drains calls over a TCP listener as it does over the Unix sockets: the TCP front stops accepting
// at once but relays the open connections until the gRPC server is done with them, so a watch over TCP
// ends with the gateway's own status (before, the front closed every relayed connection first and the
// watch saw its connection reset).
TEST_CASE("TLS listeners: a stop ends a watch over TCP with the gateway's status, not a reset connection",
          "[integration][tls]") {
  GatewayFixture g({"--sandbox-listen", "127.0.0.1:0"});
  const std::string address = ListenAddress(g, "sandbox");
  REQUIRE(g.SetPolicy("default", Example("github.yaml")).ok());
  gw::AdmitSandboxResponse admitted;
  REQUIRE(g.Admit("sb-1", &admitted).ok());
  auto stub = gw::SandboxPolicy::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.AddMetadata("authorization", "Bearer " + admitted.sandbox_handle());
  auto watch = stub->WatchProjection(&context, gw::WatchProjectionRequest());
  drv::Projection first;
  REQUIRE(watch->Read(&first));
  CHECK(first.policy_digest() == admitted.policy_digest());

  REQUIRE(g.Stop() == 0);
  drv::Projection more;
  while (watch->Read(&more)) {
  }
  const grpc::Status ended = watch->Finish();
  INFO(ended.error_code() << " " << ended.error_message());
  CHECK(ended.error_code() == grpc::StatusCode::UNAVAILABLE);
  CHECK(common::ReasonOf(common::FromGrpc(ended)) == "gateway_stopping");  // from the gateway, not the transport
}

TEST_CASE("sandbox client: a connection dropped without a reset is noticed by keepalive and the watch reopened, "
          "the gateway takes a quiet watch's pings",
          "[integration][sandbox_client]") {
  // Review 113: the client's channels had no keepalive and a watch no deadline: a connection a NAT forgot
  // (no reset to either end) left Watch blocked for ever, never told of a new policy. And the gateway's
  // listeners took pings on a quiet watch for abuse (gRPC's default: one per 5 minutes without data, the
  // connection closed at the third strike), so a client could not have pinged anyway.
  GatewayFixture g;
  REQUIRE(g.SetPolicy("default", Example("github.yaml")).ok());
  gw::AdmitSandboxResponse admitted;
  REQUIRE(g.Admit("sb-1", &admitted).ok());
  TempDir dir;
  const std::string proxy_socket = (dir.path() / "proxy.sock").string();
  LinkProxy proxy(g.sandbox_socket(), proxy_socket);

  sc::ClientOptions options;
  options.endpoint.unix_socket = proxy_socket;
  options.handle = admitted.sandbox_handle();
  options.context = ContextFor("sb-1");
  options.report = false;
  options.initial_backoff = std::chrono::milliseconds(50);
  options.max_backoff = std::chrono::milliseconds(200);
  options.keepalive = {std::chrono::milliseconds(5000), std::chrono::milliseconds(2000)};
  {
    sc::ClientOptions too_often = options;
    too_often.keepalive.time = std::chrono::milliseconds(1000);
    CHECK(absl::IsInvalidArgument(sc::SandboxClient::Connect(too_often).status()));
  }
  auto client = sc::SandboxClient::Connect(options);
  REQUIRE(client.ok());
  absl::Mutex mu;
  std::vector<std::string> applied;
  std::vector<std::string> disconnects;
  absl::Status ended;
  std::thread watcher([&] {
    ended = (*client)->Watch(
        [&](const sc::VerifiedPolicy& verified) {
          absl::MutexLock lock(&mu);
          applied.push_back(verified.digest());
          return absl::OkStatus();
        },
        [&](const sc::WatchEvent& event) {
          absl::MutexLock lock(&mu);
          if (event.kind == sc::WatchEvent::kDisconnected) disconnects.push_back(event.detail);
        });
  });
  StopAndJoin stop_and_join([&] { (*client)->Stop(); }, &watcher);
  auto applied_count = [&] {
    absl::MutexLock lock(&mu);
    return applied.size();
  };
  REQUIRE(Eventually([&] { return applied_count() == 1; }));
  const int connections = proxy.accepted();  // Connect's probe of the socket, then the channel's

  // A quiet watch, pinged every 5 s for 25 s (past a third strike under gRPC's default), stays open.
  std::this_thread::sleep_for(std::chrono::seconds(25));
  {
    absl::MutexLock lock(&mu);
    CHECK(disconnects.empty());
  }
  CHECK(proxy.accepted() == connections);

  // The link goes silent; a new policy is pushed into it. It reaches the client only through a new
  // connection: the client's unanswered ping ends the old one (about 7 s) and the watch is reopened.
  proxy.SilenceAll();
  REQUIRE(g.SetPolicy("default", Example("restrictive-default.yaml")).ok());
  // (Within 30 s: the gateway's own keepalive, 60 s + 20 s, cannot be what ends it; nor does the
  // gateway closing its side reach the client through a silenced link.)
  CHECK(Eventually([&] { return applied_count() == 2; }, std::chrono::seconds(30)));
  CHECK(proxy.accepted() > connections);
  {
    absl::MutexLock lock(&mu);
    REQUIRE(!disconnects.empty());
    CHECK(absl::StrContains(disconnects.front(), "UNAVAILABLE"));
    CHECK(applied.back() != admitted.policy_digest());
  }
  (*client)->Stop();
  watcher.join();
  CHECK(ended.ok());
}

TEST_CASE("sandbox client: a FIFO at the state path is refused at Connect, not waited on", "[integration][sandbox_client]") {
  // Review 113: the state file was opened blocking; a FIFO put there (by mistake, or by whoever can write
  // the folder) hung Connect for ever, before any connection.
  TempDir dir;
  const std::string fifo = (dir.path() / "state").string();
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  sc::ClientOptions options;
  options.endpoint.unix_socket = (dir.path() / "nobody.sock").string();
  options.handle = "sbh_test";
  options.state_file = fifo;
  auto client = sc::SandboxClient::Connect(options);
  REQUIRE_FALSE(client.ok());
  CHECK(absl::IsFailedPrecondition(client.status()));
  CHECK_THAT(std::string(client.status().message()), Catch::Contains("not a regular file"));

  // Review 115: another user's file in its place (0600, theirs) set the rollback floor they liked.
  if (::geteuid() == 0) {
    const std::string theirs = (dir.path() / "theirs").string();
    WriteFile(theirs, "openshell-sandbox-state v1\npolicy_version 0\npolicy_digest x\n");
    REQUIRE(::chmod(theirs.c_str(), 0600) == 0);
    REQUIRE(::chown(theirs.c_str(), 65534, 65534) == 0);
    options.state_file = theirs;
    auto refused = sc::SandboxClient::Connect(options);
    REQUIRE_FALSE(refused.ok());
    CHECK_THAT(std::string(refused.status().message()), Catch::Contains("owned by uid 65534"));
  }

  // Review 116: whoever can write the state file's folder can remove it, and a missing file reads as a
  // first start (no rollback floor): such a folder is refused, the file there or not, and one of the
  // process's own (0700) is not.
  const std::filesystem::path shared = dir.path() / "shared";
  std::filesystem::create_directory(shared);
  for (const bool exists : {false, true}) {
    const std::string state = (shared / "state").string();
    if (exists) {
      WriteFile(state, "openshell.sandbox_client.state.v1\npolicy_version 3\npolicy_digest " + std::string(64, 'a') + "\n");
      REQUIRE(::chmod(state.c_str(), 0600) == 0);
    }
    options.state_file = state;
    REQUIRE(::chmod(shared.c_str(), 0777) == 0);
    auto refused = sc::SandboxClient::Connect(options);
    REQUIRE_FALSE(refused.ok());
    CHECK(absl::IsFailedPrecondition(refused.status()));
    CHECK_THAT(std::string(refused.status().message()),
               Catch::Contains("state file " + state + ": its folder") && Catch::Contains("is writable by") &&
                   Catch::Contains("reads as a first start") && !Catch::Contains("restore it"));
    REQUIRE(::chmod(shared.c_str(), 0700) == 0);
    auto accepted = sc::SandboxClient::Connect(options);  // past the state file: only the missing gateway stops it
    CHECK_THAT(std::string(accepted.status().message()), Catch::Contains("no socket at"));
  }
  // Review 120: a folder that is not there was passed unchecked (a first start), so another user could
  // rename it away for a moment, past the check, and back.
  options.state_file = (dir.path() / "gone" / "state").string();
  auto missing = sc::SandboxClient::Connect(options);
  REQUIRE_FALSE(missing.ok());
  CHECK(absl::IsFailedPrecondition(missing.status()));
  CHECK_THAT(std::string(missing.status().message()), Catch::Contains("its folder") && Catch::Contains("No such file"));
}

TEST_CASE("sandbox client: the handle taken from the environment leaves it, so children do not inherit it",
          "[integration][sandbox_client]") {
  // Review 113: POLICY_GATEWAY_SANDBOX_HANDLE stayed in the supervisor's environment after it was read, and
  // every program it started (the sandboxed workload) inherited the secret.
  REQUIRE(::setenv(sc::kHandleVariable, " sbh_from_env \n", 1) == 0);
  auto handle = sc::ReadSandboxHandle("");
  REQUIRE(handle.ok());
  CHECK(*handle == "sbh_from_env");
  CHECK(std::getenv(sc::kHandleVariable) == nullptr);
  CHECK(absl::IsInvalidArgument(sc::ReadSandboxHandle("").status()));  // read once: nothing left to read
}

}  // namespace osh::test
