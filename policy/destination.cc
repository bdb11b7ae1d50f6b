#include "policy/destination.h"

#include <arpa/inet.h>  // inet_ntop

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace osh::policy {
namespace {

constexpr std::array<uint32_t, 5> kControlPlanePorts = {2379, 2380, 6443, 10250, 10255};



bool AlwaysBlockedV4(const unsigned char* a) {
  const bool unspecified = a[0] == 0 && a[1] == 0 && a[2] == 0 && a[3] == 0;
  return a[0] == 127 || (a[0] == 169 && a[1] == 254) || unspecified;
}

// openshell-core net.rs `is_always_blocked_ip`.
bool AlwaysBlocked(const IpNetwork& ip) {
  if (!ip.v6) return AlwaysBlockedV4(ip.address.data());
  const auto& a = ip.address;
  const bool zero_first_15 = std::all_of(a.begin(), a.begin() + 15, [](unsigned char b) { return b == 0; });
  if (zero_first_15 && (a[15] == 0 || a[15] == 1)) return true;  // :: and ::1
  if (a[0] == 0xFE && (a[1] & 0xC0) == 0x80) return true;         // fe80::/10
  const bool mapped = std::all_of(a.begin(), a.begin() + 10, [](unsigned char b) { return b == 0; }) && a[10] == 0xFF &&
                      a[11] == 0xFF;
  return mapped && AlwaysBlockedV4(a.data() + 12);
}

// RFC 1918, also IPv4-mapped: internal to every version of upstream's `is_internal_ip`.
bool PrivateV4(const IpNetwork& ip) {
  const unsigned char* a = ip.address.data();
  if (ip.v6) {
    const auto& b = ip.address;
    const bool mapped = std::all_of(b.begin(), b.begin() + 10, [](unsigned char x) { return x == 0; }) && b[10] == 0xFF &&
                        b[11] == 0xFF;
    if (!mapped) return false;
    a = b.data() + 12;
  }
  return a[0] == 10 || (a[0] == 172 && (a[1] & 0xF0) == 16) || (a[0] == 192 && a[1] == 168);
}

std::optional<IpNetwork> LiteralOf(absl::string_view host) {
  absl::string_view bare = host;
  if (absl::ConsumePrefix(&bare, "[")) absl::ConsumeSuffix(&bare, "]");
  return common::ParseIpAddress(bare);
}

std::string AddressText(const IpNetwork& ip) {
  char text[INET6_ADDRSTRLEN] = {0};
  inet_ntop(ip.v6 ? AF_INET6 : AF_INET, ip.address.data(), text, sizeof(text));
  return text;
}

}  // namespace


bool AlwaysRefusedHost(absl::string_view host) {
  const std::optional<IpNetwork> ip = LiteralOf(host);
  return ip.has_value() && AlwaysBlocked(*ip);
}

std::optional<std::string> DestinationRefusal(absl::string_view host, uint32_t port,
                                              const std::vector<IpNetwork>& allowed_ips) {
  const std::optional<IpNetwork> ip = LiteralOf(host);
  const bool control_plane = std::find(kControlPlanePorts.begin(), kControlPlanePorts.end(), port) != kControlPlanePorts.end();
  if (!allowed_ips.empty() && control_plane) {
    return absl::StrCat("port ", port, " is a blocked control-plane port, connection rejected");
  }
  if (!ip) return std::nullopt;  // a name: what it resolves to is not known here
  if (AlwaysBlocked(*ip)) return absl::StrCat(host, " resolves to always-blocked address ", AddressText(*ip), ", connection rejected");
  if (control_plane && PrivateV4(*ip)) return absl::StrCat("port ", port, " is a blocked control-plane port, connection rejected");
  if (!allowed_ips.empty() &&
      std::none_of(allowed_ips.begin(), allowed_ips.end(), [&](const IpNetwork& n) { return common::Contains(n, *ip); })) {
    return absl::StrCat(host, " resolves to ", AddressText(*ip), " which is not in allowed_ips, connection rejected");
  }
  return std::nullopt;
}

}  // namespace osh::policy
