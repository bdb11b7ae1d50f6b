// What the interceptor's admit mode (docs/openshell-interceptor.md, "Admit mode") asks of this gateway's
// Policy subsystem: admit a sandbox exactly as AdmitSandbox does, read the projection a sandbox is served
// now, withdraw an admission the composed check refused, and whether the driver permits mutation. The
// evaluator declares it, so it knows nothing of GatewayCore; CoreInterceptorAdmission is the one
// implementation.
//
// Thread-safe (every implementation must be).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "openshell/policy/driver/v1/driver.pb.h"
#include "openshell/sandbox/v1/sandbox.pb.h"
#include "store/store.h"
#include "trust/projection_check.h"

namespace osh::gateway {

class GatewayCore;
class SandboxRegistry;

class InterceptorAdmission {
 public:
  virtual ~InterceptorAdmission() = default;

  // A sandbox's admitted projection, as it is served.
  struct Admitted {
    openshell::policy::driver::v1::RuntimeContext context;
    // The admitted body, parsed (never null; shared with the gateway's validated-body cache when it holds it).
    std::shared_ptr<const openshell::sandbox::v1::SandboxPolicy> policy;
    std::string digest;                            // lowercase hex SHA-256 of the body (policyctl get)
    uint64_t version = 0;
    std::vector<std::string> key_ids;              // trust-store key ids that verified it
  };

  // Admits `context` through the Policy subsystem (driver handle, projection check, ceiling, audit,
  // persistence). The gateway's refusal ("reason_code: detail") otherwise; ALREADY_EXISTS when the
  // sandbox id is admitted already. `also_check`, when set, is asked about the admitted policy before
  // anything is committed (a failure refuses the admission with its reason), and the audit events it adds
  // are committed with the admission (GatewayCore::AdmitCheck).
  using AdmitCheck = std::function<trust::CheckResult(const openshell::sandbox::v1::SandboxPolicy& admitted,
                                                      std::vector<store::AuditEvent>* events)>;
  virtual absl::StatusOr<Admitted> Admit(const openshell::policy::driver::v1::RuntimeContext& context,
                                         const AdmitCheck& also_check) = 0;
  // Admit without a thread waiting: `done` runs exactly once, on any thread (the calling one, or the one
  // the admission completed on), and must not block there (no audit write, no driver or store call: hand
  // such work to a pool). `also_check` runs before `done`, on any thread. The default calls Admit and then
  // `done` on the calling thread.
  using AdmitDone = std::function<void(absl::StatusOr<Admitted>)>;
  // Whether AdmitAsync returns before the admission is made (it waits on nothing on the calling thread).
  virtual bool admits_without_blocking() const { return false; }
  virtual void AdmitAsync(openshell::policy::driver::v1::RuntimeContext context, AdmitCheck also_check,
                          AdmitDone done) {
    done(Admit(context, also_check));
  }
  // The projection `sandbox_id` is served now, by the registry's serving rule: nullopt when it is not
  // admitted or its stored envelope does not verify; FAILED_PRECONDITION ("key_revoked: ...",
  // "expired: ...") when it may not be served now.
  virtual absl::StatusOr<std::optional<Admitted>> Current(const std::string& sandbox_id) const = 0;
  // Deletes the admission of `sandbox_id` (its handle released, audited). OK when there was none.
  virtual absl::Status Withdraw(const std::string& sandbox_id) = 0;
  // Whether the driver permits mutation (the mutation gate's answer).
  virtual bool permits_mutation() const = 0;
  // Every admitted sandbox id, ordered (the push's catch-up at start).
  virtual absl::StatusOr<std::vector<std::string>> AdmittedIds() const = 0;
  // The OpenShell gateway refused the push of the sandbox's changed projection: recorded as its refresh
  // error ("openshell_push_refused: <detail>", drift refresh_failed, audited). NOT_FOUND when not admitted.
  virtual absl::Status RecordPushRefused(const std::string& sandbox_id, const std::string& detail) = 0;
  // The OpenShell gateway accepted a push: a refusal recorded before is cleared.
  virtual absl::Status RecordPushAccepted(const std::string& sandbox_id) = 0;
};

// The Policy subsystem of `core` (not owned; must outlive it).
class CoreInterceptorAdmission final : public InterceptorAdmission {
 public:
  // `core` and `registry` (the core's) are not owned and must outlive this.
  CoreInterceptorAdmission(GatewayCore* core, SandboxRegistry* registry) : core_(core), registry_(registry) {}
  absl::StatusOr<Admitted> Admit(const openshell::policy::driver::v1::RuntimeContext& context,
                                 const AdmitCheck& also_check) override;
  // GatewayCore::AdmitAsync; the served projection read (Current) on the thread it completed on.
  void AdmitAsync(openshell::policy::driver::v1::RuntimeContext context, AdmitCheck also_check,
                  AdmitDone done) override;
  bool admits_without_blocking() const override { return true; }
  absl::StatusOr<std::optional<Admitted>> Current(const std::string& sandbox_id) const override;
  absl::Status Withdraw(const std::string& sandbox_id) override;
  bool permits_mutation() const override;
  absl::StatusOr<std::vector<std::string>> AdmittedIds() const override;
  absl::Status RecordPushRefused(const std::string& sandbox_id, const std::string& detail) override;
  absl::Status RecordPushAccepted(const std::string& sandbox_id) override;

 private:
  GatewayCore* const core_;
  SandboxRegistry* const registry_;
};

}  // namespace osh::gateway
