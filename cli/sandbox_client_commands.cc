// policyctl fetch | watch | report (what a sandbox does, on the sandbox socket, with its handle).
#include <fstream>
#include <iostream>

#include <google/protobuf/struct.pb.h>

#include "absl/strings/str_cat.h"
#include "cli/commands.h"
#include "openshell/policy/gateway/v1/gateway.grpc.pb.h"

namespace osh::cli {
namespace {

namespace v1 = openshell::policy::gateway::v1;

std::unique_ptr<v1::SandboxPolicy::Stub> SandboxStub(const Options& options) {
  auto channel = Connect(options.sandbox_socket, options.timeout_s);
  return channel ? v1::SandboxPolicy::NewStub(channel) : nullptr;
}

}  // namespace

void AddSandboxClientCommands(CLI::App& app, const Options& options, int& exit_code) {
  // fetch
  {
    auto* cmd = app.add_subcommand("fetch", "Fetch the admitted projection (protobuf JSON of openshell.policy.driver.v1.Projection)");
    auto handle = std::make_shared<std::string>();
    auto out = std::make_shared<std::string>();
    cmd->add_option("--handle", *handle, "sandbox handle (from admit)")->required();
    cmd->add_option("--out", *out, "write the projection to this file instead of standard output");
    cmd->callback([&options, &exit_code, handle, out] {
      auto stub = SandboxStub(options);
      if (!stub) { exit_code = kExitUsage; return; }
      openshell::policy::driver::v1::Projection projection;
      auto ctx = MakeContext(options, *handle);
      if (auto status = stub->GetProjection(ctx.get(), v1::GetProjectionRequest(), &projection); !status.ok()) {
        exit_code = ReportRpcError(status);
        return;
      }
      const std::string json = ToJson(projection, /*pretty=*/true);
      if (out->empty()) {
        std::cout << json << "\n";
      } else {
        std::ofstream file(*out, std::ios::trunc);
        file << json << "\n";
        if (!file.good()) {
          exit_code = ReportLocalError(absl::InternalError(absl::StrCat(*out, ": cannot write")));
          return;
        }
      }
      exit_code = kExitOk;
    });
  }
  // watch
  {
    auto* cmd = app.add_subcommand("watch", "Stream the admitted projection, then every newly admitted one");
    auto handle = std::make_shared<std::string>();
    auto count = std::make_shared<int>(0);
    cmd->add_option("--handle", *handle, "sandbox handle (from admit)")->required();
    cmd->add_option("--count", *count, "stop after this many projections (0: until the stream ends)");
    cmd->callback([&options, &exit_code, handle, count] {
      auto stub = SandboxStub(options);
      if (!stub) { exit_code = kExitUsage; return; }
      grpc::ClientContext ctx;  // no deadline: a watch lasts
      ctx.AddMetadata("authorization", absl::StrCat("Bearer ", *handle));
      auto reader = stub->WatchProjection(&ctx, v1::WatchProjectionRequest());
      openshell::policy::driver::v1::Projection projection;
      int seen = 0;
      while (reader->Read(&projection)) {
        if (options.json()) std::cout << ToJson(projection) << std::endl;
        else std::cout << "projection " << projection.policy_digest() << " version " << projection.policy_version() << std::endl;
        if (*count > 0 && ++seen >= *count) {
          ctx.TryCancel();
          exit_code = kExitOk;
          return;
        }
      }
      const grpc::Status status = reader->Finish();
      exit_code = status.ok() ? kExitOk : ReportRpcError(status);
    });
  }
  // report
  {
    auto* cmd = app.add_subcommand("report", "Report whether the sandbox loaded a projection");
    auto handle = std::make_shared<std::string>();
    auto digest = std::make_shared<std::string>();
    auto loaded = std::make_shared<bool>(false);
    auto failed = std::make_shared<std::string>();
    cmd->add_option("--handle", *handle, "sandbox handle (from admit)")->required();
    cmd->add_option("--digest", *digest, "policy digest the report is about")->required();
    auto* loaded_flag = cmd->add_flag("--loaded", *loaded, "the projection was loaded");
    auto* failed_opt = cmd->add_option("--failed", *failed, "the projection failed to load, with this message");
    loaded_flag->excludes(failed_opt);
    cmd->callback([&options, &exit_code, handle, digest, loaded, failed, failed_opt] {
      if (!*loaded && failed_opt->count() == 0) {
        exit_code = ReportLocalError(absl::InvalidArgumentError("report: one of --loaded or --failed MSG is required"));
        return;
      }
      auto stub = SandboxStub(options);
      if (!stub) { exit_code = kExitUsage; return; }
      v1::ReportPolicyStatusRequest request;
      request.set_policy_digest(*digest);
      request.set_status(*loaded ? v1::LOADED : v1::FAILED);
      request.set_error(*failed);
      v1::ReportPolicyStatusResponse response;
      auto ctx = MakeContext(options, *handle);
      if (auto status = stub->ReportPolicyStatus(ctx.get(), request, &response); !status.ok()) {
        exit_code = ReportRpcError(status);
        return;
      }
      if (options.json()) {
        google::protobuf::Struct doc;
        (*doc.mutable_fields())["reported"].set_bool_value(true);
        std::cout << ToJson(doc) << "\n";
      } else {
        std::cout << "reported " << (*loaded ? "loaded" : "failed") << " for " << *digest << "\n";
      }
      exit_code = kExitOk;
    });
  }
}

}  // namespace osh::cli
