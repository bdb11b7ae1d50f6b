// Admissions per second through null-policy-driver with Ed25519 signing (driver) and verification
// (gateway, trust store) and durable SQLite commits, with latency p50/p99, next to the same run's bare
// gRPC round trip (an empty unary call to a callback server on a Unix socket) and raw Ed25519 verify rate.
// Real processes: the policy-gateway and null-policy-driver binaries in a temp folder.
//
// A third figure is the contract floor: the least any gateway must do per admission under SPEC §3 —
// take the client's call, AcquireHandle and GetProjection at a driver that signs each projection,
// verify the signature — with no store, no handle minting and no audit, in the same three processes
// (bench client, a floor gateway, a floor driver: this binary in its --serve-floor-* modes), with
// gRPC's callback API end to end (no thread hops of its own). What an admission costs above the floor
// is the gateway's; the floor itself is what this machine allows.
#include <signal.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include <CLI/CLI.hpp>
#include <grpcpp/grpcpp.h>

#include "openshell/policy/driver/v1/driver.grpc.pb.h"
#include "openshell/policy/gateway/v1/gateway.grpc.pb.h"
#include "bench/bench_process.h"
#include "bench/bench_support.h"
#include "policy/body_codec.h"
#include "policy/digest.h"
#include "policy/policy_file.h"
#include "trust/encoding.h"
#include "trust/keys.h"

namespace {

namespace gw = openshell::policy::gateway::v1;
namespace dv = openshell::policy::driver::v1;
using osh::bench::Spawn;
using osh::bench::WaitForChannel;
using Clock = std::chrono::steady_clock;

// The bare baseline: a callback server whose one method does nothing.
class EmptyService final : public gw::PolicyGateway::CallbackService {
  grpc::ServerUnaryReactor* GetStatus(grpc::CallbackServerContext* ctx, const gw::GetStatusRequest*,
                                      gw::GetStatusResponse*) override {
    auto* reactor = ctx->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
};

// The floor's driver: one handle for every context; each projection stamped and signed anew, as
// null-policy-driver does.
class FloorDriver final : public dv::PolicyDriver::CallbackService {
 public:
  FloorDriver(dv::Projection base, osh::trust::PrivateKey key) : base_(std::move(base)), key_(std::move(key)) {}

 private:
  grpc::ServerUnaryReactor* GetCapabilities(grpc::CallbackServerContext* ctx, const dv::GetCapabilitiesRequest*,
                                            dv::Capabilities* capabilities) override {
    capabilities->set_driver_name("bench-floor-driver");
    capabilities->set_api_version(1);
    capabilities->add_supported_surfaces("openshell.sandbox.v1");
    capabilities->set_signs_projections(true);
    auto* reactor = ctx->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
  grpc::ServerUnaryReactor* AcquireHandle(grpc::CallbackServerContext* ctx, const dv::AcquireHandleRequest*,
                                          dv::AcquireHandleResponse* response) override {
    response->set_handle("floor-handle");
    auto* reactor = ctx->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
  grpc::ServerUnaryReactor* GetProjection(grpc::CallbackServerContext* ctx, const dv::GetProjectionRequest*,
                                          dv::GetProjectionResponse* response) override {
    dv::Projection* p = response->mutable_projection();
    *p = base_;
    p->set_issued_at_unix(std::chrono::duration_cast<std::chrono::seconds>(
                              std::chrono::system_clock::now().time_since_epoch()).count());
    p->set_signature(*key_.Sign(osh::trust::SignedBytes(*p)));
    auto* reactor = ctx->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
  const dv::Projection base_;
  const osh::trust::PrivateKey key_;
};

// The floor's gateway: AdmitSandbox = AcquireHandle, then GetProjection, then verify, all as callbacks.
class FloorGateway final : public gw::PolicyGateway::CallbackService {
 public:
  FloorGateway(std::shared_ptr<grpc::Channel> driver, osh::trust::PublicKey key)
      : driver_(dv::PolicyDriver::NewStub(driver)), key_(std::move(key)) {}

 private:
  struct Call {
    grpc::ClientContext acquire_ctx, projection_ctx;
    dv::AcquireHandleRequest acquire;
    dv::AcquireHandleResponse handle;
    dv::GetProjectionRequest get;
    dv::GetProjectionResponse projection;
  };
  grpc::ServerUnaryReactor* AdmitSandbox(grpc::CallbackServerContext* ctx, const gw::AdmitSandboxRequest* request,
                                         gw::AdmitSandboxResponse* response) override {
    auto* reactor = ctx->DefaultReactor();
    auto* call = new Call;
    *call->acquire.mutable_context() = request->context();
    driver_->async()->AcquireHandle(&call->acquire_ctx, &call->acquire, &call->handle, [=, this](grpc::Status s) {
      if (!s.ok()) {
        reactor->Finish(s);
        delete call;
        return;
      }
      call->get.set_handle(call->handle.handle());
      driver_->async()->GetProjection(&call->projection_ctx, &call->get, &call->projection, [=, this](grpc::Status s) {
        const auto& p = call->projection.projection();
        if (s.ok() && key_.Verify(osh::trust::SignedBytes(p), p.signature())) {
          response->set_sandbox_id(request->context().sandbox_id());
          response->set_policy_digest(p.policy_digest());
          response->set_verification("verified");
        }
        reactor->Finish(s);
        delete call;
      });
    });
    return reactor;
  }
  const std::unique_ptr<dv::PolicyDriver::Stub> driver_;
  const osh::trust::PublicKey key_;
};

// Serves `service` on a Unix socket until SIGTERM.
int ServeUntilTerminated(const std::string& socket, grpc::Service* service) {
  sigset_t term;
  sigemptyset(&term);
  sigaddset(&term, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &term, nullptr);
  grpc::ServerBuilder builder;
  builder.AddListeningPort("unix:" + socket, grpc::InsecureServerCredentials());
  builder.RegisterService(service);
  auto server = builder.BuildAndStart();
  if (!server) return 1;
  int signal = 0;
  sigwait(&term, &signal);
  server->Shutdown();
  return 0;
}

// One stub per client thread, each on its own connection (a distinct channel argument).
std::vector<std::unique_ptr<gw::PolicyGateway::Stub>> StubPerThread(const std::string& socket, int threads) {
  std::vector<std::unique_ptr<gw::PolicyGateway::Stub>> stubs;
  for (int t = 0; t < threads; ++t) {
    grpc::ChannelArguments args;
    args.SetInt("grpc.channel_id", t);
    stubs.push_back(gw::PolicyGateway::NewStub(
        grpc::CreateCustomChannel("unix:" + socket, grpc::InsecureChannelCredentials(), args)));
  }
  return stubs;
}

// Sends each process SIGTERM, then waits for all of them.
void Stop(std::initializer_list<pid_t> pids) {
  for (pid_t pid : pids) ::kill(pid, SIGTERM);
  for (pid_t pid : pids) ::waitpid(pid, nullptr, 0);
}

// Admits sandbox "sb-<thread>-<i>"; true when it was admitted as verified.
bool AdmitOne(gw::PolicyGateway::Stub* stub, int thread, uint64_t i) {
  gw::AdmitSandboxRequest request;
  request.mutable_context()->set_sandbox_id("sb-" + std::to_string(thread) + "-" + std::to_string(i));
  request.mutable_context()->set_user_subject("bench@example.com");
  gw::AdmitSandboxResponse response;
  grpc::ClientContext ctx;
  return stub->AdmitSandbox(&ctx, request, &response).ok() && response.verification() == "verified";
}

struct Measured {
  double per_second = 0;
  double p50_ms = 0, p99_ms = 0;
  uint64_t errors = 0;
};

// Runs `call(thread, i)` from `threads` threads for `seconds`; collects each call's latency.
Measured Load(int threads, double seconds, const std::function<bool(int, uint64_t)>& call) {
  std::mutex mu;
  std::vector<double> latencies;
  std::atomic<uint64_t> errors{0};
  const auto end = Clock::now() + std::chrono::duration<double>(seconds);
  std::vector<std::thread> workers;
  const auto start = Clock::now();
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      std::vector<double> mine;
      for (uint64_t i = 0; Clock::now() < end; ++i) {
        const auto before = Clock::now();
        if (!call(t, i)) {
          ++errors;
          continue;
        }
        mine.push_back(std::chrono::duration<double, std::milli>(Clock::now() - before).count());
      }
      std::lock_guard<std::mutex> lock(mu);
      latencies.insert(latencies.end(), mine.begin(), mine.end());
    });
  }
  for (auto& w : workers) w.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  Measured m;
  m.errors = errors;
  if (latencies.empty()) return m;
  std::sort(latencies.begin(), latencies.end());
  m.per_second = static_cast<double>(latencies.size()) / elapsed;
  m.p50_ms = latencies[latencies.size() / 2];
  m.p99_ms = latencies[std::min(latencies.size() - 1, latencies.size() * 99 / 100)];
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Admissions through null-policy-driver (signed, verified, durable) vs bare gRPC and raw verify"};
  int threads = 4;
  double seconds = 3.0;
  std::string gateway_binary = OSH_GATEWAY_BINARY, driver_binary = OSH_NULL_DRIVER_BINARY;
  std::string policy = std::string(OSH_SOURCE_DIR) + "/examples/policies/github.yaml";
  app.add_option("--threads", threads, "concurrent admission clients")->capture_default_str();
  app.add_option("--seconds", seconds, "measured seconds for each figure")->capture_default_str();
  app.add_option("--gateway", gateway_binary, "policy-gateway binary")->capture_default_str();
  app.add_option("--driver", driver_binary, "null-policy-driver binary")->capture_default_str();
  std::string floor_driver_socket, floor_gateway_socket, floor_key;
  app.add_option("--serve-floor-driver", floor_driver_socket, "(internal) serve the floor's driver here")->group("");
  app.add_option("--serve-floor-gateway", floor_gateway_socket,
                 "(internal) serve the floor's gateway here, on the --serve-floor-driver socket's driver")->group("");
  app.add_option("--floor-key", floor_key, "(internal) the floor's key file (private for the driver, public for the gateway)")
      ->group("");
  app.add_option("--policy", policy, "policy file the drivers serve")->capture_default_str();
  bool no_context_binding = false;
  app.add_flag("--no-context-binding", no_context_binding,
               "null-policy-driver leaves context_digest empty: sandboxes share signed bytes within a second");
  CLI11_PARSE(app, argc, argv);

  if (!floor_driver_socket.empty() && floor_gateway_socket.empty()) {
    auto pem = osh::policy::ReadFileToString(floor_key);
    auto key = pem.ok() ? osh::trust::PrivateKey::FromPem(*pem) : pem.status();
    auto body = osh::policy::LoadPolicyFile(policy);
    if (!key.ok() || !body.ok()) return 2;
    dv::Projection base;
    base.set_surface_id("openshell.sandbox.v1");
    base.set_body(osh::policy::SerializeDeterministic(*body));
    base.set_policy_digest(osh::policy::Sha256Hex(base.body()));
    base.set_signing_key_id("authority");
    FloorDriver service(std::move(base), *std::move(key));
    return ServeUntilTerminated(floor_driver_socket, &service);
  }
  if (!floor_gateway_socket.empty()) {
    auto pem = osh::policy::ReadFileToString(floor_key);
    auto key = pem.ok() ? osh::trust::PublicKey::FromPem(*pem) : pem.status();
    if (!key.ok() || !WaitForChannel(floor_driver_socket)) return 2;
    FloorGateway service(grpc::CreateChannel("unix:" + floor_driver_socket, grpc::InsecureChannelCredentials()),
                         *std::move(key));
    return ServeUntilTerminated(floor_gateway_socket, &service);
  }

  char dir_template[] = "/tmp/osh-bench-admit-XXXXXX";
  const std::string dir = mkdtemp(dir_template);
  auto key = osh::trust::PrivateKey::Generate("ed25519");
  if (!key.ok()) return 1;
  { std::ofstream(dir + "/authority.key") << key->ToPem(); }
  ::chmod((dir + "/authority.key").c_str(), 0600);
  {
    std::ofstream(dir + "/trust.json") << osh::bench::TrustStoreJsonFor("authority", key->PublicKeyPem());
  }
  ::chmod((dir + "/trust.json").c_str(), 0600);

  std::vector<std::string> driver_argv = {driver_binary, "--socket", dir + "/driver.sock", "--policy", policy, "--key",
                                          dir + "/authority.key", "--key-id", "authority"};
  if (no_context_binding) driver_argv.push_back("--no-context-binding");
  const pid_t driver = Spawn(driver_argv, dir + "/driver.log");
  if (driver < 0 || !WaitForChannel(dir + "/driver.sock")) return 1;
  const pid_t gateway = Spawn({gateway_binary, "--state-dir", dir + "/var", "--driver-socket", dir + "/driver.sock",
                               "--trust-store", dir + "/trust.json"}, dir + "/gateway.log");
  if (gateway < 0 || !WaitForChannel(dir + "/var/admin.sock")) return 1;

  const auto stubs = StubPerThread(dir + "/var/admin.sock", threads);
  const Measured admissions = Load(threads, seconds, [&](int t, uint64_t i) { return AdmitOne(stubs[t].get(), t, i); });
  Stop({gateway, driver});

  // Baseline 1: a bare unary round trip on the same socket kind, same client threads.
  EmptyService empty;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("unix:" + dir + "/bare.sock", grpc::InsecureServerCredentials());
  builder.RegisterService(&empty);
  auto bare_server = builder.BuildAndStart();
  const auto bare_stubs = StubPerThread(dir + "/bare.sock", threads);
  const Measured bare = Load(threads, seconds, [&](int t, uint64_t) {
    grpc::ClientContext ctx;
    gw::GetStatusResponse response;
    return bare_stubs[t]->GetStatus(&ctx, gw::GetStatusRequest(), &response).ok();
  });
  bare_server->Shutdown();

  // The contract floor, in its own two processes (this binary), with the same clients and key.
  const std::string self = std::filesystem::read_symlink("/proc/self/exe");
  { std::ofstream(dir + "/authority.pub") << key->PublicKeyPem(); }
  const pid_t floor_driver = Spawn({self, "--serve-floor-driver", dir + "/floor-driver.sock", "--floor-key",
                                    dir + "/authority.key", "--policy", policy}, dir + "/floor-driver.log");
  if (floor_driver < 0 || !WaitForChannel(dir + "/floor-driver.sock")) return 1;
  const pid_t floor_gateway = Spawn({self, "--serve-floor-gateway", dir + "/floor-gateway.sock", "--serve-floor-driver",
                                     dir + "/floor-driver.sock", "--floor-key", dir + "/authority.pub"},
                                    dir + "/floor-gateway.log");
  if (floor_gateway < 0 || !WaitForChannel(dir + "/floor-gateway.sock")) return 1;
  const auto floor_stubs = StubPerThread(dir + "/floor-gateway.sock", threads);
  const Measured floor = Load(threads, seconds, [&](int t, uint64_t i) { return AdmitOne(floor_stubs[t].get(), t, i); });
  Stop({floor_gateway, floor_driver});

  // The disk: one 4 KiB append and fsync in the state folder's file system, one thread (what each of an
  // admission's two durable commits waits for at least).
  const int flush_fd = ::open((dir + "/flush-probe").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  const std::string page(4096, 'p');
  const Measured flush = Load(1, seconds, [&](int, uint64_t) {
    return ::write(flush_fd, page.data(), page.size()) == static_cast<ssize_t>(page.size()) && ::fsync(flush_fd) == 0;
  });
  ::close(flush_fd);

  // Baseline 2: raw Ed25519 verification, one thread.
  const std::string message(222, 'm');
  const std::string signature = *key->Sign(message);
  auto pub = osh::trust::PublicKey::FromPem(key->PublicKeyPem());
  const Measured verify = Load(1, seconds, [&](int, uint64_t) { return pub->Verify(message, signature); });

  std::printf("%d client threads, %.1f s each, Unix sockets, one machine:\n", threads, seconds);
  std::printf("  admissions (null driver, Ed25519 sign+verify, SQLite synchronous=FULL): %8.0f /s  p50 %.2f ms  p99 %.2f ms  errors %lu\n",
              admissions.per_second, admissions.p50_ms, admissions.p99_ms, static_cast<unsigned long>(admissions.errors));
  std::printf("  bare gRPC unary round trip:                                            %8.0f /s  p50 %.3f ms  p99 %.3f ms\n",
              bare.per_second, bare.p50_ms, bare.p99_ms);
  std::printf("  contract floor (3 round trips, sign, verify; no store):                %8.0f /s  p50 %.2f ms  p99 %.2f ms  errors %lu\n",
              floor.per_second, floor.p50_ms, floor.p99_ms, static_cast<unsigned long>(floor.errors));
  std::printf("  4 KiB append + fsync in the state folder (1 thread):                  %8.0f /s  p50 %.3f ms\n",
              flush.per_second, flush.p50_ms);
  std::printf("  raw Ed25519 verify (1 thread):                                         %8.0f /s\n", verify.per_second);
  std::printf("  ratio admissions / bare round trips: %.4f\n", admissions.per_second / bare.per_second);
  std::printf("  ratio contract floor / bare round trips: %.4f   admissions / contract floor: %.4f\n",
              floor.per_second / bare.per_second, admissions.per_second / floor.per_second);
  std::printf("  least p50 for a durable admission here (floor p50 + two fsyncs, SPEC 3.2): %.2f ms\n",
              floor.p50_ms + 2 * flush.p50_ms);
  std::filesystem::remove_all(dir);
  return admissions.per_second > 0 && admissions.errors == 0 && floor.per_second > 0 && floor.errors == 0 ? 0 : 1;
}
