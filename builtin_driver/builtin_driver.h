// The builtin driver (SPEC §1): serves, for each sandbox, the most specific policy among the scopes
// sandbox:<id>, tenant:<attributes.tenant_id>, default; permits mutation; optionally signs its
// projections with a gateway key so sandboxes can verify end to end.
//
// Handles are self-describing (the runtime context, encoded), so they survive restarts without state.
// policy_version is the highest global revision sequence among the sandbox's scopes (deletions count),
// so it only grows for a given sandbox. Projections are bound to the sandbox's context unless
// `bind_context` is false: then every sandbox a revision applies to is served one identical projection
// (one signature per change). Each scope's latest revision is kept in memory, loaded at construction
// and then following the store: the store tells the driver of every revision committed, here or by
// another replica (store::RevisionListener), so serving a projection reads no database. Thread-safe.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/container/flat_hash_map.h"
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

class BuiltinDriver final : public drivers::PolicyDriver,
                            public drivers::PolicyAuthoring,
                            private store::RevisionListener {
 public:
  // `store` must outlive the driver; the driver listens to it (subscribed first: a gateway's listeners
  // run after the driver's cache has the revision). Reads every scope's latest revision from the store
  // (a storage error on failure). `clock` (not owned) stamps revisions.
  static absl::StatusOr<std::unique_ptr<BuiltinDriver>> Create(store::PolicyRevisions* store,
                                                              std::optional<SigningKey> signing_key,
                                                              bool bind_context = true,
                                                              const store::Clock* clock = store::Clock::System());
  ~BuiltinDriver() override;

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
  std::optional<std::map<std::string, uint64_t>> KnownRevisions() override;
  absl::Status ReloadRevisions() override;
  std::string ProjectionKey(const drivers::driver_v1::RuntimeContext& context) override;
  bool IsCurrent(const drivers::driver_v1::RuntimeContext& context, const drivers::driver_v1::Projection& served) override;
  std::optional<Desired> DesiredFor(const drivers::driver_v1::RuntimeContext& context) override;
  void SetPolicyGuard(PolicyGuard guard) override { guard_ = std::move(guard); }

 private:
  using Revision = std::shared_ptr<const store::PolicyRevisionRecord>;
  BuiltinDriver(store::PolicyRevisions* store, std::optional<SigningKey> signing_key, bool bind_context,
                const store::Clock* clock);
  void OnPolicyRevision(const store::PolicyRevisionRecord& revision, bool remote) override;
  // Puts `revision` in the cache unless the scope's cached one is as new.
  void Install(const store::PolicyRevisionRecord& revision);
  // The revision a context is served (null: none) and its policy_version.
  std::pair<Revision, uint64_t> Resolve(const drivers::driver_v1::RuntimeContext& context,
                                        std::vector<std::string>* scopes) const;
  absl::StatusOr<drivers::gateway_v1::PolicyRevision> Append(const std::string& scope,
                                                            const std::optional<openshell::sandbox::v1::SandboxPolicy>& policy,
                                                            std::optional<uint64_t> expected_revision,
                                                            const std::string& what);
  store::PolicyRevisions* const store_;
  std::optional<SigningKey> signing_key_;
  const bool bind_context_;
  const store::Clock* const clock_;
  PolicyGuard guard_;  // the gateway's ceiling check (none: accept)
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Revision> latest_ ABSL_GUARDED_BY(mu_);  // scope -> latest revision
};

}  // namespace osh::builtin_driver
