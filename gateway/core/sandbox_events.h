// WatchSandboxes' view of the audit chain (docs/policyctl.md, "Watching sandboxes"): which audit events are
// changes of a sandbox's state, and how each reads as a SandboxEvent. The one home of that mapping; the
// stream (gateway/server/audit_stream) asks it for every event it passes on.
//
// Pure functions; thread-safe.
#pragma once

#include <optional>
#include <string>

#include "openshell/policy/gateway/v1/gateway.pb.h"

namespace osh::gateway {

// The sandbox state change `event` records, or nothing when it records none (a mutation, a driver going
// up or down, a trust-store reload, a release of a driver handle, a refused mutation, an interception ...).
std::optional<openshell::policy::gateway::v1::SandboxEvent> SandboxEventOf(
    const openshell::policy::gateway::v1::AuditEvent& event);

// Whether `change` passes a WatchSandboxes filter on `sandbox_id` ("" keeps every change): that sandbox's
// own changes and the scope re-projections (which name no sandbox, and may have moved it).
bool SandboxFilterKeeps(const openshell::policy::gateway::v1::SandboxEvent& change, const std::string& sandbox_id);

}  // namespace osh::gateway
