#include "gateway/core/driver_state_audit.h"

namespace osh::gateway {

bool DriverStateAudit::HasBudget(absl::Time now) {
  if (now - window_start_ >= kWindow) {
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
  return event;
}

std::optional<DriverStateAudit::Event> DriverStateAudit::OnReport(bool available, const std::string& detail,
                                                                  absl::Time now) {
  absl::MutexLock lock(&mu_);
  current_available_ = available;
  current_detail_ = detail;
  const bool transition = !any_audited_ || available != audited_available_;
  const bool new_text = !transition && detail != audited_detail_ && now - audited_at_ >= kSameStateInterval;
  if ((transition || new_text) && HasBudget(now)) return Take(available, detail, now);
  ++not_audited_;
  return std::nullopt;
}

std::optional<DriverStateAudit::Event> DriverStateAudit::Pending(absl::Time now) {
  absl::MutexLock lock(&mu_);
  if (!any_audited_ || current_available_ == audited_available_ || !HasBudget(now)) return std::nullopt;
  return Take(current_available_, current_detail_, now);
}

}  // namespace osh::gateway
