#include "builtin_driver/builtin_driver.h"

#include <algorithm>
#include <limits>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "trust/audit_vocabulary.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/errors.h"
#include "policy/body_codec.h"
#include "policy/explain.h"
#include "policy/merge.h"
#include "policy/scope.h"
#include "policy/validation.h"
#include "trust/encoding.h"

namespace osh::builtin_driver {

namespace audit = trust::audit;
namespace {

namespace driver_v1 = drivers::driver_v1;
namespace gateway_v1 = drivers::gateway_v1;
using openshell::sandbox::v1::SandboxPolicy;

constexpr char kHandlePrefix[] = "builtin:";

gateway_v1::PolicyRevision ToProto(const store::PolicyRevisionRecord& r) {
  gateway_v1::PolicyRevision out;
  out.set_scope(r.scope);
  out.set_revision(r.revision);
  out.set_policy_digest(r.digest);
  out.set_deleted(r.deleted());
  out.set_created_at_unix(r.created_at_unix);
  out.set_unchanged(r.unchanged);
  return out;
}

absl::StatusOr<driver_v1::RuntimeContext> DecodeHandle(const std::string& handle) {
  std::string bytes;
  driver_v1::RuntimeContext context;
  if (handle.rfind(kHandlePrefix, 0) != 0 ||
      !absl::WebSafeBase64Unescape(absl::string_view(handle).substr(sizeof(kHandlePrefix) - 1), &bytes) ||
      !context.ParseFromString(bytes)) {
    return absl::NotFoundError("unknown handle");
  }
  return context;
}

absl::Status CheckPolicy(const SandboxPolicy& policy) {
  if (auto status = policy::CheckNoUnknownFields(policy); !status.ok()) {
    return common::Refused(absl::StatusCode::kInvalidArgument, "incomplete_projection", status.message());
  }
  return policy::ValidatePolicy(policy);
}

}  // namespace

BuiltinDriver::BuiltinDriver(store::PolicyRevisions* store, std::optional<SigningKey> signing_key, bool bind_context,
                             const store::Clock* clock)
    : store_(store), signing_key_(std::move(signing_key)), bind_context_(bind_context), clock_(clock) {}

BuiltinDriver::~BuiltinDriver() { store_->revision_listeners().Remove(this); }

absl::StatusOr<std::unique_ptr<BuiltinDriver>> BuiltinDriver::Create(store::PolicyRevisions* store,
                                                                    std::optional<SigningKey> signing_key,
                                                                    bool bind_context, const store::Clock* clock) {
  std::unique_ptr<BuiltinDriver> driver(new BuiltinDriver(store, std::move(signing_key), bind_context, clock));
  // Listening before reading: a revision committed in between is delivered, and Install keeps the newer.
  store->revision_listeners().Add(driver.get());
  if (absl::Status loaded = driver->ReloadRevisions(); !loaded.ok()) return loaded;
  return driver;
}

absl::Status BuiltinDriver::ReloadRevisions() {
  auto revisions = store_->LatestPolicyRevisions();  // one a scope, not the history
  if (!revisions.ok()) return revisions.status();
  for (const auto& r : *revisions) Install(r);  // Install keeps the newer of what it holds and what it is given
  return absl::OkStatus();
}

void BuiltinDriver::OnPolicyRevision(const store::PolicyRevisionRecord& revision, bool /*remote*/) { Install(revision); }

void BuiltinDriver::Install(const store::PolicyRevisionRecord& revision) {
  absl::MutexLock lock(&mu_);
  Revision& slot = latest_[revision.scope];
  if (slot == nullptr || slot->revision < revision.revision) {
    slot = std::make_shared<const store::PolicyRevisionRecord>(revision);
  }
}

std::pair<BuiltinDriver::Revision, uint64_t> BuiltinDriver::Resolve(const driver_v1::RuntimeContext& context,
                                                                    std::vector<std::string>* scopes) const {
  *scopes = policy::ScopesFor(context);
  Revision chosen;
  uint64_t version = 0;
  absl::MutexLock lock(&mu_);
  for (const auto& scope : *scopes) {
    auto found = latest_.find(scope);
    if (found == latest_.end()) continue;
    const Revision& latest = found->second;
    version = std::max(version, latest->seq);
    if (chosen == nullptr && !latest->deleted()) chosen = latest;
  }
  return {chosen, version};
}

std::optional<std::map<std::string, uint64_t>> BuiltinDriver::KnownRevisions() {
  std::map<std::string, uint64_t> known;
  absl::MutexLock lock(&mu_);
  for (const auto& [scope, latest] : latest_) known.emplace(scope, latest->revision);
  return known;
}

std::string BuiltinDriver::ProjectionKey(const driver_v1::RuntimeContext& context) {
  std::vector<std::string> scopes;
  auto [chosen, version] = Resolve(context, &scopes);
  if (chosen == nullptr) return "";  // refused per sandbox: no promise needed
  return absl::StrCat(chosen->scope, "\n", chosen->revision, "\n", version, "\n",
                      bind_context_ ? trust::ContextDigest(context) : "");
}

bool BuiltinDriver::IsCurrent(const driver_v1::RuntimeContext& context, const driver_v1::Projection& served) {
  std::vector<std::string> scopes;
  auto [chosen, version] = Resolve(context, &scopes);
  if (chosen == nullptr || served.policy_version() != version || served.policy_digest() != chosen->digest) return false;
  const auto& stamped = served.audit_context();
  const auto scope = stamped.find("builtin_scope");
  const auto revision = stamped.find("builtin_revision");
  return scope != stamped.end() && scope->second == chosen->scope && revision != stamped.end() &&
         revision->second == absl::StrCat(chosen->revision) &&
         (!bind_context_ || served.context_digest() == trust::ContextDigest(context)) &&
         served.signing_key_id() == (signing_key_ ? signing_key_->key_id : std::string());
}

std::optional<drivers::PolicyAuthoring::Desired> BuiltinDriver::DesiredFor(const driver_v1::RuntimeContext& context) {
  std::vector<std::string> scopes;
  auto [chosen, version] = Resolve(context, &scopes);
  Desired out;
  out.policy_version = version;
  if (chosen == nullptr) {
    out.source = absl::StrCat("no policy for any of the scopes ", absl::StrJoin(scopes, ", "));
    return out;
  }
  out.policy_digest = chosen->digest;
  out.source = absl::StrCat("scope ", chosen->scope, " revision ", chosen->revision);
  return out;
}

absl::StatusOr<driver_v1::Capabilities> BuiltinDriver::GetCapabilities() {
  driver_v1::Capabilities caps;
  caps.set_driver_name("builtin");
  caps.set_driver_version(OSH_VERSION);
  caps.set_api_version(1);
  caps.add_supported_surfaces(kSurface);
  caps.set_permits_mutation(true);
  caps.set_signs_projections(signing_key_.has_value());
  caps.add_features("policy_version");
  if (bind_context_) caps.add_features("context_binding");
  return caps;
}

absl::StatusOr<std::string> BuiltinDriver::AcquireHandle(const driver_v1::RuntimeContext& context, const std::string&) {
  if (context.sandbox_id().empty()) return absl::InvalidArgumentError("context.sandbox_id: required");
  if (context.user_subject().empty()) return absl::InvalidArgumentError("context.user_subject: required");
  return absl::StrCat(kHandlePrefix, absl::WebSafeBase64Escape(policy::SerializeDeterministic(context)));
}

absl::StatusOr<driver_v1::GetProjectionResponse> BuiltinDriver::GetProjection(const std::string& handle,
                                                                             const std::string& surface_id) {
  auto context = DecodeHandle(handle);
  if (!context.ok()) return context.status();
  driver_v1::GetProjectionResponse response;
  if (surface_id != kSurface) {
    response.mutable_no_verified_policy()->set_reason(absl::StrCat("the builtin driver serves only ", kSurface));
    return response;
  }
  std::vector<std::string> scopes;
  auto [chosen, version] = Resolve(*context, &scopes);
  if (!chosen) {
    response.mutable_no_verified_policy()->set_reason(
        absl::StrCat("no policy is set for any of the scopes ", absl::StrJoin(scopes, ", ")));
    return response;
  }
  driver_v1::Projection* p = response.mutable_projection();
  p->set_surface_id(kSurface);
  p->set_policy_digest(chosen->digest);
  p->set_body(chosen->body);
  p->set_policy_version(version);
  if (bind_context_) p->set_context_digest(trust::ContextDigest(*context));
  p->set_issued_at_unix(chosen->created_at_unix);
  (*p->mutable_audit_context())["builtin_scope"] = chosen->scope;
  (*p->mutable_audit_context())["builtin_revision"] = absl::StrCat(chosen->revision);
  if (signing_key_) {
    auto signature = signing_key_->key.Sign(trust::SignedBytes(*p));
    if (!signature.ok()) return signature.status();
    p->set_signature(*signature);
    p->set_signing_key_id(signing_key_->key_id);
  }
  return response;
}

absl::Status BuiltinDriver::ReleaseHandle(const std::string&) { return absl::OkStatus(); }

absl::StatusOr<gateway_v1::PolicyRevision> BuiltinDriver::Append(const std::string& scope,
                                                                 const std::optional<SandboxPolicy>& policy,
                                                                 std::optional<uint64_t> expected_revision,
                                                                 const std::string& what) {
  if (auto status = policy::ValidateScope(scope); !status.ok()) return status;
  std::optional<std::string> body;
  if (policy) {
    if (auto status = CheckPolicy(*policy); !status.ok()) return status;
    if (guard_) {
      if (auto status = guard_(*policy); !status.ok()) return status;
    }
    body = policy::SerializeDeterministic(*policy);
  }
  store::AuditEvent event;
  event.type = audit::Type::kMutation;
  event.surface_id = kSurface;
  event.outcome = audit::Outcome::kOk;
  event.reason = absl::StrCat(what, " ", scope);
  if (policy) {
    // The change's summary (docs/explain.md): classes of request added, removed and undecided against the
    // revision read here (named, so the summary stays exact if another change lands before this one).
    auto latest = store_->LatestPolicyRevision(scope);
    if (!latest.ok()) return latest.status();
    SandboxPolicy previous;
    uint64_t previous_revision = 0;
    if (*latest && !(*latest)->deleted()) {
      auto parsed = policy::ParseBodyStrict((*latest)->body);
      if (!parsed.ok()) return parsed.status();
      previous = *std::move(parsed);
      previous_revision = (*latest)->revision;
    } else {
      previous.set_version(policy->version());
    }
    const policy::ChangeExplanation change = policy::ExplainChange(previous, *policy);
    event.audit_context["change.from_revision"] = absl::StrCat(previous_revision);
    event.audit_context["change.added"] = absl::StrCat(change.added.size());
    event.audit_context["change.removed"] = absl::StrCat(change.removed.size());
    event.audit_context["change.unknown"] = absl::StrCat(change.unknown.size());
  }
  // The store tells this driver of the revision (OnPolicyRevision) before it returns.
  auto record = store_->AppendPolicyRevision(scope, body, expected_revision, clock_->NowUnix(), std::move(event));
  if (!record.ok()) return record.status();
  return ToProto(*record);
}

absl::StatusOr<gateway_v1::PolicyRevision> BuiltinDriver::SetPolicy(const gateway_v1::SetPolicyRequest& request) {
  std::optional<uint64_t> expected;
  if (request.has_expected_revision()) expected = request.expected_revision();
  return Append(request.scope(), request.policy(), expected, "set");
}

absl::StatusOr<gateway_v1::PolicyRevision> BuiltinDriver::UpdatePolicy(const gateway_v1::UpdatePolicyRequest& request) {
  if (auto status = policy::ValidateScope(request.scope()); !status.ok()) return status;
  auto latest = store_->LatestPolicyRevision(request.scope());
  if (!latest.ok()) return latest.status();
  if (!*latest || (*latest)->deleted()) {
    return absl::NotFoundError(absl::StrCat("scope '", request.scope(), "' has no policy to update"));
  }
  if (request.has_expected_revision() && request.expected_revision() != (*latest)->revision) {
    return absl::AbortedError(absl::StrCat("scope '", request.scope(), "' is at revision ", (*latest)->revision,
                                           ", expected ", request.expected_revision()));
  }
  SandboxPolicy policy;
  if (!policy.ParseFromString((*latest)->body)) return absl::DataLossError("stored policy does not decode");
  if (auto status = policy::ApplyMergeOperations(request.operations(), &policy); !status.ok()) return status;
  // The revision read above is the expected one: a concurrent change in between is ABORTED, not lost.
  return Append(request.scope(), policy, (*latest)->revision, "update");
}

absl::StatusOr<gateway_v1::PolicyRevision> BuiltinDriver::DeletePolicy(const gateway_v1::DeletePolicyRequest& request) {
  std::optional<uint64_t> expected;
  if (request.has_expected_revision()) expected = request.expected_revision();
  return Append(request.scope(), std::nullopt, expected, "delete");
}

absl::StatusOr<gateway_v1::GetPolicyResponse> BuiltinDriver::GetPolicy(const gateway_v1::GetPolicyRequest& request) {
  if (auto status = policy::ValidateScope(request.scope()); !status.ok()) return status;
  store::PolicyRevisionRecord record;
  if (request.revision() == 0) {
    auto latest = store_->LatestPolicyRevision(request.scope());
    if (!latest.ok()) return latest.status();
    if (!*latest) return absl::NotFoundError(absl::StrCat("scope '", request.scope(), "' has no policy"));
    record = **latest;
  } else {
    auto found = store_->GetPolicyRevision(request.scope(), request.revision());
    if (!found.ok()) return found.status();
    record = *found;
  }
  gateway_v1::GetPolicyResponse response;
  *response.mutable_revision() = ToProto(record);
  if (!record.deleted() && !response.mutable_policy()->ParseFromString(record.body)) {
    return absl::DataLossError("stored policy does not decode");
  }
  return response;
}

absl::StatusOr<gateway_v1::ListPolicyRevisionsResponse> BuiltinDriver::ListPolicyRevisions(
    const gateway_v1::ListPolicyRevisionsRequest& request) {
  if (!request.scope().empty()) {
    if (auto status = policy::ValidateScope(request.scope()); !status.ok()) return status;
  }
  // Paged by seq (the global order revisions are appended in): the token is the last seq a page listed.
  constexpr uint32_t kDefaultPageSize = 100, kMaxPageSize = 1000;
  const uint32_t size = request.page_size() == 0 ? kDefaultPageSize : std::min(request.page_size(), kMaxPageSize);
  uint64_t after_seq = 0;
  if (!request.page_token().empty() &&
      (!absl::SimpleAtoi(request.page_token(), &after_seq) ||
       after_seq > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))) {
    return absl::InvalidArgumentError("page_token: not a token ListPolicyRevisions gave (use next_page_token as it is)");
  }
  auto records = store_->ListPolicyRevisions(request.scope(), after_seq, size + 1, /*bodies=*/false);
  if (!records.ok()) return records.status();
  gateway_v1::ListPolicyRevisionsResponse response;
  for (size_t i = 0; i < records->size() && i < size; ++i) *response.add_revisions() = ToProto((*records)[i]);
  if (records->size() > size) response.set_next_page_token(absl::StrCat((*records)[size - 1].seq));
  return response;
}

absl::StatusOr<uint64_t> BuiltinDriver::CountPolicyScopes() { return store_->CountLivePolicies(); }

}  // namespace osh::builtin_driver
