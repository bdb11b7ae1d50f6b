#include "gateway/core/log_sequencer.h"

#include <algorithm>
#include <deque>
#include <filesystem>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/errors.h"
#include "policy/policy_file.h"
#include "tlog/checkpoint.h"
#include "tlog/cosignature.h"
#include "tlog/tiles.h"
#include "trust/audit_chain.h"
#include "trust/audit_vocabulary.h"

namespace osh::gateway {
namespace audit = trust::audit;
namespace {

constexpr char kInconsistent[] = "log_inconsistent";
// The most entries kept in memory for the entry bundles not yet written (a few checkpoint intervals' worth
// at any admission rate this gateway reaches; beyond it, the oldest are read back from the audit log).
constexpr size_t kMaxCachedEntries = 1 << 16;

// Entries [begin, end) of the tree are the events with seq begin+1 .. end, read back from the audit log.
class AuditEntryReader final : public tlog::EntryReader {
 public:
  explicit AuditEntryReader(store::AuditLog* log) : log_(log) {}
  absl::StatusOr<std::vector<std::string>> ReadEntries(int64_t begin, int64_t end) const override {
    std::vector<std::string> entries;
    entries.reserve(static_cast<size_t>(end - begin));
    for (int64_t at = begin; at < end;) {
      const uint32_t want = static_cast<uint32_t>(std::min<int64_t>(end - at, 1000));
      auto events = log_->ListAuditEvents(static_cast<uint64_t>(at), want);
      if (!events.ok()) return events.status();
      if (events->empty()) return absl::DataLossError(absl::StrCat("audit event ", at + 1, " is missing"));
      for (const auto& event : *events) {
        if (static_cast<int64_t>(event.seq) != at + 1) {
          return absl::DataLossError(absl::StrCat("audit event ", at + 1, " is missing (found ", event.seq, ")"));
        }
        entries.push_back(trust::CanonicalAuditBytes(event));
        if (++at == end) break;
      }
    }
    return entries;
  }

 private:
  store::AuditLog* const log_;
};

// Serves [begin, end) from the sequencer's copy of the newest entries (a suffix of the tree) where it
// holds them and reads the part before it back from the audit log: that part is only ever needed for the
// first checkpoint after Open, or when the copy was cut short (see kMaxCachedEntries).
class CachedEntryReader final : public tlog::EntryReader {
 public:
  CachedEntryReader(store::AuditLog* log, int64_t cache_begin, const std::deque<std::string>& cache)
      : log_(log), cache_begin_(cache_begin), cache_(cache) {}
  absl::StatusOr<std::vector<std::string>> ReadEntries(int64_t begin, int64_t end) const override {
    std::vector<std::string> entries;
    if (begin < cache_begin_) {
      auto read = AuditEntryReader(log_).ReadEntries(begin, std::min(end, cache_begin_));
      if (!read.ok()) return read.status();
      entries = *std::move(read);
      begin = std::min(end, cache_begin_);
    }
    const int64_t cache_end = cache_begin_ + static_cast<int64_t>(cache_.size());
    if (end > cache_end) return absl::InternalError(absl::StrCat("log entry ", cache_end, " was never appended"));
    entries.insert(entries.end(), cache_.begin() + (begin - cache_begin_), cache_.begin() + (end - cache_begin_));
    return entries;
  }

 private:
  store::AuditLog* const log_;
  const int64_t cache_begin_;
  const std::deque<std::string>& cache_;
};

}  // namespace

LogSequencer::LogSequencer(store::AuditLog* log, LogSequencerOptions options, std::unique_ptr<tlog::NoteSigner> signer,
                           std::string verifier_key)
    : log_(log), options_(std::move(options)), signer_(std::move(signer)), verifier_key_(std::move(verifier_key)) {
  last_hash_ = trust::kGenesisHash;
}

absl::StatusOr<std::unique_ptr<LogSequencer>> LogSequencer::Open(store::AuditLog* log, LogSequencerOptions options) {
  if (options.origin.empty()) return absl::InvalidArgumentError("log_origin must not be empty");
  auto signer = tlog::Ed25519NoteSigner::FromPem(options.origin, options.signing_key_pem);
  if (!signer.ok()) return common::Annotated(signer.status(), "log_signing_key");
  std::string verifier_key = (*signer)->VerifierKey();
  if (options.witnesses != nullptr) {
    // No witness may be the log itself: its cosignatures would be the log key's own.
    auto self = tlog::ParseVerifierKey(verifier_key);
    if (!self.ok()) return self.status();
    if (absl::Status apart = tlog::CheckCosigners(options.witnesses->verifiers(), self->get()); !apart.ok()) {
      return common::Annotated(apart, "log_witnesses");
    }
  }
  std::unique_ptr<LogSequencer> sequencer(
      new LogSequencer(log, std::move(options), *std::move(signer), std::move(verifier_key)));
  {
    absl::MutexLock lock(&sequencer->integrate_mu_);
    if (absl::Status rebuilt = sequencer->AppendPending(); !rebuilt.ok()) return rebuilt;
    sequencer->rebuilt_ = true;  // from here on, the newest entries are kept for the next entry bundle
    if (absl::Status checked = sequencer->CheckAgainstPublished(); !checked.ok()) return checked;
    if (absl::Status checked = sequencer->CheckSignedAhead(); !checked.ok()) return checked;
    if (absl::Status repaired = sequencer->RepairPublishedEdge(); !repaired.ok()) return repaired;
    if (auto published = sequencer->Publish(); !published.ok()) return published.status();
  }
  return sequencer;
}

LogSequencer::~LogSequencer() {
  if (thread_.joinable()) {
    stop_.Notify();
    thread_.join();
  }
  IntegrateOnce().IgnoreError();  // best effort: the next Open integrates whatever this misses
}

void LogSequencer::Start(std::function<void(const absl::Status&)> on_error) {
  thread_ = std::thread([this, on_error = std::move(on_error)] {
    int64_t told = current().size;
    while (!stop_.WaitForNotificationWithTimeout(options_.interval)) {
      auto integrated = IntegrateOnce();
      if (!integrated.ok()) {
        if (on_error) on_error(integrated.status());
        continue;
      }
      if (*integrated <= told) continue;
      told = *integrated;
      absl::MutexLock lock(&listener_mu_);
      if (published_listener_) published_listener_(told);
    }
  });
}

void LogSequencer::SetPublishedListener(std::function<void(int64_t size)> listener) {
  absl::MutexLock lock(&listener_mu_);
  published_listener_ = std::move(listener);
}

absl::StatusOr<int64_t> LogSequencer::IntegrateOnce() {
  absl::MutexLock lock(&integrate_mu_);
  if (absl::Status appended = AppendPending(); !appended.ok()) return appended;
  return Publish();
}

absl::Status LogSequencer::AppendPending() {
  for (;;) {
    const int64_t size = hashes_.size();
    auto events = log_->ListAuditEvents(static_cast<uint64_t>(size), options_.page);
    if (!events.ok()) return events.status();
    if (events->empty()) return absl::OkStatus();
    for (const auto& event : *events) {
      const int64_t index = hashes_.size();
      if (static_cast<int64_t>(event.seq) != index + 1) {
        return absl::FailedPreconditionError(absl::StrCat(kInconsistent, ": the audit log has event ", event.seq,
                                                          " where event ", index + 1, " belongs"));
      }
      // The chain the tree replaces is checked as it is taken in: an event rewritten in the database (its
      // stored hash no longer its own, or its link broken) never becomes an entry.
      if (event.prev_hash != last_hash_ || trust::ChainHash(event.prev_hash, event) != event.hash) {
        return absl::FailedPreconditionError(absl::StrCat(
            kInconsistent, ": audit event ", event.seq, " does not verify against the hash chain (rewritten in the database?)"));
      }
      last_hash_ = event.hash;
      std::string entry = trust::CanonicalAuditBytes(event);
      if (entry.size() > trust::kMaxCanonicalAuditBytes) {  // written before events were fitted to the log
        return absl::FailedPreconditionError(absl::StrCat(
            "audit event ", event.seq, " is ", entry.size(), " bytes in canonical form, over the ",
            trust::kMaxCanonicalAuditBytes, " a verifiable-log entry holds (a C2SP entry bundle's frame); it was "
            "written by an older gateway, before events were cut to fit. The log cannot include this chain: run "
            "without log_signing_key, or start a new database (policy-gateway migrate copies the chain as it is)"));
      }
      hashes_.Append(entry);
      if (rebuilt_) {
        open_bundle_.push_back(std::move(entry));
        if (open_bundle_.size() > kMaxCachedEntries) {  // checkpoints failing for long: bound the memory
          open_bundle_.pop_front();
          ++open_bundle_begin_;
        }
      } else {
        open_bundle_begin_ = hashes_.size();
      }
      IndexForSandbox(index, event);
    }
    if (events->size() < options_.page) return absl::OkStatus();
  }
}

absl::StatusOr<std::optional<LogSequencer::OwnCheckpoint>> LogSequencer::ReadOwnCheckpoint(const std::string& name, absl::string_view what) const {
  const std::string path = (std::filesystem::path(options_.dir) / name).string();
  auto text = policy::ReadFileToString(path);
  if (absl::IsNotFound(text.status())) return std::nullopt;
  if (!text.ok()) {
    // Unreadable is not absent: taking it for a new log would publish a checkpoint without checking that
    // the tree still extends the one sandboxes and witnesses hold.
    return absl::FailedPreconditionError(absl::StrCat(kInconsistent, ": cannot check ", what, ": ",
                                                      text.status().message()));
  }
  auto verifier = tlog::ParseVerifierKey(verifier_key_);
  if (!verifier.ok()) return verifier.status();
  auto opened = tlog::OpenCheckpoint(*text, options_.origin, **verifier);
  if (!opened.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        kInconsistent, ": ", path, " does not open with this log key and origin (", opened.status().message(),
        "); a log's key and origin never change — move the folder away to start a new log"));
  }
  return OwnCheckpoint{path, opened->checkpoint, *std::move(text)};
}

absl::Status LogSequencer::CheckExtends(const OwnCheckpoint& own, absl::string_view what) const {
  const tlog::Checkpoint& cp = own.checkpoint;
  if (cp.size > hashes_.size()) {
    return absl::FailedPreconditionError(absl::StrCat(
        kInconsistent, ": ", what, " (", own.path, ") covers ", cp.size, " entries but the audit log holds ",
        hashes_.size(), " events: the database was rolled back under the log; serving it would fork the log "
        "sandboxes and witnesses hold"));
  }
  auto root = tlog::TreeHash(cp.size, hashes_);
  if (!root.ok()) return root.status();
  if (*root != cp.root) {
    return absl::FailedPreconditionError(absl::StrCat(
        kInconsistent, ": the first ", cp.size, " audit events no longer give the root ", tlog::HashToBase64(cp.root),
        " of ", what, " (", own.path, "; they give ", tlog::HashToBase64(*root),
        "): the database was rewritten under the log"));
  }
  return absl::OkStatus();
}

absl::Status LogSequencer::CheckSignedAhead() {
  // A checkpoint signed and shown to witnesses, whose publication a crash stopped: the witnesses hold it,
  // so the tree must still extend it, and no tile under it may be replaced.
  constexpr absl::string_view kWhat = "a checkpoint signed and sent to the witnesses before a crash";
  auto shown = ReadOwnCheckpoint(kSignedAheadFile, kWhat);
  if (!shown.ok()) return shown.status();
  if (!shown->has_value() || (*shown)->checkpoint.size <= current().size) return absl::OkStatus();  // published since
  if (absl::Status extends = CheckExtends(**shown, kWhat); !extends.ok()) return extends;
  signed_ahead_ = (*shown)->checkpoint.size;
  return absl::OkStatus();
}

absl::Status LogSequencer::CheckAgainstPublished() {
  auto published = ReadOwnCheckpoint("checkpoint", "the published checkpoint");
  if (!published.ok()) return published.status();
  if (!published->has_value()) return absl::OkStatus();  // nothing published yet: a new log
  if (absl::Status extends = CheckExtends(**published, "the published checkpoint"); !extends.ok()) return extends;
  OwnCheckpoint& own = **published;
  absl::MutexLock lock(&published_mu_);
  published_ = {own.checkpoint.size, own.checkpoint.root, std::move(own.text)};
  return absl::OkStatus();
}

absl::Status LogSequencer::RepairPublishedEdge() {
  const Published published = current();
  if (published.checkpoint.empty() || published.size == 0) return absl::OkStatus();
  // The right edge of the published tree — at each level its last tile, and the last bundle: the files
  // written last, in the folders made last — rewritten when missing, checked when present: a tile lost
  // under the published checkpoint would make every monitor fail for good. Files under it that differ are
  // refused (FAILED_PRECONDITION).
  CachedEntryReader entries(log_, open_bundle_begin_, open_bundle_);
  tlog::TileWriteOptions write;
  write.sync = options_.sync;
  write.published_size = std::max(published.size, signed_ahead_);
  write.delete_superseded_partials = false;
  auto written = tlog::WriteEdgeTiles(options_.dir, published.size, hashes_, entries, write);
  if (!written.ok()) return common::Annotated(written.status(), "the published log's tiles");
  return absl::OkStatus();
}

namespace {

// The witnesses' cosignatures a published checkpoint carries, verified with their keys (none when it does
// not open).
std::vector<tlog::NoteSignature> CosignaturesOn(const std::string& note, const std::string& origin,
                                                const std::string& log_vkey, const LogWitnesses& witnesses) {
  auto verifier = tlog::ParseVerifierKey(log_vkey);
  if (!verifier.ok()) return {};
  auto opened = tlog::OpenCheckpoint(note, origin, **verifier, witnesses.verifiers(), 0);
  if (!opened.ok()) return {};
  std::vector<tlog::NoteSignature> cosignatures;
  for (const auto& signature : opened->note.verified) {
    if (signature.name != (*verifier)->name() || signature.key_id != (*verifier)->key_id()) {
      cosignatures.push_back(signature);
    }
  }
  return cosignatures;
}

// One cosignature per witness, in configuration order: this round's, or else the one the published
// checkpoint of the same tree already carries (a cosignature covers the checkpoint's text, which a round
// on the same tree does not change).
std::vector<tlog::NoteSignature> MergeCosignatures(const std::vector<tlog::NoteSignature>& fresh,
                                                   const std::vector<tlog::NoteSignature>& earlier,
                                                   const LogWitnesses& witnesses) {
  std::vector<tlog::NoteSignature> merged;
  for (const tlog::NoteVerifier* witness : witnesses.verifiers()) {
    for (const auto* from : {&fresh, &earlier}) {
      auto it = std::find_if(from->begin(), from->end(), [&](const tlog::NoteSignature& s) {
        return s.name == witness->name() && s.key_id == witness->key_id();
      });
      if (it != from->end()) {
        merged.push_back(*it);
        break;
      }
    }
  }
  return merged;
}

}  // namespace

absl::StatusOr<int64_t> LogSequencer::Publish() {
  const Published before = current();
  const int64_t size = hashes_.size();
  std::vector<tlog::NoteSignature> on_published;  // of the same tree, when nothing new was appended
  if (size == before.size && !before.checkpoint.empty()) {
    // Nothing new. A checkpoint some witness did not cosign is shown to them again (the same size: C2SP
    // tlog-witness cosigns it afresh), at most once per retry interval, until every one has; its
    // cosignatures are read from the note itself (right after a restart too).
    if (options_.witnesses == nullptr || absl::Now() < next_recollect_) return size;
    next_recollect_ = absl::Now() + options_.witness_recollect;
    on_published = CosignaturesOn(before.checkpoint, options_.origin, verifier_key_, *options_.witnesses);
    if (on_published.size() >= options_.witnesses->verifiers().size()) return size;
  }
  CachedEntryReader entries(log_, open_bundle_begin_, open_bundle_);
  tlog::TileWriteOptions write;
  write.sync = options_.sync;
  // Tiles past the published size that a crash left over entries since rolled back are replaced; with no
  // checkpoint on disk nothing is known to be unpublished.
  write.published_size = before.checkpoint.empty() ? -1 : std::max(before.size, signed_ahead_);
  // A partial a full tile supersedes stays until the checkpoint of this size is out: a reader of the one
  // published now may still ask for it (the full tile is not served before its checkpoint).
  write.delete_superseded_partials = false;
  if (auto written = tlog::WriteTiles(options_.dir, before.size, size, hashes_, entries, write); !written.ok()) {
    return written.status();
  }
  auto root = tlog::TreeHash(size, hashes_);
  if (!root.ok()) return root.status();
  const tlog::Checkpoint checkpoint{options_.origin, size, *root, {}};
  auto note = tlog::SignCheckpoint(checkpoint, {signer_.get()});
  if (!note.ok()) return note.status();
  if (options_.witnesses != nullptr) {
    // Shown to the witnesses before it is published: recorded first, so that after a crash no tile under
    // it is replaced and a database that no longer extends it is refused (CheckSignedAhead).
    const std::string ahead = (std::filesystem::path(options_.dir) / kSignedAheadFile).string();
    if (absl::Status recorded = tlog::WriteFileAtomically(ahead, *note, options_.sync); !recorded.ok()) return recorded;
    signed_ahead_ = std::max(signed_ahead_, size);
    const std::vector<tlog::NoteSignature> cosignatures = MergeCosignatures(
        options_.witnesses->Collect(*note, size,
                                    [this](int64_t old_size, int64_t new_size) { return ProveConsistency(old_size, new_size); }),
        on_published, *options_.witnesses);
    // The same checkpoint again: republished only with more cosignatures than it carries (a witness down
    // now never takes away one it gave before: its earlier cosignature is kept).
    if (size == before.size && cosignatures.size() <= on_published.size()) return size;
    if (!cosignatures.empty()) {
      note = tlog::SignCheckpoint(checkpoint, {signer_.get()}, cosignatures);
      if (!note.ok()) return note.status();
    }
  }
  const std::string path = (std::filesystem::path(options_.dir) / "checkpoint").string();
  if (absl::Status written = tlog::WriteFileAtomically(path, *note, options_.sync); !written.ok()) return written;
  tlog::DeleteSupersededPartials(options_.dir, before.size, size);  // C2SP: MAY, once the full tile is served
  // Keep only the entries of the bundle that is still open (full bundles are never written again).
  const int64_t keep_from = size - size % tlog::kTileWidth;
  while (open_bundle_begin_ < keep_from && !open_bundle_.empty()) {
    open_bundle_.pop_front();
    ++open_bundle_begin_;
  }
  absl::MutexLock lock(&published_mu_);
  published_ = {size, *root, *std::move(note)};
  return size;
}

void LogSequencer::IndexForSandbox(int64_t index, const trust::AuditEvent& event) {
  if (event.sandbox_id.empty()) return;
  const bool puts_in_force = (event.type == audit::Type::kAdmission || event.type == audit::Type::kRefresh ||
                              event.type == audit::Type::kReprojection) &&
                             event.outcome == audit::Outcome::kOk && !event.policy_digest.empty();
  absl::MutexLock lock(&published_mu_);
  if (puts_in_force) {
    sandbox_entries_[event.sandbox_id] = SandboxEntry{index, event, nullptr, 0};
  } else if (event.type == audit::Type::kDeletion && event.outcome == audit::Outcome::kOk) {
    sandbox_entries_.erase(event.sandbox_id);
  }
}

absl::StatusOr<openshell::policy::gateway::v1::LogProof> LogSequencer::ProofFor(const std::string& sandbox_id,
                                                                                const std::string& policy_digest,
                                                                                uint64_t policy_version,
                                                                                uint64_t known_size,
                                                                                int64_t* checkpoint_size) const {
  openshell::policy::gateway::v1::LogProof proof;
  if (absl::Status proved = ProofInto(sandbox_id, policy_digest, policy_version, known_size, &proof, checkpoint_size);
      !proved.ok()) {
    return proved;
  }
  return proof;
}

absl::Status LogSequencer::ProofInto(const std::string& sandbox_id, const std::string& policy_digest,
                                     uint64_t policy_version, uint64_t known_size,
                                     openshell::policy::gateway::v1::LogProof* out, int64_t* checkpoint_size) const {
  out->Clear();
  Published published;
  std::shared_ptr<const openshell::policy::gateway::v1::LogProof> cached;
  SandboxEntry entry;
  {
    absl::MutexLock lock(&published_mu_);
    published = published_;
    auto found = sandbox_entries_.find(sandbox_id);
    // The same digest at another version (a policy moved to a higher version unchanged, or A→B→A) is
    // another projection: its own entry is awaited.
    if (found == sandbox_entries_.end() || found->second.event.policy_digest != policy_digest ||
        found->second.event.policy_version != policy_version || found->second.index >= published.size) {
      return absl::UnavailableError(absl::StrCat(
          "log_pending: the entry for this sandbox's projection is not under a checkpoint yet; retry shortly"));
    }
    if (found->second.proof != nullptr && found->second.proof_size == published.size) cached = found->second.proof;
    else entry = found->second;
  }
  if (known_size > static_cast<uint64_t>(published.size)) {
    return absl::OutOfRangeError(absl::StrCat("known_size ", known_size, " is beyond the checkpoint's ", published.size,
                                              " entries: this is not the log you verified before"));
  }
  if (cached == nullptr) {
    // The proof against this checkpoint, computed once and kept until the next checkpoint: every
    // supervisor of a fleet asks for it after each change.
    auto inclusion = ProveInclusion(entry.index, published.size);
    if (!inclusion.ok()) return inclusion.status();
    auto built = std::make_shared<openshell::policy::gateway::v1::LogProof>();
    *built->mutable_entry() = trust::ToProto(entry.event);
    built->set_index(static_cast<uint64_t>(entry.index));
    for (const auto& hash : *inclusion) built->add_inclusion_proof(std::string(tlog::HashBytes(hash)));
    built->set_checkpoint(published.checkpoint);
    absl::MutexLock lock(&published_mu_);
    auto found = sandbox_entries_.find(sandbox_id);
    if (found != sandbox_entries_.end() && found->second.index == entry.index && published_.size == published.size) {
      found->second.proof = built;
      found->second.proof_size = published.size;
    }
    cached = std::move(built);
  }
  tlog::Proof consistency;  // from the size the caller knows, when it knows an older one
  if (known_size > 0 && known_size < static_cast<uint64_t>(published.size)) {
    auto proved = ProveConsistency(static_cast<int64_t>(known_size), published.size);
    if (!proved.ok()) return proved.status();
    consistency = *std::move(proved);
  }
  out->CopyFrom(*cached);
  // The proof depends on the size alone; the note does not: the same size may be published again with
  // more cosignatures (a witness back), and the sandbox must get that note (review 102: the cached proof
  // kept the note it was built with, so a quorum the witnesses had since met was refused until the log grew).
  out->set_checkpoint(published.checkpoint);
  for (const auto& hash : consistency) out->add_consistency_proof(std::string(tlog::HashBytes(hash)));
  if (checkpoint_size != nullptr) *checkpoint_size = published.size;
  return absl::OkStatus();
}

LogSequencer::Published LogSequencer::current() const {
  absl::MutexLock lock(&published_mu_);
  return published_;
}

absl::StatusOr<tlog::Proof> LogSequencer::ProveInclusion(int64_t index, int64_t size) const {
  if (index < 0 || index >= size || size > hashes_.size()) {
    return absl::OutOfRangeError(absl::StrCat("entry ", index, " is not in a tree of ", size, " entries"));
  }
  return tlog::ProveRecord(size, index, hashes_);
}

absl::StatusOr<tlog::Proof> LogSequencer::ProveConsistency(int64_t old_size, int64_t size) const {
  if (old_size < 1 || old_size > size || size > hashes_.size()) {
    return absl::OutOfRangeError(absl::StrCat("no consistency proof from ", old_size, " to ", size));
  }
  return tlog::ProveTree(size, old_size, hashes_);
}

}  // namespace osh::gateway
