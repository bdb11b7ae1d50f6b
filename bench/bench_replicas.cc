// Replicas on one PostgreSQL (issue 11): admissions/s and fetches/s with 1, 2 and 3 gateways on one
// database, beside a single SQLite gateway in the same run, and cross-replica propagation latency (a
// policy mutation on replica 1 until a watcher on replica 2 holds the new projection).
// Real processes: policy-gateway binaries (builtin driver) and a throw-away PostgreSQL cluster
// (Debian's postgresql: initdb in a temp folder, the server on a Unix socket there; as nobody when root).
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <thread>

#include <CLI/CLI.hpp>
#include <grpcpp/grpcpp.h>
#include <libpq-fe.h>

#include "bench/bench_postgres.h"
#include "bench/bench_process.h"
#include "bench/bench_support.h"
#include "openshell/policy/gateway/v1/gateway.grpc.pb.h"

namespace {

namespace gw = openshell::policy::gateway::v1;
namespace drv = openshell::policy::driver::v1;
using osh::bench::Spawn;
using osh::bench::WaitForChannel;
using Clock = std::chrono::steady_clock;

using osh::bench::Cluster;

struct Gateway {
  pid_t pid = -1;
  std::string admin, sandbox;
};

Gateway StartGateway(const std::string& binary, const std::string& state_dir, const std::string& database) {
  Gateway g;
  std::vector<std::string> argv = {binary, "--state-dir", state_dir};
  if (!database.empty()) argv.insert(argv.end(), {"--database", database});
  std::filesystem::create_directories(state_dir);
  ::chmod(state_dir.c_str(), 0700);
  g.pid = Spawn(argv, state_dir + ".log");
  g.admin = state_dir + "/admin.sock";
  g.sandbox = state_dir + "/sandbox.sock";
  if (g.pid > 0 && (!WaitForChannel(g.admin) || !WaitForChannel(g.sandbox))) {
    std::fprintf(stderr, "bench_replicas: the gateway in %s did not start (see %s.log)\n", state_dir.c_str(),
                 state_dir.c_str());
    ::kill(g.pid, SIGKILL);
    ::waitpid(g.pid, nullptr, 0);
    g.pid = -1;
  }
  return g;
}

void StopAll(std::vector<Gateway>& gateways) {
  for (auto& g : gateways) {
    if (g.pid > 0) ::kill(g.pid, SIGTERM);  // never kill(-1): that is every process
  }
  for (auto& g : gateways) {
    if (g.pid > 0) ::waitpid(g.pid, nullptr, 0);
  }
  gateways.clear();
}

// One connection per client thread.
std::shared_ptr<grpc::Channel> ChannelTo(const std::string& socket, int id) { return osh::bench::ChannelWithId(socket, id); }

gw::SetPolicyRequest Policy(int variant) {
  gw::SetPolicyRequest request;
  request.set_scope("default");
  *request.mutable_policy() = osh::bench::PolicyOfSize(2048);
  request.mutable_policy()->mutable_filesystem()->add_read_only("/opt/bench/variant-" + std::to_string(variant));
  return request;
}

struct Figures {
  double admissions = 0, fetches = 0;
  uint64_t errors = 0;
};

// Admissions, then fetches, from `threads` client threads spread over the gateways.
Figures Measure(const std::vector<Gateway>& gateways, int threads, double seconds, const std::string& tag) {
  Figures f;
  std::vector<std::unique_ptr<gw::PolicyGateway::Stub>> admins;
  std::vector<std::unique_ptr<gw::SandboxPolicy::Stub>> sandboxes;
  for (int t = 0; t < threads; ++t) {
    admins.push_back(gw::PolicyGateway::NewStub(ChannelTo(gateways[t % gateways.size()].admin, t)));
    sandboxes.push_back(gw::SandboxPolicy::NewStub(ChannelTo(gateways[t % gateways.size()].sandbox, t)));
  }
  grpc::ClientContext set_ctx;
  gw::PolicyRevision revision;
  if (!admins[0]->SetPolicy(&set_ctx, Policy(0), &revision).ok()) return f;
  std::mutex mu;
  std::vector<std::string> handles;
  std::vector<uint64_t> next(threads, 0);
  const auto admitted = osh::bench::RunLoad(threads, seconds, [&](int t) {
    gw::AdmitSandboxRequest request;
    request.mutable_context()->set_sandbox_id(tag + "-" + std::to_string(t) + "-" + std::to_string(next[t]++));
    request.mutable_context()->set_user_subject("bench@example.com");
    gw::AdmitSandboxResponse response;
    grpc::ClientContext ctx;
    if (!admins[t]->AdmitSandbox(&ctx, request, &response).ok()) return false;
    std::lock_guard<std::mutex> lock(mu);
    if (handles.size() < 1000) handles.push_back(response.sandbox_handle());
    return true;
  });
  f.admissions = admitted.calls_per_second;
  f.errors += admitted.errors;
  std::this_thread::sleep_for(std::chrono::seconds(1));  // every replica has applied every admission
  std::vector<uint64_t> turn(threads, 0);
  const auto fetched = osh::bench::RunLoad(threads, seconds, [&](int t) {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer " + handles[(t * 7919 + turn[t]++) % handles.size()]);
    drv::Projection projection;
    return sandboxes[t]->GetProjection(&ctx, gw::GetProjectionRequest(), &projection).ok();
  });
  f.fetches = fetched.calls_per_second;
  f.errors += fetched.errors;
  return f;
}

// Mutations on replica 1 until a watcher on replica 2 holds each new projection: latencies in ms.
std::vector<double> Propagation(const Gateway& one, const Gateway& two, int rounds) {
  std::vector<double> out;
  auto admin = gw::PolicyGateway::NewStub(ChannelTo(one.admin, 100));
  gw::AdmitSandboxRequest request;
  request.mutable_context()->set_sandbox_id("watched");
  request.mutable_context()->set_user_subject("bench@example.com");
  gw::AdmitSandboxResponse admitted;
  grpc::ClientContext admit_ctx;
  if (!admin->AdmitSandbox(&admit_ctx, request, &admitted).ok()) return out;
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  auto sandbox = gw::SandboxPolicy::NewStub(ChannelTo(two.sandbox, 101));
  grpc::ClientContext watch_ctx;
  watch_ctx.AddMetadata("authorization", "Bearer " + admitted.sandbox_handle());
  auto reader = sandbox->WatchProjection(&watch_ctx, gw::WatchProjectionRequest());
  drv::Projection current;
  if (!reader->Read(&current)) return out;
  for (int i = 1; i <= rounds; ++i) {
    grpc::ClientContext ctx;
    gw::PolicyRevision revision;
    if (!admin->SetPolicy(&ctx, Policy(1000 + i), &revision).ok()) break;
    const auto returned = Clock::now();
    drv::Projection next;
    while (reader->Read(&next) && next.policy_digest() != revision.policy_digest()) {
    }
    if (next.policy_digest() != revision.policy_digest()) break;
    out.push_back(std::chrono::duration<double, std::milli>(Clock::now() - returned).count());
  }
  watch_ctx.TryCancel();
  return out;
}

using osh::bench::Percentile;

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Admissions and fetches with 1-3 gateway replicas on one PostgreSQL vs one SQLite gateway"};
  int threads = 4, rounds = 30;
  double seconds = 3.0;
  std::string gateway_binary = OSH_GATEWAY_BINARY;
  app.add_option("--threads", threads, "client threads (spread over the replicas)")->capture_default_str();
  app.add_option("--seconds", seconds, "measured seconds for each figure")->capture_default_str();
  app.add_option("--rounds", rounds, "mutations for the propagation latency")->capture_default_str();
  app.add_option("--gateway", gateway_binary, "policy-gateway binary")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  char dir_template[] = "/tmp/osh-bench-replicas-XXXXXX";
  const std::string dir = mkdtemp(dir_template);
  char pg_template[] = "/tmp/osh-bench-pg-XXXXXX";
  const std::string pg_dir = mkdtemp(pg_template);
  Cluster cluster(pg_dir);
  if (!cluster.ok()) {
    std::fprintf(stderr, "bench_replicas: PostgreSQL did not start (see %s)\n", dir.c_str());
    return 1;
  }
  bool ok = true;
  std::vector<Gateway> running;
  running.push_back(StartGateway(gateway_binary, dir + "/sqlite", ""));
  if (running.back().pid < 0) return 1;
  const Figures sqlite = Measure(running, threads, seconds, "s");
  StopAll(running);
  ok &= sqlite.errors == 0;

  Figures pg[4];
  std::vector<double> propagation;
  for (int n = 1; n <= 3; ++n) {
    const std::string url = cluster.CreateDatabase("r" + std::to_string(n));
    for (int i = 0; i < n; ++i) {
      running.push_back(StartGateway(gateway_binary, dir + "/r" + std::to_string(n) + "-" + std::to_string(i), url));
      ok &= running.back().pid > 0;
    }
    if (!ok) break;
    pg[n] = Measure(running, threads, seconds, "p");
    ok &= pg[n].errors == 0;
    if (n == 2) propagation = Propagation(running[0], running[1], rounds);
    StopAll(running);
  }
  std::printf("%d client threads spread over the replicas, %.1f s each, Unix sockets, one machine:\n", threads, seconds);
  std::printf("  %-28s %12s %12s\n", "", "admissions/s", "fetches/s");
  std::printf("  %-28s %12.0f %12.0f\n", "SQLite, 1 gateway (baseline)", sqlite.admissions, sqlite.fetches);
  for (int n = 1; n <= 3; ++n) {
    std::printf("  PostgreSQL, %d replica(s)      %12.0f %12.0f\n", n, pg[n].admissions, pg[n].fetches);
  }
  std::printf("  ratio PostgreSQL 1 replica / SQLite admissions: %.2f\n", pg[1].admissions / sqlite.admissions);
  std::printf("  fetch scaling 2 / 1 replicas: %.2f   3 / 1: %.2f\n", pg[2].fetches / pg[1].fetches,
              pg[3].fetches / pg[1].fetches);
  std::printf("  propagation, mutation on replica 1 -> watcher on replica 2 (%zu rounds): p50 %.1f ms  p99 %.1f ms\n",
              propagation.size(), Percentile(propagation, 0.5), Percentile(propagation, 0.99));
  ok &= static_cast<int>(propagation.size()) == rounds;
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
  return ok ? 0 : 1;  // the cluster's folder goes once the server has stopped (below)
}
