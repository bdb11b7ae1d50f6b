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

std::optional<AddressKey> BlockOf(const sockaddr* address) {
  auto key = AddressOf(address);
  if (key && !IsMapped(*key)) std::fill(key->begin() + 8, key->end(), 0);  // the /64
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

}  // namespace osh::common
