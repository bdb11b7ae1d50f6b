// The verifiable log at the gateway (issue 27), on a real policy-gateway process (builtin driver, SQLite,
// a log key) over its sockets:
//  1. GetLogProof and GetServedProjection (the projection with its proof in one call) against
//     GetProjection (4 KiB body) from the same client threads, alternating rounds,
//     medians: the proof's cost beside the fetch it follows.
//  2. Admission -> provable: `--admitters` threads admit at a fixed rate together (one thread tops out
//     near 300/s here; the figure is under 1,000/s); for each admission, the time from its answer
//     until GetLogProof for its handle stops answering log_pending (the sequencer has integrated it under a
//     signed checkpoint); p50 and p99. One poller asks in answer order, so an admission made provable
//     while the poller waits on an earlier one is measured when the poller reaches it: an upper bound.
//     The baseline is the log's own integration interval.
//  3. (`--served-watchers N`, off by default) a policy change moving N sandboxes that each have a
//     WatchServedProjection stream open, on a `--watch-body-kib` policy: the time until every stream has
//     the new projection, and the slowest GetProjection of another sandbox asked meanwhile, against the
//     slowest one asked while nothing moved (the registry tells its watchers under its lock: what a served
//     watch does there holds fetches off).
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <mutex>
#include <thread>

#include <CLI/CLI.hpp>
#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "bench/bench_process.h"
#include "bench/bench_support.h"
#include "openshell/policy/gateway/v1/gateway.grpc.pb.h"
#include "policy/policy_file.h"
#include "trust/keys.h"

namespace {

namespace gw = openshell::policy::gateway::v1;
namespace drv = openshell::policy::driver::v1;
using BenchClock = std::chrono::steady_clock;

using osh::bench::Percentile;

// One connection per client thread.
std::shared_ptr<grpc::Channel> LogBenchChannel(const std::string& socket, int id) {
  return osh::bench::ChannelWithId(socket, id);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"The verifiable log at the gateway: GetLogProof beside GetProjection, and admission -> provable latency"};
  int threads = 4, rounds = 3, rate = 200, interval_ms = 200, admitters = 1;
  double seconds = 2.0, admit_seconds = 5.0;
  app.add_option("--threads", threads, "client threads for the call rates")->capture_default_str();
  app.add_option("--seconds", seconds, "measured seconds per round and call")->capture_default_str();
  app.add_option("--rounds", rounds, "alternating rounds (medians reported)")->capture_default_str();
  app.add_option("--rate", rate, "admissions per second for the latency figure")->capture_default_str();
  app.add_option("--admit-seconds", admit_seconds, "how long to admit at --rate")->capture_default_str();
  app.add_option("--admitters", admitters, "threads admitting at --rate together")
      ->capture_default_str()->check(CLI::Range(1, 64));
  app.add_option("--interval-ms", interval_ms, "the gateway's log_integrate_interval_ms")->capture_default_str();
  int served_watchers = 0, watch_body_kib = 1024;
  app.add_option("--served-watchers", served_watchers, "phase 3: sandboxes with a WatchServedProjection open (0: skip)")
      ->capture_default_str()->check(CLI::Range(0, 4000));
  app.add_option("--watch-body-kib", watch_body_kib, "phase 3: the policy's size")->capture_default_str()
      ->check(CLI::Range(1, 3072));
  bool plain_watch = false;
  app.add_flag("--plain-watch", plain_watch, "phase 3 with WatchProjection streams instead (the baseline)");
  std::string gateway_binary = OSH_GATEWAY_BINARY;
  app.add_option("--gateway", gateway_binary, "policy-gateway binary (e.g. an older build, to compare)")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  char pattern[] = "/tmp/bench-log-gw-XXXXXX";
  const std::string dir = ::mkdtemp(pattern);
  const std::unique_ptr<const std::string, void (*)(const std::string*)> remove_dir(&dir, [](const std::string* d) {
    std::error_code ignored;
    std::filesystem::remove_all(*d, ignored);  // after the gateway stopped (declared before it)
  });
  auto key = osh::trust::PrivateKey::Generate("ed25519");
  if (!key.ok() || !osh::policy::CreateFileAtomically(dir + "/log.key", key->ToPem(), 0600).ok()) {
    std::fprintf(stderr, "cannot write the log key\n");
    return 1;
  }
  const std::string state = dir + "/state";
  const pid_t gateway = osh::bench::Spawn(
      {gateway_binary, "--state-dir", state, "--log-signing-key", dir + "/log.key", "--log-origin",
       "bench.example/policy-gateway", "--log-integrate-interval-ms", std::to_string(interval_ms)},
      dir + "/gateway.log");
  const osh::bench::StopOnExit stop_gateway(gateway);  // also on an early return
  if (gateway < 0 || !osh::bench::WaitForChannel(state + "/sandbox.sock")) {
    std::fprintf(stderr, "the gateway did not start (see %s/gateway.log)\n", dir.c_str());
    return 1;
  }
  auto admin = gw::PolicyGateway::NewStub(LogBenchChannel(state + "/admin.sock", 1000));
  if (!osh::bench::SetDefaultPolicy(*admin, 4096)) return 1;
  auto admit = [&](const std::string& id, gw::AdmitSandboxResponse* out) {
    gw::AdmitSandboxRequest request;
    request.mutable_context()->set_sandbox_id(id);
    request.mutable_context()->set_user_subject("bench@example.com");
    grpc::ClientContext ctx;
    return admin->AdmitSandbox(&ctx, request, out).ok();
  };
  std::vector<std::string> handles;
  for (int i = 0; i < 64; ++i) {
    gw::AdmitSandboxResponse response;
    if (!admit("fetch-" + std::to_string(i), &response)) return 1;
    handles.push_back(response.sandbox_handle());
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(3 * interval_ms));  // every entry under a checkpoint

  // 1. The call rates.
  std::vector<std::unique_ptr<gw::SandboxPolicy::Stub>> stubs;
  for (int t = 0; t < threads; ++t) stubs.push_back(gw::SandboxPolicy::NewStub(LogBenchChannel(state + "/sandbox.sock", t)));
  std::vector<uint64_t> turn(static_cast<size_t>(threads), 0);
  auto context_for = [&](int t) {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->AddMetadata("authorization", "Bearer " + handles[(static_cast<size_t>(t) * 7919 + turn[t]++) % handles.size()]);
    return ctx;
  };
  std::vector<double> fetch_rates, proof_rates, both_rates, served_rates;
  std::atomic<uint64_t> errors{0};
  for (int round = 0; round < rounds; ++round) {
    const auto fetched = osh::bench::RunLoad(threads, seconds, [&](int t) {
      drv::Projection projection;
      return stubs[t]->GetProjection(context_for(t).get(), gw::GetProjectionRequest(), &projection).ok();
    });
    const auto proven = osh::bench::RunLoad(threads, seconds, [&](int t) {
      gw::LogProof proof;
      return stubs[t]->GetLogProof(context_for(t).get(), gw::GetLogProofRequest(), &proof).ok();
    });
    const auto both = osh::bench::RunLoad(threads, seconds, [&](int t) {
      drv::Projection projection;
      gw::LogProof proof;
      return stubs[t]->GetProjection(context_for(t).get(), gw::GetProjectionRequest(), &projection).ok() &&
             stubs[t]->GetLogProof(context_for(t).get(), gw::GetLogProofRequest(), &proof).ok();
    });
    const auto served = osh::bench::RunLoad(threads, seconds, [&](int t) {
      gw::ServedProjection out;
      return stubs[t]->GetServedProjection(context_for(t).get(), gw::GetServedProjectionRequest(), &out).ok() &&
             out.has_proof();
    });
    served_rates.push_back(served.calls_per_second);
    errors += served.errors;
    fetch_rates.push_back(fetched.calls_per_second);
    proof_rates.push_back(proven.calls_per_second);
    both_rates.push_back(both.calls_per_second);
    errors += fetched.errors + proven.errors + both.errors;
  }
  const double fetch = osh::bench::Median(fetch_rates), proof = osh::bench::Median(proof_rates),
               both = osh::bench::Median(both_rates), served = osh::bench::Median(served_rates);

  // 2. Admission -> provable, at a fixed admission rate.
  struct Pending {
    std::string handle;
    BenchClock::time_point answered;
  };
  std::mutex mu;
  std::deque<Pending> pending;
  bool admitting = true;
  std::vector<double> latencies_ms;
  std::thread poller([&] {
    auto stub = gw::SandboxPolicy::NewStub(LogBenchChannel(state + "/sandbox.sock", 999));
    for (;;) {
      Pending next;
      {
        std::lock_guard<std::mutex> lock(mu);
        if (pending.empty()) {
          if (!admitting) return;
        } else {
          next = pending.front();
        }
      }
      if (next.handle.empty()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        continue;
      }
      grpc::ClientContext ctx;
      ctx.AddMetadata("authorization", "Bearer " + next.handle);
      gw::LogProof out;
      const grpc::Status status = stub->GetLogProof(&ctx, gw::GetLogProofRequest(), &out);
      if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
        continue;
      }
      std::lock_guard<std::mutex> lock(mu);
      pending.pop_front();
      if (status.ok()) {
        latencies_ms.push_back(std::chrono::duration<double, std::milli>(BenchClock::now() - next.answered).count());
      } else {
        ++errors;
      }
    }
  });
  // Each admitter admits at rate / admitters, its schedule offset so that the admissions interleave.
  const auto period = std::chrono::duration_cast<BenchClock::duration>(std::chrono::duration<double>(
      static_cast<double>(admitters) / rate));
  const auto start = BenchClock::now();
  std::atomic<int> admitted{0};
  std::vector<std::thread> admitting_threads;
  for (int a = 0; a < admitters; ++a) {
    admitting_threads.emplace_back([&, a] {
      int mine = 0;
      for (auto at = start + period * a / admitters; at - start < std::chrono::duration<double>(admit_seconds);
           at += period) {
        std::this_thread::sleep_until(at);
        gw::AdmitSandboxResponse response;
        if (!admit(absl::StrCat("latency-", a, "-", mine++), &response)) {
          ++errors;
          continue;
        }
        ++admitted;
        std::lock_guard<std::mutex> lock(mu);
        pending.push_back({response.sandbox_handle(), BenchClock::now()});
      }
    });
  }
  for (auto& t : admitting_threads) t.join();
  const double achieved = admitted.load() / std::chrono::duration<double>(BenchClock::now() - start).count();
  {
    std::lock_guard<std::mutex> lock(mu);
    admitting = false;
  }
  poller.join();

  // 3. A policy change under served watches.
  double moved_ms = 0, moved_cpu_ms = 0, peak_rss_mib = 0, quiet_fetch_max_ms = 0, moving_fetch_max_ms = 0;
  if (served_watchers > 0) {
    const size_t body = static_cast<size_t>(watch_body_kib) * 1024;
    if (!osh::bench::SetDefaultPolicy(*admin, body)) return 1;
    std::vector<std::string> watched;
    for (int i = 0; i < served_watchers; ++i) {
      gw::AdmitSandboxResponse response;
      if (!admit("watch-" + std::to_string(i), &response)) return 1;
      watched.push_back(response.sandbox_handle());
    }
    gw::AdmitSandboxResponse prober_sandbox;
    if (!admit("prober", &prober_sandbox)) return 1;
    std::atomic<int> ready{0}, moved{0};
    std::atomic<bool> done{false};
    std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
    for (int i = 0; i < served_watchers; ++i) contexts.push_back(std::make_unique<grpc::ClientContext>());
    std::vector<std::thread> watchers;
    for (int i = 0; i < served_watchers; ++i) {
      watchers.emplace_back([&, i] {
        auto stub = gw::SandboxPolicy::NewStub(LogBenchChannel(state + "/sandbox.sock", 2000 + i % 16));
        contexts[i]->AddMetadata("authorization", "Bearer " + watched[i]);
        std::string first;
        // Whether the stream goes on: counts the first projection as ready, a later other one as moved.
        const auto saw = [&](const drv::Projection& projection) {
          if (first.empty()) {
            first = projection.policy_digest();
            ++ready;
            return true;
          }
          if (projection.policy_digest() == first) return true;
          ++moved;
          return false;
        };
        if (plain_watch) {
          auto reader = stub->WatchProjection(contexts[i].get(), gw::WatchProjectionRequest());
          drv::Projection projection;
          while (reader->Read(&projection) && saw(projection)) {
          }
          reader->Finish().IgnoreError();
          return;
        }
        auto reader = stub->WatchServedProjection(contexts[i].get(), gw::GetServedProjectionRequest());
        gw::ServedProjection message;
        while (reader->Read(&message)) {
          if (message.has_projection() && !saw(message.projection())) break;  // else a proof alone
        }
        reader->Finish().IgnoreError();
      });
    }
    while (ready.load() < served_watchers) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    // The prober: one GetProjection after another from its own connection, the slowest kept.
    std::atomic<bool> moving{false};
    std::atomic<int64_t> quiet_max_us{0}, moving_max_us{0};
    std::thread prober([&] {
      auto stub = gw::SandboxPolicy::NewStub(LogBenchChannel(state + "/sandbox.sock", 3000));
      while (!done.load()) {
        grpc::ClientContext ctx;
        ctx.AddMetadata("authorization", "Bearer " + prober_sandbox.sandbox_handle());
        drv::Projection out;
        const auto begun = BenchClock::now();
        if (!stub->GetProjection(&ctx, gw::GetProjectionRequest(), &out).ok()) ++errors;
        const int64_t us = std::chrono::duration_cast<std::chrono::microseconds>(BenchClock::now() - begun).count();
        auto& slowest = moving.load() ? moving_max_us : quiet_max_us;
        for (int64_t seen = slowest.load(); us > seen && !slowest.compare_exchange_weak(seen, us);) {
        }
      }
    });
    std::this_thread::sleep_for(std::chrono::seconds(1));  // the quiet baseline
    moving = true;
    const double cpu_before = osh::bench::ProcCpuSeconds(gateway);
    const auto changed = BenchClock::now();
    if (!osh::bench::SetDefaultPolicy(*admin, body + body / 16)) return 1;  // a few paths more
    while (moved.load() < served_watchers && BenchClock::now() - changed < std::chrono::seconds(120)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    moved_ms = std::chrono::duration<double, std::milli>(BenchClock::now() - changed).count();
    moved_cpu_ms = (osh::bench::ProcCpuSeconds(gateway) - cpu_before) * 1000;
    peak_rss_mib = static_cast<double>(osh::bench::ProcStatusKiB(gateway, "VmHWM")) / 1024;
    if (moved.load() < served_watchers) ++errors;
    done = true;
    prober.join();
    for (auto& context : contexts) context->TryCancel();
    for (auto& t : watchers) t.join();
    quiet_fetch_max_ms = static_cast<double>(quiet_max_us.load()) / 1000;
    moving_fetch_max_ms = static_cast<double>(moving_max_us.load()) / 1000;
  }

  std::printf("gateway with a log (SQLite, builtin driver, 4 KiB body, %d client threads, median of %d)\n", threads, rounds);
  std::printf("  GetProjection:                   %8.0f calls/s\n", fetch);
  std::printf("  GetLogProof:                     %8.0f calls/s   ratio to GetProjection %.3f\n", proof, proof / fetch);
  std::printf("  GetProjection then GetLogProof:  %8.0f pairs/s   ratio to GetProjection %.3f\n", both, both / fetch);
  std::printf("  GetServedProjection (with proof):%8.0f calls/s   ratio to GetProjection %.3f (target >= 0.9)\n", served,
              served / fetch);
  std::printf("admission -> provable (log_integrate_interval_ms %d), %.0f admissions/s (%d admitter(s)) for %.0f s, "
              "%zu measured\n",
              interval_ms, achieved, admitters, admit_seconds, latencies_ms.size());
  std::printf("  p50 %.1f ms   p99 %.1f ms   max %.1f ms   (targets: p50 <= 250 ms, p99 <= 1000 ms)\n",
              Percentile(latencies_ms, 0.5), Percentile(latencies_ms, 0.99), Percentile(latencies_ms, 1.0));
  if (served_watchers > 0) {
    std::printf("a policy change under %d %s watches (%d KiB policy): every stream has it after %.0f ms; "
                "the gateway used %.0f ms of CPU meanwhile\n",
                served_watchers, plain_watch ? "plain" : "served", watch_body_kib, moved_ms, moved_cpu_ms);
    std::printf("  the gateway's peak resident memory: %.0f MiB\n", peak_rss_mib);
    std::printf("  slowest GetProjection of another sandbox: %.2f ms meanwhile, %.2f ms in the quiet second before "
                "(ratio %.1f)\n",
                moving_fetch_max_ms, quiet_fetch_max_ms, moving_fetch_max_ms / std::max(quiet_fetch_max_ms, 0.001));
  }
  std::printf("errors: %llu\n", static_cast<unsigned long long>(errors.load()));
  return errors == 0 && !latencies_ms.empty() ? 0 : 1;
}
