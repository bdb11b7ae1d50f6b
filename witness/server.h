// policy-log-witness's HTTP side (civetweb, Debian's libcivetweb): POST <submission_prefix>/add-checkpoint
// answered by a Witness (witness/witness.h); any other method on that path is 405 (Allow: POST), any other
// path 404. What an unauthenticated client can make it hold is bounded: a request's line and headers must
// fit in 16 KiB and arrive whole within request_timeout_s, or the connection is closed; a body over
// max_request_bytes is refused with 413 and never kept; a body must arrive whole within request_timeout_s
// (of its first read); 8 workers, no keep-alive. Every refusal worth an operator's attention and every
// cosignature is logged (witness/log.h).
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "witness/config.h"
#include "witness/witness.h"

namespace osh::witness {

class WitnessServer {
 public:
  // Binds config.listen (port 0: any free port). UNAVAILABLE when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<WitnessServer>> Bind(Witness& witness, const WitnessConfig& config);
  ~WitnessServer();

  int port() const { return port_; }
  // Serving starts at Bind, on civetweb's workers; Run blocks until Stop() (from another thread, e.g. the
  // one that waits for SIGTERM). The destructor stops the workers.
  void Run();
  void Stop();

 private:
  WitnessServer() = default;
  struct State;
  std::unique_ptr<State> state_;
  absl::Notification stopped_;
  int port_ = 0;
};

}  // namespace osh::witness
