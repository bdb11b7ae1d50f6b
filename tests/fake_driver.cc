// fake-policy-driver: a real PolicyDriver gRPC server that misbehaves on purpose, for tests only.
// It serves whatever GetProjectionResponse (protobuf JSON) is in --response-file, re-read on every call,
// so a test can swap in a tampered, rolled-back, expired or foreign projection between calls. Its
// capabilities are set by flags (wrong api_version, foreign surfaces), and it can stall every call, or
// answer one sandbox's projections UNAVAILABLE (at once, or once a file a test writes exists).
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <iostream>
#include <map>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <google/protobuf/util/json_util.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "drivers/driver_kit/driver_service.h"
#include "policy/policy_file.h"

namespace {

namespace drv = openshell::policy::driver::v1;
using osh::driver_kit::Finish;

struct FakeOptions {
  uint32_t api_version = 1;
  std::vector<std::string> surfaces = {"openshell.sandbox.v1"};
  bool permits_mutation = false;
  bool signs = true;
  std::string response_file;
  int stall_ms = 0;
  bool refuse_all = false;
  std::string refuse_release;  // this handle's ReleaseHandle is PERMISSION_DENIED, every time
  int stall_release_ms = 0;    // sleep this long in every ReleaseHandle (before it is logged)
  int gather = 0;  // > 0: GetProjection answers once this many calls wait at once
  int gather_timeout_ms = 15000;
  // --unavailable-sandbox ID[:PATH]: sandbox id -> release file ("": at once).
  std::map<std::string, std::string> unavailable;
};

class FakeDriver final : public drv::PolicyDriver::CallbackService {
 public:
  explicit FakeDriver(FakeOptions options) : options_(std::move(options)) {}

  grpc::ServerUnaryReactor* GetCapabilities(grpc::CallbackServerContext* ctx, const drv::GetCapabilitiesRequest*,
                                            drv::Capabilities* out) override {
    out->set_driver_name("fake-policy-driver");
    out->set_driver_version("test");
    out->set_api_version(options_.api_version);
    for (const auto& s : options_.surfaces) out->add_supported_surfaces(s);
    out->set_permits_mutation(options_.permits_mutation);
    out->set_signs_projections(options_.signs);
    return Finish(ctx, grpc::Status::OK);
  }
  grpc::ServerUnaryReactor* AcquireHandle(grpc::CallbackServerContext* ctx, const drv::AcquireHandleRequest* request,
                                          drv::AcquireHandleResponse* out) override {
    Stall();
    if (options_.refuse_all) return Finish(ctx, grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "subject not served"));
    absl::MutexLock lock(&mu_);
    const std::string handle = absl::StrCat("fake-", ++next_);
    handles_[handle] = request->context().sandbox_id();
    std::cerr << "acquire: handle=" << handle << " sandbox=" << request->context().sandbox_id() << std::endl;
    out->set_handle(handle);
    return Finish(ctx, grpc::Status::OK);
  }
  grpc::ServerUnaryReactor* GetProjection(grpc::CallbackServerContext* ctx, const drv::GetProjectionRequest* request,
                                          drv::GetProjectionResponse* out) override {
    Stall();
    std::string sandbox_id;
    {
      absl::MutexLock lock(&mu_);
      auto it = handles_.find(request->handle());
      if (it == handles_.end()) return Finish(ctx, grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown handle"));
      sandbox_id = it->second;
    }
    if (auto it = options_.unavailable.find(sandbox_id); it != options_.unavailable.end()) {
      return Unavailable(ctx, request->handle(), it->second);
    }
    auto text = osh::policy::ReadFileToString(options_.response_file);
    if (!text.ok()) return Finish(ctx, grpc::Status(grpc::StatusCode::INTERNAL, std::string(text.status().message())));
    if (auto s = google::protobuf::util::JsonStringToMessage(*text, out); !s.ok()) {
      return Finish(ctx, grpc::Status(grpc::StatusCode::INTERNAL, s.message().as_string()));
    }
    if (options_.gather > 0) return Gather(ctx);
    return Finish(ctx, grpc::Status::OK);
  }
  grpc::ServerUnaryReactor* ReleaseHandle(grpc::CallbackServerContext* ctx, const drv::ReleaseHandleRequest* request,
                                          drv::ReleaseHandleResponse*) override {
    if (options_.stall_release_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(options_.stall_release_ms));
    absl::MutexLock lock(&mu_);
    if (!options_.refuse_release.empty() && request->handle() == options_.refuse_release) {
      std::cerr << "release: handle=" << request->handle() << " refused" << std::endl;
      return Finish(ctx, grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "not yours to release"));
    }
    const bool known = handles_.erase(request->handle()) > 0;
    std::cerr << "release: handle=" << request->handle() << (known ? "" : " (unknown)") << std::endl;
    return Finish(ctx, grpc::Status::OK);
  }

 private:
  // Holds the call until `gather` calls wait together, then answers them all; after gather_timeout_ms
  // without that many, answers those waiting UNAVAILABLE ("gathered K of N").
  grpc::ServerUnaryReactor* Gather(grpc::CallbackServerContext* ctx) {
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    std::vector<grpc::ServerUnaryReactor*> ready;
    {
      absl::MutexLock lock(&mu_);
      gathered_.push_back(reactor);
      std::cerr << "gather: " << gathered_.size() << " of " << options_.gather << " waiting" << std::endl;
      if (static_cast<int>(gathered_.size()) >= options_.gather) {
        ready.swap(gathered_);
        ++generation_;
      } else if (gathered_.size() == 1) {
        std::thread([this, generation = generation_] {
          std::this_thread::sleep_for(std::chrono::milliseconds(options_.gather_timeout_ms));
          std::vector<grpc::ServerUnaryReactor*> late;
          std::string why;
          {
            absl::MutexLock lock(&mu_);
            if (generation_ != generation) return;
            why = absl::StrCat("gathered ", gathered_.size(), " of ", options_.gather);
            late.swap(gathered_);
            ++generation_;
          }
          for (auto* r : late) r->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, why));
        }).detach();
      }
    }
    for (auto* r : ready) r->Finish(grpc::Status::OK);
    return reactor;
  }

  // UNAVAILABLE, at once or (release_file not empty) once that file exists, polled without holding one of
  // gRPC's threads; gives up after a minute.
  static grpc::ServerUnaryReactor* Unavailable(grpc::CallbackServerContext* ctx, const std::string& handle,
                                               const std::string& release_file) {
    const grpc::Status gone(grpc::StatusCode::UNAVAILABLE, "going away (fake-policy-driver)");
    if (release_file.empty()) return Finish(ctx, gone);
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    std::cerr << "holding: handle=" << handle << " until " << release_file << " exists" << std::endl;
    std::thread([reactor, gone, release_file] {
      for (int i = 0; i < 6000 && !std::filesystem::exists(release_file); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      reactor->Finish(gone);
    }).detach();
    return reactor;
  }

  void Stall() const {
    if (options_.stall_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(options_.stall_ms));
  }

  const FakeOptions options_;
  absl::Mutex mu_;
  uint64_t next_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, std::string> handles_ ABSL_GUARDED_BY(mu_);
  std::vector<grpc::ServerUnaryReactor*> gathered_ ABSL_GUARDED_BY(mu_);
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace

int main(int argc, char** argv) {
  osh::driver_kit::BlockStopSignals();
  CLI::App app{"fake-policy-driver: a deliberately configurable PolicyDriver for tests"};
  FakeOptions options;
  std::string socket;
  app.add_option("--socket", socket, "Unix socket")->required();
  app.add_option("--response-file", options.response_file, "GetProjectionResponse JSON, re-read per call")->required();
  app.add_option("--api-version", options.api_version, "api_version to claim");
  app.add_option("--surface", options.surfaces, "supported surface (repeatable)");
  app.add_flag("--permits-mutation", options.permits_mutation, "claim permits_mutation");
  app.add_option("--stall-ms", options.stall_ms, "sleep this long in AcquireHandle and GetProjection");
  app.add_flag("--refuse-all", options.refuse_all, "PERMISSION_DENIED for every AcquireHandle");
  app.add_option("--refuse-release", options.refuse_release, "PERMISSION_DENIED for ReleaseHandle of this handle");
  app.add_option("--stall-release-ms", options.stall_release_ms, "sleep this long in every ReleaseHandle");
  app.add_option("--gather", options.gather, "answer GetProjection only once this many calls wait at once");
  app.add_option("--gather-timeout-ms", options.gather_timeout_ms,
                 "after this long without --gather calls, answer those waiting UNAVAILABLE");
  std::vector<std::string> unavailable;
  app.add_option("--unavailable-sandbox", unavailable,
                 "ID[:PATH]: answer GetProjection for that sandbox's handles UNAVAILABLE; with PATH, only once that "
                 "file exists (the call is held until then; repeatable)");
  CLI11_PARSE(app, argc, argv);
  for (const auto& spec : unavailable) {
    const auto colon = spec.find(':');
    options.unavailable[spec.substr(0, colon)] = colon == std::string::npos ? "" : spec.substr(colon + 1);
  }
  FakeDriver service(options);
  auto server = osh::driver_kit::ServeOnUnixSocket(socket, &service);
  if (!server.ok()) {
    std::cerr << "fake-policy-driver: " << server.status().message() << "\n";
    return 1;
  }
  std::cerr << "fake-policy-driver: serving on " << socket << std::endl;
  osh::driver_kit::RunUntilStopped(server->get(), "fake-policy-driver");
  return 0;
}
