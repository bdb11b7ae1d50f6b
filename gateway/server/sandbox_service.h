// The SandboxPolicy service on the sandbox socket: sandboxes fetch and watch their admitted projection
// and report whether they loaded it, authenticated by `authorization: Bearer <sandbox handle>`.
// A wrong, revoked or missing handle gets UNAUTHENTICATED, with nothing that tells whether a sandbox
// exists. Fetches are served from memory on gRPC's threads; reports go through the worker pool.
#pragma once

#include <atomic>
#include <optional>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "gateway/core/gateway_core.h"
#include "gateway/core/log_sequencer.h"
#include "gateway/server/arena_messages.h"
#include "gateway/server/metrics.h"
#include "gateway/core/sandbox_registry.h"
#include "gateway/core/worker_pool.h"
#include "openshell/policy/gateway/v1/gateway.grpc.pb.h"

namespace osh::gateway {

class SandboxService final : public gateway_v1::SandboxPolicy::CallbackService {
 public:
  // All pointers must outlive the service.
  // `core` may be null only where no reports are needed (the transport benchmark): what may be served is
  // the registry's serving rule either way (SandboxRegistry::Serve), on the core's clock or the system's.
  // `watch_backlog`: projections a watcher may be behind before it is dropped (Limits::watch_backlog);
  // `watch_stall`: how long a closed watch stream's write may wait on its reader (Limits::watch_stall_s).
  SandboxService(SandboxRegistry* registry, GatewayCore* core, WorkerPool* pool,
                 size_t watch_backlog = Limits().watch_backlog,
                 absl::Duration watch_stall = absl::Seconds(Limits().watch_stall_s));

  grpc::ServerUnaryReactor* GetProjection(grpc::CallbackServerContext* context,
                                          const gateway_v1::GetProjectionRequest* request,
                                          driver_v1::Projection* response) override;
  grpc::ServerWriteReactor<driver_v1::Projection>* WatchProjection(
      grpc::CallbackServerContext* context, const gateway_v1::WatchProjectionRequest* request) override;
  grpc::ServerUnaryReactor* ReportPolicyStatus(grpc::CallbackServerContext* context,
                                               const gateway_v1::ReportPolicyStatusRequest* request,
                                               gateway_v1::ReportPolicyStatusResponse* response) override;
  // The proof that the projection served now was logged; FAILED_PRECONDITION log_disabled without a log.
  grpc::ServerUnaryReactor* GetLogProof(grpc::CallbackServerContext* context,
                                        const gateway_v1::GetLogProofRequest* request,
                                        gateway_v1::LogProof* response) override;
  // The projection with its proof (GetLogProof's) or the reason there is none (log_status).
  grpc::ServerUnaryReactor* GetServedProjection(grpc::CallbackServerContext* context,
                                                const gateway_v1::GetServedProjectionRequest* request,
                                                gateway_v1::ServedProjection* response) override;
  // WatchProjection with proofs; a proof that was pending follows on the stream at the next checkpoint
  // that covers it (OnCheckpoint).
  grpc::ServerWriteReactor<gateway_v1::ServedProjection>* WatchServedProjection(
      grpc::CallbackServerContext* context, const gateway_v1::GetServedProjectionRequest* request) override;
  // The verifiable log (not owned; must outlive the service), when the gateway keeps one. Call before serving.
  void SetLog(const LogSequencer* log) { log_ = log; }
  // A new checkpoint was published (LogSequencer::SetPublishedListener): every WatchServedProjection
  // stream waiting for a proof asks again. Thread-safe.
  void OnCheckpoint();

  // A stream told of each checkpoint while it lives (WatchServedProjection's). Lock order: the service's
  // set, then the waiter's own lock; a waiter never calls Add/Remove holding its lock.
  class ProofWaiter {
   public:
    virtual void OnCheckpoint() = 0;

   protected:
    ~ProofWaiter() = default;
  };
  void AddProofWaiter(ProofWaiter* waiter);
  void RemoveProofWaiter(ProofWaiter* waiter);
  // Sets `message`'s proof for `sandbox_id`'s projection of `policy_digest` (consistency from
  // `known_size`) and returns the size of the checkpoint it is against; or sets log_status and returns
  // why there is none: FAILED_PRECONDITION log_disabled, UNAVAILABLE log_pending (a later checkpoint
  // brings it), OUT_OF_RANGE (known_size beyond the log).
  absl::StatusOr<uint64_t> ProveServed(const std::string& sandbox_id, const std::string& policy_digest,
                                       uint64_t policy_version, uint64_t known_size,
                                       gateway_v1::ServedProjection* message) const;

  // A watch stream ended (slow reader, a newer watch took its place, revoked) while a write still waits
  // on a reader that does not read keeps its place, and the projection it pins, until its connection dies
  // — a connection that answers pings never does (review 115). Such a stream registers itself here
  // (AddStalledWrite, under its own lock) and is cancelled once it waited `watch_stall`; its OnDone
  // unregisters it (RemoveStalledWrite, which waits out a cancel of it in progress). Called once a second
  // by the daemon's housekeeping thread (one caller at a time); returns how many it cancelled.
  size_t CancelStalledWatches(absl::Time now);
  void AddStalledWrite(grpc::CallbackServerContext* context);
  void RemoveStalledWrite(grpc::CallbackServerContext* context);

  // Counts GetProjection and ReportPolicyStatus by status code in `metrics` (not owned; must outlive the
  // service). Call before serving.
  void SetMetrics(Metrics* metrics) { metrics_ = metrics; }

  // Calls refused for a wrong, revoked or missing handle since the last Take (handle guessing leaves a
  // trace: the daemon logs and audits them once a minute). Thread-safe.
  struct AuthFailures {
    uint64_t get = 0, watch = 0, report = 0;
    uint64_t total() const { return get + watch + report; }
  };
  AuthFailures TakeAuthFailures();
  // A WatchProjection or WatchServedProjection (`call`) stream refused at its start (UNAUTHENTICATED)
  // or opened (OK): counted like the unary calls. Called by the stream's reactor.
  void ObserveWatchStart(const char* call, const grpc::Status& status);
  // A watch stream that ran has ended with `status` (metrics: why watches end).
  void ObserveWatchEnd(const grpc::Status& status);

 private:
  void Finish(grpc::ServerUnaryReactor* reactor, const char* call, grpc::Status status);
  // The serving rule for the caller's handle; when it refuses, finishes the call (UNAUTHENTICATED for any
  // handle problem) and returns null.
  AdmittedPtr ServeOrFinish(const grpc::CallbackServerContext& context, grpc::ServerUnaryReactor* reactor,
                            const char* call);

  // A fetch with its proof builds a message of many small fields (the log entry, the proof's hashes, the
  // checkpoint): in an arena per call, allocated in a few blocks and freed at once.
  ArenaMessages<gateway_v1::GetServedProjectionRequest, gateway_v1::ServedProjection> served_messages_;
  SandboxRegistry* registry_;
  GatewayCore* core_;
  const store::Clock* clock_;
  WorkerPool* pool_;
  const size_t watch_backlog_;
  const absl::Duration watch_stall_;
  Metrics* metrics_ = nullptr;
  const LogSequencer* log_ = nullptr;
  std::atomic<uint64_t> failed_get_{0}, failed_watch_{0}, failed_report_{0};
  absl::Mutex waiters_mu_;
  absl::flat_hash_set<ProofWaiter*> waiters_ ABSL_GUARDED_BY(waiters_mu_);
  // Closed watch streams whose write waits (CancelStalledWatches). The canceller marks the one it
  // cancels and calls TryCancel holding no lock (it may run the stream's reactions on its thread); that
  // stream's OnDone waits for the mark to go before its context does.
  struct StalledWrite {
    absl::Time since;
    bool cancelling = false;
  };
  absl::Mutex stalled_mu_;
  absl::flat_hash_map<grpc::CallbackServerContext*, StalledWrite> stalled_ ABSL_GUARDED_BY(stalled_mu_);
};

// The bearer token of a call, or "" when the metadata carries none.
std::string BearerToken(const grpc::ServerContextBase& context);

}  // namespace osh::gateway
