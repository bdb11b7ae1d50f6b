// A bounded memory of signatures that verified: the exact (public key, signature, signed bytes) triples
// OpenSSL accepted. A projection many sandboxes share (one policy, no context binding: the same signed
// bytes within a second) is then verified once, not once per admission, per refresh, per start-up
// re-verification and per trust-store recheck.
//
// What is remembered is only the arithmetic: a triple is looked up by the SHA-256 of its exact bytes
// (public key fingerprint, signature, signed bytes, each length-prefixed), so a hit means this very key
// accepted this very signature over these very bytes before. Whether the key is trusted, revoked or
// inside its validity window is never remembered: the caller asks the trust store every time. A failed
// verification is not remembered (it is verified again, within the caller's bounds).
//
// Thread-safe. At most 2 × `generation` entries (32-byte keys; 2 × 8192 in the shared one): when the
// current generation is full it becomes the previous one and the one before is dropped; a hit in the
// previous generation moves back to the current one.
#pragma once

#include <cstdint>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "trust/keys.h"

namespace osh::trust {

class VerifiedSignatures {
 public:
  static constexpr size_t kGeneration = 8192;
  // Larger signatures or signed bytes are verified every time, never remembered.
  static constexpr size_t kMaxSignatureBytes = 128;
  static constexpr size_t kMaxMessageBytes = 16 * 1024;

  explicit VerifiedSignatures(size_t generation = kGeneration) : generation_(generation) {}

  // The process's memory (never destroyed).
  static VerifiedSignatures& Shared();

  // key.Verify(message, signature), asked of OpenSSL only when this triple did not verify before.
  bool Verify(const PublicKey& key, absl::string_view message, absl::string_view signature);

  struct Counts {
    int64_t remembered = 0;  // answered from memory
    int64_t verified = 0;    // asked of OpenSSL
  };
  Counts counts() const;
  size_t size() const;  // triples remembered now

 private:
  void RememberLocked(std::string triple) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const size_t generation_;
  mutable absl::Mutex mu_;
  absl::flat_hash_set<std::string> current_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<std::string> previous_ ABSL_GUARDED_BY(mu_);
  Counts counts_ ABSL_GUARDED_BY(mu_);
};

}  // namespace osh::trust
