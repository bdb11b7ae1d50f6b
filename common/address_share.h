// Which client addresses count together for a per-address bound. An address is one client; an IPv6
// /64 — what a host usually holds, so a client can spread its connections over many addresses of it —
// is a block with a larger bound of its own (but a Kubernetes node's pods, or a cloud subnet's, may share
// one /64 too, so a block is never bound as tightly as one address). IPv4 addresses, also when they arrive
// IPv4-mapped (::ffff:a.b.c.d) on a dual-stack listener or translated by NAT64 (64:ff9b::a.b.c.d), are
// their own block. The block bound stops one host spreading over its /64, not a holder of a /56 or a /48
// (each of its /64s is a block of its own). One home for that rule: the
// HTTP server (common/http_server.h) and the gateway's TCP fronts ask it, and count with AddressShares.
//
// The functions are pure and thread-safe; AddressShares is not thread-safe (its owner serializes it).
#pragma once

#include <sys/socket.h>

#include <array>
#include <cstddef>
#include <map>
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

// Open connections per client address and per block, each against a share of its own: a connection is
// refused when its address holds `per_address` or its block `per_block` (0: that share is off). A block
// that is one address (IPv4) is held to the address's share only.
class AddressShares {
 public:
  AddressShares(size_t per_address, size_t per_block) : per_address_(per_address), per_block_(per_block) {}

  // What one more connection from `address` would overfill, as the log should say it; nullopt when there is
  // room (or the address is of no family counted: a Unix peer).
  struct Full {
    size_t held;        // connections open from it
    std::string whom;   // "192.0.2.7", "2001:db8:1:2::7" or the block "2001:db8:1:2::/64"
    bool block;         // the block's share (else the address's)
  };
  std::optional<Full> Refusal(const sockaddr* address) const;

  // Counts a connection from `address` (whether or not Refusal said there was room); Release it once.
  struct Counted {
    std::optional<AddressKey> address, block;
  };
  Counted Take(const sockaddr* address);
  void Release(const Counted& counted);
  // Connections open from `counted`'s address (0 for none, or no address).
  size_t Held(const Counted& counted) const;

  size_t addresses() const { return by_address_.size(); }  // distinct addresses with a connection open
  size_t blocks() const { return by_block_.size(); }

 private:
  size_t per_address_, per_block_;
  std::map<AddressKey, size_t> by_address_, by_block_;
};

}  // namespace osh::common
