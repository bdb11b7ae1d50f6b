// broken-policy-driver: a real PolicyDriver gRPC server for the conformance harness's tests. With no
// --violate it is conformant (it builds envelopes with the driver kit); each --violate NAME breaks one
// rule of the contract, so a test can see that the harness reports exactly that rule.
#include <algorithm>
#include <iostream>
#include <map>
#include <set>

#include <CLI/CLI.hpp>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "drivers/driver_kit/driver_service.h"
#include "policy/body_codec.h"
#include "policy/digest.h"
#include "policy/policy_file.h"
#include "trust/encoding.h"

namespace {

namespace drv = openshell::policy::driver::v1;
using osh::driver_kit::Finish;
namespace kit = osh::driver_kit;

const std::set<std::string> kViolations = {
    "api_version",       // claims api_version 2
    "surface",           // supports only another surface
    "accept_empty",      // hands out a handle for an empty context
    "no_policy",         // answers no_verified_policy for every handle
    "digest",            // policy_digest is not the SHA-256 of the body
    "unknown_field",     // the body carries a field the schema does not have
    "invalid_policy",    // the body fails schema validation
    "bad_signature",     // the signature does not verify
    "wrong_context",     // context_digest is another context's
    "expired",           // expires_at_unix is an hour ago
    "rollback",          // policy_version goes down on every call
    "any_handle",        // serves a projection for an unknown handle instead of NOT_FOUND
    "strict_fields",     // refuses requests that carry unknown fields
    "shared_handle",     // one handle for every context, bound to the first
    "release_twice",     // a second release of a handle is FAILED_PRECONDITION
    "release_unknown",   // releasing an unknown handle is INTERNAL
    "many_features",     // lists 300 features: more than the gateway accepts at start
    "long_handle",       // hands out handles of 5,000 bytes: longer than the gateway keeps
    // Allowed by the contract, reported as warnings (exit 0):
    "ignore_key",        // ignores idempotency keys (a new handle per call) and does not claim idempotent_acquire
    "unexpiring",        // claims the expiry feature but serves expires_at_unix = 0
    "no_name",           // empty driver_name
};

bool HasUnknownFields(const google::protobuf::Message& message) {
  return !message.GetReflection()->GetUnknownFields(message).empty();
}

class BrokenDriver final : public drv::PolicyDriver::CallbackService {
 public:
  BrokenDriver(std::set<std::string> violations, kit::DriverOptions options, kit::SourcedPolicy sourced)
      : violations_(std::move(violations)), signing_key_(options.signing_key),
        envelope_(std::move(options), nullptr), sourced_(std::move(sourced)) {}

  grpc::ServerUnaryReactor* GetCapabilities(grpc::CallbackServerContext* ctx, const drv::GetCapabilitiesRequest* request,
                                            drv::Capabilities* out) override {
    if (Breaks("strict_fields") && HasUnknownFields(*request)) return Finish(ctx, {grpc::StatusCode::INVALID_ARGUMENT, "unknown field"});
    out->set_driver_name(Breaks("no_name") ? "" : "broken-policy-driver");
    out->set_driver_version("test");
    out->set_api_version(Breaks("api_version") ? 2 : 1);
    out->add_supported_surfaces(Breaks("surface") ? "other.surface.v1" : "openshell.sandbox.v1");
    out->set_signs_projections(signing_key_.has_value());
    out->add_features("policy_version");
    out->add_features("context_binding");
    out->add_features("expiry");
    if (!Breaks("ignore_key")) out->add_features("idempotent_acquire");
    for (int i = 0; Breaks("many_features") && i < 300; ++i) out->add_features(absl::StrCat("feature-", i));
    return Finish(ctx, grpc::Status::OK);
  }

  grpc::ServerUnaryReactor* AcquireHandle(grpc::CallbackServerContext* ctx, const drv::AcquireHandleRequest* request,
                                          drv::AcquireHandleResponse* out) override {
    if (Breaks("strict_fields") && (HasUnknownFields(*request) || HasUnknownFields(request->context()))) {
      return Finish(ctx, {grpc::StatusCode::INVALID_ARGUMENT, "unknown field"});
    }
    const auto& context = request->context();
    if ((context.sandbox_id().empty() || context.user_subject().empty()) && !Breaks("accept_empty")) {
      return Finish(ctx, {grpc::StatusCode::INVALID_ARGUMENT, "context.sandbox_id and context.user_subject are required"});
    }
    absl::MutexLock lock(&mu_);
    const std::string& key = request->idempotency_key();
    if (!key.empty() && !Breaks("ignore_key")) {
      if (auto it = by_key_.find(key); it != by_key_.end() && handles_.count(it->second) > 0) {
        out->set_handle(it->second);
        return Finish(ctx, grpc::Status::OK);
      }
    }
    std::string handle = Breaks("shared_handle") ? "h-shared" : absl::StrCat("h-", ++next_);
    if (Breaks("long_handle")) handle += std::string(5000, 'x');
    handles_.emplace(handle, context);  // shared: stays bound to the first context
    if (!key.empty() && !Breaks("ignore_key")) by_key_[key] = handle;
    out->set_handle(handle);
    return Finish(ctx, grpc::Status::OK);
  }

  grpc::ServerUnaryReactor* GetProjection(grpc::CallbackServerContext* ctx, const drv::GetProjectionRequest* request,
                                          drv::GetProjectionResponse* out) override {
    drv::RuntimeContext context;
    uint64_t call = 0;
    {
      absl::MutexLock lock(&mu_);
      auto it = handles_.find(request->handle());
      if (it == handles_.end() && !Breaks("any_handle")) return Finish(ctx, {grpc::StatusCode::NOT_FOUND, "unknown handle"});
      if (it != handles_.end()) context = it->second;
      call = ++projections_;
    }
    if (Breaks("no_policy")) {
      out->mutable_no_verified_policy()->set_reason("nothing to vouch for");
      return Finish(ctx, grpc::Status::OK);
    }
    kit::SourcedPolicy sourced = sourced_;
    if (Breaks("invalid_policy")) sourced.policy.mutable_process()->set_run_as_user("root");
    if (Breaks("rollback")) sourced.version = 1000 - call;
    if (Breaks("wrong_context")) context.set_sandbox_id(context.sandbox_id() + "-other");
    auto projection = envelope_.Envelope(sourced, context);
    if (!projection.ok()) return Finish(ctx, {grpc::StatusCode::INTERNAL, std::string(projection.status().message())});
    drv::Projection& p = *projection;
    if (Breaks("unknown_field")) {
      openshell::sandbox::v1::SandboxPolicy policy = sourced.policy;
      policy.GetReflection()->MutableUnknownFields(&policy)->AddVarint(4242, 1);
      const std::string body = policy.SerializeAsString();
      p.set_body(body);
      p.set_policy_digest(osh::policy::Sha256Hex(body));
      Resign(&p);
    }
    if (Breaks("expired")) {
      p.set_issued_at_unix(p.issued_at_unix() - 7200);
      p.set_expires_at_unix(p.issued_at_unix() + 3600);
      Resign(&p);
    }
    if (Breaks("unexpiring")) {
      p.set_expires_at_unix(0);
      Resign(&p);
    }
    if (Breaks("digest")) {
      p.set_policy_digest(osh::policy::Sha256Hex(p.body() + "x"));
      Resign(&p);
    }
    if (Breaks("bad_signature") && !p.signature().empty()) {
      std::string signature = p.signature();
      signature[0] = static_cast<char>(signature[0] ^ 0x01);
      p.set_signature(signature);
    }
    *out->mutable_projection() = std::move(p);
    return Finish(ctx, grpc::Status::OK);
  }

  grpc::ServerUnaryReactor* ReleaseHandle(grpc::CallbackServerContext* ctx, const drv::ReleaseHandleRequest* request,
                                          drv::ReleaseHandleResponse*) override {
    absl::MutexLock lock(&mu_);
    if (handles_.erase(request->handle()) > 0) {
      released_.insert(request->handle());
      return Finish(ctx, grpc::Status::OK);
    }
    if (released_.count(request->handle()) > 0) {
      if (Breaks("release_twice")) return Finish(ctx, {grpc::StatusCode::FAILED_PRECONDITION, "already released"});
      return Finish(ctx, grpc::Status::OK);
    }
    if (Breaks("release_unknown")) return Finish(ctx, {grpc::StatusCode::INTERNAL, "no such handle"});
    return Finish(ctx, grpc::Status::OK);
  }

 private:
  bool Breaks(const std::string& rule) const { return violations_.count(rule) > 0; }
  // After a deliberate change to a signed field, signs again so only the intended rule is broken.
  void Resign(drv::Projection* p) const {
    if (!signing_key_) return;
    auto signature = signing_key_->Sign(osh::trust::SignedBytes(*p));
    if (signature.ok()) p->set_signature(*signature);
  }

  const std::set<std::string> violations_;
  const std::optional<osh::trust::PrivateKey> signing_key_;
  const kit::DriverService envelope_;  // builds conformant envelopes; never served itself
  const kit::SourcedPolicy sourced_;
  absl::Mutex mu_;
  uint64_t next_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t projections_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, drv::RuntimeContext> handles_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> by_key_ ABSL_GUARDED_BY(mu_);  // idempotency key -> handle
  std::set<std::string> released_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

int main(int argc, char** argv) {
  kit::BlockStopSignals();
  CLI::App app{"broken-policy-driver: a PolicyDriver that breaks chosen rules of the contract, for tests"};
  std::string socket, policy_path, key_path, key_id;
  std::vector<std::string> violations;
  app.add_option("--socket", socket, "Unix socket")->required();
  app.add_option("--policy", policy_path, "policy file served to every context")->required();
  app.add_option("--key", key_path, "PEM private key to sign with");
  app.add_option("--key-id", key_id, "its trust-store key id");
  app.add_option("--violate", violations, "a rule to break (repeatable)")
      ->check(CLI::IsMember(std::vector<std::string>(kViolations.begin(), kViolations.end())));
  CLI11_PARSE(app, argc, argv);

  auto policy = osh::policy::LoadPolicyFile(policy_path);
  if (!policy.ok()) {
    std::cerr << "broken-policy-driver: " << policy.status().message() << "\n";
    return 2;
  }
  kit::DriverOptions options;
  options.driver_name = "broken-policy-driver";
  options.signing_key_id = key_id;
  options.expires_in_s = 3600;
  if (!key_path.empty()) {
    auto loaded = kit::LoadPrivateKey(key_path);
    if (!loaded.ok()) {
      std::cerr << "broken-policy-driver: " << loaded.status().message() << "\n";
      return 2;
    }
    options.signing_key = *std::move(loaded);
  }
  BrokenDriver service({violations.begin(), violations.end()}, std::move(options), {*policy, 7, {{"driver", "broken"}}});
  auto server = kit::ServeOnUnixSocket(socket, &service);
  if (!server.ok()) {
    std::cerr << "broken-policy-driver: " << server.status().message() << "\n";
    return 1;
  }
  kit::RunUntilStopped(server->get(), "broken-policy-driver");
  return 0;
}
