// Rate limit of ReportPolicyStatus per sandbox (docs/policy-gateway.md, "Limits"): a token bucket of
// `burst` reports refilled at `per_second`, so one sandbox cannot flood the audit log. Buckets are
// created on first use and dropped by Forget (at delete); a bucket full again is indistinguishable from
// a new one, so Forget is an optimisation, not a correctness need. Thread-safe.
#pragma once

#include <cstdint>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"

namespace osh::gateway {

class ReportLimiter {
 public:
  ReportLimiter(double per_second, double burst) : per_second_(per_second), burst_(burst) {}

  // Takes one token from `sandbox_id`'s bucket at `now_ms`; false when it is empty.
  bool Allow(const std::string& sandbox_id, int64_t now_ms);
  void Forget(const std::string& sandbox_id);

 private:
  struct Bucket {
    double tokens = 0;
    int64_t at_ms = 0;
  };
  const double per_second_;
  const double burst_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, Bucket> buckets_ ABSL_GUARDED_BY(mu_);
};

}  // namespace osh::gateway
