// Admissions per second through null-policy-driver with Ed25519 signing (driver) and verification
// (gateway, trust store) and durable SQLite commits, with latency p50/p99, next to the same run's bare
// gRPC round trip (an empty unary call to a callback server on a Unix socket) and raw Ed25519 verify rate.
// Real processes: the policy-gateway and null-policy-driver binaries in a temp folder.
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

#include "openshell/policy/gateway/v1/gateway.grpc.pb.h"
#include "bench/bench_process.h"
#include "bench/bench_support.h"
#include "trust/keys.h"

namespace {

namespace gw = openshell::policy::gateway::v1;
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
  CLI11_PARSE(app, argc, argv);

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

  const pid_t driver = Spawn({driver_binary, "--socket", dir + "/driver.sock", "--policy", policy, "--key",
                              dir + "/authority.key", "--key-id", "authority"}, dir + "/driver.log");
  if (driver < 0 || !WaitForChannel(dir + "/driver.sock")) return 1;
  const pid_t gateway = Spawn({gateway_binary, "--state-dir", dir + "/var", "--driver-socket", dir + "/driver.sock",
                               "--trust-store", dir + "/trust.json"}, dir + "/gateway.log");
  if (gateway < 0 || !WaitForChannel(dir + "/var/admin.sock")) return 1;

  const auto stubs = StubPerThread(dir + "/var/admin.sock", threads);
  const Measured admissions = Load(threads, seconds, [&](int t, uint64_t i) {
    gw::AdmitSandboxRequest request;
    request.mutable_context()->set_sandbox_id("sb-" + std::to_string(t) + "-" + std::to_string(i));
    request.mutable_context()->set_user_subject("bench@example.com");
    gw::AdmitSandboxResponse response;
    grpc::ClientContext ctx;
    return stubs[t]->AdmitSandbox(&ctx, request, &response).ok() && response.verification() == "verified";
  });
  ::kill(gateway, SIGTERM);
  ::kill(driver, SIGTERM);
  ::waitpid(gateway, nullptr, 0);
  ::waitpid(driver, nullptr, 0);

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
  std::printf("  raw Ed25519 verify (1 thread):                                         %8.0f /s\n", verify.per_second);
  std::printf("  ratio admissions / bare round trips: %.4f\n", admissions.per_second / bare.per_second);
  std::filesystem::remove_all(dir);
  return admissions.per_second > 0 && admissions.errors == 0 ? 0 : 1;
}
