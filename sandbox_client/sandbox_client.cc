#include "sandbox_client/sandbox_client.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <limits>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <random>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/bounded_text.h"
#include "common/errors.h"
#include "common/grpc_status.h"
#include "trust/projection_check.h"
#include "sandbox_client/private_file.h"
#include "trust/trust_store.h"

namespace osh::sandbox_client {
namespace {

namespace driver_v1 = openshell::policy::driver::v1;
namespace gateway_v1 = openshell::policy::gateway::v1;

using common::FromGrpc;

// The most of the gateway's own words an error or a watch event repeats.
constexpr size_t kMaxShownBytes = 4096;

// The gateway's own words, bounded and escaped (common/bounded_text.h) before a person's terminal or log
// gets them; the code and the reason (its payload) as they were.
absl::Status Shown(const absl::Status& status) {
  if (status.ok()) return status;
  absl::Status shown(status.code(), common::BoundedText(status.message(), kMaxShownBytes));
  status.ForEachPayload([&](absl::string_view type_url, const absl::Cord& payload) { shown.SetPayload(type_url, payload); });
  return shown;
}

// A call that found no gateway over TLS says where to look ("Socket closed" alone told nothing: issue 25.18).
absl::Status FromGrpc(const grpc::Status& status, const Endpoint& endpoint) {
  if (status.error_code() != grpc::StatusCode::UNAVAILABLE || endpoint.server.empty() || endpoint.ca_file.empty()) {
    return Shown(FromGrpc(status));
  }
  absl::Status converted = Shown(FromGrpc(status));
  if (common::ReasonOf(converted) == "gateway_stopping") return converted;  // the gateway said so itself
  return absl::UnavailableError(absl::StrCat(
      converted.message(), " (", endpoint.Describe(),
      ": is the gateway running? does the CA file match its certificate, and its name the host? does it ask for a "
      "client certificate from sandbox_client_ca?)"));
}

// The state file: the highest policy_version applied, and the digest it was applied with.
constexpr char kStateHeader[] = "openshell.sandbox_client.state.v1";

absl::Status StateError(const std::string& path, const std::string& why) {
  return absl::FailedPreconditionError(
      absl::StrCat("state file ", path, ": ", why,
                   " (it holds the highest policy version applied, for rollback protection; it is never read as 0: "
                   "restore it, or remove it together with the applied policy to start afresh)"));
}

// The version recorded in `path`; 0 when the file does not exist (a first start).
absl::StatusOr<uint64_t> LoadState(const std::string& path) {
  auto read = ReadPrivateFile(path, 4096);
  if (!read.ok()) {
    if (absl::IsPermissionDenied(read.status())) {  // its folder: nothing to restore or remove
      return absl::FailedPreconditionError(absl::StrCat("state file ", path, ": ", read.status().message()));
    }
    return StateError(path, std::string(read.status().message()));
  }
  if (!read->has_value()) return uint64_t{0};
  const std::string& text = **read;
  const std::vector<absl::string_view> lines = absl::StrSplit(text, '\n');
  // header, "policy_version N", "policy_digest D", and the final newline's empty piece.
  if (lines.size() != 4 || lines[0] != kStateHeader || !lines[3].empty()) {
    return StateError(path, absl::StrCat("corrupt: expected the lines '", kStateHeader,
                                         "', 'policy_version N', 'policy_digest D'"));
  }
  uint64_t version = 0;
  absl::string_view number = lines[1];
  if (!absl::ConsumePrefix(&number, "policy_version ") || number.empty() ||
      number.find_first_not_of("0123456789") != absl::string_view::npos || !absl::SimpleAtoi(number, &version)) {
    return StateError(path, "corrupt: bad policy_version line");
  }
  absl::string_view digest = lines[2];
  if (!absl::ConsumePrefix(&digest, "policy_digest ") || digest.size() != 64 ||
      digest.find_first_not_of("0123456789abcdef") != absl::string_view::npos) {
    return StateError(path, "corrupt: bad policy_digest line");
  }
  return version;
}

// Replaces `path` with the state for `version` (WritePrivateFileAtomically: a crash leaves the old state or
// the new one).
absl::Status SaveState(const std::string& path, uint64_t version, const std::string& digest) {
  return WritePrivateFileAtomically(
      path, absl::StrCat(kStateHeader, "\npolicy_version ", version, "\npolicy_digest ", digest, "\n"), "state file");
}

// Whether the gateway's refusal to serve a sandbox says its projection no longer passes the checks of
// SPEC §3.3 — a key revoked, unknown or out of its window, a signature or digest that does not verify —
// so the policy in force must end. Not `expired` (the client's own timer ends an expired policy), not a
// refusal that may pass in a moment (`revocation_pending`, while a reload's refreshes run).
bool NoLongerVerifies(const std::string& reason) {
  namespace r = trust::reason;
  for (const char* code : {r::kKeyRevoked, r::kUnknownKey, r::kKeyNotValidNow, r::kBadSignature, r::kThresholdNotMet,
                           r::kUnsigned, r::kDigestMismatch, r::kContextMismatch, r::kSurfaceNotAccepted,
                           r::kIncompleteProjection, r::kInvalidPolicy}) {
    if (reason == code) return true;
  }
  return false;
}

}  // namespace

bool EndsPolicyInForce(const absl::Status& refusal) {
  if (!absl::IsFailedPrecondition(refusal)) return false;
  const std::string reason = common::ReasonOf(refusal);
  return reason == trust::reason::kExpired || NoLongerVerifies(reason);
}

absl::StatusOr<std::string> ReadSandboxHandle(const std::string& handle_file) {
  // The variable leaves the environment whichever way the handle is taken: the programs the supervisor
  // starts must not inherit it. Overwritten where it is, then unset: /proc/<pid>/environ shows the
  // process's initial environment block, which unsetenv leaves as it was (review 116).
  std::string from_environment;
  if (char* value = std::getenv(kHandleVariable)) {
    from_environment = std::string(absl::StripAsciiWhitespace(value));
    std::memset(value, 0, std::strlen(value));
  }
  ::unsetenv(kHandleVariable);
  std::string handle;
  if (!handle_file.empty()) {
    std::ifstream in(handle_file);
    if (!in) return absl::InvalidArgumentError(absl::StrCat("handle file ", handle_file, ": cannot be read"));
    std::getline(in, handle);
    handle = std::string(absl::StripAsciiWhitespace(handle));
    if (handle.empty()) return absl::InvalidArgumentError(absl::StrCat("handle file ", handle_file, ": empty"));
    return handle;
  }
  if (from_environment.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("no sandbox handle: give a handle file or set ", kHandleVariable));
  }
  return from_environment;
}

SandboxClient::SandboxClient(ClientOptions options, std::shared_ptr<grpc::Channel> channel, uint64_t floor)
    : options_(std::move(options)),
      channel_(std::move(channel)),
      stub_(gateway_v1::SandboxPolicy::NewStub(channel_)),
      floor_(floor) {}

absl::StatusOr<std::unique_ptr<SandboxClient>> SandboxClient::Connect(ClientOptions options) {
  if (options.handle.empty()) return absl::InvalidArgumentError("no sandbox handle");
  if (options.accepted_surfaces.empty()) return absl::InvalidArgumentError("no accepted surface");
  if (options.initial_backoff.count() <= 0 || options.max_backoff < options.initial_backoff) {
    return absl::InvalidArgumentError("back-off: need 0 < initial_backoff <= max_backoff");
  }
  if (options.backoff_reset_after.count() <= 0) return absl::InvalidArgumentError("back-off: need backoff_reset_after > 0");
  // As the gateway's own clock_skew_s: a negative skew would let the expiry timer and Verify disagree, a huge
  // one overflow `now ± skew`.
  if (options.clock_skew_s < 0 || options.clock_skew_s > 86400) {
    return absl::InvalidArgumentError(absl::StrCat("clock_skew_s ", options.clock_skew_s, ": need 0 to 86400 seconds"));
  }
  if (options.context.has_value() && (options.context->sandbox_id().empty() || options.context->user_subject().empty())) {
    return absl::InvalidArgumentError("runtime context: sandbox_id and user_subject are both required");
  }
  if (!options.context.has_value() && !options.allow_unchecked_context && options.trust_store != nullptr &&
      options.trust_store->require_context_binding()) {
    return absl::InvalidArgumentError(
        "the trust store requires context binding: give this sandbox's runtime context (sandbox id and user subject)");
  }
  uint64_t floor = 0;
  if (!options.state_file.empty()) {
    auto loaded = LoadState(options.state_file);
    if (!loaded.ok()) return loaded.status();
    floor = *loaded;
  }
  std::unique_ptr<LogProofVerifier> log;
  if (options.require_log_proof) {
    if (!options.context.has_value()) {
      return absl::InvalidArgumentError(
          "require_log_proof needs this sandbox's runtime context: the log's entry must name its sandbox id");
    }
    auto created = LogProofVerifier::Create(
        {options.log_key, options.witness_keys, options.witness_quorum, options.log_state_file});
    if (!created.ok()) return created.status();
    log = *std::move(created);
  }
  auto channel = OpenChannel(options.endpoint, std::chrono::milliseconds(0), options.keepalive);
  if (!channel.ok()) return channel.status();
  std::unique_ptr<SandboxClient> client(new SandboxClient(std::move(options), *std::move(channel), floor));
  absl::MutexLock lock(&client->log_mu_);
  client->log_ = std::move(log);
  return client;
}

bool SandboxClient::log_required() {
  absl::MutexLock lock(&log_mu_);
  return log_ != nullptr;
}

absl::Status SandboxClient::ProveLogged(const driver_v1::Projection& projection,
                                        const gateway_v1::ServedProjection* served) {
  absl::MutexLock lock(&log_mu_);
  if (log_ == nullptr) return absl::OkStatus();
  if (served != nullptr && served->has_proof()) {
    absl::Status checked = log_->Check(served->proof(), projection, options_.context->sandbox_id());
    if (checked.ok()) return checked;
    // A proof on the stream may be against a checkpoint older than the newest this client verified: asked
    // again below. A fork is no such thing: it stands, whatever the gateway answers next.
    if (common::ReasonOf(checked) == "log_forked") return checked;
  }
  if (served != nullptr && !served->has_proof() && !absl::StartsWith(served->log_status(), "log_pending")) {
    return common::Refused(absl::StatusCode::kFailedPrecondition, "log_proof_invalid",
                           absl::StrCat("no proof that the gateway logged this projection: ",
                                        common::BoundedText(served->log_status(), kMaxShownBytes)));
  }
  const auto deadline = std::chrono::steady_clock::now() + options_.log_proof_wait;
  for (;;) {
    gateway_v1::GetLogProofRequest request;
    request.set_known_size(log_->known_size());
    gateway_v1::LogProof proof;
    auto context = CallContext();
    {
      absl::MutexLock lock(&mu_);
      if (stopped_ || !ended_.ok()) return absl::CancelledError("stopped while waiting for the log's proof");
      proving_ = context.get();  // Stop() (or the expiry timer ending the watch) cancels it
    }
    const grpc::Status status = stub_->GetLogProof(context.get(), request, &proof);
    {
      absl::MutexLock lock(&mu_);
      proving_ = nullptr;
      if (stopped_ || !ended_.ok()) return absl::CancelledError("stopped while waiting for the log's proof");
    }
    if (status.ok()) return log_->Check(proof, projection, options_.context->sandbox_id());
    // Pending: integrated within log_integrate_interval_ms. Anything else (no log at all included) is a
    // missing proof, and a projection without one is not applied.
    if (status.error_code() != grpc::StatusCode::UNAVAILABLE || std::chrono::steady_clock::now() >= deadline) {
      return common::Refused(absl::StatusCode::kFailedPrecondition, "log_proof_invalid",
                             absl::StrCat("no proof that the gateway logged this projection: ",
                                          FromGrpc(status, options_.endpoint).message()));
    }
    absl::MutexLock lock(&mu_);
    if (!stopped_ && ended_.ok()) stop_cv_.WaitWithTimeout(&mu_, absl::Milliseconds(50));
  }
}

int64_t SandboxClient::NowUnix() const {
  return options_.now_unix ? options_.now_unix() : absl::ToUnixSeconds(absl::Now());
}

uint64_t SandboxClient::applied_version_floor() const {
  absl::MutexLock lock(&mu_);
  return floor_;
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
  input.now_unix = NowUnix();
  input.clock_skew_s = options_.clock_skew_s;
  input.admitted_version = admitted_version;
  trust::CheckResult result = trust::CheckProjection(projection, input);
  if (!result.ok()) return result.ToStatus();
  // CheckProjection skips the comparison when it has no context (an offline check); a sandbox must not.
  if (!projection.context_digest().empty() && !options_.context.has_value() && !options_.allow_unchecked_context) {
    return common::Refused(absl::StatusCode::kFailedPrecondition, trust::reason::kContextMismatch,
                           absl::StrCat("the projection is bound to a runtime context (context_digest ",
                                        projection.context_digest(),
                                        ") and this supervisor was given none to check it against (set its sandbox "
                                        "id and user subject)"));
  }
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
    return FromGrpc(status, options_.endpoint);
  }
  return projection;
}

absl::StatusOr<VerifiedPolicy> SandboxClient::Fetch() {
  if (log_required()) {  // the projection and its proof in one call
    gateway_v1::GetServedProjectionRequest request;
    {
      absl::MutexLock lock(&log_mu_);
      request.set_known_size(log_->known_size());
    }
    gateway_v1::ServedProjection served;
    auto context = CallContext();
    if (grpc::Status status = stub_->GetServedProjection(context.get(), request, &served); !status.ok()) {
      return FromGrpc(status, options_.endpoint);
    }
    const uint64_t floor = applied_version_floor();
    auto verified = Verify(served.projection(), floor != 0 ? std::optional<uint64_t>(floor) : std::nullopt);
    if (!verified.ok()) return Shown(verified.status());  // it may quote the projection's fields
    if (absl::Status logged = ProveLogged(served.projection(), &served); !logged.ok()) return logged;
    return verified;
  }
  auto projection = FetchUnverified();
  if (!projection.ok()) return projection.status();
  const uint64_t floor = applied_version_floor();
  auto verified = Verify(*projection, floor != 0 ? std::optional<uint64_t>(floor) : std::nullopt);
  if (!verified.ok()) return Shown(verified.status());  // it may quote the projection's fields
  if (absl::Status logged = ProveLogged(*projection); !logged.ok()) return logged;
  return verified;
}

absl::Status SandboxClient::Report(const std::string& digest, const std::string& error) {
  gateway_v1::ReportPolicyStatusRequest request;
  request.set_policy_digest(digest);
  request.set_status(error.empty() ? gateway_v1::LOADED : gateway_v1::FAILED);
  request.set_error(error);
  gateway_v1::ReportPolicyStatusResponse response;
  auto context = CallContext();
  return FromGrpc(stub_->ReportPolicyStatus(context.get(), request, &response), options_.endpoint);
}

std::shared_ptr<const VerifiedPolicy> SandboxClient::current() const {
  absl::MutexLock lock(&mu_);
  return current_;
}

void SandboxClient::Emit(const EventFn& on_event, const WatchEvent& event) {
  if (!on_event) return;
  WatchEvent shown = event;  // the digest and the detail may hold what the gateway sent
  shown.digest = common::BoundedText(event.digest, kMaxShownBytes);
  shown.detail = common::BoundedText(event.detail, kMaxShownBytes);
  absl::MutexLock lock(&event_mu_);
  on_event(shown);
}

void SandboxClient::Handle(const driver_v1::Projection& projection, const ApplyFn& apply, const EventFn& on_event,
                          const gateway_v1::ServedProjection* served) {
  auto emit = [&](WatchEvent::Kind kind, const std::string& detail) {
    Emit(on_event, {kind, projection.policy_digest(), detail, std::chrono::milliseconds(0), absl::OkStatus()});
  };
  std::shared_ptr<const VerifiedPolicy> in_force;
  uint64_t floor = 0;
  {
    absl::MutexLock lock(&mu_);
    in_force = current_;
    floor = floor_;
  }
  // The stream opens with the projection in force; after a reconnect it is usually the one applied. A
  // report about it that could not be sent before is sent now.
  if (in_force != nullptr && in_force->projection.SerializeAsString() == projection.SerializeAsString()) {
    std::optional<OwedReport> owed;
    {
      absl::MutexLock lock(&mu_);
      if (owed_report_.has_value() && owed_report_->digest == projection.policy_digest()) owed = owed_report_;
    }
    if (owed.has_value() && options_.report) SendReport(owed->digest, owed->error, emit);
    return;
  }
  // Checked before the apply lock is taken: the log proof may wait on the gateway (log_proof_wait, and a
  // call timeout per GetLogProof), and the expiry timer must not wait behind that.
  // No rollback below the highest version applied, in this process or (state_file) before it.
  absl::StatusOr<VerifiedPolicy> verified = Verify(projection, floor != 0 ? std::optional<uint64_t>(floor) : std::nullopt);
  absl::Status outcome = verified.status();
  if (outcome.ok()) outcome = ProveLogged(projection, served);
  if (absl::IsCancelled(outcome)) return;  // Stop() while the proof was awaited: nothing applied or reported
  std::string failure;
  {
    absl::MutexLock serialized(&apply_mu_);
    if (outcome.ok()) {
      // Verified again now: the wait for the proof may have outlasted the projection's expiry, or another
      // projection may have been applied meanwhile (microseconds; no call to the gateway).
      {
        absl::MutexLock lock(&mu_);
        floor = floor_;
      }
      verified = Verify(projection, floor != 0 ? std::optional<uint64_t>(floor) : std::nullopt);
      outcome = verified.status();
    }
    if (outcome.ok() && !options_.state_file.empty() && projection.policy_version() > floor) {
      // Recorded before it is applied: a crash in between must not let an older one in after a restart.
      outcome = SaveState(options_.state_file, projection.policy_version(), projection.policy_digest());
      if (outcome.ok()) {
        absl::MutexLock lock(&mu_);
        floor_ = projection.policy_version();
      } else {
        outcome = absl::InternalError(absl::StrCat("not applied: ", outcome.message()));
      }
    }
    if (outcome.ok()) outcome = apply(*verified);
    if (!outcome.ok() && verified.ok() && outcome.message().empty()) outcome = absl::UnknownError("apply failed");
    failure = outcome.ok() ? "" : std::string(outcome.message());
    if (outcome.ok()) {
      auto applied = std::make_shared<const VerifiedPolicy>(*std::move(verified));
      absl::MutexLock lock(&mu_);
      current_ = std::move(applied);
      expiry_handled_ = nullptr;
      floor_ = std::max(floor_, projection.policy_version());
      expiry_cv_.SignalAll();  // a new expiry to wait for
    }
    // Before any kExpired of it. A rejection carries its status (EndsPolicyInForce reads it).
    Emit(on_event, {outcome.ok() ? WatchEvent::kApplied : WatchEvent::kRejected, projection.policy_digest(), failure,
                    std::chrono::milliseconds(0), outcome});
  }
  // Reported without the apply lock held (a slow gateway must not hold the expiry timer up).
  if (!options_.report) return;
  if (!outcome.ok()) {
    // Not applied: the one in force stays, and a report about it still owed is no longer the latest word.
    absl::MutexLock lock(&mu_);
    owed_report_.reset();
  }
  SendReport(projection.policy_digest(), failure, emit);
}

void SandboxClient::SendReport(const std::string& digest, const std::string& error,
                               const std::function<void(WatchEvent::Kind, const std::string&)>& emit) {
  const absl::Status reported = Report(digest, error);
  {
    absl::MutexLock lock(&mu_);
    // Owed only when it is about the policy in force (a report about a rejected one is not retried).
    const bool about_in_force = current_ != nullptr && current_->projection.policy_digest() == digest && error.empty();
    if (reported.ok() || !about_in_force) {
      if (owed_report_.has_value() && owed_report_->digest == digest) owed_report_.reset();
    } else {
      owed_report_ = OwedReport{digest, error};
    }
  }
  if (!reported.ok()) emit(WatchEvent::kReportFailed, std::string(reported.message()));
}

void SandboxClient::ExpiryLoop(const EventFn& on_event, const WithdrawFn& withdraw) {
  mu_.Lock();
  while (!watch_done_) {
    const VerifiedPolicy* policy = current_.get();
    const int64_t expires = policy != nullptr ? policy->projection.expires_at_unix() : 0;
    if (policy == nullptr || expires == 0 || expiry_handled_ == policy) {
      expiry_cv_.Wait(&mu_);
      continue;
    }
    // Expired as Verify sees it: expires_at_unix <= now - clock_skew_s. Re-read the clock at least every
    // second (the clock may be the caller's, or jump).
    // Saturating: an expiry near the end of time is never due (a wrapped sum would withdraw it at once).
    const int64_t skew = std::max<int64_t>(0, options_.clock_skew_s);
    const int64_t due = expires > std::numeric_limits<int64_t>::max() - skew ? std::numeric_limits<int64_t>::max() : expires + skew;
    const int64_t now = NowUnix();
    if (now < due) {
      const int64_t seconds = std::min<int64_t>(due - now, 1);
      expiry_cv_.WaitWithTimeout(&mu_, absl::Seconds(seconds));
      continue;
    }
    // Expired. Act under apply_mu_ (never during an apply), then check it is still the policy in force.
    mu_.Unlock();
    absl::MutexLock serialized(&apply_mu_);
    mu_.Lock();
    if (watch_done_ || current_.get() != policy) continue;
    const std::shared_ptr<const VerifiedPolicy> expired = current_;
    expiry_handled_ = policy;
    mu_.Unlock();
    EndInForce(expired, WatchEvent::kExpired,
               absl::StrCat(trust::reason::kExpired, ": the policy in force (version ", expired->projection.policy_version(),
                            ") expired at ", expires, " and no newer projection arrived"),
               on_event, withdraw);
    mu_.Lock();
  }
  mu_.Unlock();
}

void SandboxClient::EndInForce(const std::shared_ptr<const VerifiedPolicy>& policy, WatchEvent::Kind kind,
                               const std::string& why, const EventFn& on_event, const WithdrawFn& withdraw) {
  const bool fail_closed = options_.on_expiry == ClientOptions::OnExpiry::kFailClosed;
  absl::Status withdrawn = absl::OkStatus();
  if (fail_closed) {
    withdrawn = withdraw ? withdraw(*policy) : absl::FailedPreconditionError("no withdraw function");
    // Out of current() at once, not after the event and the report (a round trip): a caller told of the
    // withdrawal must not still read it as in force (the revocation tests saw it there, now and then).
    absl::MutexLock lock(&mu_);
    if (current_ == policy) current_ = nullptr;
  }
  std::string detail = why;
  if (!fail_closed) {
    detail += " (kept in force)";
  } else if (withdrawn.ok()) {
    detail += " (withdrawn: fail closed)";
  } else {
    detail += absl::StrCat(" (could not be withdrawn: ", withdrawn.message(), "; the watch ends)");
  }
  Emit(on_event, {kind, policy->digest(), detail, std::chrono::milliseconds(0), absl::OkStatus()});
  if (options_.report) {
    if (absl::Status reported = Report(policy->digest(), why); !reported.ok()) {
      Emit(on_event, {WatchEvent::kReportFailed, policy->digest(), std::string(reported.message()),
                      std::chrono::milliseconds(0), absl::OkStatus()});
    }
  }
  absl::MutexLock lock(&mu_);
  if (!fail_closed) return;
  if (!withdrawn.ok()) {
    ended_ = absl::FailedPreconditionError(detail);
    if (watching_ != nullptr) watching_->TryCancel();
    if (proving_ != nullptr) proving_->TryCancel();
    stop_cv_.SignalAll();
  }
}

absl::Status SandboxClient::Watch(const ApplyFn& apply, const EventFn& on_event, const WithdrawFn& withdraw) {
  {
    absl::MutexLock lock(&mu_);
    watch_done_ = false;
    ended_ = absl::OkStatus();
  }
  std::thread expiry([this, &on_event, &withdraw] { ExpiryLoop(on_event, withdraw); });
  struct EndExpiry {
    SandboxClient* client;
    std::thread* thread;
    ~EndExpiry() {
      {
        absl::MutexLock lock(&client->mu_);
        client->watch_done_ = true;
        client->expiry_cv_.SignalAll();
      }
      thread->join();
    }
  } end_expiry{this, &expiry};

  std::mt19937_64 random(std::random_device{}());
  std::chrono::milliseconds backoff = options_.initial_backoff;
  auto accepted = std::chrono::steady_clock::now();  // Watch's start, then the last stream accepted
  for (;;) {
    grpc::ClientContext context;  // no deadline: a watch lasts (keepalive notices a dead connection)
    context.AddMetadata("authorization", absl::StrCat("Bearer ", options_.handle));
    {
      absl::MutexLock lock(&mu_);
      if (stopped_) return absl::OkStatus();
      if (!ended_.ok()) return ended_;
      watching_ = &context;
    }
    const auto opened = std::chrono::steady_clock::now();
    grpc::Status status;
    const bool connected = ReadStream(&context, apply, on_event, &status);
    // Only a stream that stayed up a while starts the back-off again: one that delivers the projection in
    // force and is dropped at once (a gateway crashing in a loop) keeps backing off.
    if (connected && std::chrono::steady_clock::now() - opened >= options_.backoff_reset_after) {
      backoff = options_.initial_backoff;
    }
    if (status.error_code() == grpc::StatusCode::FAILED_PRECONDITION &&
        NoLongerVerifies(common::ReasonOf(FromGrpc(status)))) {
      // The gateway no longer serves the policy in force: a trust-store reload revoked its key and no
      // re-signed projection replaced it, or (after a restart, or on another replica) its stored envelope
      // fails the gateway's checks (review 115, 116: supervisors kept enforcing it). Ended as an expired
      // one is; a re-signed projection later is applied as any other.
      absl::MutexLock serialized(&apply_mu_);
      std::shared_ptr<const VerifiedPolicy> in_force;
      {
        absl::MutexLock lock(&mu_);
        in_force = current_;
      }
      if (in_force != nullptr) {
        EndInForce(in_force, WatchEvent::kRevoked, std::string(status.error_message()), on_event, withdraw);
      }
    }
    absl::MutexLock lock(&mu_);
    watching_ = nullptr;
    if (stopped_) return absl::OkStatus();
    if (!ended_.ok()) return ended_;
    if (connected) accepted = std::chrono::steady_clock::now();
    if (status.error_code() == grpc::StatusCode::UNAUTHENTICATED &&
        (connected || std::chrono::steady_clock::now() - accepted >= options_.unknown_handle_grace)) {
      return Shown(FromGrpc(status));  // revoked while watched, or refused past the grace
    }
    // Full jitter over [backoff/2, backoff]: replicas of a restarted gateway are not all hit at once.
    const auto wait = std::chrono::milliseconds(
        backoff.count() / 2 + static_cast<int64_t>(random() % static_cast<uint64_t>(backoff.count() / 2 + 1)));
    if (on_event) {
      mu_.Unlock();
      const absl::Status ended = FromGrpc(status, options_.endpoint);
      Emit(on_event, {WatchEvent::kDisconnected, "", ended.ToString(), wait, ended});
      mu_.Lock();
    }
    const absl::Time until = absl::Now() + absl::FromChrono(wait);
    while (!stopped_ && ended_.ok() && !stop_cv_.WaitWithDeadline(&mu_, until)) {
    }
    if (stopped_) return absl::OkStatus();
    if (!ended_.ok()) return ended_;
    backoff = std::min(backoff * 2, options_.max_backoff);
  }
}

bool SandboxClient::ReadStream(grpc::ClientContext* context, const ApplyFn& apply, const EventFn& on_event,
                               grpc::Status* ended) {
  bool connected = false;
  auto connect = [&] {
    if (connected) return;
    connected = true;
    Emit(on_event, {WatchEvent::kConnected, "", "", std::chrono::milliseconds(0), absl::OkStatus()});
  };
  if (!log_required()) {
    auto reader = stub_->WatchProjection(context, gateway_v1::WatchProjectionRequest());
    driver_v1::Projection projection;
    while (reader->Read(&projection)) {
      connect();
      Handle(projection, apply, on_event);
    }
    *ended = reader->Finish();
    return connected;
  }
  gateway_v1::GetServedProjectionRequest request;
  {
    absl::MutexLock lock(&log_mu_);
    request.set_known_size(log_->known_size());
  }
  auto reader = stub_->WatchServedProjection(context, request);
  gateway_v1::ServedProjection message;
  std::optional<gateway_v1::ServedProjection> pending;  // its proof is on its way
  while (reader->Read(&message)) {
    connect();
    if (message.has_projection()) {
      pending.reset();
      if (!message.has_proof() && absl::StartsWith(message.log_status(), "log_pending")) {
        pending = std::move(message);
        continue;
      }
      Handle(message.projection(), apply, on_event, &message);
    } else if (pending.has_value() && message.has_proof()) {
      *pending->mutable_proof() = message.proof();
      pending->clear_log_status();
      Handle(pending->projection(), apply, on_event, &*pending);
      pending.reset();
    }
  }
  *ended = reader->Finish();
  return connected;
}

void SandboxClient::Stop() {
  absl::MutexLock lock(&mu_);
  stopped_ = true;
  if (watching_ != nullptr) watching_->TryCancel();
  if (proving_ != nullptr) proving_->TryCancel();
  stop_cv_.SignalAll();
}

}  // namespace osh::sandbox_client
