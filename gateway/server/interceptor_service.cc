#include "gateway/server/interceptor_service.h"

#include <chrono>
#include <string>

#include <google/protobuf/arena.h>
#include <grpcpp/support/message_allocator.h>

#include "absl/strings/str_cat.h"
#include "gateway/core/interceptor_payload.h"
#include "gateway/core/log.h"
#include "gateway/server/status_conversion.h"

namespace osh::gateway {

grpc::Status InterceptorService::Authenticate(const grpc::CallbackServerContext& context, const char* method) {
  if (verifier_ == nullptr) return grpc::Status::OK;
  std::string authorization;
  const auto& metadata = context.client_metadata();
  if (auto it = metadata.find("authorization"); it != metadata.end()) {
    authorization.assign(it->second.data(), it->second.size());
  }
  const absl::Status verified = verifier_->Verify(authorization, clock_->NowUnix());
  if (verified.ok()) return grpc::Status::OK;
  // Sampled: a caller without a valid token cannot flood the log.
  const uint64_t count = unauthenticated_.fetch_add(1) + 1;
  if (SampledForLog(count)) {
    LogWarning(absl::StrCat("interceptor: ", method, " refused (UNAUTHENTICATED): ", verified.message(),
                            count > 1 ? absl::StrCat(" (one line per ", kLogOneIn, " refused calls)") : ""),
               {{"refused_calls", absl::StrCat(count)}});
  }
  return ToGrpc(verified);
}

void InterceptorService::Observe(absl::string_view method, absl::string_view phase, absl::string_view decision,
                                 absl::Time started) const {
  if (observer_) observer_(method, phase, decision, absl::Now() - started);
}

grpc::ServerUnaryReactor* InterceptorService::Describe(grpc::CallbackServerContext* context,
                                                       const interceptor_v1::DescribeRequest* /*request*/,
                                                       interceptor_v1::InterceptorManifest* response) {
  const absl::Time started = absl::Now();
  auto* reactor = context->DefaultReactor();
  grpc::Status status = Authenticate(*context, "Describe");
  if (status.ok()) *response = evaluator_->Describe();
  Observe("Describe", "", status.ok() ? "ok" : "unauthenticated", started);
  reactor->Finish(status);
  return reactor;
}

grpc::ServerUnaryReactor* InterceptorService::Evaluate(grpc::CallbackServerContext* context,
                                                       const interceptor_v1::InterceptorEvaluation* request,
                                                       interceptor_v1::InterceptorResult* response) {
  const absl::Time started = absl::Now();
  auto* reactor = context->DefaultReactor();
  grpc::Status status = Authenticate(*context, "Evaluate");
  if (!status.ok()) {
    // gRPC has parsed the request (bounded by the listener's message size); nothing is decided, decoded or
    // audited before the token is checked.
    Observe("Evaluate", "", "unauthenticated", started);
    reactor->Finish(status);
    return reactor;
  }
  // The payload's digest (the decode memo's key) here, on the thread that just parsed the request: its
  // first walk costs a quarter of what it costs on the pool's thread, where the request is not in cache.
  std::string payload_digest;
  if (request->has_validate()) payload_digest = InterceptorPayloadDigest(request->validate().proposed_operation());
  if (request->has_modify_operation()) {
    payload_digest = InterceptorPayloadDigest(request->modify_operation().proposed_operation());
  }
  const char* phase = request->has_modify_operation() ? "modify_operation"
                       : request->has_validate()      ? "validate"
                       : request->has_post_commit()   ? "post_commit"
                                                      : "unspecified";
  // Metric labels stay a bounded set whatever a caller names.
  const absl::string_view method =
      IsInterceptorBoundMethod(request->method()) ? absl::string_view(request->method()) : "other";
  const std::chrono::system_clock::time_point deadline = context->deadline();
  // Admissions waiting on the driver or the database hold no worker: every call under way (waiting for a
  // worker, being decided or admitting) holds a place here, taken now and given back when it is answered.
  if (in_flight_.fetch_add(1) >= kMaxInFlightCalls) {
    in_flight_.fetch_sub(1);
    Overloaded(reactor, method, phase, started, kMaxInFlightCalls);
    return reactor;
  }
  // Admit mode's creates take a place of their own too, of fewer: admissions waiting on a slow driver
  // never take every place (validates, updates and attaches are still decided).
  const bool admits = evaluator_->MayAdmit(*request);
  if (admits && admissions_in_flight_.fetch_add(1) >= max_admissions_) {
    admissions_in_flight_.fetch_sub(1);
    in_flight_.fetch_sub(1);
    Overloaded(reactor, method, phase, started, max_admissions_, /*admissions=*/true);
    return reactor;
  }
  // From here the places are held: whatever throws (memory) gives them back and answers.
  try {
    if (evaluator_->DecidesWithoutBlocking(*request)) {
      // Admit mode's create naming no provider: decided here and admitted as a chain of callbacks, as
      // AdmitSandbox is (one thread hand-off fewer); a deny's audit event still goes to the pool.
      std::function<void()> answered = Answered(reactor, response, started, phase, method, admits);
      evaluator_->EvaluateAsync(*request, std::move(payload_digest), response, pool_, std::move(answered),
                                /*here_may_block=*/false);
      return reactor;
    }
    // The decision appends to the audit log: off gRPC's callback thread, on a bounded queue.
    const bool queued = pool_->TrySubmit([this, context, reactor, request, response, started, phase, method, deadline,
                                          admits, payload_digest = std::move(payload_digest)]() mutable {
      // The OpenShell gateway sends no deadline: its own timer (500 ms by default) cancels the call, and then
      // it applies its failure policy. Either way, deciding the call now would record, admit or audit what
      // nobody hears. (IsCancelled may be asked from any thread until the call is finished.)
      if (std::chrono::system_clock::now() >= deadline || context->IsCancelled()) {
        GiveBack(admits);
        const uint64_t count = evaluate_expired_.fetch_add(1) + 1;
        try {
          if (SampledForLog(count)) {
            LogWarning(absl::StrCat("interceptor: an Evaluate of ", method, " (", phase,
                                    ") reached a worker after its caller gave up on it (deadline or cancel) and was "
                                    "not decided",
                                    count > 1 ? absl::StrCat(" (one line per ", kLogOneIn, " such calls)") : ""),
                       {{"expired_calls", absl::StrCat(count)}});
          }
          Observe(method, phase, "expired", started);
        } catch (...) {
          // Not logged or observed (memory): still counted, and answered.
        }
        reactor->Finish(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                                     "interceptor_overloaded: the caller gave up on the call (deadline or cancel) "
                                     "before a worker was free"));
        return;
      }
      // Admit mode's admission holds no worker while it waits (EvaluateAsync, which answers whatever throws
      // once it has the call).
      std::function<void()> answered;
      try {
        answered = Answered(reactor, response, started, phase, method, admits);
      } catch (...) {
        GiveBack(admits);  // nothing started (memory): answered as a call that could not be taken
        return Overloaded(reactor, method, phase, started, kMaxInFlightCalls);
      }
      evaluator_->EvaluateAsync(*request, std::move(payload_digest), response, pool_, std::move(answered));
    }, kMaxQueuedCalls);
    if (!queued) {
      GiveBack(admits);
      Overloaded(reactor, method, phase, started, kMaxQueuedCalls);
    }
  } catch (...) {
    // Nothing was started (EvaluateAsync answers whatever throws once it has the call; this is a throw
    // before): the places go back, and the call is answered as one that could not be taken.
    GiveBack(admits);
    Overloaded(reactor, method, phase, started, kMaxInFlightCalls);
  }
  return reactor;
}

std::function<void()> InterceptorService::Answered(grpc::ServerUnaryReactor* reactor,
                                                  const interceptor_v1::InterceptorResult* response, absl::Time started,
                                                  const char* phase, absl::string_view method, bool admits) {
  return [this, reactor, response, started, phase, method, admits] {
    if (!response->allowed()) {
      evaluate_denied_.fetch_add(1);
    } else if (response->patches().empty()) {
      evaluate_allowed_.fetch_add(1);
    } else {
      evaluate_patched_.fetch_add(1);
    }
    try {
      Observe(method, phase, response->allowed() ? "allow" : "deny", started);
    } catch (...) {
      // A metric not counted (memory): the call is still answered.
    }
    GiveBack(admits);
    reactor->Finish(grpc::Status::OK);
  };
}

void InterceptorService::GiveBack(bool admits) {
  if (admits) admissions_in_flight_.fetch_sub(1);
  in_flight_.fetch_sub(1);
}

void InterceptorService::Overloaded(grpc::ServerUnaryReactor* reactor, absl::string_view method,
                                    absl::string_view phase, absl::Time started, size_t limit, bool admissions) {
  // Creates being decided or admitting (held from arrival: waiting for a worker, deciding, admitting), or
  // every call under way / waiting for a worker.
  const absl::string_view what =
      admissions ? "creates are being decided or admitted" : "calls wait for a worker or an admission";
  const uint64_t count = (admissions ? admissions_full_ : overloaded_).fetch_add(1) + 1;
  try {
    // Sampled, per cause: an overload is when each line would cost most, and a flood of calls would
    // flood the log.
    if (SampledForLog(count)) {
      LogWarning(absl::StrCat("interceptor: ", method, phase.empty() ? "" : " (", phase, phase.empty() ? "" : ")",
                              " refused: ", limit, " ", what, " already",
                              count > 1 ? absl::StrCat(" (one line per ", kLogOneIn, " refused calls)") : ""),
                 {{admissions ? "admissions_full_calls" : "overloaded_calls", absl::StrCat(count)}});
    }
    Observe(method, phase, admissions ? "admissions_full" : "overloaded", started);
  } catch (...) {
    // Not logged or observed (memory): still counted, and answered.
  }
  reactor->Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                               absl::StrCat("interceptor_overloaded: ", limit, " ", what, " already; try again")));
}

grpc::ServerUnaryReactor* InterceptorService::SnapshotProviderProfiles(
    grpc::CallbackServerContext* context, const interceptor_v1::ProviderProfileSnapshotRequest* /*request*/,
    interceptor_v1::ProviderProfileSnapshot* response) {
  const absl::Time started = absl::Now();
  auto* reactor = context->DefaultReactor();
  grpc::Status status = Authenticate(*context, "SnapshotProviderProfiles");
  if (!status.ok()) {
    Observe("SnapshotProviderProfiles", "", "unauthenticated", started);
    reactor->Finish(status);
    return reactor;
  }
  // The catalogue is read from the store: off gRPC's callback thread, on the bounded queue.
  const bool queued = pool_->TrySubmit([this, reactor, response, started] {
    auto snapshot = evaluator_->SnapshotProviderProfiles();
    if (!snapshot.ok()) {
      LogWarning(absl::StrCat("interceptor: SnapshotProviderProfiles refused: ", snapshot.status().message()));
      Observe("SnapshotProviderProfiles", "", "error", started);
      reactor->Finish(ToGrpc(snapshot.status()));
      return;
    }
    *response = *std::move(snapshot);
    Observe("SnapshotProviderProfiles", "", "ok", started);
    reactor->Finish(grpc::Status::OK);
  }, kMaxQueuedSnapshots);
  if (!queued) Overloaded(reactor, "SnapshotProviderProfiles", "", started, kMaxQueuedSnapshots);
  return reactor;
}

}  // namespace osh::gateway
