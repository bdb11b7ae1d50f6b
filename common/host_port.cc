#include "common/host_port.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace osh::common {

absl::StatusOr<HostPort> ParseHostPort(absl::string_view text) {
  const size_t colon = text.rfind(':');
  int port = -1;
  const absl::string_view digits = colon == absl::string_view::npos ? "" : text.substr(colon + 1);
  const bool all_digits = !digits.empty() && digits.find_first_not_of("0123456789") == absl::string_view::npos;
  if (colon == absl::string_view::npos || colon == 0 || !all_digits || !absl::SimpleAtoi(digits, &port) ||
      port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("expected host:port, got '", text, "'"));
  }
  HostPort out;
  out.host = std::string(text.substr(0, colon));
  out.port = port;
  if (out.host.size() > 2 && out.host.front() == '[' && out.host.back() == ']') {
    out.host = out.host.substr(1, out.host.size() - 2);
    out.ipv6 = true;
  }
  return out;
}

}  // namespace osh::common
