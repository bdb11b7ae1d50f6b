#include "gateway/server/interceptor_service.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "gateway/core/log.h"
#include "gateway/server/status_conversion.h"

namespace osh::gateway {

grpc::Status InterceptorService::Authenticate(const grpc::CallbackServerContext& context, const char* method) {
  if (verifier_ == nullptr) return grpc::Status::OK;
  std::string authorization;
  const auto& metadata = context.client_metadata();
  if (auto it = metadata.find("authorization"); it != metadata.end()) {
    authorization.assign(it->second.data(), it->second.size());
  }
  const absl::Status verified = verifier_->Verify(authorization, clock_->NowUnix());
  if (verified.ok()) return grpc::Status::OK;
  const uint64_t count = unauthenticated_.fetch_add(1) + 1;
  LogWarning(absl::StrCat("interceptor: ", method, " refused (UNAUTHENTICATED): ", verified.message()),
             {{"refused_calls", absl::StrCat(count)}});
  return ToGrpc(verified);
}

grpc::ServerUnaryReactor* InterceptorService::Describe(grpc::CallbackServerContext* context,
                                                       const interceptor_v1::DescribeRequest* /*request*/,
                                                       interceptor_v1::InterceptorManifest* response) {
  auto* reactor = context->DefaultReactor();
  grpc::Status status = Authenticate(*context, "Describe");
  if (status.ok()) *response = evaluator_->Describe();
  reactor->Finish(status);
  return reactor;
}

grpc::ServerUnaryReactor* InterceptorService::Evaluate(grpc::CallbackServerContext* context,
                                                       const interceptor_v1::InterceptorEvaluation* request,
                                                       interceptor_v1::InterceptorResult* response) {
  auto* reactor = context->DefaultReactor();
  grpc::Status status = Authenticate(*context, "Evaluate");
  if (!status.ok()) {
    reactor->Finish(status);
    return reactor;
  }
  // The decision appends to the audit log: off gRPC's callback thread.
  pool_->Submit([this, reactor, request, response] {
    *response = evaluator_->Evaluate(*request);
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerUnaryReactor* InterceptorService::SnapshotProviderProfiles(
    grpc::CallbackServerContext* context, const interceptor_v1::ProviderProfileSnapshotRequest* /*request*/,
    interceptor_v1::ProviderProfileSnapshot* /*response*/) {
  auto* reactor = context->DefaultReactor();
  grpc::Status status = Authenticate(*context, "SnapshotProviderProfiles");
  if (status.ok()) {
    status = grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                          "provider_profiles_unavailable: this gateway serves no provider-profile catalogue yet");
  }
  reactor->Finish(status);
  return reactor;
}

}  // namespace osh::gateway
