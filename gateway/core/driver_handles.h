// The crash-safe driver-handle protocol of an admission, in one type. Before a handle is acquired its
// context is noted durably ("release whatever is acquired for this unless admitted"); the admission's
// own transaction settles the note (store::SandboxRecord::acquisition_id); a refused admission releases
// the handle at once or queues the release durably; after a crash the note becomes a due release, and
// that release re-acquires by context and releases what comes back — unless the sandbox was admitted
// since. So no handle the gateway caused is left live in the driver without a sandbox, whatever fails.
//
// Thread-safe. The store, driver and registry must outlive it.
#pragma once

#include <atomic>
#include <functional>
#include <set>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "drivers/policy_driver.h"
#include "gateway/core/sandbox_registry.h"
#include "store/store.h"

namespace osh::gateway {

// The driver did not answer (down, or too slow): what was asked may or may not have happened.
bool DriverUnreachable(const absl::Status& status);
// A driver's error as the gateway reports it: `driver_unavailable: <what>: …` (UNAVAILABLE) when the
// driver could not be reached, else the driver's own code with `<what>: …`.
absl::Status DriverError(const absl::Status& status, const std::string& what);

// Sandbox ids with an admission (or a release by context) in flight: one at a time per id.
class AdmissionSlots {
 public:
  class Slot {
   public:
    Slot(Slot&& other) noexcept : owner_(other.owner_), id_(std::move(other.id_)) { other.owner_ = nullptr; }
    Slot(const Slot&) = delete;
    ~Slot();
    bool taken() const { return owner_ != nullptr; }

   private:
    friend class AdmissionSlots;
    Slot(AdmissionSlots* owner, std::string id) : owner_(owner), id_(std::move(id)) {}
    AdmissionSlots* owner_;  // null: not taken (someone else holds the id)
    std::string id_;
  };
  // Takes the id for as long as the Slot lives; `taken()` is false when it is already held.
  Slot Take(const std::string& sandbox_id);

 private:
  absl::Mutex mu_;
  std::set<std::string> ids_ ABSL_GUARDED_BY(mu_);
};

class DriverHandles {
 public:
  DriverHandles(store::ReleaseQueue* store, drivers::PolicyDriver* driver, SandboxRegistry* registry, AdmissionSlots* slots)
      : store_(store), driver_(driver), registry_(registry), slots_(slots) {}

  struct Acquired {
    int64_t intent = 0;  // the durable note this admission settles (0: the driver's handles need none)
    std::string handle;
    std::string sandbox_id;
  };
  // Notes the intent (when the driver's handles need releasing), then asks the driver. A driver error is
  // returned as the driver gave it, with the note settled: dropped when the driver answered, made a due
  // release by context when it could not be reached (a handle may exist that we never heard of).
  absl::StatusOr<Acquired> Acquire(const drivers::driver_v1::RuntimeContext& context);
  // Acquire without waiting on the disk or the driver: the note is group-committed and the driver asked
  // asynchronously; `done` runs on the thread that completed the last step. Settling the note after a
  // driver error writes the store, so it runs through `offload` (work that may block), then `done`.
  using Offload = std::function<void(std::function<void()>)>;
  void AcquireAsync(const drivers::driver_v1::RuntimeContext& context, const Offload& offload,
                    std::function<void(absl::StatusOr<Acquired>)> done);
  // A handle that will not be admitted: released now (audited), or its release queued durably — unless
  // it is the live handle of the sandbox admitted under that id (a driver with one handle per context
  // gives a racing admission the winner's handle): then only the note is settled.
  void Release(const Acquired& acquired);
  // Delivers queued releases in order, each removed (and audited) only once the driver acknowledged it;
  // stops at the first the driver cannot take. One delivery at a time.
  // `wait` false (a delete on the shared admin pool): returns at once when another delivery is under way
  // rather than queueing behind it. A release the driver refuses for good (INVALID_ARGUMENT,
  // PERMISSION_DENIED, FAILED_PRECONDITION, OUT_OF_RANGE, UNIMPLEMENTED) is dropped, audited `refused` and
  // counted as a possible leak, so that it does not hold every later release back.
  void DeliverQueued(bool wait = true);
  // Recoveries whose handle may have leaked: the driver does not honour idempotency keys (SPEC §3.2).
  uint64_t possible_leaks() const { return possible_leaks_.load(std::memory_order_relaxed); }

 private:
  void DeliverLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(deliver_mu_);
  // A release the driver refuses for good: `event` says so (outcome refused), counted and logged.
  void RefusedRelease(int64_t id, const std::string& sandbox_id, const absl::Status& status, store::AuditEvent* event);

  store::ReleaseQueue* const store_;
  drivers::PolicyDriver* const driver_;
  SandboxRegistry* const registry_;
  AdmissionSlots* const slots_;
  absl::Mutex deliver_mu_;  // each queued release is sent once
  std::atomic<uint64_t> possible_leaks_{0};
};

// A fresh idempotency key for one admission (128 random bits).
std::string NewIdempotencyKey();

}  // namespace osh::gateway
