// The gateway's notion of "now" for every time-based decision (admission checks, expiry, refresh).
// The production binary links clock.cc (the system clock). The test suite links a variant that can be
// pinned to a vector's fixed "now" (tests/pinned_clock.cc); it is never part of an installed binary.
#pragma once

#include <cstdint>

namespace osh::gateway {

int64_t NowUnix();

}  // namespace osh::gateway
