#include "drivers/conformance/conformance.h"

#include <grpcpp/grpcpp.h>
#include <openssl/rand.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "drivers/remote_driver.h"
#include "openshell/policy/driver/v1/driver.grpc.pb.h"
#include "policy/body_codec.h"
#include "policy/digest.h"
#include "policy/validation.h"
#include "trust/encoding.h"
#include "trust/projection_check.h"

namespace osh::conformance {
namespace {

namespace driver_v1 = openshell::policy::driver::v1;
using conformance_v1::Outcome;

constexpr char kSandboxSurface[] = "openshell.sandbox.v1";
constexpr int kUnknownFieldNumber = 4242;  // no message of the contract uses it

// Every check, in report order: id, the rule it holds the driver to, and where the rule is written.
struct CheckSpec {
  const char* id;
  const char* title;
  const char* spec;
};
constexpr CheckSpec kChecks[] = {
    {"socket", "a Unix socket, not a symlink, not writable by others, owned by root, you or --socket-owner",
     "§1"},
    {"capabilities.call", "GetCapabilities answers", "§2.1"},
    {"capabilities.api_version", "api_version is 1 (anything else: the gateway refuses to start)", "§2.1"},
    {"capabilities.identity", "driver_name is set (operators see it in status and audit)", "§2.1"},
    {"capabilities.surface",
     "supported_surfaces includes the surface under test (no overlap: the gateway refuses to start)", "§2.1"},
    {"capabilities.signing", "signs_projections is true when a trust store is in force", "§6"},
    {"acquire.valid", "AcquireHandle for a well-formed context returns a handle", "§2.2"},
    {"acquire.malformed", "AcquireHandle refuses an empty context with INVALID_ARGUMENT", "§2.2"},
    {"acquire.repeat", "acquiring twice for the same context works; both handles serve", "§2.2"},
    {"acquire.idempotency", "the same idempotency key returns the same live handle (optional: warn when ignored)",
     "§2.2"},
    {"projection.result", "GetProjection for the handle returns a projection", "§2.3"},
    {"projection.surface", "surface_id is the surface asked for", "§3"},
    {"projection.digest", "policy_digest is 64 lowercase hex and the SHA-256 of body", "§3"},
    {"projection.body", "body parses with no unknown fields and passes validation", "§3"},
    {"projection.signature", "signatures verify under the trust store (threshold, revocation, windows)",
     "§3, §4"},
    {"projection.context_binding", "context_digest, when set, is the digest of the handle's context",
     "§3, §5"},
    {"projection.expiry", "a stated expiry is in the future, issued_at is not", "§3"},
    {"projection.version", "policy_version never goes backwards for a handle", "§3"},
    {"projection.unknown_handle", "GetProjection for an unknown handle is NOT_FOUND", "§2.3"},
    {"wire.unknown_fields", "requests carrying fields from a newer contract are accepted", "§2.5"},
    {"concurrency", "concurrent clients each get a sound projection for their own context", "§2.3"},
    {"connection.drop", "handles outlive the connection that acquired them; a dropped call harms nothing",
     "§2.2"},
    {"release.idempotent", "ReleaseHandle succeeds, and again for the same handle", "§2.4"},
    {"release.unknown", "ReleaseHandle for an unknown handle is OK or NOT_FOUND", "§2.4"},
    {"restart.handles", "handles survive a restart of the driver (with --restart-cmd)", "§2.2"},
};

const CheckSpec& SpecOf(absl::string_view id) {
  for (const auto& check : kChecks) {
    if (id == check.id) return check;
  }
  std::abort();  // a check id missing from kChecks is a programming error
}

std::string RandomHex(size_t bytes) {
  std::string raw(bytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), static_cast<int>(bytes)) != 1) std::abort();
  return absl::BytesToHexString(raw);
}

std::string Describe(const grpc::Status& status) {
  return absl::StrCat(absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code())),
                      status.error_message().empty() ? "" : ": ", status.error_message());
}

bool HasFeature(const driver_v1::Capabilities& caps, const std::string& feature) {
  return std::find(caps.features().begin(), caps.features().end(), feature) != caps.features().end();
}

// Whether a projection is internally sound for `context`: its digest recomputes and, when bound, it is
// bound to this very context. "" when sound, else why not.
std::string SoundFor(const driver_v1::GetProjectionResponse& response, const driver_v1::RuntimeContext& context) {
  if (!response.has_projection())
    return absl::StrCat("no projection (no_verified_policy: ", response.no_verified_policy().reason(), ")");
  const auto& p = response.projection();
  if (policy::Sha256Hex(p.body()) != p.policy_digest()) return "policy_digest is not the SHA-256 of the body";
  if (!p.context_digest().empty() && p.context_digest() != trust::ContextDigest(context)) {
    return absl::StrCat("bound to another context than sandbox '", context.sandbox_id(), "'");
  }
  return "";
}

class Harness {
 public:
  explicit Harness(const ConformanceOptions& options) : options_(options) {
    context_ = options.context;
    if (context_.sandbox_id().empty()) context_.set_sandbox_id(absl::StrCat("conformance-", RandomHex(6)));
  }

  absl::StatusOr<conformance_v1::Report> Run() {
    report_.set_socket(options_.socket);
    report_.set_surface(options_.surface);
    report_.set_trust_store(options_.trust_store != nullptr);
    if (absl::Status s = CheckSocket(); !s.ok()) return s;
    auto channel = NewChannel();
    if (!channel->WaitForConnected(Deadline(options_.connect_timeout_ms))) {
      return absl::UnavailableError(
          absl::StrCat("nothing answers on ", options_.socket, " within ", options_.connect_timeout_ms, " ms"));
    }
    stub_ = driver_v1::PolicyDriver::NewStub(channel);
    CheckCapabilities();
    CheckAcquire();
    CheckIdempotency();
    CheckProjection();
    CheckUnknownHandle();
    CheckUnknownFields();
    CheckConcurrency();
    CheckDroppedConnection();
    CheckRestart();
    CheckRelease();
    for (const auto& handle : extra_handles_) Release(*stub_, handle);
    for (const auto& check : report_.checks()) {
      if (check.outcome() == conformance_v1::PASS) report_.set_passed(report_.passed() + 1);
      if (check.outcome() == conformance_v1::FAIL) report_.set_failed(report_.failed() + 1);
      if (check.outcome() == conformance_v1::SKIPPED) report_.set_skipped(report_.skipped() + 1);
      if (check.outcome() == conformance_v1::WARN) report_.set_warnings(report_.warnings() + 1);
    }
    return report_;
  }

 private:
  // --- plumbing ------------------------------------------------------------------------------------
  std::chrono::system_clock::time_point Deadline(int64_t ms) const {
    return std::chrono::system_clock::now() + std::chrono::milliseconds(ms);
  }
  // A channel of its own: a distinct argument keeps gRPC from sharing a connection between channels.
  // Thread-safe.
  std::shared_ptr<grpc::Channel> NewChannel() {
    grpc::ChannelArguments args;
    args.SetInt("osh.conformance_connection", ++connections_);
    // A driver restarting (restart.handles) comes back within a fraction of a second: retry that often.
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 500);
    return grpc::CreateCustomChannel(absl::StrCat("unix:", options_.socket), grpc::InsecureChannelCredentials(), args);
  }
  std::unique_ptr<grpc::ClientContext> Call() const {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(Deadline(options_.call_timeout_ms));
    return ctx;
  }
  grpc::Status Acquire(driver_v1::PolicyDriver::Stub& stub, const driver_v1::AcquireHandleRequest& request,
                       std::string* handle) const {
    driver_v1::AcquireHandleResponse response;
    grpc::Status status = stub.AcquireHandle(Call().get(), request, &response);
    *handle = response.handle();
    return status;
  }
  grpc::Status Acquire(driver_v1::PolicyDriver::Stub& stub, const driver_v1::RuntimeContext& context,
                       std::string* handle) const {
    driver_v1::AcquireHandleRequest request;
    *request.mutable_context() = context;
    return Acquire(stub, request, handle);
  }
  grpc::Status Get(driver_v1::PolicyDriver::Stub& stub, const std::string& handle,
                   driver_v1::GetProjectionResponse* response) const {
    driver_v1::GetProjectionRequest request;
    request.set_handle(handle);
    request.set_surface_id(options_.surface);
    return stub.GetProjection(Call().get(), request, response);
  }
  grpc::Status Release(driver_v1::PolicyDriver::Stub& stub, const std::string& handle) const {
    driver_v1::ReleaseHandleRequest request;
    request.set_handle(handle);
    driver_v1::ReleaseHandleResponse response;
    return stub.ReleaseHandle(Call().get(), request, &response);
  }

  void Add(const char* id, Outcome outcome, std::string detail) {
    const CheckSpec& spec = SpecOf(id);
    auto* check = report_.add_checks();
    check->set_id(spec.id);
    check->set_title(spec.title);
    check->set_spec(spec.spec);
    check->set_outcome(outcome);
    check->set_detail(std::move(detail));
  }
  // PASS with `pass_detail` when `failure` is empty, else FAIL with it.
  void Verdict(const char* id, const std::string& failure, std::string pass_detail) {
    Add(id, failure.empty() ? conformance_v1::PASS : conformance_v1::FAIL,
        failure.empty() ? std::move(pass_detail) : failure);
  }
  // FAIL for a contract violation; else WARN for a `features` claim not honoured (features are
  // informational, SPEC §3.1); else PASS.
  void Verdict(const char* id, const std::string& failure, const std::string& unhonoured_claim, std::string pass_detail) {
    if (!failure.empty() || unhonoured_claim.empty()) return Verdict(id, failure, std::move(pass_detail));
    Add(id, conformance_v1::WARN, unhonoured_claim);
  }

  // --- checks --------------------------------------------------------------------------------------
  absl::Status CheckSocket() {
    const absl::Status status = drivers::CheckDriverSocket(options_.socket, options_.socket_owner);
    if (absl::IsNotFound(status)) return status;
    Verdict("socket", std::string(status.message()), "a Unix socket the gateway will connect to");
    return absl::OkStatus();
  }

  void CheckCapabilities() {
    driver_v1::GetCapabilitiesRequest request;
    request.set_gateway_version("policy-driver-conformance " OSH_VERSION);
    request.add_accepted_surfaces(options_.surface);
    grpc::Status status = stub_->GetCapabilities(Call().get(), request, &caps_);
    std::string call_failure = status.ok() ? "" : Describe(status);
    if (status.ok()) {
      // What the gateway itself refuses at start (sizes, counts, names, control characters): checked by the
      // gateway's own rule, once api_version and the surface (their own checks) are right (review 109).
      const auto& offered = caps_.supported_surfaces();
      if (caps_.api_version() == 1 && std::find(offered.begin(), offered.end(), options_.surface) != offered.end()) {
        if (absl::Status bounded = drivers::CheckCapabilities(caps_, {options_.surface}); !bounded.ok()) {
          call_failure = absl::StrCat("the gateway refuses these capabilities: ", bounded.message());
        }
      }
    }
    Verdict("capabilities.call", call_failure, "answered");
    report_.set_driver_name(caps_.driver_name());
    report_.set_driver_version(caps_.driver_version());
    if (!status.ok()) caps_.Clear();
    Verdict("capabilities.api_version",
            caps_.api_version() == 1 ? "" : absl::StrCat("api_version ", caps_.api_version()), "api_version 1");
    // The contract does not require a name: operators see it in status and audit, so WARN (review 109).
    Verdict("capabilities.identity", "",
            caps_.driver_name().empty() ? "driver_name is empty: status and audit events name no driver" : "",
            absl::StrCat(caps_.driver_name(), " ", caps_.driver_version()));
    const auto& surfaces = caps_.supported_surfaces();
    Verdict("capabilities.surface",
            std::find(surfaces.begin(), surfaces.end(), options_.surface) != surfaces.end()
                ? ""
                : absl::StrCat("supported_surfaces [", absl::StrJoin(surfaces, ", "), "] lacks ", options_.surface),
            absl::StrCat("[", absl::StrJoin(surfaces, ", "), "]"));
    if (options_.trust_store == nullptr) {
      Add("capabilities.signing", conformance_v1::SKIPPED,
          caps_.signs_projections() ? "the driver signs; give --trust-store to verify its signatures"
                                    : "no --trust-store (the driver does not sign)");
    } else {
      Verdict("capabilities.signing",
              caps_.signs_projections() ? "" : "signs_projections is false, but the trust store requires signatures",
              "signs_projections");
    }
  }

  void CheckAcquire() {
    grpc::Status status = Acquire(*stub_, context_, &handle_);
    if (status.ok()) {
      // The gateway's own rule for a handle it keeps (empty, longer than it stores, a NUL byte): review 109.
      if (absl::Status kept = drivers::CheckDriverHandle(handle_); !kept.ok()) {
        status = grpc::Status(grpc::StatusCode::INTERNAL, absl::StrCat("a handle the gateway refuses: ", kept.message()));
      }
    }
    Verdict("acquire.valid",
            status.ok() ? ""
                        : absl::StrCat(Describe(status), " (for sandbox '", context_.sandbox_id(), "', subject '",
                                       context_.user_subject(), "': pick a --subject the driver serves)"),
            absl::StrCat("handle for sandbox '", context_.sandbox_id(), "'"));
    if (!status.ok()) handle_.clear();

    // Malformed: an empty context, and no context at all.
    std::string failure;
    driver_v1::AcquireHandleRequest empty_context;
    empty_context.mutable_context();  // present, with nothing in it
    const driver_v1::AcquireHandleRequest no_context;
    for (const driver_v1::AcquireHandleRequest* request :
         std::initializer_list<const driver_v1::AcquireHandleRequest*>{&empty_context, &no_context}) {
      std::string handle;
      const grpc::Status refused = Acquire(*stub_, *request, &handle);
      if (refused.ok()) extra_handles_.push_back(handle);
      if (refused.error_code() != grpc::StatusCode::INVALID_ARGUMENT && failure.empty()) {
        failure = absl::StrCat(request->has_context() ? "an empty context" : "a request without a context", " got ",
                               refused.ok() ? absl::StrCat("a handle '", handle, "'") : Describe(refused),
                               ", not INVALID_ARGUMENT");
      }
    }
    Verdict("acquire.malformed", failure, "INVALID_ARGUMENT for an empty context and for none");

    if (handle_.empty()) {
      Add("acquire.repeat", conformance_v1::SKIPPED, "needs a handle (acquire.valid failed)");
      return;
    }
    std::string again;
    status = Acquire(*stub_, context_, &again);
    driver_v1::GetProjectionResponse response;
    if (status.ok() && again != handle_) {
      extra_handles_.push_back(again);
      status = Get(*stub_, again, &response);
    }
    Verdict("acquire.repeat", status.ok() ? "" : Describe(status),
            again == handle_ ? "the same handle again" : "a second, working handle");
  }

  // Same key, same live handle (what lets a gateway that crashed mid-admission release exactly the
  // handle it got). Different keys may give the same handle only when the driver hands out one handle
  // per context anyway. Optional: a driver that ignores keys is warned, with what it risks.
  void CheckIdempotency() {
    if (handle_.empty()) {
      Add("acquire.idempotency", conformance_v1::SKIPPED, "needs a handle (acquire.valid failed)");
      return;
    }
    auto acquire = [&](const std::string& key, std::string* handle) {
      driver_v1::AcquireHandleRequest request;
      *request.mutable_context() = context_;
      request.set_idempotency_key(key);
      const grpc::Status status = Acquire(*stub_, request, handle);
      if (status.ok() && *handle != handle_ &&
          std::find(extra_handles_.begin(), extra_handles_.end(), *handle) == extra_handles_.end()) {
        extra_handles_.push_back(*handle);
      }
      return status;
    };
    const std::string k1 = absl::StrCat("conformance-", RandomHex(8)), k2 = absl::StrCat("conformance-", RandomHex(8));
    std::string first, again, other, plain;
    grpc::Status status = acquire(k1, &first);
    if (status.ok()) status = acquire(k1, &again);
    if (status.ok()) status = acquire(k2, &other);
    if (status.ok()) status = Acquire(*stub_, context_, &plain);
    if (status.ok() && plain != handle_) extra_handles_.push_back(plain);
    const bool claimed = HasFeature(caps_, "idempotent_acquire");
    if (!status.ok()) return Verdict("acquire.idempotency", Describe(status), "");
    const bool per_context = plain == handle_;  // one handle per context: keys cannot tell admissions apart
    if (first != again) {
      return Add("acquire.idempotency", conformance_v1::WARN,
                 absl::StrCat(claimed ? "features lists idempotent_acquire, but " : "",
                              "the same idempotency key gave two handles: after a gateway crash mid-admission, the "
                              "admission's handle can leak in the driver (SPEC §3.2)"));
    }
    if (!per_context && first == other) {
      return Add("acquire.idempotency", conformance_v1::WARN,
                 "two different idempotency keys gave the same handle while plain acquisitions get new ones: keys alias");
    }
    if (!claimed) {
      return Add("acquire.idempotency", conformance_v1::WARN,
                 "the same key gave the same handle, but features does not list idempotent_acquire, so the gateway "
                 "cannot rely on it and counts possible leaks");
    }
    Verdict("acquire.idempotency", "",
            per_context ? "one handle per context, whatever the key" : "the same handle per key, different per key");
  }

  // With --restart-cmd: a handle acquired before the driver restarts still serves after it.
  void CheckRestart() {
    if (options_.restart_command.empty()) {
      return Add("restart.handles", conformance_v1::SKIPPED, "no --restart-cmd");
    }
    if (handle_.empty()) return Add("restart.handles", conformance_v1::SKIPPED, "needs a handle (acquire.valid failed)");
    const int rc = std::system(options_.restart_command.c_str());
    if (rc != 0) {
      const std::string how = rc == -1              ? "could not be run"
                              : WIFEXITED(rc)       ? absl::StrCat("exited with status ", WEXITSTATUS(rc))
                              : WIFSIGNALED(rc)     ? absl::StrCat("was killed by signal ", WTERMSIG(rc))
                                                    : absl::StrCat("failed (wait status ", rc, ")");
      return Verdict("restart.handles", absl::StrCat("--restart-cmd ", how), "");
    }
    // Wait for the restarted driver to listen, on a fresh channel.
    std::shared_ptr<grpc::Channel> channel = NewChannel();
    channel->WaitForConnected(Deadline(options_.connect_timeout_ms));
    stub_ = driver_v1::PolicyDriver::NewStub(channel);
    driver_v1::GetProjectionResponse response;
    grpc::Status status;
    const auto until = Deadline(options_.connect_timeout_ms);
    do {
      status = Get(*stub_, handle_, &response);
      if (status.error_code() != grpc::StatusCode::UNAVAILABLE) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    } while (std::chrono::system_clock::now() < until);
    // A handle forgotten (NOT_FOUND) is allowed — persisting handles is a SHOULD (docs/driver-contract.md
    // §2.2) — and WARNs; anything else after the restart fails (review 109).
    const std::string after =
        absl::StrCat("after the restart the handle gets ", status.ok() ? "no projection" : Describe(status),
                     ": a gateway's admitted sandboxes would stop refreshing");
    const bool served = status.ok() && response.has_projection();
    const bool forgotten = status.error_code() == grpc::StatusCode::NOT_FOUND;
    Verdict("restart.handles", served || forgotten ? "" : after, forgotten ? after : "",
            "the handle serves after the restart");
  }

  void SkipProjectionChecks(const std::string& why) {
    for (const char* id : {"projection.surface", "projection.digest", "projection.body", "projection.signature",
                           "projection.context_binding", "projection.expiry", "projection.version"}) {
      Add(id, conformance_v1::SKIPPED, why);
    }
  }

  void CheckProjection() {
    if (handle_.empty()) {
      Add("projection.result", conformance_v1::SKIPPED, "needs a handle (acquire.valid failed)");
      SkipProjectionChecks("needs a projection");
      return;
    }
    driver_v1::GetProjectionResponse response;
    const grpc::Status status = Get(*stub_, handle_, &response);
    std::string failure = status.ok() ? "" : Describe(status);
    if (status.ok() && !response.has_projection()) {
      failure = absl::StrCat("no_verified_policy: ", response.no_verified_policy().reason(),
                             " (the gateway would refuse admission; pick a context the driver serves)");
    }
    Verdict("projection.result", failure, absl::StrCat(response.projection().body().size(), "-byte body"));
    if (!failure.empty()) {
      SkipProjectionChecks("needs a projection (projection.result failed)");
      return;
    }
    const driver_v1::Projection& p = response.projection();
    const int64_t now = absl::ToUnixSeconds(absl::Now());
    const int64_t skew = options_.clock_skew_s;

    Verdict("projection.surface",
            p.surface_id() == options_.surface
                ? ""
                : absl::StrCat("surface_id '", p.surface_id(), "', asked for '", options_.surface, "'"),
            p.surface_id());

    const std::string actual = policy::Sha256Hex(p.body());
    Verdict("projection.digest",
            !policy::IsLowercaseHexDigest(p.policy_digest())
                ? absl::StrCat("policy_digest '", p.policy_digest(), "' is not 64 lowercase hex characters")
            : p.policy_digest() != actual
                ? absl::StrCat("policy_digest ", p.policy_digest(), " but SHA-256 of the body is ", actual)
                : "",
            p.policy_digest());

    if (p.surface_id() != kSandboxSurface) {
      Add("projection.body", conformance_v1::SKIPPED,
          absl::StrCat("surface '", p.surface_id(), "' is not one this harness knows"));
    } else {
      std::string body_failure;
      auto parsed = policy::ParseBodyStrict(p.body());
      if (!parsed.ok()) {
        body_failure = std::string(parsed.status().message());
      } else if (auto violation = policy::FindViolation(*parsed)) {
        body_failure = absl::StrCat("invalid_policy: ", violation->path, ": ", violation->message);
      }
      Verdict("projection.body", body_failure, "a complete, valid openshell.sandbox.v1.SandboxPolicy");
    }

    if (options_.trust_store == nullptr) {
      Add("projection.signature", conformance_v1::SKIPPED, "no --trust-store");
    } else {
      const trust::CheckResult trust = trust::CheckSignatures(p, *options_.trust_store, now, skew);
      Verdict("projection.signature", trust.ok() ? "" : trust.Message(),
              absl::StrCat("verified by ", absl::StrJoin(trust.verified_key_ids, ", ")));
    }

    const bool binding_required = options_.trust_store != nullptr && options_.trust_store->require_context_binding();
    if (p.context_digest().empty() && !binding_required && !HasFeature(caps_, "context_binding")) {
      Add("projection.context_binding", conformance_v1::SKIPPED,
          "the driver does not bind projections (context_digest empty)");
    } else {
      std::string binding_failure, binding_claim;
      if (p.context_digest().empty()) {
        if (binding_required) {
          binding_failure = "context_digest is empty, but the trust store requires context binding";
        } else {
          binding_claim = "features lists context_binding, but context_digest is empty";
        }
      } else if (p.context_digest() != trust::ContextDigest(context_)) {
        binding_failure =
            "context_mismatch: context_digest is not the digest of the context the handle was acquired for";
      }
      Verdict("projection.context_binding", binding_failure, binding_claim, "bound to this context");
    }

    std::string expiry_failure, expiry_claim;
    if (p.expires_at_unix() != 0 && p.expires_at_unix() <= now - skew) {
      expiry_failure =
          absl::StrCat("expired: expires_at_unix ", p.expires_at_unix(), " is in the past (now ", now, ")");
    } else if (p.expires_at_unix() != 0 && p.issued_at_unix() != 0 && p.expires_at_unix() < p.issued_at_unix()) {
      expiry_failure = "expires_at_unix is before issued_at_unix";
    } else if (p.issued_at_unix() > now + skew) {
      // The gateway does not check it (SPEC §3.3): a clock to fix, not a projection refused (review 109).
      expiry_claim = absl::StrCat("issued_at_unix ", p.issued_at_unix(), " is in the future (now ", now,
                                  "): the driver's clock is ahead");
    } else if (p.expires_at_unix() == 0 && HasFeature(caps_, "expiry")) {
      expiry_claim = "features lists expiry, but expires_at_unix is 0 (never expires)";
    }
    Verdict("projection.expiry", expiry_failure, expiry_claim,
            p.expires_at_unix() == 0 ? "never expires" : absl::StrCat("expires in ", p.expires_at_unix() - now, " s"));

    driver_v1::GetProjectionResponse again;
    const grpc::Status second = Get(*stub_, handle_, &again);
    std::string version_failure, version_claim;
    if (!second.ok() || !again.has_projection()) {
      version_failure =
          absl::StrCat("a second GetProjection failed: ", second.ok() ? "no projection" : Describe(second));
    } else if (again.projection().policy_version() < p.policy_version()) {
      version_failure = absl::StrCat("rollback: policy_version went from ", p.policy_version(), " to ",
                                     again.projection().policy_version(), " between two calls");
    } else if (p.policy_version() == 0 && HasFeature(caps_, "policy_version")) {
      version_claim = "features lists policy_version, but policy_version is 0";
    }
    Verdict(
        "projection.version", version_failure, version_claim,
        p.policy_version() == 0 ? "unversioned (0)" : absl::StrCat("version ", again.projection().policy_version()));
  }

  void CheckUnknownHandle() {
    driver_v1::GetProjectionResponse response;
    const grpc::Status status = Get(*stub_, absl::StrCat("conformance-unknown-", RandomHex(8)), &response);
    Verdict("projection.unknown_handle",
            status.error_code() == grpc::StatusCode::NOT_FOUND
                ? ""
                : absl::StrCat("got ", status.ok() ? "OK" : Describe(status), ", not NOT_FOUND"),
            "NOT_FOUND");
  }

  void CheckUnknownFields() {
    std::string failure;
    auto note = [&](const char* method, const grpc::Status& status) {
      if (!status.ok() && failure.empty()) failure = absl::StrCat(method, " with an unknown field: ", Describe(status));
    };
    driver_v1::GetCapabilitiesRequest caps_request;
    caps_request.GetReflection()->MutableUnknownFields(&caps_request)->AddVarint(kUnknownFieldNumber, 1);
    driver_v1::Capabilities caps;
    note("GetCapabilities", stub_->GetCapabilities(Call().get(), caps_request, &caps));
    driver_v1::AcquireHandleRequest acquire;
    *acquire.mutable_context() = context_;
    acquire.GetReflection()->MutableUnknownFields(&acquire)->AddVarint(kUnknownFieldNumber, 1);
    acquire.mutable_context()
        ->GetReflection()
        ->MutableUnknownFields(acquire.mutable_context())
        ->AddLengthDelimited(kUnknownFieldNumber, "future");
    std::string handle;
    const grpc::Status acquired = Acquire(*stub_, acquire, &handle);
    note("AcquireHandle", acquired);
    if (acquired.ok() && !handle.empty() && handle != handle_) extra_handles_.push_back(handle);
    Verdict("wire.unknown_fields", failure, "GetCapabilities and AcquireHandle ignore unknown fields");
  }

  void CheckConcurrency() {
    const int clients = std::max(1, options_.clients), rounds = std::max(1, options_.rounds);
    absl::Mutex mu;
    std::string first_failure;
    std::atomic<int> calls{0};
    std::vector<std::thread> threads;
    for (int c = 0; c < clients; ++c) {
      threads.emplace_back([&, c] {
        auto stub = driver_v1::PolicyDriver::NewStub(NewChannel());
        for (int r = 0; r < rounds; ++r) {
          driver_v1::RuntimeContext context = context_;
          context.set_sandbox_id(absl::StrCat(context_.sandbox_id(), "-c", c, "-r", r));
          std::string handle, why;
          driver_v1::GetProjectionResponse response;
          if (grpc::Status s = Acquire(*stub, context, &handle); !s.ok())
            why = absl::StrCat("AcquireHandle: ", Describe(s));
          else if (grpc::Status g = Get(*stub, handle, &response); !g.ok())
            why = absl::StrCat("GetProjection: ", Describe(g));
          else
            why = SoundFor(response, context);
          if (why.empty()) {
            if (grpc::Status rel = Release(*stub, handle); !rel.ok())
              why = absl::StrCat("ReleaseHandle: ", Describe(rel));
          }
          calls += 3;
          if (!why.empty()) {
            absl::MutexLock lock(&mu);
            if (first_failure.empty())
              first_failure = absl::StrCat("client ", c, ", sandbox '", context.sandbox_id(), "': ", why);
          }
        }
      });
    }
    for (auto& t : threads) t.join();
    Verdict("concurrency", first_failure,
            absl::StrCat(clients, " clients x ", rounds, " rounds, ", calls.load(), " calls, each answer sound"));
  }

  void CheckDroppedConnection() {
    driver_v1::RuntimeContext context = context_;
    context.set_sandbox_id(absl::StrCat(context_.sandbox_id(), "-reconnect"));
    std::string handle;
    {
      auto first = driver_v1::PolicyDriver::NewStub(NewChannel());
      if (grpc::Status s = Acquire(*first, context, &handle); !s.ok()) {
        Verdict("connection.drop", absl::StrCat("AcquireHandle: ", Describe(s)), "");
        return;
      }
      // A call abandoned mid-flight: the client gives up at once and the connection goes with it.
      grpc::ClientContext abandoned;
      // 5 ms, not less: the request must leave (a deadline already past fails before anything is sent), and
      // the call is then abandoned, the driver perhaps still answering it (review 109).
      abandoned.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(5));
      driver_v1::GetProjectionRequest request;
      request.set_handle(handle);
      request.set_surface_id(options_.surface);
      driver_v1::GetProjectionResponse ignored;
      (void)first->GetProjection(&abandoned, request, &ignored);
    }  // the first connection is closed here
    auto second = driver_v1::PolicyDriver::NewStub(NewChannel());
    driver_v1::GetProjectionResponse response;
    std::string failure;
    if (grpc::Status s = Get(*second, handle, &response); !s.ok()) {
      failure = absl::StrCat("on a new connection, GetProjection for the handle: ", Describe(s));
    } else {
      failure = SoundFor(response, context);
    }
    if (grpc::Status s = Release(*second, handle);
        !s.ok() && s.error_code() != grpc::StatusCode::NOT_FOUND && failure.empty()) {
      failure = absl::StrCat("on a new connection, ReleaseHandle: ", Describe(s));
    }
    Verdict("connection.drop", failure, "the handle works on a new connection");
  }

  void CheckRelease() {
    auto released = [](const grpc::Status& s) { return s.ok() || s.error_code() == grpc::StatusCode::NOT_FOUND; };
    if (handle_.empty()) {
      Add("release.idempotent", conformance_v1::SKIPPED, "needs a handle (acquire.valid failed)");
    } else {
      const grpc::Status first = Release(*stub_, handle_);
      const grpc::Status second = Release(*stub_, handle_);
      Verdict("release.idempotent",
              !first.ok()         ? absl::StrCat("first release: ", Describe(first))
              : !released(second) ? absl::StrCat("second release: ", Describe(second), " (must be OK or NOT_FOUND)")
                                  : "",
              second.ok() ? "OK twice" : "OK, then NOT_FOUND");
    }
    const grpc::Status unknown = Release(*stub_, absl::StrCat("conformance-unknown-", RandomHex(8)));
    Verdict("release.unknown", released(unknown) ? "" : Describe(unknown), unknown.ok() ? "OK" : "NOT_FOUND");
  }

  const ConformanceOptions& options_;
  driver_v1::RuntimeContext context_;
  std::unique_ptr<driver_v1::PolicyDriver::Stub> stub_;
  driver_v1::Capabilities caps_;
  std::string handle_;                      // acquired for context_
  std::vector<std::string> extra_handles_;  // other handles this run acquired, released at the end
  std::atomic<int> connections_{0};         // numbers each connection (NewChannel is called from client threads)
  conformance_v1::Report report_;
};

}  // namespace

absl::StatusOr<conformance_v1::Report> RunConformance(const ConformanceOptions& options) {
  return Harness(options).Run();
}

}  // namespace osh::conformance
