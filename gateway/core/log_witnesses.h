// The verifiable log's witnesses as the gateway meets them (issue 27, item 6): for each new checkpoint, a
// C2SP tlog-witness `add-checkpoint` request to every configured witness, with the consistency proof from
// the size that witness last cosigned; what comes back is kept only if it is a cosignature/v1 line by that
// witness's key over exactly this checkpoint.
//
// A witness that is down or slow delays nothing but its cosignature: the requests go out in parallel, each
// bounded as a whole by `timeout` (however slowly the witness sends its answer), and a witness that failed is not asked again before `retry_after` has passed (the
// next checkpoint after that is sent to it, with a proof from where it stands). A 409 answer tells the size
// the witness holds; the request is sent once more from there. A witness holding a larger tree than this
// log, or another root at its size, is a witness that saw a fork (or a rolled-back log): that is reported,
// never retried around.
//
// Thread-safe: Collect serialises itself; Status may be called from any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "tlog/merkle.h"
#include "tlog/note.h"

namespace osh::gateway {

// One configured witness: `<url> <verifier key>`, the URL the prefix of its add-checkpoint endpoint
// (http:// or https://), the key its cosignature/v1 verifier key (<name>+<hex8>+<base64>, type 0x04).
struct LogWitnessConfig {
  std::string url;
  std::string verifier_key;
};
// INVALID_ARGUMENT naming what is wrong with `item`.
absl::StatusOr<LogWitnessConfig> ParseLogWitness(const std::string& item);

class LogWitnesses {
 public:
  struct Options {
    absl::Duration timeout = absl::Seconds(1);       // each request, connect to answer
    absl::Duration retry_after = absl::Seconds(10);  // a failed witness is skipped this long
  };
  // INVALID_ARGUMENT for a malformed URL or key, or two witnesses with one key.
  static absl::StatusOr<std::unique_ptr<LogWitnesses>> Create(const std::vector<LogWitnessConfig>& witnesses,
                                                              Options options);
  ~LogWitnesses();

  // The witnesses' verifier keys, in configuration order (owned by this object).
  std::vector<const tlog::NoteVerifier*> verifiers() const;

  // The consistency proof from `old_size` to `size` (1 <= old_size < size), from the log's tree.
  using Prover = std::function<absl::StatusOr<tlog::Proof>(int64_t old_size, int64_t size)>;
  // Sends `note` (the log-signed checkpoint of `size` entries) to the witnesses and returns the
  // cosignatures that verify, one per witness at most, in configuration order. Failures are remembered
  // (Status) and told to `on_change` when a witness goes from answering to failing or back.
  std::vector<tlog::NoteSignature> Collect(const std::string& note, int64_t size, const Prover& prove);

  struct WitnessStatus {
    std::string url;
    std::string name;            // the witness key's name
    int64_t cosigned_size = -1;  // the size it last cosigned for us (-1: not known yet)
    std::string last_error;      // "" while it answers
  };
  std::vector<WitnessStatus> Status() const;

  // Told (from Collect's thread) "witness <name> (<url>): <what>" when a witness starts or stops failing.
  void set_on_change(std::function<void(const std::string&)> on_change) { on_change_ = std::move(on_change); }

 private:
  struct Witness;
  LogWitnesses(std::vector<std::unique_ptr<Witness>> witnesses, Options options);

  const Options options_;
  std::function<void(const std::string&)> on_change_;
  absl::Mutex collect_mu_;  // one round at a time
  mutable absl::Mutex status_mu_;
  std::vector<std::unique_ptr<Witness>> witnesses_;  // each one's mutable state guarded by status_mu_
};

}  // namespace osh::gateway
