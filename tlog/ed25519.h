// Ed25519 keys as raw bytes (RFC 8032: 32-byte public key, 32-byte seed, 64-byte signature) through
// OpenSSL 3 EVP, for the note formats, which carry raw keys. trust/keys.h holds PEM keys for projection
// signatures; the log key is a PEM too (FromPem), its raw form is what notes and key IDs are made of.
// Key objects are immutable after creation and safe to share across threads.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

typedef struct evp_pkey_st EVP_PKEY;

namespace osh::tlog {

inline constexpr size_t kEd25519KeySize = 32;
inline constexpr size_t kEd25519SignatureSize = 64;

class Ed25519PublicKey {
 public:
  // INVALID_ARGUMENT unless exactly 32 bytes / a PEM "PUBLIC KEY" of type Ed25519.
  static absl::StatusOr<Ed25519PublicKey> FromRaw(absl::string_view raw);
  static absl::StatusOr<Ed25519PublicKey> FromPem(absl::string_view pem);

  const std::string& raw() const { return raw_; }
  // True only for a valid 64-byte signature of `message`; anything malformed is false.
  bool Verify(absl::string_view message, absl::string_view signature) const;

 private:
  std::shared_ptr<EVP_PKEY> key_;
  std::string raw_;
};

class Ed25519PrivateKey {
 public:
  static absl::StatusOr<Ed25519PrivateKey> Generate();
  // INVALID_ARGUMENT unless a 32-byte seed / a PEM "PRIVATE KEY" (PKCS#8) of type Ed25519.
  static absl::StatusOr<Ed25519PrivateKey> FromSeed(absl::string_view seed);
  static absl::StatusOr<Ed25519PrivateKey> FromPem(absl::string_view pem);

  const Ed25519PublicKey& public_key() const { return public_key_; }
  std::string seed() const;
  std::string ToPem() const;  // PKCS#8 "PRIVATE KEY"
  // The 64-byte signature; INTERNAL if OpenSSL fails.
  absl::StatusOr<std::string> Sign(absl::string_view message) const;

 private:
  static absl::StatusOr<Ed25519PrivateKey> Wrap(EVP_PKEY* key);
  std::shared_ptr<EVP_PKEY> key_;
  Ed25519PublicKey public_key_;
};

}  // namespace osh::tlog
