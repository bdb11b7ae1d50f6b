// The test build's clock: the system clock, unless OSH_TEST_NOW_UNIX pins it (golden vectors carry a
// fixed "now"). Linked only into policy-gateway-testclock, which the suite alone runs.
#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/time/clock.h"
#include "gateway/clock.h"

namespace osh::gateway {

int64_t NowUnix() {
  static const int64_t pinned = [] {
    int64_t value = 0;
    const char* env = std::getenv("OSH_TEST_NOW_UNIX");
    return env != nullptr && absl::SimpleAtoi(env, &value) ? value : int64_t{0};
  }();
  return pinned != 0 ? pinned : absl::ToUnixSeconds(absl::Now());
}

}  // namespace osh::gateway
