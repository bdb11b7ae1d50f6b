// The supervisor's side of the verifiable log (docs/audit.md, "Proofs for sandboxes"): a projection is
// applied only with a proof that the gateway logged it — an entry naming this sandbox, this policy digest
// and version, included in a checkpoint signed by the log key (and cosigned by a quorum of witnesses),
// which extends every checkpoint this supervisor saw before (kept on disk, so a restart does not forget).
// A gateway that shows this sandbox a policy it never logged, or a log forked for it, is caught here.
//
// Thread-compatible: the SandboxClient calls it under its log lock.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "openshell/policy/driver/v1/driver.pb.h"
#include "openshell/policy/gateway/v1/gateway.pb.h"
#include "tlog/merkle.h"
#include "tlog/note.h"

namespace osh::sandbox_client {

struct LogProofOptions {
  std::string log_key;                    // the log's verifier key, note format (<origin>+<hex>+<base64>)
  std::vector<std::string> witness_keys;  // cosigner verifier keys (cosignature/v1)
  size_t witness_quorum = 0;              // how many of them must have cosigned (1..N when N keys are given)
  // The newest verified checkpoint (size and root), 0600, replaced atomically; "" keeps it in memory only.
  // The first forked checkpoint met is kept beside it, in <state_file>.fork.
  std::string state_file;
};

class LogProofVerifier {
 public:
  // INVALID_ARGUMENT for a malformed key, a witness key that is the log's own, or a quorum of 0 or above
  // the witnesses given (witness keys with a quorum of 0 would guard nothing); FAILED_PRECONDITION for a
  // state file that cannot be read or is corrupt (never read as "nothing seen").
  static absl::StatusOr<std::unique_ptr<LogProofVerifier>> Create(LogProofOptions options);

  // The size of the newest checkpoint verified (GetLogProofRequest.known_size).
  uint64_t known_size() const { return known_size_; }

  // OK when `proof` proves that `projection` was logged for `sandbox_id` as described above; then the
  // proof's checkpoint becomes the newest seen (and is written to the state file: an error writing it is
  // returned, the checkpoint held all the same, and every later Check writes it again, refusing until the
  // write succeeds: nothing is proven while the file is behind). Otherwise FAILED_PRECONDITION and nothing changes:
  // "log_forked: <both roots>" for a checkpoint of the size of the newest seen with another root (the log
  // key signed two trees of one size: proof of a fork, never a stale message, so not worth asking again;
  // the first one is kept in <state_file>.fork), "log_proof_invalid: <what>" for anything else (a
  // checkpoint smaller than one seen, or one a consistency proof does not tie to it, included).
  absl::Status Check(const openshell::policy::gateway::v1::LogProof& proof,
                     const openshell::policy::driver::v1::Projection& projection, const std::string& sandbox_id);

 private:
  LogProofVerifier(LogProofOptions options, std::unique_ptr<tlog::NoteVerifier> log,
                   std::vector<std::unique_ptr<tlog::NoteVerifier>> witnesses)
      : options_(std::move(options)), log_(std::move(log)), witnesses_(std::move(witnesses)) {}

  const LogProofOptions options_;
  const std::unique_ptr<tlog::NoteVerifier> log_;
  const std::vector<std::unique_ptr<tlog::NoteVerifier>> witnesses_;
  uint64_t known_size_ = 0;
  tlog::Hash known_root_{};
  bool unsaved_ = false;  // the state file is behind known_size_/known_root_ (its last write failed)
};

}  // namespace osh::sandbox_client
