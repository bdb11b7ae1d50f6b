#include "gateway/server/sandbox_service.h"

#include <deque>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/errors.h"
#include "common/grpc_status.h"
#include "gateway/server/status_conversion.h"

namespace osh::gateway {
namespace {

const grpc::Status kUnauthenticated(grpc::StatusCode::UNAUTHENTICATED, "a valid sandbox handle is required");

// A server stream written one message at a time from a bounded queue; the subclass feeds it and owns the
// call's end (OnDone). A reader `backlog` messages behind is dropped as a slow reader.
template <typename Message>
class QueuedStream : public grpc::ServerWriteReactor<Message> {
 public:
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

 protected:
  using Ptr = std::shared_ptr<const Message>;
  // `service` and `context` (either may be null: no stalled write is then ever cancelled) outlive the stream.
  QueuedStream(size_t backlog, SandboxService* service, grpc::CallbackServerContext* context)
      : backlog_(backlog), service_(service), context_(context) {}
  // From the subclass's OnDone: a stalled write's registration ends.
  void ForgetStall() {
    bool registered = false;
    {
      absl::MutexLock lock(&mu_);
      registered = stall_registered_;
    }
    if (registered) service_->RemoveStalledWrite(context_);
  }

  void EnqueueLocked(Ptr message) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
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
    queue_.push_back(std::move(message));
    if (!writing_) WriteNextLocked();
  }
  void CloseLocked(grpc::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_ || closing_) return;
    closing_ = std::move(status);
    queue_.clear();
    if (!writing_) {
      FinishLocked(*closing_);
    } else if (service_ != nullptr && context_ != nullptr && !stall_registered_) {
      // The reader is told why once the pending write reaches it; one that never reads is cancelled.
      stall_registered_ = true;
      service_->AddStalledWrite(context_);
    }
  }
  // The registry closed the watch: the handle was revoked, or the gateway is stopping.
  void CloseWatch(bool revoked) {
    absl::MutexLock lock(&mu_);
    CloseLocked(revoked ? kUnauthenticated
                        : ToGrpc(common::Refused(absl::StatusCode::kUnavailable, "gateway_stopping",
                                                 "the gateway is stopping; watch again (another replica, or this one "
                                                 "once it is back)")));
  }
  // The registry ended the watch: the projection is no longer served (key_revoked).
  void RefuseWatch(const absl::Status& why) {
    absl::MutexLock lock(&mu_);
    CloseLocked(ToGrpc(why));
  }
  void FinishLocked(grpc::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return;
    finished_ = true;
    // A stream refused at its start is counted by ObserveWatchStart; one that ran, by why it ended (also
    // one ended — a newer watch, a revocation — before its constructor enqueued anything: review 120).
    if (!refused_at_start_ && service_ != nullptr) service_->ObserveWatchEnd(status);
    this->Finish(std::move(status));
  }

  absl::Mutex mu_;
  bool started_ ABSL_GUARDED_BY(mu_) = false;  // something was enqueued (or the stream closed)
  bool refused_at_start_ ABSL_GUARDED_BY(mu_) = false;  // its constructor refused the watch

 private:
  void WriteNextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (queue_.empty()) return;
    writing_ = std::move(queue_.front());
    queue_.pop_front();
    this->StartWrite(writing_.get());
  }

  const size_t backlog_;
  SandboxService* const service_;
  grpc::CallbackServerContext* const context_;
  bool stall_registered_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<Ptr> queue_ ABSL_GUARDED_BY(mu_);
  Ptr writing_ ABSL_GUARDED_BY(mu_);  // keeps the message alive while gRPC writes it
  std::optional<grpc::Status> closing_ ABSL_GUARDED_BY(mu_);
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

// Registers `watcher` with the registry for `handle` (the serving rule first: nothing unservable is ever
// streamed) and counts the stream's start; the refusal to finish it with, if any.
std::optional<grpc::Status> StartWatch(SandboxService* service, SandboxRegistry* registry, const std::string& handle,
                                       ProjectionWatcher* watcher, int64_t now_unix, const char* call,
                                       AdmittedPtr* watched) {
  auto started = registry->Watch(handle, watcher, now_unix);
  if (!started.ok()) {
    const grpc::Status refused = absl::IsUnauthenticated(started.status()) ? kUnauthenticated : ToGrpc(started.status());
    service->ObserveWatchStart(call, refused);
    return refused;
  }
  service->ObserveWatchStart(call, grpc::Status::OK);
  *watched = *std::move(started);
  return std::nullopt;
}

// Streams the current projection, then each newly admitted one, until the handle is revoked, the
// gateway stops or the client goes away. Registered with the registry for its whole life.
class WatchReactor final : public QueuedStream<driver_v1::Projection>, public ProjectionWatcher {
 public:
  // `backlog`: projections not yet written to this watcher; one more and it is dropped as a slow reader.
  WatchReactor(SandboxService* service, grpc::CallbackServerContext* context, SandboxRegistry* registry,
               const std::string& handle, int64_t now_unix, size_t backlog)
      : QueuedStream(backlog, service, context), registry_(registry) {
    AdmittedPtr watched;
    const auto refused = StartWatch(service, registry, handle, this, now_unix, "WatchProjection", &watched);
    absl::MutexLock lock(&mu_);
    if (refused) {
      refused_at_start_ = true;
      FinishLocked(*refused);
      return;
    }
    sandbox_id_ = watched->sandbox_id;
    registered_ = true;
    // A newer projection may already have arrived through OnProjection; never send an older one after it.
    if (!started_) EnqueueLocked(watched->envelope->Shared());
  }

  void OnProjection(ProjectionPtr projection) override {
    absl::MutexLock lock(&mu_);
    EnqueueLocked(std::move(projection));
  }
  void OnClosed(bool revoked) override { CloseWatch(revoked); }
  void OnRefused(const absl::Status& why) override { RefuseWatch(why); }
  void OnDone() override {
    if (registered_) registry_->Unwatch(sandbox_id_, this);
    ForgetStall();
    delete this;
  }

 private:
  SandboxRegistry* registry_;
  std::string sandbox_id_;
  bool registered_ = false;
};

// A ServedProjection whose `projection` is the shared message every watcher of that envelope is sent, not a
// copy of it (a body of up to megabytes per served watcher, made under the registry's lock; review 115 —
// measured, bench/README "Stop 71": gRPC's serialization in StartWrite costs more than the copy did). gRPC
// only reads it (serializes it, as it does the plain watch's shared Projection from many streams at once);
// the field is let go before the message is destroyed, so the message never frees what it does not own.
class SharedServed {
 public:
  explicit SharedServed(ProjectionPtr projection) : projection_(std::move(projection)) {
    message_.unsafe_arena_set_allocated_projection(const_cast<driver_v1::Projection*>(projection_.get()));
  }
  ~SharedServed() { message_.unsafe_arena_release_projection(); }
  SharedServed(const SharedServed&) = delete;
  SharedServed& operator=(const SharedServed&) = delete;
  gateway_v1::ServedProjection* message() { return &message_; }

 private:
  ProjectionPtr projection_;
  gateway_v1::ServedProjection message_;
};

// WatchServedProjection's stream: as WatchReactor, each projection wrapped with its proof when there is
// one; while the newest projection sent waits for its proof, each checkpoint (OnCheckpoint) tries again
// and sends the proof alone once it exists. Registered with the registry and the service for its life.
class ServedWatchReactor final : public QueuedStream<gateway_v1::ServedProjection>,
                                 public ProjectionWatcher,
                                 public SandboxService::ProofWaiter {
 public:
  ServedWatchReactor(SandboxService* service, grpc::CallbackServerContext* context, SandboxRegistry* registry,
                     const std::string& handle, int64_t now_unix, size_t backlog, uint64_t known_size)
      : QueuedStream(backlog, service, context), service_(service), registry_(registry) {
    AdmittedPtr watched;
    const auto refused = StartWatch(service, registry, handle, this, now_unix, "WatchServedProjection", &watched);
    if (!refused) service_->AddProofWaiter(this);  // before mu_: the service's lock is taken first
    absl::MutexLock lock(&mu_);
    known_size_ = known_size;
    if (refused) {
      refused_at_start_ = true;
      FinishLocked(*refused);
      return;
    }
    sandbox_id_ = watched->sandbox_id;
    registered_ = true;
    if (!started_) EnqueueServedLocked(watched->envelope->Shared());
  }

  void OnProjection(ProjectionPtr projection) override {
    absl::MutexLock lock(&mu_);
    EnqueueServedLocked(std::move(projection));
  }
  void OnClosed(bool revoked) override { CloseWatch(revoked); }
  void OnRefused(const absl::Status& why) override { RefuseWatch(why); }
  // A new checkpoint: the proof of the projection sent last, if it waits for one and it exists now.
  void OnCheckpoint() override {
    if (!awaiting_.load(std::memory_order_acquire)) return;
    absl::MutexLock lock(&mu_);
    if (!awaiting_.load(std::memory_order_relaxed)) return;
    auto message = std::make_shared<gateway_v1::ServedProjection>();
    if (ProveLocked(awaiting_digest_, awaiting_version_, message.get())) EnqueueLocked(std::move(message));
  }
  void OnDone() override {
    if (registered_) {
      service_->RemoveProofWaiter(this);
      registry_->Unwatch(sandbox_id_, this);
    }
    ForgetStall();
    delete this;
  }

 private:
  void EnqueueServedLocked(ProjectionPtr projection) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const std::string& digest = projection->policy_digest();
    const uint64_t version = projection->policy_version();
    auto served = std::make_shared<SharedServed>(std::move(projection));
    ProveLocked(digest, version, served->message());
    gateway_v1::ServedProjection* message = served->message();
    EnqueueLocked(std::shared_ptr<const gateway_v1::ServedProjection>(std::move(served), message));
  }
  // Fills `message` with the proof for `digest` (true) or the reason there is none; awaiting_ says
  // whether a later checkpoint may bring it. Set before asking, so that a checkpoint published meanwhile
  // is not missed: its OnCheckpoint waits for mu_ and asks again.
  bool ProveLocked(const std::string& digest, uint64_t version, gateway_v1::ServedProjection* message)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    awaiting_digest_ = digest;
    awaiting_version_ = version;
    awaiting_.store(true, std::memory_order_release);
    auto proof = service_->ProveServed(sandbox_id_, digest, version, known_size_, message);
    if (proof.ok()) {
      known_size_ = *proof;
      awaiting_.store(false, std::memory_order_release);
      return true;
    }
    if (!absl::IsUnavailable(proof.status())) awaiting_.store(false, std::memory_order_release);  // none will come
    return false;
  }

  SandboxService* const service_;
  SandboxRegistry* const registry_;
  std::string sandbox_id_;
  bool registered_ = false;
  uint64_t known_size_ ABSL_GUARDED_BY(mu_) = 0;  // the checkpoint of the last proof sent (or the request's)
  std::atomic<bool> awaiting_{false};
  std::string awaiting_digest_ ABSL_GUARDED_BY(mu_);
  uint64_t awaiting_version_ ABSL_GUARDED_BY(mu_) = 0;
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

SandboxService::SandboxService(SandboxRegistry* registry, GatewayCore* core, WorkerPool* pool, size_t watch_backlog,
                               absl::Duration watch_stall)
    : registry_(registry),
      core_(core),
      clock_(core != nullptr ? &core->clock() : store::Clock::System()),
      pool_(pool),
      watch_backlog_(watch_backlog),
      watch_stall_(watch_stall) {
  SetMessageAllocatorFor_GetServedProjection(&served_messages_);
}

void SandboxService::Finish(grpc::ServerUnaryReactor* reactor, const char* call, grpc::Status status) {
  if (metrics_ != nullptr) metrics_->ObserveSandboxCall(call, StatusCodeName(status.error_code()));
  if (status.error_code() == grpc::StatusCode::UNAUTHENTICATED) {
    (std::string_view(call) == "ReportPolicyStatus" ? failed_report_ : failed_get_).fetch_add(1, std::memory_order_relaxed);
  }
  reactor->Finish(std::move(status));
}

void SandboxService::ObserveWatchEnd(const grpc::Status& status) {
  if (metrics_ == nullptr) return;
  // The refusal's reason code ("watch_limit: …"; common::ReasonOf), else the
  // status code: a bounded set of labels, whatever the message says.
  const std::string reason = common::ReasonOf(common::FromGrpc(status));
  metrics_->ObserveWatchEnd(reason.empty() ? absl::AsciiStrToLower(StatusCodeName(status.error_code())) : reason);
}

void SandboxService::ObserveWatchStart(const char* call, const grpc::Status& status) {
  if (metrics_ != nullptr) metrics_->ObserveSandboxCall(call, StatusCodeName(status.error_code()));
  if (status.error_code() == grpc::StatusCode::UNAUTHENTICATED) failed_watch_.fetch_add(1, std::memory_order_relaxed);
}

SandboxService::AuthFailures SandboxService::TakeAuthFailures() {
  AuthFailures out;
  out.get = failed_get_.exchange(0);
  out.watch = failed_watch_.exchange(0);
  out.report = failed_report_.exchange(0);
  return out;
}

AdmittedPtr SandboxService::ServeOrFinish(const grpc::CallbackServerContext& context, grpc::ServerUnaryReactor* reactor,
                                          const char* call) {
  auto served = registry_->Serve(BearerToken(context), clock_->NowUnix());
  if (served.ok()) return *std::move(served);
  Finish(reactor, call, absl::IsUnauthenticated(served.status()) ? kUnauthenticated : ToGrpc(served.status()));
  return nullptr;
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
  auto proof = log_->ProofFor(served->sandbox_id, served->envelope->policy_digest(), served->envelope->policy_version(),
                              request->known_size());
  if (!proof.ok()) {
    Finish(reactor, kCall, ToGrpc(proof.status()));
    return reactor;
  }
  *response = *std::move(proof);
  Finish(reactor, kCall, grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* SandboxService::GetServedProjection(grpc::CallbackServerContext* context,
                                                              const gateway_v1::GetServedProjectionRequest* request,
                                                              gateway_v1::ServedProjection* response) {
  constexpr char kCall[] = "GetServedProjection";
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto served = ServeOrFinish(*context, reactor, kCall);
  if (!served) return reactor;
  served->envelope->CopyTo(response->mutable_projection());
  ProveServed(served->sandbox_id, served->envelope->policy_digest(), served->envelope->policy_version(),
              request->known_size(), response)
      .IgnoreError();
  Finish(reactor, kCall, grpc::Status::OK);
  return reactor;
}

absl::StatusOr<uint64_t> SandboxService::ProveServed(const std::string& sandbox_id, const std::string& policy_digest,
                                                     uint64_t policy_version, uint64_t known_size,
                                                     gateway_v1::ServedProjection* message) const {
  message->clear_proof();
  message->clear_log_status();
  if (log_ == nullptr) {
    const absl::Status disabled = common::Refused(absl::StatusCode::kFailedPrecondition, "log_disabled",
                                                  "this gateway keeps no verifiable log (log_signing_key is not set)");
    message->set_log_status(std::string(disabled.message()));
    return disabled;
  }
  int64_t checkpoint_size = 0;  // the start of the next consistency proof on a stream
  if (absl::Status proved = log_->ProofInto(sandbox_id, policy_digest, policy_version, known_size, message->mutable_proof(),
                                            &checkpoint_size);
      !proved.ok()) {
    message->clear_proof();
    message->set_log_status(std::string(proved.message()));
    return proved;
  }
  return static_cast<uint64_t>(checkpoint_size);
}

void SandboxService::AddProofWaiter(ProofWaiter* waiter) {
  absl::MutexLock lock(&waiters_mu_);
  waiters_.insert(waiter);
}

void SandboxService::RemoveProofWaiter(ProofWaiter* waiter) {
  absl::MutexLock lock(&waiters_mu_);
  waiters_.erase(waiter);
}

void SandboxService::OnCheckpoint() {
  absl::MutexLock lock(&waiters_mu_);
  for (ProofWaiter* waiter : waiters_) waiter->OnCheckpoint();
}

grpc::ServerWriteReactor<gateway_v1::ServedProjection>* SandboxService::WatchServedProjection(
    grpc::CallbackServerContext* context, const gateway_v1::GetServedProjectionRequest* request) {
  return new ServedWatchReactor(this, context, registry_, BearerToken(*context), clock_->NowUnix(), watch_backlog_,
                                request->known_size());
}

grpc::ServerWriteReactor<driver_v1::Projection>* SandboxService::WatchProjection(
    grpc::CallbackServerContext* context, const gateway_v1::WatchProjectionRequest*) {
  return new WatchReactor(this, context, registry_, BearerToken(*context), clock_->NowUnix(), watch_backlog_);
}

void SandboxService::AddStalledWrite(grpc::CallbackServerContext* context) {
  absl::MutexLock lock(&stalled_mu_);
  stalled_.try_emplace(context, StalledWrite{absl::Now()});
}

void SandboxService::RemoveStalledWrite(grpc::CallbackServerContext* context) {
  absl::MutexLock lock(&stalled_mu_);
  // gRPC runs a reactor's OnDone on its executor, never inside TryCancel on the canceller's thread.
  auto not_being_cancelled = [this, context]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(stalled_mu_) {
    auto it = stalled_.find(context);
    return it == stalled_.end() || !it->second.cancelling;
  };
  stalled_mu_.Await(absl::Condition(&not_being_cancelled));
  stalled_.erase(context);
}

size_t SandboxService::CancelStalledWatches(absl::Time now) {
  size_t cancelled = 0;
  for (;;) {
    grpc::CallbackServerContext* due = nullptr;
    {
      absl::MutexLock lock(&stalled_mu_);
      for (auto& [context, stalled] : stalled_) {
        if (stalled.cancelling || now - stalled.since < watch_stall_) continue;
        stalled.cancelling = true;  // its OnDone waits until the mark is gone: the context lives meanwhile
        due = context;
        break;
      }
    }
    if (due == nullptr) return cancelled;
    // No lock held: TryCancel may run the stream's reactions on this thread. Its pending write ends
    // (OnWriteDone(false)) and the call finishes; the client sees it cancelled.
    due->TryCancel();
    ++cancelled;
    if (metrics_ != nullptr) metrics_->ObserveWatchStallCancel();
    absl::MutexLock lock(&stalled_mu_);
    stalled_.erase(due);
  }
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
  // The admission it was authenticated against goes with it: a report queued across a delete and
  // re-admission under the same id is refused, not recorded on the new admission.
  pool_->Submit([this, reactor, authenticated = std::move(authenticated), request] {
    Finish(reactor, "ReportPolicyStatus",
           ToGrpc(core_->Report(authenticated->sandbox_id, *request, &authenticated->handle_sha256)));
  });
  return reactor;
}

}  // namespace osh::gateway
