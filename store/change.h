// A state change as a value (LevelDB's WriteBatch is the model): the core builds a ChangeBatch, the store
// commits it in one transaction together with its audit events, and then hands the very same batch to
// its ChangeListener — the in-memory view (gateway/sandbox_registry) applies it. The view is therefore a
// cache of the store, never a second truth: it learns of every committed change, in commit order, from
// the store alone.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "openshell/policy/driver/v1/driver.pb.h"
#include "openshell/policy/gateway/v1/gateway.pb.h"
#include "common/errors.h"
#include "common/name_table.h"
#include "store/envelope.h"
#include "trust/audit_chain.h"

namespace osh::store {

using openshell::policy::driver::v1::RuntimeContext;
using osh::trust::AuditEvent;

// SandboxRecord::verification: admitted against a trust store, or without one (stored and shown to
// admins as its name).
enum class Verification { kNone, kVerified };
inline constexpr common::NameTable<Verification, 2> kVerificationNames{{{
    {Verification::kNone, "none"},
    {Verification::kVerified, "verified"},
}}};
inline constexpr absl::string_view NameOf(Verification verification) { return kVerificationNames.Name(verification); }
// A stored name; one this build does not know reads as kVerified, which fails closed (re-verified against
// the trust store, and refused when none is configured).
inline Verification VerificationFromStored(absl::string_view name) {
  return kVerificationNames.Parse(name).value_or(Verification::kVerified);
}

struct SandboxRecord {
  RuntimeContext context;
  std::string context_bytes;   // LoadSandboxes: the stored (deterministic) serialization of `context`; else ""
  std::string handle_sha256;   // 32 raw bytes; the sandbox handle itself is never stored
  std::string driver_handle;
  int64_t acquisition_id = 0;  // AdmitSandbox only: the RecordAdmissionIntent row this admission settles
  EnvelopePtr envelope;        // the admitted projection, exactly as admitted
  Verification verification = Verification::kNone;
  std::vector<std::string> signing_key_ids;  // the keys that were counted
  int64_t admitted_at_unix = 0;
  int64_t updated_at_unix = 0;
  openshell::policy::gateway::v1::LoadStatus load_status = openshell::policy::gateway::v1::LOAD_STATUS_UNSPECIFIED;
  std::string load_error;
  std::string reported_digest;
  int64_t reported_at_unix = 0;
  std::string last_refresh_error;
};

namespace change {

// ALREADY_EXISTS (and nothing of the batch is written) when the id or the handle hash is taken.
struct AdmitSandbox {
  SandboxRecord record;
};
// Moves every listed sandbox that still exists to `envelope` (refresh, re-projection of a whole scope).
// With `require_all`, NOT_FOUND (nothing written) unless every listed sandbox exists.
// With `replacing` (a refresh: checked against the projection it read), ABORTED "projection_changed: ..."
// (nothing written) unless every listed sandbox's stored projection is still `replacing`: a replica whose
// check started from an older projection never writes over a newer one another replica put in force since
// (the rollback check compared versions with this replica's own copy only).
// With `handle_sha256s` (parallel to sandbox_ids: a re-projection's members as it listed them), a listed id
// moves only while it is still admitted under that handle: one deleted and admitted again meanwhile —
// another context, perhaps another tenant, whose projection was not asked for — is left alone (review 117),
// and counts as gone for require_all.
struct ReplaceProjection {
  std::vector<std::string> sandbox_ids;
  EnvelopePtr envelope;
  Verification verification = Verification::kNone;
  std::vector<std::string> key_ids;
  int64_t now_unix = 0;
  bool require_all = true;
  EnvelopePtr replacing;
  std::vector<std::string> handle_sha256s;  // raw 32 bytes each; empty: not checked
};

// Whether c.sandbox_ids[i], found admitted under `handle_sha256` (raw), is one `c` moves: always when
// c.handle_sha256s is empty, else only under the handle listed for it. The store and the registry ask it.
inline bool ListedUnder(const ReplaceProjection& c, size_t i, std::string_view handle_sha256) {
  return c.handle_sha256s.empty() || (i < c.handle_sha256s.size() && c.handle_sha256s[i] == handle_sha256);
}

// The listed ids of `c` a store moves, given each stored row's handle hash (`stored`: id → raw hash; an id
// absent is gone); the others — those it passes by — are added to `passed_by` (when given). One pass.
inline std::vector<std::string> StillAdmitted(const ReplaceProjection& c, const std::map<std::string, std::string>& stored,
                                              std::set<std::string>* passed_by) {
  std::vector<std::string> out;
  for (size_t i = 0; i < c.sandbox_ids.size(); ++i) {
    auto it = stored.find(c.sandbox_ids[i]);
    if (it != stored.end() && ListedUnder(c, i, it->second)) {
      out.push_back(c.sandbox_ids[i]);
    } else if (passed_by != nullptr) {
      passed_by->insert(c.sandbox_ids[i]);
    }
  }
  return out;
}
// Records a refused refresh ("" clears it).
struct SetRefreshError {
  std::string sandbox_id;
  std::string error;
};
// Deletes the sandbox and queues the release of its driver handle. NOT_FOUND (nothing written) if absent.
struct DeleteSandbox {
  std::string sandbox_id;
};
// NOT_FOUND (nothing written) if the sandbox is absent. A report the same as the one recorded (digest,
// status and error all equal), of the admitted digest, only moves reported_at: a batch whose every change
// is such a repeat writes none of its events (CommitResult::events_written false), so a supervisor repeating itself fills no log.
struct RecordReport {
  std::string sandbox_id;
  std::string digest;
  openshell::policy::gateway::v1::LoadStatus status = openshell::policy::gateway::v1::LOAD_STATUS_UNSPECIFIED;
  std::string error;
  int64_t now_unix = 0;
};

}  // namespace change

using Change = std::variant<change::AdmitSandbox, change::ReplaceProjection, change::SetRefreshError,
                            change::DeleteSandbox, change::RecordReport>;

// ChangeBatch::checked_ceiling when no ceiling was in force.
inline constexpr int64_t kNoCeiling = -1;
// The start of the message of a batch refused because the ceiling changed (issue 25.10).
inline constexpr char kCeilingChanged[] = "ceiling_changed";
// The start of the message of a batch refused because a policy revision it did not know was stored.
inline constexpr char kPolicyChanged[] = "policy_changed";

struct ChangeBatch {
  std::vector<Change> changes;
  std::vector<AuditEvent> events;  // appended to the chain in the same transaction, in this order
  // The ceiling the batch's new projections were checked against: its version, or kNoCeiling. When set,
  // the store refuses the whole batch (ABORTED "ceiling_changed: ...", nothing written) inside its
  // transaction unless the stored ceiling is exactly that one. The check is serialised against
  // SaveCeiling (SQLite: the one writer; PostgreSQL: the ceiling's advisory lock, shared here, exclusive
  // there), so nothing
  // checked against an older ceiling commits once a newer one is stored. Every batch that puts a
  // projection in force (admission, refresh, re-projection) sets it.
  std::optional<int64_t> checked_ceiling;
  // The policy revisions the batch's projections were made from: for each scope its sandboxes resolve
  // through, the newest revision the driver knew (0: none). When set, the store refuses the whole batch
  // (ABORTED "policy_changed: ...", nothing written) inside its transaction when one of those scopes has
  // a newer revision in the database (scopes not named are not compared), serialised as checked_ceiling
  // is: a replica whose view of the revisions is behind (its change feed has not brought another
  // replica's revision yet) never writes an older policy over the newer one another replica already put
  // in force. Set by re-projections (the builtin driver).
  std::optional<std::map<std::string, uint64_t>> checked_revisions;
  // The batch is a re-projection of this scope: with replicas, the other replicas are told of it on the
  // change feed (RemoteChangeListener::OnRemoteReprojections), so one that learned of the scope's new
  // revision leaves the re-projection to the replica that made the revision instead of doing it twice.
  std::optional<std::string> reprojected_scope;
  uint64_t reprojected_revision = 0;  // the newest revision of that scope it was made from (0: none)
  // The index in `events` of the summary of the batch's moves (a re-projection's): written with the members
  // its ReplaceProjections passed by named in its reason, when there are any (InsertEvents).
  std::optional<size_t> moves_summary;
};

// Whether a commit was refused because the stored ceiling is not the one the batch was checked against.
inline bool IsCeilingChanged(const absl::Status& status) {
  return absl::IsAborted(status) && absl::StartsWith(status.message(), kCeilingChanged);
}
inline absl::Status CeilingChangedError(int64_t checked, int64_t stored) {
  auto name = [](int64_t v) { return v == kNoCeiling ? std::string("none") : std::string("version ") + std::to_string(v); };
  return common::Refused(absl::StatusCode::kAborted, kCeilingChanged,
                         "checked against ceiling " + name(checked) + " but the ceiling in the database is " + name(stored));
}

// Whether a commit was refused because a policy revision the batch did not know was stored.
inline bool IsPolicyChanged(const absl::Status& status) {
  return absl::IsAborted(status) && absl::StartsWith(status.message(), kPolicyChanged);
}
// `stored`: each scope's newest revision in the database. OK when none of the scopes `checked` names is
// newer there than it says.
inline absl::Status CheckRevisionsKnown(const std::map<std::string, uint64_t>& checked,
                                        const std::vector<std::pair<std::string, uint64_t>>& stored) {
  for (const auto& [scope, revision] : stored) {
    const auto known = checked.find(scope);
    if (known == checked.end()) continue;  // none of the batch's sandboxes resolves through it
    const uint64_t seen = known->second;
    if (revision > seen) {
      return absl::AbortedError(std::string(kPolicyChanged) + ": scope " + scope + " is at revision " +
                                std::to_string(revision) + " in the database; the projections were made from " +
                                (seen == 0 ? std::string("none of its revisions") : "revision " + std::to_string(seen)));
    }
  }
  return absl::OkStatus();
}

// Whether a batch writes its events (change::RecordReport): not when every change is a report the same as
// the one recorded. `same_report(report)` -> absl::StatusOr<bool> asks the store inside its transaction,
// before the changes are applied.
template <class SameReport>
absl::StatusOr<bool> WritesEvents(const ChangeBatch& batch, SameReport same_report) {
  if (batch.changes.empty()) return true;
  for (const Change& c : batch.changes) {
    const auto* report = std::get_if<change::RecordReport>(&c);
    if (report == nullptr) return true;
    absl::StatusOr<bool> same = same_report(*report);
    if (!same.ok()) return same.status();
    if (!*same) return true;
  }
  return false;
}

// Whether `event` of a batch names (AuditEvent::sandbox_id) a member a ReplaceProjection of the batch passed
// by (`passed_by`, StillAdmitted's): a store does not write it — it would say that member moved; with the
// verifiable log, an entry of a move that never happened (review 117).
inline bool NamesMemberPassedBy(const AuditEvent& event, const std::set<std::string>& passed_by) {
  return !event.sandbox_id.empty() && passed_by.contains(event.sandbox_id);
}

// The reason of a batch's summary of its moves (ChangeBatch::moves_summary) as a store writes it, `passed_by`
// (sorted ids: StillAdmitted's set, CommitResult::passed_by) not empty: its counts are of the members listed,
// so it names those passed by (at most ten, and how many more). The gateway's log line says the same.
template <class Ids>
std::string SummaryNamingPassedBy(const std::string& reason, const Ids& passed_by) {
  std::string out = reason + "; " + std::to_string(passed_by.size()) +
                    " of them passed by (deleted, or deleted and admitted again under another handle, while it ran; not moved):";
  size_t named = 0;
  for (const std::string& id : passed_by) {
    if (named == 10) break;
    out += (named++ == 0 ? " " : ", ") + id;
  }
  if (passed_by.size() > named) out += " and " + std::to_string(passed_by.size() - named) + " more";
  return out;
}

// Writes a batch's events with `insert` (absl::Status(AuditEvent*)), in order, once its changes are applied:
// none naming a member passed by (NamesMemberPassedBy), the summary of the moves naming those
// (SummaryNamingPassedBy: on a copy, so a transaction run again does not name them twice; `insert` may
// fill in the others' store-assigned fields, which a run again assigns afresh).
template <class Insert>
absl::Status InsertEvents(ChangeBatch& batch, const std::set<std::string>& passed_by, Insert insert) {
  for (size_t i = 0; i < batch.events.size(); ++i) {
    AuditEvent& event = batch.events[i];
    if (NamesMemberPassedBy(event, passed_by)) continue;
    if (batch.moves_summary == i && !passed_by.empty()) {
      AuditEvent noted = event;
      noted.reason = SummaryNamingPassedBy(event.reason, passed_by);
      if (absl::Status status = insert(&noted); !status.ok()) return status;
      continue;
    }
    if (absl::Status status = insert(&event); !status.ok()) return status;
  }
  return absl::OkStatus();
}

// A refresh refused because the sandbox's stored projection is not the one it was checked against.
inline constexpr char kProjectionChanged[] = "projection_changed";
inline bool IsProjectionChanged(const absl::Status& status) {
  return absl::IsAborted(status) && absl::StartsWith(status.message(), kProjectionChanged);
}
inline absl::Status ProjectionChangedError(const std::string& sandbox_id) {
  return common::Refused(absl::StatusCode::kAborted, kProjectionChanged,
                         "the projection in force for sandbox '" + sandbox_id +
                             "' changed since this refresh read it (another replica's refresh or re-projection); "
                             "nothing was written, refresh again");
}

// An admission whose note another replica took over (it counted this replica as gone and releases the
// driver handle): refused, nothing written; admitting again acquires a new handle.
inline constexpr char kAdmissionTakenOver[] = "admission_taken_over";
inline absl::Status AdmissionTakenOverError(const std::string& sandbox_id, const std::string& replica_id) {
  return absl::AbortedError(std::string(kAdmissionTakenOver) + ": the admission of '" + sandbox_id +
                            "' was taken over by another replica, which counted replica " + replica_id +
                            " as gone (no heartbeat) and releases its driver handle; nothing was admitted, admit again");
}

struct CommitResult {
  std::vector<int64_t> rows;  // per change: how many sandboxes it touched
  bool events_written = true;  // false: every change was a repeated RecordReport, and no event was written
  std::vector<std::string> passed_by;  // the members its ReplaceProjections passed by (StillAdmitted), sorted
};

// Told of every committed batch, in commit order, on the committing thread, before the committer
// returns. Must not call back into the store.
class ChangeListener {
 public:
  virtual ~ChangeListener() = default;
  virtual void OnCommitted(const ChangeBatch& batch, const CommitResult& result) = 0;
};

}  // namespace osh::store
