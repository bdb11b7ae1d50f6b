#include "trust/verified_signatures.h"

#include <utility>

#include "policy/digest.h"

namespace osh::trust {
namespace {

void PutLengthPrefixed(std::string* out, absl::string_view field) {
  const uint64_t n = field.size();
  for (int shift = 56; shift >= 0; shift -= 8) out->push_back(static_cast<char>((n >> shift) & 0xff));
  out->append(field.data(), field.size());
}

std::string TripleKey(const PublicKey& key, absl::string_view message, absl::string_view signature) {
  std::string bytes;
  bytes.reserve(key.fingerprint().size() + signature.size() + message.size() + 24);
  PutLengthPrefixed(&bytes, key.fingerprint());
  PutLengthPrefixed(&bytes, signature);
  PutLengthPrefixed(&bytes, message);
  return policy::Sha256(bytes);
}

}  // namespace

VerifiedSignatures& VerifiedSignatures::Shared() {
  static auto* const shared = new VerifiedSignatures();
  return *shared;
}

bool VerifiedSignatures::Verify(const PublicKey& key, absl::string_view message, absl::string_view signature) {
  // What no signature of ours looks like (an Ed25519 signature is 64 bytes, a DER ECDSA P-256 one at most 72;
  // signed bytes are a few hundred) goes straight to OpenSSL: a hostile driver's huge fields are neither
  // copied nor hashed for a lookup (review 91).
  if (signature.size() > kMaxSignatureBytes || message.size() > kMaxMessageBytes) return key.Verify(message, signature);
  std::string triple = TripleKey(key, message, signature);
  {
    absl::MutexLock lock(&mu_);
    if (current_.contains(triple)) {
      ++counts_.remembered;
      return true;
    }
    if (auto it = previous_.find(triple); it != previous_.end()) {
      previous_.erase(it);
      ++counts_.remembered;
      RememberLocked(std::move(triple));
      return true;
    }
    ++counts_.verified;
  }
  if (!key.Verify(message, signature)) return false;  // outside the lock: the arithmetic takes ~100 µs
  absl::MutexLock lock(&mu_);
  RememberLocked(std::move(triple));
  return true;
}

void VerifiedSignatures::RememberLocked(std::string triple) {
  if (current_.size() >= generation_) {
    current_.swap(previous_);  // the previous generation is dropped
    current_.clear();
  }
  current_.insert(std::move(triple));
}

size_t VerifiedSignatures::size() const {
  absl::MutexLock lock(&mu_);
  return current_.size() + previous_.size();
}

VerifiedSignatures::Counts VerifiedSignatures::counts() const {
  absl::MutexLock lock(&mu_);
  return counts_;
}

}  // namespace osh::trust
