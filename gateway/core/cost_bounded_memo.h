// A value whose computation costs time in proportion to something callers do not control (a pass over
// every admitted sandbox), asked for at a rate they do (a metrics scrape, which needs no credential): it is
// computed again only once `factor` times what its last computation took (wall time) has passed since that
// computation ended, at most `most`, so computing it takes at most about 1/`factor` of a thread's time
// whatever the rate of asks. A caller that finds the kept value fresh, or another caller computing it, gets
// the kept value; the first caller (nothing kept yet) computes. A small value (a cheap computation) is
// therefore fresh only briefly: a few admitted sandboxes are counted again at nearly every ask.
//
// Thread-safe. `compute` runs on the asking thread, without the memo's lock; if it throws, the exception
// reaches that caller, and the kept value (if any) is given for a second before the next ask computes again. Time is a monotonic clock's (a wall clock stepped back
// would keep a value fresh for the step).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <utility>

#include "absl/functional/function_ref.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace osh::gateway {

template <typename Value>
class CostBoundedMemo {
 public:
  using Now = std::function<absl::Time()>;
  explicit CostBoundedMemo(double factor = 100, absl::Duration most = absl::Seconds(30), Now now = {})
      : factor_(factor), most_(most), now_(now ? std::move(now) : Now(&SteadyNow)) {}

  Value Get(absl::FunctionRef<Value()> compute) {
    {
      absl::MutexLock lock(&mu_);
      if (kept_.has_value() && (computing_ || now_() < fresh_until_)) return *kept_;
      computing_ = true;
    }
    const absl::Time started = now_();
    std::optional<Value> computed;
    try {
      computed.emplace(compute());
    } catch (...) {
      absl::MutexLock lock(&mu_);
      computing_ = false;
      // A computation that keeps throwing is asked again only after a pause (the kept value, if any, meanwhile).
      fresh_until_ = now_() + absl::Seconds(1);
      throw;
    }
    Value value = *std::move(computed);
    const absl::Time ended = now_();
    const absl::Duration cost = ended - started;
    absl::MutexLock lock(&mu_);
    computing_ = false;
    ++computations_;
    fresh_until_ = ended + std::min(most_, cost * factor_);
    kept_ = value;
    return value;
  }

  // How many times `compute` ran (for tests and metrics).
  uint64_t computations() const {
    absl::MutexLock lock(&mu_);
    return computations_;
  }

 private:
  static absl::Time SteadyNow() {
    return absl::UnixEpoch() + absl::FromChrono(std::chrono::steady_clock::now().time_since_epoch());
  }
  const double factor_;
  const absl::Duration most_;
  const Now now_;
  mutable absl::Mutex mu_;
  std::optional<Value> kept_ ABSL_GUARDED_BY(mu_);
  absl::Time fresh_until_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  bool computing_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t computations_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace osh::gateway
