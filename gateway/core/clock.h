// The clock the daemon injects everywhere (store::Clock). The production binary links clock.cc (the
// system clock). The test suite links a variant that can be pinned to a vector's fixed "now"
// (tests/pinned_clock.cc); it is never part of an installed binary.
#pragma once

#include "store/clock.h"

namespace osh::gateway {

const store::Clock* DaemonClock();

}  // namespace osh::gateway
