// Public and private keys for projection signatures, through OpenSSL 3 EVP.
// Algorithms: "ed25519" (Ed25519 over the bytes, 64-byte signature) and "ecdsa-p256-sha256" (DER ECDSA
// over SHA-256 of the bytes). Key objects are immutable after loading and safe to share across threads.
#pragma once

#include <memory>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

typedef struct evp_pkey_st EVP_PKEY;

namespace osh::trust {

inline constexpr absl::string_view kEd25519 = "ed25519";
inline constexpr absl::string_view kEcdsaP256 = "ecdsa-p256-sha256";

struct PkeyDeleter {
  void operator()(EVP_PKEY* key) const;
};
using PkeyPtr = std::shared_ptr<EVP_PKEY>;

// Why a raw 32-byte Ed25519 public key is one anyone can forge signatures under (a point of small order)
// or a second encoding of another key (y not below 2^255 - 19): "" when it is neither. Every reader of an
// Ed25519 key asks this: PEM keys (PublicKey::FromPem), the log's and witnesses' note keys (tlog).
std::string WeakEd25519Key(const unsigned char key[32]);

class PublicKey {
 public:
  // Parses a PEM "PUBLIC KEY" and infers its algorithm. INVALID_ARGUMENT for bad PEM, a key type other
  // than Ed25519 / EC P-256, or a key anyone can forge signatures under or listed in a second encoding (an
  // Ed25519 point of small order or y not below 2^255 - 19; a P-256 point off the curve or at infinity).
  static absl::StatusOr<PublicKey> FromPem(absl::string_view pem);

  const std::string& algorithm() const { return algorithm_; }
  // Lowercase hex SHA-256 of the DER SubjectPublicKeyInfo in one form (a P-256 key: named curve, point
  // uncompressed; explicit curve parameters are refused): keys are distinct by this, not by id.
  const std::string& fingerprint() const { return fingerprint_; }
  std::string ToPem() const;

  // True only for a valid signature over `message`. Never throws; any malformed input is false.
  bool Verify(absl::string_view message, absl::string_view signature) const;

 private:
  PkeyPtr key_;
  std::string algorithm_;
  std::string fingerprint_;
};

class PrivateKey {
 public:
  static absl::StatusOr<PrivateKey> FromPem(absl::string_view pem);
  static absl::StatusOr<PrivateKey> Generate(absl::string_view algorithm);

  const std::string& algorithm() const { return algorithm_; }
  absl::StatusOr<std::string> Sign(absl::string_view message) const;
  std::string ToPem() const;        // PKCS#8 "PRIVATE KEY"
  std::string PublicKeyPem() const;  // "PUBLIC KEY"

 private:
  PkeyPtr key_;
  std::string algorithm_;
};

}  // namespace osh::trust
