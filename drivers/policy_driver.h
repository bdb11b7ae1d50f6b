// The gateway's C++ driver interface: the PolicyDriver contract of SPEC §3 as seen from inside the
// gateway. Exactly one driver is active; the builtin driver and the remote (socket) driver implement it.
//
// Thread safety: implementations are called concurrently from many threads.
// Errors are absl::Status values with the contract's codes: INVALID_ARGUMENT (malformed context),
// PERMISSION_DENIED (subject not served), NOT_FOUND (unknown handle), UNAVAILABLE (driver down).
#pragma once

#include <functional>
#include <map>

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "openshell/policy/driver/v1/driver.pb.h"
#include "openshell/policy/gateway/v1/gateway.pb.h"
#include "openshell/sandbox/v1/sandbox.pb.h"

namespace osh::drivers {

namespace driver_v1 = openshell::policy::driver::v1;
namespace gateway_v1 = openshell::policy::gateway::v1;

// Policy authoring, offered only by drivers that keep policies themselves (the builtin driver).
// Every method records its audit event in the same transaction as the change.
class PolicyAuthoring {
 public:
  virtual ~PolicyAuthoring() = default;
  virtual absl::StatusOr<gateway_v1::PolicyRevision> SetPolicy(const gateway_v1::SetPolicyRequest& request) = 0;
  virtual absl::StatusOr<gateway_v1::PolicyRevision> UpdatePolicy(const gateway_v1::UpdatePolicyRequest& request) = 0;
  virtual absl::StatusOr<gateway_v1::PolicyRevision> DeletePolicy(const gateway_v1::DeletePolicyRequest& request) = 0;
  virtual absl::StatusOr<gateway_v1::GetPolicyResponse> GetPolicy(const gateway_v1::GetPolicyRequest& request) = 0;
  virtual absl::StatusOr<gateway_v1::ListPolicyRevisionsResponse> ListPolicyRevisions(
      const gateway_v1::ListPolicyRevisionsRequest& request) = 0;
  virtual absl::StatusOr<uint64_t> CountPolicyScopes() = 0;
  // A key such that contexts with equal keys are served byte-identical projections as of now ("": no
  // such promise). A scope's re-projection then fetches, checks and stores one projection per key.
  virtual std::string ProjectionKey(const driver_v1::RuntimeContext&) { return ""; }
  // True when `served` (an admitted projection's header) is what this driver would serve `context` now,
  // so a re-projection can pass it by without fetching and signing again (false: no such promise).
  virtual bool IsCurrent(const driver_v1::RuntimeContext&, const driver_v1::Projection& /*served*/) { return false; }
  // What this driver would serve `context` now, read from memory (no store, no signing): the policy's
  // digest ("" when no scope of the context has a live policy), its policy_version, and where it comes
  // from ("scope sandbox:sb-1 revision 3"). nullopt: the driver cannot say cheaply.
  struct Desired {
    std::string policy_digest;
    uint64_t policy_version = 0;
    std::string source;
  };
  virtual std::optional<Desired> DesiredFor(const driver_v1::RuntimeContext&) { return std::nullopt; }
  // The newest revision of each scope as this driver knows them now (deleted scopes included): what its
  // projections are made from. A re-projection commits only if the store holds none newer
  // (store::ChangeBatch::checked_revisions). nullopt: the driver keeps no revisions in the gateway's store.
  virtual std::optional<std::map<std::string, uint64_t>> KnownRevisions() { return std::nullopt; }
  // Re-reads every scope's newest revision from the store: after a commit was refused because the store
  // holds one this driver was not told of (another replica's, not yet brought by the feed; or its own,
  // whose commit's answer was lost). A storage error leaves what it knew.
  virtual absl::Status ReloadRevisions() { return absl::OkStatus(); }
  // A check every new policy must pass before it is stored (the gateway's ceiling); its refusal is
  // returned to the caller as is and nothing is stored. Set before concurrent use.
  using PolicyGuard = std::function<absl::Status(const openshell::sandbox::v1::SandboxPolicy&)>;
  virtual void SetPolicyGuard(PolicyGuard guard) = 0;
};

class PolicyDriver {
 public:
  virtual ~PolicyDriver() = default;

  // "builtin" or "remote".
  virtual std::string kind() const = 0;
  // The driver's capabilities as last seen (UNAVAILABLE when it has never answered).
  virtual absl::StatusOr<driver_v1::Capabilities> GetCapabilities() = 0;
  // `idempotency_key` ("": none) is sent to drivers that take it (SPEC §3.2): the same key gives the
  // same live handle from a driver that advertises `idempotent_acquire`.
  virtual absl::StatusOr<std::string> AcquireHandle(const driver_v1::RuntimeContext& context,
                                                    const std::string& idempotency_key) = 0;
  // Whether the driver says it honours idempotency keys (feature `idempotent_acquire`).
  bool honours_idempotency_key() {
    auto caps = GetCapabilities();
    if (!caps.ok()) return false;
    for (const auto& f : caps->features()) {
      if (f == "idempotent_acquire") return true;
    }
    return false;
  }
  virtual absl::StatusOr<driver_v1::GetProjectionResponse> GetProjection(const std::string& handle,
                                                                        const std::string& surface_id) = 0;
  // AcquireHandle and GetProjection without waiting: each returns at once and `done` runs once the driver
  // answered (for a remote driver on one of gRPC's threads), with what the blocking call would return; it
  // must not block on the disk or the network. The defaults call the blocking method, then `done`.
  using HandleDone = std::function<void(absl::StatusOr<std::string>)>;
  using ProjectionDone = std::function<void(absl::StatusOr<driver_v1::GetProjectionResponse>)>;
  virtual void AcquireHandleAsync(const driver_v1::RuntimeContext& context, const std::string& idempotency_key,
                                  HandleDone done) {
    done(AcquireHandle(context, idempotency_key));
  }
  virtual void GetProjectionAsync(const std::string& handle, const std::string& surface_id, ProjectionDone done) {
    done(GetProjection(handle, surface_id));
  }
  // Idempotent; NOT_FOUND is reported as OK.
  virtual absl::Status ReleaseHandle(const std::string& handle) = 0;
  // False for a driver whose handles hold no state (releasing one does nothing): the gateway then keeps
  // no durable record of handles in flight, saving a commit per admission.
  virtual bool handles_need_release() const { return true; }
  // Whether new admissions can be served now (false while a remote driver is unreachable).
  virtual bool available() const { return true; }
  // Called when work arrives while the driver is unavailable: try to reach it now (bounded by the call
  // deadline) instead of waiting for the next monitor tick. Returns available() afterwards.
  virtual bool TryReconnect() { return available(); }
  // nullptr unless the driver keeps policies the gateway may author.
  virtual PolicyAuthoring* authoring() { return nullptr; }
};

}  // namespace osh::drivers
