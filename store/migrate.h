// Moves one store's whole state into another (`policy-gateway migrate`): sandboxes (handle hashes and
// driver handles), due driver-handle releases, every policy revision (seqs kept, so policy_version
// continues), the ceiling in force, the OpenShell interceptor's records and provider-profile catalogue, and the audit chain verbatim, so it verifies as the same chain.
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
  uint64_t audit_events = 0;  // copied by this run (after resumed_after)
  uint64_t interceptor_records = 0;
  uint64_t provider_profiles = 0;
  bool ceiling = false;
  AuditLog::ChainHead head;  // the chain's head, equal in both stores
  uint64_t resumed_after = 0;  // kResume: the events the interrupted copy had written (checked, kept)
};

struct MigrationOptions {
  std::string source_name;      // the source as messages name it (never a password): kept in the marker
  // kFresh: an empty target. kReplace: empty a target an interrupted migration left (marked), then copy.
  // kResume: continue an interrupted migration from the same source (see MigrateStore).
  Importer::Begin begin = Importer::Begin::kFresh;
  uint32_t audit_page = 1000;   // audit events per transaction
  // Called after each audit page is committed with the seq the target's chain now ends at (tests use it
  // to cut a copy short); may be empty.
  std::function<void(uint64_t copied)> after_audit_page;
};

// Refused (FAILED_PRECONDITION) while either store has a live replica (a heartbeat within
// PostgresStore::kReplicaLeaseMs): a replica writing meanwhile would fork the chains. The target is
// marked (Importer::BeginImport) before anything is copied and unmarked in the final commit, once its
// chain ends on the source's head: a copy cut short (kill -9, a lost connection) leaves a marked target
// that gateways refuse and that `--replace-target` empties and fills again, or `--resume` continues:
// the state is copied again whole (one transaction), and the chain copied so far is kept if its last
// event is the source's event of that seq (same hash, so the same prefix: the chain links); otherwise
// (the source's chain changed meanwhile) DATA_LOSS, the target left as it was, naming --replace-target.
// `progress` (may be empty) is told what is being copied, a line at a time. Errors name the step.
// UNIMPLEMENTED when `to` cannot be migrated into (it has no Importer).
absl::StatusOr<MigrationReport> MigrateStore(Database& from, Database& to, const MigrationOptions& options,
                                             const std::function<void(const std::string&)>& progress = nullptr);

}  // namespace osh::store
