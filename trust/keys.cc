#include "trust/keys.h"

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cstring>
#include <functional>

#include "absl/strings/str_cat.h"
#include "policy/digest.h"

namespace osh::trust {

void PkeyDeleter::operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }

namespace {

struct BioDeleter { void operator()(BIO* b) const { BIO_free(b); } };
struct MdCtxDeleter { void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); } };
using BioPtr = std::unique_ptr<BIO, BioDeleter>;
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, MdCtxDeleter>;

// "ed25519", "ecdsa-p256-sha256", or "" for any other key type.
std::string AlgorithmOf(EVP_PKEY* key) {
  if (EVP_PKEY_is_a(key, "ED25519")) return std::string(kEd25519);
  if (EVP_PKEY_is_a(key, "EC")) {
    char group[64] = {0};
    size_t len = 0;
    if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), &len) == 1 &&
        (std::strcmp(group, "prime256v1") == 0 || std::strcmp(group, "P-256") == 0)) {
      return std::string(kEcdsaP256);
    }
  }
  return "";
}


std::string WithBio(const std::function<int(BIO*)>& write) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || write(bio.get()) != 1) return "";
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(len));
}

}  // namespace

absl::StatusOr<PublicKey> PublicKey::FromPem(absl::string_view pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  EVP_PKEY* raw = bio ? PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr) : nullptr;
  if (raw == nullptr) return absl::InvalidArgumentError("not a PEM public key (expected -----BEGIN PUBLIC KEY-----)");
  PublicKey key;
  key.key_ = PkeyPtr(raw, PkeyDeleter());
  key.algorithm_ = AlgorithmOf(raw);
  if (key.algorithm_.empty()) {
    return absl::InvalidArgumentError("unsupported key type (supported: Ed25519, ECDSA P-256)");
  }
  if (key.algorithm_ == kEcdsaP256) {
    // One key, one fingerprint: OpenSSL re-encodes a key in the form it was read in (a compressed point,
    // explicit curve parameters), so the same P-256 key could be listed under two ids and count twice
    // toward a threshold. Explicit parameters are refused; the point is encoded uncompressed.
    char encoding[32] = {0};
    size_t encoding_len = 0;
    if (EVP_PKEY_get_utf8_string_param(raw, OSSL_PKEY_PARAM_EC_ENCODING, encoding, sizeof(encoding), &encoding_len) == 1 &&
        std::strcmp(encoding, OSSL_PKEY_EC_ENCODING_GROUP) != 0) {
      return absl::InvalidArgumentError("an ECDSA P-256 key with explicit curve parameters is refused: encode it with the named curve");
    }
    if (EVP_PKEY_set_utf8_string_param(raw, OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT,
                                       OSSL_PKEY_EC_POINT_CONVERSION_FORMAT_UNCOMPRESSED) != 1) {
      return absl::InvalidArgumentError("cannot encode the public key");
    }
  }
  // The fingerprint is SHA-256 of the SubjectPublicKeyInfo DER, in that one form.
  unsigned char* der = nullptr;
  const int der_len = i2d_PUBKEY(raw, &der);
  if (der_len <= 0) return absl::InvalidArgumentError("cannot encode the public key");
  key.fingerprint_ = policy::Sha256Hex(absl::string_view(reinterpret_cast<char*>(der), der_len));
  OPENSSL_free(der);
  return key;
}

std::string PublicKey::ToPem() const {
  return WithBio([&](BIO* b) { return PEM_write_bio_PUBKEY(b, key_.get()); });
}

bool PublicKey::Verify(absl::string_view message, absl::string_view signature) const {
  if (signature.empty()) return false;
  MdCtxPtr ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestVerifyInit_ex(ctx.get(), nullptr, algorithm_ == kEd25519 ? nullptr : "SHA256", nullptr,
                                      nullptr, key_.get(), nullptr) != 1) {
    return false;
  }
  return EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()), signature.size(),
                          reinterpret_cast<const unsigned char*>(message.data()), message.size()) == 1;
}

absl::StatusOr<PrivateKey> PrivateKey::FromPem(absl::string_view pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  EVP_PKEY* raw = bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr) : nullptr;
  if (raw == nullptr) return absl::InvalidArgumentError("not a PEM private key (expected -----BEGIN PRIVATE KEY-----)");
  PrivateKey key;
  key.key_ = PkeyPtr(raw, PkeyDeleter());
  key.algorithm_ = AlgorithmOf(raw);
  if (key.algorithm_.empty()) return absl::InvalidArgumentError("unsupported key type (supported: Ed25519, ECDSA P-256)");
  return key;
}

absl::StatusOr<PrivateKey> PrivateKey::Generate(absl::string_view algorithm) {
  EVP_PKEY* raw = nullptr;
  if (algorithm == kEd25519 || algorithm == "ed25519") {
    raw = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
  } else if (algorithm == kEcdsaP256 || algorithm == "ecdsa-p256") {
    raw = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
  } else {
    return absl::InvalidArgumentError(absl::StrCat("unsupported algorithm '", algorithm, "' (ed25519, ecdsa-p256)"));
  }
  if (raw == nullptr) return absl::InternalError("key generation failed");
  PrivateKey key;
  key.key_ = PkeyPtr(raw, PkeyDeleter());
  key.algorithm_ = AlgorithmOf(raw);
  return key;
}

absl::StatusOr<std::string> PrivateKey::Sign(absl::string_view message) const {
  MdCtxPtr ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestSignInit_ex(ctx.get(), nullptr, algorithm_ == kEd25519 ? nullptr : "SHA256", nullptr,
                                    nullptr, key_.get(), nullptr) != 1) {
    return absl::InternalError("cannot initialise signing");
  }
  size_t len = 0;
  const auto* msg = reinterpret_cast<const unsigned char*>(message.data());
  if (EVP_DigestSign(ctx.get(), nullptr, &len, msg, message.size()) != 1) return absl::InternalError("signing failed");
  std::string signature(len, '\0');
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(signature.data()), &len, msg, message.size()) != 1) {
    return absl::InternalError("signing failed");
  }
  signature.resize(len);
  return signature;
}

std::string PrivateKey::ToPem() const {
  return WithBio([&](BIO* b) {
    return PEM_write_bio_PrivateKey(b, key_.get(), nullptr, nullptr, 0, nullptr, nullptr);
  });
}

std::string PrivateKey::PublicKeyPem() const {
  return WithBio([&](BIO* b) { return PEM_write_bio_PUBKEY(b, key_.get()); });
}

}  // namespace osh::trust
