// The admin API's streams over the audit chain, fed by an AuditFeed: WatchAuditEvents (docs/audit.md, "The
// event stream") and WatchSandboxes (the chain's sandbox state changes, gateway/core/sandbox_events.h). The
// admin service's unary dispatch cannot serve a stream, so AdminService hands these methods' calls here.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include <grpcpp/generic/async_generic_service.h>

#include "absl/status/statusor.h"

#include "gateway/core/audit_feed.h"
#include "gateway/server/metrics.h"

namespace osh::gateway {

// What a stream sends: from the call's one request (serialized), the seq to start after and, for each audit
// event in seq order, the serialized message to write (nothing: the event is passed over). A request that
// does not decode is an error (the call ends INVALID_ARGUMENT).
struct AuditStreamSpec {
  uint64_t after_seq = 0;
  std::function<std::optional<std::string>(const openshell::policy::gateway::v1::AuditEvent&)> render;
};
using AuditStreamOpener = std::function<absl::StatusOr<AuditStreamSpec>(const std::string& request)>;

// WatchAuditEvents: every event, as it is. WatchSandboxes: the sandbox state changes (SandboxEventOf),
// filtered by the request's sandbox_id.
AuditStreamOpener AuditEventsOpener();
AuditStreamOpener SandboxEventsOpener();

// A reactor that reads the call's request, opens it with `opener`, subscribes to `feed` after its
// after_seq and writes what `render` makes of each event until the subscription ends (its status is the call's: UNAVAILABLE
// "gateway_stopping", RESOURCE_EXHAUSTED "audit_stream_lagging" or "audit_streams_limit") or the client
// goes away. A reader that stopped reading is not waited for: once its subscription ends, a write still
// pending after `kStuckWriteGrace` (at once when the gateway stops) cancels the call. `feed` and `metrics`
// (may be null) must outlive the call; `context` is the call's. The reactor deletes itself when done.
// `method` names the call in metrics ("WatchAuditEvents").
grpc::ServerGenericBidiReactor* NewAuditStreamReactor(AuditFeed* feed, Metrics* metrics,
                                                      grpc::GenericCallbackServerContext* context, std::string method,
                                                      AuditStreamOpener opener);

inline constexpr absl::Duration kStuckWriteGrace = absl::Seconds(2);

}  // namespace osh::gateway
