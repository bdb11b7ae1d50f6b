// Bounds on what one peer — a sandbox, an admin client, a driver — can make the gateway hold. Every
// field is an operator setting in [openshell.gateway.limits] (flag --<name-with-dashes>, environment
// POLICY_GATEWAY_<NAME>); docs/policy-gateway.md, "Limits", gives each one's meaning, default and range.
// Plain values, copied freely.
#pragma once

#include <algorithm>
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
  // Connections one peer may hold open on a socket (a process, by SO_PEERCRED pid, on the Unix sockets);
  // 0: a quarter of that socket's cap. A connection past the share is closed at once.
  size_t max_connections_per_peer = 0;
  int64_t connection_idle_timeout_s = 120;  // a connection with no call in flight is closed after this
  // An admin_listen connection (TLS) is asked to go (HTTP/2 GOAWAY) after this: calls on it go on, new
  // ones open a new connection, handshaken against the client CA in force then (review 117).
  int64_t max_connection_age_s = 600;
  int64_t handshake_timeout_s = 10;         // a TCP connection that has not finished its handshake by then is closed
  size_t max_streams_per_connection = 100;  // HTTP/2 streams (calls) open at once on one connection
  size_t max_transport_memory_mb = 1024;    // memory gRPC may hold for one listener's connections and calls
  size_t max_sandbox_peer_kib_per_s = 64;   // what one address may send to sandbox_listen, KiB a second (0: unlimited)
  size_t max_watchers_per_sandbox = 8;      // open WatchProjection streams per sandbox
  size_t max_watchers = 10'000;             // ... and in all
  size_t watch_backlog = 4;                 // projections not yet written to a watcher before it is dropped
  int64_t watch_stall_s = 30;               // a watch ended while its write waits on a reader this long is cancelled
  size_t max_audit_streams = 256;           // open WatchAuditEvents streams (admin API)
  size_t audit_stream_backlog = 1024;       // events queued for one (more: it catches up from the database)
  int64_t audit_stream_stall_s = 10;        // one whose reader takes nothing this long while events wait ends
  int reports_per_second = 2;               // ReportPolicyStatus per sandbox, refilled steadily
  int report_burst = 20;                    // ... after a burst of this many
  size_t max_report_error_bytes = 4096;     // a report's error text; longer is cut, with a marker
  // Admit mode: CreateSandbox modify phases under way at once (each admits, waiting on the driver and the
  // database); past it one is refused, so waiting admissions leave room for every other Evaluate.
  size_t max_interceptor_admissions = 1024;
  ContextLimits context;

  // The largest request the sandbox API takes (its requests are empty but for a report's error text, which
  // is cut to max_report_error_bytes anyway): 64 KiB, or four times max_report_error_bytes if more.
  size_t sandbox_request_bytes() const { return std::max<size_t>(64 * 1024, 4 * max_report_error_bytes); }
};

}  // namespace osh::gateway
