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
    PumpLocked();
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok) {
      CloseLocked(absl::CancelledError("write failed"));
      return;
    }
    PumpLocked();
  }

  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    CloseLocked(absl::CancelledError("cancelled"));
  }

  void OnDone() override {
    if (subscription_ != nullptr) feed_->Unsubscribe(subscription_);  // no wake after this
    delete this;
  }

 private:
  void Pump() {
    absl::MutexLock lock(&mu_);
    PumpLocked();
  }
  // Writes the next event, or finishes with the subscription's end. A write still pending long after the
  // end (a reader that stopped reading) cancels the call rather than holding it.
  void PumpLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_ || subscription_ == nullptr) return;
    if (writing_) {
      if (!closing_) {
        if (absl::Status end = subscription_->end(); !end.ok()) {  // ended while a write is pending
          closing_ = ToGrpc(end);
          closing_since_ = absl::Now();
        }
      }
      // Stopping: at once; otherwise (lagging) a reader that still reads gets the reason after its write.
      const bool stuck = closing_ && (closing_->error_code() == grpc::StatusCode::UNAVAILABLE ||
                                      absl::Now() - closing_since_ > kStuckWriteGrace);
      if (stuck && !cancelled_) {
        cancelled_ = true;
        context_->TryCancel();  // the pending write completes (OnWriteDone(false)), then the call finishes
      }
      return;
    }
    if (closing_) {
      FinishLocked(*closing_);
      return;
    }
    AuditSubscription::Next next = subscription_->Take();
    if (!next.end.ok()) {
      CloseLocked(next.end);
      return;
    }
    if (next.event == nullptr) return;
    grpc::Slice slice(next.event->SerializeAsString());
    response_ = grpc::ByteBuffer(&slice, 1);
    writing_ = true;
    StartWrite(&response_);
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
