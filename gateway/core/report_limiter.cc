#include "gateway/core/report_limiter.h"

#include <algorithm>

namespace osh::gateway {

bool ReportLimiter::Allow(const std::string& sandbox_id, int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  auto [it, created] = buckets_.try_emplace(sandbox_id, Bucket{burst_, now_ms});
  Bucket& bucket = it->second;
  if (!created && now_ms > bucket.at_ms) {
    bucket.tokens = std::min(burst_, bucket.tokens + static_cast<double>(now_ms - bucket.at_ms) * per_second_ / 1000.0);
    bucket.at_ms = now_ms;
  }
  if (bucket.tokens < 1.0) return false;
  bucket.tokens -= 1.0;
  return true;
}

void ReportLimiter::Forget(const std::string& sandbox_id) {
  absl::MutexLock lock(&mu_);
  buckets_.erase(sandbox_id);
}

}  // namespace osh::gateway
