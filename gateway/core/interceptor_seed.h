// An operator's seed of the OpenShell interceptor's record of one sandbox (docs/openshell-interceptor.md,
// "Records"): for a sandbox created before the interceptor was bound, or whose record was forgotten, the
// operator states the policy and providers the OpenShell gateway holds for it, and from then on its merges,
// attaches and detaches are composed from that record instead of refused (unknown_sandbox). The stated
// record is held to the rule every record is held to when written by a validate: its providers known to
// the catalogue (verified), and the whole composed candidate — and the policy alone — valid and inside the
// ceiling in force (composed_candidate.h). It never replaces a record: a sandbox with one has it forgotten
// first, so a seed cannot rewrite what the interceptor saw.
// Thread-safe (what it reads and writes is).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "gateway/core/ceiling_guard.h"
#include "gateway/core/limits.h"
#include "gateway/core/provider_catalogue.h"
#include "openshell/sandbox/v1/sandbox.pb.h"
#include "store/store.h"

namespace osh::gateway {

struct SeededRecord {
  std::string key;               // InterceptorRecords::Key(workspace, sandbox)
  std::string candidate_digest;  // SHA-256 hex of the composed candidate checked
  std::string policy_digest;     // SHA-256 hex of the policy's deterministic bytes
};

// Checks and stores the record with one audit event (type mutation, audit_context change = seed), in one
// transaction. Errors, nothing written: INVALID_ARGUMENT invalid_request (a name or workspace that is no
// sandbox id) or invalid_policy; FAILED_PRECONDITION unknown_provider, profile_unverified,
// exceeds_ceiling, containment_unknown; ALREADY_EXISTS record_exists; ABORTED catalogue_changed (a profile
// change committed meanwhile: try again); a storage error as the store says it.
// A refusal of what was stated (invalid_policy, unknown_provider, profile_unverified, exceeds_ceiling,
// containment_unknown, record_exists) is audited too (a refused mutation), on `audit`. `limits`: the
// gateway's, to which a sandbox name and workspace are held as at validate. At most kMaxSeedProviders
// providers, none twice (invalid_request).
inline constexpr size_t kMaxSeedProviders = 64;
absl::StatusOr<SeededRecord> SeedInterceptorRecord(const CeilingGuard& ceiling, const ProviderProfileCatalogue& catalogue,
                                                   store::InterceptorRecordStore* records, store::AuditLog* audit,
                                                   const ContextLimits& limits, const std::string& workspace,
                                                   const std::string& sandbox,
                                                   openshell::sandbox::v1::SandboxPolicy policy,
                                                   const std::vector<std::string>& providers);

}  // namespace osh::gateway
