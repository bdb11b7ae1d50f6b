#include "gateway/clock.h"

#include "absl/time/clock.h"

namespace osh::gateway {

int64_t NowUnix() { return absl::ToUnixSeconds(absl::Now()); }

}  // namespace osh::gateway
