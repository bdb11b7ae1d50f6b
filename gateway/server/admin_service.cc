#include "gateway/server/admin_service.h"

#include "common/errors.h"

#include "store/audit_actor.h"

#include <set>

#include "openshell/policy/gateway/v1/gateway.grpc.pb.h"

#include <algorithm>
#include <cstdlib>
#include <tuple>

#include <grpcpp/support/byte_buffer.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gateway/core/interceptor_governance.h"
#include "gateway/core/interceptor_seed.h"
#include "gateway/core/context_limits.h"
#include "gateway/core/log.h"
#include "policy/body_codec.h"
#include "policy/digest.h"
#include "gateway/core/mutation_gate.h"
#include "gateway/server/audit_stream.h"
#include "gateway/server/status_conversion.h"

namespace osh::gateway {
namespace {

constexpr char kServicePrefix[] = "/openshell.policy.gateway.v1.PolicyGateway/";
constexpr char kWatchAuditEvents[] = "/openshell.policy.gateway.v1.PolicyGateway/WatchAuditEvents";
constexpr char kWatchSandboxes[] = "/openshell.policy.gateway.v1.PolicyGateway/WatchSandboxes";

std::string Flatten(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  std::string out;
  if (!buffer.Dump(&slices).ok()) return out;
  for (const auto& slice : slices) out.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  return out;
}

// One unary call: gate, read the request, run the handler on the pool, write the response.
class UnaryReactor final : public grpc::ServerGenericBidiReactor {
 public:
  // `metrics` may be null; `method` is the RPC's name ("AdmitSandbox") for it.
  // `actor`: who calls (AdminService::CallerIdentity), recorded on the audit events the call causes.
  // `max_queued` (0: no bound) and `deadline` (when the work must have started) bound the wait on `pool`.
  UnaryReactor(const AdminService::Handler* handler, WorkerPool* pool, Metrics* metrics, std::string method,
               std::string actor, size_t max_queued = 0, absl::Time deadline = absl::InfiniteFuture())
      : handler_(handler), pool_(pool), metrics_(metrics), method_(std::move(method)), actor_(std::move(actor)),
        started_(absl::Now()), max_queued_(max_queued), deadline_(deadline) {
    StartRead(&request_);
  }
  // A call whose handler answers through a callback: started on gRPC's thread, no worker.
  UnaryReactor(const AdminService::AsyncHandler* handler, Metrics* metrics, std::string method, std::string actor)
      : handler_(nullptr), async_handler_(handler), pool_(nullptr), metrics_(metrics), method_(std::move(method)),
        actor_(std::move(actor)), started_(absl::Now()), max_queued_(0), deadline_(absl::InfiniteFuture()) {
    StartRead(&request_);
  }
  void OnReadDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "no request message"));
      return;
    }
    if (async_handler_ != nullptr) {
      store::AuditActorScope actor(actor_);
      try {
        (*async_handler_)(Flatten(request_), [this](absl::Status status, std::string response) {
          Answer(std::move(status), std::move(response));
        });
      } catch (const std::exception& error) {  // thrown before the chain began (each later step answers its own)
        Answer(absl::InternalError(absl::StrCat(method_, ": ", error.what())));
      }
      return;
    }
    auto work = [this] {
      if (absl::Now() > deadline_) {
        Answer(common::Refused(absl::StatusCode::kDeadlineExceeded, "decisions_busy",
                               absl::StrCat(method_, " was not started before its deadline (the gateway is busy); retry later")));
        return;
      }
      std::string response;
      absl::Status status;
      {
        store::AuditActorScope actor(actor_);
        try {
          status = (*handler_)(Flatten(request_), &response);
        } catch (const std::exception& error) {  // e.g. bad_alloc: the call fails, the gateway goes on
          status = absl::InternalError(absl::StrCat(method_, ": ", error.what()));
        }
      }
      Answer(std::move(status), std::move(response));
    };
    if (max_queued_ == 0) {
      pool_->Submit(std::move(work));
    } else if (!pool_->TrySubmit(std::move(work), max_queued_)) {
      Answer(common::Refused(absl::StatusCode::kResourceExhausted, "decisions_busy",
                             absl::StrCat(max_queued_, " ", method_, " calls are already waiting; retry later")));
    }
  }
  void OnDone() override { delete this; }

 private:
  void Answer(absl::Status status, std::string response = "") {
    {
      if (metrics_ != nullptr) metrics_->ObserveAdminCall(method_, status, absl::Now() - started_);
      if (!status.ok()) {
        Finish(ToGrpc(status));
        return;
      }
      grpc::Slice slice(response);
      response_ = grpc::ByteBuffer(&slice, 1);
      StartWriteAndFinish(&response_, grpc::WriteOptions(), grpc::Status::OK);
    }
  }

  const AdminService::Handler* handler_;
  const AdminService::AsyncHandler* async_handler_ = nullptr;
  WorkerPool* pool_;
  Metrics* metrics_;
  const std::string method_;
  const std::string actor_;
  const absl::Time started_;
  const size_t max_queued_;
  const absl::Time deadline_;
  grpc::ByteBuffer request_;
  grpc::ByteBuffer response_;
};

// An interceptor record's name and workspace as a request names them, held to the rules they were recorded
// under (CheckSandboxId: no control character, NUL included, can join the key, nothing past the limits):
// each checked when not empty, the name also when empty if `name_required`. INVALID_ARGUMENT
// invalid_request naming the field otherwise.
absl::Status CheckRecordKeyParts(const std::string& name, const char* name_field, const std::string& workspace,
                                 const char* workspace_field, bool name_required, const ContextLimits& limits) {
  if (!name.empty() || name_required) {
    if (absl::Status valid = CheckSandboxId(name, limits); !valid.ok()) {
      return common::Refused(absl::StatusCode::kInvalidArgument, "invalid_request", absl::StrCat(name_field, ": ", valid.message()));
    }
  }
  if (!workspace.empty()) {
    if (absl::Status valid = CheckSandboxId(workspace, limits); !valid.ok()) {
      return common::Refused(absl::StatusCode::kInvalidArgument, "invalid_request",
                             absl::StrCat(workspace_field, ": ", valid.message()));
    }
  }
  return absl::OkStatus();
}

// A call that is answered without reading its request.
class RefusedReactor final : public grpc::ServerGenericBidiReactor {
 public:
  explicit RefusedReactor(grpc::Status status) { Finish(std::move(status)); }
  void OnDone() override { delete this; }
};

}  // namespace

template <class Request, class Response>
void AdminService::Add(const std::string& method, std::function<absl::StatusOr<Response>(const Request&)> fn) {
  handlers_[absl::StrCat(kServicePrefix, method)] = [fn = std::move(fn)](const std::string& bytes, std::string* out) {
    Request request;
    if (!request.ParseFromString(bytes)) return absl::InvalidArgumentError("the request does not decode");
    auto response = fn(request);
    if (!response.ok()) return response.status();
    *out = response->SerializeAsString();
    return absl::OkStatus();
  };
}

AdminService::AdminService(GatewayCore* core, WorkerPool* pool, WorkerPool* driver_pool, const EgressDecisions* decisions,
                           const ChangeExplainer* explainer)
    : core_(core), pool_(pool), driver_pool_(driver_pool) {
  namespace v1 = gateway_v1;
  Add<v1::AdmitSandboxRequest, v1::AdmitSandboxResponse>("AdmitSandbox", [core](const auto& r) { return core->Admit(r.context()); });
  async_handlers_[absl::StrCat(kServicePrefix, "AdmitSandbox")] = [core](const std::string& bytes, Reply done) {
    v1::AdmitSandboxRequest request;
    if (!request.ParseFromString(bytes)) return done(absl::InvalidArgumentError("the request does not decode"), "");
    core->AdmitAsync(std::move(*request.mutable_context()), nullptr,
                     [done = std::move(done)](absl::StatusOr<v1::AdmitSandboxResponse> response) {
                       if (!response.ok()) return done(response.status(), "");
                       done(absl::OkStatus(), response->SerializeAsString());
                     });
  };
  Add<v1::DeleteSandboxRequest, v1::DeleteSandboxResponse>("DeleteSandbox", [core](const auto& r) { return core->Delete(r.sandbox_id()); });
  Add<v1::GetSandboxRequest, v1::SandboxInfo>("GetSandbox", [core](const auto& r) {
    return core->GetSandbox(r.sandbox_id(), r.include_policy());
  });
  Add<v1::ListSandboxesRequest, v1::ListSandboxesResponse>("ListSandboxes", [core](const auto& r) { return core->ListSandboxes(r); });
  Add<v1::RefreshSandboxRequest, v1::RefreshSandboxResponse>("RefreshSandbox", [core](const auto& r) { return core->Refresh(r.sandbox_id()); });
  Add<v1::SetPolicyRequest, v1::PolicyRevision>("SetPolicy", [core](const auto& r) { return core->SetPolicy(r); });
  Add<v1::UpdatePolicyRequest, v1::PolicyRevision>("UpdatePolicy", [core](const auto& r) { return core->UpdatePolicy(r); });
  Add<v1::DeletePolicyRequest, v1::PolicyRevision>("DeletePolicy", [core](const auto& r) { return core->DeletePolicy(r); });
  Add<v1::GetPolicyRequest, v1::GetPolicyResponse>("GetPolicy", [core](const auto& r) { return core->GetPolicy(r); });
  Add<v1::ListPolicyRevisionsRequest, v1::ListPolicyRevisionsResponse>("ListPolicyRevisions", [core](const auto& r) { return core->ListPolicyRevisions(r); });
  Add<v1::GetStatusRequest, v1::GetStatusResponse>("GetStatus", [this, core](const auto&) {
    auto status = core->GetStatus();
    if (status.ok() && status_extension_) status_extension_(&*status);
    return status;
  });
  Add<v1::ReloadTrustStoreRequest, v1::ReloadTrustStoreResponse>("ReloadTrustStore", [this, core](const auto&) {
    auto reloaded = core->ReloadTrustStore();
    if (after_trust_reload_) after_trust_reload_();  // the TLS certificates too, as SIGHUP
    return reloaded;
  });
  Add<v1::ListAuditEventsRequest, v1::ListAuditEventsResponse>("ListAuditEvents", [core](const auto& r) { return core->ListAuditEvents(r); });
  Add<v1::EvaluateEgressRequest, v1::EvaluateEgressResponse>("EvaluateEgress", [decisions](const auto& r) { return decisions->Evaluate(r); });
  Add<v1::ExplainChangeRequest, v1::ExplainChangeResponse>("ExplainChange", [explainer](const auto& r) { return explainer->Explain(r); });
  Add<v1::SetCeilingRequest, v1::SetCeilingResponse>("SetCeiling", [core](const auto& r) { return core->SetCeiling(r); });
  Add<v1::GetCeilingRequest, v1::GetCeilingResponse>("GetCeiling", [core](const auto&) { return core->GetCeiling(); });
  auto info_of = [](ProviderProfileCatalogue::Entry entry) {
    v1::ProviderProfileInfo info;
    *info.mutable_profile() = std::move(entry.profile);
    info.set_profile_hash(std::move(entry.hash));
    info.set_signature_kid(std::move(entry.kid));
    return info;
  };
  Add<v1::SetProviderProfileRequest, v1::ProviderProfileInfo>(
      "SetProviderProfile", [core, info_of](const auto& r) -> absl::StatusOr<v1::ProviderProfileInfo> {
        auto entry = core->provider_profiles().Set(r.profile());
        if (!entry.ok()) return entry.status();
        return info_of(*std::move(entry));
      });
  Add<v1::GetProviderProfileRequest, v1::ProviderProfileInfo>(
      "GetProviderProfile", [core, info_of](const auto& r) -> absl::StatusOr<v1::ProviderProfileInfo> {
        auto entry = core->provider_profiles().Get(r.id());
        if (!entry.ok()) return entry.status();
        return info_of(*std::move(entry));
      });
  Add<v1::ListProviderProfilesRequest, v1::ListProviderProfilesResponse>(
      "ListProviderProfiles", [core, info_of](const auto&) -> absl::StatusOr<v1::ListProviderProfilesResponse> {
        auto entries = core->provider_profiles().List();
        if (!entries.ok()) return entries.status();
        std::vector<openshell::v1::ProviderProfile> profiles;
        for (const auto& entry : *entries) profiles.push_back(entry.profile);
        auto revision = GovernanceSnapshotHash(std::move(profiles));
        if (!revision.ok()) return revision.status();
        v1::ListProviderProfilesResponse out;
        for (auto& entry : *entries) *out.add_profiles() = info_of(std::move(entry));
        out.set_revision(*std::move(revision));
        return out;
      });
  Add<v1::DeleteProviderProfileRequest, v1::DeleteProviderProfileResponse>(
      "DeleteProviderProfile", [core](const auto& r) -> absl::StatusOr<v1::DeleteProviderProfileResponse> {
        if (absl::Status deleted = core->provider_profiles().Delete(r.id()); !deleted.ok()) return deleted;
        return v1::DeleteProviderProfileResponse();
      });
  Add<v1::ListInterceptorRecordsRequest, v1::ListInterceptorRecordsResponse>(
      "ListInterceptorRecords", [this](const auto& r) -> absl::StatusOr<v1::ListInterceptorRecordsResponse> {
        if (records_ == nullptr) return common::Refused(absl::StatusCode::kFailedPrecondition, "interceptor_off", "no records here");
        // Ordered by (workspace, name): the store reads the page's rows (one more, to know whether more
        // follow), and only they are decoded and hashed.
        const size_t limit = r.limit() == 0 ? 1000 : std::min<size_t>(r.limit(), 10000);
        // The cursor goes to the database: held to the rules of what it names (a NUL or a megabyte is refused
        // here, not met as a storage error).
        if (absl::Status valid = CheckRecordKeyParts(r.after_sandbox(), "after_sandbox", r.after_workspace(), "after_workspace",
                                                     /*name_required=*/false, core_->config().limits.context);
            !valid.ok()) {
          return valid;
        }
        std::optional<std::string> after;
        if (!r.after_workspace().empty() || !r.after_sandbox().empty()) {
          after = InterceptorRecords::Key(r.after_workspace(), r.after_sandbox());
        }
        auto rows = records_->ListInterceptorRecordsPage(after, limit + 1);
        if (!rows.ok()) return rows.status();
        v1::ListInterceptorRecordsResponse out;
        if (rows->size() > limit) {
          rows->resize(limit);
          out.set_more(true);
        }
        for (const store::InterceptorRecordRow& row : *rows) {
          auto [workspace, name] = InterceptorRecords::Split(row.sandbox);
          v1::InterceptorRecordInfo* info = out.add_records();
          info->set_sandbox(std::move(name));
          info->set_workspace(std::move(workspace));
          InterceptorRecords::Record record;
          if (!InterceptorRecords::Decode(row.record, &record)) {
            info->set_undecodable(true);  // shown, so that it can be forgotten
            continue;
          }
          for (const std::string& provider : record.providers) info->add_providers(provider);
          info->set_policy_digest(policy::Sha256Hex(policy::SerializeDeterministic(record.policy)));
          info->set_network_rules(static_cast<uint32_t>(record.policy.network_policies_size()));
        }
        return out;
      });
  Add<v1::ForgetInterceptorRecordRequest, v1::ForgetInterceptorRecordResponse>(
      "ForgetInterceptorRecord", [this](const auto& r) -> absl::StatusOr<v1::ForgetInterceptorRecordResponse> {
        if (records_ == nullptr) return common::Refused(absl::StatusCode::kFailedPrecondition, "interceptor_off", "no records here");
        if (absl::Status valid = CheckRecordKeyParts(r.sandbox(), "sandbox", r.workspace(), "workspace", /*name_required=*/true,
                                                     core_->config().limits.context);
            !valid.ok()) {
          return valid;
        }
        const std::string key = InterceptorRecords::Key(r.workspace(), r.sandbox());
        const std::string described = InterceptorRecords::Describe(key);
        store::AuditEvent event = AuditRecorder::For(trust::audit::Type::kMutation, r.sandbox());
        event.outcome = trust::audit::Outcome::kOk;
        event.reason = absl::StrCat("interceptor record of sandbox ", described, " forgotten");
        event.audit_context = {{"interceptor_record", r.sandbox()}, {"change", "forget"}};
        if (const auto [workspace, name] = InterceptorRecords::Split(key); !workspace.empty()) {
          event.audit_context["workspace"] = workspace;
        }
        // The record and its event in one transaction; the record need not decode.
        absl::Status forgotten = records_->ForgetInterceptorRecord(key, std::move(event));
        if (absl::IsNotFound(forgotten)) return absl::NotFoundError(absl::StrCat("no interceptor record of sandbox ", described));
        if (!forgotten.ok()) return forgotten;
        return v1::ForgetInterceptorRecordResponse();
      });
  Add<v1::SeedInterceptorRecordRequest, v1::SeedInterceptorRecordResponse>(
      "SeedInterceptorRecord", [this](const auto& r) -> absl::StatusOr<v1::SeedInterceptorRecordResponse> {
        if (records_ == nullptr) return common::Refused(absl::StatusCode::kFailedPrecondition, "interceptor_off", "no records here");
        if (core_->config().interceptor_mode == "admit") {
          // Admit mode records what it admitted and pushed; an operator's word is not an admission.
          return common::Refused(absl::StatusCode::kFailedPrecondition, "interceptor_mode_admit",
                                 "admit mode records the policies it admits: a sandbox from before the interceptor "
                                 "is admitted by creating it again through it, not seeded");
        }
        const std::vector<std::string> providers(r.providers().begin(), r.providers().end());
        auto seeded = SeedInterceptorRecord(core_->gate().ceiling(), core_->provider_profiles(), records_,
                                            core_->audit_log(), core_->config().limits.context,
                                            r.workspace() == "default" ? std::string() : r.workspace(), r.sandbox(),
                                            r.policy(), providers);
        if (!seeded.ok()) return seeded.status();
        v1::SeedInterceptorRecordResponse out;
        v1::InterceptorRecordInfo* info = out.mutable_record();
        const auto [workspace, name] = InterceptorRecords::Split(seeded->key);
        info->set_sandbox(name);
        info->set_workspace(workspace);
        for (const std::string& provider : providers) info->add_providers(provider);
        info->set_policy_digest(seeded->policy_digest);
        info->set_network_rules(static_cast<uint32_t>(r.policy().network_policies_size()));
        out.set_candidate_digest(seeded->candidate_digest);
        return out;
      });
  Add<v1::ProveSandboxRequest, v1::LogProof>("ProveSandbox", [this](const v1::ProveSandboxRequest& r) -> absl::StatusOr<v1::LogProof> {
    auto info = core_->GetSandbox(r.sandbox_id(), /*include_policy=*/false);
    if (!info.ok()) return info.status();
    if (log_ == nullptr) {
      return common::Refused(absl::StatusCode::kFailedPrecondition, "log_disabled",
                             "this gateway keeps no verifiable log (log_signing_key is not set)");
    }
    return log_->ProofFor(r.sandbox_id(), info->policy_digest(), info->policy_version(), r.known_size());
  });

  const auto* service = v1::AdmitSandboxRequest::descriptor()->file()->FindServiceByName("PolicyGateway");
  for (int i = 0; i < service->method_count(); ++i) {
    const std::string path = absl::StrCat(kServicePrefix, service->method(i)->name());
    if (path == kWatchAuditEvents || path == kWatchSandboxes) continue;  // the streams: their own reactor (CreateReactor)
    if (!handlers_.contains(path)) {
      LogError(absl::StrCat("internal error: no handler for ", path));
      std::abort();
    }
  }
}

absl::Status AdminService::Dispatch(const std::string& method, const std::string& request, std::string* response) const {
  if (absl::Status gate = CheckMutationGate(method, core_->permits_mutation()); !gate.ok()) {
    if (uint64_t held_back = 0; core_->TakeMutationRefusalAudit(&held_back)) core_->RecordMutationRefused(method, held_back);
    return gate;
  }
  if (method == kWatchAuditEvents || method == kWatchSandboxes) {
    return absl::UnimplementedError(absl::StrCat(method, " is a stream: not dispatched here"));
  }
  auto handler = handlers_.find(method);
  if (handler == handlers_.end()) return absl::UnimplementedError(absl::StrCat("unknown method ", method));
  return handler->second(request, response);
}

grpc::ServerGenericBidiReactor* AdminService::CreateReactor(grpc::GenericCallbackServerContext* context) {
  const std::string& method = context->method();
  // The gate first: deny by default, whatever the method is.
  if (absl::Status gate = CheckMutationGate(method, core_->permits_mutation()); !gate.ok()) {
    // Audited within a budget (a caller looping on a refused change wrote an event each, and queued a task
    // each here); the rest are counted and said by the next event.
    if (uint64_t held_back = 0; core_->TakeMutationRefusalAudit(&held_back)) {
      pool_->Submit([core = core_, method, held_back, actor = caller_identity_ ? caller_identity_(*context) : ""] {
        store::AuditActorScope scope(actor);
        core->RecordMutationRefused(method, held_back);
      });
    }
    return new RefusedReactor(ToGrpc(gate));
  }
  if (method == kWatchAuditEvents || method == kWatchSandboxes) {
    if (audit_feed_ == nullptr) {
      return new RefusedReactor(grpc::Status(grpc::StatusCode::UNAVAILABLE, "audit streams are not served here"));
    }
    const bool audit = method == kWatchAuditEvents;
    return NewAuditStreamReactor(audit_feed_, metrics_, context, audit ? "WatchAuditEvents" : "WatchSandboxes",
                                 audit ? AuditEventsOpener() : SandboxEventsOpener());
  }
  auto handler = handlers_.find(method);
  if (handler == handlers_.end()) {
    return new RefusedReactor(grpc::Status(grpc::StatusCode::UNIMPLEMENTED, absl::StrCat("unknown method ", method)));
  }
  // The calls that wait on the driver get their own threads (see the header), but those served as callbacks.
  const std::string actor_of_call = caller_identity_ ? caller_identity_(*context) : "";
  if (auto async = async_handlers_.find(method); async != async_handlers_.end()) {
    return new UnaryReactor(&async->second, metrics_, method.substr(std::string_view(kServicePrefix).size()),
                            actor_of_call);
  }
  static const std::set<std::string> kDriverBound = {absl::StrCat(kServicePrefix, "RefreshSandbox"),
                                                     absl::StrCat(kServicePrefix, "ReloadTrustStore")};
  const std::string name = method.substr(std::string_view(kServicePrefix).size());
  const std::string& actor = actor_of_call;
  if (decisions_pool_ != nullptr && (name == "EvaluateEgress" || name == "ExplainChange")) {
    const absl::Time deadline = std::min(absl::Now() + decisions_deadline_, absl::FromChrono(context->deadline()));
    return new UnaryReactor(&handler->second, decisions_pool_, metrics_, name, actor, decisions_max_queued_, deadline);
  }
  if (reload_pool_ != nullptr && name == "ReloadTrustStore") {
    return new UnaryReactor(&handler->second, reload_pool_, metrics_, name, actor);
  }
  if (mutation_pool_ != nullptr && (name == "SetPolicy" || name == "UpdatePolicy" || name == "DeletePolicy")) {
    return new UnaryReactor(&handler->second, mutation_pool_, metrics_, name, actor);
  }
  return new UnaryReactor(&handler->second, kDriverBound.contains(method) ? driver_pool_ : pool_, metrics_, name, actor);
}

}  // namespace osh::gateway
