#include "gateway/core/refresh_scheduler.h"

#include <algorithm>

#include "absl/time/clock.h"

namespace osh::gateway {

int64_t RefreshLeadSeconds(int64_t issued_at_unix, int64_t expires_at_unix) {
  int64_t lead = 30;
  if (issued_at_unix > 0 && expires_at_unix > issued_at_unix) lead = (expires_at_unix - issued_at_unix) / 4;
  return std::clamp<int64_t>(lead, 1, 300);
}

RefreshScheduler::RefreshScheduler(GatewayCore* core, SandboxRegistry* registry, drivers::PolicyDriver* driver,
                                   int64_t interval_s, absl::Duration tick)
    : core_(core), registry_(registry), driver_(driver), interval_s_(interval_s), tick_(tick) {
  thread_ = std::thread([this] { Run(); });
}

RefreshScheduler::~RefreshScheduler() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

void RefreshScheduler::Run() {
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      auto stop = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stopping_; };
      mu_.AwaitWithTimeout(absl::Condition(&stop), tick_);
      if (stopping_) return;
    }
    Tick();
  }
}

void RefreshScheduler::Tick() {
  if (!driver_->available()) return;
  core_->DeliverPendingReleases();  // each release claimed by one replica (Store::PendingReleases)
  // Refreshes run once per fleet: on the replica holding the lease (always, with a single-process store).
  if (!core_->HoldsFleetLease("refresh", 3 * absl::ToInt64Milliseconds(tick_))) return;
  for (const auto& id : registry_->TakeDueForRefresh(core_->clock().NowUnix(), interval_s_, &RefreshLeadSeconds)) {
    core_->Refresh(id).IgnoreError();  // a refusal keeps the last good projection; Refresh logs and audits it
  }
}

}  // namespace osh::gateway
