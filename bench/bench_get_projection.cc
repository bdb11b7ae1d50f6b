// Sandbox GetProjection throughput for a 4 KiB body: the gateway's real SandboxService (handle
// authentication against a registry of admitted sandboxes) against a bare gRPC callback server that
// returns the same bytes. Same process, same Unix-socket kind, same client load, alternating rounds;
// prints both medians and the ratio. With --tls-cert/--tls-key/--tls-ca, both servers are also measured
// over TCP on 127.0.0.1 with the gateway's own TLS credentials (TlsListenerCredentials), and the TLS
// figures are reported as ratios against the Unix-socket ones of the same run.
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>

#include <CLI/CLI.hpp>
#include <grpcpp/grpcpp.h>

#include "bench/bench_support.h"
#include "gateway/core/config.h"
#include "gateway/core/gateway_core.h"
#include "gateway/core/sandbox_registry.h"
#include "gateway/server/sandbox_service.h"
#include "gateway/server/tls_listener_credentials.h"
#include "gateway/core/worker_pool.h"
#include "openshell/policy/gateway/v1/gateway.grpc.pb.h"
#include "policy/digest.h"
#include "policy/policy_file.h"

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

// The same over TCP with TLS on 127.0.0.1; `target` receives "127.0.0.1:<port>".
std::unique_ptr<grpc::Server> ServeTls(grpc::Service* service, std::shared_ptr<grpc::ServerCredentials> credentials,
                                       std::string* target) {
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", std::move(credentials), &port);
  builder.RegisterService(service);
  auto server = builder.BuildAndStart();
  *target = "127.0.0.1:" + std::to_string(port);
  return server;
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
  std::string tls_cert, tls_key, tls_ca;
  app.add_option("--tls-cert", tls_cert, "also measure over TLS: the server certificate (must name 127.0.0.1)");
  app.add_option("--tls-key", tls_key, "its private key");
  app.add_option("--tls-ca", tls_ca, "the CA that issued it");
  CLI11_PARSE(app, argc, argv);
  const bool with_tls = !tls_cert.empty();

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

  std::unique_ptr<osh::gateway::TlsListenerCredentials> tls;
  std::unique_ptr<grpc::Server> gateway_tls_server, bare_tls_server;
  std::string gateway_tls, bare_tls;
  std::shared_ptr<grpc::ChannelCredentials> client_tls;
  if (with_tls) {
    auto created = osh::gateway::TlsListenerCredentials::Create({tls_cert, tls_key, ""}, dir + "/tls");
    auto ca = osh::policy::ReadFileToString(tls_ca);
    if (!created.ok() || !ca.ok()) {
      std::fprintf(stderr, "TLS: %s\n", std::string(!created.ok() ? created.status().message() : ca.status().message()).c_str());
      return 2;
    }
    tls = *std::move(created);
    gateway_tls_server = ServeTls(&gateway_service, tls->credentials(), &gateway_tls);
    bare_tls_server = ServeTls(&bare_service, tls->credentials(), &bare_tls);
    grpc::SslCredentialsOptions options;
    options.pem_root_certs = *ca;
    client_tls = grpc::SslCredentials(options);
  }

  // `target`: "unix:<path>" or, over TLS, "127.0.0.1:<port>".
  auto load = [&](const std::string& target) {
    const bool over_tls = target.rfind("unix:", 0) != 0;
    std::vector<std::unique_ptr<gw::SandboxPolicy::Stub>> stubs;
    for (int t = 0; t < threads; ++t) {
      grpc::ChannelArguments args;
      args.SetInt("grpc.channel_id", t);  // one connection per client thread
      stubs.push_back(gw::SandboxPolicy::NewStub(grpc::CreateCustomChannel(
          target, over_tls ? client_tls : grpc::InsecureChannelCredentials(), args)));
    }
    return osh::bench::RunLoad(threads, seconds, [&](int t) {
      grpc::ClientContext context;
      context.AddMetadata("authorization", "Bearer " + handles[static_cast<size_t>(t * 7919) % handles.size()]);
      drv::Projection response;
      return stubs[t]->GetProjection(&context, gw::GetProjectionRequest(), &response).ok() &&
             response.body().size() == projection.body().size();
    });
  };

  std::vector<double> bare, gateway, bare_over_tls, gateway_over_tls;
  for (int r = 0; r < rounds; ++r) {
    const auto b = load("unix:" + dir + "/bare.sock");
    const auto g = load("unix:" + dir + "/gateway.sock");
    if (with_tls) {
      const auto bt = load(bare_tls);
      const auto gt = load(gateway_tls);
      if (bt.errors + gt.errors > 0) {
        std::fprintf(stderr, "errors over TLS: bare %lu, gateway %lu\n", static_cast<unsigned long>(bt.errors),
                     static_cast<unsigned long>(gt.errors));
        return 1;
      }
      bare_over_tls.push_back(bt.calls_per_second);
      gateway_over_tls.push_back(gt.calls_per_second);
      std::printf("round %d over TLS: bare %.0f calls/s, gateway %.0f calls/s\n", r + 1, bt.calls_per_second,
                  gt.calls_per_second);
    }
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
  if (with_tls) {
    const double bare_tls_median = osh::bench::Median(bare_over_tls);
    const double gateway_tls_median = osh::bench::Median(gateway_over_tls);
    std::printf("Over TCP with TLS (127.0.0.1, the gateway's TlsListenerCredentials), same run:\n");
    std::printf("  bare gRPC callback server: %10.0f calls/s\n", bare_tls_median);
    std::printf("  gateway SandboxService:    %10.0f calls/s\n", gateway_tls_median);
    std::printf("  ratio gateway/bare (TLS):  %10.3f\n", gateway_tls_median / bare_tls_median);
    std::printf("  ratio gateway TLS/Unix:    %10.3f\n", gateway_tls_median / gateway_median);
    gateway_tls_server->Shutdown();
    bare_tls_server->Shutdown();
  }
  gateway_server->Shutdown();
  bare_server->Shutdown();
  std::filesystem::remove_all(dir);
  return 0;
}
