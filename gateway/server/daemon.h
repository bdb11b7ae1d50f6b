// The policy-gateway process from start to stop, as one type whose members are declared in start-up
// order: the clock, the store, the trust store, the driver, the registry and the core, the worker pool
// and the services, the two listeners, then the background threads (refresh scheduler, start-up
// re-verification). Stop() quiesces them in the one order that keeps every pointer valid: watchers
// closed, servers drained, background threads joined, the driver's monitor stopped, the pool drained.
//
// Start logs what went wrong and says which exit code the process should end with (2: configuration,
// 1: start-up). Not copyable; ServeUntilStopped runs on the thread that receives the signals.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "drivers/remote_driver.h"
#include "gateway/server/admin_service.h"
#include "gateway/server/health_service.h"
#include "gateway/server/interceptor_listener.h"
#include "gateway/server/openshell_push.h"
#include "gateway/server/audit_syslog.h"
#include "gateway/core/config.h"
#include "gateway/core/cost_bounded_memo.h"
#include "gateway/core/gateway_core.h"
#include "gateway/core/log_sequencer.h"
#include "gateway/server/tcp_front.h"
#include "gateway/server/unix_acceptor.h"
#include "gateway/core/refresh_scheduler.h"
#include "gateway/server/metrics.h"
#include "gateway/server/metrics_server.h"
#include "gateway/core/sandbox_registry.h"
#include "gateway/server/sandbox_service.h"
#include "gateway/server/tls_listener_credentials.h"
#include "gateway/core/worker_pool.h"
#include "store/clock.h"
#include "store/store.h"
#include "trust/trust_store.h"

namespace osh::gateway {

inline constexpr int kExitConfig = 2;
inline constexpr int kExitStartup = 1;

// Open-connection caps per socket within the descriptor limit (Limits::max_*_connections; 0 derives
// them). Explicit caps the limit cannot hold (512 descriptors stay for the database, the driver and
// files, and `http_connections` more for the metrics and log listeners) are lowered, and `lowered` says
// so for the log.
struct ConnectionCaps {
  size_t sandbox = 0;
  size_t admin = 0;
  std::string lowered;
};
ConnectionCaps ConnectionCapsFor(size_t descriptors, const Limits& limits, size_t http_connections = 0);

class Daemon {
 public:
  struct Started {
    std::unique_ptr<Daemon> daemon;  // null when it could not start
    int exit_code = 0;               // when it could not: kExitConfig or kExitStartup
  };
  // Opens the store, loads the trust store, starts the driver, loads the admitted sandboxes and starts
  // serving on both sockets. `clock` (not owned) must outlive the daemon. `on_serving`, when set, is
  // called just before the sockets are bound: start-up proper is over (see main.cc's SIGTERM handling).
  static Started Start(const Config& config, const store::Clock* clock, std::function<void()> on_serving = nullptr);

  // Serves until SIGTERM or SIGINT (SIGHUP reloads the trust store), then stops. Returns the exit code.
  // The caller must have blocked those signals in every thread before any started.
  int ServeUntilStopped();

  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

 private:
  struct Listener {
    std::unique_ptr<HealthService> health;  // registered with `server`: outlives it
    std::unique_ptr<grpc::Server> server;
    std::unique_ptr<UnixAcceptor> acceptor;  // stopped before the server
    std::unique_ptr<TcpFront> front;         // TCP (sandbox_listen, admin_listen): stopped before the server
    std::string path;
    std::string tcp;  // "host:port" actually bound, when it also listens on TCP
  };
  Daemon(const Config& config, const store::Clock* clock) : config_(config), clock_(clock) {}
  // The steps of Start, in order; each returns 0 or the exit code to end with.
  int Build();
  int StartDriver();
  int Serve();
  // The credentials of the TCP listeners (null when there is none, or only a plaintext loopback one).
  int PrepareTls();
  void UpdateHealth();
  std::string RenderMetrics();
  void RequestTrustStoreReload();
  int ReloadTls();  // part of each reload; logs either way; how many listeners kept their last good certificate
  std::atomic<uint64_t> reloads_requested_{0};  // SIGHUPs not yet covered by a finished reload
  std::function<void()> on_serving_;
  std::string startup_driver_error_;  // why the driver did not answer at start-up ("" if it did)
  std::optional<trust::PrivateKey> profile_signing_key_;  // builtin_signing_key: also signs provider profiles
  // "" on both sockets follows whether the sandbox socket accepts connections (NOT_SERVING at its cap).
  // The sandbox socket's acceptor (tcp false) or TCP front (tcp true) paused or resumed; health "" is
  // SERVING while both accept.
  void SetSandboxListenerHealth(bool accepting, bool tcp);
  // Logs and audits the sandbox calls refused for a bad handle since the last report (none: nothing).
  void ReportAuthFailures(absl::Duration window);
  static constexpr absl::Duration kAuthFailureWindow = absl::Seconds(60);
  // Idempotent; safe on a daemon that started only partly.
  void Stop();

  const Config config_;
  const store::Clock* const clock_;
  std::unique_ptr<store::Database> store_;  // holds the state lock and the head anchor
  std::unique_ptr<LogSequencer> log_;       // the verifiable log, when log_signing_key is set
  std::shared_ptr<const trust::TrustStore> trust_store_;
  std::unique_ptr<drivers::PolicyDriver> driver_;
  drivers::RemoteDriver* remote_ = nullptr;  // driver_, when it is the remote one
  SandboxRegistry registry_;
  std::unique_ptr<GatewayCore> core_;
  size_t loaded_ = 0;
  std::unique_ptr<WorkerPool> pool_;         // admin and sandbox calls that do not wait on the driver
  std::unique_ptr<WorkerPool> driver_pool_;    // calls that wait on the driver (see AdminService)
  std::unique_ptr<WorkerPool> decisions_pool_;  // EvaluateEgress and ExplainChange only
  // Trust-store and TLS reloads (SIGHUP, ReloadTrustStore): one thread of their own, so a reload never
  // waits behind the driver calls queued on driver_pool_ while a driver stalls (review 110). A reload's own
  // re-check refreshes the sandboxes a revocation refused on it, one at a time, after refusing them all:
  // a reload behind that one waits for those refreshes (review 112; not mended).
  std::unique_ptr<WorkerPool> reload_pool_;
  std::unique_ptr<WorkerPool> mutation_pool_;  // SetPolicy, UpdatePolicy, DeletePolicy (AdminService::SetMutationPool)
  // A delivery of queued handle releases is queued on or running in driver_pool_: at most one at a time,
  // so a driver that flaps cannot fill the admissions' pool with deliveries waiting for each other.
  std::atomic<bool> release_delivery_queued_{false};
  std::unique_ptr<EgressDecisions> decisions_;
  std::unique_ptr<ChangeExplainer> explainer_;  // ExplainChange
  std::unique_ptr<AuditFeed> audit_feed_;  // WatchAuditEvents; outlives the servers (closed in Stop)
  std::unique_ptr<AuditSyslog> audit_syslog_;  // with audit_syslog; ends when the feed closes
  std::unique_ptr<AdminService> admin_service_;
  std::unique_ptr<SandboxService> sandbox_service_;
  Metrics metrics_;
  // The drift gauge's counts: a pass over every admitted sandbox, for a scrape that needs no credential, so
  // counted again only once 100 times the last pass's time has passed (at most 30 s).
  CostBoundedMemo<std::vector<std::pair<std::string, uint64_t>>> drift_counts_;
  // The status a scrape reads (it counts pending releases and scopes in the database, under the lock the
  // replicas' feed takes): asked again only once 100 times its last cost has passed, at most 5 s (review
  // 110: a scrape needs no credential, and every one queried the database).
  CostBoundedMemo<std::optional<gateway_v1::GetStatusResponse>> metrics_status_{100, absl::Seconds(5)};
  // TLS of the TCP listeners: one certificate, and a client CA each (tls_client_ca gates admin_listen only,
  // sandbox_client_ca sandbox_listen), so no supervisor's certificate is ever an operator's.
  int listen_error_ = kExitStartup;  // Serve's exit code when a listener cannot start (a taken TCP port: kExitConfig)
  std::unique_ptr<TlsListenerCredentials> admin_tls_;
  std::unique_ptr<TlsListenerCredentials> sandbox_tls_;
  std::unique_ptr<TlsListenerCredentials> interceptor_tls_;  // interceptor_listen: no client certificate asked
  std::unique_ptr<MetricsServer> metrics_server_;  // when metrics_listen is set; stopped first
  std::unique_ptr<MetricsServer> log_server_;      // when log_listen is set apart from metrics_listen
  Listener admin_, sandbox_;
  // When interceptor_socket or interceptor_listen is set; stopped with the listeners, destroyed after the
  // admin server (GetStatus reads it through interceptor_status_, set once it serves).
  std::unique_ptr<InterceptorListener> interceptor_;
  std::atomic<const InterceptorListener*> interceptor_status_{nullptr};
  // Admit mode: the interceptor's way into the core, and the push of changed projections to the OpenShell
  // gateway (interceptor_openshell_endpoint), told by the registry's projection observer; the observer is
  // removed and the push stopped before the interceptor and the core go.
  std::unique_ptr<CoreInterceptorAdmission> interceptor_admission_;
  std::unique_ptr<OpenShellPush> openshell_push_;
  std::atomic<const OpenShellPush*> openshell_push_status_{nullptr};  // GetStatus reads it; stopped early, destroyed late
  absl::Mutex health_mu_;  // admission health always reads the driver's current state: no reordering
  bool sandbox_unix_accepting_ ABSL_GUARDED_BY(health_mu_) = true;
  bool sandbox_tcp_accepting_ ABSL_GUARDED_BY(health_mu_) = true;
  std::unique_ptr<RefreshScheduler> scheduler_;
  std::thread verifier_;
  std::thread housekeeping_thread_;  // while serving: auth failures once a minute
  absl::Notification stop_housekeeping_;
  bool stopped_ = false;
};

}  // namespace osh::gateway
