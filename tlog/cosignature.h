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
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "tlog/ed25519.h"
#include "tlog/note.h"

namespace osh::tlog {

inline constexpr size_t kCosignatureV1Size = 8 + kEd25519SignatureSize;

// The message a cosignature/v1 signs.
std::string CosignatureV1Message(absl::string_view checkpoint_text, uint64_t timestamp);
// The timestamp of a cosignature line (INVALID_ARGUMENT unless 72 bytes after the key ID).
absl::StatusOr<uint64_t> CosignatureV1Timestamp(const NoteSignature& signature);

class CosignatureV1Verifier final : public NoteVerifier {
 public:
  static absl::StatusOr<std::unique_ptr<CosignatureV1Verifier>> Create(absl::string_view name, Ed25519PublicKey key);
  const std::string& name() const override { return name_; }
  uint32_t key_id() const override { return key_id_; }
  bool Verify(absl::string_view text, absl::string_view signature) const override;
  // <name>+<hex>+<base64(0x04 || pub)>
  std::string VerifierKey() const;

 private:
  CosignatureV1Verifier(std::string name, Ed25519PublicKey key);
  std::string name_;
  Ed25519PublicKey key_;
  uint32_t key_id_;
};

class CosignatureV1Signer final : public NoteSigner {
 public:
  using Clock = std::function<uint64_t()>;  // POSIX seconds
  // `clock` defaults to the system clock.
  static absl::StatusOr<std::unique_ptr<CosignatureV1Signer>> Create(absl::string_view name, Ed25519PrivateKey key,
                                                                     Clock clock = nullptr);
  const std::string& name() const override { return name_; }
  uint32_t key_id() const override { return key_id_; }
  // timestamp || Ed25519 signature, at the clock's time (INVALID_ARGUMENT if it exceeds 2^63 - 1).
  absl::StatusOr<std::string> Sign(absl::string_view text) const override;
  std::string VerifierKey() const;

 private:
  CosignatureV1Signer(std::string name, Ed25519PrivateKey key, Clock clock);
  std::string name_;
  Ed25519PrivateKey key_;
  Clock clock_;
  uint32_t key_id_;
};

}  // namespace osh::tlog
