// What sandboxes report about themselves (ReportPolicyStatus: load status, error, the digest they run)
// and each sandbox's last refresh error: the operator's view of a sandbox beside what it is served.
//
// Kept apart from the admitted view (gateway/core/admitted_sandbox.h): serving never reads it, and a
// report never publishes a new AdmittedSandbox. Entries exist only for sandboxes that reported or whose
// refresh failed. The registry keeps it in step with the store:
// it is told every committed report and refresh error, and forgets a sandbox that goes.
//
// Thread-safe (its own lock, taken after the registry's when both are held).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "openshell/policy/gateway/v1/gateway.pb.h"

namespace osh::gateway {

class ReportRecorder {
 public:
  struct Reports {
    openshell::policy::gateway::v1::LoadStatus load_status = openshell::policy::gateway::v1::LOAD_STATUS_UNSPECIFIED;
    std::string load_error;
    std::string reported_digest;
    int64_t reported_at_unix = 0;
    std::string last_refresh_error;  // "" when the last refresh succeeded (or none failed)
  };

  // The sandbox's latest report (all fields as reported; an unspecified status, no error, no digest and
  // time 0 is no report).
  void RecordReport(const std::string& sandbox_id, openshell::policy::gateway::v1::LoadStatus status,
                    std::string error, std::string digest, int64_t at_unix);
  // The sandbox's last refresh error ("" clears it).
  void SetRefreshError(const std::string& sandbox_id, std::string error);
  // Everything recorded about the sandbox goes (it was deleted or re-admitted).
  void Forget(const std::string& sandbox_id);
  void Clear();

  // What is recorded for the sandbox; nullopt when nothing is.
  std::optional<Reports> Get(const std::string& sandbox_id) const;
  // Sandboxes whose last refresh failed.
  size_t refresh_error_count() const;

 private:
  // Drops the entry when it holds nothing any more.
  void TrimLocked(absl::flat_hash_map<std::string, Reports>::iterator it) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Reports> by_id_ ABSL_GUARDED_BY(mu_);
  size_t refresh_errors_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace osh::gateway
