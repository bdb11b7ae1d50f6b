// WatchAuditEvents on the admin API (docs/audit.md, "The event stream"): one server-streaming call of the
// generic PolicyGateway service, fed by an AuditFeed. The admin service's unary dispatch cannot serve a
// stream, so AdminService hands this method's calls here.
#pragma once

#include <grpcpp/generic/async_generic_service.h>

#include "gateway/core/audit_feed.h"
#include "gateway/server/metrics.h"

namespace osh::gateway {

// A reactor that reads one WatchAuditEventsRequest, subscribes to `feed` after its after_seq and writes
// each event (a serialized AuditEvent) until the subscription ends (its status is the call's: UNAVAILABLE
// "gateway_stopping", RESOURCE_EXHAUSTED "audit_stream_lagging" or "audit_streams_limit") or the client
// goes away. A reader that stopped reading is not waited for: once its subscription ends, a write still
// pending after `kStuckWriteGrace` (at once when the gateway stops) cancels the call. `feed` and `metrics`
// (may be null) must outlive the call; `context` is the call's. The reactor deletes itself when done.
grpc::ServerGenericBidiReactor* NewAuditStreamReactor(AuditFeed* feed, Metrics* metrics,
                                                      grpc::GenericCallbackServerContext* context);

inline constexpr absl::Duration kStuckWriteGrace = absl::Seconds(2);

}  // namespace osh::gateway
