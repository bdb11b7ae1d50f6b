// WatchAuditEvents fan-out (issue 29: "a new event reaches 1,000 streaming watchers <= 100 ms p99 after its
// commit"), on a real policy-gateway process (builtin driver, SQLite) over its admin socket:
//  - N watchers (callback client reactors, spread over several connections: the gateway allows
//    max_streams_per_connection, default 100, calls on one) each open WatchAuditEvents and are caught up;
//  - the bench then admits a sandbox every --interval-ms (each admission commits one "admission" event),
//    K times, and for every (event, watcher) pair records how long after the commit the watcher had it.
// The commit time is bracketed: the admission's answer to the bench (steady clock; the commit is before the
// answer, so this side can only understate) and the event's own time_unix_ms (wall clock; set when the event
// is sealed, just before its transaction commits, so this side can only overstate, by the commit's own
// duration). The baseline is the same figure with one watcher in the same gateway, the same run: what the
// feed's poll (20 ms) costs alone.
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <thread>

#include <CLI/CLI.hpp>
#include <grpcpp/grpcpp.h>

#include "bench/bench_process.h"
#include "bench/bench_support.h"
#include "openshell/policy/gateway/v1/gateway.grpc.pb.h"

namespace {

namespace gw = openshell::policy::gateway::v1;
using BenchClock = std::chrono::steady_clock;
using WallClock = std::chrono::system_clock;
using osh::bench::Percentile;

double Ms(BenchClock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// What one watcher received of the measured events: for event k, when it arrived.
struct Receipt {
  int event = -1;  // k, from the admitted sandbox's id
  BenchClock::time_point steady;
  int64_t wall_ms = 0;        // the receipt on the wall clock, for time_unix_ms
  int64_t time_unix_ms = 0;   // the event's own
};

// The sandbox id of the phase's event k, and back.
std::string EventSandboxId(const std::string& phase, int k) { return phase + "-" + std::to_string(k); }
int EventOf(const std::string& phase, const std::string& sandbox_id) {
  if (sandbox_id.size() <= phase.size() + 1 || sandbox_id.compare(0, phase.size() + 1, phase + "-") != 0) return -1;
  return std::stoi(sandbox_id.substr(phase.size() + 1));
}

// One WatchAuditEvents stream, read on gRPC's callback threads (no thread of its own).
class Watcher final : public grpc::ClientReadReactor<gw::AuditEvent> {
 public:
  // Counts itself in `caught_up` once it has an event with seq >= catch_up_seq, and in `complete` once it
  // has `events` admissions of `phase`.
  Watcher(std::string phase, int events, uint64_t catch_up_seq, std::atomic<int>* caught_up, std::atomic<int>* complete)
      : phase_(std::move(phase)), events_(events), catch_up_seq_(catch_up_seq), caught_up_(caught_up), complete_(complete) {
    receipts_.reserve(static_cast<size_t>(events));
  }

  void Start(gw::PolicyGateway::Stub* stub, uint64_t after_seq) {
    request_.set_after_seq(after_seq);
    stub->async()->WatchAuditEvents(&context_, &request_, this);
    StartRead(&event_);
    StartCall();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // OnDone follows
    const auto steady = BenchClock::now();
    const int64_t wall_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(WallClock::now().time_since_epoch()).count();
    if (!caught_ && event_.seq() >= catch_up_seq_) {
      caught_ = true;
      caught_up_->fetch_add(1);
    }
    const int k = event_.type() == "admission" ? EventOf(phase_, event_.sandbox_id()) : -1;
    if (k >= 0) {
      receipts_.push_back({k, steady, wall_ms, event_.time_unix_ms()});
      if (static_cast<int>(receipts_.size()) == events_) complete_->fetch_add(1);
    }
    StartRead(&event_);
  }

  void OnDone(const grpc::Status& status) override {
    std::lock_guard<std::mutex> lock(mu_);
    status_ = status;
    cv_.notify_all();
  }

  void Cancel() { context_.TryCancel(); }
  // After OnDone: the call's status (CANCELLED once Cancel ended it).
  grpc::Status AwaitDone() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return status_.has_value(); });
    return *status_;
  }
  // Read only after AwaitDone.
  const std::vector<Receipt>& receipts() const { return receipts_; }

 private:
  const std::string phase_;
  const int events_;
  const uint64_t catch_up_seq_;
  std::atomic<int>* const caught_up_;
  std::atomic<int>* const complete_;
  grpc::ClientContext context_;
  gw::WatchAuditEventsRequest request_;
  gw::AuditEvent event_;
  bool caught_ = false;
  std::vector<Receipt> receipts_;  // the reactor's callbacks only (they do not overlap), then the main thread
  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<grpc::Status> status_;
};

struct PhaseResult {
  std::vector<double> from_answer_ms;  // receipt - the admission's answer (steady clock)
  std::vector<double> from_stamp_ms;   // receipt - the event's time_unix_ms (wall clock)
  std::vector<double> last_ms;         // per event: its last watcher's receipt - the answer
  uint64_t pairs = 0, missing = 0, errors = 0;
  double achieved_rate = 0;
  double ready_ms = 0;  // from opening the streams until every watcher was caught up
  long rss_kib = 0;     // the gateway's, with every stream open after the events
};

struct Run {
  pid_t gateway;
  gw::PolicyGateway::Stub* admin;
  std::vector<std::unique_ptr<gw::PolicyGateway::Stub>>* watch_stubs;  // one per channel
};

uint64_t HeadSeq(gw::PolicyGateway::Stub* admin) {
  gw::ListAuditEventsRequest request;
  request.set_limit(1);
  gw::ListAuditEventsResponse response;
  grpc::ClientContext ctx;
  return admin->ListAuditEvents(&ctx, request, &response).ok() ? response.head_seq() : 0;
}

bool WaitFor(const std::function<bool()>& condition, std::chrono::milliseconds limit) {
  const auto end = BenchClock::now() + limit;
  while (!condition()) {
    if (BenchClock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

// Opens `watchers` streams, waits until each has the head, admits `events` sandboxes one every `interval`,
// waits until each stream has every one (or 20 s), ends the streams and measures.
PhaseResult RunPhase(const Run& run, const std::string& phase, int watchers, int events, std::chrono::milliseconds interval) {
  PhaseResult out;
  const uint64_t head = HeadSeq(run.admin);  // SetPolicy's event at least
  if (head == 0) {
    std::fprintf(stderr, "%s: the audit log is empty\n", phase.c_str());
    ++out.errors;
    return out;
  }
  std::atomic<int> caught_up{0}, complete{0};
  std::vector<std::unique_ptr<Watcher>> streams;
  const auto opening = BenchClock::now();
  for (int w = 0; w < watchers; ++w) {
    streams.push_back(std::make_unique<Watcher>(phase, events, head, &caught_up, &complete));
    auto& stubs = *run.watch_stubs;
    streams.back()->Start(stubs[static_cast<size_t>(w) % stubs.size()].get(), head - 1);  // the head: caught up
  }
  if (!WaitFor([&] { return caught_up.load() == watchers; }, std::chrono::seconds(60))) {
    std::fprintf(stderr, "%s: only %d of %d streams caught up\n", phase.c_str(), caught_up.load(), watchers);
    ++out.errors;
  }
  out.ready_ms = Ms(BenchClock::now() - opening);

  std::vector<BenchClock::time_point> answered(static_cast<size_t>(events));
  std::vector<bool> admitted(static_cast<size_t>(events), false);
  const auto start = BenchClock::now();
  for (int k = 0; k < events; ++k) {
    std::this_thread::sleep_until(start + k * interval);
    gw::AdmitSandboxRequest request;
    request.mutable_context()->set_sandbox_id(EventSandboxId(phase, k));
    request.mutable_context()->set_user_subject("bench@example.com");
    gw::AdmitSandboxResponse response;
    grpc::ClientContext ctx;
    const bool ok = run.admin->AdmitSandbox(&ctx, request, &response).ok();
    answered[static_cast<size_t>(k)] = BenchClock::now();
    admitted[static_cast<size_t>(k)] = ok;
    if (!ok) ++out.errors;
  }
  const int measured = static_cast<int>(std::count(admitted.begin(), admitted.end(), true));
  out.achieved_rate = events > 1 ? (events - 1) / std::chrono::duration<double>(answered.back() - answered.front()).count() : 0;
  if (measured == events) WaitFor([&] { return complete.load() == watchers; }, std::chrono::seconds(20));
  out.rss_kib = osh::bench::ProcStatusKiB(run.gateway, "VmRSS");

  for (auto& s : streams) s->Cancel();
  std::vector<double> last(static_cast<size_t>(events), -1e9);
  for (auto& s : streams) {
    const grpc::Status status = s->AwaitDone();
    if (status.error_code() != grpc::StatusCode::CANCELLED) {
      std::fprintf(stderr, "%s: a stream ended early: %d %s\n", phase.c_str(), static_cast<int>(status.error_code()),
                   status.error_message().c_str());
      ++out.errors;
    }
    std::vector<bool> seen(static_cast<size_t>(events), false);
    for (const Receipt& r : s->receipts()) {
      if (r.event >= events || seen[static_cast<size_t>(r.event)]) {
        ++out.errors;  // not one of ours, or twice
        continue;
      }
      seen[static_cast<size_t>(r.event)] = true;
      out.from_answer_ms.push_back(Ms(r.steady - answered[static_cast<size_t>(r.event)]));
      last[static_cast<size_t>(r.event)] = std::max(last[static_cast<size_t>(r.event)], out.from_answer_ms.back());
      out.from_stamp_ms.push_back(static_cast<double>(r.wall_ms - r.time_unix_ms));
    }
    for (int k = 0; k < events; ++k) {
      if (admitted[static_cast<size_t>(k)] && !seen[static_cast<size_t>(k)]) ++out.missing;
    }
  }
  for (int k = 0; k < events; ++k) {
    if (admitted[static_cast<size_t>(k)]) out.last_ms.push_back(last[static_cast<size_t>(k)]);
  }
  out.pairs = out.from_answer_ms.size();
  return out;
}

void PrintPhase(const char* name, const PhaseResult& r) {
  std::printf("%-10s from the answer:      p50 %6.1f ms  p99 %6.1f ms  max %6.1f ms  min %6.1f ms\n", name,
              Percentile(r.from_answer_ms, 0.5), Percentile(r.from_answer_ms, 0.99), Percentile(r.from_answer_ms, 1.0),
              Percentile(r.from_answer_ms, 0.0));
  std::printf("%-10s from time_unix_ms:    p50 %6.1f ms  p99 %6.1f ms  max %6.1f ms\n", "",
              Percentile(r.from_stamp_ms, 0.5), Percentile(r.from_stamp_ms, 0.99), Percentile(r.from_stamp_ms, 1.0));
  std::printf("%-10s each event's last:  p50 %6.1f ms  p99 %6.1f ms  (from the answer)\n", "",
              Percentile(r.last_ms, 0.5), Percentile(r.last_ms, 0.99));
  std::printf("%-10s %llu pairs, %llu missing, %.1f events/s, streams caught up in %.0f ms, gateway RSS %.1f MiB\n", "",
              static_cast<unsigned long long>(r.pairs), static_cast<unsigned long long>(r.missing), r.achieved_rate,
              r.ready_ms, static_cast<double>(r.rss_kib) / 1024.0);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"WatchAuditEvents fan-out: how long after its commit a new event reaches N streaming watchers"};
  int watchers = 1000, events = 200, interval_ms = 100, channels = 0;
  app.add_option("--watchers", watchers, "open WatchAuditEvents streams")->capture_default_str()->check(CLI::Range(1, 100000));
  app.add_option("--events", events, "events (admissions) measured, in each phase")->capture_default_str()->check(CLI::Range(1, 1000000));
  app.add_option("--interval-ms", interval_ms, "one event every this many ms")->capture_default_str()->check(CLI::Range(1, 60000));
  app.add_option("--channels", channels, "connections the streams are spread over (0: one per 50 streams)")
      ->capture_default_str()->check(CLI::Range(0, 1000));
  CLI11_PARSE(app, argc, argv);
  if (channels == 0) channels = (watchers + 49) / 50;

  char pattern[] = "/tmp/bench-audit-stream-XXXXXX";
  const std::string dir = ::mkdtemp(pattern);
  const std::string state = dir + "/state";
  {
    std::ofstream config(dir + "/gateway.toml");
    config << "[openshell.gateway.limits]\nmax_audit_streams = " << watchers + 16 << "\n";
  }
  const pid_t gateway = osh::bench::Spawn(
      {OSH_GATEWAY_BINARY, "--config", dir + "/gateway.toml", "--state-dir", state}, dir + "/gateway.log");
  if (gateway < 0 || !osh::bench::WaitForChannel(state + "/admin.sock")) {
    std::fprintf(stderr, "the gateway did not start (see %s/gateway.log)\n", dir.c_str());
    return 1;
  }
  auto admin = gw::PolicyGateway::NewStub(osh::bench::ChannelWithId(state + "/admin.sock", 0));
  int exit_code = osh::bench::SetDefaultPolicy(*admin, 4096) ? 0 : 1;
  std::vector<std::unique_ptr<gw::PolicyGateway::Stub>> watch_stubs;
  for (int c = 1; c <= channels; ++c) {
    watch_stubs.push_back(gw::PolicyGateway::NewStub(osh::bench::ChannelWithId(state + "/admin.sock", c)));
  }
  const Run run{gateway, admin.get(), &watch_stubs};
  const auto interval = std::chrono::milliseconds(interval_ms);
  if (exit_code == 0) {
    const long idle_rss = osh::bench::ProcStatusKiB(gateway, "VmRSS");
    const PhaseResult baseline = RunPhase(run, "base", 1, events, interval);
    const PhaseResult fan = RunPhase(run, "fan", watchers, events, interval);
    std::printf("WatchAuditEvents fan-out (real gateway, SQLite, builtin driver; one admission every %d ms, %d events)\n",
                interval_ms, events);
    std::printf("latency from the commit to each watcher's receipt, over all (event, watcher) pairs\n");
    PrintPhase("baseline", baseline);
    std::printf("%-10s 1 watcher\n", "");
    PrintPhase("fan-out", fan);
    std::printf("%-10s %d watchers on %d connections\n", "", watchers, channels);
    const double p99 = Percentile(fan.from_answer_ms, 0.99), base_p99 = Percentile(baseline.from_answer_ms, 0.99);
    std::printf("p99 (from the answer) %.1f ms, target <= 100 ms: %s;  ratio to the 1-watcher baseline %.2f\n", p99,
                p99 <= 100 ? "met" : "NOT met", base_p99 > 0 ? p99 / base_p99 : 0.0);
    std::printf("gateway RSS: %.1f MiB idle, %.1f MiB with %d streams (%.1f KiB per stream)\n", idle_rss / 1024.0,
                fan.rss_kib / 1024.0, watchers, static_cast<double>(fan.rss_kib - idle_rss) / watchers);
    const uint64_t errors = baseline.errors + fan.errors, missing = baseline.missing + fan.missing;
    std::printf("errors: %llu, missing: %llu\n", static_cast<unsigned long long>(errors),
                static_cast<unsigned long long>(missing));
    if (errors != 0 || missing != 0 || fan.pairs == 0) exit_code = 1;
  }
  ::kill(gateway, SIGTERM);
  int status = 0;
  ::waitpid(gateway, &status, 0);
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
  return exit_code;
}
