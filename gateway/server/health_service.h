// grpc.health.v1.Health as every listener of the gateway serves it (admin, sandbox, interceptor): Check
// answers from a table the daemon sets; Watch answers UNIMPLEMENTED.
//
// Why not gRPC's default service: its Watch is a stream that stays open for as long as the client likes,
// and health needs no credentials — so on sandbox_listen (no client certificate) and interceptor_listen
// (authenticated by a token in each call, which health never asks for) any peer could hold calls open
// forever without sending a byte, its connections never idle (docs/threat-model.md, stop 71). Check is one
// request and one answer. (A peer that keeps calling keeps its connection either way: the listener's
// per-address and per-/64 shares bound what it holds.) A client doing
// gRPC's client-side health checking (gRFC A17) treats UNIMPLEMENTED as "health checking off" and carries on.
#pragma once

#include <string>

#include <grpcpp/server_builder.h>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace osh::gateway {

// Thread-safe. Must outlive the server it is registered with (declare it before the server's owner).
class HealthService final : public grpc::health::v1::Health::CallbackService {
 public:
  // SERVING or NOT_SERVING for `service` ("" is the server as a whole); a service never set is NOT_FOUND.
  void Set(absl::string_view service, bool serving);

  grpc::ServerUnaryReactor* Check(grpc::CallbackServerContext* context,
                                  const grpc::health::v1::HealthCheckRequest* request,
                                  grpc::health::v1::HealthCheckResponse* response) override;

 private:
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, bool> serving_ ABSL_GUARDED_BY(mu_);
};

// Makes `builder` serve `health` in place of gRPC's default health service (which
// grpc::EnableDefaultHealthCheckService turns on for every server), and server reflection only when
// `reflection` is true: reflection's one call is a stream a client holds open as long as it likes, so the
// listeners that answer peers without credentials leave it out (the admin socket describes every service,
// the sandbox API's too).
void ServeHealth(grpc::ServerBuilder& builder, HealthService* health, bool reflection);

}  // namespace osh::gateway
