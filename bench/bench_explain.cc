// ExplainChange on 200-entry policies (issue 29's figures): two policies that differ in 10 entries
// (target <= 50 ms), identical ones (<= 5 ms), and two with nothing in common (<= 500 ms). Each figure is
// the median of --rounds runs, printed beside a baseline measured in the same run on the same pair: one
// containment check (CheckContainment of the new policy in the old one: the one-direction, first-witness
// question explain answers completely and both ways).
#include <chrono>
#include <cstdio>
#include <vector>

#include <CLI/CLI.hpp>

#include "absl/strings/str_cat.h"
#include "bench/bench_support.h"
#include "policy/containment.h"
#include "policy/explain.h"
#include "policy/validation.h"

namespace {

using openshell::sandbox::v1::SandboxPolicy;

// Entry i of family `f`: svc<i>.<f>.example.com:443 for /usr/bin/tool<i> and /opt/app<i>/bin/*; every 10th
// also *.zone<i>.<f>.example.com; every 4th a REST API (GET and POST rules, a DELETE deny rule).
void AddEntry(SandboxPolicy* policy, int i, const std::string& family, bool variant) {
  auto& entry = (*policy->mutable_network_policies())[absl::StrCat(family, "_", 1000 + i)];
  entry.add_binaries()->set_path(absl::StrCat("/usr/bin/tool", i));
  entry.add_binaries()->set_path(absl::StrCat("/opt/app", i, "/bin/*"));
  auto* ep = entry.add_endpoints();
  ep->set_host(absl::StrCat("svc", i, ".", family, ".example.com"));
  ep->add_ports(443);
  if (variant) ep->add_ports(8443);
  if (i % 10 == 0) {
    auto* zone = entry.add_endpoints();
    zone->set_host(absl::StrCat("*.zone", i, ".", family, ".example.com"));
    zone->set_port(443);
  }
  if (i % 4 == 0) {
    auto* api = entry.add_endpoints();
    api->set_host(absl::StrCat("api", i, ".", family, ".example.com"));
    api->set_port(443);
    api->set_protocol("rest");
    api->set_enforcement("enforce");
    auto* get = api->add_rules()->mutable_allow();
    get->set_method("GET");
    get->set_path(variant ? "/repos/**" : "/repos/*/issues");
    auto* post = api->add_rules()->mutable_allow();
    post->set_method("POST");
    post->set_path("/repos/acme/issues");
    auto* deny = api->add_deny_rules();
    deny->set_method("DELETE");
    deny->set_path("/**");
  }
}

// `entries` entries of `family`; the entries whose index is in [changed_from, changed_from + changed) are
// the variant (an extra port, a wider GET rule).
SandboxPolicy MakePolicy(int entries, const std::string& family, int changed_from = 0, int changed = 0) {
  SandboxPolicy policy;
  policy.set_version(1);
  policy.mutable_filesystem()->add_read_only("/usr");
  policy.mutable_filesystem()->add_read_write("/tmp");
  for (int i = 0; i < entries; ++i) AddEntry(&policy, i, family, i >= changed_from && i < changed_from + changed);
  return policy;
}

struct Figure {
  double explain_ms = 0, containment_ms = 0;
  size_t added = 0, removed = 0, unknown = 0;
};

Figure Measure(const SandboxPolicy& from, const SandboxPolicy& to, int rounds) {
  std::vector<double> explain, containment;
  Figure f;
  for (int r = 0; r < rounds; ++r) {
    auto start = std::chrono::steady_clock::now();
    const auto e = osh::policy::ExplainChange(from, to);
    explain.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
    f.added = e.added.size();
    f.removed = e.removed.size();
    f.unknown = e.unknown.size();
    start = std::chrono::steady_clock::now();
    (void)osh::policy::CheckContainment(to, from);
    containment.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  f.explain_ms = osh::bench::Median(explain);
  f.containment_ms = osh::bench::Median(containment);
  return f;
}

void Print(const char* what, const Figure& f, double target_ms) {
  std::printf("%s: %.2f ms (target <= %.0f ms; %zu added, %zu removed, %zu unknown classes)\n", what, f.explain_ms,
              target_ms, f.added, f.removed, f.unknown);
  std::printf("  baseline: one containment check of the same pair: %.2f ms   ratio %.2f\n", f.containment_ms,
              f.explain_ms / f.containment_ms);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ExplainChange on 200-entry policies (10 entries differ, identical, nothing in common), each beside "
               "one containment check of the same pair"};
  int rounds = 5;
  int entries = 200;
  app.add_option("--rounds", rounds, "runs of each; medians are reported")->capture_default_str();
  app.add_option("--entries", entries, "network_policies entries in each policy")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (entries < 20) entries = 20;

  const SandboxPolicy base = MakePolicy(entries, "a");
  const SandboxPolicy ten = MakePolicy(entries, "a", entries / 2, 10);
  const SandboxPolicy other = MakePolicy(entries, "b");
  for (const auto* p : {&base, &ten, &other}) {
    if (!osh::policy::ValidatePolicy(*p).ok()) {
      std::fprintf(stderr, "bench_explain: generated policy is invalid\n");
      return 1;
    }
  }
  const Figure differ = Measure(base, ten, rounds);
  const Figure same = Measure(base, base, rounds);
  const Figure disjoint = Measure(base, other, rounds);
  Print(absl::StrCat(entries, " vs ", entries, " entries, 10 differ").c_str(), differ, 50);
  Print(absl::StrCat(entries, " vs ", entries, " entries, identical").c_str(), same, 5);
  Print(absl::StrCat(entries, " vs ", entries, " entries, nothing in common").c_str(), disjoint, 500);
  // Sanity: the 10 variants widen (an extra port each, wider GETs), identical is empty, disjoint is both ways.
  const bool sane = differ.added > 0 && differ.removed == 0 && same.added + same.removed + same.unknown == 0 &&
                    disjoint.added > 0 && disjoint.removed > 0;
  if (!sane) std::fprintf(stderr, "bench_explain: UNEXPECTED class counts\n");
  return sane ? 0 : 1;
}
