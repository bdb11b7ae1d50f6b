// A reusable PolicyDriver server for the drivers shipped in this tree (null-policy-driver, the example
// signing driver): handles, capabilities, projection envelopes (digest, optional context binding,
// version, expiry, signature) and serving on a 0600 Unix socket. A driver supplies only its policy
// source. Not used by the gateway.
//
// Thread-safe: the gRPC callback threads call the source concurrently.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "openshell/policy/driver/v1/driver.grpc.pb.h"
#include "openshell/sandbox/v1/sandbox.pb.h"
#include "trust/keys.h"

namespace osh::driver_kit {

namespace driver_v1 = openshell::policy::driver::v1;

// What a driver's source says for one context.
struct SourcedPolicy {
  openshell::sandbox::v1::SandboxPolicy policy;
  uint64_t version = 0;                         // 0: unversioned
  std::map<std::string, std::string> audit_context;
};

// The policy for a context; an error becomes no_verified_policy at GetProjection.
using PolicySource = std::function<absl::StatusOr<SourcedPolicy>(const driver_v1::RuntimeContext&)>;
// Whether the driver serves a context at all, asked at AcquireHandle (cheap: no policy is built).
// An error refuses the handle with PERMISSION_DENIED. Unset: every well-formed context is served.
using SubjectCheck = std::function<absl::Status(const driver_v1::RuntimeContext&)>;

struct DriverOptions {
  std::string driver_name;
  std::string driver_version;
  std::optional<trust::PrivateKey> signing_key;  // unset: projections are unsigned
  std::string signing_key_id;
  bool bind_context = true;       // set context_digest
  bool versioned = true;          // the source states versions (> 0): advertise the policy_version feature
  int64_t expires_in_s = 0;       // 0: projections never expire
  // "": none; else the live handle table is rewritten here on each change and read back at start, so
  // handles survive a restart of the driver. One line a handle, four fields separated by one space:
  // handle, the sandbox id with spaces, controls and '%' percent-encoded (for people: the context holds
  // it), base64url of the serialized
  // context, idempotency key ("-" for none). Written 0600, flushed and renamed into place; a line that is
  // not four fields is skipped alone (logged with its line number).
  std::string handles_file;
  // false: one handle per context (acquiring again returns it). true: a new handle on every call
  // (SPEC allows that), except for a repeated idempotency key.
  bool handle_per_acquire = false;
  bool honour_idempotency_key = true;  // false: ignore the key (for tests of a driver that does)
};

class DriverService final : public driver_v1::PolicyDriver::CallbackService {
 public:
  DriverService(DriverOptions options, PolicySource source, SubjectCheck serves = nullptr);

  grpc::ServerUnaryReactor* GetCapabilities(grpc::CallbackServerContext* ctx, const driver_v1::GetCapabilitiesRequest*,
                                            driver_v1::Capabilities* response) override;
  grpc::ServerUnaryReactor* AcquireHandle(grpc::CallbackServerContext* ctx, const driver_v1::AcquireHandleRequest* request,
                                          driver_v1::AcquireHandleResponse* response) override;
  grpc::ServerUnaryReactor* GetProjection(grpc::CallbackServerContext* ctx, const driver_v1::GetProjectionRequest* request,
                                          driver_v1::GetProjectionResponse* response) override;
  grpc::ServerUnaryReactor* ReleaseHandle(grpc::CallbackServerContext* ctx, const driver_v1::ReleaseHandleRequest* request,
                                          driver_v1::ReleaseHandleResponse* response) override;

  // Builds the envelope for `sourced`, bound to `context`, signed when a key is configured.
  absl::StatusOr<driver_v1::Projection> Envelope(const SourcedPolicy& sourced, const driver_v1::RuntimeContext& context) const;

 private:
  void WriteHandlesFileLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReadHandlesFile();
  // Records a new live handle (and its key, when honoured).
  void AddHandleLocked(const std::string& handle, const driver_v1::RuntimeContext& context, const std::string& key)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const DriverOptions options_;
  const PolicySource source_;
  const SubjectCheck serves_;
  absl::Mutex mu_;
  std::map<std::string, driver_v1::RuntimeContext> handles_ ABSL_GUARDED_BY(mu_);  // handle -> context
  std::map<std::string, std::string> by_context_ ABSL_GUARDED_BY(mu_);            // context digest -> handle
  std::map<std::string, std::string> by_key_ ABSL_GUARDED_BY(mu_);                // idempotency key -> handle
  std::map<std::string, std::string> key_of_ ABSL_GUARDED_BY(mu_);                // handle -> idempotency key
  // With expires_in_s: when each (context, policy digest, version) was last issued. The same projection is
  // answered (issued_at and expires_at kept) until half its lifetime is gone: a new expiry on every call
  // made every refresh a new projection — a commit, an audit event and a push to watchers per poll.
  mutable absl::Mutex issued_mu_;
  mutable std::map<std::string, int64_t> issued_ ABSL_GUARDED_BY(issued_mu_);
};

// Finishes a unary callback call with `status` (its default reactor); returns the reactor to hand back.
grpc::ServerUnaryReactor* Finish(grpc::CallbackServerContext* ctx, grpc::Status status);

// Serves `service` on a Unix socket created 0600 (a stale socket is replaced only if nothing listens).
// `socket_group` (a name or gid, "" none): the socket is 0660 for that group instead of 0600, so a gateway
// running as another user in that group can connect (docs/driver-contract.md §1).
absl::StatusOr<std::unique_ptr<grpc::Server>> ServeOnUnixSocket(const std::string& path, grpc::Service* service,
                                                                const std::string& socket_group = "");

// Blocks until SIGTERM or SIGINT (which must be blocked in every thread, see BlockStopSignals), then
// shuts the server down.
void RunUntilStopped(grpc::Server* server, const std::string& name);
// Blocks SIGTERM/SIGINT in the calling thread (call first thing in main, before any thread starts).
void BlockStopSignals();

// Reads a PEM private key file.
absl::StatusOr<trust::PrivateKey> LoadPrivateKey(const std::string& path);

}  // namespace osh::driver_kit
