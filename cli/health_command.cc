// policyctl health: the gateway's gRPC health status, for probes and scripts.
#include <iostream>
#include <memory>

#include "cli/commands.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace osh::cli {

namespace health_v1 = grpc::health::v1;

void AddHealthCommand(CLI::App& app, const Options& options, int& exit_code) {
  auto* cmd = app.add_subcommand(
      "health",
      "Ask a gateway socket whether it is serving (gRPC health checking). Exit 0 serving, 1 not serving, "
      "2 unreachable — a missing socket or one nobody listens on fails at once");
  auto service = std::make_shared<std::string>();
  auto sandbox = std::make_shared<bool>(false);
  cmd->add_option("--service", *service,
                  "service to ask about: \"\" (default) the socket as a whole, or e.g. "
                  "openshell.policy.gateway.v1.Admission (NOT_SERVING while the driver is down)");
  cmd->add_flag("--sandbox", *sandbox, "ask the sandbox API (socket, or --server) instead of the admin API");
  cmd->callback([&options, &exit_code, service, sandbox] {
    auto channel = Connect(options, *sandbox ? Api::kSandbox : Api::kAdmin);
    if (!channel) {
      exit_code = kExitUsage;
      return;
    }
    auto stub = health_v1::Health::NewStub(channel);
    health_v1::HealthCheckRequest request;
    request.set_service(*service);
    health_v1::HealthCheckResponse response;
    auto ctx = MakeContext(options);
    if (auto status = stub->Check(ctx.get(), request, &response); !status.ok()) {
      // NOT_FOUND: the gateway does not know that service name.
      exit_code = status.error_code() == grpc::StatusCode::NOT_FOUND ? kExitUsage : ReportRpcError(status);
      if (status.error_code() == grpc::StatusCode::NOT_FOUND) std::cerr << "error: unknown service '" << *service << "'\n";
      return;
    }
    const bool serving = response.status() == health_v1::HealthCheckResponse::SERVING;
    if (options.json()) {
      std::cout << ToJson(response) << "\n";
    } else {
      std::cout << health_v1::HealthCheckResponse::ServingStatus_Name(response.status()) << "\n";
    }
    exit_code = serving ? kExitOk : kExitRefused;
  });
}

}  // namespace osh::cli
