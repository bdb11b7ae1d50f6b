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
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "store/store.h"
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
  // The log key's verifier key in note format (<origin>+<hash>+<base64>).
  std::string verifier_key() const { return verifier_key_; }

 private:
  LogSequencer(store::AuditLog* log, LogSequencerOptions options, std::unique_ptr<tlog::NoteSigner> signer,
               std::string verifier_key);
  // Appends the events after `hashes_`'s size, checking each links to the one before. Under mu_.
  absl::Status AppendPending() ABSL_EXCLUSIVE_LOCKS_REQUIRED(integrate_mu_);
  absl::Status CheckAgainstPublished() ABSL_EXCLUSIVE_LOCKS_REQUIRED(integrate_mu_);
  absl::StatusOr<int64_t> Publish() ABSL_EXCLUSIVE_LOCKS_REQUIRED(integrate_mu_);

  store::AuditLog* const log_;
  const LogSequencerOptions options_;
  const std::unique_ptr<tlog::NoteSigner> signer_;
  const std::string verifier_key_;

  absl::Mutex integrate_mu_;  // one integration at a time
  tlog::MemoryHashStore hashes_;  // thread-safe on its own
  std::string last_hash_ ABSL_GUARDED_BY(integrate_mu_);  // the chain hash of the last event appended

  mutable absl::Mutex published_mu_;
  Published published_ ABSL_GUARDED_BY(published_mu_);

  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace osh::gateway
