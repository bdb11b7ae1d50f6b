// The test build's clock: the system clock, unless OSH_TEST_NOW_UNIX pins it (golden vectors carry a
// fixed "now"). Linked only into policy-gateway-testclock, which the suite alone runs.
#include <cstdlib>

#include "absl/strings/numbers.h"
#include "gateway/core/clock.h"

namespace osh::gateway {

const store::Clock* DaemonClock() {
  static const store::FakeClock pinned = [] {
    int64_t value = 0;
    const char* env = std::getenv("OSH_TEST_NOW_UNIX");
    return store::FakeClock(env != nullptr && absl::SimpleAtoi(env, &value) ? value * 1000 : 0);
  }();
  return pinned.NowUnixMillis() != 0 ? &pinned : store::Clock::System();
}

}  // namespace osh::gateway
