// The PolicyGateway service on the admin socket, served through gRPC's generic callback API so that
// the mutation gate runs on the method name before any handler is chosen: a method that is not
// classified NON_MUTATING (including one added to the proto later) never reaches a handler while the
// driver forbids mutation. Handlers run on the worker pool, never on gRPC's callback threads — except
// AdmitSandbox, which is a chain of callbacks (GatewayCore::AdmitAsync) started on the callback thread
// and waits on nothing there.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include <grpcpp/generic/async_generic_service.h>

#include "gateway/core/audit_feed.h"
#include "gateway/core/change_explainer.h"
#include "gateway/core/egress_decisions.h"
#include "gateway/core/gateway_core.h"
#include "gateway/core/interceptor_records.h"
#include "gateway/core/log_sequencer.h"
#include "gateway/server/metrics.h"
#include "gateway/core/worker_pool.h"

namespace osh::gateway {

class AdminService final : public grpc::CallbackGenericService {
 public:
  // `core` and `pool` must outlive the service. Aborts at start-up if a PolicyGateway method has no
  // handler here (a programming error caught by every test run).
  // `decisions` answers EvaluateEgress, `explainer` ExplainChange. Calls that wait on the policy driver
  // (RefreshSandbox, ReloadTrustStore, and AdmitSandbox's blocking steps: refusals, retries) run on `driver_pool`, everything else on `pool`, so deletes (the
  // revocation path), reads and status never queue behind a stalled driver. All must outlive the service.
  AdminService(GatewayCore* core, WorkerPool* pool, WorkerPool* driver_pool, const EgressDecisions* decisions,
               const ChangeExplainer* explainer);

  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext* context) override;

  // Counts every call served from the socket (method, code, latency) in `metrics` (not owned; must
  // outlive the service). Call before serving.
  void SetMetrics(Metrics* metrics) { metrics_ = metrics; }

  // EvaluateEgress and ExplainChange on a pool of their own (not owned; must outlive the service): at most `max_queued`
  // decisions wait for it (more: RESOURCE_EXHAUSTED, decisions_busy), and a decision that has not started
  // within `deadline` of its arrival (or by the call's own deadline) is DEADLINE_EXCEEDED, so decisions
  // never hold up admin calls. Unset: decisions run on `pool`. Call before serving.
  void SetDecisionsPool(WorkerPool* pool, size_t max_queued, absl::Duration deadline) {
    decisions_pool_ = pool;
    decisions_max_queued_ = max_queued;
    decisions_deadline_ = deadline;
  }
  // ReloadTrustStore runs on `pool` (not owned; must outlive the service) instead of `driver_pool`: a
  // revocation must not wait behind driver calls queued there (review 110). `also` (may be empty) runs
  // after each trust-store reload, whatever its outcome: the TLS certificates, as SIGHUP reloads them
  // (an orchestrator without signals renews them through `policyctl trust reload`). Call before serving.
  void SetReloadPool(WorkerPool* pool, std::function<void()> also) {
    reload_pool_ = pool;
    after_trust_reload_ = std::move(also);
  }
  // SetPolicy, UpdatePolicy and DeletePolicy run on `pool` (not owned; must outlive the service): each
  // re-projects its scope's sandboxes, one re-projection at a time across the gateway, and one can take
  // minutes for a fleet; queued on `pool` they took every thread deletes, reads and reports need
  // (review 117). Unset: they run on `pool`. Call before serving.
  void SetMutationPool(WorkerPool* pool) { mutation_pool_ = pool; }

  // The feed WatchAuditEvents and WatchSandboxes stream from (not owned; must outlive the service). Unset: they are
  // UNAVAILABLE. Call before serving.
  void SetAuditFeed(AuditFeed* feed) { audit_feed_ = feed; }

  // The verifiable log ProveSandbox answers from (not owned; must outlive the service); unset: every
  // ProveSandbox is FAILED_PRECONDITION "log_disabled". Call before serving.
  void SetLog(const LogSequencer* log) { log_ = log; }

  // The interceptor's records ListInterceptorRecords and ForgetInterceptorRecord read and change (a forget
  // and its audit event in one transaction; not owned; must outlive the service). Unset: both are
  // FAILED_PRECONDITION. Call before serving.
  void SetInterceptorRecords(store::InterceptorRecordStore* records) { records_ = records; }

  // Who makes a call, as recorded in the audit events it causes ("uid:1000", "x509:CN=ops; issuer CN=ca;
  // serial 1F"); set before
  // serving. Called on gRPC's thread as each call starts; unset: "" (not recorded).
  using CallerIdentity = std::function<std::string(const grpc::GenericCallbackServerContext&)>;
  void SetCallerIdentity(CallerIdentity identity) { caller_identity_ = std::move(identity); }

  // Adds what the core does not know to each GetStatus response (the interceptor's listeners and counts),
  // on the pool's thread after the core filled it; unset: nothing added. Call before serving.
  using StatusExtension = std::function<void(gateway_v1::GetStatusResponse*)>;
  void SetStatusExtension(StatusExtension extension) { status_extension_ = std::move(extension); }

  // The serialized request -> serialized response, or an error.
  using Handler = std::function<absl::Status(const std::string& request, std::string* response)>;
  // The same, answering through `done` (exactly once, on any thread) instead of returning.
  using Reply = std::function<void(absl::Status status, std::string response)>;
  using AsyncHandler = std::function<void(const std::string& request, Reply done)>;

  // One call as the admin socket serves it, synchronously on the calling thread: the mutation gate on
  // `method` ("/openshell.policy.gateway.v1.PolicyGateway/AdmitSandbox"), then the request's decoding
  // and its handler. For the in-process request fuzzer; the socket path shares everything but the thread.
  // A streaming method (WatchAuditEvents, WatchSandboxes) is UNIMPLEMENTED here.
  absl::Status Dispatch(const std::string& method, const std::string& request, std::string* response) const;

 private:
  template <class Request, class Response>
  void Add(const std::string& method, std::function<absl::StatusOr<Response>(const Request&)> fn);

  GatewayCore* core_;
  WorkerPool* pool_;
  WorkerPool* driver_pool_;
  const LogSequencer* log_ = nullptr;
  store::InterceptorRecordStore* records_ = nullptr;
  WorkerPool* decisions_pool_ = nullptr;
  WorkerPool* reload_pool_ = nullptr;
  WorkerPool* mutation_pool_ = nullptr;
  std::function<void()> after_trust_reload_;
  size_t decisions_max_queued_ = 0;
  absl::Duration decisions_deadline_ = absl::InfiniteDuration();
  Metrics* metrics_ = nullptr;
  AuditFeed* audit_feed_ = nullptr;
  CallerIdentity caller_identity_;
  StatusExtension status_extension_;
  std::map<std::string, Handler> handlers_;  // by "/package.Service/Method"
  std::map<std::string, AsyncHandler> async_handlers_;  // those served without a worker (Dispatch uses handlers_)
};

}  // namespace osh::gateway
