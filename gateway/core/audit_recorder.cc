#include "gateway/core/audit_recorder.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gateway/core/context_limits.h"
#include "gateway/core/log.h"

namespace osh::gateway {

std::map<std::string, std::string> BoundedAuditContext(const google::protobuf::Map<std::string, std::string>& context) {
  constexpr size_t kMaxEntries = 64, kMaxKeyBytes = 128, kMaxValueBytes = 1024, kMaxTotalBytes = 16 * 1024;
  std::map<std::string, std::string> sorted(context.begin(), context.end());  // the order the chain hashes
  std::map<std::string, std::string> out;
  size_t total = 0, dropped = 0, bytes = 0;
  for (const auto& [key, value] : sorted) {
    bytes += key.size() + value.size();
    // Keys under "openshell." are the gateway's own (openshell.truncated): a driver's is moved aside, so
    // that it cannot pass for one of them; and one under "driver." too, so that no two keys of a driver
    // become one ("openshell.x" and "driver.openshell.x").
    const bool aside = absl::StartsWith(key, kGatewayAuditKeyPrefix) || absl::StartsWith(key, kDriverAuditKeyPrefix);
    std::string k = BoundedText(aside ? absl::StrCat(kDriverAuditKeyPrefix, key) : key, kMaxKeyBytes);
    std::string v = BoundedText(value, kMaxValueBytes);
    // Two keys a bound made one (cut at the same place) keep the first; the other is counted as left out.
    if (out.size() >= kMaxEntries || total + k.size() + v.size() > kMaxTotalBytes || out.contains(k)) {
      ++dropped;
      continue;
    }
    total += k.size() + v.size();
    out.emplace(std::move(k), std::move(v));
  }
  if (dropped > 0) {
    out["openshell.truncated"] = absl::StrCat(dropped, " of ", sorted.size(), " entries left out (", bytes, " bytes in all)");
  }
  return out;
}

store::AuditEvent AuditRecorder::For(trust::audit::Type type, const std::string& sandbox_id,
                                     const openshell::policy::driver::v1::Projection* projection) {
  store::AuditEvent event;
  event.type = type;
  event.sandbox_id = sandbox_id;
  if (projection != nullptr) {
    // Unverified in a refusal (a driver's words): bounded and escaped like every other text an event quotes,
    // so no NUL, newline or megabyte reaches the chain (issue 25.8, 25.13). Checked values pass unchanged.
    event.surface_id = BoundedText(projection->surface_id(), kMaxAuditFieldBytes);
    event.policy_digest = BoundedText(projection->policy_digest(), kMaxAuditFieldBytes);
    event.policy_version = projection->policy_version();
    event.audit_context = BoundedAuditContext(projection->audit_context());
  }
  return event;
}

void AuditRecorder::Record(store::AuditEvent event, trust::audit::Outcome outcome, std::string reason) {
  Commit(std::move(event), outcome, std::move(reason)).IgnoreError();  // logged by Commit
}

store::AuditEvent AuditRecorder::Prepare(store::AuditEvent event, trust::audit::Outcome outcome, std::string reason) {
  event.outcome = outcome;
  // A reason may quote what a driver or a client sent (a surface, a driver's no_verified_policy text).
  event.reason = BoundedText(reason, kMaxAuditReasonBytes);
  return event;
}

absl::Status AuditRecorder::Commit(store::AuditEvent event, trust::audit::Outcome outcome, std::string reason) {
  return Commit(Prepare(std::move(event), outcome, std::move(reason)));
}

absl::Status AuditRecorder::Commit(store::AuditEvent event) {
  const std::string type = event.type.name();
  absl::Status status = store_->AppendAudit(std::move(event));
  if (!status.ok()) LogError(absl::StrCat("cannot audit a ", type, " event: ", status.ToString()));
  return status;
}

}  // namespace osh::gateway
