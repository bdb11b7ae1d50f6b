// Where a gateway API is and how to reach it: a Unix socket, or host:port over TLS (server verified
// against a CA file, with a client certificate when the gateway asks for one), or host:port in plaintext
// on loopback for development. Shared by the sandbox client library and policyctl.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"

namespace osh::sandbox_client {

struct Endpoint {
  std::string unix_socket = "./var/sandbox.sock";  // used when `server` is empty; the gateway's default sandbox socket
  std::string server;       // "host:port": TCP
  std::string ca_file;      // PEM CA bundle that issued the gateway's certificate; "" with `server`: plaintext
                            // (accepted for a loopback host only)
  std::string cert_file;    // PEM client certificate chain (mTLS); with key_file
  std::string key_file;

  // "unix:/abs/path" or "host:port (TLS)" for messages.
  std::string Describe() const;
};

// A channel to `endpoint`. Checks what can be checked at once — the socket exists and something listens,
// the TLS files read, plaintext only to loopback — and returns UNAVAILABLE / INVALID_ARGUMENT naming it;
// then waits up to `connect_timeout` for the connection (0: does not wait).
// gRPC core writes its own error lines (a failed TLS handshake, say) to stderr unless GRPC_VERBOSITY says
// otherwise; QuietGrpcLogs() sets GRPC_VERBOSITY=NONE unless the environment already sets it. Programs call
// it first thing in main (policyctl and the example supervisor do), before gRPC starts; errors still reach
// the caller as statuses, with hints.
//
// Every channel pings its gateway (HTTP/2 keepalive) every `keepalive.time` while a call is open, never
// while idle, however long the call sends nothing; a ping not answered within `keepalive.timeout` closes
// the connection and fails its calls UNAVAILABLE. So a stream whose connection was dropped without a reset
// (a NAT or firewall forgetting an idle flow, a host gone) ends within time + timeout and is reopened,
// instead of waiting for ever. The gateway's listeners accept a ping every 2.5 s and close a connection
// that pings more often; times below kMinKeepalive (5 s, twice that) are refused (INVALID_ARGUMENT). A
// gateway older than this library takes a ping every 5 minutes at most on a quiet call: upgrade gateways
// before supervisors, or a quiet watch is closed and reopened every minute or so.
struct Keepalive {
  std::chrono::milliseconds time{20000};
  std::chrono::milliseconds timeout{10000};
};
inline constexpr std::chrono::milliseconds kMinKeepalive{5000};
absl::Status CheckKeepalive(const Keepalive& keepalive);
void QuietGrpcLogs();
absl::StatusOr<std::shared_ptr<grpc::Channel>> OpenChannel(const Endpoint& endpoint,
                                                           std::chrono::milliseconds connect_timeout,
                                                           const Keepalive& keepalive = {});

// OK when `socket_path` is a Unix socket something listens on; UNAVAILABLE at once, naming the path,
// when it is missing, not a socket, or refuses (nobody listening); PERMISSION_DENIED when we may not.
absl::Status CheckSocketPath(const std::string& socket_path);

// Whether the host of "host:port" is a loopback address (127.0.0.0/8, [::1], localhost).
bool IsLoopbackHostPort(const std::string& host_port);

}  // namespace osh::sandbox_client
