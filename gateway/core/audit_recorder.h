// The audit events the core writes on their own: those that record no state change (a refused
// admission, a stored envelope failing re-verification, the driver going up or down, a trust-store
// reload, a refused mutation). Appending one never fails the caller's operation; a failure to append is
// logged, never silently dropped. Events that record a state change travel in the same store batch as
// the change (store::ChangeBatch), built with For().
//
// Thread-safe (the store is). The store must outlive the recorder.
#pragma once

#include <map>
#include <string>

#include "openshell/policy/driver/v1/driver.pb.h"
#include "store/store.h"

namespace osh::gateway {

// A driver's audit_context as the audit log keeps it: verbatim when it fits (at most 64 entries, keys of
// 128 bytes, values of 1 KiB, 16 KiB in all, text without control characters); otherwise each text is
// bounded and escaped (BoundedText), entries past the bounds are left out and an "openshell.truncated"
// entry says how many. A refused projection's context is unverified: it must not be able to bloat or
// forge the log. Keys beginning "openshell." are the gateway's: a driver's such key, and one beginning
// "driver.", is recorded with "driver." before it ("driver.openshell.truncated", "driver.driver.x"), whether
// or not the projection verified, so that no two keys of a driver's are recorded as one.
inline constexpr char kGatewayAuditKeyPrefix[] = "openshell.";
inline constexpr char kDriverAuditKeyPrefix[] = "driver.";
std::map<std::string, std::string> BoundedAuditContext(const google::protobuf::Map<std::string, std::string>& context);

// An event's surface and digest (a refused projection's are a driver's unverified words) and its reason
// are bounded and escaped the same way (BoundedText): no NUL, control character or megabyte reaches the log.
inline constexpr size_t kMaxAuditFieldBytes = 256;
inline constexpr size_t kMaxAuditReasonBytes = 8192;

class AuditRecorder {
 public:
  explicit AuditRecorder(store::AuditLog* log) : store_(log) {}

  // An event of `type` for `sandbox_id`, with the projection's surface, digest, version and audit
  // context (see BoundedAuditContext) when there is one. Outcome and reason are the caller's.
  static store::AuditEvent For(trust::audit::Type type, const std::string& sandbox_id,
                               const openshell::policy::driver::v1::Projection* projection = nullptr);

  // `event` with its outcome and its reason bounded (BoundedText, kMaxAuditReasonBytes): as Commit appends
  // it, for a caller that commits it in a batch of its own.
  static store::AuditEvent Prepare(store::AuditEvent event, trust::audit::Outcome outcome, std::string reason);

  // Appends `event` with its outcome and reason to the chain; a failure is logged (the caller goes on).
  void Record(store::AuditEvent event, trust::audit::Outcome outcome, std::string reason);
  // Record, for a caller whose answer waits on the event being durable: the store's error is returned
  // (and logged) instead.
  absl::Status Commit(store::AuditEvent event, trust::audit::Outcome outcome, std::string reason);
  // Commit of an event Prepare made.
  absl::Status Commit(store::AuditEvent prepared);

 private:
  store::AuditLog* const store_;
};

}  // namespace osh::gateway
