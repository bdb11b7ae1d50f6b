#include "trust/keys.h"

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cstring>
#include <functional>
#include <memory>

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

// Why an Ed25519 public key (its 32-byte encoding) is one anyone can forge signatures for, or another
// encoding of a key that could be listed twice (review 106): "" when it is neither. A point of small order
// (the 8 torsion points: their y is 0, 1, p-1 or one of the two order-8 values, whatever the sign bit; a
// signature R = identity, S = 0 verifies under them for 1 in 8 messages or more), or a y not below
// p = 2^255 - 19 (a non-canonical encoding of another point). The list is libsodium's
// (ge25519_has_small_order); this compares bytes and does no curve arithmetic.
}  // namespace

std::string WeakEd25519Key(const unsigned char key[32]) {
  static constexpr unsigned char kSmallOrderY[][32] = {
      {0},                                                                              // 0 (order 4)
      {1},                                                                              // 1 (order 1)
      {0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98, 0xf0,
       0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53, 0xfc, 0x05},  // order 8
      {0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67, 0x0f,
       0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac, 0x03, 0x7a},  // order 8
      {0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
       0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f},  // p-1 (order 2)
  };
  for (const auto& y : kSmallOrderY) {
    bool same = (key[31] & 0x7f) == y[31];
    for (int i = 0; same && i < 31; ++i) same = key[i] == y[i];
    if (same) return "a point of small order (signatures anyone can forge verify under it)";
  }
  // y >= p: the top byte (sign bit aside) 0x7f, bytes 30..1 all 0xff and byte 0 at least 0xed.
  bool high = (key[31] & 0x7f) == 0x7f && key[0] >= 0xed;
  for (int i = 1; high && i < 31; ++i) high = key[i] == 0xff;
  if (high) return "a non-canonical encoding (y is not below 2^255 - 19)";
  return "";
}

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
  if (key.algorithm_ == kEd25519) {
    unsigned char point[32];
    size_t point_len = sizeof(point);
    if (EVP_PKEY_get_raw_public_key(raw, point, &point_len) != 1 || point_len != sizeof(point)) {
      return absl::InvalidArgumentError("cannot read the Ed25519 public key");
    }
    if (std::string weak = WeakEd25519Key(point); !weak.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("an Ed25519 public key that is ", weak, " is refused"));
    }
  }
  if (key.algorithm_ == kEcdsaP256) {
    // A point on the curve, not the point at infinity, of the group's order (OpenSSL's public-key check):
    // under the point at infinity anyone can make a signature verify (review 106).
    std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> check(EVP_PKEY_CTX_new_from_pkey(nullptr, raw, nullptr),
                                                                     &EVP_PKEY_CTX_free);
    if (!check || EVP_PKEY_public_check(check.get()) != 1) {
      return absl::InvalidArgumentError("an ECDSA P-256 public key that is not a valid point of the curve is refused");
    }
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
