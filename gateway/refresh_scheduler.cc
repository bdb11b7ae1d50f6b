#include "gateway/refresh_scheduler.h"

#include <algorithm>

#include "absl/time/clock.h"
#include "gateway/clock.h"

namespace osh::gateway {

int64_t RefreshLeadSeconds(const driver_v1::Projection& projection) {
  int64_t lead = 30;
  if (projection.issued_at_unix() > 0 && projection.expires_at_unix() > projection.issued_at_unix()) {
    lead = (projection.expires_at_unix() - projection.issued_at_unix()) / 4;
  }
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
  core_->DeliverPendingReleases();
  const int64_t now = NowUnix();
  std::map<std::string, int64_t> seen;
  for (const auto& snapshot : registry_->All()) {
    const std::string& id = snapshot.record.context.sandbox_id();
    const auto& p = *snapshot.projection;
    auto it = last_attempt_.find(id);
    const int64_t last = it != last_attempt_.end() ? it->second : snapshot.record.updated_at_unix;
    seen[id] = last;
    const bool interval_due = interval_s_ > 0 && now - last >= interval_s_;
    const bool expiry_due = p.expires_at_unix() != 0 && now >= p.expires_at_unix() - RefreshLeadSeconds(p) && now > last;
    if (!interval_due && !expiry_due) continue;
    seen[id] = now;
    core_->Refresh(id).IgnoreError();  // a refusal keeps the last good projection; Refresh logs and audits it
  }
  last_attempt_ = std::move(seen);  // forgets deleted sandboxes
}

}  // namespace osh::gateway
