// An IP address or CIDR block ("10.0.5.0/24", "10.0.5.20" = /32, "fd00::/8"): the one parser of them for
// policy `allowed_ips` (validation and decisions) and the HTTP server's `allow` lists. Pure; thread-safe.
#pragma once

#include <array>
#include <optional>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace osh::common {

struct IpNetwork {
  bool v6 = false;
  std::array<unsigned char, 16> address{};  // IPv4 in the first 4 bytes
  int prefix = 0;                            // 0..32 or 0..128
};

// INVALID_ARGUMENT "not an IPv4/IPv6 address or CIDR" or "invalid prefix length" (the prefix is 1 to 3
// decimal digits, at most the family's width).
absl::StatusOr<IpNetwork> ParseIpNetwork(absl::string_view text);

// One address (no prefix): a /32 or /128; nullopt when `text` is not one.
std::optional<IpNetwork> ParseIpAddress(absl::string_view text);

// Whether `ip` (an address) is inside `network`. The families are distinct, as Rust's ipnet has them: an
// IPv4 block holds no IPv6 address, IPv4-mapped or not (MappedToV6 first where they should meet).
bool Contains(const IpNetwork& network, const IpNetwork& ip);

// The IPv4 address of `ip` — an IPv4 address, or an IPv4-mapped IPv6 one (::ffff:a.b.c.d) — as 4 bytes
// into `ip`, or nullptr.
const unsigned char* V4BytesOf(const IpNetwork& ip);

// An IPv4 network as the IPv4-mapped IPv6 block (::ffff:a.b.c.d/96+prefix); IPv6 unchanged.
IpNetwork MappedToV6(const IpNetwork& network);

}  // namespace osh::common
