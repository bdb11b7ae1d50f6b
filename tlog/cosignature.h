// C2SP tlog-cosignature (https://c2sp.org/tlog-cosignature), the Ed25519 type "cosignature/v1": a note
// signature (signature type 0x04, key ID = SHA-256(name || "\n" || 0x04 || public key)[:4]) whose bytes
// are a timestamped_signature: u64 big-endian POSIX timestamp || 64-byte Ed25519 signature of
//   "cosignature/v1\n" "time <timestamp, decimal, no leading zeroes>\n" <the whole checkpoint text>
// A cosignature states that, as of that time, this is the largest consistent tree the cosigner has seen
// for the origin. Timestamps above 2^63 - 1 never verify.
//
// Verifier and signer are immutable and safe to share across threads (the signer's clock must be too).
#pragma once

#include <cstdint>
#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "tlog/ed25519.h"
#include "tlog/note.h"

namespace osh::tlog {

inline constexpr size_t kCosignatureV1Size = 8 + kEd25519SignatureSize;

// The message a cosignature/v1 signs.
std::string CosignatureV1Message(absl::string_view checkpoint_text, uint64_t timestamp);
// The timestamp of a cosignature line (INVALID_ARGUMENT unless 72 bytes after the key ID).
absl::StatusOr<uint64_t> CosignatureV1Timestamp(const NoteSignature& signature);

// cosignature/v1 (type 0x04): `signature` is timestamp || Ed25519 of CosignatureV1Message(text, timestamp).
bool VerifyCosignatureV1(const Ed25519PublicKey& key, absl::string_view text, absl::string_view signature);
using CosignatureV1Verifier = Ed25519TypedVerifier<kSignatureTypeCosignatureV1, &VerifyCosignatureV1>;

class CosignatureV1Signer final : public Ed25519Keyed<NoteSigner, Ed25519PrivateKey, kSignatureTypeCosignatureV1> {
 public:
  using Clock = std::function<uint64_t()>;  // POSIX seconds
  // `clock` defaults to the system clock.
  static absl::StatusOr<std::unique_ptr<CosignatureV1Signer>> Create(absl::string_view name, Ed25519PrivateKey key,
                                                                     Clock clock = nullptr);
  // timestamp || Ed25519 signature, at the clock's time, or at the latest timestamp this signer used before
  // when the clock is behind it (timestamps never go backwards); INVALID_ARGUMENT if it exceeds 2^63 - 1.
  // Thread-safe.
  absl::StatusOr<std::string> Sign(absl::string_view text) const override;
  // No timestamp earlier than `timestamp` from now on (a witness restarted gives the latest it may have
  // used before: its clock may be behind it). Thread-safe.
  void NotBefore(uint64_t timestamp) const;
  // The latest timestamp this signer used (or was told of); 0 before any. Thread-safe.
  uint64_t last_timestamp() const { return last_.load(); }

 private:
  friend Ed25519Keyed;
  CosignatureV1Signer(std::string name, Ed25519PrivateKey key, Clock clock)
      : Ed25519Keyed(std::move(name), std::move(key)), clock_(std::move(clock)) {}
  Clock clock_;
  mutable std::atomic<uint64_t> last_{0};
};

// Witnesses' verifier keys as the gateway and a client take them: each a cosignature/v1 key (type 0x04),
// and no public key twice, under one name or two (a cosignature's signed message does not name its
// cosigner, so one key listed twice would count twice toward a quorum); with `log` (the log's own
// verifier key), none the log's public key (its holder would cosign alone: a fork would need no witness).
// INVALID_ARGUMENT naming the offending key otherwise.
absl::Status CheckCosigners(absl::Span<const NoteVerifier* const> witnesses, const NoteVerifier* log = nullptr);

}  // namespace osh::tlog
