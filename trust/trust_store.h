// The trust store of SPEC §4: which keys may sign projections, how many must, and when.
// A TrustStore is immutable once loaded; share it as std::shared_ptr<const TrustStore> and swap the
// pointer to reload atomically.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"
#include "trust/keys.h"

namespace osh::trust {

struct TrustedKey {
  std::string key_id;
  PublicKey public_key;
  std::optional<int64_t> not_before_unix;
  std::optional<int64_t> not_after_unix;
  bool revoked = false;
};

// Bounds checked before the JSON is parsed (docs/policy-gateway.md, "Limits").
inline constexpr size_t kMaxTrustStoreBytes = 1 << 20;
inline constexpr int kMaxTrustStoreDepth = 16;

class TrustStore {
 public:
  // Parses the JSON text. Every malformed shape is INVALID_ARGUMENT with its own message
  // ("trust store: ..." naming the key and field).
  static absl::StatusOr<TrustStore> Parse(absl::string_view json_text);

  // Reads `path` and parses it. Refuses a file that is missing (NOT_FOUND), unreadable, not a regular
  // file, or whose file or folder is writable by group or others (PERMISSION_DENIED).
  static absl::StatusOr<TrustStore> Load(const std::string& path);

  uint32_t threshold() const { return threshold_; }
  bool require_context_binding() const { return require_context_binding_; }
  const std::vector<TrustedKey>& keys() const { return keys_; }
  // The key named `key_id`, or nullptr.
  const TrustedKey* Find(absl::string_view key_id) const;
  // Revoked ids listed in the file, including ids of no listed key.
  const std::vector<std::string>& revoked_key_ids() const { return revoked_key_ids_; }

 private:
  uint32_t threshold_ = 1;
  bool require_context_binding_ = false;
  std::vector<TrustedKey> keys_;
  std::vector<std::string> revoked_key_ids_;
};

// True for 1..128 characters of [A-Za-z0-9._:-].
bool IsValidKeyId(absl::string_view key_id);

}  // namespace osh::trust
