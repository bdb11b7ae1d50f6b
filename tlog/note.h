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
#include <utility>
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

// <name>+<8 hex of KeyId(name, type, key)>+<base64(type || key)>.
std::string FormatVerifierKey(absl::string_view name, uint8_t signature_type, absl::string_view public_key);

inline const std::string& PublicKeyBytes(const Ed25519PublicKey& key) { return key.raw(); }
inline const std::string& PublicKeyBytes(const Ed25519PrivateKey& key) { return key.public_key().raw(); }

// What every Ed25519-based verifier (Interface = NoteVerifier, Key = Ed25519PublicKey) or signer
// (NoteSigner, Ed25519PrivateKey) carries: a valid key name, the key, and the key ID they make with the
// signature type (0x01 note signatures, 0x04 cosignature/v1). Immutable.
template <typename Interface, typename Key, uint8_t kSignatureType>
class Ed25519Keyed : public Interface {
 public:
  const std::string& name() const final { return name_; }
  uint32_t key_id() const final { return key_id_; }
  const Key& key() const { return key_; }
  // <name>+<hex>+<base64(type || public key)>
  std::string VerifierKey() const { return FormatVerifierKey(name_, kSignatureType, PublicKeyBytes(key_)); }

 protected:
  Ed25519Keyed(std::string name, Key key)
      : name_(std::move(name)), key_(std::move(key)), key_id_(KeyId(name_, kSignatureType, PublicKeyBytes(key_))) {}

  // The derived object, after checking the key name (INVALID_ARGUMENT). Derived befriends this class.
  template <typename Derived, typename... Extra>
  static absl::StatusOr<std::unique_ptr<Derived>> Make(absl::string_view name, Key key, Extra&&... extra) {
    if (absl::Status s = ValidateKeyName(name); !s.ok()) return s;
    return std::unique_ptr<Derived>(new Derived(std::string(name), std::move(key), std::forward<Extra>(extra)...));
  }

 private:
  std::string name_;
  Key key_;
  uint32_t key_id_;
};

// How a signature type checks `signature` (the line's bytes after the key ID) of a note's `text`.
using Ed25519VerifyFunction = bool (*)(const Ed25519PublicKey& key, absl::string_view text,
                                       absl::string_view signature);

// A verifier of one Ed25519-based signature type: Ed25519NoteVerifier here, CosignatureV1Verifier in
// tlog/cosignature.h.
template <uint8_t kSignatureType, Ed25519VerifyFunction kVerify>
class Ed25519TypedVerifier final : public Ed25519Keyed<NoteVerifier, Ed25519PublicKey, kSignatureType> {
  using Base = Ed25519Keyed<NoteVerifier, Ed25519PublicKey, kSignatureType>;

 public:
  static absl::StatusOr<std::unique_ptr<Ed25519TypedVerifier>> Create(absl::string_view name, Ed25519PublicKey key) {
    return Base::template Make<Ed25519TypedVerifier>(name, std::move(key));
  }
  bool Verify(absl::string_view text, absl::string_view signature) const override {
    return kVerify(this->key(), text, signature);
  }

 private:
  friend Base;
  using Base::Base;
};

// Ed25519 note signatures (type 0x01): Ed25519 over the text.
bool VerifyEd25519NoteSignature(const Ed25519PublicKey& key, absl::string_view text, absl::string_view signature);
using Ed25519NoteVerifier = Ed25519TypedVerifier<kSignatureTypeEd25519, &VerifyEd25519NoteSignature>;

class Ed25519NoteSigner final : public Ed25519Keyed<NoteSigner, Ed25519PrivateKey, kSignatureTypeEd25519> {
 public:
  static absl::StatusOr<std::unique_ptr<Ed25519NoteSigner>> Create(absl::string_view name, Ed25519PrivateKey key) {
    return Make<Ed25519NoteSigner>(name, std::move(key));
  }
  // From Go's signer key text (PRIVATE+KEY+...); INVALID_ARGUMENT if malformed or its key ID is wrong.
  static absl::StatusOr<std::unique_ptr<Ed25519NoteSigner>> FromSignerKey(absl::string_view skey);
  // From the log key: a PEM Ed25519 private key (PKCS#8), signing as `name`.
  static absl::StatusOr<std::unique_ptr<Ed25519NoteSigner>> FromPem(absl::string_view name, absl::string_view pem);

  absl::StatusOr<std::string> Sign(absl::string_view text) const override;
  std::string SignerKey() const;  // PRIVATE+KEY+<name>+<hex>+<base64(0x01 || seed)>

 private:
  friend Ed25519Keyed;
  using Ed25519Keyed::Ed25519Keyed;
};

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
