// The verifiable log's sequencer (issue 27): the audit log, entry for entry, as an RFC 6962 Merkle tree
// published as C2SP tlog-tiles with signed C2SP checkpoints.
//
// Entry i of the tree is the canonical bytes (trust::CanonicalAuditBytes) of the audit event with seq
// i + 1, so the tree holds every event in the order the store sealed them — an upgraded database's whole
// chain becomes its first entries. The sequencer keeps every stored hash in memory (two hashes an entry,
// 64 B), rebuilt from the audit log when it opens: as it rebuilds, it checks that each event still links to
// the one before it (the hash chain) and that the first N events still give the root of the checkpoint it
// last published (N its size). A database rolled back under the log (fewer events than the checkpoint
// covers) or rewritten (another root) is refused with FAILED_PRECONDITION "log_inconsistent: ...":
// serving on would fork the log that sandboxes and witnesses already hold.
//
// Integration runs in batches: every `interval` (and when asked) the events sealed since the last
// checkpoint are appended, their tiles and entry bundles written under `dir` (files 0644, written to a
// temporary name and renamed; a full tile is never rewritten), and only then the new checkpoint, signed
// with the log key — so anything a checkpoint covers is already published. An event is durable when its
// transaction commits (the store); the sequencer only makes it provable, and after a crash the next
// Open integrates whatever was committed. Several replicas sharing one database may each run one over
// their own `dir`: the chain is one sequence, so their trees agree at every size and their checkpoints are
// consistent with each other.
//
// Thread-safe: IntegrateOnce serialises itself; current() and Prove* may be called from any thread.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "absl/container/flat_hash_map.h"
#include "openshell/policy/gateway/v1/gateway.pb.h"
#include "store/store.h"
#include "gateway/core/log_witnesses.h"
#include "tlog/checkpoint.h"
#include "tlog/merkle.h"
#include "tlog/note.h"

namespace osh::gateway {

struct LogSequencerOptions {
  std::string dir;              // where tiles, bundles and `checkpoint` are published (<state_dir>/log)
  std::string origin;           // the checkpoint's origin line, also the log key's name
  std::string signing_key_pem;  // the log key: an Ed25519 private key (PEM), never a trust-store key
  absl::Duration interval = absl::Milliseconds(200);
  uint32_t page = 1000;         // events read from the audit log at a time
  bool sync = true;             // fsync tiles and the checkpoint (off only in benchmarks)
  // Witnesses asked to cosign each new checkpoint before it is published (null: none). The checkpoint
  // published carries the cosignatures collected; a witness that does not answer only misses from it.
  std::shared_ptr<LogWitnesses> witnesses;
  // A published checkpoint some witness did not cosign is shown to them again this often while the tree
  // does not grow (the witnesses' own retry_after still skips one that failed).
  absl::Duration witness_recollect = absl::Seconds(10);
};

class LogSequencer {
 public:
  // Rebuilds the tree from `log` (which must outlive the sequencer), checks it against the published
  // checkpoint, and integrates what is pending. INVALID_ARGUMENT for a bad key or origin;
  // FAILED_PRECONDITION "log_inconsistent: ..." as above; storage errors as the log gives them.
  static absl::StatusOr<std::unique_ptr<LogSequencer>> Open(store::AuditLog* log, LogSequencerOptions options);
  // Stops the background integration (if started), then integrates what is pending.
  ~LogSequencer();

  // Integrates every event sealed so far; returns the tree size its checkpoint covers.
  absl::StatusOr<int64_t> IntegrateOnce();
  // Runs IntegrateOnce every options.interval on a thread of its own until destruction; failures are
  // told to `on_error` (and retried next time).
  void Start(std::function<void(const absl::Status&)> on_error);
  // `listener` is called on Start's thread, with no lock of the sequencer held, after each integration
  // that grew the published tree (with its new size). Replaces the listener before; an empty one clears
  // it, and once SetPublishedListener returns the old one is not running nor called again. Thread-safe.
  void SetPublishedListener(std::function<void(int64_t size)> listener);

  struct Published {
    int64_t size = 0;         // entries the checkpoint covers
    tlog::Hash root{};
    std::string checkpoint;   // the signed note ("" before anything was integrated)
  };
  Published current() const;
  // Inclusion proof of entry `index` in the tree of `size` entries (size <= what was integrated).
  absl::StatusOr<tlog::Proof> ProveInclusion(int64_t index, int64_t size) const;
  // Consistency proof that the tree of `old_size` is a prefix of the tree of `size`.
  absl::StatusOr<tlog::Proof> ProveConsistency(int64_t old_size, int64_t size) const;
  // The proof for a sandbox (GetLogProof): the newest entry that put a projection in force for
  // `sandbox_id` (admission, refresh, or its own re-projection event) — which must name `policy_digest`
  // and `policy_version`, the projection served now (the client checks both) — with its inclusion proof under the current checkpoint, and a consistency
  // proof from `known_size` (0: none). UNAVAILABLE "log_pending: ..." while that entry is not integrated
  // (or is not yet logged under this digest); OUT_OF_RANGE for a known_size beyond the checkpoint.
  // `checkpoint_size` (may be null) gets the size of the checkpoint the proof is against.
  absl::StatusOr<openshell::policy::gateway::v1::LogProof> ProofFor(const std::string& sandbox_id,
                                                                    const std::string& policy_digest,
                                                                    uint64_t policy_version, uint64_t known_size,
                                                                    int64_t* checkpoint_size = nullptr) const;
  // ProofFor, written into `out` (replaced whole; in its arena, if it has one); `out` is left cleared on error.
  absl::Status ProofInto(const std::string& sandbox_id, const std::string& policy_digest, uint64_t policy_version,
                         uint64_t known_size, openshell::policy::gateway::v1::LogProof* out,
                         int64_t* checkpoint_size = nullptr) const;
  // The log key's verifier key in note format (<origin>+<hash>+<base64>).
  std::string verifier_key() const { return verifier_key_; }

 private:
  LogSequencer(store::AuditLog* log, LogSequencerOptions options, std::unique_ptr<tlog::NoteSigner> signer,
               std::string verifier_key);
  // Appends the events after `hashes_`'s size, checking each links to the one before. Under mu_.
  absl::Status AppendPending() ABSL_EXCLUSIVE_LOCKS_REQUIRED(integrate_mu_);
  absl::Status CheckAgainstPublished() ABSL_EXCLUSIVE_LOCKS_REQUIRED(integrate_mu_);
  absl::Status CheckSignedAhead() ABSL_EXCLUSIVE_LOCKS_REQUIRED(integrate_mu_);
  // One of this log's own checkpoint files under its folder, read and opened with its key and origin
  // (nullopt: no such file; FAILED_PRECONDITION log_inconsistent: unreadable, or not this log's).
  struct OwnCheckpoint {
    std::string path;
    tlog::Checkpoint checkpoint;
    std::string text;
  };
  absl::StatusOr<std::optional<OwnCheckpoint>> ReadOwnCheckpoint(const std::string& name, absl::string_view what) const;
  // log_inconsistent unless the audit log still gives `own`'s root at its size (`what` names it).
  absl::Status CheckExtends(const OwnCheckpoint& own, absl::string_view what) const;
  absl::Status RepairPublishedEdge() ABSL_EXCLUSIVE_LOCKS_REQUIRED(integrate_mu_);
  absl::StatusOr<int64_t> Publish() ABSL_EXCLUSIVE_LOCKS_REQUIRED(integrate_mu_);
  // Keeps sandbox_entries_ up to date with entry `index`.
  void IndexForSandbox(int64_t index, const trust::AuditEvent& event);

  store::AuditLog* const log_;
  const LogSequencerOptions options_;
  const std::unique_ptr<tlog::NoteSigner> signer_;
  const std::string verifier_key_;

  absl::Mutex integrate_mu_;  // one integration at a time
  tlog::MemoryHashStore hashes_;  // thread-safe on its own
  std::string last_hash_ ABSL_GUARDED_BY(integrate_mu_);  // the chain hash of the last event appended
  // The canonical bytes of the entries from open_bundle_begin_ to the tree's size: the next checkpoint's
  // entry bundles are written from them rather than read back from the audit log. Filled only once the
  // tree was rebuilt at Open (rebuilt_), trimmed to the open bundle after each checkpoint.
  bool rebuilt_ ABSL_GUARDED_BY(integrate_mu_) = false;
  int64_t open_bundle_begin_ ABSL_GUARDED_BY(integrate_mu_) = 0;
  std::deque<std::string> open_bundle_ ABSL_GUARDED_BY(integrate_mu_);

  mutable absl::Mutex published_mu_;
  Published published_ ABSL_GUARDED_BY(published_mu_);
  // The largest checkpoint signed and sent to witnesses (<dir>/checkpoint.signed), published or not: no
  // tile under it is ever replaced.
  static constexpr char kSignedAheadFile[] = "checkpoint.signed";
  int64_t signed_ahead_ ABSL_GUARDED_BY(integrate_mu_) = 0;
  // When to ask the witnesses again for the same checkpoint when some cosignatures are missing and the
  // tree does not grow (a witness that blipped is not left out until the next entry).
  absl::Time next_recollect_ ABSL_GUARDED_BY(integrate_mu_) = absl::InfinitePast();
  // Per sandbox, the newest integrated event that put a projection in force (erased on deletion).
  struct SandboxEntry {
    int64_t index = 0;
    trust::AuditEvent event;
    // Its proof against the checkpoint of proof_size entries (without a consistency proof), once asked.
    std::shared_ptr<const openshell::policy::gateway::v1::LogProof> proof;
    int64_t proof_size = 0;
  };
  mutable absl::flat_hash_map<std::string, SandboxEntry> sandbox_entries_ ABSL_GUARDED_BY(published_mu_);

  absl::Mutex listener_mu_;  // held while the listener runs
  std::function<void(int64_t)> published_listener_ ABSL_GUARDED_BY(listener_mu_);
  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace osh::gateway
