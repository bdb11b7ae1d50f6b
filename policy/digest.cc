#include "policy/digest.h"

#include <openssl/evp.h>

#include <cstdlib>

namespace osh::policy {

namespace {

// Fetched once: OpenSSL 3's implicit fetch behind EVP_sha256() costs a provider lookup on every call.
const EVP_MD* FetchedSha256() {
  static const EVP_MD* const md = [] {
    EVP_MD* fetched = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    if (fetched == nullptr) std::abort();
    return fetched;
  }();
  return md;
}

}  // namespace

std::string Sha256(absl::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), out, &len, FetchedSha256(), nullptr) != 1) {
    std::abort();  // SHA-256 cannot fail short of a broken OpenSSL; never return a wrong digest.
  }
  return std::string(reinterpret_cast<const char*>(out), len);
}

std::string ToHex(absl::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.resize(bytes.size() * 2);
  for (size_t i = 0; i < bytes.size(); ++i) {
    const auto b = static_cast<unsigned char>(bytes[i]);
    out[2 * i] = kHex[b >> 4];
    out[2 * i + 1] = kHex[b & 0xf];
  }
  return out;
}

std::string Sha256Hex(absl::string_view data) { return ToHex(Sha256(data)); }

bool IsLowercaseHexDigest(absl::string_view digest) {
  if (digest.size() != 64) return false;
  for (char c : digest) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace osh::policy
