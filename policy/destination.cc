#include "policy/destination.h"

#include <arpa/inet.h>  // inet_ntop

#include <algorithm>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace osh::policy {
namespace {

constexpr std::array<uint32_t, 5> kControlPlanePorts = {2379, 2380, 6443, 10250, 10255};



// openshell-core net.rs `is_always_blocked_ip`: loopback, link-local, unspecified (IPv4-mapped too).
bool AlwaysBlocked(const IpNetwork& ip) {
  if (const unsigned char* a = common::V4BytesOf(ip)) {
    return a[0] == 127 || (a[0] == 169 && a[1] == 254) || (a[0] == 0 && a[1] == 0 && a[2] == 0 && a[3] == 0);
  }
  const auto& a = ip.address;
  const bool zero_first_15 = std::all_of(a.begin(), a.begin() + 15, [](unsigned char b) { return b == 0; });
  if (zero_first_15 && (a[15] == 0 || a[15] == 1)) return true;  // :: and ::1
  return a[0] == 0xFE && (a[1] & 0xC0) == 0x80;                   // fe80::/10
}

// RFC 1918, also IPv4-mapped: internal to every version of upstream's `is_internal_ip`.
bool PrivateV4(const IpNetwork& ip) {
  const unsigned char* a = common::V4BytesOf(ip);
  return a != nullptr && (a[0] == 10 || (a[0] == 172 && (a[1] & 0xF0) == 16) || (a[0] == 192 && a[1] == 168));
}

std::optional<IpNetwork> LiteralOf(absl::string_view host) {
  absl::string_view bare = host;
  if (absl::ConsumePrefix(&bare, "[")) absl::ConsumeSuffix(&bare, "]");
  return common::ParseIpAddress(bare);
}

// What the C library's resolver gives for `host` without DNS: its numeric IPv4 forms (inet_aton: `127.1`,
// `2130706433`, `0x7f.0.0.1`), and `localhost` as every /etc/hosts names it.
std::optional<IpNetwork> ResolverNumericAddress(absl::string_view host) {
  // The loopback names of the /etc/hosts a container gets (Docker's, Kubernetes', RHEL's).
  for (const char* name : {"localhost", "localhost.", "localhost.localdomain", "localhost4", "localhost4.localdomain4"}) {
    if (absl::EqualsIgnoreCase(host, name)) return common::ParseIpAddress("127.0.0.1");
  }
  for (const char* name : {"ip6-localhost", "ip6-loopback", "localhost6", "localhost6.localdomain6"}) {
    if (absl::EqualsIgnoreCase(host, name)) return common::ParseIpAddress("::1");
  }
  const std::string text(host);
  in_addr address{};
  if (text.empty() || text.size() > 64 || inet_aton(text.c_str(), &address) == 0) return std::nullopt;
  char dotted[INET_ADDRSTRLEN] = {0};
  if (inet_ntop(AF_INET, &address, dotted, sizeof(dotted)) == nullptr) return std::nullopt;
  return common::ParseIpAddress(dotted);
}

// The address every version of upstream's proxy connects to for `host` without DNS: an IP literal, or a
// name the sandbox's resolver reads itself (ResolverNumericAddress). A private one of the latter on a
// control-plane port is refused by every version too (as internal, or as a control-plane port).
std::optional<IpNetwork> AddressOf(absl::string_view host) {
  if (std::optional<IpNetwork> literal = LiteralOf(host)) return literal;
  return ResolverNumericAddress(host);
}

std::string AddressText(const IpNetwork& ip) {
  char text[INET6_ADDRSTRLEN] = {0};
  inet_ntop(ip.v6 ? AF_INET6 : AF_INET, ip.address.data(), text, sizeof(text));
  return text;
}

}  // namespace


bool AlwaysRefusedHost(absl::string_view host) {
  const std::optional<IpNetwork> ip = AddressOf(host);
  return ip.has_value() && AlwaysBlocked(*ip);
}

std::optional<std::string> DestinationRefusal(absl::string_view host, uint32_t port,
                                              const std::vector<IpNetwork>& allowed_ips) {
  const bool control_plane = std::find(kControlPlanePorts.begin(), kControlPlanePorts.end(), port) != kControlPlanePorts.end();
  if (!allowed_ips.empty() && control_plane) {
    return absl::StrCat("port ", port, " is a blocked control-plane port, connection rejected");
  }
  // A name: what DNS gives is not known here (unless the resolver reads it without DNS: AddressOf).
  const std::optional<IpNetwork> ip = AddressOf(host);
  if (!ip) return std::nullopt;
  if (AlwaysBlocked(*ip)) return absl::StrCat(host, " resolves to always-blocked address ", AddressText(*ip), ", connection rejected");
  if (control_plane && PrivateV4(*ip)) return absl::StrCat("port ", port, " is a blocked control-plane port, connection rejected");
  if (!allowed_ips.empty() &&
      std::none_of(allowed_ips.begin(), allowed_ips.end(), [&](const IpNetwork& n) { return common::Contains(n, *ip); })) {
    return absl::StrCat(host, " resolves to ", AddressText(*ip), " which is not in allowed_ips, connection rejected");
  }
  return std::nullopt;
}

}  // namespace osh::policy
