// SHA-256 helpers (OpenSSL EVP). Thread-safe, no state.
#pragma once

#include <string>
#include "absl/strings/string_view.h"

namespace osh::policy {

// The 32 raw digest bytes of SHA-256(data).
std::string Sha256(absl::string_view data);

// Lowercase hex of SHA-256(data): 64 characters. This is the `policy_digest` of a body.
std::string Sha256Hex(absl::string_view data);

// Lowercase hex of arbitrary bytes.
std::string ToHex(absl::string_view bytes);

// True when `digest` is exactly 64 lowercase hex characters.
bool IsLowercaseHexDigest(absl::string_view digest);

}  // namespace osh::policy
