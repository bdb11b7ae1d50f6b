// The refusals of a listener's per-peer share (max_connections_per_peer), one rule for the Unix sockets
// (UnixAcceptor: a peer is a process) and the TCP fronts (TcpFront: a peer is an address).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "gateway/core/log.h"

namespace osh::gateway {

// Counts connections refused because their peer already holds its share, and logs them sampled
// (SampledForLog): a peer hammering its cap is seen without flooding the log. Not thread-safe: owned
// by one accepting thread.
class ShareRefusals {
 public:
  // `listener` names the socket or address; `peer` the peer (or its block) as the log should name it;
  // `held` its count; `share` the share it holds.
  void Refused(absl::string_view listener, absl::string_view peer, size_t held,
               absl::string_view share = "its share (max_connections_per_peer)") {
    if (SampledForLog(++refused_)) {
      LogWarning(absl::StrCat(listener, ": ", peer, " holds ", held, " connections, ", share, ": refusing more (",
                              refused_, " refused so far)"));
    }
  }

 private:
  uint64_t refused_ = 0;
};

}  // namespace osh::gateway
