// The OpenShell gateway interceptor's own listener (docs/openshell-interceptor.md): interceptor_socket, a
// Unix socket (0600, or 0660 for interceptor_socket_group in a folder of its own), accepted by a
// UnixAcceptor for a gRPC server of its own that serves GatewayInterceptor only. Keepalive as the
// OpenShell gateway's client needs it (../shared/interceptor/README.md §1): it pings every 10 s, also
// while idle, so pings without calls are permitted and accepted every 5 s (a default server answers
// GOAWAY too_many_pings and the next call races a reconnect: a fail-closed deny); connections are not
// closed for being idle, since the OpenShell gateway holds one for its lifetime.
//
// Owns the verifier, evaluator, worker pool, service and server. Destroying it stops accepting, drains
// the server (5 s) and the pool. Not thread-safe itself (the daemon starts and stops it).
#pragma once

#include <chrono>

#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "gateway/core/ceiling_guard.h"
#include "gateway/core/config.h"
#include "gateway/core/interceptor_evaluator.h"
#include "gateway/core/interceptor_token.h"
#include "gateway/core/worker_pool.h"
#include "gateway/server/interceptor_service.h"
#include "gateway/server/metrics.h"
#include "gateway/server/unix_acceptor.h"
#include "store/clock.h"
#include "store/store.h"

namespace osh::gateway {

class InterceptorListener {
 public:
  // Loads interceptor_gateway_keys (INVALID_ARGUMENT naming the file), binds interceptor_socket
  // (UNAVAILABLE naming it) and serves; logs what it serves and how callers are authenticated. The
  // ceiling guard, audit log, record store (the sandboxes' records, InterceptorRecords), provider-profile
  // catalogue, clock and metrics (may be null) must outlive the listener.
  static absl::StatusOr<std::unique_ptr<InterceptorListener>> Start(const Config& config, const CeilingGuard* ceiling,
                                                                    store::AuditLog* audit,
                                                                    store::InterceptorRecordStore* records,
                                                                    const ProviderProfileCatalogue* profiles,
                                                                    const store::Clock* clock,
                                                                    size_t max_connections, Metrics* metrics);
  // Stops accepting, then waits for the calls in progress until `deadline` (those still running then are
  // cancelled). Idempotent; the destructor stops with a 5 s deadline if this was not called.
  void Stop(std::chrono::system_clock::time_point deadline);
  ~InterceptorListener();

  const std::string& path() const { return path_; }
  const InterceptorService& service() const { return *service_; }

 private:
  InterceptorListener() = default;

  std::unique_ptr<InterceptorTokenVerifier> verifier_;
  std::unique_ptr<InterceptorEvaluator> evaluator_;
  std::unique_ptr<WorkerPool> pool_;
  std::unique_ptr<InterceptorService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<UnixAcceptor> acceptor_;
  std::string path_;
};

}  // namespace osh::gateway
