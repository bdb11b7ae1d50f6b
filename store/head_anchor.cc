#include "store/head_anchor.h"

#include <cstdio>
#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "policy/policy_file.h"
#include "store/store.h"
#include "trust/audit_chain.h"

namespace osh::store {

HeadAnchor::~HeadAnchor() {
  if (!thread_.joinable()) return;  // never started: a refused rollback must stay refused
  stop_.Notify();
  thread_.join();
  Record();  // the final head, after the last change
}

void HeadAnchor::StartRecording() {
  Record();
  thread_ = std::thread([this] {
    while (!stop_.WaitForNotificationWithTimeout(absl::Seconds(1))) Record();
  });
}

absl::Status HeadAnchor::Check() {
  auto text = policy::ReadFileToString(path_);
  if (absl::IsNotFound(text.status())) return absl::OkStatus();  // no record yet (a new database, or a first start)
  // Unreadable is not absent (review 106): a record that cannot be read proves nothing either way.
  if (!text.ok()) return absl::FailedPreconditionError(absl::StrCat("state_rollback check: ", text.status().message()));
  const std::vector<std::string> fields = absl::StrSplit(absl::StripAsciiWhitespace(*text), ' ');
  uint64_t seq = 0;
  if (fields.size() != 2 || !absl::SimpleAtoi(fields[0], &seq) || fields[1].size() != 64) {
    return absl::FailedPreconditionError(absl::StrCat(path_, ": not a head record (\"<seq> <hash>\")"));
  }
  const AuditLog::ChainHead head = log_->AuditChainHead();
  const std::string rolled_back = absl::StrCat(
      "state_rollback: the database's audit chain ", "%s", "; ", path_, " recorded event ", seq, " with hash ", fields[1],
      ". The database was restored from an older copy or replaced: deleted sandboxes and revoked handles could be "
      "served again. Start with --accept-state-rollback once you have confirmed this state is the one to serve");
  auto explain = [&](const std::string& what) {
    std::string message = rolled_back;
    message.replace(message.find("%s"), 2, what);
    return absl::FailedPreconditionError(message);
  };
  if (seq == 0) return absl::OkStatus();
  if (head.seq < seq) return explain(absl::StrCat("ends at event ", head.seq));
  auto events = log_->ListAuditEvents(seq - 1, 1);
  if (!events.ok() || events->empty() || (*events)[0].hash != fields[1]) {
    return explain(absl::StrCat("has another event ", seq));
  }
  // Its stored hash is not enough: an older copy with a row written to say that hash would pass. The
  // event's own contents must hash to it (review 106).
  if (trust::ChainHash((*events)[0].prev_hash, (*events)[0]) != fields[1]) {
    return explain(absl::StrCat("has an event ", seq, " whose contents do not hash to the hash it states"));
  }
  // And it continues the chain before it: the genuine row copied alone into an older copy does not
  // (review 107; copying the whole chain is beyond this check: docs/threat-model.md).
  if (seq > 1) {
    auto before = log_->ListAuditEvents(seq - 2, 1);
    if (!before.ok() || before->empty() || (*before)[0].seq != seq - 1 || (*before)[0].hash != (*events)[0].prev_hash) {
      return explain(absl::StrCat("does not link event ", seq, " to an event ", seq - 1, " before it"));
    }
  }
  return absl::OkStatus();
}

void HeadAnchor::Record() {
  const AuditLog::ChainHead head = log_->AuditChainHead();
  absl::MutexLock lock(&mu_);
  if (forked_) return;
  if (head.seq == recorded_seq_ && head.hash == recorded_hash_) return;
  // Never backwards: a replica that cannot read a shared database reports the last head it wrote itself,
  // which other replicas may have passed.
  if (recorded_seq_ != UINT64_MAX && head.seq < recorded_seq_) return;
  // Still the chain recorded (review 114): a shared database that fails over to a copy missing the newest
  // events grows another chain from there, and once it passes the recorded seq the record would follow it
  // — a restart would then accept the fork (deletions lost, revoked handles served again). The event
  // recorded last must still be there, as recorded; if it is not, the record stays where it is, and a
  // restart refuses this state (state_rollback) until an operator accepts it.
  if (recorded_seq_ != UINT64_MAX && recorded_seq_ > 0) {
    auto recorded = log_->ListAuditEvents(recorded_seq_ - 1, 1);
    if (!recorded.ok()) return;  // asked again at the next record
    if (recorded->empty() || (*recorded)[0].seq != recorded_seq_ || (*recorded)[0].hash != recorded_hash_) {
      forked_ = true;
      if (notice_) {
        notice_(absl::StrCat("state_rollback: the database's audit chain no longer holds event ", recorded_seq_,
                             " with hash ", recorded_hash_, " as recorded in ", path_,
                             ": it was rolled back or forked under this gateway (a failover to a copy missing the "
                             "newest events?). The record stays at event ", recorded_seq_,
                             "; a restart refuses this state until it is accepted (--accept-state-rollback)"));
      }
      return;
    }
  }
  // 0600 like everything else the gateway keeps in its state folder; flushed, then renamed into place.
  if (absl::Status written = policy::WriteFileAtomically(path_, absl::StrCat(head.seq, " ", head.hash, "\n"), 0600);
      !written.ok()) {
    if (notice_) notice_(absl::StrCat("cannot record the audit head in ", path_, ": ", written.message()));
    return;
  }
  recorded_seq_ = head.seq;
  recorded_hash_ = head.hash;
}

absl::StatusOr<std::unique_ptr<HeadAnchor>> AnchorOpenedStore(AuditLog* log, const StoreOptions& options) {
  if (options.anchor_path.empty()) return nullptr;
  auto anchor = std::make_unique<HeadAnchor>(log, options.anchor_path, options.notice);
  if (absl::Status anchored = anchor->Check(); !anchored.ok()) {
    if (!options.accept_state_rollback) return anchored;
    AuditEvent event;
    event.type = trust::audit::Type::kStateRollbackAccepted;
    event.outcome = trust::audit::Outcome::kOk;
    event.reason = std::string(anchored.message());
    if (absl::Status audited = log->AppendAudit(std::move(event)); !audited.ok()) {
      return absl::Status(audited.code(), absl::StrCat("cannot audit the accepted rollback: ", audited.message()));
    }
    if (options.notice) options.notice(absl::StrCat(anchored.message(), " — accepted (--accept-state-rollback)"));
  }
  anchor->StartRecording();  // only reached when the state checked out or was accepted
  return anchor;
}

}  // namespace osh::store
