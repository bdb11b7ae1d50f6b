// "host:port" as the gateway's listeners take it (sandbox_listen, admin_listen, metrics_listen,
// log_listen): one parser, so every listener and the config check agree on what is valid.
// Pure function; thread-safe.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace osh::common {

struct HostPort {
  std::string host;   // without the brackets of an IPv6 literal ("::1" for "[::1]:80")
  int port = 0;       // 0 to 65535 (0: any free port)
  bool ipv6 = false;  // the host was a bracketed IPv6 literal
};

// INVALID_ARGUMENT "expected host:port, got '<text>'" for no colon, an empty host, or a port that is not
// a decimal number from 0 to 65535.
absl::StatusOr<HostPort> ParseHostPort(absl::string_view text);

}  // namespace osh::common
