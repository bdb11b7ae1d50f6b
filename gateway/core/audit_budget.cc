#include "gateway/core/audit_budget.h"

#include <algorithm>

namespace osh::gateway {

void AuditBudget::RefillLocked(absl::Time now) {
  if (refilled_at_ == absl::InfinitePast()) {  // the first use
    refilled_at_ = now;
    return;
  }
  if (now < refilled_at_) return;  // a clock stepped back earns nothing (and stepping forward again no more)
  const int64_t earned = (now - refilled_at_) / refill_;
  if (earned <= 0) return;
  tokens_ = static_cast<int>(std::min<int64_t>(burst_, tokens_ + earned));
  refilled_at_ = tokens_ == burst_ ? now : refilled_at_ + earned * refill_;
}

bool AuditBudget::Take(absl::Time now, uint64_t* held_back) {
  absl::MutexLock lock(&mu_);
  RefillLocked(now);
  if (tokens_ <= 0) {
    ++held_back_;
    return false;
  }
  --tokens_;
  *held_back = held_back_;
  held_back_ = 0;
  return true;
}

uint64_t AuditBudget::TakeHeldBack(absl::Time now, bool whatever_the_budget) {
  absl::MutexLock lock(&mu_);
  if (held_back_ == 0) return 0;
  RefillLocked(now);
  if (tokens_ <= 0 && !whatever_the_budget) return 0;
  tokens_ = std::max(0, tokens_ - 1);
  const uint64_t held = held_back_;
  held_back_ = 0;
  return held;
}

}  // namespace osh::gateway
