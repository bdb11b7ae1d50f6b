#include "gateway/core/driver_handles.h"

#include "store/audit_actor.h"

#include <openssl/rand.h>

#include "absl/strings/escaping.h"

#include "absl/strings/str_cat.h"
#include "trust/audit_vocabulary.h"
#include "common/errors.h"
#include "gateway/core/context_limits.h"
#include "gateway/core/log.h"

namespace osh::gateway {

namespace audit = trust::audit;

bool DriverUnreachable(const absl::Status& status) {
  return absl::IsUnavailable(status) || absl::IsDeadlineExceeded(status);
}

absl::Status DriverError(const absl::Status& status, const std::string& what) {
  // The driver's message goes on to the caller, the audit log and the logs: bounded and escaped.
  const std::string message = BoundedText(std::string(status.message()), 1024);
  // The builtin driver's own store failed: a storage error (scrubbed at the edge), not the driver's words.
  if (common::IsStorageError(status)) return common::Annotated(status, what);
  if (DriverUnreachable(status)) {
    return common::Refused(absl::StatusCode::kUnavailable, "driver_unavailable", absl::StrCat(what, ": ", message));
  }
  return common::Annotated(absl::Status(status.code(), message), what);
}

AdmissionSlots::Slot::~Slot() {
  if (owner_ == nullptr) return;
  absl::MutexLock lock(&owner_->mu_);
  owner_->ids_.erase(id_);
}

AdmissionSlots::Slot AdmissionSlots::Take(const std::string& sandbox_id) {
  absl::MutexLock lock(&mu_);
  return Slot(ids_.insert(sandbox_id).second ? this : nullptr, sandbox_id);
}

std::string NewIdempotencyKey() {
  unsigned char bytes[16];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) std::abort();  // a repeated key would alias two admissions
  return absl::StrCat("adm_", absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(bytes), sizeof(bytes))));
}

absl::StatusOr<DriverHandles::Acquired> DriverHandles::Acquire(const drivers::driver_v1::RuntimeContext& context) {
  Acquired acquired;
  acquired.sandbox_id = context.sandbox_id();
  std::string key;
  if (driver_->handles_need_release()) {
    key = NewIdempotencyKey();
    auto recorded = store_->RecordAdmissionIntent(context, key);
    if (!recorded.ok()) return recorded.status();
    acquired.intent = *recorded;
  }
  auto handle = driver_->AcquireHandle(context, key);
  if (!handle.ok()) {
    if (acquired.intent != 0) {
      absl::Status settled = DriverUnreachable(handle.status()) ? store_->QueueAcquiredRelease(acquired.intent, "")
                                                                : store_->DropAdmissionIntent(acquired.intent);
      if (!settled.ok()) LogError(absl::StrCat("cannot settle an admission intent: ", settled.ToString()));
    }
    return handle.status();
  }
  acquired.handle = *std::move(handle);
  return acquired;
}

void DriverHandles::AcquireAsync(const drivers::driver_v1::RuntimeContext& context, const Offload& offload,
                                 std::function<void(absl::StatusOr<Acquired>)> done) {
  auto acquired = std::make_shared<Acquired>();
  acquired->sandbox_id = context.sandbox_id();
  auto ask = [this, context, offload, acquired, done](std::string key) mutable {
    driver_->AcquireHandleAsync(context, key, [this, offload, acquired, done](absl::StatusOr<std::string> handle) mutable {
      if (handle.ok()) {
        acquired->handle = *std::move(handle);
        return done(std::move(*acquired));
      }
      if (acquired->intent == 0) return done(handle.status());
      offload([this, acquired, done = std::move(done), status = handle.status()] {
        absl::Status settled = DriverUnreachable(status) ? store_->QueueAcquiredRelease(acquired->intent, "")
                                                         : store_->DropAdmissionIntent(acquired->intent);
        if (!settled.ok()) LogError(absl::StrCat("cannot settle an admission intent: ", settled.ToString()));
        done(status);
      });
    });
  };
  if (!driver_->handles_need_release()) return ask("");
  std::string key = NewIdempotencyKey();
  store_->RecordAdmissionIntentAsync(
      context, key, [acquired, key, ask = std::move(ask), done](absl::StatusOr<int64_t> recorded) mutable {
        if (!recorded.ok()) return done(recorded.status());
        acquired->intent = *recorded;
        ask(std::move(key));
      });
}

void DriverHandles::Release(const Acquired& acquired) {
  if (acquired.intent == 0) return;  // nothing to release (see PolicyDriver::handles_need_release)
  const bool admitted_holds_it = registry_->HoldsDriverHandle(acquired.sandbox_id, acquired.handle);
  const absl::Status status = admitted_holds_it ? absl::OkStatus() : driver_->ReleaseHandle(acquired.handle);
  if (status.ok() || absl::IsNotFound(status)) {
    store::AuditEvent event;
    event.type = audit::Type::kRelease;
    event.sandbox_id = acquired.sandbox_id;
    event.outcome = audit::Outcome::kOk;
    event.reason = admitted_holds_it ? "driver handle of a refused admission kept: it is the admitted sandbox's"
                                     : "driver handle of a refused admission released";
    if (auto s = store_->CompleteRelease(acquired.intent, std::move(event)); !s.ok()) {
      LogError(absl::StrCat("cannot complete a driver handle release: ", s.ToString()));
    }
    return;
  }
  LogWarning(absl::StrCat("driver handle release queued (driver: ", status.message(), ")"));
  if (auto s = store_->QueueAcquiredRelease(acquired.intent, acquired.handle); !s.ok()) {
    LogError(absl::StrCat("cannot queue a driver handle release: ", s.ToString()));
  }
}

namespace {

// A driver's answer that asking again will not change.
bool RefusedForGood(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kUnimplemented:
      return true;
    default:
      return false;
  }
}

}  // namespace

void DriverHandles::RefusedRelease(int64_t id, const std::string& sandbox_id, const absl::Status& status,
                                   store::AuditEvent* event) {
  event->outcome = audit::Outcome::kRefused;
  event->reason = absl::StrCat("driver handle release #", id, " dropped: the driver refuses it for good (",
                               absl::StatusCodeToString(status.code()), ": ",
                               BoundedText(std::string(status.message()), 1024),
                               "); the handle may stay live in the driver");
  possible_leaks_.fetch_add(1, std::memory_order_relaxed);
  LogWarning(absl::StrCat("sandbox ", sandbox_id, ": ", event->reason));
}

void DriverHandles::DeliverQueued(bool wait) {
  if (!driver_->available()) return;
  if (wait) {
    absl::MutexLock lock(&deliver_mu_);
    DeliverLocked();
    return;
  }
  if (!deliver_mu_.TryLock()) return;  // the delivery under way takes the rest, in order
  DeliverLocked();
  deliver_mu_.Unlock();
}

void DriverHandles::DeliverLocked() {
  // The gateway's own work, whoever's call runs it (review 114: a Delete delivered the whole queue on the
  // admin's thread, and every release — other sandboxes', crash recovery's — carried that caller's uid).
  // The deletion that queued a release carries its actor.
  store::AuditActorScope gateway_itself("");
  auto pending = store_->PendingReleases();
  if (!pending.ok()) return;
  for (const auto& release : *pending) {
    store::AuditEvent event;
    event.type = audit::Type::kRelease;
    event.sandbox_id = release.context.sandbox_id();
    event.outcome = audit::Outcome::kOk;
    if (release.driver_handle.empty()) {
      // The handle of an admission that never finished was not recorded. Re-acquire it for the same
      // context (drivers may return the same handle) and release that, unless the sandbox was
      // admitted since or is being admitted now: then its live handle must stay.
      const AdmissionSlots::Slot slot = slots_->Take(release.context.sandbox_id());
      if (!slot.taken()) continue;
      if (registry_->Contains(release.context.sandbox_id())) {
        event.reason = absl::StrCat("release #", release.id, " dropped: the sandbox was admitted since");
      } else {
        // With the admission's own idempotency key, a driver that honours keys returns exactly the handle
        // it gave the crashed admission. One that does not may have given that admission another handle,
        // which nothing can name now: counted and logged as a possible leak.
        const bool by_key = !release.idempotency_key.empty() && driver_->honours_idempotency_key();
        auto handle = driver_->AcquireHandle(release.context, release.idempotency_key);
        if (!handle.ok() && DriverUnreachable(handle.status())) return;  // down: keep the rest queued, in order
        // A handle the driver will not give (NOT_FOUND: it keeps none for the context, …) is nothing to
        // release; one it gives but refuses to release for good is dropped (refused).
        absl::Status refused = handle.ok() || !RefusedForGood(handle.status()) ? absl::OkStatus() : handle.status();
        if (handle.ok()) {
          const absl::Status released = driver_->ReleaseHandle(*handle);
          if (!released.ok() && !absl::IsNotFound(released) && !RefusedForGood(released)) return;
          if (!released.ok() && !absl::IsNotFound(released)) refused = released;
        }
        if (!refused.ok()) {
          RefusedRelease(release.id, release.context.sandbox_id(), refused, &event);
        } else {
          event.reason = absl::StrCat("handle of an unfinished admission released (#", release.id,
                                      by_key ? ", by its idempotency key)" : ", by context)");
        }
        if (refused.ok() && !by_key) {  // (a refused one is counted as a possible leak already)
          possible_leaks_.fetch_add(1, std::memory_order_relaxed);
          absl::StrAppend(&event.reason, "; the driver does not honour idempotency keys, so a handle it gave the "
                                         "unfinished admission may stay live in the driver");
          LogWarning(absl::StrCat("release #", release.id, " for sandbox ", release.context.sandbox_id(),
                                  ": the driver does not advertise idempotent_acquire; the unfinished admission's own "
                                  "handle may have leaked in the driver"));
        }
      }
    } else {
      // Not while the sandbox is being admitted again: a driver with one handle per context may have
      // given that admission this very handle, which the registry holds only once it commits (review 109).
      // Left queued; delivered (or dropped as the admitted sandbox's) after the admission ends.
      const AdmissionSlots::Slot slot = slots_->Take(release.context.sandbox_id());
      if (!slot.taken()) continue;
      if (registry_->HoldsDriverHandle(release.context.sandbox_id(), release.driver_handle)) {
        event.reason = absl::StrCat("driver handle release #", release.id, " dropped: it is the admitted sandbox's");
      } else {
        const absl::Status status = driver_->ReleaseHandle(release.driver_handle);
        if (!status.ok() && !absl::IsNotFound(status) && !RefusedForGood(status)) return;  // keep the rest, in order
        if (status.ok() || absl::IsNotFound(status)) {
          event.reason = absl::StrCat("driver handle release #", release.id, " delivered");
        } else {
          RefusedRelease(release.id, release.context.sandbox_id(), status, &event);
        }
      }
    }
    if (auto s = store_->CompleteRelease(release.id, std::move(event)); !s.ok()) {
      LogError(absl::StrCat("cannot complete release #", release.id, ": ", s.ToString()));
      return;
    }
  }
}

}  // namespace osh::gateway
