#include "gateway/server/health_service.h"

#include <algorithm>
#include <memory>
#include <vector>

#include <grpcpp/ext/health_check_service_server_builder_option.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/impl/server_builder_option.h>
#include <grpcpp/impl/server_builder_plugin.h>

namespace osh::gateway {

void HealthService::Set(absl::string_view service, bool serving) {
  absl::MutexLock lock(&mu_);
  serving_[service] = serving;
}

grpc::ServerUnaryReactor* HealthService::Check(grpc::CallbackServerContext* context,
                                               const grpc::health::v1::HealthCheckRequest* request,
                                               grpc::health::v1::HealthCheckResponse* response) {
  auto* reactor = context->DefaultReactor();
  {
    absl::MutexLock lock(&mu_);
    const auto it = serving_.find(request->service());
    if (it == serving_.end()) {
      reactor->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown service"));
      return reactor;
    }
    response->set_status(it->second ? grpc::health::v1::HealthCheckResponse::SERVING
                                    : grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

namespace {

// Takes the reflection plugin (added to every builder by InitProtoReflectionServerBuilderPlugin) out of
// one builder's plugins before they run.
class WithoutReflection final : public grpc::ServerBuilderOption {
 public:
  void UpdateArguments(grpc::ChannelArguments*) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    plugins->erase(std::remove_if(plugins->begin(), plugins->end(),
                                  [](const auto& plugin) {
                                    return dynamic_cast<grpc::reflection::ProtoServerReflectionPlugin*>(plugin.get()) != nullptr;
                                  }),
                   plugins->end());
  }
};

}  // namespace

void ServeHealth(grpc::ServerBuilder& builder, HealthService* health, bool reflection) {
  builder.SetOption(std::make_unique<grpc::HealthCheckServiceServerBuilderOption>(nullptr));  // no default service
  builder.RegisterService(health);
  if (!reflection) builder.SetOption(std::make_unique<WithoutReflection>());
}

}  // namespace osh::gateway
