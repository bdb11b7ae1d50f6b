// policy-log-witness's HTTP side: POST <submission_prefix>/add-checkpoint answered by a Witness
// (witness/witness.h); any other method on that path is 405 (Allow: POST), any other path 404. Served by
// common::HttpServer (libmicrohttpd), whose header says what an unauthenticated client can make it hold:
// here with request_timeout_s as its deadline, max_request_bytes as its body bound and 4 threads. Every
// refusal worth an operator's attention and every cosignature is logged (witness/log.h).
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "common/http_server.h"
#include "witness/config.h"
#include "witness/witness.h"

namespace osh::witness {

class WitnessServer {
 public:
  // Binds config.listen (port 0: any free port). UNAVAILABLE when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<WitnessServer>> Bind(Witness& witness, const WitnessConfig& config);
  ~WitnessServer();

  int port() const { return port_; }
  // Serving starts at Bind, on the server's own threads; Run blocks until Stop() (from another thread,
  // e.g. the one that waits for SIGTERM). The destructor stops the server.
  void Run();
  void Stop();

 private:
  WitnessServer() = default;
  std::unique_ptr<common::HttpServer> server_;
  absl::Mutex stop_mu_;  // Stop() may be called twice at once (a signal and the destructor)
  absl::Notification stopped_;
  int port_ = 0;
};

}  // namespace osh::witness
