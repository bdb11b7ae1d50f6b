#include "gateway/server/openshell_push.h"

#include <cstring>
#include <fstream>
#include <sstream>

#include <google/protobuf/util/message_differencer.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "drivers/remote_driver.h"
#include "gateway/core/context_limits.h"
#include "gateway/core/interceptor_evaluator.h"
#include "gateway/core/log.h"
#include "trust/secure_path.h"

namespace osh::gateway {

namespace {

absl::StatusOr<std::string> ReadPushFile(const char* key, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream bytes;
  if (!in || !(bytes << in.rdbuf())) {
    return absl::InvalidArgumentError(absl::StrCat(key, ": cannot read '", path, "'"));
  }
  return bytes.str();
}

bool PassingFailure(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
    case grpc::StatusCode::ABORTED:
    case grpc::StatusCode::INTERNAL:
    case grpc::StatusCode::UNKNOWN:
    case grpc::StatusCode::CANCELLED:
      return true;
    default:
      return false;
  }
}

}  // namespace

struct OpenShellPush::Call {
  std::string sandbox_id;
  const grpc::Channel* channel = nullptr;  // the one it was made on (null: none could be made)
  grpc::ClientContext context;
  openshell::v1::UpdateConfigRequest request;
  openshell::v1::UpdateConfigResponse response;
  grpc::Status status;
};

absl::StatusOr<std::unique_ptr<OpenShellPush>> OpenShellPush::Start(Options options, InterceptorAdmission* admission,
                                                                   store::InterceptorRecordStore* records) {
  if (!options.record_pushed) return absl::InvalidArgumentError("interceptor push: no record_pushed");
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  std::string target;
  std::string socket_path;
  if (absl::StartsWith(options.endpoint, "unix:///")) {
    socket_path = options.endpoint.substr(std::strlen("unix://"));  // connected and checked at each push
  } else if (absl::StartsWith(options.endpoint, "https://")) {
    target = options.endpoint.substr(std::string("https://").size());
    grpc::SslCredentialsOptions tls;
    if (!options.ca.empty()) {
      auto ca = ReadPushFile("interceptor_openshell_ca", options.ca);
      if (!ca.ok()) return ca.status();
      tls.pem_root_certs = *std::move(ca);
    }
    if (!options.client_cert.empty()) {
      auto cert = ReadPushFile("interceptor_openshell_client_cert", options.client_cert);
      if (!cert.ok()) return cert.status();
      // A private key: no one else may read or replace it (OpenSSH's rule, as for tls_key).
      auto key = trust::ReadPrivateKeyFile(options.client_key, "interceptor_openshell_client_key");
      if (!key.ok()) return absl::InvalidArgumentError(std::string(key.status().message()));
      tls.pem_cert_chain = *std::move(cert);
      tls.pem_private_key = *std::move(key);
    }
    credentials = grpc::SslCredentials(tls);
  } else {
    return absl::InvalidArgumentError(absl::StrCat("interceptor_openshell_endpoint: expected unix:///<path> or "
                                                   "https://<host>:<port>, got '", options.endpoint, "'"));
  }
  if (!options.token_file.empty()) {
    // Read now so a missing file is a configuration error at start, not a refusal later.
    if (auto token = ReadPushFile("interceptor_openshell_token_file", options.token_file); !token.ok()) {
      return token.status();
    }
  }
  std::unique_ptr<OpenShellPush> push(new OpenShellPush(std::move(options), admission, records));
  push->socket_path_ = std::move(socket_path);
  if (push->socket_path_.empty()) {
    push->channel_ = grpc::CreateChannel(target, credentials);
    push->stub_ = openshell::v1::OpenShell::NewStub(push->channel_);
  }
  push->thread_ = std::thread([p = push.get()] { p->Run(); });
  return push;
}

OpenShellPush::OpenShellPush(Options options, InterceptorAdmission* admission, store::InterceptorRecordStore* records)
    : options_(std::move(options)), admission_(admission), records_(records) {}

OpenShellPush::~OpenShellPush() { Stop(); }

void OpenShellPush::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    for (auto& [id, call] : in_flight_) {
      if (call != nullptr) call->context.TryCancel();  // null: being prepared on the thread, which sees stopping_
    }
    wake_.SignalAll();
  }
  if (thread_.joinable()) thread_.join();
}

void OpenShellPush::Notify(const std::string& sandbox_id) {
  absl::MutexLock lock(&mu_);
  if (stopping_) return;
  if (in_flight_.count(sandbox_id) > 0) {
    dirty_.insert(sandbox_id);
    return;
  }
  attempts_.erase(sandbox_id);
  due_[sandbox_id] = std::chrono::steady_clock::now();
  wake_.Signal();
}

OpenShellPush::Counts OpenShellPush::counts() const {
  absl::MutexLock lock(&mu_);
  Counts out = counts_;
  out.in_flight = in_flight_.size();
  return out;
}

void OpenShellPush::CatchUp() {
  absl::MutexLock lock(&mu_);
  catch_up_due_ = std::chrono::steady_clock::now();
  wake_.Signal();
}

void OpenShellPush::Run() {
  while (true) {
    std::vector<std::unique_ptr<Call>> finished;
    std::vector<std::string> ready;
    bool catch_up = false;
    {
      absl::MutexLock lock(&mu_);
      while (true) {
        if (stopping_ && in_flight_.empty()) return;
        if (!done_.empty()) break;
        const auto now = std::chrono::steady_clock::now();
        auto next = std::chrono::steady_clock::time_point::max();
        if (!stopping_ && catch_up_due_.has_value()) {
          if (*catch_up_due_ <= now) {
            catch_up = true;
            catch_up_due_.reset();
            break;
          }
          next = *catch_up_due_;
        }
        // At most max_in_flight calls at once (each re-enters this gateway's interceptor); one per sandbox.
        for (const auto& [id, when] : due_) {
          if (stopping_ || in_flight_.size() + ready.size() >= options_.max_in_flight) break;
          if (in_flight_.count(id) > 0) continue;
          if (when <= now) {
            ready.push_back(id);
          } else {
            next = std::min(next, when);
          }
        }
        if (!ready.empty()) break;
        if (next == std::chrono::steady_clock::time_point::max()) {
          wake_.Wait(&mu_);
        } else {
          wake_.WaitWithTimeout(&mu_, absl::FromChrono(next - now));
        }
      }
      finished.swap(done_);
      for (const std::string& id : ready) {
        due_.erase(id);
        in_flight_[id] = nullptr;  // taken: a Notify from now on marks it dirty, never sends it twice
      }
    }
    for (auto& call : finished) Finish(std::move(call));
    for (const std::string& id : ready) Send(id);
    if (catch_up) {
      // A change committed before a restart, or whose push was lost or refused, is pushed now.
      auto ids = admission_->AdmittedIds();
      const auto now = std::chrono::steady_clock::now();
      absl::MutexLock lock(&mu_);
      if (ids.ok()) {
        for (const std::string& id : *ids) due_.try_emplace(id, now);
      } else {
        LogError(absl::StrCat("interceptor push: cannot list the admitted sandboxes to catch up (tried again in 10 s): ",
                              ids.status().message()));
        catch_up_due_ = now + std::chrono::seconds(10);
      }
    }
  }
}

void OpenShellPush::Release(const std::string& sandbox_id) {
  absl::MutexLock lock(&mu_);
  in_flight_.erase(sandbox_id);
  if (dirty_.erase(sandbox_id) > 0 && !stopping_) due_[sandbox_id] = std::chrono::steady_clock::now();
}

bool OpenShellPush::Connected() {
  if (stub_ != nullptr) return true;
  // After a failed attempt the next is made a second later at the earliest: the pushes due meanwhile are
  // answered with its error (tried again with their back-off), not each with a connection attempt of its own.
  const auto now = std::chrono::steady_clock::now();
  if (now < next_connect_) return false;
  next_connect_ = now + std::chrono::seconds(1);
  // Over a Unix socket a channel to the path would reconnect by itself to whatever listens there then,
  // token and all: each connection is made here, and the process serving it checked (SO_PEERCRED).
  auto channel = drivers::ConnectCheckedChannel(socket_path_, options_.socket_owner,
                                                std::chrono::system_clock::now() + options_.timeout,
                                                "the OpenShell gateway's socket", "interceptor_openshell_socket_owner");
  if (!channel.ok()) {
    const std::string error(channel.status().message());
    // A process of a user not allowed is a configuration to fix, not a passing failure: an error in the
    // log once per distinct text (the pushes themselves are retried, each a warning).
    if (absl::IsFailedPrecondition(channel.status()) && error != connect_error_) {
      LogError(absl::StrCat("interceptor push: ", error));
    }
    connect_error_ = error;
    return false;
  }
  channel_ = *std::move(channel);
  stub_ = openshell::v1::OpenShell::NewStub(channel_);
  connect_error_.clear();
  next_connect_ = {};
  return true;
}

bool OpenShellPush::Send(const std::string& sandbox_id) {
  if (!Prepare(sandbox_id)) {
    Release(sandbox_id);
    return false;
  }
  return true;
}

bool OpenShellPush::Prepare(const std::string& sandbox_id) {
  auto current = admission_->Current(sandbox_id);
  if (!current.ok()) {
    LogError(absl::StrCat("interceptor push: sandbox ", sandbox_id, ": cannot read its projection: ",
                          current.status().message()));
    return false;
  }
  if (!current->has_value()) return false;  // deleted meanwhile
  auto record = records_.Get(sandbox_id);
  if (!record.ok()) {
    LogError(absl::StrCat("interceptor push: sandbox ", sandbox_id, ": cannot read its interceptor record: ",
                          record.status().message()));
    return false;
  }
  // Only sandboxes created through the interceptor, and only when what OpenShell was allowed to store
  // is not what is served now.
  if (!record->has_value()) return false;
  const InterceptorAdmission::Admitted& admitted = **current;
  if (google::protobuf::util::MessageDifferencer::Equals((*record)->policy, *admitted.policy)) return false;

  auto call = std::make_unique<Call>();
  call->sandbox_id = sandbox_id;
  call->request.set_name(sandbox_id);
  *call->request.mutable_policy() = *admitted.policy;
  auto& annotations = *call->request.mutable_annotations();
  annotations[kAnnotationPolicyDigest] = admitted.digest;
  annotations[kAnnotationPolicyVersion] = absl::StrCat(admitted.version);
  annotations[kAnnotationKeyIds] = absl::StrJoin(admitted.key_ids, ",");
  if (!options_.token_file.empty()) {
    auto token = ReadPushFile("interceptor_openshell_token_file", options_.token_file);
    if (!token.ok()) {
      LogError(absl::StrCat("interceptor push: sandbox ", sandbox_id, ": ", token.status().message()));
    } else {
      call->context.AddMetadata("authorization",
                                absl::StrCat("Bearer ", absl::StripAsciiWhitespace(*token)));
    }
  }
  Call* raw = call.get();
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return false;
    in_flight_[sandbox_id] = raw;  // Stop cancels it from now on
  }
  if (!Connected()) {
    // Answered as a call that could not reach the OpenShell gateway: tried again with the back-off.
    raw->status = grpc::Status(grpc::StatusCode::UNAVAILABLE, connect_error_);
    absl::MutexLock lock(&mu_);
    done_.emplace_back(call.release());
    wake_.Signal();
    return true;
  }
  raw->channel = channel_.get();
  raw->context.set_deadline(std::chrono::system_clock::now() + options_.timeout);  // the call's own, after connecting
  LogInfo(absl::StrCat("interceptor push: sandbox ", sandbox_id, ": UpdateConfig with digest ", admitted.digest,
                       " version ", admitted.version));
  stub_->async()->UpdateConfig(&raw->context, &raw->request, &raw->response,
                               [this, owned = call.release()](grpc::Status status) {
                                 owned->status = std::move(status);
                                 absl::MutexLock lock(&mu_);
                                 done_.emplace_back(owned);
                                 wake_.Signal();
                               });
  return true;
}

void OpenShellPush::Finish(std::unique_ptr<Call> call) {
  const std::string& id = call->sandbox_id;
  const grpc::Status& status = call->status;
  if (!socket_path_.empty() && status.error_code() == grpc::StatusCode::UNAVAILABLE && call->channel != nullptr &&
      call->channel == channel_.get()) {
    // Its connection may be gone: the next push connects again, checked (this channel goes with the last
    // call that holds it).
    stub_.reset();
    channel_.reset();
  }
  bool refused = false;
  bool retried = false;
  {
    absl::MutexLock lock(&mu_);
    in_flight_.erase(id);
    const bool again = dirty_.erase(id) > 0;
    const auto now = std::chrono::steady_clock::now();
    if (status.ok()) {
      ++counts_.pushed;
      attempts_.erase(id);
      if (again && !stopping_) due_[id] = now;
    } else if (again && !stopping_) {
      attempts_.erase(id);
      due_[id] = now;  // a newer projection: its own push decides
    } else if (PassingFailure(status.error_code())) {
      if (!stopping_) {
        retried = true;
        ++counts_.retried;
        const int n = std::min(attempts_[id]++, 15);
        const auto backoff = std::min<std::chrono::milliseconds>(options_.first_backoff * (int64_t{1} << n),
                                                                 options_.max_backoff);
        due_[id] = now + backoff;
      }
    } else {
      ++counts_.refused;
      attempts_.erase(id);
      refused = true;
      // A refusal may pass too (a token rotated, our own interceptor late): asked again, rarely.
      if (!stopping_) due_[id] = now + options_.refusal_retry;
    }
  }
  if (options_.metrics != nullptr && (status.ok() || refused || retried)) {
    options_.metrics->ObserveInterceptorPush(status.ok() ? "accepted" : refused ? "refused" : "retried");
  }
  if (status.ok()) {
    LogInfo(absl::StrCat("interceptor push: sandbox ", id, ": the OpenShell gateway accepted the new policy"));
    // What upstream holds now: recorded only after its answer, so a push lost before it is pushed again.
    if (absl::Status put = options_.record_pushed(id, call->request.policy()); !put.ok()) {
      // The record still names the policy before: pushed again later (the same body, harmless), and
      // recorded then.
      LogError(absl::StrCat("interceptor push: sandbox ", id, ": cannot record the pushed policy (pushed again later): ",
                            put.message()));
      absl::MutexLock lock(&mu_);
      if (!stopping_ && due_.count(id) == 0) due_[id] = std::chrono::steady_clock::now() + options_.first_backoff;
    }
    if (absl::Status cleared = admission_->RecordPushAccepted(id); !cleared.ok() &&
        cleared.code() != absl::StatusCode::kNotFound) {
      LogError(absl::StrCat("interceptor push: sandbox ", id, ": cannot clear the earlier refusal: ", cleared.message()));
    }
    return;
  }
  const std::string detail =
      BoundedText(absl::StrCat("UpdateConfig: ",
                               absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code())), " ",
                               status.error_message()),
                  1024);
  if (!refused) {
    LogWarning(absl::StrCat("interceptor push: sandbox ", id, ": ", detail, " (tried again later)"));
    return;
  }
  LogError(absl::StrCat("interceptor push: sandbox ", id, ": the OpenShell gateway refused the new policy: ", detail));
  if (absl::Status recorded = admission_->RecordPushRefused(id, detail); !recorded.ok() &&
      recorded.code() != absl::StatusCode::kNotFound) {
    LogError(absl::StrCat("interceptor push: sandbox ", id, ": cannot record the refusal: ", recorded.message()));
  }
}

}  // namespace osh::gateway
