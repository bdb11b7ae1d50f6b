#include "common/address_share.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstring>

namespace osh::common {
namespace {

bool IsMapped(const std::array<unsigned char, 16>& address) {
  static constexpr std::array<unsigned char, 12> kPrefix{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
  return std::equal(kPrefix.begin(), kPrefix.end(), address.begin());
}

}  // namespace

std::optional<std::array<unsigned char, 16>> AddressShareOf(const sockaddr* address) {
  if (address == nullptr) return std::nullopt;
  std::array<unsigned char, 16> share{};
  if (address->sa_family == AF_INET) {
    share[10] = share[11] = 0xFF;
    std::memcpy(share.data() + 12, &reinterpret_cast<const sockaddr_in*>(address)->sin_addr, 4);
    return share;
  }
  if (address->sa_family != AF_INET6) return std::nullopt;
  std::memcpy(share.data(), &reinterpret_cast<const sockaddr_in6*>(address)->sin6_addr, 16);
  if (!IsMapped(share)) std::fill(share.begin() + 8, share.end(), 0);  // the /64
  return share;
}

std::string AddressShareText(const sockaddr* address) {
  const auto share = AddressShareOf(address);
  if (!share) return "";
  char text[INET6_ADDRSTRLEN] = {0};
  if (IsMapped(*share)) {
    ::inet_ntop(AF_INET, share->data() + 12, text, sizeof(text));
    return text;
  }
  ::inet_ntop(AF_INET6, share->data(), text, sizeof(text));
  return std::string(text) + "/64";
}

}  // namespace osh::common
