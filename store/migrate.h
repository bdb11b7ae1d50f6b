// Moves one store's whole state into another (`policy-gateway migrate`): sandboxes (handle hashes and
// driver handles), due driver-handle releases, every policy revision (seqs kept, so policy_version
// continues), the ceiling in force, and the audit chain verbatim, so it verifies as the same chain.
// The target must be empty; neither store may be in use by a gateway meanwhile.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "store/store.h"

namespace osh::store {

struct MigrationReport {
  uint64_t sandboxes = 0;
  uint64_t pending_releases = 0;
  uint64_t policy_revisions = 0;
  uint64_t audit_events = 0;
  bool ceiling = false;
  Store::ChainHead head;  // the chain's head, equal in both stores
};

// `progress` (may be empty) is told what is being copied, a line at a time. Errors name the step; on
// an error the target may hold part of the state: drop and recreate it before trying again.
absl::StatusOr<MigrationReport> MigrateStore(Store& from, Store& to,
                                             const std::function<void(const std::string&)>& progress = nullptr);

}  // namespace osh::store
