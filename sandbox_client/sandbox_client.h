// The client library for sandbox supervisors: fetch and watch the sandbox's admitted projection from the
// gateway, verify it end to end before use, and report what became of it.
//
// Verification is the gateway's own check (SPEC §3.3, trust/projection_check.h) run again in the
// sandbox with the sandbox's inputs: its own copy of the trust store (signatures, threshold, key windows,
// revocation), its own runtime context (a context-bound projection must be bound to it; without a context
// a bound projection is refused, since it cannot be checked), the surfaces it accepts, expiry and no
// rollback below the highest version applied — kept in a state file across restarts when one is given.
// Without a trust store the digest, surface, body, context and expiry are still checked (verification "none").
//
// Watch() keeps the last good projection: a pushed projection that fails verification is never handed to
// the supervisor, and is reported FAILED with the reason; one the supervisor's `apply` refuses is reported
// FAILED with its message; LOADED is reported only for the digest that was verified and applied. A policy
// in force that reaches its expires_at_unix with no newer one is reported FAILED and, by default, withdrawn
// (fail closed). The stream is re-opened after a disconnect with capped exponential back-off (with jitter),
// which starts again from the beginning only after a stream stayed up a while; it ends for good on
// UNAUTHENTICATED (the handle was revoked or the sandbox deleted) or on Stop().
//
// Thread safety: Fetch, Report and current() may be called from any thread; one Watch at a time; Stop()
// from any thread ends it. Errors are absl::Status values naming what failed; nothing throws.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "openshell/policy/driver/v1/driver.pb.h"
#include "openshell/policy/gateway/v1/gateway.grpc.pb.h"
#include "openshell/sandbox/v1/sandbox.pb.h"
#include "sandbox_client/endpoint.h"
#include "sandbox_client/log_proof.h"

namespace osh::trust {
class TrustStore;
}

namespace osh::sandbox_client {

// The environment variable a supervisor may take its handle from (never argv: it would show in ps).
inline constexpr char kHandleVariable[] = "POLICY_GATEWAY_SANDBOX_HANDLE";

// The sandbox handle from `handle_file` (its first line) when given, else from kHandleVariable, which is
// then removed from this process's environment (whatever it held): programs the supervisor starts — the
// sandboxed workload among them — must not inherit the secret (review 113). Call it at start, before
// other threads read the environment (unsetenv is not thread-safe). INVALID_ARGUMENT naming the file or
// the variable when there is none or it is empty.
absl::StatusOr<std::string> ReadSandboxHandle(const std::string& handle_file);

struct ClientOptions {
  Endpoint endpoint;
  std::string handle;  // the sandbox handle (bearer token)
  // Verification inputs. trust_store null: no signature check (verification "none").
  std::shared_ptr<const trust::TrustStore> trust_store;
  // The sandbox's own runtime context; when set, a context-bound projection must be bound to exactly it.
  std::optional<openshell::policy::driver::v1::RuntimeContext> context;
  std::vector<std::string> accepted_surfaces = {"openshell.sandbox.v1"};
  int64_t clock_skew_s = 60;  // 0 to 86400 (Connect refuses others), as the gateway's own
  std::function<int64_t()> now_unix;  // null: the system clock
  bool report = true;  // Watch reports LOADED / FAILED for each projection it handles (false: a viewer)
  std::chrono::milliseconds call_timeout{30000};
  // HTTP/2 keepalive of the connection (endpoint.h): a watch whose connection was dropped without a reset
  // ends UNAVAILABLE within time + timeout (30 s by default) and is reopened. time below 5 s: Connect refuses.
  Keepalive keepalive;
  std::chrono::milliseconds initial_backoff{200};
  std::chrono::milliseconds max_backoff{30000};
  // The back-off starts again from initial_backoff only after a stream stayed open this long (a gateway
  // that accepts a stream and drops it at once is not reconnected to every initial_backoff).
  std::chrono::milliseconds backoff_reset_after{30000};
  // A stream refused UNAUTHENTICATED as it opens is tried again (with the back-off) until this long has
  // passed since Watch started or a stream was last accepted: a replica whose change feed has not yet
  // brought the sandbox's admission (about a second behind, docs/replicas.md) does not know the handle
  // yet. A stream the gateway ends UNAUTHENTICATED while it is open (the handle revoked: the sandbox
  // deleted or re-admitted) ends Watch at once, as does a refusal past this. 0: end at the first refusal.
  std::chrono::milliseconds unknown_handle_grace{10000};

  // Rollback protection across restarts. Non-empty: the highest policy_version handed to `apply` is kept
  // in this file (mode 0600, written to a temporary file in the same folder, fsync'd, renamed over it,
  // the folder fsync'd) before `apply` is called; Connect loads it, and no projection below it is accepted
  // (`rollback`), also after a restart. A missing file is a first start (nothing applied yet); an
  // unreadable or corrupt one, or one group/others may write, makes Connect fail (never read as 0).
  // Empty: the version in force is remembered in memory only.
  std::string state_file;

  // A projection that carries a context_digest can only be checked against `context`. Without `context`
  // such a projection is refused (`context_mismatch`), and a trust store with require_context_binding makes
  // Connect fail: a supervisor that does not know its own context must not apply another sandbox's policy.
  // true: accept them with the context unchecked (for viewers such as `policyctl fetch` without --sandbox-id).
  bool allow_unchecked_context = false;

  // When the policy in force reaches expires_at_unix (+ clock_skew_s) and no newer projection arrived,
  // Watch reports it FAILED ("expired: ...") and emits kExpired. kFailClosed (the default) then withdraws
  // it: the `withdraw` function given to Watch is called and current() becomes null; with no `withdraw`
  // function (or when it fails), Watch ends with FAILED_PRECONDITION "expired: ..." so that the supervisor
  // stops. kKeepLastGood leaves it in force (still reported FAILED). The same holds when a watch ends
  // FAILED_PRECONDITION with a code saying the served projection no longer passes the gateway's checks
  // (kRevoked: `key_revoked` after a trust-store reload revoked its key and the driver gave no re-signed
  // one; `unknown_key`, `bad_signature`, … after a restart under another trust store). Not on `expired`
  // (the timer above) nor `revocation_pending` (a reload's refreshes still running).
  enum class OnExpiry { kFailClosed, kKeepLastGood };
  OnExpiry on_expiry = OnExpiry::kFailClosed;

  // The verifiable log (docs/audit.md, "Proofs for sandboxes"). With require_log_proof, Fetch returns and
  // Watch applies a projection only with a valid proof that the gateway logged it for this sandbox
  // (GetLogProof, checked by sandbox_client/log_proof.h): an entry naming `context`'s sandbox id and the
  // projection's digest and version, in a checkpoint signed with `log_key` and cosigned by `witness_quorum`
  // of `witness_keys`, extending the newest checkpoint seen before (kept in `log_state_file` across restarts
  // when given). Otherwise FAILED_PRECONDITION "log_proof_invalid: ..." or, for a checkpoint of the newest
  // one's size with another root, "log_forked: ..." (kept in <log_state_file>.fork; sandbox_client/log_proof.h)
  // — reported FAILED by Watch, the last good stays. An entry not yet under a checkpoint is waited for up to
  // `log_proof_wait`. Needs `context`; with `witness_keys`, a `witness_quorum` of 1 to their number.
  bool require_log_proof = false;
  std::string log_key;                    // the log's verifier key: <origin>+<hex>+<base64>
  std::vector<std::string> witness_keys;  // cosignature/v1 verifier keys
  size_t witness_quorum = 0;
  std::string log_state_file;
  std::chrono::milliseconds log_proof_wait{10000};
};

// A projection that passed verification, with its parsed policy.
struct VerifiedPolicy {
  openshell::policy::driver::v1::Projection projection;
  std::shared_ptr<const openshell::sandbox::v1::SandboxPolicy> policy;
  std::vector<std::string> verified_key_ids;  // empty with verification "none"
  const std::string& digest() const { return projection.policy_digest(); }
};

// What the watch loop did, for the supervisor's log.
struct WatchEvent {
  enum Kind {
    kConnected,     // the stream is open
    kApplied,       // a verified projection was applied (and reported LOADED)
    kRejected,      // a pushed projection failed verification or apply; the last good stays (reported FAILED)
    kDisconnected,  // the stream ended; it is re-opened after `retry_in`
    kReportFailed,  // a report could not be delivered (the projection stays applied)
    kExpired,       // the policy in force expired with no newer one (reported FAILED; withdrawn unless kKeepLastGood)
    kRevoked,       // the gateway refuses the policy in force as no longer passing its checks (key_revoked,
                    // unknown_key, bad_signature, …: its key revoked or gone and no re-signed one replaced it)
                    // (reported FAILED; withdrawn unless kKeepLastGood, as kExpired)
  };
  Kind kind;
  std::string digest;   // the projection concerned, if any
  std::string detail;   // reason code and detail, or the stream's status
  std::chrono::milliseconds retry_in{0};
  absl::Status status;  // kDisconnected: the status the stream ended with; kRejected: why it was rejected
};

// Whether the gateway's refusal to serve the sandbox says the policy it served must no longer be enforced:
// FAILED_PRECONDITION `expired`, or a code saying the projection no longer passes the checks of SPEC §3.3
// (`key_revoked`, `unknown_key`, `bad_signature`, …). Watch ends the policy in force on the latter itself
// (kRevoked; `expired` by its own timer). A supervisor that left a policy in force in a previous run —
// which this run never applied, so Watch cannot end it — withdraws it on a kDisconnected or kRejected
// whose status says so while nothing is in force (examples/supervisor does): after a restart past its
// expiry or its key's revocation, whether the gateway refuses the watch or streams what no longer verifies.
bool EndsPolicyInForce(const absl::Status& refusal);

class SandboxClient {
 public:
  // Opens the channel (does not wait for it; calls do, up to call_timeout). INVALID_ARGUMENT for bad
  // options (no handle, unreadable TLS files, plaintext off loopback, a context without sandbox_id or
  // user_subject, no context while the trust store requires context binding), UNAVAILABLE for a dead
  // socket; FAILED_PRECONDITION for a state_file that cannot be read or is corrupt (naming the file).
  static absl::StatusOr<std::unique_ptr<SandboxClient>> Connect(ClientOptions options);

  // Checks a projection as described above; `admitted_version`: the version in force (rollback check).
  // FAILED_PRECONDITION "reason_code: detail" when it does not pass.
  absl::StatusOr<VerifiedPolicy> Verify(const openshell::policy::driver::v1::Projection& projection,
                                        std::optional<uint64_t> admitted_version = std::nullopt) const;

  // GetProjection, then Verify (rollback checked only against the state file's version). The gateway's status on a failed call; the
  // verification failure (FAILED_PRECONDITION) when it does not pass. Does not report or apply.
  absl::StatusOr<VerifiedPolicy> Fetch();
  // The raw projection, unverified (for tools that show what the gateway serves).
  absl::StatusOr<openshell::policy::driver::v1::Projection> FetchUnverified();

  // ReportPolicyStatus for `digest`: LOADED when `error` is empty, else FAILED with it.
  absl::Status Report(const std::string& digest, const std::string& error = "");

  // The watch loop (see above). `apply` installs a verified policy in the sandbox and returns OK, or
  // why it could not (reported FAILED). `on_event` may be null; it is called from the watching thread
  // and, for kExpired, from the expiry timer's thread, one call at a time. `withdraw` removes an expired
  // (or revoked: kRevoked) policy from enforcement (deny everything until a newer one is applied) and returns OK, or why it could
  // not. `apply` and `withdraw` never run concurrently. Returns the status that ended it: OK after Stop(),
  // UNAUTHENTICATED when the gateway no longer accepts the handle (see unknown_handle_grace), FAILED_PRECONDITION "expired: ..." when
  // the policy in force expired and could not be withdrawn (see ClientOptions::on_expiry).
  using ApplyFn = std::function<absl::Status(const VerifiedPolicy&)>;
  using EventFn = std::function<void(const WatchEvent&)>;
  using WithdrawFn = std::function<absl::Status(const VerifiedPolicy& expired)>;
  absl::Status Watch(const ApplyFn& apply, const EventFn& on_event = nullptr, const WithdrawFn& withdraw = nullptr);
  // Ends Watch, and any wait for the log's proof (a call waiting for one returns CANCELLED; a projection
  // waiting for one is neither applied nor reported). For good: a stopped client does not watch again.
  void Stop();

  // The policy in force: the last one verified and applied by Watch (null before the first, and after an
  // expired one was withdrawn).
  std::shared_ptr<const VerifiedPolicy> current() const;
  // The highest policy_version applied (or loaded from the state file): nothing below it is accepted.
  uint64_t applied_version_floor() const;

 private:
  SandboxClient(ClientOptions options, std::shared_ptr<grpc::Channel> channel, uint64_t floor);
  std::unique_ptr<grpc::ClientContext> CallContext() const;
  // One projection from the stream: verify, apply, report; updates current_. `served`: the message of
  // WatchServedProjection it came with (its proof), when the stream was that one.
  void Handle(const openshell::policy::driver::v1::Projection& projection, const ApplyFn& apply, const EventFn& on_event,
              const openshell::policy::gateway::v1::ServedProjection* served = nullptr);
  // ReportPolicyStatus from Watch; a LOADED report about the policy in force that fails is owed (above).
  void SendReport(const std::string& digest, const std::string& error,
                  const std::function<void(WatchEvent::Kind, const std::string&)>& emit);
  // One stream until it ends (its status in `ended`): WatchServedProjection with require_log_proof — a
  // projection whose proof is pending is held, and handled when its proof follows on the stream (a newer
  // projection supersedes it) — else WatchProjection. True once a message arrived.
  bool ReadStream(grpc::ClientContext* context, const ApplyFn& apply, const EventFn& on_event, grpc::Status* ended);
  // The expiry timer of one Watch: waits for the policy in force to expire, then reports and withdraws it.
  void ExpiryLoop(const EventFn& on_event, const WithdrawFn& withdraw);
  // Ends `policy` (the one in force) for `why`: withdrawn (ClientOptions::on_expiry), `kind` emitted,
  // reported FAILED; when it cannot be withdrawn, Watch ends. Holds apply_mu_, not mu_.
  void EndInForce(const std::shared_ptr<const VerifiedPolicy>& policy, WatchEvent::Kind kind, const std::string& why,
                  const EventFn& on_event, const WithdrawFn& withdraw) ABSL_EXCLUSIVE_LOCKS_REQUIRED(apply_mu_);
  int64_t NowUnix() const;
  // With require_log_proof: the log's proof for `projection`, checked: `served`'s proof when it carries
  // one that checks; otherwise asked with GetLogProof (waiting while pending) — also when the stream's
  // proof does not check against this client's newest checkpoint (its consistency proof starts from the
  // stream's previous one, which this client may not have verified).
  absl::Status ProveLogged(const openshell::policy::driver::v1::Projection& projection,
                           const openshell::policy::gateway::v1::ServedProjection* served = nullptr);
  bool log_required();
  void Emit(const EventFn& on_event, const WatchEvent& event);

  const ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<openshell::policy::gateway::v1::SandboxPolicy::Stub> stub_;
  absl::Mutex apply_mu_ ABSL_ACQUIRED_BEFORE(mu_);  // serializes applying (Handle) and the expiry action
  absl::Mutex event_mu_;                            // one on_event call at a time
  mutable absl::Mutex mu_;
  std::shared_ptr<const VerifiedPolicy> current_ ABSL_GUARDED_BY(mu_);
  uint64_t floor_ ABSL_GUARDED_BY(mu_) = 0;  // the highest version applied or recorded in state_file
  const VerifiedPolicy* expiry_handled_ ABSL_GUARDED_BY(mu_) = nullptr;  // kKeepLastGood: reported once
  grpc::ClientContext* watching_ ABSL_GUARDED_BY(mu_) = nullptr;  // the open stream's, for Stop()
  grpc::ClientContext* proving_ ABSL_GUARDED_BY(mu_) = nullptr;   // a GetLogProof under way, for Stop()
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  bool watch_done_ ABSL_GUARDED_BY(mu_) = false;  // tells the expiry timer to end
  absl::Status ended_ ABSL_GUARDED_BY(mu_);       // set by the expiry timer when Watch must end
  // A report Watch could not send (the gateway restarting, rate-limited): sent again when the stream hands
  // the same projection again (a reconnect), so drift and `wait` learn what the sandbox loaded (review 104).
  struct OwedReport {
    std::string digest;
    std::string error;
  };
  std::optional<OwedReport> owed_report_ ABSL_GUARDED_BY(mu_);
  absl::Mutex log_mu_;
  std::unique_ptr<LogProofVerifier> log_ ABSL_GUARDED_BY(log_mu_);  // with require_log_proof
  absl::CondVar stop_cv_;
  absl::CondVar expiry_cv_;
};

}  // namespace osh::sandbox_client
