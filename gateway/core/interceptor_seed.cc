#include "gateway/core/interceptor_seed.h"

#include <optional>

#include "absl/synchronization/mutex.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/errors.h"
#include "gateway/core/audit_recorder.h"
#include "gateway/core/composed_candidate.h"
#include "gateway/core/context_limits.h"
#include "gateway/core/interceptor_records.h"
#include "policy/body_codec.h"
#include "policy/digest.h"
#include "policy/provider_profile.h"
#include "trust/audit_vocabulary.h"

namespace osh::gateway {

using openshell::sandbox::v1::SandboxPolicy;

absl::StatusOr<SeededRecord> SeedInterceptorRecord(const CeilingGuard& ceiling, const ProviderProfileCatalogue& catalogue,
                                                   store::InterceptorRecordStore* records, store::AuditLog* audit,
                                                   const ContextLimits& limits, const std::string& workspace,
                                                   const std::string& sandbox, SandboxPolicy policy,
                                                   const std::vector<std::string>& providers) {
  // Held to the rules a record's name and workspace are held to at validate (no control character can
  // join the key).
  if (absl::Status valid = CheckSandboxId(sandbox, limits); !valid.ok()) {
    return common::Refused(absl::StatusCode::kInvalidArgument, "invalid_request", absl::StrCat("sandbox: ", valid.message()));
  }
  if (absl::Status valid = CheckSandboxId(workspace, limits); !workspace.empty() && !valid.ok()) {
    return common::Refused(absl::StatusCode::kInvalidArgument, "invalid_request", absl::StrCat("workspace: ", valid.message()));
  }
  if (providers.size() > kMaxSeedProviders) {
    return common::Refused(absl::StatusCode::kInvalidArgument, "invalid_request",
                           absl::StrCat("providers: ", providers.size(), ", at most ", kMaxSeedProviders));
  }
  for (size_t i = 0; i < providers.size(); ++i) {
    if (absl::Status valid = CheckSandboxId(providers[i], limits); !valid.ok()) {
      return common::Refused(absl::StatusCode::kInvalidArgument, "invalid_request",
                             absl::StrCat("providers[", i, "]: ", valid.message()));
    }
    for (size_t j = 0; j < i; ++j) {
      if (providers[j] == providers[i]) {
        return common::Refused(absl::StatusCode::kInvalidArgument, "invalid_request",
                               absl::StrCat("providers[", i, "]: '", providers[i], "' is providers[", j, "] already"));
      }
    }
  }
  // What this gateway does not know of the schema is not recorded (a validate's decode refuses it).
  policy.DiscardUnknownFields();
  SeededRecord out;
  out.key = InterceptorRecords::Key(workspace, sandbox);
  const std::string described = InterceptorRecords::Describe(out.key);
  store::AuditEvent event = AuditRecorder::For(trust::audit::Type::kMutation, sandbox);
  event.audit_context = {{"interceptor_record", sandbox}, {"change", "seed"}};
  if (!workspace.empty()) event.audit_context["workspace"] = workspace;
  auto refuse = [&](absl::Status refusal) {
    AuditRecorder(audit).Record(event, trust::audit::Outcome::kRefused,
                                absl::StrCat("interceptor record of sandbox ", described, " not seeded: ", refusal.message()));
    return refusal;
  };

  // A record holds the own policy as upstream keeps it, which never has a `_provider_*` entry
  // (policy::ReservedProviderKeys): a seed with one states a policy upstream cannot hold.
  if (const std::vector<std::string> reserved = policy::ReservedProviderKeys(policy); !reserved.empty()) {
    return refuse(common::Refused(absl::StatusCode::kInvalidArgument, "invalid_policy",
                                  absl::StrCat("network_policies.", reserved.front(),
                                               ": the '_provider_' prefix is reserved for provider layers (upstream "
                                               "never keeps such an entry in a sandbox's own policy)")));
  }

  // No catalogue change is checked and written meanwhile in this process (as for a validate's record): a
  // change's check over the records either sees this one or this one is composed from the changed catalogue.
  absl::ReaderMutexLock steady_catalogue(&catalogue.change_lock());
  // The providers' layers, all from one catalogue: the record names the generation it was composed at.
  std::optional<uint64_t> generation;
  std::vector<ProviderLayer> layers;
  absl::StatusOr<ProviderProfileCatalogue::Selection> selection = catalogue.GetAll(providers);
  if (!selection.ok()) return selection.status();
  for (size_t i = 0; i < providers.size(); ++i) {
    if (std::optional<std::string> alias = policy::ProviderAliasRefusal(providers[i])) {
      // As a validate refuses it (InterceptorEvaluator::ResolveProviders).
      return refuse(common::Refused(absl::StatusCode::kFailedPrecondition, "unknown_provider", *alias));
    }
    const auto& entry = selection->entries[i];
    if (!entry.ok()) {
      if (absl::IsNotFound(entry.status())) {
        return refuse(common::Refused(absl::StatusCode::kFailedPrecondition, "unknown_provider",
                                      absl::StrCat("provider '", providers[i],
                                                   "' has no profile in this gateway's catalogue (policyctl profile list)")));
      }
      if (common::ReasonOf(entry.status()) == "profile_unverified") return refuse(entry.status());
      return entry.status();  // the catalogue's read error
    }
    generation = (*entry)->generation;
    layers.emplace_back(providers[i], &(*entry)->profile);
  }
  const ComposedVerdict verdict = CheckComposedCandidate(ceiling, policy, layers);
  if (!verdict.ok()) {
    return refuse(common::Refused(verdict.reason == "invalid_policy" ? absl::StatusCode::kInvalidArgument
                                                                     : absl::StatusCode::kFailedPrecondition,
                                  verdict.reason, verdict.detail));
  }
  out.candidate_digest = verdict.candidate_digest;
  out.policy_digest = policy::Sha256Hex(policy::SerializeDeterministic(policy));

  event.outcome = trust::audit::Outcome::kOk;
  event.policy_digest = out.policy_digest;
  event.reason = BoundedText(
      absl::StrCat("interceptor record of sandbox ", described, " seeded: ", policy.network_policies_size(),
                   " network rule(s), providers ", providers.empty() ? "none" : absl::StrJoin(providers, ","),
                   "; composed candidate ", out.candidate_digest),
      kMaxAuditReasonBytes);
  event.audit_context["candidate_digest"] = out.candidate_digest;
  // Only where none is stored (never over a record a validate wrote), and only while the catalogue is the
  // one its layers came from.
  const std::optional<std::string> none;
  absl::Status put = records->PutInterceptorRecord(out.key, InterceptorRecords::Encode({policy, providers}), generation,
                                                   &none, &event);
  if (common::ReasonOf(put) == "record_changed") {
    event.audit_context.erase("candidate_digest");
    return refuse(common::Refused(absl::StatusCode::kAlreadyExists, "record_exists",
                                  absl::StrCat("sandbox ", described,
                                               " has a record already (policyctl interceptor records); a seed never "
                                               "replaces one: forget it first (policyctl interceptor forget)")));
  }
  if (!put.ok()) return put;
  return out;
}

}  // namespace osh::gateway
