#include "tlog/ed25519.h"

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

namespace osh::tlog {

namespace ed25519_internal {

struct EvpPkeyFree {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
struct EvpMdCtxFree {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};
struct BioFree {
  void operator()(BIO* bio) const { BIO_free(bio); }
};

const unsigned char* Bytes(absl::string_view s) { return reinterpret_cast<const unsigned char*>(s.data()); }

// PEM text -> key, with `read` one of OpenSSL's PEM_read_bio_* functions.
template <typename Read>
EVP_PKEY* ReadPem(absl::string_view pem, Read read) {
  std::unique_ptr<BIO, BioFree> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  return bio ? read(bio.get(), nullptr, nullptr, nullptr) : nullptr;
}

}  // namespace ed25519_internal

using namespace ed25519_internal;

absl::StatusOr<Ed25519PublicKey> Ed25519PublicKey::FromRaw(absl::string_view raw) {
  if (raw.size() != kEd25519KeySize) return absl::InvalidArgumentError("an Ed25519 public key is 32 bytes");
  EVP_PKEY* key = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, Bytes(raw), raw.size());
  if (key == nullptr) return absl::InvalidArgumentError("not an Ed25519 public key");
  Ed25519PublicKey out;
  out.key_.reset(key, EvpPkeyFree());
  out.raw_ = std::string(raw);
  return out;
}

absl::StatusOr<Ed25519PublicKey> Ed25519PublicKey::FromPem(absl::string_view pem) {
  std::unique_ptr<EVP_PKEY, EvpPkeyFree> key(ReadPem(pem, PEM_read_bio_PUBKEY));
  if (!key || !EVP_PKEY_is_a(key.get(), "ED25519")) {
    return absl::InvalidArgumentError("not a PEM Ed25519 public key (-----BEGIN PUBLIC KEY-----)");
  }
  std::string raw(kEd25519KeySize, '\0');
  size_t len = raw.size();
  if (EVP_PKEY_get_raw_public_key(key.get(), reinterpret_cast<unsigned char*>(raw.data()), &len) != 1) {
    return absl::InvalidArgumentError("cannot read the Ed25519 public key");
  }
  return FromRaw(raw);
}

bool Ed25519PublicKey::Verify(absl::string_view message, absl::string_view signature) const {
  if (signature.size() != kEd25519SignatureSize || !key_) return false;
  std::unique_ptr<EVP_MD_CTX, EvpMdCtxFree> ctx(EVP_MD_CTX_new());
  return ctx && EVP_DigestVerifyInit_ex(ctx.get(), nullptr, nullptr, nullptr, nullptr, key_.get(), nullptr) == 1 &&
         EVP_DigestVerify(ctx.get(), Bytes(signature), signature.size(), Bytes(message), message.size()) == 1;
}

absl::StatusOr<Ed25519PrivateKey> Ed25519PrivateKey::Wrap(EVP_PKEY* raw_key) {
  std::shared_ptr<EVP_PKEY> key(raw_key, EvpPkeyFree());
  if (!key || !EVP_PKEY_is_a(key.get(), "ED25519")) return absl::InvalidArgumentError("not an Ed25519 private key");
  std::string pub(kEd25519KeySize, '\0');
  size_t len = pub.size();
  if (EVP_PKEY_get_raw_public_key(key.get(), reinterpret_cast<unsigned char*>(pub.data()), &len) != 1) {
    return absl::InvalidArgumentError("cannot derive the Ed25519 public key");
  }
  absl::StatusOr<Ed25519PublicKey> public_key = Ed25519PublicKey::FromRaw(pub);
  if (!public_key.ok()) return public_key.status();
  Ed25519PrivateKey out;
  out.key_ = std::move(key);
  out.public_key_ = *std::move(public_key);
  return out;
}

absl::StatusOr<Ed25519PrivateKey> Ed25519PrivateKey::Generate() {
  EVP_PKEY* key = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
  if (key == nullptr) return absl::InternalError("Ed25519 key generation failed");
  return Wrap(key);
}

absl::StatusOr<Ed25519PrivateKey> Ed25519PrivateKey::FromSeed(absl::string_view seed) {
  if (seed.size() != kEd25519KeySize) return absl::InvalidArgumentError("an Ed25519 seed is 32 bytes");
  return Wrap(EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr, Bytes(seed), seed.size()));
}

absl::StatusOr<Ed25519PrivateKey> Ed25519PrivateKey::FromPem(absl::string_view pem) {
  EVP_PKEY* key = ReadPem(pem, PEM_read_bio_PrivateKey);
  if (key == nullptr) return absl::InvalidArgumentError("not a PEM private key (-----BEGIN PRIVATE KEY-----)");
  return Wrap(key);
}

std::string Ed25519PrivateKey::seed() const {
  std::string seed(kEd25519KeySize, '\0');
  size_t len = seed.size();
  if (EVP_PKEY_get_raw_private_key(key_.get(), reinterpret_cast<unsigned char*>(seed.data()), &len) != 1) return "";
  return seed;
}

std::string Ed25519PrivateKey::ToPem() const {
  std::unique_ptr<BIO, BioFree> bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PrivateKey(bio.get(), key_.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1) return "";
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(len));
}

absl::StatusOr<std::string> Ed25519PrivateKey::Sign(absl::string_view message) const {
  std::unique_ptr<EVP_MD_CTX, EvpMdCtxFree> ctx(EVP_MD_CTX_new());
  std::string signature(kEd25519SignatureSize, '\0');
  size_t len = signature.size();
  if (!ctx || EVP_DigestSignInit_ex(ctx.get(), nullptr, nullptr, nullptr, nullptr, key_.get(), nullptr) != 1 ||
      EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(signature.data()), &len, Bytes(message),
                     message.size()) != 1 ||
      len != kEd25519SignatureSize) {
    return absl::InternalError("Ed25519 signing failed");
  }
  return signature;
}

}  // namespace osh::tlog
