// The verifiable log's integration from a real SQLite store (issue 27: "integration throughput on SQLite
// >= 20,000 entries/s, entries pre-appended"). A store in a temp folder gets `--entries` audit events of an
// admission's size appended (from `--appenders` threads, so group commit shares their flushes; not timed);
// a LogSequencer opened on that store before the appends (as a running gateway's is) then integrates
// them all in one IntegrateOnce — read from the store page by page, each event's link to the one before
// checked, its leaf and interior hashes, the tiles and entry bundles written (fsync'd, as a gateway does)
// and a checkpoint signed. Baseline in the same round: the same events only read from the store
// (AuditLog::ListAuditEvents, the same pages), which the integration does first. Each round appends
// `--entries` more and integrates them into the growing tree; medians over the rounds.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "absl/strings/str_cat.h"
#include "bench/bench_support.h"
#include "gateway/core/log_sequencer.h"
#include "store/open_store.h"
#include "trust/keys.h"

namespace {

// An audit event of an admission's size (~550 canonical bytes).
osh::store::AuditEvent AdmissionEvent(int64_t n) {
  osh::store::AuditEvent event;
  event.type = osh::trust::audit::Type::kAdmission;
  event.outcome = osh::trust::audit::Outcome::kOk;
  event.sandbox_id = absl::StrCat("sandbox-", n);
  event.surface_id = "openshell.sandbox.v1";
  event.policy_digest = std::string(64, 'a');
  event.policy_version = 1;
  event.key_ids = {"authority-2026"};
  event.reason = "admitted: projection verified (1 signature), inside the ceiling in force";
  event.audit_context = {{"driver", "bench"}, {"tenant", "bench-tenant"}, {"request", std::string(180, 'r')}};
  event.actor = "uid:0";
  return event;
}

// Appends `count` events from `threads` threads; false on any error.
bool Append(osh::store::AuditLog& log, int64_t first, int64_t count, int threads) {
  std::atomic<int64_t> next{first};
  std::atomic<bool> ok{true};
  std::vector<std::thread> appenders;
  for (int t = 0; t < threads; ++t) {
    appenders.emplace_back([&] {
      for (int64_t n = next.fetch_add(1); n < first + count; n = next.fetch_add(1)) {
        if (!log.AppendAudit(AdmissionEvent(n)).ok()) ok = false;
      }
    });
  }
  for (auto& a : appenders) a.join();
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bench_log_sqlite: the verifiable log integrating pre-appended audit events from a SQLite store"};
  int64_t entries = 50000;
  int appenders = 16, rounds = 3;
  uint32_t page = 1000;
  bool no_sync = false;
  app.add_option("--entries", entries, "audit events appended (then integrated) per round")
      ->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--appenders", appenders, "threads appending the events (not timed)")
      ->capture_default_str()->check(CLI::Range(1, 256));
  app.add_option("--rounds", rounds, "rounds (the median is reported)")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--page", page, "events the sequencer reads from the store at a time (the gateway's: 1000)")
      ->capture_default_str()->check(CLI::Range(1, 100000));
  app.add_flag("--no-sync", no_sync, "do not fsync tiles and checkpoints (the gateway always does)");
  CLI11_PARSE(app, argc, argv);

  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / absl::StrCat("bench_log_sqlite.", ::getpid());
  std::filesystem::create_directories(dir);
  int status = 0;
  {
    osh::store::StoreOptions store_options;
    store_options.exclusive = true;
    auto db = osh::store::OpenStore(absl::StrCat("sqlite:", (dir / "state" / "gateway.db").string()), store_options);
    if (!db.ok()) {
      std::fprintf(stderr, "store: %s\n", std::string(db.status().message()).c_str());
      return 1;
    }
    auto key = osh::trust::PrivateKey::Generate("ed25519");
    if (!key.ok()) return 1;
    osh::gateway::LogSequencerOptions options;
    options.dir = (dir / "log").string();
    options.origin = "bench.example/policy-gateway";
    options.signing_key_pem = key->ToPem();
    options.page = page;
    options.sync = !no_sync;
    auto sequencer = osh::gateway::LogSequencer::Open(&(*db)->audit(), options);
    if (!sequencer.ok()) {
      std::fprintf(stderr, "sequencer: %s\n", std::string(sequencer.status().message()).c_str());
      return 1;
    }
    std::vector<double> read_rates, integrate_rates;
    double append_seconds = 0;
    bool ok = true;
    for (int r = 0; r < rounds && ok; ++r) {
      const uint64_t before = (*db)->audit().AuditChainHead().seq;
      append_seconds += osh::bench::SecondsOf([&] { ok &= Append((*db)->audit(), static_cast<int64_t>(before), entries, appenders); });
      // Baseline: the same events read from the store, page by page.
      int64_t read = 0;
      const double read_seconds = osh::bench::SecondsOf([&] {
        for (uint64_t after = before;;) {
          auto events = (*db)->audit().ListAuditEvents(after, page);
          if (!events.ok()) {
            ok = false;
            return;
          }
          if (events->empty()) return;
          read += static_cast<int64_t>(events->size());
          after = events->back().seq;
        }
      });
      ok &= read == entries;
      int64_t size = 0;
      const double integrate_seconds = osh::bench::SecondsOf([&] {
        auto integrated = (*sequencer)->IntegrateOnce();
        ok &= integrated.ok();
        size = integrated.ok() ? *integrated : 0;
      });
      ok &= size == static_cast<int64_t>(before) + entries;
      read_rates.push_back(static_cast<double>(entries) / read_seconds);
      integrate_rates.push_back(static_cast<double>(entries) / integrate_seconds);
      std::printf("round %d: tree %lld -> %lld entries; read %.0f /s, integrated %.0f /s\n", r + 1,
                  static_cast<long long>(before), static_cast<long long>(size), read_rates.back(),
                  integrate_rates.back());
    }
    const double read = osh::bench::Median(read_rates), integrate = osh::bench::Median(integrate_rates);
    std::printf("log on SQLite: %lld events appended per round (%d appenders, %.1f s in all, not timed), %d round(s), "
                "page %u, tiles %s\n",
                static_cast<long long>(entries), appenders, append_seconds, rounds, page,
                no_sync ? "not fsync'd" : "fsync'd");
    std::printf("baseline    the events read from the store (ListAuditEvents)   %10.0f entries/s\n", read);
    std::printf("integrate   read + chain check + tree + tiles + checkpoint    %10.0f entries/s   ratio %.3f   (target >= 20000/s)\n",
                integrate, integrate / read);
    if (!ok) {
      std::printf("ERROR: an operation failed\n");
      status = 1;
    }
  }
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
  return status;
}
