// The OpenShell gateway interceptor's own listener (docs/openshell-interceptor.md): a gRPC server of its
// own that serves GatewayInterceptor only, on interceptor_socket, a Unix socket (0600, or 0660 for
// interceptor_socket_group in a folder of its own) accepted by a UnixAcceptor, and/or on interceptor_listen,
// TCP accepted by a TcpFront (connection caps, a share per peer address, no SO_REUSEPORT) and relayed to
// the server's TLS port on a private Unix socket in the state folder (tls_cert, tls_key; no client
// certificate asked: callers prove who they are with the extension token, which config validation
// requires for interceptor_listen). The same settings hold on both. Keepalive as the
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
#include "gateway/server/health_service.h"
#include "gateway/server/interceptor_service.h"
#include "gateway/server/metrics.h"
#include "gateway/server/tcp_front.h"
#include "gateway/server/tls_listener_credentials.h"
#include "gateway/server/unix_acceptor.h"
#include "openshell/policy/gateway/v1/gateway.pb.h"
#include "store/clock.h"
#include "store/store.h"

namespace osh::gateway {

class InterceptorListener {
 public:
  // The evaluator (valid for the listener's life).
  InterceptorEvaluator* evaluator() const { return evaluator_.get(); }
  struct Options {
    size_t max_connections = 256;  // open connections on the Unix socket, and in all over TCP
    size_t max_per_peer = 64;      // TCP connections one peer address may hold open
    // interceptor_listen, already bound by TcpFront::Bind (so a taken port is the caller's configuration
    // error, exit 2, before anything starts); null when interceptor_listen is unset.
    std::unique_ptr<TcpFront> front;
    // The credentials of tls_cert and tls_key (no client CA) for `front`'s connections; must outlive the
    // listener. Required with `front`.
    const TlsListenerCredentials* tls = nullptr;
    // Admit mode's Policy subsystem (must outlive the listener); required when interceptor_mode is admit.
    InterceptorAdmission* admission = nullptr;
  };
  // Loads interceptor_gateway_keys (INVALID_ARGUMENT naming the file), binds interceptor_socket when set
  // (UNAVAILABLE or FAILED_PRECONDITION naming it), starts relaying `options.front` when given, and serves;
  // logs what it serves and how callers are authenticated. The ceiling guard, audit log, record store
  // (the sandboxes' records, InterceptorRecords), provider-profile catalogue, clock and metrics (may be
  // null) must outlive the listener.
  static absl::StatusOr<std::unique_ptr<InterceptorListener>> Start(const Config& config, const CeilingGuard* ceiling,
                                                                    store::AuditLog* audit,
                                                                    store::InterceptorRecordStore* records,
                                                                    const ProviderProfileCatalogue* profiles,
                                                                    const store::Clock* clock, Metrics* metrics,
                                                                    Options options);
  // Stops accepting, then waits for the calls in progress until `deadline` (those still running then are
  // cancelled). Idempotent; the destructor stops with a 5 s deadline if this was not called.
  void Stop(std::chrono::system_clock::time_point deadline);
  ~InterceptorListener();

  const std::string& path() const { return path_; }  // the Unix socket served; "" when interceptor_socket is unset
  const std::string& tcp() const { return tcp_; }    // "host:port" bound; "" when interceptor_listen is unset
  // "<socket> and <host:port> (TLS)", for the log.
  std::string Describe() const;
  const InterceptorService& service() const { return *service_; }
  // What GetStatus says of the interceptor: listeners, mode, authentication and the counts since start.
  // Thread-safe; valid after Stop too.
  void FillStatus(openshell::policy::gateway::v1::InterceptorStatus* out) const;

 private:
  InterceptorListener() = default;

  std::unique_ptr<InterceptorTokenVerifier> verifier_;
  std::unique_ptr<InterceptorEvaluator> evaluator_;
  std::unique_ptr<WorkerPool> pool_;
  std::unique_ptr<InterceptorService> service_;
  HealthService health_;  // "" SERVING; registered with server_, which it outlives
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<UnixAcceptor> acceptor_;
  std::unique_ptr<TcpFront> front_;  // stopped before the server
  std::string path_;
  std::string tcp_;
  std::string mode_;
};

}  // namespace osh::gateway
