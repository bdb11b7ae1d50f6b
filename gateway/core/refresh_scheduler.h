// Background upkeep, once a tick: refreshes admitted sandboxes that are due (every refresh_interval_s
// when it is set, and before a projection with an expiry runs out), and delivers queued driver-handle
// releases while the driver is reachable. Owns its thread; the destructor stops and joins it.
#pragma once

#include <map>
#include <string>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "drivers/policy_driver.h"
#include "gateway/core/gateway_core.h"
#include "gateway/core/sandbox_registry.h"

namespace osh::gateway {

// When a projection that expires should be refreshed: a quarter of its stated lifetime before the end
// (30 s when it states no issue time), at least 1 s and at most 300 s before.
int64_t RefreshLeadSeconds(int64_t issued_at_unix, int64_t expires_at_unix);

class RefreshScheduler {
 public:
  RefreshScheduler(GatewayCore* core, SandboxRegistry* registry, drivers::PolicyDriver* driver,
                   int64_t interval_s, absl::Duration tick = absl::Seconds(1));
  ~RefreshScheduler();
  RefreshScheduler(const RefreshScheduler&) = delete;
  RefreshScheduler& operator=(const RefreshScheduler&) = delete;

 private:
  void Run();
  void Tick();

  GatewayCore* const core_;
  SandboxRegistry* const registry_;
  drivers::PolicyDriver* const driver_;
  const int64_t interval_s_;
  const absl::Duration tick_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace osh::gateway
