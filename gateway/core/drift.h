// Applied state and drift (issue 29, item 1): whether a sandbox runs what it should. Three policies are
// compared — *desired* (what its driver would give it now, when the driver can say cheaply), *served* (its
// admitted projection) and *loaded* (what the sandbox last reported) — with the sandbox's last refresh
// error. Pure functions of a SandboxInfo: no locks, no I/O; thread-safe.
#pragma once

#include "absl/status/status.h"

#include <array>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "common/name_table.h"
#include "drivers/policy_driver.h"
#include "openshell/policy/gateway/v1/gateway.pb.h"

namespace osh::gateway {

// Every drift state by the name policyctl, the metrics and SandboxInfo.drift_state use.
inline constexpr common::NameTable<openshell::policy::gateway::v1::DriftState, 6> kDriftStateNames{{{
    {openshell::policy::gateway::v1::DRIFT_LOAD_FAILED, "load_failed"},
    {openshell::policy::gateway::v1::DRIFT_REFUSED_BY_CEILING, "refused_by_ceiling"},
    {openshell::policy::gateway::v1::DRIFT_REFRESH_FAILED, "refresh_failed"},
    {openshell::policy::gateway::v1::DRIFT_REFRESH_PENDING, "refresh_pending"},
    {openshell::policy::gateway::v1::DRIFT_NOT_REPORTED, "not_reported"},
    {openshell::policy::gateway::v1::DRIFT_IN_SYNC, "in_sync"},
}}};

// Fills `info`'s desired_* fields from `desired` (nullopt: the driver cannot say, so desired is the
// served projection and desired_known false), then its drift, drift_state and drift_reason from the
// served, loaded and desired fields and last_refresh_error. The first state that applies wins, in
// DriftState's order: load_failed, refused_by_ceiling, refresh_failed, refresh_pending, not_reported,
// in_sync.
// `not_served` is the serving rule's answer for the admitted projection (expired, revoked; OK when it is
// served): a sandbox refused its projection is refresh_failed (refused_by_ceiling when the last refresh
// error is the ceiling's), never in_sync, whatever it reported loading before.
void FillDrift(const std::optional<drivers::PolicyAuthoring::Desired>& desired, const absl::Status& not_served,
               openshell::policy::gateway::v1::SandboxInfo* info);

}  // namespace osh::gateway
