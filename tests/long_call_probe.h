// What a peer without credentials could hold open on a gateway socket: gRPC health's Watch and server
// reflection's stream (docs/threat-model.md, stop 71). Each probe opens the call and says whether it stayed
// open (OK: the server answered and would go on) or how it was refused.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>

#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"

namespace osh::test {

inline grpc::StatusCode HealthWatchOutcome(const std::shared_ptr<grpc::Channel>& channel) {
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::health::v1::HealthCheckRequest request;
  auto reader = stub->Watch(&context, request);
  grpc::health::v1::HealthCheckResponse response;
  if (reader->Read(&response)) {  // served: the stream stays open until the client goes
    context.TryCancel();
    reader->Finish().IgnoreError();
    return grpc::StatusCode::OK;
  }
  return reader->Finish().error_code();
}

inline grpc::StatusCode ReflectionOutcome(const std::shared_ptr<grpc::Channel>& channel) {
  namespace rf = grpc::reflection::v1alpha;
  auto stub = rf::ServerReflection::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  auto stream = stub->ServerReflectionInfo(&context);
  rf::ServerReflectionRequest request;
  request.set_list_services("");
  rf::ServerReflectionResponse response;
  if (stream->Write(request) && stream->Read(&response)) {  // served: open until the client closes it
    context.TryCancel();
    stream->Finish().IgnoreError();
    return grpc::StatusCode::OK;
  }
  return stream->Finish().error_code();
}

}  // namespace osh::test
