#include "tlog/cosignature.h"

#include <algorithm>

#include <ctime>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"

namespace osh::tlog {

namespace cosignature_internal {

constexpr uint64_t kMaxTimestamp = (uint64_t{1} << 63) - 1;

uint64_t ReadBigEndian64(absl::string_view bytes) {
  uint64_t v = 0;
  for (size_t i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(bytes[i]);
  return v;
}

std::string BigEndian64(uint64_t v) {
  std::string out(8, '\0');
  for (int i = 7; i >= 0; --i, v >>= 8) out[i] = static_cast<char>(v & 0xFF);
  return out;
}

}  // namespace cosignature_internal

using namespace cosignature_internal;

std::string CosignatureV1Message(absl::string_view checkpoint_text, uint64_t timestamp) {
  return absl::StrCat("cosignature/v1\ntime ", timestamp, "\n", checkpoint_text);
}

absl::StatusOr<uint64_t> CosignatureV1Timestamp(const NoteSignature& signature) {
  absl::StatusOr<std::string> bytes = SignatureBytes(signature);
  if (!bytes.ok()) return bytes.status();
  if (bytes->size() != kCosignatureV1Size) return absl::InvalidArgumentError("not a cosignature/v1 (72 bytes)");
  return ReadBigEndian64(*bytes);
}

bool VerifyCosignatureV1(const Ed25519PublicKey& key, absl::string_view text, absl::string_view signature) {
  if (signature.size() != kCosignatureV1Size) return false;
  const uint64_t timestamp = ReadBigEndian64(signature);
  if (timestamp > kMaxTimestamp) return false;
  return key.Verify(CosignatureV1Message(text, timestamp), signature.substr(8));
}

absl::StatusOr<std::unique_ptr<CosignatureV1Signer>> CosignatureV1Signer::Create(absl::string_view name,
                                                                                 Ed25519PrivateKey key, Clock clock) {
  if (!clock) clock = [] { return static_cast<uint64_t>(std::time(nullptr)); };
  return Make<CosignatureV1Signer>(name, std::move(key), std::move(clock));
}

absl::StatusOr<std::string> CosignatureV1Signer::Sign(absl::string_view text) const {
  // Never earlier than a cosignature this signer made before (a clock stepped back): a verifier may read a
  // later timestamp as a later view of the log.
  const uint64_t now = clock_();
  uint64_t seen = last_.load();
  uint64_t timestamp = 0;
  do {
    timestamp = std::max(now, seen);
  } while (!last_.compare_exchange_weak(seen, timestamp));
  if (timestamp > kMaxTimestamp) return absl::InvalidArgumentError("cosignature timestamp beyond 2^63 - 1");
  absl::StatusOr<std::string> sig = key().Sign(CosignatureV1Message(text, timestamp));
  if (!sig.ok()) return sig.status();
  return BigEndian64(timestamp) + *sig;
}

void CosignatureV1Signer::NotBefore(uint64_t timestamp) const {
  uint64_t seen = last_.load();
  while (seen < timestamp && !last_.compare_exchange_weak(seen, timestamp)) {
  }
}

absl::Status CheckCosigners(absl::Span<const NoteVerifier* const> witnesses, const NoteVerifier* log) {
  const auto* log_key = dynamic_cast<const Ed25519NoteVerifier*>(log);
  absl::flat_hash_map<std::string, std::string> names_by_key;
  for (const NoteVerifier* w : witnesses) {
    const auto* cosigner = dynamic_cast<const CosignatureV1Verifier*>(w);
    if (cosigner == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("witness key '", w->name(), "' is not a cosignature/v1 key (type 0x04): ",
                                                     "a witness cosigns with one"));
    }
    if (log_key != nullptr && cosigner->key().raw() == log_key->key().raw()) {
      return absl::InvalidArgumentError(absl::StrCat("witness key '", w->name(), "' is the public key of the log ('",
                                                     log->name(), "') itself: whoever holds the log key would cosign ",
                                                     "alone, and a fork would need no witness"));
    }
    auto [it, inserted] = names_by_key.try_emplace(cosigner->key().raw(), w->name());
    if (!inserted) {
      return absl::InvalidArgumentError(absl::StrCat("witness keys '", it->second, "' and '", w->name(),
                                                     "' are one public key: one witness would count twice"));
    }
  }
  return absl::OkStatus();
}

}  // namespace osh::tlog
