#include "gateway/server/audit_stream.h"

#include <optional>

#include <grpcpp/support/byte_buffer.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/errors.h"
#include "gateway/core/sandbox_events.h"
#include "gateway/server/status_conversion.h"
#include "openshell/policy/gateway/v1/gateway.pb.h"

namespace osh::gateway {
namespace {

class AuditStreamReactor final : public grpc::ServerGenericBidiReactor {
 public:
  AuditStreamReactor(AuditFeed* feed, Metrics* metrics, grpc::GenericCallbackServerContext* context, std::string method,
                     AuditStreamOpener opener)
      : feed_(feed), metrics_(metrics), context_(context), started_(absl::Now()), method_(std::move(method)),
        opener_(std::move(opener)) {
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    std::vector<grpc::Slice> slices;
    std::string bytes;
    if (ok && request_.Dump(&slices).ok()) {
      for (const auto& slice : slices) bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
    }
    bool cancel = false;
    {
      absl::MutexLock lock(&mu_);
      absl::StatusOr<AuditStreamSpec> spec =
          ok ? opener_(bytes) : absl::InvalidArgumentError(absl::StrCat(method_, ": no request"));
      if (!spec.ok()) {
        CloseLocked(spec.status());
        return;
      }
      render_ = std::move(spec->render);
      auto subscribed = feed_->Subscribe(spec->after_seq, [this] { Pump(); });
      if (!subscribed.ok()) {
        CloseLocked(subscribed.status());
        return;
      }
      subscription_ = *std::move(subscribed);
      cancel = PumpLocked();
    }
    if (cancel) context_->TryCancel();
  }

  void OnWriteDone(bool ok) override {
    bool cancel = false;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) {  // cancelled (by us, a stuck write) or the client went away: finish with what ended it
        FinishLocked(closing_.value_or(grpc::Status(grpc::StatusCode::CANCELLED, "write failed")));
        return;
      }
      cancel = PumpLocked();
    }
    if (cancel) context_->TryCancel();
  }

  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    CloseLocked(absl::CancelledError("cancelled"));
    if (closing_ && !writing_) FinishLocked(*closing_);  // closing while a write was pending: it has ended
  }

  void OnDone() override {
    if (subscription_ != nullptr) feed_->Unsubscribe(subscription_);  // no wake after this
    delete this;
  }

 private:
  // A subscription wake (the feed thread, or Close), which holds the subscription until it returns.
  void Pump() {
    bool cancel = false;
    {
      absl::MutexLock lock(&mu_);
      cancel = PumpLocked();
    }
    if (cancel) context_->TryCancel();
  }
  // Writes the next event, or finishes with the subscription's end. Returns true when the call must be
  // cancelled — a write still pending long after the end (a reader that stopped reading) — which the caller
  // does once it released mu_ (TryCancel may run OnCancel on this thread).
  bool PumpLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_ || subscription_ == nullptr) return false;
    if (writing_) {
      const absl::Status end = subscription_->end();
      if (!closing_ && !end.ok()) {  // ended while a write is pending
        closing_ = ToGrpc(end);
        closing_since_ = absl::Now();
      }
      // Stopping: at once; otherwise (lagging) a reader that still reads gets the reason after its write.
      const bool stuck = closing_ && (absl::IsUnavailable(end) || absl::Now() - closing_since_ > kStuckWriteGrace);
      if (stuck && !cancelled_) {
        cancelled_ = true;
        return true;  // the pending write completes (OnWriteDone(false)), then the call finishes
      }
      return false;
    }
    if (closing_) {
      FinishLocked(*closing_);
      return false;
    }
    std::optional<std::string> message;
    while (!message) {  // the events the stream passes over are taken at once
      AuditSubscription::Next next = subscription_->Take();
      if (!next.end.ok()) {
        CloseLocked(next.end);
        return false;
      }
      if (next.event == nullptr) return false;
      message = render_(*next.event);
    }
    grpc::Slice slice(*message);
    response_ = grpc::ByteBuffer(&slice, 1);
    writing_ = true;
    StartWrite(&response_);
    return false;
  }
  void CloseLocked(absl::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_ || closing_) return;
    closing_ = ToGrpc(status);
    closing_since_ = absl::Now();
    if (!writing_) FinishLocked(*closing_);
  }
  void FinishLocked(grpc::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return;
    finished_ = true;
    if (metrics_ != nullptr) {
      metrics_->ObserveAdminCall(method_, common::FromGrpc(status), absl::Now() - started_);
    }
    Finish(std::move(status));
  }

  AuditFeed* const feed_;
  Metrics* const metrics_;
  grpc::GenericCallbackServerContext* const context_;  // valid until OnDone
  const absl::Time started_;
  const std::string method_;
  const AuditStreamOpener opener_;
  std::function<std::optional<std::string>(const openshell::policy::gateway::v1::AuditEvent&)> render_;  // set once read
  grpc::ByteBuffer request_;
  grpc::ByteBuffer response_;
  std::shared_ptr<AuditSubscription> subscription_;
  absl::Mutex mu_;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<grpc::Status> closing_ ABSL_GUARDED_BY(mu_);
  absl::Time closing_since_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

AuditStreamOpener AuditEventsOpener() {
  return [](const std::string& bytes) -> absl::StatusOr<AuditStreamSpec> {
    openshell::policy::gateway::v1::WatchAuditEventsRequest request;
    if (!request.ParseFromString(bytes)) return absl::InvalidArgumentError("WatchAuditEvents: the request does not decode");
    return AuditStreamSpec{request.after_seq(), [](const openshell::policy::gateway::v1::AuditEvent& event) {
                             return std::optional<std::string>(event.SerializeAsString());
                           }};
  };
}

AuditStreamOpener SandboxEventsOpener() {
  return [](const std::string& bytes) -> absl::StatusOr<AuditStreamSpec> {
    openshell::policy::gateway::v1::WatchSandboxesRequest request;
    if (!request.ParseFromString(bytes)) return absl::InvalidArgumentError("WatchSandboxes: the request does not decode");
    return AuditStreamSpec{request.after_seq(), [sandbox_id = request.sandbox_id()](
                                                    const openshell::policy::gateway::v1::AuditEvent& event) {
                             std::optional<std::string> out;
                             auto change = SandboxEventOf(event);
                             if (change && SandboxFilterKeeps(*change, sandbox_id)) out = change->SerializeAsString();
                             return out;
                           }};
  };
}

grpc::ServerGenericBidiReactor* NewAuditStreamReactor(AuditFeed* feed, Metrics* metrics,
                                                      grpc::GenericCallbackServerContext* context, std::string method,
                                                      AuditStreamOpener opener) {
  return new AuditStreamReactor(feed, metrics, context, std::move(method), std::move(opener));
}

}  // namespace osh::gateway
