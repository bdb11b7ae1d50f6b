#include "gateway/audit_recorder.h"

#include "absl/strings/str_cat.h"
#include "gateway/log.h"

namespace osh::gateway {

store::AuditEvent AuditRecorder::For(const char* type, const std::string& sandbox_id,
                                     const openshell::policy::driver::v1::Projection* projection) {
  store::AuditEvent event;
  event.type = type;
  event.sandbox_id = sandbox_id;
  if (projection != nullptr) {
    event.surface_id = projection->surface_id();
    event.policy_digest = projection->policy_digest();
    event.policy_version = projection->policy_version();
    event.audit_context = {projection->audit_context().begin(), projection->audit_context().end()};
  }
  return event;
}

void AuditRecorder::Record(store::AuditEvent event, const char* outcome, std::string reason) {
  event.outcome = outcome;
  event.reason = std::move(reason);
  const std::string type = event.type;
  if (absl::Status status = store_->AppendAudit(std::move(event)); !status.ok()) {
    LogError(absl::StrCat("cannot audit a ", type, " event: ", status.ToString()));
  }
}

}  // namespace osh::gateway
