#include "gateway/server/sandbox_service.h"

#include <deque>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/errors.h"
#include "gateway/server/status_conversion.h"

namespace osh::gateway {
namespace {

const grpc::Status kUnauthenticated(grpc::StatusCode::UNAUTHENTICATED, "a valid sandbox handle is required");

// Streams the current projection, then each newly admitted one, until the handle is revoked, the
// gateway stops or the client goes away. Registered with the registry for its whole life.
class WatchReactor final : public grpc::ServerWriteReactor<driver_v1::Projection>, public ProjectionWatcher {
 public:
  // `backlog`: projections not yet written to this watcher; one more and it is dropped as a slow reader.
  WatchReactor(SandboxService* service, SandboxRegistry* registry, const std::string& handle, int64_t now_unix,
               size_t backlog)
      : service_(service), registry_(registry), backlog_(backlog) {
    // The serving rule (SandboxRegistry::Serve), then registration: nothing unservable is ever streamed.
    auto watched = registry_->Watch(handle, this, now_unix);
    absl::MutexLock lock(&mu_);
    if (!watched.ok()) {
      const grpc::Status refused = absl::IsUnauthenticated(watched.status()) ? kUnauthenticated : ToGrpc(watched.status());
      service_->ObserveWatchStart(refused);
      FinishLocked(refused);
      return;
    }
    sandbox_id_ = watched->sandbox_id;
    registered_ = true;
    service_->ObserveWatchStart(grpc::Status::OK);
    // A newer projection may already have arrived through OnProjection; never send an older one after it.
    if (!started_) EnqueueLocked(watched->envelope->Shared());
  }

  void OnProjection(ProjectionPtr projection) override {
    absl::MutexLock lock(&mu_);
    EnqueueLocked(std::move(projection));
  }

  void OnClosed(bool revoked) override {
    absl::MutexLock lock(&mu_);
    CloseLocked(revoked ? kUnauthenticated : grpc::Status(grpc::StatusCode::UNAVAILABLE, "the gateway is stopping"));
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_.reset();
    if (!ok) {  // cancelled (the client went away, or the servers' shutdown deadline): the call is over
      CloseLocked(grpc::Status(grpc::StatusCode::CANCELLED, "write failed"));
      FinishLocked(*closing_);  // also when it was already closing (revoked, stopping) with this write pending
      return;
    }
    if (closing_) {
      FinishLocked(*closing_);
      return;
    }
    WriteNextLocked();
  }

  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    CloseLocked(grpc::Status::CANCELLED);
  }

  void OnDone() override {
    if (registered_) registry_->Unwatch(sandbox_id_, this);
    delete this;
  }

 private:
  void EnqueueLocked(ProjectionPtr projection) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_ || closing_) return;
    started_ = true;
    if (queue_.size() >= backlog_) {
      // A reader this far behind is not reading: drop it rather than hold projections for it. It
      // reconnects and gets the current one.
      CloseLocked(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                               absl::StrCat("slow_reader: ", queue_.size() + 1,
                                            " projections behind; reconnect to get the current one")));
      return;
    }
    queue_.push_back(std::move(projection));
    if (!writing_) WriteNextLocked();
  }
  void WriteNextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (queue_.empty()) return;
    writing_ = std::move(queue_.front());
    queue_.pop_front();
    StartWrite(writing_.get());
  }
  void CloseLocked(grpc::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_ || closing_) return;
    closing_ = std::move(status);
    queue_.clear();
    if (!writing_) FinishLocked(*closing_);
  }
  void FinishLocked(grpc::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return;
    finished_ = true;
    Finish(std::move(status));
  }

  SandboxService* const service_;
  SandboxRegistry* registry_;
  const size_t backlog_;
  std::string sandbox_id_;
  bool registered_ = false;
  absl::Mutex mu_;
  std::deque<ProjectionPtr> queue_ ABSL_GUARDED_BY(mu_);
  ProjectionPtr writing_ ABSL_GUARDED_BY(mu_);  // keeps the message alive while gRPC writes it
  std::optional<grpc::Status> closing_ ABSL_GUARDED_BY(mu_);
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace

std::string BearerToken(const grpc::ServerContextBase& context) {
  constexpr std::string_view kPrefix = "Bearer ";
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) return "";
  const std::string_view value(it->second.data(), it->second.size());
  if (value.substr(0, kPrefix.size()) != kPrefix) return "";
  return std::string(value.substr(kPrefix.size()));
}

SandboxService::SandboxService(SandboxRegistry* registry, GatewayCore* core, WorkerPool* pool, size_t watch_backlog)
    : registry_(registry),
      core_(core),
      clock_(core != nullptr ? &core->clock() : store::Clock::System()),
      pool_(pool),
      watch_backlog_(watch_backlog) {}

void SandboxService::Finish(grpc::ServerUnaryReactor* reactor, const char* call, grpc::Status status) {
  if (metrics_ != nullptr) metrics_->ObserveSandboxCall(call, StatusCodeName(status.error_code()));
  if (status.error_code() == grpc::StatusCode::UNAUTHENTICATED) {
    (std::string_view(call) == "ReportPolicyStatus" ? failed_report_ : failed_get_).fetch_add(1, std::memory_order_relaxed);
  }
  reactor->Finish(std::move(status));
}

void SandboxService::ObserveWatchStart(const grpc::Status& status) {
  if (metrics_ != nullptr) metrics_->ObserveSandboxCall("WatchProjection", StatusCodeName(status.error_code()));
  if (status.error_code() == grpc::StatusCode::UNAUTHENTICATED) failed_watch_.fetch_add(1, std::memory_order_relaxed);
}

SandboxService::AuthFailures SandboxService::TakeAuthFailures() {
  AuthFailures out;
  out.get = failed_get_.exchange(0);
  out.watch = failed_watch_.exchange(0);
  out.report = failed_report_.exchange(0);
  return out;
}

std::optional<SandboxRegistry::Authenticated> SandboxService::ServeOrFinish(const grpc::CallbackServerContext& context,
                                                                          grpc::ServerUnaryReactor* reactor,
                                                                          const char* call) {
  auto served = registry_->Serve(BearerToken(context), clock_->NowUnix());
  if (served.ok()) return *std::move(served);
  Finish(reactor, call, absl::IsUnauthenticated(served.status()) ? kUnauthenticated : ToGrpc(served.status()));
  return std::nullopt;
}

grpc::ServerUnaryReactor* SandboxService::GetProjection(grpc::CallbackServerContext* context,
                                                        const gateway_v1::GetProjectionRequest*,
                                                        driver_v1::Projection* response) {
  constexpr char kCall[] = "GetProjection";
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto served = ServeOrFinish(*context, reactor, kCall);
  if (!served) return reactor;
  served->envelope->CopyTo(response);
  Finish(reactor, kCall, grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* SandboxService::GetLogProof(grpc::CallbackServerContext* context,
                                                      const gateway_v1::GetLogProofRequest* request,
                                                      gateway_v1::LogProof* response) {
  constexpr char kCall[] = "GetLogProof";
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto served = ServeOrFinish(*context, reactor, kCall);
  if (!served) return reactor;
  if (log_ == nullptr) {
    Finish(reactor, kCall, ToGrpc(common::Refused(absl::StatusCode::kFailedPrecondition, "log_disabled",
                                                  "this gateway keeps no verifiable log (log_signing_key is not set)")));
    return reactor;
  }
  auto proof = log_->ProofFor(served->sandbox_id, served->envelope->policy_digest(), request->known_size());
  if (!proof.ok()) {
    Finish(reactor, kCall, ToGrpc(proof.status()));
    return reactor;
  }
  *response = *std::move(proof);
  Finish(reactor, kCall, grpc::Status::OK);
  return reactor;
}

grpc::ServerWriteReactor<driver_v1::Projection>* SandboxService::WatchProjection(
    grpc::CallbackServerContext* context, const gateway_v1::WatchProjectionRequest*) {
  return new WatchReactor(this, registry_, BearerToken(*context), clock_->NowUnix(), watch_backlog_);
}

grpc::ServerUnaryReactor* SandboxService::ReportPolicyStatus(grpc::CallbackServerContext* context,
                                                             const gateway_v1::ReportPolicyStatusRequest* request,
                                                             gateway_v1::ReportPolicyStatusResponse*) {
  constexpr char kCall[] = "ReportPolicyStatus";
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto authenticated = registry_->Authenticate(BearerToken(*context));
  if (!authenticated) {
    Finish(reactor, kCall, kUnauthenticated);
    return reactor;
  }
  pool_->Submit([this, reactor, id = authenticated->sandbox_id, request] {
    Finish(reactor, "ReportPolicyStatus", ToGrpc(core_->Report(id, *request)));
  });
  return reactor;
}

}  // namespace osh::gateway
