// The C2SP tlog-witness protocol (https://c2sp.org/tlog-witness), in process: what `policy-log-witness`
// answers to POST <prefix>/add-checkpoint, without the HTTP server (witness/server.h) around it.
//
// A witness knows a list of logs (origin + the log's note verifier key) and keeps, per origin, the last
// checkpoint it cosigned (size, root hash and the signed note as received) in a state file, replaced
// atomically (temporary file, fsync, rename, fsync of the folder; 0600) before it answers, so a restart
// never forgets what it cosigned. It cosigns a checkpoint only when it extends that one: same origin, a
// log signature that verifies, `old` equal to the size it holds, and a consistency proof from there to the
// new size (RFC 6962). The answers are the spec's, checked in the spec's order:
//   400 malformed body (or old > checkpoint size)  404 unknown origin
//   403 no signature by the log's key verifies     409 old != the size held (body: that size + "\n",
//   422 the consistency proof does not verify           Content-Type text/x.tlog.size); also a checkpoint
//   200 the cosignature line(s) (cosignature/v1)        of the held size with another root (a fork)
//   500 the state could not be persisted (nothing was cosigned)
// Thread-safe: the check against the held state and the write of the new state happen under one lock
// (the spec requires them atomic).
#pragma once

#include "common/state_lock.h"

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "tlog/checkpoint.h"
#include "tlog/cosignature.h"
#include "tlog/merkle.h"
#include "tlog/note.h"

namespace osh::witness {

inline constexpr char kAddCheckpointPath[] = "/add-checkpoint";
inline constexpr char kSizeContentType[] = "text/x.tlog.size";
inline constexpr size_t kMaxProofLines = 63;  // the spec: a client MUST NOT send more
// A request is the old size line, at most 63 proof lines and a note of at most tlog::kMaxNoteSize bytes.
inline constexpr size_t kMaxRequestBytes = tlog::kMaxNoteSize + 64 * 64;

// The parsed body of an add-checkpoint request. Strict: "old <decimal, no leading zeroes>\n", each proof
// line the canonical base64 of 32 bytes, an empty line, then the checkpoint note (not yet opened).
struct AddCheckpointRequest {
  int64_t old_size = 0;
  tlog::Proof proof;
  std::string checkpoint;  // the signed note, as sent
};
// INVALID_ARGUMENT naming what is malformed.
absl::StatusOr<AddCheckpointRequest> ParseAddCheckpointRequest(absl::string_view body);
// The body a client sends (for tests, fuzz seeds and clients).
std::string FormatAddCheckpointRequest(int64_t old_size, const tlog::Proof& proof, absl::string_view checkpoint);

// One log the witness witnesses.
struct WitnessedLog {
  std::string origin;
  std::string verifier_key;  // <name>+<hex8>+<base64>, an Ed25519 note key (type 0x01)
};

// What the witness holds for one origin: the last checkpoint it cosigned.
struct HeldCheckpoint {
  int64_t size = 0;
  tlog::Hash root{};
  std::string note;  // the signed checkpoint as it was received

  bool operator==(const HeldCheckpoint&) const = default;
};

// The whole state: what was cosigned per origin, and the latest cosignature timestamp the witness may have
// used (`cosigned_until`; 0 in a file of an earlier version): a restarted witness never signs with an
// earlier one, whatever its clock says.
struct WitnessState {
  std::map<std::string, HeldCheckpoint> logs;
  uint64_t cosigned_until = 0;
};
// How far ahead of a cosignature's timestamp `cosigned_until` is written: a replay of the held checkpoint
// (cosigned again, nothing else to write) costs a write of the state only once this many seconds.
inline constexpr uint64_t kCosignedUntilReserveSeconds = 10;

// The state file: TOML, `format = "policy-log-witness-state/1"`, `logs = <how many>` and `cosigned_until =
// <POSIX seconds>` (optional), then one [[log]]
// table per origin with origin, size, root (base64) and note; a count that disagrees is lost state. Reading checks that each note's checkpoint carries the origin, size
// and root recorded beside it. A missing file, or one with neither the format line nor a [[log]] (empty,
// truncated), is FAILED_PRECONDITION (below): lost state, never "nothing cosigned"; anything else
// unreadable is an error. A file with logs and no format line (an earlier version's) is read.
inline constexpr char kWitnessStateFormat[] = "policy-log-witness-state/1";
absl::StatusOr<WitnessState> ReadWitnessState(const std::string& path);
// Creates an empty state file (0600; ALREADY_EXISTS when one is there): a new witness's first step
// (`policy-log-witness init`). A missing state file is never read as "nothing cosigned" — a witness whose
// state was lost (an unmounted volume, a changed path) would cosign any fork it is shown first.
absl::Status InitWitnessState(const std::string& path);
// Atomically (temporary file, fsync, rename, fsync of the folder), 0600.
absl::Status WriteWitnessState(const std::string& path, const WitnessState& state);

struct WitnessResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  std::string log_message;  // what the server logs about this request (empty: nothing worth a line)
  bool evidence = false;    // log_message is evidence of the log's misbehaviour (a fork)
};

class Witness {
 public:
  // `cosigner` signs as the witness (its name and key). The state file is locked (an exclusive flock on
  // "<state file>.lock", held as long as the Witness lives: one process per state file, since each keeps
  // the state in memory and two could cosign two forks of one size) and read now: INVALID_ARGUMENT for a
  // bad log key, a duplicate origin or a state file that does not parse; FAILED_PRECONDITION when it does
  // not exist (InitWitnessState makes a new witness's) or another process holds its lock.
  static absl::StatusOr<std::unique_ptr<Witness>> Create(std::unique_ptr<tlog::CosignatureV1Signer> cosigner,
                                                         const std::vector<WitnessedLog>& logs, std::string state_file);

  // The answer to one add-checkpoint request body.
  WitnessResponse AddCheckpoint(absl::string_view body);

  // What the witness holds for `origin`; nullopt when it never cosigned one.
  std::optional<HeldCheckpoint> Held(const std::string& origin) const;
  const tlog::CosignatureV1Signer& cosigner() const { return *cosigner_; }

 private:
  struct KnownLog {
    std::string origin;
    std::unique_ptr<tlog::NoteVerifier> verifier;
  };
  Witness(std::unique_ptr<tlog::CosignatureV1Signer> cosigner, std::map<std::string, KnownLog> logs,
          std::string state_file, common::StateLock lock, WitnessState state)
      : cosigner_(std::move(cosigner)), logs_(std::move(logs)), state_file_(std::move(state_file)),
        lock_(std::move(lock)), state_(std::move(state)) {
    cosigner_->NotBefore(state_.cosigned_until);
  }

  const std::unique_ptr<tlog::CosignatureV1Signer> cosigner_;
  const std::map<std::string, KnownLog> logs_;  // by origin
  const std::string state_file_;
  const common::StateLock lock_;
  mutable absl::Mutex mu_;
  WitnessState state_ ABSL_GUARDED_BY(mu_);
};

}  // namespace osh::witness
