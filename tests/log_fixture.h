// tests/log_fixture.h: a verifiable log for tests, written with the tlog library: deterministic entries, tiles and entry bundles
// under a folder (C2SP tlog-tiles), checkpoints signed by a fresh Ed25519 log key, and the proofs a log
// would give (consistency for witnesses, inclusion for proof bundles). Used in process (the witness's unit
// tests) and on disk for the real policyctl and policy-log-witness (integration tests).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tlog/checkpoint.h"
#include "tlog/merkle.h"
#include "tlog/note.h"
#include "tlog/tiles.h"

namespace osh::test {

class TestLog final : public tlog::EntryReader {
 public:
  // `dir` empty: no files are written (in-process use). Logs of different `variant`s hold different
  // entries (a fork: another tree under the same origin).
  TestLog(std::string dir, std::string origin, std::string variant = "");

  std::string EntryText(int64_t i) const;
  // From this index on (set before Grow), entry i is audit event i + 2: a log whose signer left event
  // i + 1 out of a tree that is otherwise whole (-1: none left out).
  int64_t event_left_out_at = -1;
  // Appends entries up to `size` total, publishes the tiles and bundles, signs a checkpoint of that size
  // and writes it as DIR/checkpoint. Returns the signed note.
  std::string Grow(int64_t size);
  // A checkpoint note of any size and root, signed by this log's key (forks, shrinks).
  std::string Sign(int64_t size, const tlog::Hash& root) const;
  // The signed checkpoint of an earlier size (a prefix of the log, as the log signed it then).
  std::string CheckpointAt(int64_t size) const;

  tlog::Hash Root(int64_t size) const;
  tlog::Proof Consistency(int64_t old_size, int64_t size) const;
  tlog::Proof Inclusion(int64_t index, int64_t size) const;

  const std::string& origin() const { return origin_; }
  const std::string& dir() const { return dir_; }
  int64_t size() const { return store_.size(); }
  std::string VerifierKey() const;  // <origin>+<hex8>+<base64>
  std::string PrivateKeyPem() const { return key_.ToPem(); }
  const tlog::NoteSigner& signer() const { return *signer_; }

  absl::StatusOr<std::vector<std::string>> ReadEntries(int64_t begin, int64_t end) const override;

 private:
  std::string dir_;
  std::string origin_;
  std::string variant_;
  tlog::Ed25519PrivateKey key_;
  std::unique_ptr<tlog::Ed25519NoteSigner> signer_;
  tlog::MemoryHashStore store_;
  int64_t published_ = 0;
};

}  // namespace osh::test
