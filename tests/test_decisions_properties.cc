// Properties that tie egress decisions and containment together, on random policies drawn from a small
// vocabulary of hosts, binaries, ports, methods and paths (fixed seed: failures reproduce).
//  - If containment says a candidate is inside a ceiling, every intent drawn from the candidate's own
//    rules that the candidate allows, the ceiling allows.
//  - A policy is inside itself (or undecided, never outside).
//  - If containment says outside, the widening names an intent the ceiling refuses.
#include <random>

#include <catch2/catch.hpp>

#include "absl/strings/str_cat.h"
#include "policy/containment.h"
#include "policy/egress.h"
#include "policy/glob.h"
#include "policy/validation.h"
#include "tests/random_policy.h"

namespace {

using openshell::sandbox::v1::SandboxPolicy;
using osh::policy::Containment;
using osh::policy::EgressIntent;
using osh::policy::EgressPolicy;
using osh::policy::EgressVerdict;
using osh::test::Chance;
using osh::test::IntentsFrom;
using osh::test::RandomPolicy;

bool Allows(EgressVerdict v) { return v == EgressVerdict::kAllow || v == EgressVerdict::kAudit; }

}  // namespace

TEST_CASE("decisions and containment agree: inside means every allowed intent stays allowed", "[policy][containment][property]") {
  std::mt19937 rng(20261127);
  int inside = 0, outside = 0, unknown = 0, intents_checked = 0;
  for (int round = 0; round < 3000; ++round) {
    const SandboxPolicy candidate = RandomPolicy(rng);
    SandboxPolicy ceiling = RandomPolicy(rng);
    if (Chance(rng, 0.5)) {
      // A ceiling made from the candidate plus more entries, some of its patterns widened: often inside.
      SandboxPolicy grown = candidate;
      for (auto& [key, entry] : *grown.mutable_network_policies()) {
        if (Chance(rng, 0.3)) entry.mutable_binaries(0)->set_path("/usr/**");
        if (Chance(rng, 0.3)) entry.mutable_endpoints(0)->set_host("**.example.com");
      }
      for (const auto& [key, entry] : ceiling.network_policies()) (*grown.mutable_network_policies())["z" + key] = entry;
      ceiling = grown;
    }
    REQUIRE(osh::policy::ValidatePolicy(candidate).ok());
    REQUIRE(osh::policy::ValidatePolicy(ceiling).ok());
    const auto result = osh::policy::CheckContainment(candidate, ceiling);
    const auto cand = EgressPolicy::Compile(candidate);
    const auto ceil = EgressPolicy::Compile(ceiling);
    if (result.verdict == Containment::kInside) {
      ++inside;
      for (const EgressIntent& intent : IntentsFrom(rng, candidate, 40)) {
        const auto by_candidate = cand->Decide(intent);
        if (!Allows(by_candidate.verdict)) continue;
        ++intents_checked;
        const auto by_ceiling = ceil->Decide(intent);
        INFO("round " << round << " host " << intent.host << ":" << intent.port << " binary " << intent.binary
                      << (intent.request ? " " + intent.request->method + " " + intent.request->path : std::string())
                      << " candidate: " << by_candidate.rule << by_candidate.endpoint << " ceiling: " << by_ceiling.reason);
        REQUIRE(by_ceiling.verdict == EgressVerdict::kAllow);
      }
    } else if (result.verdict == Containment::kOutside) {
      ++outside;
      CHECK(result.detail.find("but not by the ceiling") != std::string::npos);
    } else {
      ++unknown;
      if (getenv("OSH_SHOW_UNKNOWN") != nullptr) {
        WARN(result.detail << "\nCANDIDATE " << candidate.ShortDebugString() << "\nCEILING " << ceiling.ShortDebugString());
      }
    }
    // A policy is never outside itself.
    CHECK(osh::policy::CheckContainment(candidate, candidate).verdict != Containment::kOutside);
  }
  INFO("inside " << inside << " outside " << outside << " unknown " << unknown << " intents " << intents_checked);
  CHECK(inside >= 50);
  CHECK(outside >= 200);
  CHECK(intents_checked >= 1000);
  // The undecided share stays under 12.5% (10.7% at this seed, where one REST endpoint in ten has a path;
  // 6.8% before random endpoints had paths: a path covers part of another, which is not decided).
  CHECK(unknown * 8 < inside + outside + unknown);
}
