#include "gateway/core/profile_change_check.h"

#include <algorithm>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/errors.h"
#include "gateway/core/audit_recorder.h"
#include "gateway/core/composed_candidate.h"
#include "gateway/core/context_limits.h"
#include "gateway/core/interceptor_records.h"
#include "policy/containment.h"
#include "policy/provider_profile.h"
#include "policy/validation.h"

namespace osh::gateway {

namespace {

// The layers of `record`'s providers, with `changed` (may be null: no layer) for `id`; the others from
// `others` (nullopt: no profile, no layer).
std::vector<ProviderLayer> LayersOf(const InterceptorRecords::Record& record, const std::string& id,
                                    const openshell::v1::ProviderProfile* changed,
                                    const std::map<std::string, std::optional<ProviderProfileCatalogue::Entry>>& others) {
  std::vector<ProviderLayer> layers;
  for (const std::string& provider : record.providers) {
    if (provider == id) {
      if (changed != nullptr) layers.emplace_back(provider, changed);
      continue;
    }
    auto it = others.find(provider);
    if (it != others.end() && it->second.has_value()) layers.emplace_back(provider, &it->second->profile);
  }
  return layers;
}

}  // namespace

absl::Status CheckProfileChange(const CeilingGuard& ceiling, const std::vector<store::InterceptorRecordRow>& records,
                                const ProviderProfileCatalogue& catalogue, const std::string& id,
                                const openshell::v1::ProviderProfile* changed, int64_t* checked_ceiling) {
  const std::string what = changed != nullptr ? "set" : "deleted";
  const std::shared_ptr<const CeilingGuard::Active> active = ceiling.current();
  *checked_ceiling = CeilingGuard::StampOf(active);
  if (active == nullptr) return absl::OkStatus();
  // Every distinct record is decoded (sandboxes of one policy and providers share the verdict: the first
  // of them by name is the one a refusal names); one that does not decode is refused whatever it named.
  std::vector<InterceptorRecords::Entry> entries;
  absl::flat_hash_set<absl::string_view> distinct;
  distinct.reserve(records.size());
  for (const store::InterceptorRecordRow& row : records) {
    if (!distinct.insert(row.record).second) continue;
    InterceptorRecords::Entry entry{row.sandbox, {}};
    if (!InterceptorRecords::Decode(row.record, &entry.record)) {
      return common::Refused(absl::StatusCode::kFailedPrecondition, "interceptor_record_invalid",
                             absl::StrCat("the interceptor's record of sandbox ",
                                          BoundedText(InterceptorRecords::Describe(row.sandbox), 2 * kMaxAuditFieldBytes),
                                          " does not decode, so whether profile '", id, "' ", what,
                                          " widens it beyond the ceiling is unknown; policyctl interceptor records "
                                          "lists it, and policyctl interceptor forget drops it"));
    }
    entries.push_back(std::move(entry));
  }
  // The profile this one replaces (none: a new one, or one that does not verify), and the other providers'
  // profiles, read once each. A std::map: the layers point into its values, which must not move.
  std::optional<ProviderProfileCatalogue::Entry> previous;
  if (auto replaced = catalogue.Get(id); replaced.ok()) previous = *std::move(replaced);
  std::map<std::string, std::optional<ProviderProfileCatalogue::Entry>> others;
  for (const InterceptorRecords::Entry& entry : entries) {
    const InterceptorRecords::Record& record = entry.record;
    const std::string sandbox = BoundedText(InterceptorRecords::Describe(entry.key), 2 * kMaxAuditFieldBytes);
    if (std::find(record.providers.begin(), record.providers.end(), id) == record.providers.end()) continue;
    for (const std::string& provider : record.providers) {
      if (provider == id || others.count(provider) != 0) continue;
      auto profile = catalogue.Get(provider);
      if (!profile.ok() && !absl::IsNotFound(profile.status()) &&
          common::ReasonOf(profile.status()) != "profile_unverified") {
        return common::Refused(absl::StatusCode::kFailedPrecondition, "storage_error",
                               absl::StrCat("the provider profile '", provider, "' could not be read, so whether profile '",
                                            id, "' ", what, " widens sandbox ", sandbox, " is unknown: ",
                                            profile.status().message()));
      }
      others[provider] = profile.ok() ? std::optional(*std::move(profile)) : std::nullopt;
    }
    const std::vector<ProviderLayer> layers = LayersOf(record, id, changed, others);
    const ComposedVerdict verdict = CheckComposedCandidate(ceiling, active, record.policy, layers);
    if (verdict.ok()) continue;
    // Outside, but perhaps no more than with the profile it replaces (a ceiling narrowed since, a policy
    // recorded before it): a change that only narrows what the sandbox gets is never held back.
    if (previous.has_value() && verdict.reason != "invalid_policy") {
      const auto now = policy::ComposeProviderLayers(record.policy, layers);
      const auto before =
          policy::ComposeProviderLayers(record.policy, LayersOf(record, id, &previous->profile, others));
      if (policy::ValidatePolicy(before).ok() &&
          policy::CheckContainment(now, before).verdict == policy::Containment::kInside) {
        continue;
      }
    }
    return common::Refused(absl::StatusCode::kFailedPrecondition, verdict.reason,
                           absl::StrCat("profile '", id, "' ", what, " would widen sandbox ", sandbox,
                                        " (its provider, as the interceptor recorded it) beyond the ceiling in force",
                                        changed != nullptr ? "" : " (the deleted layer's deny rules no longer apply)",
                                        ": ", verdict.detail));
  }
  return absl::OkStatus();
}

}  // namespace osh::gateway
