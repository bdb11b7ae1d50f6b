#include "gateway/core/clock.h"

namespace osh::gateway {

const store::Clock* DaemonClock() { return store::Clock::System(); }

}  // namespace osh::gateway
