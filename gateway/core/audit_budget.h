// A budget of audit events for something a caller can repeat at will — a call refused at the mutation gate
// (review 114: a caller looping on a refused change wrote an event, a verifiable-log entry, each). `burst`
// events at once, then one every `refill`; what the budget refuses is counted, and the next event audited
// says how many were not audited one by one (Take, or TakeHeldBack for a summary of its own).
//
// Thread-safe. Times are the caller's (a test gives them; the gateway a steady clock's, which never steps
// back; one that does refills nothing until it is past the last refill again).
#pragma once

#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace osh::gateway {

class AuditBudget {
 public:
  AuditBudget(int burst, absl::Duration refill) : burst_(burst), refill_(refill), tokens_(burst) {}

  // Whether to audit an occurrence at `now`. When true, *held_back is how many were counted (not audited)
  // since the last event taken, and the count restarts; when false, this one is counted.
  bool Take(absl::Time now, uint64_t* held_back);
  // When occurrences are counted and the budget allows an event at `now` (or `whatever_the_budget`: the
  // last summary, at a stop): how many (the count restarts), for a summary event; else 0, nothing changes.
  uint64_t TakeHeldBack(absl::Time now, bool whatever_the_budget = false);

 private:
  void RefillLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int burst_;
  const absl::Duration refill_;
  absl::Mutex mu_;
  int tokens_ ABSL_GUARDED_BY(mu_);
  absl::Time refilled_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  uint64_t held_back_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace osh::gateway
