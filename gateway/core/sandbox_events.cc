#include "gateway/core/sandbox_events.h"

#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "absl/strings/string_view.h"
#include "trust/audit_vocabulary.h"

namespace osh::gateway {
namespace {

namespace v1 = openshell::policy::gateway::v1;
namespace audit = trust::audit;

bool TypeIs(const std::string& name, audit::Type type) { return name == audit::NameOf(type); }
bool OutcomeIs(const std::string& name, audit::Outcome outcome) { return name == audit::NameOf(outcome); }

// "scope S: ..." or "scope S" (a re-projection's reason) -> S.
std::string ReprojectedScope(const std::string& reason) {
  absl::string_view rest = reason;
  if (!absl::ConsumePrefix(&rest, "scope ")) return "";
  const size_t end = rest.find(": ");
  return std::string(rest.substr(0, end));
}

// The change a sandbox's event records, "" when none.
std::string SandboxChangeOf(const v1::AuditEvent& e) {
  const std::string& type = e.type();
  if (TypeIs(type, audit::Type::kAdmission)) return "admitted";
  if (TypeIs(type, audit::Type::kRefusal)) return "refused";
  if (TypeIs(type, audit::Type::kRefresh)) {
    if (!OutcomeIs(e.outcome(), audit::Outcome::kOk)) return "refresh_failed";
    // An error cleared with nothing new admitted (the driver serves the admitted projection again, admit
    // mode's push accepted) is no refresh (review 104).
    if (absl::StartsWith(e.reason(), "cleared ") || absl::StrContains(e.reason(), "; cleared: ")) return "refresh_recovered";
    return "refreshed";
  }
  if (TypeIs(type, audit::Type::kReprojection)) return "reprojected";
  if (TypeIs(type, audit::Type::kReport)) return "reported";
  if (TypeIs(type, audit::Type::kDeletion)) return "deleted";
  if (TypeIs(type, audit::Type::kReverificationFailed)) return "unservable";
  return "";
}

}  // namespace

std::optional<v1::SandboxEvent> SandboxEventOf(const v1::AuditEvent& event) {
  std::string change = SandboxChangeOf(event);
  if (change.empty()) return std::nullopt;
  const bool scope_wide = change == "reprojected" && event.sandbox_id().empty();
  if (event.sandbox_id().empty() && !scope_wide) return std::nullopt;
  v1::SandboxEvent out;
  out.set_seq(event.seq());
  out.set_time_unix_ms(event.time_unix_ms());
  out.set_change(scope_wide ? "scope_reprojected" : std::move(change));
  out.set_sandbox_id(event.sandbox_id());
  if (scope_wide || out.change() == "reprojected") out.set_scope(ReprojectedScope(event.reason()));
  out.set_policy_digest(event.policy_digest());
  out.set_policy_version(event.policy_version());
  out.set_outcome(event.outcome());
  out.set_reason(event.reason());
  out.set_actor(event.actor());
  return out;
}

bool SandboxFilterKeeps(const v1::SandboxEvent& change, const std::string& sandbox_id) {
  return sandbox_id.empty() || change.sandbox_id() == sandbox_id || change.change() == "scope_reprojected";
}

}  // namespace osh::gateway
