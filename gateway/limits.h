// Bounds on what one peer — a sandbox, an admin client, a driver — can make the gateway hold. Every
// field is an operator setting in [openshell.gateway.limits] (flag --<name-with-dashes>, environment
// POLICY_GATEWAY_<NAME>); docs/policy-gateway.md, "Limits", gives each one's meaning, default and range.
// Plain values, copied freely.
#pragma once

#include <cstddef>
#include <cstdint>

namespace osh::gateway {

// What an admission's RuntimeContext may hold (checked by CheckContext).
struct ContextLimits {
  size_t sandbox_id_bytes = 256;
  size_t user_subject_bytes = 1024;
  size_t attributes = 64;
  size_t attribute_key_bytes = 128;
  size_t attribute_value_bytes = 1024;
};

struct Limits {
  // Open connections per socket; 0: derived from the descriptor limit (sandbox: the limit less 512 and
  // the admin cap; admin: an eighth of the limit, 16 to 256). A value the descriptor limit cannot hold is
  // lowered to what it can, with a log line.
  size_t max_sandbox_connections = 0;
  size_t max_admin_connections = 0;
  int64_t connection_idle_timeout_s = 120;  // a connection with no call in flight is closed after this
  size_t max_watchers_per_sandbox = 8;      // open WatchPolicy streams per sandbox
  size_t max_watchers = 10'000;             // ... and in all
  size_t watch_backlog = 4;                 // projections not yet written to a watcher before it is dropped
  int reports_per_second = 2;               // ReportPolicyStatus per sandbox, refilled steadily
  int report_burst = 20;                    // ... after a burst of this many
  size_t max_report_error_bytes = 4096;     // a report's error text; longer is cut, with a marker
  ContextLimits context;
};

}  // namespace osh::gateway
