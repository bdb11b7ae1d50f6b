// C2SP signed-note (https://c2sp.org/signed-note): text signed by one or more keys.
//   <text, ending in a newline>
//   <blank line>
//   — <key name> <base64(4-byte big-endian key ID || signature)>     (one line per signature)
// Key ID = SHA-256(key name || "\n" || signature type byte || public key)[:4]; type 0x01 is Ed25519 over
// the text, 0x04 the timestamped cosignature of tlog/cosignature.h. Key names are non-empty valid UTF-8
// with no Unicode space and no '+'.
//
// Key texts as Go's golang.org/x/mod/sumdb/note reads them:
//   verifier key  <name>+<8 lowercase hex of the key ID>+<base64(type || public key)>
//   signer key    PRIVATE+KEY+<name>+<8 hex>+<base64(0x01 || 32-byte Ed25519 seed)>
//
// Opening is strict: the whole note must be valid UTF-8 without control characters other than newline,
// at most kMaxNoteSize bytes and kMaxSignatures signature lines, every line well formed (canonical
// base64, valid name, at least one signature byte). Signatures by keys not given are ignored (kept as
// `unverified`); a known key's signature that does not verify rejects the note; a note with no verified
// signature is rejected. Errors: INVALID_ARGUMENT malformed note or key text, PERMISSION_DENIED a known
// key's signature fails, UNAUTHENTICATED no signature by a known key.
//
// Verifiers and signers are immutable and safe to share across threads.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "tlog/ed25519.h"

namespace osh::tlog {

inline constexpr uint8_t kSignatureTypeEd25519 = 0x01;
inline constexpr uint8_t kSignatureTypeCosignatureV1 = 0x04;
inline constexpr size_t kMaxSignatures = 100;          // the spec: at least 16 must be accepted
inline constexpr size_t kMaxNoteSize = 1 << 20;        // 1 MiB

bool IsValidKeyName(absl::string_view name);
// OK, or INVALID_ARGUMENT naming the bad key name.
absl::Status ValidateKeyName(absl::string_view name);
uint32_t KeyId(absl::string_view name, uint8_t signature_type, absl::string_view public_key);

class NoteVerifier {
 public:
  virtual ~NoteVerifier() = default;
  virtual const std::string& name() const = 0;
  virtual uint32_t key_id() const = 0;
  // `signature` is the signature line's bytes after the key ID.
  virtual bool Verify(absl::string_view text, absl::string_view signature) const = 0;
};

class NoteSigner {
 public:
  virtual ~NoteSigner() = default;
  virtual const std::string& name() const = 0;
  virtual uint32_t key_id() const = 0;
  // The signature bytes (without the key ID) over the note text.
  virtual absl::StatusOr<std::string> Sign(absl::string_view text) const = 0;
};

// Ed25519 note signatures (type 0x01).
class Ed25519NoteVerifier final : public NoteVerifier {
 public:
  static absl::StatusOr<std::unique_ptr<Ed25519NoteVerifier>> Create(absl::string_view name, Ed25519PublicKey key);
  const std::string& name() const override { return name_; }
  uint32_t key_id() const override { return key_id_; }
  bool Verify(absl::string_view text, absl::string_view signature) const override;
  const Ed25519PublicKey& key() const { return key_; }

 private:
  Ed25519NoteVerifier(std::string name, Ed25519PublicKey key);
  std::string name_;
  Ed25519PublicKey key_;
  uint32_t key_id_;
};

class Ed25519NoteSigner final : public NoteSigner {
 public:
  static absl::StatusOr<std::unique_ptr<Ed25519NoteSigner>> Create(absl::string_view name, Ed25519PrivateKey key);
  // From Go's signer key text (PRIVATE+KEY+...); INVALID_ARGUMENT if malformed or its key ID is wrong.
  static absl::StatusOr<std::unique_ptr<Ed25519NoteSigner>> FromSignerKey(absl::string_view skey);
  // From the log key: a PEM Ed25519 private key (PKCS#8), signing as `name`.
  static absl::StatusOr<std::unique_ptr<Ed25519NoteSigner>> FromPem(absl::string_view name, absl::string_view pem);

  const std::string& name() const override { return name_; }
  uint32_t key_id() const override { return key_id_; }
  absl::StatusOr<std::string> Sign(absl::string_view text) const override;
  std::string VerifierKey() const;  // <name>+<hex>+<base64(0x01 || pub)>
  std::string SignerKey() const;    // PRIVATE+KEY+<name>+<hex>+<base64(0x01 || seed)>

 private:
  Ed25519NoteSigner(std::string name, Ed25519PrivateKey key);
  std::string name_;
  Ed25519PrivateKey key_;
  uint32_t key_id_;
};

// <name>+<8 hex of KeyId(name, type, key)>+<base64(type || key)>.
std::string FormatVerifierKey(absl::string_view name, uint8_t signature_type, absl::string_view public_key);
// The verifier key text of a PEM Ed25519 public or private key, named `name` (type 0x01).
absl::StatusOr<std::string> VerifierKeyFromPem(absl::string_view name, absl::string_view pem);
// Parses a verifier key: type 0x01 gives an Ed25519NoteVerifier, 0x04 a CosignatureV1Verifier
// (tlog/cosignature.h). INVALID_ARGUMENT for a malformed text, a wrong key ID or another type.
absl::StatusOr<std::unique_ptr<NoteVerifier>> ParseVerifierKey(absl::string_view vkey);

struct NoteSignature {
  std::string name;
  uint32_t key_id = 0;
  std::string base64;  // base64(key ID || signature), as on the line

  bool operator==(const NoteSignature&) const = default;
};

struct Note {
  std::string text;                       // including its final newline
  std::vector<NoteSignature> verified;    // by a known key, in note order, each key once
  std::vector<NoteSignature> unverified;  // by keys not given (ignored, but kept to re-serve)
};

// Opens a signed note against `known` verifiers (no two with one name and key ID: INVALID_ARGUMENT).
absl::StatusOr<Note> OpenNote(absl::string_view message, absl::Span<const NoteVerifier* const> known);

// The signed note: `text` (must end in a newline and be valid note text), then the signatures in `keep`
// (not re-made: say, cosignatures collected earlier) except those of a key in `signers`, then one line per
// signer.
absl::StatusOr<std::string> SignNote(absl::string_view text, absl::Span<const NoteSigner* const> signers,
                                     absl::Span<const NoteSignature> keep = {});

// The signature bytes of a line (after the key ID). INVALID_ARGUMENT if not canonical base64 of >= 5 bytes.
absl::StatusOr<std::string> SignatureBytes(const NoteSignature& signature);

}  // namespace osh::tlog
