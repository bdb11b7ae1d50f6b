// The validation rules of SCHEMA.md for openshell.sandbox.v1.SandboxPolicy. Pure functions.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "openshell/sandbox/v1/sandbox.pb.h"

namespace osh::policy {

// `rules` plus `deny_rules` of one endpoint (one of the bounds in validation.cc; merge operations check it
// before they copy rules).
inline constexpr size_t kMaxL7RulesPerEndpoint = 256;

// One broken rule: where (a field path such as "network_policies.gh.endpoints[0].host") and why.
struct Violation {
  std::string path;
  std::string message;
};

// The first broken rule, or nothing when the policy is valid.
std::optional<Violation> FindViolation(const openshell::sandbox::v1::SandboxPolicy& policy);

// Up to `limit` broken rules, in the order FindViolation meets them (its answer is the first): one per
// field at most (each endpoint, path, binary, middleware reports its first). Past a size bound nothing
// further is checked, and ambiguity between endpoints is judged only when every endpoint is valid.
std::vector<Violation> FindViolations(const openshell::sandbox::v1::SandboxPolicy& policy, size_t limit);

// OK, or INVALID_ARGUMENT "invalid_policy: <path>: <message>".
absl::Status ValidatePolicy(const openshell::sandbox::v1::SandboxPolicy& policy);

// Notes on gateway-internal markers (advisor_proposed, provider_credentialed, a binary's deprecated
// harness, which upstream's runtime still reads as provenance) set in a body, as field paths; such a body
// is still relayed as issued, and the audit event notes them.
std::vector<std::string> InternalMarkers(const openshell::sandbox::v1::SandboxPolicy& policy);

}  // namespace osh::policy
