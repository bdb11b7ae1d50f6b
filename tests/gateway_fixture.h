// A real policy-gateway process in a temp folder, with stubs for both of its sockets.
#pragma once

#include <signal.h>

#include <catch2/catch.hpp>
#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>
#include <algorithm>
#include <chrono>
#include <functional>
#include <memory>
#include <thread>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "openshell/policy/gateway/v1/gateway.grpc.pb.h"
#include "policy/body_codec.h"
#include "policy/digest.h"
#include "policy/policy_file.h"
#include "tests/process.h"
#include "trust/keys.h"
#include "tests/test_support.h"

namespace osh::test {

namespace gw = openshell::policy::gateway::v1;
namespace drv = openshell::policy::driver::v1;

class GatewayFixture {
 public:
  explicit GatewayFixture(std::vector<std::string> extra_args = {}, std::vector<std::string> env = {},
                          std::string binary = OSH_GATEWAY_BINARY)
      : extra_args_(std::move(extra_args)), env_(std::move(env)), binary_(std::move(binary)) {
    Start();
  }

  // The flags of the next Start (a restart with another configuration).
  void SetExtraArgs(std::vector<std::string> extra_args) { extra_args_ = std::move(extra_args); }

  void Start() {
    std::vector<std::string> argv = {binary_, "--state-dir", state_dir()};
    argv.insert(argv.end(), extra_args_.begin(), extra_args_.end());
    process_ = std::make_unique<Process>(argv, log_path(), "", env_);
    REQUIRE(WaitForSocket(sandbox_socket()));
    REQUIRE(WaitForSocket(admin_socket()));
    admin_ = gw::PolicyGateway::NewStub(Channel(admin_socket()));
    sandbox_ = gw::SandboxPolicy::NewStub(Channel(sandbox_socket()));
  }
  // SIGTERM; returns the exit status.
  int Stop() {
    process_->Signal(SIGTERM);
    return process_->Wait();
  }
  void Signal(int signal_number) { process_->Signal(signal_number); }
  bool running() { return process_->running(); }
  void Kill9() {
    process_->Signal(SIGKILL);
    process_->Wait();
  }

  static std::shared_ptr<grpc::Channel> Channel(const std::string& socket) {
    return grpc::CreateChannel("unix:" + socket, grpc::InsecureChannelCredentials());
  }
  static std::unique_ptr<grpc::ClientContext> Context(const std::string& handle = "") {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    if (!handle.empty()) ctx->AddMetadata("authorization", "Bearer " + handle);
    return ctx;
  }

  grpc::Status SetPolicy(const std::string& scope, const openshell::sandbox::v1::SandboxPolicy& policy,
                         gw::PolicyRevision* out = nullptr) {
    gw::SetPolicyRequest request;
    request.set_scope(scope);
    *request.mutable_policy() = policy;
    gw::PolicyRevision ignored;
    return admin_->SetPolicy(Context().get(), request, out ? out : &ignored);
  }
  grpc::Status Admit(const std::string& id, gw::AdmitSandboxResponse* out,
                     const std::map<std::string, std::string>& attributes = {}) {
    gw::AdmitSandboxRequest request;
    request.mutable_context()->set_sandbox_id(id);
    request.mutable_context()->set_user_subject("alice@example.com");
    for (const auto& [k, v] : attributes) (*request.mutable_context()->mutable_attributes())[k] = v;
    return admin_->AdmitSandbox(Context().get(), request, out);
  }
  grpc::Status Fetch(const std::string& handle, drv::Projection* out) {
    return sandbox_->GetProjection(Context(handle).get(), gw::GetProjectionRequest(), out);
  }

  std::string state_dir() const { return (dir_.path() / "var").string(); }
  std::string admin_socket() const { return state_dir() + "/admin.sock"; }
  std::string sandbox_socket() const { return state_dir() + "/sandbox.sock"; }
  std::string log_path() const { return (dir_.path() / "gateway.log").string(); }
  std::string log() const { return ReadAll(log_path()); }
  const TempDir& dir() const { return dir_; }
  gw::PolicyGateway::Stub& admin() { return *admin_; }
  // GetStatus, which must succeed.
  gw::GetStatusResponse Status() {
    gw::GetStatusResponse out;
    REQUIRE(admin().GetStatus(Context().get(), gw::GetStatusRequest(), &out).ok());
    return out;
  }
  // What the health service says of admissions ("openshell.policy.gateway.v1.Admission"); UNKNOWN when it
  // does not answer.
  grpc::health::v1::HealthCheckResponse::ServingStatus AdmissionHealth() {
    auto health = grpc::health::v1::Health::NewStub(Channel(admin_socket()));
    grpc::health::v1::HealthCheckRequest request;
    request.set_service("openshell.policy.gateway.v1.Admission");
    grpc::health::v1::HealthCheckResponse response;
    if (!health->Check(Context().get(), request, &response).ok()) return grpc::health::v1::HealthCheckResponse::UNKNOWN;
    return response.status();
  }
  gw::SandboxPolicy::Stub& sandbox() { return *sandbox_; }
  // The whole audit log through ListAuditEvents, in small pages (paging is part of what is tested).
  std::vector<gw::AuditEvent> AuditEvents() {
    std::vector<gw::AuditEvent> all;
    gw::ListAuditEventsRequest request;
    for (;;) {
      request.set_limit(2);
      gw::ListAuditEventsResponse response;
      REQUIRE(admin().ListAuditEvents(Context().get(), request, &response).ok());
      if (response.events().empty()) break;
      for (const auto& e : response.events()) all.push_back(e);
      request.set_after_seq(all.back().seq());
    }
    return all;
  }

 private:
  TempDir dir_;
  std::vector<std::string> extra_args_;
  std::vector<std::string> env_;
  std::string binary_;
  std::unique_ptr<Process> process_;
  std::unique_ptr<gw::PolicyGateway::Stub> admin_;
  std::unique_ptr<gw::SandboxPolicy::Stub> sandbox_;
};

// A driver process (null-policy-driver, fake-policy-driver, the example) on a socket in its own folder.
class DriverProcess {
 public:
  DriverProcess(const TempDir& dir, std::string name, std::vector<std::string> args)
      : dir_(dir), name_(std::move(name)), args_(std::move(args)) {}
  std::string socket() const { return dir_ / (name_ + ".sock"); }
  std::string log_path(int start = 0) const {
    return dir_ / (name_ + "." + std::to_string(start > 0 ? start : starts_) + ".log");
  }
  // The log of the current run, or of the given run (1 = first start).
  std::string log(int start = 0) const { return ReadAll(log_path(start)); }
  void Start() {
    ++starts_;
    std::vector<std::string> argv = args_;
    argv.insert(argv.begin() + 1, {"--socket", socket()});
    process_ = std::make_unique<Process>(argv, log_path());
    REQUIRE(WaitForSocket(socket()));
  }
  void Kill9() {
    process_->Signal(SIGKILL);
    process_->Wait();
  }
  int Stop() {
    process_->Signal(SIGTERM);
    return process_->Wait();
  }

 private:
  const TempDir& dir_;
  std::string name_;
  std::vector<std::string> args_;
  int starts_ = 0;
  std::unique_ptr<Process> process_;
};

// Polls `condition` every 50 ms until it holds or `limit` passes; returns its last value.
template <typename F>
bool Eventually(F condition, std::chrono::milliseconds limit = std::chrono::seconds(15)) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return condition();
}

// What a log says right after `marker`, up to the next space, newline or "/metrics" (an address the
// gateway logged: "sandbox API: listening on ", "metrics: serving http://"). Waits for it to be logged.
inline std::string LoggedAfter(const std::function<std::string()>& log, const std::string& marker) {
  std::string found;
  REQUIRE(Eventually([&] {
    const std::string text = log();
    const size_t at = text.find(marker);
    if (at == std::string::npos) return false;
    found = text.substr(at + marker.size());
    found = found.substr(0, std::min({found.find(' '), found.find('\n'), found.find("/metrics")}));
    return true;
  }));
  return found;
}

// Lines of `text` containing `needle`.
inline size_t CountLines(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) n += absl::StrContains(line, needle) ? 1 : 0;
  return n;
}

// The example policies shipped in examples/policies/, by file name.
inline const std::string kExamples = std::string(OSH_SOURCE_DIR) + "/examples/policies/";
inline openshell::sandbox::v1::SandboxPolicy Example(const std::string& name) {
  auto policy = osh::policy::LoadPolicyFile(kExamples + name);
  REQUIRE(policy.ok());
  return *policy;
}

// A fake-policy-driver response file serving a valid unsigned projection of the restrictive default.
inline void WriteExampleResponse(const std::string& path) {
  openshell::policy::driver::v1::GetProjectionResponse response;
  auto* p = response.mutable_projection();
  p->set_surface_id("openshell.sandbox.v1");
  p->set_body(osh::policy::SerializeDeterministic(Example("restrictive-default.yaml")));
  p->set_policy_digest(osh::policy::Sha256Hex(p->body()));
  std::string json;
  REQUIRE(google::protobuf::util::MessageToJsonString(response, &json).ok());
  WriteFile(path, json);
}

// policyctl without a gateway (keygen, sign, verify, ceiling sign|verify|check, decide -f).
inline int CtlOffline(std::vector<std::string> args, std::string* out = nullptr, std::string* err = nullptr) {
  args.insert(args.begin(), OSH_POLICYCTL_BINARY);
  return RunCommand(args, out, err);
}

// A new signing key "<dir>/<name>.key" (policyctl keygen); returns its public key PEM.
inline std::string Keygen(const TempDir& dir, const std::string& name, const std::string& algorithm = "ed25519") {
  std::string out, err;
  REQUIRE(CtlOffline({"keygen", "--algorithm", algorithm, "--out-private", dir / (name + ".key"), "--out-public",
                      dir / (name + ".pub")}, &out, &err) == 0);
  return ReadFile(dir / (name + ".pub"));
}

inline void WriteKey(const TempDir& dir, const std::string& name) {
  auto key = osh::trust::PrivateKey::Generate("ed25519");
  REQUIRE(key.ok());
  WriteFile(dir / (name + ".key"), key->ToPem());
  WriteFile(dir / (name + ".pub"), key->PublicKeyPem());
}

// Keys "authority" (signs ceilings) and "gateway" (the builtin driver's signing key) in `keys`, a trust
// store holding both, and the gateway flags that use them.
inline std::vector<std::string> SigningGatewayArgs(const TempDir& keys) {
  WriteKey(keys, "authority");
  WriteKey(keys, "gateway");
  WriteFile(keys / "trust.json", TrustStoreJson({{"authority", ReadFile(keys / "authority.pub")},
                                                 {"gateway-key", ReadFile(keys / "gateway.pub")}}));
  return {"--trust-store", keys / "trust.json", "--builtin-signing-key", keys / "gateway.key",
          "--builtin-signing-key-id", "gateway-key"};
}


// A signed ceiling file made with policyctl from `policy_file`.
inline std::string SignCeiling(const TempDir& dir, const std::string& policy_file, int version, const std::string& name) {
  std::string out, err;
  const std::string path = dir / name;
  REQUIRE(CtlOffline({"ceiling", "sign", "-f", policy_file, "--id", "corp-max", "--version", std::to_string(version),
                      "--label", "security review 42", "--key", dir / "authority.key", "--key-id", "authority",
                      "--out", path}, &out, &err) == 0);
  return path;
}

// Runs policyctl against `g`'s sockets; returns its exit status.
inline int Ctl(const GatewayFixture& g, std::vector<std::string> args, std::string* out = nullptr,
               std::string* err = nullptr) {
  std::vector<std::string> argv = {OSH_POLICYCTL_BINARY, "--admin-socket", g.admin_socket(), "--sandbox-socket",
                                   g.sandbox_socket(), "--timeout", "10"};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(argv, out, err);
}

}  // namespace osh::test
