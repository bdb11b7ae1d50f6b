#include "witness/log.h"

#include <algorithm>
#include <cstdint>
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

namespace {

// A token bucket of request lines: kBurst at once, kPerSecond after that.
struct RequestLines {
  static constexpr double kBurst = 20, kPerSecond = 2;
  double tokens = kBurst;
  absl::Time last = absl::InfinitePast();
  int64_t suppressed = 0;
};

}  // namespace

void WitnessLogRequest(WitnessLogLevel level, absl::string_view message, bool evidence) {
  static absl::Mutex* mu = new absl::Mutex();
  static RequestLines* buckets = new RequestLines[2];
  int64_t left_out = 0;
  {
    absl::MutexLock lock(mu);
    RequestLines& bucket = buckets[evidence ? 1 : 0];
    const absl::Time now = absl::Now();
    if (bucket.last != absl::InfinitePast()) {
      bucket.tokens = std::min(RequestLines::kBurst,
                               bucket.tokens + std::max(0.0, absl::ToDoubleSeconds(now - bucket.last)) * RequestLines::kPerSecond);
    }
    bucket.last = now;
    if (bucket.tokens < 1 && level != WitnessLogLevel::kError) {
      ++bucket.suppressed;
      return;
    }
    bucket.tokens = std::max(0.0, bucket.tokens - 1);
    left_out = bucket.suppressed;
    bucket.suppressed = 0;
  }
  if (left_out == 0) return WitnessLog(level, message);
  WitnessLog(level, absl::StrCat(message, " (", left_out, evidence ? " evidence" : " request", " line",
                                 left_out == 1 ? "" : "s", " left out before this one: more than 2 a second)"));
}

}  // namespace osh::witness
