// The checks upstream's proxy makes on a connection's destination after its policy allowed it
// (crates/openshell-supervisor-network/src/proxy/destination.rs, openshell-core net.rs
// `is_always_blocked_ip`), as far as they need no DNS: an IP-literal host, and an endpoint's
// `allowed_ips`. What a name resolves to is not known here, so a name is judged by its policy alone.
//
// Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "common/ip_network.h"

namespace osh::policy {

using common::IpNetwork;  // an `allowed_ips` entry (common/ip_network.h)

// Whether upstream's proxy refuses every connection to `host` whatever the policy and port: an IP literal
// that is loopback, link-local or unspecified (IPv4-mapped too; brackets allowed).
bool AlwaysRefusedHost(absl::string_view host);

// Upstream's refusal of a connection to `host`:`port` through an endpoint whose `allowed_ips` are
// `allowed_ips`, in its words, or nullopt when nothing decidable without DNS refuses it:
//   - with `allowed_ips`: a control-plane port (2379, 2380, 6443, 10250, 10255) always; an IP-literal host
//     that is always blocked, or not in the list;
//   - without: an IP-literal host that is always blocked — loopback (127.0.0.0/8, ::1), link-local
//     (169.254.0.0/16, fe80::/10), unspecified (0.0.0.0, ::), also IPv4-mapped (::ffff:127.0.0.1) — and
//     a private (RFC 1918) literal on a control-plane port (refused by every version of upstream's proxy:
//     older ones as an internal address, newer ones as a control-plane port).
// The endpoint is the one upstream takes its destination settings from: the first matched endpoint with
// a protocol, `allowed_ips` or `tls`, over every matched entry (policy/egress.cc).
// A name the sandbox's C resolver reads without DNS (its numeric IPv4 forms, /etc/hosts' loopback names) is
// taken as the address it names. `host` may be an IPv6 literal in brackets.
std::optional<std::string> DestinationRefusal(absl::string_view host, uint32_t port,
                                              const std::vector<IpNetwork>& allowed_ips);

}  // namespace osh::policy
