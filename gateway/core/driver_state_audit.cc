#include "gateway/core/driver_state_audit.h"

namespace osh::gateway {

bool DriverStateAudit::HasBudget(absl::Time now) {
  if (now - window_start_ >= kWindow || now < window_start_) {
    window_start_ = now;
    in_window_ = 0;
  }
  return in_window_ < kBurst;
}

DriverStateAudit::Event DriverStateAudit::Take(bool available, const std::string& detail, absl::Time now) {
  ++in_window_;
  any_audited_ = true;
  audited_available_ = available;
  audited_detail_ = detail;
  audited_at_ = now;
  Event event{available, detail, not_audited_};
  not_audited_ = 0;
  transition_held_ = false;
  return event;
}

std::optional<DriverStateAudit::Event> DriverStateAudit::OnReport(bool available, const std::string& detail,
                                                                  absl::Time now) {
  absl::MutexLock lock(&mu_);
  current_available_ = available;
  current_detail_ = detail;
  disagreements_ = 0;
  const bool transition = !any_audited_ || available != audited_available_;
  const bool new_text = !transition && detail != audited_detail_ &&
                        (now - audited_at_ >= kSameStateInterval || now < audited_at_);
  if ((transition || new_text) && HasBudget(now)) return Take(available, detail, now);
  ++not_audited_;
  transition_held_ = transition_held_ || transition;
  return std::nullopt;
}

std::optional<DriverStateAudit::Event> DriverStateAudit::Pending(bool available, const std::string& detail,
                                                                 absl::Time now) {
  absl::MutexLock lock(&mu_);
  if (!any_audited_) return std::nullopt;
  // The driver's own word wins over the last report heard (reports from two threads may arrive crossed),
  // once it has said so twice in a row: a report on its way (a change the connection shows a moment before
  // the report with its reason arrives) is not overtaken.
  if (available != current_available_) {
    if (++disagreements_ >= 2) {
      current_available_ = available;
      current_detail_ = detail;
      disagreements_ = 0;
    }
  } else {
    disagreements_ = 0;
  }
  const bool differs = current_available_ != audited_available_;
  if ((!differs && !transition_held_) || !HasBudget(now)) return std::nullopt;
  return Take(current_available_, current_detail_, now);
}

}  // namespace osh::gateway
