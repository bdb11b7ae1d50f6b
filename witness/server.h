// policy-log-witness's HTTP side (libmicrohttpd, Debian's libmicrohttpd): POST
// <submission_prefix>/add-checkpoint answered by a Witness (witness/witness.h); any other method on that
// path is 405 (Allow: POST), any other path 404. What an unauthenticated client can make it hold is
// bounded: the server is event-driven, so a slow client holds a connection slot (at most 1024, fewer when
// the descriptor limit — raised at start — is lower; 32 per address), never a worker; a connection carries one request, which — headers and body — must arrive
// whole within request_timeout_s of the connection, or the connection is closed unanswered; headers fit in 32 KiB; a body declared larger
// than max_request_bytes is read and dropped, then refused with 413 (more than twice that: refused before
// it is read), one without Content-Length closed at that size; all
// requests together hold at most 64 MiB of bodies beyond the first 64 KiB of each. Every refusal worth an operator's attention and every
// cosignature is logged (witness/log.h).
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
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
  // Serving starts at Bind, on the server's own threads; Run blocks until Stop() (from another thread,
  // e.g. the one that waits for SIGTERM). The destructor stops the server.
  void Run();
  void Stop();

 private:
  WitnessServer() = default;
  struct State;
  std::unique_ptr<State> state_;
  absl::Mutex stop_mu_;  // Stop() may be called twice at once (a signal and the destructor)
  absl::Notification stopped_;
  int port_ = 0;
};

}  // namespace osh::witness
