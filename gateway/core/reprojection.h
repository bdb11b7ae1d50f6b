// The re-projection of a builtin scope (design.md, "Re-projection of a scope"): every admitted sandbox
// the scope may apply to is grouped by PolicyAuthoring::ProjectionKey; per group one GetProjection,
// one §3.3 check (rollback per sandbox) and one envelope; all groups move in one store transaction with
// one summary audit event (`reprojection`) — all or none. Sandboxes that cannot move keep the last good
// projection with `last_refresh_error` set, its reason code first.
//
// Callers serialize it with refreshes (the core holds its refresh lock). Everything passed in must
// outlive it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "drivers/policy_driver.h"
#include "gateway/core/config.h"
#include "gateway/core/projection_gate.h"
#include "gateway/core/sandbox_registry.h"
#include "store/clock.h"
#include "store/store.h"
#include "trust/trust_store.h"

namespace osh::gateway {

class Reprojector {
 public:
  // `shared`: other replicas follow the store's change feed (each re-projection is announced to them,
  // even one with nothing to move).
  Reprojector(const Config& config, store::SandboxStore* store, bool shared, drivers::PolicyDriver* driver,
              SandboxRegistry* registry, ProjectionGate* gate, const store::Clock* clock);

  struct Outcome {
    uint32_t moved = 0;  // to a new projection (0 when the commit failed: nothing moved, and it is logged)
    uint32_t kept = 0;   // kept the last good projection (refused, rollback, driver error), reason recorded
    // Nothing moved because the commit failed (a storage error, the ceiling kept changing, another
    // replica's policy revision not yet read here): worth running again; the caller decides when.
    bool failed = false;
  };
  // Re-projects the sandboxes of `scope`, checking against `trust` (null: no verification). The commit
  // carries the ceiling every new projection was checked against; if the store refuses it because another
  // ceiling was stored meanwhile (issue 25.10), the ceiling is reloaded and the whole run repeated. It
  // also carries the policy revisions the driver knew (PolicyAuthoring::KnownRevisions): refused because
  // the store holds a newer one, the driver re-reads them (ReloadRevisions) and the run is repeated too.
  // `announce`: this is the re-projection of this replica's own change of `scope` — with replicas, its
  // commit (or, with nothing to move, a commit of the announcement alone) tells the others, who wait for
  // it (ChangeBatch::reprojected_scope). Re-projections of other replicas' changes are not announced.
  Outcome Run(const std::string& scope, const trust::TrustStore* trust, bool announce);

 private:
  // One run against the ceiling in force now; nullopt when the store refused it for a changed ceiling.
  std::optional<Outcome> Attempt(const std::string& scope, const trust::TrustStore* trust, bool announce);

  const Config& config_;
  store::SandboxStore* const store_;
  const bool shared_;
  drivers::PolicyDriver* const driver_;
  SandboxRegistry* const registry_;
  ProjectionGate* const gate_;  // checks each new projection; one outside the ceiling keeps the last good
  const store::Clock* const clock_;
};

}  // namespace osh::gateway
