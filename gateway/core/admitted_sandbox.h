// One admitted sandbox as the gateway serves it: an immutable value, shared.
//
// The registry (gateway/core/sandbox_registry.h) publishes a new AdmittedSandbox for every change it
// applies (admission, new projection, a replica's change) and never changes one it has handed out but for
// `verified`, which goes once from false to true when a loaded sandbox is re-verified, and `unservable`,
// set when that fails (and cleared by a trust-store reload), so a reader holds a consistent sandbox (its envelope, verification and times of one
// moment) without a lock, for as long as it keeps the pointer. What sandboxes report about themselves is not part of it: that is the
// report recorder's (gateway/core/report_recorder.h).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "store/change.h"

namespace osh::gateway {

// The one field of an AdmittedSandbox that changes after it is published: false → true, once. Copyable (a
// copy takes the current value); reads and the one write need no lock.
class VerifiedFlag {
 public:
  VerifiedFlag(bool verified = false) : verified_(verified) {}  // NOLINT: a bool where a flag is wanted
  VerifiedFlag(const VerifiedFlag& other) : verified_(other.get()) {}
  VerifiedFlag& operator=(const VerifiedFlag& other) {
    verified_.store(other.get(), std::memory_order_release);
    return *this;
  }
  bool get() const { return verified_.load(std::memory_order_acquire); }
  operator bool() const { return get(); }  // NOLINT: reads as the bool it stands for
  // Re-verified: set on a published sandbox (under the registry's lock, which decides it may be).
  void Set() const { verified_.store(true, std::memory_order_release); }

 private:
  mutable std::atomic<bool> verified_;
};

// Why a published sandbox is not served: its stored envelope failed re-verification (as of its record:
// verification, admission time) under the trust store in force. Empty: not marked. Set and cleared on a
// published sandbox (each call takes its own small lock); a copy — a new publication — starts unmarked,
// so what it holds is checked again.
class UnservableMark {
 public:
  UnservableMark() = default;
  UnservableMark(const UnservableMark&) {}
  UnservableMark& operator=(const UnservableMark&) { return *this; }
  void Set(std::string why) const {
    absl::MutexLock lock(&mu_);
    why_ = std::move(why);
  }
  void Clear() const { Set(""); }
  std::string Get() const {
    absl::MutexLock lock(&mu_);
    return why_;
  }

 private:
  mutable absl::Mutex mu_;
  mutable std::string why_ ABSL_GUARDED_BY(mu_);
};

struct AdmittedSandbox {
  // How a sandbox's projection was verified; one object shared by every sandbox verified alike.
  struct Verification {
    store::Verification verification = store::Verification::kNone;
    std::vector<std::string> key_ids;
  };
  using HandleHash = std::array<char, 32>;  // SHA-256 of the sandbox handle, inline (no allocation)

  std::string sandbox_id;
  std::string context_bytes;   // the serialized RuntimeContext
  HandleHash handle_sha256{};
  std::string driver_handle;
  store::EnvelopePtr envelope;  // never null
  std::shared_ptr<const Verification> verified_by;  // never null
  int64_t admitted_at_unix = 0;
  int64_t updated_at_unix = 0;
  // False for a sandbox loaded from the store at start-up until it is re-verified (then set, not
  // re-published: re-verifying a fleet after a restart copies nothing): nothing unverified is served.
  VerifiedFlag verified;
  // Set when re-verification failed (then never verified again at each fetch; a trust-store reload clears
  // it): the serving rule answers FAILED_PRECONDITION with it. Per sandbox, not per envelope: envelopes
  // are shared, and the verdict depends on each record's verification and admission time.
  UnservableMark unservable;
  // Published from another replica's record this replica could not verify, over an envelope its watchers
  // were not sent: they are sent it once it is verified (a trust-store reload, a fetch).
  bool watchers_untold = false;
  // The body admitted before the current one, since this process started (not stored: after a restart
  // only the current one is known). A sandbox still reporting about it is behind, not wrong.
  store::BodyPtr previous_body;
};

using AdmittedPtr = std::shared_ptr<const AdmittedSandbox>;

}  // namespace osh::gateway
