#include "witness/log.h"

#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace osh::witness {

void WitnessLog(WitnessLogLevel level, absl::string_view message) {
  static absl::Mutex* mu = new absl::Mutex();
  const char* name = level == WitnessLogLevel::kInfo ? "INFO" : level == WitnessLogLevel::kWarning ? "WARN" : "ERROR";
  const std::string line = absl::StrCat(absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()), " ",
                                        name, " policy-log-witness: ", message, "\n");
  absl::MutexLock lock(mu);
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

}  // namespace osh::witness
