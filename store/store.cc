#include "store/store.h"

#include <set>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/errors.h"

namespace osh::store {
namespace {

absl::Status CommitOne(SandboxStore* store, Change change, AuditEvent event) {
  ChangeBatch batch;
  batch.changes.push_back(std::move(change));
  batch.events.push_back(std::move(event));
  return store->Commit(std::move(batch)).status();
}

}  // namespace

std::optional<PolicyRevisionRecord> PolicyRevisions::UnchangedRevision(
    const std::optional<PolicyRevisionRecord>& latest, const std::string& body_digest, AuditEvent* event) {
  if (!latest || latest->deleted() || body_digest.empty() || latest->digest != body_digest) return std::nullopt;
  PolicyRevisionRecord live = *latest;
  live.unchanged = true;
  absl::StrAppend(&event->reason, " (unchanged: revision ", live.revision, " kept)");
  event->audit_context["change.unchanged"] = "true";
  event->policy_digest = live.digest;
  event->policy_version = live.seq;
  return live;
}

absl::Status SandboxStore::InsertSandbox(SandboxRecord record, AuditEvent event) {
  return CommitOne(this, change::AdmitSandbox{std::move(record)}, std::move(event));
}

absl::Status SandboxStore::ReplaceProjection(const std::string& sandbox_id, EnvelopePtr envelope,
                                      Verification verification, const std::vector<std::string>& key_ids,
                                      int64_t now_unix, AuditEvent event) {
  return CommitOne(this, change::ReplaceProjection{{sandbox_id}, std::move(envelope), verification, key_ids, now_unix, true, nullptr, {}},
                   std::move(event));
}

absl::Status SandboxStore::SetRefreshError(const std::string& sandbox_id, const std::string& error, AuditEvent event) {
  return CommitOne(this, change::SetRefreshError{sandbox_id, error}, std::move(event));
}

absl::StatusOr<bool> SandboxStore::DeleteSandbox(const std::string& sandbox_id, AuditEvent event) {
  absl::Status status = CommitOne(this, change::DeleteSandbox{sandbox_id}, std::move(event));
  if (absl::IsNotFound(status)) return false;
  if (!status.ok()) return status;
  return true;
}

absl::Status SandboxStore::RecordReport(const std::string& sandbox_id, const std::string& digest,
                                 openshell::policy::gateway::v1::LoadStatus status, const std::string& error,
                                 int64_t now_unix, AuditEvent event) {
  return CommitOne(this, change::RecordReport{sandbox_id, digest, status, error, now_unix}, std::move(event));
}

void ReleaseQueue::RecordAdmissionIntentAsync(const RuntimeContext& context, const std::string& idempotency_key,
                                              std::function<void(absl::StatusOr<int64_t>)> done) {
  done(RecordAdmissionIntent(context, idempotency_key));
}

void SandboxStore::CommitAsync(ChangeBatch batch, CommitDone done) { done(Commit(std::move(batch))); }

absl::StatusOr<uint64_t> ReleaseQueue::CountPendingReleases() {
  auto pending = PendingReleases();
  if (!pending.ok()) return pending.status();
  return pending->size();
}

absl::StatusOr<std::vector<SandboxRecord>> SandboxStore::LoadSandboxesById(const std::vector<std::string>& ids) {
  auto all = LoadSandboxes();
  if (!all.ok()) return all.status();
  const std::set<std::string> wanted(ids.begin(), ids.end());
  std::vector<SandboxRecord> out;
  for (auto& record : *all) {
    if (wanted.count(record.context.sandbox_id()) != 0) out.push_back(std::move(record));
  }
  return out;
}

std::string Importer::Mark::Describe() const {
  return absl::StrCat("from ", source, ", started ",
                      absl::FormatTime(absl::RFC3339_sec, absl::FromUnixSeconds(started_unix), absl::UTCTimeZone()));
}

absl::Status CatalogueChanged(uint64_t expected) {
  return common::Refused(absl::StatusCode::kAborted, "catalogue_changed",
                         absl::StrCat("the provider-profile catalogue changed (generation ", expected,
                                      " moved on) while this change was checked; check it again"));
}

absl::Status RecordChanged(const std::string& sandbox) {
  return common::Refused(absl::StatusCode::kAborted, "record_changed",
                         absl::StrCat("the interceptor's record of sandbox '", sandbox,
                                      "' changed since it was read; decide again on the record as it is"));
}

absl::StatusOr<std::vector<InterceptorRecordRow>> ListRecordPartsAfter(const std::optional<std::string>& after,
                                                                       size_t limit, const ReadRecordPart& read) {
  std::vector<InterceptorRecordRow> out;
  const bool second_part = after.has_value() && InterceptorKeyInSecondPart(*after);
  for (const bool with_separator : {false, true}) {
    if (out.size() >= limit || (second_part && !with_separator)) continue;
    // After `after` in its own part; a later part from its first key.
    const bool after_here = after.has_value() && second_part == with_separator;
    auto rows = read(with_separator, after_here ? *after : std::string(), limit - out.size());
    if (!rows.ok()) return rows.status();
    for (InterceptorRecordRow& row : *rows) out.push_back(std::move(row));
  }
  return out;
}

}  // namespace osh::store
