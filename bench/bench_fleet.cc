// Fleet-scale figures of one gateway, each beside a baseline measured in the same run:
//   memory   — RSS with N admitted sandboxes (after start-up re-verification), vs an empty gateway;
//   restart  — kill -9, start again: admin socket answering and an admitted sandbox fetchable, vs an
//              empty gateway's start;
//   watchers — W concurrent WatchProjection streams: RSS per stream;
//   fan-out  — (builtin) SetPolicy of the default scope with N sandboxes: RPC time and re-projected
//              count, every watcher's receipt of the new digest after the RPC returned, admin GetStatus
//              latency during it; vs the same mutation on the empty gateway.
// Two modes: "builtin" (signing builtin driver without context binding: one shared projection) and
// "remote" (a real null-policy-driver configured; projections context-bound and signed one by one).
// The store is filled in process through the store API (the rows an admission writes); everything
// else goes through the real binaries on Unix sockets. Correctness is checked and fails the run: the
// count re-projected, every watcher seeing exactly the new digest, the fetched digest after the change.
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include <CLI/CLI.hpp>
#include <grpcpp/grpcpp.h>

#include "bench/bench_process.h"
#include "bench/bench_support.h"
#include "builtin_driver/builtin_driver.h"
#include "gateway/core/gateway_core.h"
#include "openshell/policy/gateway/v1/gateway.grpc.pb.h"
#include "policy/digest.h"
#include "store/sqlite_store.h"
#include "trust/encoding.h"
#include "trust/keys.h"

namespace {

namespace gw = openshell::policy::gateway::v1;
namespace drv = openshell::policy::driver::v1;
using Clock = std::chrono::steady_clock;
using osh::bench::ProcStatusKiB;
using osh::bench::Spawn;

double MsSince(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

struct Options {
  int sandboxes = 100000;
  int watchers = 10000;
  size_t body_bytes = 4096;
  std::string gateway_binary = OSH_GATEWAY_BINARY;
  std::string driver_binary = OSH_NULL_DRIVER_BINARY;
  bool keep = false;  // keep the temp folder (state, logs) for a closer look
};

struct Gateway {
  pid_t pid = -1;
  std::string dir;
  std::unique_ptr<gw::PolicyGateway::Stub> admin;
  std::unique_ptr<gw::SandboxPolicy::Stub> sandbox;
};

bool StatusOk(gw::PolicyGateway::Stub* admin) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  gw::GetStatusResponse response;
  return admin->GetStatus(&ctx, gw::GetStatusRequest(), &response).ok();
}

grpc::Status Fetch(gw::SandboxPolicy::Stub* sandbox, const std::string& handle, drv::Projection* out) {
  grpc::ClientContext ctx;
  ctx.AddMetadata("authorization", "Bearer " + handle);
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  return sandbox->GetProjection(&ctx, gw::GetProjectionRequest(), out);
}

// Starts the gateway and waits until the admin socket answers and `probe_handle` (if any) fetches.
// Returns the milliseconds to each.
struct Started {
  double admin_ms = -1, fetch_ms = -1;
};
// Which file is at `path` now (inode and change time: an inode number may be reused at once); "" if none.
std::string Identity(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return "";
  return std::to_string(st.st_ino) + ":" + std::to_string(st.st_ctim.tv_sec) + "." + std::to_string(st.st_ctim.tv_nsec);
}

Started Start(Gateway* g, const std::vector<std::string>& argv, const std::string& probe_handle) {
  // The gateway creates its sockets once it is ready to serve: wait (cheaply) for a new admin socket
  // before probing with gRPC, so the probes do not compete for the CPU with the start they measure.
  const std::string admin_socket = g->dir + "/var/admin.sock";
  const std::string stale = Identity(admin_socket);
  const auto t0 = Clock::now();
  g->pid = Spawn(argv, g->dir + "/gateway.log");
  Started s;
  for (std::string now = Identity(admin_socket); MsSince(t0) < 60000 && (now.empty() || now == stale);
       now = Identity(admin_socket)) {
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
  // A fresh channel for each probe, with its own subchannel: a channel that failed once waits out its
  // reconnect back-off (1 s and growing), which would measure the client, not the gateway.
  auto channel = [&](const std::string& socket) {
    grpc::ChannelArguments args;
    args.SetInt("grpc.use_local_subchannel_pool", 1);
    return grpc::CreateCustomChannel("unix:" + g->dir + "/var/" + socket, grpc::InsecureChannelCredentials(), args);
  };
  while (MsSince(t0) < 60000) {
    if (s.admin_ms < 0 && StatusOk(gw::PolicyGateway::NewStub(channel("admin.sock")).get())) s.admin_ms = MsSince(t0);
    if (s.admin_ms >= 0) {
      if (probe_handle.empty()) break;
      drv::Projection p;
      if (Fetch(gw::SandboxPolicy::NewStub(channel("sandbox.sock")).get(), probe_handle, &p).ok()) {
        s.fetch_ms = MsSince(t0);
        break;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  g->admin = gw::PolicyGateway::NewStub(channel("admin.sock"));
  g->sandbox = gw::SandboxPolicy::NewStub(channel("sandbox.sock"));
  return s;
}

void Stop(Gateway* g, int signal) {
  if (g->pid <= 0) return;
  ::kill(g->pid, signal);
  ::waitpid(g->pid, nullptr, 0);
  g->pid = -1;
}

// How many start-up re-verification passes the gateway's log reports as finished.
size_t ReverificationPasses(const Gateway& g) {
  std::ifstream log(g.dir + "/gateway.log");
  std::string line;
  size_t seen = 0;
  while (std::getline(log, line)) seen += line.find("re-verified") != std::string::npos;
  return seen;
}

// Waits until the log reports more than `before` finished passes (or 120 s).
void WaitForReverification(const Gateway& g, size_t before) {
  const auto t0 = Clock::now();
  while (MsSince(t0) < 120000 && ReverificationPasses(g) <= before) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

// One WatchProjection stream: records every digest it receives and when.
class Watcher final : public grpc::ClientReadReactor<drv::Projection> {
 public:
  Watcher(gw::SandboxPolicy::Stub* stub, const std::string& handle) {
    ctx_.AddMetadata("authorization", "Bearer " + handle);
    stub->async()->WatchProjection(&ctx_, &request_, this);
    StartRead(&message_);
    StartCall();
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      digests_.push_back(message_.policy_digest());
      last_at_ = Clock::now();
    }
    StartRead(&message_);
  }
  void OnDone(const grpc::Status&) override {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
    cv_.notify_all();
  }
  size_t received() {
    std::lock_guard<std::mutex> lock(mu_);
    return digests_.size();
  }
  std::vector<std::string> digests() {
    std::lock_guard<std::mutex> lock(mu_);
    return digests_;
  }
  Clock::time_point last_at() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_at_;
  }
  void CancelAndWait() {
    ctx_.TryCancel();
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return done_; });
  }

 private:
  grpc::ClientContext ctx_;
  gw::WatchProjectionRequest request_;
  drv::Projection message_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> digests_;
  Clock::time_point last_at_;
  bool done_ = false;
};

bool WaitAll(std::vector<std::unique_ptr<Watcher>>& watchers, size_t messages, double timeout_ms) {
  const auto t0 = Clock::now();
  for (auto& w : watchers) {
    while (w->received() < messages) {
      if (MsSince(t0) > timeout_ms) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  return true;
}

gw::SetPolicyRequest DefaultPolicy(size_t body_bytes, int variant) {
  gw::SetPolicyRequest request;
  request.set_scope("default");
  *request.mutable_policy() = osh::bench::PolicyOfSize(body_bytes);
  request.mutable_policy()->mutable_filesystem()->add_read_only("/opt/bench/variant-" + std::to_string(variant));
  return request;
}

struct Figures {
  long rss_empty_kib = 0, rss_full_kib = 0, rss_watched_kib = 0;
  Started start_empty, restart_full;
  double mutate_empty_ms = 0, mutate_full_ms = 0, last_watcher_ms = 0, admin_p99_ms = 0, admin_p50_ms = 0;
  uint32_t reprojected = 0;
  int watchers = 0;
  bool ok = true;
  std::string failure;
};

void Fail(Figures* f, const std::string& why) {
  if (f->ok) f->failure = why;
  f->ok = false;
}

// Fills the store with `n` admitted sandboxes; returns their sandbox handles.
std::vector<std::string> Prefill(const std::string& db, bool builtin, const Options& o,
                                 const osh::trust::PrivateKey& key) {
  auto store = osh::store::SqliteStore::Open(db);
  if (!store.ok()) return {};
  std::unique_ptr<osh::builtin_driver::BuiltinDriver> driver;
  osh::store::EnvelopePtr shared;
  const std::string body = osh::policy::SerializeDeterministic(osh::bench::PolicyOfSize(o.body_bytes));
  if (builtin) {
    auto created = osh::builtin_driver::BuiltinDriver::Create(
        store->get(), osh::builtin_driver::SigningKey{*osh::trust::PrivateKey::FromPem(key.ToPem()), "authority"},
        /*bind_context=*/false);
    driver = *std::move(created);
    if (!driver->SetPolicy(DefaultPolicy(o.body_bytes, 0)).ok()) return {};
  }
  std::vector<std::string> handles;
  osh::store::ChangeBatch batch;
  const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                          std::chrono::system_clock::now().time_since_epoch()).count();
  for (int i = 0; i < o.sandboxes; ++i) {
    osh::store::SandboxRecord r;
    r.context.set_sandbox_id("sb-" + std::to_string(i));
    r.context.set_user_subject("fleet@example.com");
    handles.push_back(osh::gateway::MintSandboxHandle());
    r.handle_sha256 = osh::policy::Sha256(handles.back());
    if (builtin) {
      r.driver_handle = *driver->AcquireHandle(r.context, "");
      if (!shared) {
        auto response = driver->GetProjection(r.driver_handle, "openshell.sandbox.v1");
        shared = (*store)->envelopes().Intern(response->projection());
      }
      r.envelope = shared;
    } else {
      r.driver_handle = "null:" + std::to_string(i);
      drv::Projection p;
      p.set_surface_id("openshell.sandbox.v1");
      p.set_body(body);
      p.set_policy_digest(osh::policy::Sha256Hex(body));
      p.set_policy_version(1);
      p.set_context_digest(osh::trust::ContextDigest(r.context));
      p.set_issued_at_unix(now);
      p.set_signing_key_id("authority");
      p.set_signature(*key.Sign(osh::trust::SignedBytes(p)));
      r.envelope = (*store)->envelopes().Intern(std::move(p));
    }
    r.verification = osh::store::Verification::kVerified;
    r.signing_key_ids = {"authority"};
    r.admitted_at_unix = r.updated_at_unix = now;
    batch.changes.push_back(osh::store::change::AdmitSandbox{std::move(r)});
    if (batch.changes.size() == 2000 || i + 1 == o.sandboxes) {
      if (!(*store)->Commit(std::move(batch)).ok()) return {};
      batch = {};
    }
  }
  return handles;
}

Figures RunMode(const Options& o, bool builtin) {
  Figures f;
  char dir_template[] = "/tmp/osh-bench-fleet-XXXXXX";
  const std::string dir = mkdtemp(dir_template);
  auto key = osh::trust::PrivateKey::Generate("ed25519");
  { std::ofstream(dir + "/authority.key") << key->ToPem(); }
  ::chmod((dir + "/authority.key").c_str(), 0600);
  { std::ofstream(dir + "/trust.json") << osh::bench::TrustStoreJsonFor("authority", key->PublicKeyPem()); }
  ::chmod((dir + "/trust.json").c_str(), 0600);
  pid_t driver = -1;
  if (!builtin) {
    driver = Spawn({o.driver_binary, "--socket", dir + "/driver.sock", "--policy",
                    std::string(OSH_SOURCE_DIR) + "/examples/policies/github.yaml"},
                   dir + "/driver.log");
    osh::bench::WaitForChannel(dir + "/driver.sock");
  }
  auto argv_for = [&](const std::string& gdir) {
    std::vector<std::string> argv = {o.gateway_binary, "--state-dir", gdir + "/var", "--trust-store", dir + "/trust.json"};
    if (builtin) {
      for (const char* a : {"--builtin-signing-key", "", "--builtin-signing-key-id", "authority",
                            "--builtin-context-binding", "false"}) argv.push_back(a);
      argv[6] = dir + "/authority.key";
    } else {
      for (const std::string& a : {std::string("--driver-socket"), dir + "/driver.sock"}) argv.push_back(a);
    }
    return argv;
  };

  // Baseline: the same gateway with nothing admitted.
  Gateway empty;
  empty.dir = dir + "/empty";
  std::filesystem::create_directories(empty.dir);
  f.start_empty = Start(&empty, argv_for(empty.dir), "");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  f.rss_empty_kib = ProcStatusKiB(empty.pid, "VmRSS");
  if (builtin) {
    auto t0 = Clock::now();
    for (int v : {1, 2}) {  // the first sets the policy; the second is the measured change
      grpc::ClientContext ctx;
      gw::PolicyRevision revision;
      if (v == 2) t0 = Clock::now();
      empty.admin->SetPolicy(&ctx, DefaultPolicy(o.body_bytes, v), &revision);
    }
    f.mutate_empty_ms = MsSince(t0);
  }
  Stop(&empty, SIGTERM);

  // The fleet: fill the store, start, kill -9, and measure the restart.
  Gateway full;
  full.dir = dir + "/full";
  std::filesystem::create_directories(full.dir + "/var");
  ::chmod((full.dir + "/var").c_str(), 0700);
  const auto handles = Prefill(full.dir + "/var/gateway.db", builtin, o, *key);
  if (handles.size() != static_cast<size_t>(o.sandboxes)) {
    Fail(&f, "could not fill the store");
    return f;
  }
  const std::string probe = handles[handles.size() / 2];
  Start(&full, argv_for(full.dir), probe);
  Stop(&full, SIGKILL);
  const size_t passes = ReverificationPasses(full);
  f.restart_full = Start(&full, argv_for(full.dir), probe);
  if (f.restart_full.fetch_ms < 0) Fail(&f, "an admitted sandbox was not fetchable after the restart");
  WaitForReverification(full, passes);  // the restart's background pass
  f.rss_full_kib = ProcStatusKiB(full.pid, "VmRSS");

  // Watchers, spread over 16 connections.
  std::vector<std::unique_ptr<gw::SandboxPolicy::Stub>> stubs;
  for (int c = 0; c < 16; ++c) {
    grpc::ChannelArguments args;
    args.SetInt("grpc.channel_id", c);
    stubs.push_back(gw::SandboxPolicy::NewStub(
        grpc::CreateCustomChannel("unix:" + full.dir + "/var/sandbox.sock", grpc::InsecureChannelCredentials(), args)));
  }
  f.watchers = std::min(o.watchers, o.sandboxes);
  std::vector<std::unique_ptr<Watcher>> watchers;
  for (int i = 0; i < f.watchers; ++i) watchers.push_back(std::make_unique<Watcher>(stubs[i % 16].get(), handles[i]));
  if (!WaitAll(watchers, 1, 60000)) Fail(&f, "not every watcher received its current projection");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  f.rss_watched_kib = ProcStatusKiB(full.pid, "VmRSS");

  if (builtin) {
    // Admin calls keep answering during the fan-out.
    std::atomic<bool> stop{false};
    std::vector<double> admin_ms;
    std::thread prober([&] {
      while (!stop) {
        const auto t0 = Clock::now();
        StatusOk(full.admin.get());
        admin_ms.push_back(MsSince(t0));
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    });
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
    gw::PolicyRevision revision;
    const auto t0 = Clock::now();
    const grpc::Status status = full.admin->SetPolicy(&ctx, DefaultPolicy(o.body_bytes, 1), &revision);
    f.mutate_full_ms = MsSince(t0);
    const auto returned = Clock::now();
    f.reprojected = revision.sandboxes_updated();
    if (!status.ok()) Fail(&f, "SetPolicy failed: " + status.error_message());
    if (f.reprojected != static_cast<uint32_t>(o.sandboxes)) Fail(&f, "not every sandbox was re-projected");
    if (!WaitAll(watchers, 2, 60000)) Fail(&f, "not every watcher received the new projection");
    for (auto& w : watchers) {
      const auto digests = w->digests();
      if (digests.size() != 2 || digests[1] != revision.policy_digest()) Fail(&f, "a watcher saw other than the new digest");
      f.last_watcher_ms = std::max(f.last_watcher_ms,
                                   std::chrono::duration<double, std::milli>(w->last_at() - returned).count());
    }
    stop = true;
    prober.join();
    std::sort(admin_ms.begin(), admin_ms.end());
    if (!admin_ms.empty()) {
      f.admin_p50_ms = admin_ms[admin_ms.size() / 2];
      f.admin_p99_ms = admin_ms[std::min(admin_ms.size() - 1, admin_ms.size() * 99 / 100)];
    }
    drv::Projection fetched;
    if (!Fetch(full.sandbox.get(), handles.back(), &fetched).ok() || fetched.policy_digest() != revision.policy_digest()) {
      Fail(&f, "a fetch after the change did not return the new digest");
    }
  }
  for (auto& w : watchers) w->CancelAndWait();
  Stop(&full, SIGTERM);
  if (driver > 0) {
    ::kill(driver, SIGTERM);
    ::waitpid(driver, nullptr, 0);
  }
  if (o.keep) {
    std::printf("kept %s\n", dir.c_str());
  } else {
    std::filesystem::remove_all(dir);
  }
  return f;
}

void Print(const char* mode, const Options& o, const Figures& f) {
  const double mib = 1.0 / 1024;
  std::printf("mode %s: %d admitted sandboxes, %d-byte policy body, %d watchers\n", mode, o.sandboxes,
              static_cast<int>(o.body_bytes), f.watchers);
  std::printf("  memory:   RSS %.1f MiB with the fleet (after re-verification)   baseline empty gateway %.1f MiB"
              "   ratio %.2f   (%.0f bytes per sandbox above the baseline)\n",
              f.rss_full_kib * mib, f.rss_empty_kib * mib, static_cast<double>(f.rss_full_kib) / f.rss_empty_kib,
              (f.rss_full_kib - f.rss_empty_kib) * 1024.0 / o.sandboxes);
  std::printf("  restart:  admin answering %.0f ms, admitted sandbox fetched %.0f ms after kill -9 and start"
              "   baseline empty start %.0f ms\n",
              f.restart_full.admin_ms, f.restart_full.fetch_ms, f.start_empty.admin_ms);
  std::printf("  watchers: %.1f KiB RSS per stream (%.1f MiB for %d)\n",
              (f.rss_watched_kib - f.rss_full_kib) / static_cast<double>(std::max(f.watchers, 1)),
              (f.rss_watched_kib - f.rss_full_kib) * mib, f.watchers);
  if (f.reprojected > 0 || f.mutate_full_ms > 0) {
    std::printf("  fan-out:  SetPolicy(default) %.0f ms re-projecting %u   baseline same change, empty gateway %.1f ms\n",
                f.mutate_full_ms, f.reprojected, f.mutate_empty_ms);
    std::printf("            last of %d watchers had the new digest %.0f ms after the RPC returned;"
                " admin GetStatus during it p50 %.2f ms p99 %.2f ms\n",
                f.watchers, f.last_watcher_ms, f.admin_p50_ms, f.admin_p99_ms);
  }
  if (!f.ok) std::printf("  FAILED: %s\n", f.failure.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Fleet-scale figures: memory, restart, watch streams and policy fan-out with N admitted sandboxes"};
  Options o;
  std::string mode = "both";
  bool quick = false;
  app.add_option("--sandboxes", o.sandboxes, "admitted sandboxes")->capture_default_str();
  app.add_option("--watchers", o.watchers, "concurrent WatchProjection streams")->capture_default_str();
  app.add_option("--body-bytes", o.body_bytes, "size of the policy body")->capture_default_str();
  app.add_option("--mode", mode, "builtin, remote or both")->check(CLI::IsMember({"builtin", "remote", "both"}))
      ->capture_default_str();
  app.add_flag("--quick", quick, "a small run for the test suite (2000 sandboxes, 200 watchers)");
  app.add_option("--gateway", o.gateway_binary, "policy-gateway binary")->capture_default_str();
  app.add_option("--driver", o.driver_binary, "null-policy-driver binary")->capture_default_str();
  app.add_flag("--keep", o.keep, "keep each mode's temp folder (database, logs) and print its path");
  CLI11_PARSE(app, argc, argv);
  if (quick) {
    o.sandboxes = 2000;
    o.watchers = 200;
  }
  bool ok = true;
  for (bool builtin : {true, false}) {
    if ((builtin && mode == "remote") || (!builtin && mode == "builtin")) continue;
    const Figures f = RunMode(o, builtin);
    Print(builtin ? "builtin (signed, no context binding)" : "remote (context-bound, signed one by one)", o, f);
    ok = ok && f.ok;
  }
  return ok ? 0 : 1;
}
