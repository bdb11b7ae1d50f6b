#include "sandbox_client/sandbox_client.h"

#include <cstdlib>
#include <fstream>
#include <random>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "trust/projection_check.h"
#include "trust/trust_store.h"

namespace osh::sandbox_client {
namespace {

namespace driver_v1 = openshell::policy::driver::v1;
namespace gateway_v1 = openshell::policy::gateway::v1;

absl::Status FromGrpc(const grpc::Status& status) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

}  // namespace

absl::StatusOr<std::string> ReadSandboxHandle(const std::string& handle_file) {
  std::string handle;
  if (!handle_file.empty()) {
    std::ifstream in(handle_file);
    if (!in) return absl::InvalidArgumentError(absl::StrCat("handle file ", handle_file, ": cannot be read"));
    std::getline(in, handle);
    handle = std::string(absl::StripAsciiWhitespace(handle));
    if (handle.empty()) return absl::InvalidArgumentError(absl::StrCat("handle file ", handle_file, ": empty"));
    return handle;
  }
  if (const char* value = std::getenv(kHandleVariable)) handle = std::string(absl::StripAsciiWhitespace(value));
  if (handle.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("no sandbox handle: give a handle file or set ", kHandleVariable));
  }
  return handle;
}

SandboxClient::SandboxClient(ClientOptions options, std::shared_ptr<grpc::Channel> channel)
    : options_(std::move(options)),
      channel_(std::move(channel)),
      stub_(gateway_v1::SandboxPolicy::NewStub(channel_)) {}

absl::StatusOr<std::unique_ptr<SandboxClient>> SandboxClient::Connect(ClientOptions options) {
  if (options.handle.empty()) return absl::InvalidArgumentError("no sandbox handle");
  if (options.accepted_surfaces.empty()) return absl::InvalidArgumentError("no accepted surface");
  if (options.initial_backoff.count() <= 0 || options.max_backoff < options.initial_backoff) {
    return absl::InvalidArgumentError("back-off: need 0 < initial_backoff <= max_backoff");
  }
  auto channel = OpenChannel(options.endpoint, std::chrono::milliseconds(0));
  if (!channel.ok()) return channel.status();
  return std::unique_ptr<SandboxClient>(new SandboxClient(std::move(options), *std::move(channel)));
}

std::unique_ptr<grpc::ClientContext> SandboxClient::CallContext() const {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + options_.call_timeout);
  context->AddMetadata("authorization", absl::StrCat("Bearer ", options_.handle));
  return context;
}

absl::StatusOr<VerifiedPolicy> SandboxClient::Verify(const driver_v1::Projection& projection,
                                                     std::optional<uint64_t> admitted_version) const {
  trust::CheckInput input;
  if (options_.context.has_value()) input.context = &*options_.context;
  input.accepted_surfaces = &options_.accepted_surfaces;
  input.trust_store = options_.trust_store.get();
  input.now_unix = options_.now_unix ? options_.now_unix() : absl::ToUnixSeconds(absl::Now());
  input.clock_skew_s = options_.clock_skew_s;
  input.admitted_version = admitted_version;
  trust::CheckResult result = trust::CheckProjection(projection, input);
  if (!result.ok()) return result.ToStatus();
  VerifiedPolicy verified;
  verified.projection = projection;
  verified.policy = std::move(result.policy);
  verified.verified_key_ids = std::move(result.verified_key_ids);
  return verified;
}

absl::StatusOr<driver_v1::Projection> SandboxClient::FetchUnverified() {
  driver_v1::Projection projection;
  auto context = CallContext();
  if (grpc::Status status = stub_->GetProjection(context.get(), gateway_v1::GetProjectionRequest(), &projection);
      !status.ok()) {
    return FromGrpc(status);
  }
  return projection;
}

absl::StatusOr<VerifiedPolicy> SandboxClient::Fetch() {
  auto projection = FetchUnverified();
  if (!projection.ok()) return projection.status();
  return Verify(*projection);
}

absl::Status SandboxClient::Report(const std::string& digest, const std::string& error) {
  gateway_v1::ReportPolicyStatusRequest request;
  request.set_policy_digest(digest);
  request.set_status(error.empty() ? gateway_v1::LOADED : gateway_v1::FAILED);
  request.set_error(error);
  gateway_v1::ReportPolicyStatusResponse response;
  auto context = CallContext();
  return FromGrpc(stub_->ReportPolicyStatus(context.get(), request, &response));
}

std::shared_ptr<const VerifiedPolicy> SandboxClient::current() const {
  absl::MutexLock lock(&mu_);
  return current_;
}

void SandboxClient::Handle(const driver_v1::Projection& projection, const ApplyFn& apply, const EventFn& on_event) {
  auto emit = [&](WatchEvent::Kind kind, const std::string& detail) {
    if (on_event) on_event({kind, projection.policy_digest(), detail, std::chrono::milliseconds(0)});
  };
  const std::shared_ptr<const VerifiedPolicy> in_force = current();
  // The stream opens with the projection in force; after a reconnect it is usually the one applied.
  if (in_force != nullptr && in_force->projection.SerializeAsString() == projection.SerializeAsString()) return;
  std::optional<uint64_t> admitted_version;
  if (in_force != nullptr && in_force->projection.policy_version() != 0) {
    admitted_version = in_force->projection.policy_version();
  }
  absl::StatusOr<VerifiedPolicy> verified = Verify(projection, admitted_version);
  absl::Status outcome = verified.ok() ? apply(*verified) : verified.status();
  if (!outcome.ok() && verified.ok() && outcome.message().empty()) outcome = absl::UnknownError("apply failed");
  const std::string failure = outcome.ok() ? "" : std::string(outcome.message());
  if (outcome.ok()) {
    auto applied = std::make_shared<const VerifiedPolicy>(*std::move(verified));
    absl::MutexLock lock(&mu_);
    current_ = std::move(applied);
  }
  emit(outcome.ok() ? WatchEvent::kApplied : WatchEvent::kRejected, failure);
  if (!options_.report) return;
  if (absl::Status reported = Report(projection.policy_digest(), failure); !reported.ok()) {
    emit(WatchEvent::kReportFailed, std::string(reported.message()));
  }
}

absl::Status SandboxClient::Watch(const ApplyFn& apply, const EventFn& on_event) {
  std::mt19937_64 random(std::random_device{}());
  std::chrono::milliseconds backoff = options_.initial_backoff;
  for (;;) {
    grpc::ClientContext context;  // no deadline: a watch lasts
    context.AddMetadata("authorization", absl::StrCat("Bearer ", options_.handle));
    {
      absl::MutexLock lock(&mu_);
      if (stopped_) return absl::OkStatus();
      watching_ = &context;
    }
    auto reader = stub_->WatchProjection(&context, gateway_v1::WatchProjectionRequest());
    driver_v1::Projection projection;
    bool connected = false;
    while (reader->Read(&projection)) {
      if (!connected) {
        connected = true;
        backoff = options_.initial_backoff;
        if (on_event) on_event({WatchEvent::kConnected, "", "", std::chrono::milliseconds(0)});
      }
      Handle(projection, apply, on_event);
    }
    const grpc::Status status = reader->Finish();
    absl::MutexLock lock(&mu_);
    watching_ = nullptr;
    if (stopped_) return absl::OkStatus();
    if (status.error_code() == grpc::StatusCode::UNAUTHENTICATED) return FromGrpc(status);
    // Full jitter over [backoff/2, backoff]: replicas of a restarted gateway are not all hit at once.
    const auto wait = std::chrono::milliseconds(
        backoff.count() / 2 + static_cast<int64_t>(random() % static_cast<uint64_t>(backoff.count() / 2 + 1)));
    if (on_event) {
      mu_.Unlock();
      on_event({WatchEvent::kDisconnected, "", FromGrpc(status).ToString(), wait});
      mu_.Lock();
    }
    const absl::Time until = absl::Now() + absl::FromChrono(wait);
    while (!stopped_ && !stop_cv_.WaitWithDeadline(&mu_, until)) {
    }
    if (stopped_) return absl::OkStatus();
    backoff = std::min(backoff * 2, options_.max_backoff);
  }
}

void SandboxClient::Stop() {
  absl::MutexLock lock(&mu_);
  stopped_ = true;
  if (watching_ != nullptr) watching_->TryCancel();
  stop_cv_.SignalAll();
}

}  // namespace osh::sandbox_client
