// policy-log-witness's HTTP side (cpp-httplib): POST <submission_prefix>/add-checkpoint answered by a
// Witness (witness/witness.h); any other method on that path is 405 (Allow: POST), any other path 404.
// Bodies over max_request_bytes are refused with 413 before they are read whole; reading a request and
// writing its answer are bounded by request_timeout_s each. Every refusal worth an operator's attention and
// every cosignature is logged (witness/log.h).
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "witness/config.h"
#include "witness/witness.h"

namespace httplib {
class Server;
}

namespace osh::witness {

class WitnessServer {
 public:
  // Binds config.listen (port 0: any free port). UNAVAILABLE when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<WitnessServer>> Bind(Witness& witness, const WitnessConfig& config);
  ~WitnessServer();

  int port() const { return port_; }
  // Serves until Stop() (from another thread or a signal handler's thread).
  void Run();
  void Stop();

 private:
  WitnessServer() = default;
  std::unique_ptr<httplib::Server> server_;
  int port_ = 0;
};

}  // namespace osh::witness
