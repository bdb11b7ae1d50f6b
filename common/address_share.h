// Which client addresses count together for a per-address bound. An address is one client; an IPv6
// /64 — what a host usually holds, so a client can spread its connections over many addresses of it —
// is a block with a larger bound of its own (but a Kubernetes node's pods, or a cloud subnet's, may share
// one /64 too, so a block is never bound as tightly as one address). IPv4 addresses, also when they arrive
// IPv4-mapped (::ffff:a.b.c.d) on a dual-stack listener, are their own block. One home for that rule: the
// HTTP server (common/http_server.h) and the gateway's TCP fronts ask it.
//
// Pure functions; thread-safe.
#pragma once

#include <sys/socket.h>

#include <array>
#include <optional>
#include <string>

namespace osh::common {

using AddressKey = std::array<unsigned char, 16>;  // IPv4 as IPv4-mapped IPv6

// The client's address; nullopt for a null address or another family.
std::optional<AddressKey> AddressOf(const sockaddr* address);
// Its block: an IPv6 address's /64 (the low 64 bits zero), an IPv4 address itself.
std::optional<AddressKey> BlockOf(const sockaddr* address);

// As text, for keys and logs: "192.0.2.1", "2001:db8:1:2::7"; the block "2001:db8:1:2::/64" (an IPv4
// address's block is the address). "" when there is none.
std::string AddressText(const sockaddr* address);
std::string BlockText(const sockaddr* address);

}  // namespace osh::common
