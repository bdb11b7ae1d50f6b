// Which of a third-party driver's up/down reports are audited (docs/audit.md, `driver_up` / `driver_down`),
// so a flapping driver, or one whose error text changes on every probe, cannot flood the audit log:
// - a transition (up ↔ down, or the first report) is audited while fewer than kBurst driver events were
//   audited in the current minute;
// - the same state with another text is audited at most once every kSameStateInterval (and within the
//   minute's burst);
// - anything else is counted, not audited; the next audited event names how many were not
//   (`audit_context["driver_reports_not_audited"]`), and Pending (asked once a second, told the state the
//   driver is in) audits that state when the last audited one is not it any more, or when a transition was
//   held back (a short flap), as soon as the budget allows — so the log's last driver event always ends up
//   saying what the driver is, and a flap leaves a trace.
// A clock that steps back restarts the window (and counts as the interval having passed).
// Pure bookkeeping over the times it is given. Thread-safe; the caller that records the events it hands
// out keeps them in order (one lock over deciding and recording: GatewayCore).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace osh::gateway {

class DriverStateAudit {
 public:
  static constexpr int kBurst = 6;
  static constexpr absl::Duration kWindow = absl::Minutes(1);
  static constexpr absl::Duration kSameStateInterval = absl::Minutes(10);

  // A report to audit now: its state and text, and how many reports before it were not audited.
  struct Event {
    bool available = false;
    std::string detail;
    uint64_t not_audited = 0;
  };

  // The driver reported `available` with `detail` at `now`: the event to audit, or nullopt (counted).
  std::optional<Event> OnReport(bool available, const std::string& detail, absl::Time now);
  // `available` / `detail`: the state the driver is in now (taken over the last report once two calls in a
  // row say so). An event when the last audited one does not say that state, or a transition was held back
  // since, and the budget allows now.
  std::optional<Event> Pending(bool available, const std::string& detail, absl::Time now);

 private:
  bool HasBudget(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Event Take(bool available, const std::string& detail, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  bool any_audited_ ABSL_GUARDED_BY(mu_) = false;
  bool audited_available_ ABSL_GUARDED_BY(mu_) = false;
  std::string audited_detail_ ABSL_GUARDED_BY(mu_);
  absl::Time audited_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  bool current_available_ ABSL_GUARDED_BY(mu_) = false;
  std::string current_detail_ ABSL_GUARDED_BY(mu_);
  bool transition_held_ ABSL_GUARDED_BY(mu_) = false;  // a held-back report was a transition
  int disagreements_ ABSL_GUARDED_BY(mu_) = 0;          // Pending calls in a row the connection disagreed
  absl::Time window_start_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  int in_window_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t not_audited_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace osh::gateway
