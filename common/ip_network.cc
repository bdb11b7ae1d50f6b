#include "common/ip_network.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/numbers.h"

namespace osh::common {

std::optional<IpNetwork> ParseIpAddress(absl::string_view text) {
  // No allocation: egress decisions ask it of every intent's host. No address text is this long.
  char address[64];
  if (text.size() >= sizeof(address)) return std::nullopt;
  std::memcpy(address, text.data(), text.size());
  address[text.size()] = '\0';
  IpNetwork out;
  if (inet_pton(AF_INET, address, out.address.data()) == 1) {
    out.prefix = 32;
    return out;
  }
  if (inet_pton(AF_INET6, address, out.address.data()) == 1) {
    out.v6 = true;
    out.prefix = 128;
    return out;
  }
  return std::nullopt;
}

absl::StatusOr<IpNetwork> ParseIpNetwork(absl::string_view text) {
  const size_t slash = text.find('/');
  auto network = ParseIpAddress(text.substr(0, slash));
  if (!network) return absl::InvalidArgumentError("not an IPv4/IPv6 address or CIDR");
  if (slash == absl::string_view::npos) return *network;
  const absl::string_view digits = text.substr(slash + 1);
  int prefix = -1;
  if (digits.empty() || digits.size() > 3 || !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
      !absl::SimpleAtoi(digits, &prefix) || prefix > network->prefix) {
    return absl::InvalidArgumentError("invalid prefix length");
  }
  network->prefix = prefix;
  return *network;
}

bool Contains(const IpNetwork& network, const IpNetwork& ip) {
  if (network.v6 != ip.v6) return false;
  const int whole = network.prefix / 8, bits = network.prefix % 8;
  if (std::memcmp(network.address.data(), ip.address.data(), whole) != 0) return false;
  if (bits == 0) return true;
  const auto mask = static_cast<unsigned char>(0xFF << (8 - bits));
  return (network.address[whole] & mask) == (ip.address[whole] & mask);
}

const unsigned char* V4BytesOf(const IpNetwork& ip) {
  if (!ip.v6) return ip.address.data();
  const auto& a = ip.address;
  const bool mapped = std::all_of(a.begin(), a.begin() + 10, [](unsigned char b) { return b == 0; }) && a[10] == 0xFF && a[11] == 0xFF;
  return mapped ? a.data() + 12 : nullptr;
}

IpNetwork MappedToV6(const IpNetwork& network) {
  if (network.v6) return network;
  IpNetwork out;
  out.v6 = true;
  out.address[10] = out.address[11] = 0xFF;
  std::memcpy(out.address.data() + 12, network.address.data(), 4);
  out.prefix = network.prefix + 96;
  return out;
}

}  // namespace osh::common
