// Accepts the gateway's TCP connections (sandbox_listen, admin_listen) itself and relays each, byte for
// byte, to the gRPC server's TLS listener on a private Unix socket. gRPC 1.51 offers no way to hand it an
// accepted descriptor with TLS (grpc_server_add_channel_from_fd is insecure-only), and its own TCP
// listener stops accepting for good after one EMFILE — 20k idle connections killed a listener until a
// restart. Here, as UnixAcceptor does for the Unix sockets:
//   - open connections are capped (`max_connections`; each costs three descriptors: two here, one in
//     gRPC); at the cap the front pauses — the kernel's backlog holds new ones — and resumes as they close;
//   - one peer address holds at most `max_per_peer` of them, and one IPv6 /64 at most half the cap (never less
//     than `max_per_peer`; common/address_share.h); a connection past either share is closed at once;
//   - one peer address sends at most `max_bytes_per_peer_per_s` (reading pauses, never drops) — an address,
//     not a /64: a node's sandboxes may share one (common/address_share.h);
//   - an accept that fails for lack of descriptors is retried, never fatal;
//   - the port is bound with SO_REUSEADDR only: a port another process serves is an error at Bind, never
//     shared (gRPC's own listener sets SO_REUSEPORT, and the kernel split connections between gateways).
// TLS and HTTP/2 stay gRPC's (never parsed here); gRPC's handshake timeout and idle timeout close a
// connection that does not get on, and the relay follows (a close on either side closes both).
// Thread-safe; one thread of its own.
#pragma once

#include <algorithm>
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace osh::gateway {

class TcpFront {
 public:
  struct Options {
    size_t max_connections = 1024;
    // Connections one peer address may hold open (an IPv6 /64: half of max_connections, at least this);
    // 0: no share beyond the cap.
    size_t max_per_peer = 256;
    // Bytes a second one peer address may send, over all its connections (a token bucket holding one
    // second's worth, 64 KiB at least); 0: unlimited. Past it the front stops reading from that peer until
    // the bucket refills: TCP's own flow control then slows the sender. gRPC 1.51 holds on to every stream a
    // client opens and resets at once (HTTP/2 "rapid reset") until its handler has run, so the rate at which
    // a peer can open streams must be bounded before gRPC sees them.
    size_t max_bytes_per_peer_per_s = 0;
    std::function<void(bool accepting)> on_state;  // called from the front's thread; may be empty
  };
  // The connections one IPv6 /64 may hold open under `options` (half the cap, at least max_per_peer; 0: no
  // share, as max_per_peer 0).
  static size_t BlockShare(const Options& options) {
    return options.max_per_peer == 0 ? 0 : std::max(options.max_per_peer, options.max_connections / 2);
  }
  // Binds and listens on `listen` ("host:port", "[v6]:port"; port 0 picks a free one). INVALID_ARGUMENT for
  // a malformed address, FAILED_PRECONDITION naming it when it is in use or not this host's.
  static absl::StatusOr<std::unique_ptr<TcpFront>> Bind(const std::string& listen);
  ~TcpFront();  // stops accepting, closes every relayed connection and the listening socket
  // Closes the listening socket (new connections are refused from now on) and goes on relaying the open
  // connections until the destructor: a stopping gateway calls it first, drains its gRPC server, then
  // destroys the front, so calls over TCP finish (and watches end) with the gateway's status. Not
  // thread-safe with itself or the destructor.
  void StopAccepting();
  TcpFront(const TcpFront&) = delete;
  TcpFront& operator=(const TcpFront&) = delete;

  // "host:port" as bound (the port gRPC clients dial).
  const std::string& address() const { return address_; }
  // Starts relaying accepted connections to the Unix socket `backend` (a gRPC server listens there).
  // Call once.
  absl::Status Start(const std::string& backend, Options options);
  size_t open_connections() const;
  // After StopAccepting and the gRPC server's shutdown: waits until every relayed connection has been
  // closed — each once its server side closed and what the server wrote reached the client — or until
  // the drain's `deadline` plus a grace of kRelayGrace (a drain that used its whole deadline still passes on
  // what it wrote last). False when some are still open then (the destructor closes them). Thread-safe.
  bool AwaitConnectionsClosed(std::chrono::system_clock::time_point deadline) const;
  static constexpr std::chrono::milliseconds kRelayGrace{500};

 private:
  class Loop;
  TcpFront(int listen_fd, std::string address);
  const int listen_fd_;
  bool listen_closed_ = false;  // by StopAccepting
  const std::string address_;
  std::unique_ptr<Loop> loop_;
};

}  // namespace osh::gateway
