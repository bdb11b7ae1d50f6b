// openshell.gateway_interceptor.v1.GatewayInterceptor (docs/openshell-interceptor.md), served on
// interceptor_socket and/or interceptor_listen to an OpenShell gateway: authenticates each call (InterceptorTokenVerifier, when
// interceptor_gateway_keys is set: a missing or bad token is UNAUTHENTICATED, which the OpenShell gateway
// treats as its failure policy, fail_closed) and hands Describe and Evaluate to the InterceptorEvaluator.
// Evaluate and SnapshotProviderProfiles run on the worker pool (they append to the audit log, read the
// store); Describe on gRPC's thread. Admit mode's CreateSandbox modify holds no worker while its admission
// waits (InterceptorEvaluator::EvaluateAsync), and one that reads nothing before it admits
// (InterceptorEvaluator::DecidesWithoutBlocking) is decided on gRPC's thread, as AdmitSandbox is;
// kMaxInFlightCalls bounds the calls under way. The pool's queue is bounded: with kMaxQueuedCalls calls waiting, a
// call is refused at once (RESOURCE_EXHAUSTED "interceptor_overloaded: ..."), and an Evaluate that reaches
// a worker after its caller gave up on it — its deadline passed, or it was cancelled (the OpenShell
// gateway sends no deadline; its 500 ms timer cancels the call) — is not decided (DEADLINE_EXCEEDED;
// nothing recorded, admitted or audited: the caller applied its failure policy already). Admit mode's
// creates take at most `max_admissions` of the places under way besides. Each is counted (metric decision
// "overloaded" / "admissions_full" / "expired", and in the status) and logged sampled (SampledForLog). SnapshotProviderProfiles answers the catalogue
// (InterceptorEvaluator::SnapshotProviderProfiles), or its refusal as a gRPC status (FAILED_PRECONDITION
// provider_profiles_empty / profile_unverified): upstream then answers UNAVAILABLE and its supervisors
// keep their last good policy.
//
// Thread-safe. Every pointer must outlive the service; `verifier` may be null (no tokens asked).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"

#include "gateway/core/interceptor_evaluator.h"
#include "gateway/core/interceptor_token.h"
#include "gateway/core/worker_pool.h"
#include "openshell/gateway_interceptor/v1/gateway_interceptor.grpc.pb.h"
#include "gateway/server/arena_messages.h"
#include "store/clock.h"

namespace osh::gateway {

class InterceptorService final : public interceptor_v1::GatewayInterceptor::CallbackService {
 public:
  // `max_admissions`: admit mode's CreateSandbox modify phases under way at once (max_interceptor_admissions),
  // fewer than kMaxInFlightCalls.
  InterceptorService(InterceptorEvaluator* evaluator, const InterceptorTokenVerifier* verifier, WorkerPool* pool,
                     const store::Clock* clock, size_t max_admissions = kMaxInFlightCalls / 2)
      : evaluator_(evaluator), verifier_(verifier), pool_(pool), clock_(clock), max_admissions_(max_admissions) {
    SetMessageAllocatorFor_Evaluate(&evaluate_messages_);
  }

  grpc::ServerUnaryReactor* Describe(grpc::CallbackServerContext* context, const interceptor_v1::DescribeRequest* request,
                                     interceptor_v1::InterceptorManifest* response) override;
  grpc::ServerUnaryReactor* Evaluate(grpc::CallbackServerContext* context,
                                     const interceptor_v1::InterceptorEvaluation* request,
                                     interceptor_v1::InterceptorResult* response) override;
  grpc::ServerUnaryReactor* SnapshotProviderProfiles(grpc::CallbackServerContext* context,
                                                     const interceptor_v1::ProviderProfileSnapshotRequest* request,
                                                     interceptor_v1::ProviderProfileSnapshot* response) override;

  // How many calls may wait for a worker (beyond those running): about what 4 workers decide within the
  // OpenShell gateway's default 500 ms deadline several times over.
  static constexpr size_t kMaxQueuedCalls = 1024;
  // SnapshotProviderProfiles (every supervisor poll) queue only while fewer wait: never all of what Evaluate needs.
  static constexpr size_t kMaxQueuedSnapshots = kMaxQueuedCalls / 2;
  // How many Evaluates may be under way at once — waiting for a worker, being decided, or admitting (admit
  // mode's admissions wait on the driver and the database with no worker held): past it a call is refused
  // at once, as when the queue is full.
  static constexpr size_t kMaxInFlightCalls = 2 * kMaxQueuedCalls;

  // Calls refused for their token since start.
  uint64_t unauthenticated() const { return unauthenticated_.load(); }

  // Evaluate calls answered since start, by decision: allowed without patches, allowed with patches
  // (the request rewritten), denied. Unauthenticated calls are not among them (unauthenticated()).
  struct EvaluateCounts {
    uint64_t allowed = 0;
    uint64_t patched = 0;
    uint64_t denied = 0;
  };
  EvaluateCounts evaluate_counts() const {
    return {evaluate_allowed_.load(), evaluate_patched_.load(), evaluate_denied_.load()};
  }
  // Calls not decided since start: refused with the queue full or kMaxInFlightCalls under way, admit mode's
  // creates refused with max_admissions under way, and Evaluates past their deadline.
  uint64_t overloaded() const { return overloaded_.load(); }
  uint64_t admissions_full() const { return admissions_full_.load(); }
  uint64_t expired() const { return evaluate_expired_.load(); }

  // Each call's method, phase, decision and latency (Metrics::ObserveInterceptorCall); null: none. Call
  // before serving.
  using Observer = std::function<void(absl::string_view method, absl::string_view phase, absl::string_view decision,
                                      absl::Duration took)>;
  void SetObserver(Observer observer) { observer_ = std::move(observer); }

 private:
  // OK, or UNAUTHENTICATED (logged as a warning, counted).
  grpc::Status Authenticate(const grpc::CallbackServerContext& context, const char* method);
  void Observe(absl::string_view method, absl::string_view phase, absl::string_view decision, absl::Time started) const;
  // What finishes an Evaluate once `response` is filled: counted, observed, answered OK.
  // `admits`: the call holds an admission's place as well (MayAdmit).
  std::function<void()> Answered(grpc::ServerUnaryReactor* reactor, const interceptor_v1::InterceptorResult* response,
                                 absl::Time started, const char* phase, absl::string_view method, bool admits);
  // Gives back the places an Evaluate under way holds.
  void GiveBack(bool admits);
  // Finishes a call refused because `limit` `what` already (RESOURCE_EXHAUSTED), logged (sampled) and counted.
  // `admissions`: refused for the admissions' own bound (counted apart, decision "admissions_full").
  // Never throws: a line or a metric that cannot be written (memory) is left out, the call still answered.
  void Overloaded(grpc::ServerUnaryReactor* reactor, absl::string_view method, absl::string_view phase,
                  absl::Time started, size_t limit, bool admissions = false);

  // Each Evaluate's request and response live in a protobuf arena of their own: the request's Struct (tens
  // of KiB of small nodes, parsed on gRPC's thread and read on the pool's) is laid out in a few blocks and
  // freed at once when the call ends.
  ArenaMessages<interceptor_v1::InterceptorEvaluation, interceptor_v1::InterceptorResult> evaluate_messages_;
  InterceptorEvaluator* const evaluator_;
  const InterceptorTokenVerifier* const verifier_;
  WorkerPool* const pool_;
  const store::Clock* const clock_;
  std::atomic<uint64_t> unauthenticated_{0};
  std::atomic<uint64_t> evaluate_allowed_{0};
  std::atomic<uint64_t> evaluate_patched_{0};
  std::atomic<uint64_t> evaluate_denied_{0};
  std::atomic<uint64_t> evaluate_expired_{0};
  std::atomic<uint64_t> overloaded_{0};
  std::atomic<uint64_t> admissions_full_{0};
  std::atomic<size_t> in_flight_{0};  // Evaluates accepted and not yet answered (kMaxInFlightCalls)
  const size_t max_admissions_;
  std::atomic<size_t> admissions_in_flight_{0};  // of which admit mode's creates (max_admissions_)
  Observer observer_;
};

}  // namespace osh::gateway
