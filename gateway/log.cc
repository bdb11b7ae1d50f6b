#include "gateway/log.h"

#include <unistd.h>

#include <atomic>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace osh::gateway {
namespace {
std::atomic<LogLevel> minimum_level{LogLevel::kInfo};
}  // namespace

void SetMinimumLogLevel(LogLevel level) { minimum_level = level; }

void Log(LogLevel level, const std::string& message) {
  if (level < minimum_level.load(std::memory_order_relaxed)) return;
  const char* name = level == LogLevel::kInfo ? "INFO" : level == LogLevel::kWarning ? "WARN" : "ERROR";
  const std::string line = absl::StrCat(absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()),
                                        " ", name, " policy-gateway: ", message, "\n");
  [[maybe_unused]] auto written = ::write(STDERR_FILENO, line.data(), line.size());
}

}  // namespace osh::gateway
