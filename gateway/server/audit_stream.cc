#include "gateway/server/audit_stream.h"

#include <optional>

#include <grpcpp/support/byte_buffer.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/errors.h"
#include "gateway/server/status_conversion.h"
#include "openshell/policy/gateway/v1/gateway.pb.h"

namespace osh::gateway {
namespace {

class AuditStreamReactor final : public grpc::ServerGenericBidiReactor {
 public:
  AuditStreamReactor(AuditFeed* feed, Metrics* metrics, grpc::GenericCallbackServerContext* context)
      : feed_(feed), metrics_(metrics), context_(context), started_(absl::Now()) {
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    openshell::policy::gateway::v1::WatchAuditEventsRequest request;
    std::vector<grpc::Slice> slices;
    std::string bytes;
    if (ok && request_.Dump(&slices).ok()) {
      for (const auto& slice : slices) bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
    }
    bool cancel = false;
    {
      absl::MutexLock lock(&mu_);
      if (!ok || !request.ParseFromString(bytes)) {
        CloseLocked(absl::InvalidArgumentError("WatchAuditEvents: the request does not decode"));
        return;
      }
      auto subscribed = feed_->Subscribe(request.after_seq(), [this] { Pump(); });
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
    AuditSubscription::Next next = subscription_->Take();
    if (!next.end.ok()) {
      CloseLocked(next.end);
      return false;
    }
    if (next.event == nullptr) return false;
    grpc::Slice slice(next.event->SerializeAsString());
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
      metrics_->ObserveAdminCall("WatchAuditEvents", common::FromGrpc(status), absl::Now() - started_);
    }
    Finish(std::move(status));
  }

  AuditFeed* const feed_;
  Metrics* const metrics_;
  grpc::GenericCallbackServerContext* const context_;  // valid until OnDone
  const absl::Time started_;
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

grpc::ServerGenericBidiReactor* NewAuditStreamReactor(AuditFeed* feed, Metrics* metrics,
                                                      grpc::GenericCallbackServerContext* context) {
  return new AuditStreamReactor(feed, metrics, context);
}

}  // namespace osh::gateway
