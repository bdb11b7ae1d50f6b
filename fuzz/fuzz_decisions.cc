// libFuzzer target: egress decisions and containment. The input is a policy file, then a line "---", then
// a second policy file, then "---", then intent lines "host port binary [method path]".
// Invariants (abort on violation): never crashes; a decision is deterministic and names a matched policy
// exactly when it allows, audits or denies at L7; a policy is never outside itself, and checking it is
// deterministic; when the second policy is found inside the first, every intent the second allows the
// first allows too (unless the first cannot decide it). ExplainChange (policy/explain.h) between the two:
// symmetric (A->B added is B->A removed), nothing for a policy against itself, and every
// added network witness allowed by the second policy and denied by the first.
#include <cstdint>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "policy/containment.h"
#include "policy/egress.h"
#include "policy/explain.h"
#include "policy/policy_file.h"

namespace {

using osh::policy::EgressVerdict;

std::vector<osh::policy::EgressIntent> Intents(const std::string& text) {
  std::vector<osh::policy::EgressIntent> out;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    std::istringstream in{std::string(line)};
    osh::policy::EgressIntent intent;
    std::string method, path;
    if (!(in >> intent.host >> intent.port >> intent.binary)) continue;
    if (in >> method >> path) intent.request = osh::policy::EgressRequest{method, path, {}};
    out.push_back(std::move(intent));
    if (out.size() == 16) break;
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> parts = absl::StrSplit(input, "\n---\n");
  if (parts.size() < 3) return 0;
  auto ceiling = osh::policy::ParsePolicyText(parts[0], "ceiling.yaml");
  auto candidate = osh::policy::ParsePolicyText(parts[1], "candidate.yaml");
  if (!ceiling.ok() || !candidate.ok()) return 0;
  const auto ceiling_eval = osh::policy::EgressPolicy::Compile(*ceiling);
  const auto candidate_eval = osh::policy::EgressPolicy::Compile(*candidate);
  const auto inside = osh::policy::CheckContainment(*candidate, *ceiling);
  if (osh::policy::CheckContainment(*candidate, *ceiling).detail != inside.detail) std::abort();
  if (osh::policy::CheckContainment(*candidate, *candidate).verdict == osh::policy::Containment::kOutside) std::abort();
  const auto change = osh::policy::ExplainChange(*ceiling, *candidate);
  const auto back = osh::policy::ExplainChange(*candidate, *ceiling);
  if (change.added.size() != back.removed.size() || change.removed.size() != back.added.size()) std::abort();
  if (!osh::policy::ExplainChange(*candidate, *candidate).empty()) std::abort();
  for (const auto& added : change.added) {
    if (!added.intent) continue;
    if (candidate_eval->Decide(*added.intent).verdict != EgressVerdict::kAllow) std::abort();
    if (ceiling_eval->Decide(*added.intent).verdict != EgressVerdict::kDeny) std::abort();
  }
  for (const auto& intent : Intents(parts[2])) {
    const auto first = candidate_eval->Decide(intent);
    const auto second = candidate_eval->Decide(intent);
    if (first.verdict != second.verdict || first.reason != second.reason || first.matched_policy != second.matched_policy) {
      std::abort();
    }
    if ((first.verdict == EgressVerdict::kAllow || first.verdict == EgressVerdict::kAudit) && first.matched_policy.empty()) {
      std::abort();
    }
    if (inside.verdict == osh::policy::Containment::kInside &&
        (first.verdict == EgressVerdict::kAllow || first.verdict == EgressVerdict::kAudit)) {
      const auto by_ceiling = ceiling_eval->Decide(intent);
      if (by_ceiling.verdict != EgressVerdict::kAllow && by_ceiling.verdict != EgressVerdict::kUnsupported) std::abort();
    }
  }
  return 0;
}
