#include "common/address_share.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstring>

namespace osh::common {
namespace {

bool IsMapped(const AddressKey& address) {
  static constexpr std::array<unsigned char, 12> kPrefix{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
  return std::equal(kPrefix.begin(), kPrefix.end(), address.begin());
}

std::string Text(const AddressKey& key, bool block) {
  char text[INET6_ADDRSTRLEN] = {0};
  if (IsMapped(key)) {
    ::inet_ntop(AF_INET, key.data() + 12, text, sizeof(text));
    return text;
  }
  ::inet_ntop(AF_INET6, key.data(), text, sizeof(text));
  return block ? std::string(text) + "/64" : std::string(text);
}

}  // namespace

std::optional<AddressKey> AddressOf(const sockaddr* address) {
  if (address == nullptr) return std::nullopt;
  AddressKey key{};
  if (address->sa_family == AF_INET) {
    key[10] = key[11] = 0xFF;
    std::memcpy(key.data() + 12, &reinterpret_cast<const sockaddr_in*>(address)->sin_addr, 4);
    return key;
  }
  if (address->sa_family != AF_INET6) return std::nullopt;
  std::memcpy(key.data(), &reinterpret_cast<const sockaddr_in6*>(address)->sin6_addr, 16);
  return key;
}

// NAT64's well-known prefix (RFC 6052): IPv4 clients translated into IPv6 are each an address of it.
bool IsNat64(const AddressKey& address) {
  static constexpr std::array<unsigned char, 12> kPrefix{0, 0x64, 0xFF, 0x9B, 0, 0, 0, 0, 0, 0, 0, 0};
  return std::equal(kPrefix.begin(), kPrefix.end(), address.begin());
}

std::optional<AddressKey> BlockOf(const sockaddr* address) {
  auto key = AddressOf(address);
  if (key && !IsMapped(*key) && !IsNat64(*key)) std::fill(key->begin() + 8, key->end(), 0);  // the /64
  return key;
}

std::string AddressText(const sockaddr* address) {
  const auto key = AddressOf(address);
  return key ? Text(*key, false) : "";
}

std::string BlockText(const sockaddr* address) {
  const auto key = BlockOf(address);
  return key ? Text(*key, true) : "";
}

std::optional<AddressShares::Full> AddressShares::Refusal(const sockaddr* address) const {
  const auto key = AddressOf(address);
  if (!key) return std::nullopt;
  if (const auto at = by_address_.find(*key); per_address_ != 0 && at != by_address_.end() && at->second >= per_address_) {
    return Full{at->second, Text(*key, false), false};
  }
  const auto block = BlockOf(address);
  if (*block == *key) return std::nullopt;  // an IPv4 address: its own block, its address's share
  if (const auto in = by_block_.find(*block); per_block_ != 0 && in != by_block_.end() && in->second >= per_block_) {
    return Full{in->second, Text(*block, true), true};
  }
  return std::nullopt;
}

AddressShares::Counted AddressShares::Take(const sockaddr* address) {
  Counted counted{AddressOf(address), BlockOf(address)};
  if (counted.address) ++by_address_[*counted.address];
  if (counted.block) ++by_block_[*counted.block];
  return counted;
}

size_t AddressShares::Held(const Counted& counted) const {
  if (!counted.address) return 0;
  const auto it = by_address_.find(*counted.address);
  return it == by_address_.end() ? 0 : it->second;
}

void AddressShares::Release(const Counted& counted) {
  auto release = [](std::map<AddressKey, size_t>& counts, const std::optional<AddressKey>& key) {
    if (!key) return;
    if (auto it = counts.find(*key); it != counts.end() && --it->second == 0) counts.erase(it);
  };
  release(by_address_, counted.address);
  release(by_block_, counted.block);
}

}  // namespace osh::common
