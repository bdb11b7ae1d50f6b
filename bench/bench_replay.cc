// Replay of recorded egress intents (policyctl decide --replay) on one core: JSON lines read from a file,
// parsed and decided against one 200-entry policy, and against two (a changed copy), beside the floor
// measured in the same run — the evaluator alone deciding the same intents already in memory — and
// protobuf's JSON parser reading the same lines (what the replay would cost without simdjson).
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <vector>

#include <CLI/CLI.hpp>
#include <google/protobuf/util/json_util.h>

#include "absl/strings/str_cat.h"
#include "bench/bench_support.h"
#include "openshell/policy/gateway/v1/gateway.pb.h"
#include "policy/egress.h"
#include "policy/replay.h"

namespace {

using openshell::sandbox::v1::SandboxPolicy;

SandboxPolicy MakePolicy(int entries, int skip) {
  SandboxPolicy policy;
  policy.set_version(1);
  for (int i = 0; i < entries; ++i) {
    if (skip > 0 && i % skip == 0) continue;  // the second policy drops every skip-th entry
    auto& entry = (*policy.mutable_network_policies())[absl::StrCat("entry_", 1000 + i)];
    entry.add_binaries()->set_path(absl::StrCat("/usr/bin/tool", i));
    auto* ep = entry.add_endpoints();
    ep->set_host(absl::StrCat("svc", i, ".example.com"));
    ep->add_ports(443);
    if (i % 4 == 0) {
      ep->set_protocol("rest");
      ep->set_enforcement("enforce");
      auto* rule = ep->add_rules()->mutable_allow();
      rule->set_method("GET");
      rule->set_path("/api/**");
    }
  }
  return policy;
}

// Intent i: entry i % entries (its binary, or a stranger's every 3rd time); REST for REST entries.
std::string IntentLine(int i, int entries) {
  const int e = i % entries;
  std::string line = absl::StrCat(R"({"host":"svc)", e, R"(.example.com","port":443,"binary":"/usr/bin/)",
                                  i % 3 == 0 ? "other" : absl::StrCat("tool", e), R"(","ancestors":["/usr/bin/bash"])");
  if (e % 4 == 0) absl::StrAppend(&line, R"(,"request":{"method":"GET","path":"/api/v1/items/)", i, R"("})");
  line += "}\n";
  return line;
}

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Replay throughput: JSON-lines intents decided against one and two policies, one core"};
  int intents = 1'000'000, entries = 200, rounds = 3;
  app.add_option("--intents", intents, "intents in the replayed file")->check(CLI::Range(1, 100'000'000));
  app.add_option("--entries", entries, "entries of the policy")->check(CLI::Range(4, 1000));
  app.add_option("--rounds", rounds, "rounds; the median is reported")->check(CLI::Range(1, 100));
  CLI11_PARSE(app, argc, argv);

  const auto dir = std::filesystem::temp_directory_path() / absl::StrCat("bench_replay.", getpid());
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "intents.jsonl").string();
  std::vector<std::string> lines;
  {
    std::ofstream out(path);
    for (int i = 0; i < intents; ++i) {
      lines.push_back(IntentLine(i, entries));
      out << lines.back();
    }
  }
  const auto from = osh::policy::EgressPolicy::Compile(MakePolicy(entries, 0));
  const auto to = osh::policy::EgressPolicy::Compile(MakePolicy(entries, 20));  // 10 of 200 entries gone

  // The floor: the same intents parsed beforehand, decided by the evaluator alone.
  std::vector<osh::policy::EgressIntent> parsed(static_cast<size_t>(intents));
  for (int i = 0; i < intents; ++i) {
    if (!osh::policy::ParseIntentLine(lines[i], "bench", i + 1, &parsed[i]).ok()) return 1;
  }
  std::vector<double> floor, one, two, protobuf_json;
  uint64_t changed = 0;
  for (int r = 0; r < rounds; ++r) {
    osh::policy::EgressDecision decision;
    size_t allowed = 0;
    auto t = std::chrono::steady_clock::now();
    for (const auto& intent : parsed) {
      from->Decide(intent, &decision);
      allowed += decision.verdict == osh::policy::EgressVerdict::kAllow;
    }
    floor.push_back(intents / Seconds(t));
    if (allowed == 0) return 1;

    t = std::chrono::steady_clock::now();
    auto report = osh::policy::ReplayFile(path, *from, nullptr);
    one.push_back(intents / Seconds(t));
    if (!report.ok() || report->intents != static_cast<uint64_t>(intents)) return 1;

    t = std::chrono::steady_clock::now();
    report = osh::policy::ReplayFile(path, *from, to.get());
    two.push_back(intents / Seconds(t));
    if (!report.ok()) return 1;
    changed = report->changed;

    // protobuf's JSON parser on a tenth of the lines (it is slow), scaled.
    openshell::policy::gateway::v1::EvaluateEgressRequest request;
    const int sample = std::max(1, intents / 10);
    t = std::chrono::steady_clock::now();
    for (int i = 0; i < sample; ++i) {
      request.Clear();
      if (!google::protobuf::util::JsonStringToMessage(lines[i], &request).ok()) return 1;
    }
    protobuf_json.push_back(sample / Seconds(t));
  }
  std::filesystem::remove_all(dir);

  const double f = osh::bench::Median(floor), a = osh::bench::Median(one), b = osh::bench::Median(two),
               p = osh::bench::Median(protobuf_json);
  std::printf("replay of %d intents (%d-entry policy), one core, median of %d rounds\n", intents, entries, rounds);
  std::printf("  floor: evaluator alone, intents in memory   %12.0f intents/s\n", f);
  std::printf("  replay against one policy                   %12.0f intents/s  (%.2fx the floor)\n", a, a / f);
  std::printf("  replay against two (%llu decisions change)  %12.0f intents/s  (%.2fx the floor)\n",
              static_cast<unsigned long long>(changed), b, b / f);
  std::printf("  protobuf JSON parse alone (reference)       %12.0f lines/s    (%.2fx the floor)\n", p, p / f);
  return 0;
}
