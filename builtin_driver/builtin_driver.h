// The builtin driver (SPEC §1): serves, for each sandbox, the most specific policy among the scopes
// sandbox:<id>, tenant:<attributes.tenant_id>, default; permits mutation; optionally signs its
// projections with a gateway key so sandboxes can verify end to end.
//
// Handles are self-describing (the runtime context, encoded), so they survive restarts without state.
// policy_version is the highest global revision sequence among the sandbox's scopes (deletions count),
// so it only grows for a given sandbox. Projections are bound to the sandbox's context unless
// `bind_context` is false: then every sandbox a revision applies to is served one identical projection
// (one signature per change). Each scope's latest revision is kept in memory (loaded at construction,
// updated by every append through this driver, and by ReloadScope when another replica appended):
// serving a projection reads no database. Thread-safe.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "drivers/policy_driver.h"
#include "store/clock.h"
#include "store/store.h"
#include "trust/keys.h"

namespace osh::builtin_driver {

inline constexpr char kSurface[] = "openshell.sandbox.v1";

struct SigningKey {
  trust::PrivateKey key;
  std::string key_id;
};

class BuiltinDriver final : public drivers::PolicyDriver, public drivers::PolicyAuthoring {
 public:
  // `store` must outlive the driver.
  // Reads every scope's latest revision from the store (INTERNAL/DATA_LOSS on a store failure).
  // `clock` (not owned) stamps revisions.
  static absl::StatusOr<std::unique_ptr<BuiltinDriver>> Create(store::Store* store, std::optional<SigningKey> signing_key,
                                                              bool bind_context = true,
                                                              const store::Clock* clock = store::Clock::System());

  std::string kind() const override { return "builtin"; }
  bool handles_need_release() const override { return false; }  // handles encode the context; no state
  absl::StatusOr<drivers::driver_v1::Capabilities> GetCapabilities() override;
  absl::StatusOr<std::string> AcquireHandle(const drivers::driver_v1::RuntimeContext& context,
                                            const std::string& idempotency_key = "") override;
  absl::StatusOr<drivers::driver_v1::GetProjectionResponse> GetProjection(const std::string& handle,
                                                                         const std::string& surface_id) override;
  absl::Status ReleaseHandle(const std::string& handle) override;
  drivers::PolicyAuthoring* authoring() override { return this; }

  absl::StatusOr<drivers::gateway_v1::PolicyRevision> SetPolicy(const drivers::gateway_v1::SetPolicyRequest& request) override;
  absl::StatusOr<drivers::gateway_v1::PolicyRevision> UpdatePolicy(
      const drivers::gateway_v1::UpdatePolicyRequest& request) override;
  absl::StatusOr<drivers::gateway_v1::PolicyRevision> DeletePolicy(
      const drivers::gateway_v1::DeletePolicyRequest& request) override;
  absl::StatusOr<drivers::gateway_v1::GetPolicyResponse> GetPolicy(const drivers::gateway_v1::GetPolicyRequest& request) override;
  absl::StatusOr<drivers::gateway_v1::ListPolicyRevisionsResponse> ListPolicyRevisions(
      const drivers::gateway_v1::ListPolicyRevisionsRequest& request) override;
  absl::StatusOr<uint64_t> CountPolicyScopes() override;
  // Re-reads `scope`'s latest revision (another replica appended). On a store failure the scope is marked
  // unsynced until a later reload succeeds: projections for contexts naming it are UNAVAILABLE meanwhile.
  absl::Status ReloadScope(const std::string& scope) override;
  std::string ProjectionKey(const drivers::driver_v1::RuntimeContext& context) override;
  bool IsCurrent(const drivers::driver_v1::RuntimeContext& context, const drivers::driver_v1::Projection& served) override;
  void SetPolicyGuard(PolicyGuard guard) override { guard_ = std::move(guard); }

 private:
  using Revision = std::shared_ptr<const store::PolicyRevisionRecord>;
  BuiltinDriver(store::Store* store, std::optional<SigningKey> signing_key, bool bind_context,
                const store::Clock* clock);
  // The revision a context is served (null: none) and its policy_version.
  std::pair<Revision, uint64_t> Resolve(const drivers::driver_v1::RuntimeContext& context,
                                        std::vector<std::string>* scopes) const;
  absl::StatusOr<drivers::gateway_v1::PolicyRevision> Append(const std::string& scope,
                                                            const std::optional<openshell::sandbox::v1::SandboxPolicy>& policy,
                                                            std::optional<uint64_t> expected_revision,
                                                            const std::string& what);
  store::Store* store_;
  std::optional<SigningKey> signing_key_;
  const bool bind_context_;
  const store::Clock* const clock_;
  PolicyGuard guard_;  // the gateway's ceiling check (none: accept)
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Revision> latest_ ABSL_GUARDED_BY(mu_);  // scope -> latest revision
  // Scopes another replica changed that could not be re-read (the store was unreachable): a context that
  // names one is answered UNAVAILABLE (after one more try), never with a stale or missing revision.
  absl::flat_hash_set<std::string> unsynced_ ABSL_GUARDED_BY(mu_);
};

}  // namespace osh::builtin_driver
