// Sandbox GetProjection throughput for a 4 KiB body: the gateway's real SandboxService (handle
// authentication against a registry of admitted sandboxes) against a bare gRPC callback server that
// returns the same bytes. Same process, same Unix-socket kind, same client load, alternating rounds;
// prints both medians and the ratio.
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>

#include <CLI/CLI.hpp>
#include <grpcpp/grpcpp.h>

#include "bench/bench_support.h"
#include "gateway/config.h"
#include "gateway/gateway_core.h"
#include "gateway/sandbox_registry.h"
#include "gateway/sandbox_service.h"
#include "gateway/worker_pool.h"
#include "openshell/policy/gateway/v1/gateway.grpc.pb.h"
#include "policy/digest.h"

namespace {

namespace gw = openshell::policy::gateway::v1;
namespace drv = openshell::policy::driver::v1;

// The baseline: a callback server that returns a prebuilt projection, nothing else.
class BareService final : public gw::SandboxPolicy::CallbackService {
 public:
  explicit BareService(drv::Projection projection) : projection_(std::move(projection)) {}
  grpc::ServerUnaryReactor* GetProjection(grpc::CallbackServerContext* context, const gw::GetProjectionRequest*,
                                          drv::Projection* response) override {
    *response = projection_;
    auto* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

 private:
  const drv::Projection projection_;
};

std::unique_ptr<grpc::Server> Serve(grpc::Service* service, const std::string& socket) {
  grpc::ServerBuilder builder;
  builder.AddListeningPort("unix:" + socket, grpc::InsecureServerCredentials());
  builder.RegisterService(service);
  return builder.BuildAndStart();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"GetProjection throughput: the gateway's SandboxService vs a bare gRPC callback server"};
  int threads = 4, rounds = 3, sandboxes = 1000;
  double seconds = 2.0;
  size_t body_bytes = 4096;
  app.add_option("--threads", threads, "client threads")->capture_default_str();
  app.add_option("--seconds", seconds, "measured seconds per round and server")->capture_default_str();
  app.add_option("--rounds", rounds, "alternating rounds (the median is reported)")->capture_default_str();
  app.add_option("--sandboxes", sandboxes, "admitted sandboxes in the registry")->capture_default_str();
  app.add_option("--body-bytes", body_bytes, "minimum body size")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  char dir_template[] = "/tmp/osh-bench-XXXXXX";
  const std::string dir = mkdtemp(dir_template);

  // One admitted projection of the requested size, in a registry of `sandboxes` entries.
  const auto policy = osh::bench::PolicyOfSize(body_bytes);
  drv::Projection projection;
  projection.set_surface_id("openshell.sandbox.v1");
  projection.set_body(osh::policy::SerializeDeterministic(policy));
  projection.set_policy_digest(osh::policy::Sha256Hex(projection.body()));
  projection.set_policy_version(1);
  osh::gateway::SandboxRegistry registry;
  osh::store::EnvelopeInterner interner;
  const osh::store::EnvelopePtr envelope = interner.Intern(projection);
  osh::store::ChangeBatch admitted;
  std::vector<std::string> handles;
  for (int i = 0; i < sandboxes; ++i) {
    osh::store::SandboxRecord record;
    record.context.set_sandbox_id("sb-" + std::to_string(i));
    record.context.set_user_subject("bench");
    handles.push_back(osh::gateway::MintSandboxHandle());
    record.handle_sha256 = osh::policy::Sha256(handles.back());
    record.envelope = envelope;
    admitted.changes.push_back(osh::store::change::AdmitSandbox{std::move(record)});
  }
  registry.OnCommitted(admitted, {});  // as the store would report the committed admissions
  osh::gateway::WorkerPool pool(2);
  osh::gateway::SandboxService gateway_service(&registry, /*core=*/nullptr, &pool);  // GetProjection needs no core
  BareService bare_service(projection);
  auto gateway_server = Serve(&gateway_service, dir + "/gateway.sock");
  auto bare_server = Serve(&bare_service, dir + "/bare.sock");

  auto load = [&](const std::string& socket) {
    std::vector<std::unique_ptr<gw::SandboxPolicy::Stub>> stubs;
    for (int t = 0; t < threads; ++t) {
      grpc::ChannelArguments args;
      args.SetInt("grpc.channel_id", t);  // one connection per client thread
      stubs.push_back(gw::SandboxPolicy::NewStub(
          grpc::CreateCustomChannel("unix:" + socket, grpc::InsecureChannelCredentials(), args)));
    }
    return osh::bench::RunLoad(threads, seconds, [&](int t) {
      grpc::ClientContext context;
      context.AddMetadata("authorization", "Bearer " + handles[static_cast<size_t>(t * 7919) % handles.size()]);
      drv::Projection response;
      return stubs[t]->GetProjection(&context, gw::GetProjectionRequest(), &response).ok() &&
             response.body().size() == projection.body().size();
    });
  };

  std::vector<double> bare, gateway;
  for (int r = 0; r < rounds; ++r) {
    const auto b = load(dir + "/bare.sock");
    const auto g = load(dir + "/gateway.sock");
    if (b.errors + g.errors > 0) {
      std::fprintf(stderr, "errors during the run: bare %lu, gateway %lu\n", static_cast<unsigned long>(b.errors),
                   static_cast<unsigned long>(g.errors));
      return 1;
    }
    bare.push_back(b.calls_per_second);
    gateway.push_back(g.calls_per_second);
    std::printf("round %d: bare %.0f calls/s, gateway %.0f calls/s\n", r + 1, b.calls_per_second, g.calls_per_second);
  }
  const double bare_median = osh::bench::Median(bare), gateway_median = osh::bench::Median(gateway);
  std::printf("GetProjection, %zu-byte body, %d client threads, %d sandboxes, Unix sockets, median of %d rounds:\n",
              projection.body().size(), threads, sandboxes, rounds);
  std::printf("  bare gRPC callback server: %10.0f calls/s\n", bare_median);
  std::printf("  gateway SandboxService:    %10.0f calls/s\n", gateway_median);
  std::printf("  ratio gateway/bare:        %10.3f\n", gateway_median / bare_median);
  gateway_server->Shutdown();
  bare_server->Shutdown();
  std::filesystem::remove_all(dir);
  return 0;
}
