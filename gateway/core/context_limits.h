// What an admission's RuntimeContext may hold (docs/policy-gateway.md, "Limits"): sizes and counts
// bounded, text valid UTF-8 without control characters — so that one sandbox cannot make `list`, the
// audit log or the logs unusable for everyone. Pure functions, thread-safe.
#pragma once

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "common/bounded_text.h"
#include "gateway/core/limits.h"
#include "openshell/policy/driver/v1/driver.pb.h"

namespace osh::gateway {

// Client- or driver-chosen free text made fit for the audit log and the logs (common/bounded_text.h).
using common::BoundedText;

// OK, or INVALID_ARGUMENT saying why `sandbox_id` cannot be a sandbox id ("21 bytes, at most 20", "not
// valid UTF-8", "control characters are not allowed"; "required" when empty), without naming a field.
// The one rule for a sandbox id, whoever names it (an admission's context, an OpenShell sandbox name).
absl::Status CheckSandboxId(const std::string& sandbox_id, const ContextLimits& limits = ContextLimits());

// OK, or INVALID_ARGUMENT naming the field ("context.attributes[\"team\"]: ...") and the limit.
absl::Status CheckContext(const openshell::policy::driver::v1::RuntimeContext& context,
                          const ContextLimits& limits = ContextLimits());

}  // namespace osh::gateway
