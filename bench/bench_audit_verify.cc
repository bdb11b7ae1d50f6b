// Offline audit verification throughput (`policyctl audit verify`): parse each exported JSON line,
// check its seq and link, recompute its hash; against the irreducible part measured in the same run:
// recomputing the chain's hashes from events already in memory. Single thread, median of rounds.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <sstream>
#include <vector>

#include <CLI/CLI.hpp>

#include "bench/bench_support.h"
#include "trust/audit_chain.h"

namespace {

using osh::trust::AuditEvent;

std::vector<AuditEvent> MakeChain(int n) {
  std::vector<AuditEvent> events;
  events.reserve(n);
  std::string prev = osh::trust::kGenesisHash;
  for (int i = 1; i <= n; ++i) {
    AuditEvent e;
    e.seq = i;
    e.time_unix_ms = 1763800000000 + i;
    e.type = i % 3 == 0 ? osh::trust::audit::Type::kRefresh : osh::trust::audit::Type::kAdmission;
    e.sandbox_id = "sb-" + std::to_string(i);
    e.surface_id = "openshell.sandbox.v1";
    e.policy_digest = std::string(64, 'a');
    e.policy_version = i;
    e.key_ids = {"authority"};
    e.outcome = osh::trust::audit::Outcome::kOk;
    e.reason = "verification=verified";
    e.audit_context = {{"driver", "example-signing-driver"}, {"policy_file", "alice@example.com.yaml"}};
    e.prev_hash = prev;
    e.hash = osh::trust::ChainHash(prev, e);
    prev = e.hash;
    events.push_back(std::move(e));
  }
  return events;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bench_audit_verify: offline audit chain verification against recomputing the hashes alone"};
  int events = 100000, rounds = 3;
  app.add_option("--events", events, "chain length")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--rounds", rounds, "rounds (the median is reported)")->capture_default_str()->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);

  const auto chain = MakeChain(events);
  std::string exported;
  for (const auto& e : chain) exported += osh::trust::ToJsonLine(e) + "\n";

  std::vector<double> hash_rates, verify_rates;
  bool all_ok = true;
  for (int r = 0; r < rounds; ++r) {
    std::string prev = osh::trust::kGenesisHash;
    hash_rates.push_back(events / osh::bench::SecondsOf([&] {
      for (const auto& e : chain) {
        prev = osh::trust::ChainHash(prev, e);
        all_ok &= prev == e.hash;
      }
    }));
    osh::trust::ChainVerdict verdict;
    verify_rates.push_back(events / osh::bench::SecondsOf([&] {
      std::istringstream in(exported);
      verdict = osh::trust::VerifyExport(in);
    }));
    all_ok &= verdict.whole && verdict.events == static_cast<uint64_t>(events);
  }
  const double hash = osh::bench::Median(hash_rates), verify = osh::bench::Median(verify_rates);
  std::printf("audit chain of %d events, %zu bytes exported (%.0f bytes/event), median of %d\n", events,
              exported.size(), static_cast<double>(exported.size()) / events, rounds);
  std::printf("baseline  recompute hashes (in memory)   %10.0f events/s\n", hash);
  std::printf("verify    parse + link + hash (export)   %10.0f events/s   ratio %.3f\n", verify, verify / hash);
  if (!all_ok) {
    std::printf("ERROR: a chain did not verify\n");
    return 1;
  }
  return 0;
}
