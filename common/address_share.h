// Which client addresses count as one peer for a per-address bound (connections from one address, bytes
// a second from one address): an IPv4 address — also when it arrives IPv4-mapped (::ffff:a.b.c.d) on a
// dual-stack listener — or an IPv6 address's /64. A host usually holds a whole /64, so one client cannot
// take more shares by spreading its connections over its addresses. One home for that rule: the HTTP
// server (common/http_server.h) and the gateway's TCP fronts ask it.
//
// Pure functions; thread-safe.
#pragma once

#include <sys/socket.h>

#include <array>
#include <optional>
#include <string>

namespace osh::common {

// The share `address` belongs to, as 16 bytes (IPv4 as IPv4-mapped IPv6, an IPv6 /64 with its low 64 bits
// zero); nullopt for a null address or another family.
std::optional<std::array<unsigned char, 16>> AddressShareOf(const sockaddr* address);

// The same share as text, for keys and logs: "192.0.2.1", "2001:db8:1:2::/64"; "" when AddressShareOf
// has none.
std::string AddressShareText(const sockaddr* address);

}  // namespace osh::common
