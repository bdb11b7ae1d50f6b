// Egress decisions and containment on a 200-entry policy.
//  decide: exact-host L4 decisions per second on one core (half allowed, half denied), beside the floor
//          of any decision measured in the same run: one absl::flat_hash_set lookup of the
//          (host, port, binary) triple. Also REST decisions, and heap allocations per decision
//          (counted by this program's operator new).
//  containment: one check of a 200-entry candidate against a 200-entry ceiling, in milliseconds, beside
//          validating both policies (what every SetPolicy pays already).
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <tuple>
#include <vector>

#include <CLI/CLI.hpp>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "bench/bench_support.h"
#include "policy/containment.h"
#include "policy/egress.h"
#include "policy/validation.h"

// Counting allocations: this program's operator new and delete are malloc and free.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

namespace {
std::atomic<uint64_t> g_allocations{0};
}  // namespace

void* operator new(std::size_t size) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace {

using openshell::sandbox::v1::SandboxPolicy;
using osh::policy::EgressDecision;
using osh::policy::EgressIntent;
using osh::policy::EgressPolicy;

// Entry i: svc<i>.example.com:443 for /usr/bin/tool<i> and /opt/app<i>/bin/*; every 10th entry also
// *.zone<i>.example.com; every 4th a REST API with rules and a deny rule. `wide` makes the ceiling
// version: more ports, globbed binaries, wider rules.
SandboxPolicy MakePolicy(int entries, bool wide) {
  SandboxPolicy policy;
  policy.set_version(1);
  for (int i = 0; i < entries; ++i) {
    auto& entry = (*policy.mutable_network_policies())[absl::StrCat("entry_", 1000 + i)];
    entry.set_name(absl::StrCat("entry ", i));
    entry.add_binaries()->set_path(wide ? "/usr/bin/*" : absl::StrCat("/usr/bin/tool", i));
    entry.add_binaries()->set_path(absl::StrCat("/opt/app", i, "/bin/*"));
    auto* ep = entry.add_endpoints();
    ep->set_host(absl::StrCat("svc", i, ".example.com"));
    ep->add_ports(443);
    if (wide) ep->add_ports(8443);
    if (i % 10 == 0) {
      auto* zone = entry.add_endpoints();
      zone->set_host(absl::StrCat(wide ? "**" : "*", ".zone", i, ".example.com"));
      zone->set_port(443);
    }
    if (i % 4 == 0) {
      auto* api = entry.add_endpoints();
      api->set_host(absl::StrCat("api", i, ".example.com"));
      api->set_port(443);
      api->set_protocol("rest");
      api->set_enforcement("enforce");
      auto* get = api->add_rules()->mutable_allow();
      get->set_method("GET");
      get->set_path(wide ? "/**" : "/repos/*/issues");
      auto* post = api->add_rules()->mutable_allow();
      post->set_method("POST");
      post->set_path(wide ? "/repos/**" : "/repos/acme/issues");
      auto* deny = api->add_deny_rules();
      deny->set_method("DELETE");
      deny->set_path("/**");
    }
  }
  return policy;
}

template <typename F>
double PerSecond(double seconds, size_t batch, F&& op) {
  uint64_t calls = 0;
  const auto start = std::chrono::steady_clock::now();
  const auto end = start + std::chrono::duration<double>(seconds);
  std::chrono::steady_clock::time_point now;
  do {
    op();
    calls += batch;
    now = std::chrono::steady_clock::now();
  } while (now < end);
  return static_cast<double>(calls) / std::chrono::duration<double>(now - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Egress decisions/s and containment time on a 200-entry policy, each beside its baseline"};
  double seconds = 1.0;
  int rounds = 5;
  int entries = 200;
  app.add_option("--seconds", seconds, "length of each measured decision round")->capture_default_str();
  app.add_option("--rounds", rounds, "rounds of each (alternating); medians are reported")->capture_default_str();
  app.add_option("--entries", entries, "network_policies entries in each policy")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  const SandboxPolicy policy = MakePolicy(entries, false);
  const SandboxPolicy ceiling = MakePolicy(entries, true);
  if (!osh::policy::ValidatePolicy(policy).ok() || !osh::policy::ValidatePolicy(ceiling).ok()) {
    std::fprintf(stderr, "bench_decide: generated policy is invalid\n");
    return 1;
  }
  const auto compiled = EgressPolicy::Compile(policy);

  // Connection intents: even ones allowed (entry's host and binary), odd ones denied (wrong binary).
  std::vector<EgressIntent> intents;
  for (int i = 0; i < 1024; ++i) {
    const int e = i % entries;
    EgressIntent intent;
    intent.host = absl::StrCat("svc", e, ".example.com");
    intent.port = 443;
    intent.binary = i % 2 == 0 ? absl::StrCat("/usr/bin/tool", e) : absl::StrCat("/usr/bin/tool", (e + 1) % entries);
    intents.push_back(std::move(intent));
  }
  std::vector<EgressIntent> rest_intents;
  for (int i = 0; i < 1024; ++i) {
    const int e = (i % (entries / 4)) * 4;
    EgressIntent intent;
    intent.host = absl::StrCat("api", e, ".example.com");
    intent.port = 443;
    intent.binary = absl::StrCat("/usr/bin/tool", e);
    intent.request = osh::policy::EgressRequest{i % 3 == 0 ? "DELETE" : "GET", absl::StrCat("/repos/org", i, "/issues"), {}};
    rest_intents.push_back(std::move(intent));
  }
  // The floor: one hash-set lookup of the (host, port, binary) triple.
  absl::flat_hash_set<std::tuple<absl::string_view, uint32_t, absl::string_view>> allowed_triples;
  for (size_t i = 0; i < intents.size(); i += 2) allowed_triples.insert({intents[i].host, intents[i].port, intents[i].binary});

  // Correctness first: the evaluator agrees with the triple set on every connection intent.
  EgressDecision decision;
  for (const auto& intent : intents) {
    compiled->Decide(intent, &decision);
    const bool allowed = decision.verdict == osh::policy::EgressVerdict::kAllow;
    if (allowed != allowed_triples.contains({intent.host, intent.port, intent.binary})) {
      std::fprintf(stderr, "bench_decide: wrong decision for %s\n", intent.host.c_str());
      return 1;
    }
  }

  std::vector<double> decide, floor, rest;
  uint64_t sink = 0;
  uint64_t allocations_before = 0, decisions_measured = 0, allocations_during = 0;
  for (int r = 0; r < rounds; ++r) {
    allocations_before = g_allocations.load();
    uint64_t made = 0;
    decide.push_back(PerSecond(seconds, intents.size(), [&] {
      for (const auto& intent : intents) {
        compiled->Decide(intent, &decision);
        sink += static_cast<uint64_t>(decision.verdict);
      }
      made += intents.size();
    }));
    allocations_during += g_allocations.load() - allocations_before;
    decisions_measured += made;
    floor.push_back(PerSecond(seconds, intents.size(), [&] {
      for (const auto& intent : intents) sink += allowed_triples.contains({intent.host, intent.port, intent.binary});
    }));
    rest.push_back(PerSecond(seconds, rest_intents.size(), [&] {
      for (const auto& intent : rest_intents) {
        compiled->Decide(intent, &decision);
        sink += static_cast<uint64_t>(decision.verdict);
      }
    }));
  }
  const double decide_rate = osh::bench::Median(decide), floor_rate = osh::bench::Median(floor);
  std::printf("L4 exact-host decisions/s (1 core, %d entries): %.0f\n", entries, decide_rate);
  std::printf("  floor: hash-set lookup of (host, port, binary): %.0f/s   ratio %.3f\n", floor_rate, decide_rate / floor_rate);
  std::printf("  heap allocations per decision: %.4f (%llu over %llu decisions; the deny half writes a reason)\n",
              static_cast<double>(allocations_during) / static_cast<double>(decisions_measured),
              static_cast<unsigned long long>(allocations_during), static_cast<unsigned long long>(decisions_measured));
  std::printf("REST decisions/s (GET allowed, DELETE denied by a deny rule): %.0f   ratio to floor %.3f\n",
              osh::bench::Median(rest), osh::bench::Median(rest) / floor_rate);

  // Containment: the candidate against its wider ceiling (inside), timed per check.
  std::vector<double> check_ms, validate_ms;
  for (int r = 0; r < rounds; ++r) {
    auto start = std::chrono::steady_clock::now();
    const auto result = osh::policy::CheckContainment(policy, ceiling);
    check_ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
    if (result.verdict != osh::policy::Containment::kInside) {
      std::fprintf(stderr, "bench_decide: expected inside, got: %s\n", result.detail.c_str());
      return 1;
    }
    start = std::chrono::steady_clock::now();
    const bool valid = osh::policy::ValidatePolicy(policy).ok() && osh::policy::ValidatePolicy(ceiling).ok();
    validate_ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
    sink += valid;
  }
  const auto outside = osh::policy::CheckContainment(ceiling, policy);  // the wide one is not inside
  std::printf("containment check, %d-entry candidate inside a %d-entry ceiling: %.2f ms\n", entries, entries,
              osh::bench::Median(check_ms));
  std::printf("  baseline: validating both policies: %.2f ms   ratio %.2f\n", osh::bench::Median(validate_ms),
              osh::bench::Median(check_ms) / osh::bench::Median(validate_ms));
  std::printf("  reverse (ceiling as candidate): %s\n",
              outside.verdict == osh::policy::Containment::kOutside ? "outside, as expected" : "UNEXPECTED");
  std::fprintf(stderr, "(%llu)\n", static_cast<unsigned long long>(sink % 2));
  return outside.verdict == osh::policy::Containment::kOutside ? 0 : 1;
}
