#include "gateway/core/interceptor_evaluator.h"

#include <openssl/rand.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <limits>
#include <optional>
#include <utility>

#include <google/protobuf/util/message_differencer.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_join.h"
#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "common/errors.h"
#include "gateway/core/context_limits.h"
#include "absl/strings/str_cat.h"
#include "gateway/core/audit_recorder.h"
#include "gateway/core/composed_candidate.h"
#include "gateway/core/interceptor_merge.h"
#include "gateway/core/interceptor_payload.h"
#include "gateway/core/log.h"
#include "openshell/v1/openshell_v1_subset.pb.h"
#include "policy/body_codec.h"
#include "policy/digest.h"
#include "policy/provider_profile.h"
#include "policy/scope.h"
#include "policy/validation.h"

namespace osh::gateway {

using openshell::sandbox::v1::SandboxPolicy;
namespace os_v1 = openshell::v1;
namespace driver_v1 = openshell::policy::driver::v1;

namespace {

constexpr char kInterceptorService[] = "openshell.v1.OpenShell";

// The bound RPCs, in the manifest's order, and whether each also has a modify phase.
constexpr std::array<std::pair<const char*, bool>, 11> kInterceptorBindings{{
    {"CreateSandbox", true},
    {"UpdateConfig", true},
    {"AttachSandboxProvider", false},
    {"DetachSandboxProvider", false},
    {"ApproveDraftChunk", false},
    {"ApproveAllDraftChunks", false},
    {"EditDraftChunk", false},
    {"UndoDraftChunk", false},
    {"ImportProviderProfiles", false},
    {"UpdateProviderProfiles", false},
    {"DeleteProviderProfile", false},
}};

// "CreateSandbox" -> "pg-create-sandbox".
std::string InterceptorBindingId(const std::string& method) {
  std::string id = "pg";
  for (const char c : method) {
    if (absl::ascii_isupper(c)) id.push_back('-');
    id.push_back(absl::ascii_tolower(c));
  }
  return id;
}

std::string InterceptorNewDecisionId() {
  unsigned char bytes[8];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) return "d-unavailable";
  return absl::StrCat("d-", policy::ToHex(std::string(reinterpret_cast<const char*>(bytes), sizeof(bytes))));
}

std::string InterceptorPrincipal(const interceptor_v1::InterceptorEvaluation& evaluation, const char* key) {
  auto it = evaluation.principal().find(key);
  return it == evaluation.principal().end() ? "" : it->second;
}

constexpr char kInterceptorApprovalUnverifiable[] = "approval_unverifiable";

}  // namespace

// A shared hold of `mu` (none when null) that can be let go for a while and taken again.
class SharedHold {
 public:
  explicit SharedHold(absl::Mutex* mu) : mu_(mu) { Take(); }
  ~SharedHold() { Release(); }
  SharedHold(const SharedHold&) = delete;
  SharedHold& operator=(const SharedHold&) = delete;
  void Take() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    if (mu_ != nullptr && !held_) mu_->ReaderLock();
    held_ = mu_ != nullptr;
  }
  void Release() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    if (held_) mu_->ReaderUnlock();
    held_ = false;
  }

 private:
  absl::Mutex* const mu_;
  bool held_ = false;
};


struct InterceptorEvaluator::Outcome {
  bool allowed = true;
  absl::StatusCode code = absl::StatusCode::kOk;
  std::string reason_code;
  std::string detail;
  std::string sandbox;            // the sandbox the request names ("" for global writes and others)
  std::string record_key;         // its record's key (InterceptorRecords::Key: workspace and name)
  std::string workspace;          // the request's workspace when not the default one
  std::string candidate_digest;   // when a candidate was checked
  std::string decision_id;        // the Evaluate's, also in its audit event and log annotations
  bool audited = false;           // its allow's audit event is committed (with an admission, its record, or by Answer)
  bool deny_audited = false;      // Answer recorded its deny
  std::string payload_digest;     // of the phase's proposed_operation when the caller had it; else ""
  // The catalogue generation the last checked candidate's provider layers were read at (none: it had no
  // provider): a record of that candidate commits only while the catalogue is still there.
  std::optional<uint64_t> catalogue_generation;
  std::vector<interceptor_v1::JsonPatch> patches;
  // A patch's value kept shared (a memo's: the admitted body as ProtoJSON), copied into the response's own
  // arena when the result is made rather than into a heap patch first: patches[index]'s value.
  std::vector<std::pair<size_t, std::shared_ptr<const google::protobuf::Value>>> shared_values;
  // Admit mode's CreateSandbox modify: the admission still to make (AdmitCreateSandbox), then answered.
  std::shared_ptr<PendingAdmission> pending;

  void Deny(absl::StatusCode status, std::string code_name, std::string why) {
    allowed = false;
    code = status;
    reason_code = std::move(code_name);
    detail = std::move(why);
  }
  std::string Reason() const { return reason_code.empty() ? detail : absl::StrCat(reason_code, ": ", detail); }
  // The sandbox's record could not be read or written (`doing`: "read", "stored", "removed"): fail closed.
  // The store's own text goes to the log only, never to the caller.
  void RecordFailed(const std::string& name, const char* doing, const absl::Status& status) {
    if (common::ReasonOf(status) == "record_changed") {
      // Another write replaced the record this decision was built on: Evaluate decides again on it.
      Deny(absl::StatusCode::kFailedPrecondition, "record_changed",
           absl::StrCat("the interceptor's record of sandbox '", name,
                        "' changed while this request was checked; try again"));
      return;
    }
    if (common::ReasonOf(status) == "catalogue_changed") {
      // A profile change committed (here or on another replica) after the layers were read: the record
      // would name a composition that was never checked. Evaluate decides again, on the new catalogue.
      Deny(absl::StatusCode::kFailedPrecondition, "catalogue_changed",
           absl::StrCat("the provider-profile catalogue changed while sandbox '", name,
                        "' was checked, so it was not recorded; try again"));
      return;
    }
    LogError(absl::StrCat("interceptor: the record of sandbox '", name, "' could not be ", doing, ": ",
                          absl::StatusCodeToString(status.code()), ": ", status.message()));
    Deny(absl::StatusCode::kFailedPrecondition, "storage_error",
         absl::StrCat("the interceptor's record of sandbox '", name, "' could not be ", doing,
                      ", so nothing that depends on it is allowed (fail closed); try again"));
  }
};

// Admit mode's CreateSandbox modify between its decision and its admission's answer.
struct InterceptorEvaluator::PendingAdmission {
  driver_v1::RuntimeContext context;   // what is admitted (sandbox_id = the request's name)
  std::vector<std::string> providers;  // the request's, composed with the admitted policy
  // Their catalogue profiles, read once before the admission: its check composes them without reading the
  // store (it runs on the thread the driver's answer arrived on).
  ProviderProfileCatalogue::Selection selection;
  std::string name;                    // the request's name
  bool denied_by_check = false;        // the composed check refused it (the deny it set stays)
  // The policy the check passed: the digest (lowercase hex SHA-256) of its deterministic serialization,
  // which names it in the composition memo and is compared with the served body's digest.
  std::string checked;
  int64_t checked_under = store::kNoCeiling;  // the ceiling in force when it was checked (read first)
};

// One EvaluateAsync in flight, shared by every step that reads the evaluation (the admission's check and
// its answer hold it too).
struct InterceptorEvaluator::Call {
  Outcome outcome;
  std::string phase;
  std::atomic<bool> answered{false};  // the answer is written (once, whatever throws)
  // Set (by the one thread that wrote the answer) when the answer was a deny written because something threw:
  // a step handed on before the throw may still read the evaluation, which the caller lets go once `done`
  // runs, so `done` runs when the last step lets go of the call, here.
  bool done_when_released = false;
  std::function<void()> done;  // held here: copies of the callbacks that call it allocate nothing
  ~Call() {
    if (!done_when_released) return;
    try {
      done();
    } catch (...) {
      // `done` answers the caller and gives its places back; it throws nothing it could tell.
    }
  }
};

namespace {

// Decodes the payload strictly into `request`; false (with the deny set) when it does not decode.
template <typename Outcome>
bool InterceptorDecodeOrDeny(const google::protobuf::Struct& payload, google::protobuf::Message* request, Outcome* out) {
  if (absl::Status decoded = DecodeInterceptorPayload(payload, request, out->payload_digest); !decoded.ok()) {
    out->Deny(absl::StatusCode::kPermissionDenied, "invalid_request", std::string(decoded.message()));
    return false;
  }
  return true;
}

// The own policy as upstream keeps it (policy::ReservedProviderKeys): `policy` itself when it holds no
// `_provider_*` key; for a sandbox's own sync (`strip`), a copy in *stripped without them, as upstream strips
// them before it keeps the policy; otherwise null with the deny set, as upstream refuses the request.
template <typename Outcome>
const SandboxPolicy* OwnPolicyAsKept(const SandboxPolicy& policy, bool strip, absl::string_view field,
                                     SandboxPolicy* stripped, Outcome* out) {
  const std::vector<std::string> reserved = policy::ReservedProviderKeys(policy);
  if (reserved.empty()) return &policy;
  if (!strip) {
    out->Deny(absl::StatusCode::kPermissionDenied, "invalid_request",
              absl::StrCat(field, ".networkPolicies.", reserved.front(),
                           ": the '_provider_' prefix is reserved for provider layers (upstream refuses a policy "
                           "that uses it; only a sandbox's own sync has such entries, and they are dropped)"));
    return nullptr;
  }
  *stripped = policy;
  policy::DropReservedProviderKeys(stripped);
  return stripped;
}

// Compositions made before (CheckCandidate's `own_key` and the profiles' hashes -> the candidate).
BoundedMemo<std::shared_ptr<const ComposedCandidate>>& ComposedCandidates() {
  static auto* memo = new BoundedMemo<std::shared_ptr<const ComposedCandidate>>(
      [](const std::shared_ptr<const ComposedCandidate>& composed) { return composed->candidate.SpaceUsedLong(); });
  return *memo;
}

// Records encoded before (a CreateSandbox payload's own-policy key -> InterceptorRecords::Encode of its
// policy and providers).
BoundedMemo<std::shared_ptr<const std::string>>& EncodedRecords() {
  static auto* memo = new BoundedMemo<std::shared_ptr<const std::string>>(
      [](const std::shared_ptr<const std::string>& encoded) { return encoded->size(); });
  return *memo;
}

// The same, shared: the memo's decoded message when the payload was decoded before (never copied or
// parsed again); null (with the deny set) when it does not decode.
template <typename Message, typename Outcome>
std::shared_ptr<const Message> InterceptorDecodeSharedOrDeny(const google::protobuf::Struct& payload, Outcome* out) {
  auto decoded = DecodeInterceptorPayloadShared(payload, Message::default_instance(), out->payload_digest);
  if (!decoded.ok()) {
    out->Deny(absl::StatusCode::kPermissionDenied, "invalid_request", std::string(decoded.status().message()));
    return nullptr;
  }
  // The memo's key names the type: what it holds for it is a Message.
  return std::static_pointer_cast<const Message>(*std::move(decoded));
}

}  // namespace

absl::StatusOr<interceptor_v1::ProviderProfileSnapshot> InterceptorEvaluator::SnapshotProviderProfiles() const {
  if (options_.profiles == nullptr) {
    return common::Refused(absl::StatusCode::kFailedPrecondition, "provider_profiles_empty",
                           "this gateway serves no provider-profile catalogue");
  }
  auto snapshot = options_.profiles->Snapshot();
  if (!snapshot.ok()) return snapshot.status();
  if (snapshot->profiles_size() == 0) {
    return common::Refused(absl::StatusCode::kFailedPrecondition, "provider_profiles_empty",
                           "the provider-profile catalogue holds no profile (policyctl profile set)");
  }
  return snapshot;
}

bool IsInterceptorBoundMethod(absl::string_view method) {
  for (const auto& [bound, unused] : kInterceptorBindings) {
    if (method == bound) return true;
  }
  return false;
}

interceptor_v1::InterceptorManifest InterceptorEvaluator::Describe() const {
  interceptor_v1::InterceptorManifest manifest;
  manifest.set_name("policy-gateway");
  manifest.set_failure_policy("fail_closed");
  bool catalogue = false;
  if (options_.profiles != nullptr) {
    auto count = options_.profiles->Count();
    if (!count.ok()) {
      LogError(absl::StrCat("interceptor: Describe cannot count the provider profiles: ", count.status().message()));
    }
    catalogue = count.ok() && *count > 0;
  }
  manifest.set_provider_profiles(catalogue);
  manifest.set_expected_audience(options_.audience);
  for (const auto& [method, modify] : kInterceptorBindings) {
    auto* binding = manifest.add_bindings();
    binding->set_id(InterceptorBindingId(method));
    binding->mutable_selector()->set_rpc(absl::StrCat(kInterceptorService, "/", method));
    if (modify) binding->add_phases(interceptor_v1::GATEWAY_INTERCEPTOR_PHASE_MODIFY_OPERATION);
    binding->add_phases(interceptor_v1::GATEWAY_INTERCEPTOR_PHASE_VALIDATE);
    binding->set_failure_policy("fail_closed");
  }
  return manifest;
}

bool InterceptorEvaluator::ResolveProviders(const std::vector<std::string>& providers,
                                            ProviderProfileCatalogue::Selection* selection, Outcome* out) const {
  // Provider layers come from this gateway's profile catalogue, all read from one catalogue (one
  // generation): a provider without a (verified) profile is refused, since a layer that cannot be composed
  // cannot be checked.
  if (options_.profiles == nullptr) {
    selection->entries.assign(providers.size(), absl::NotFoundError("no catalogue"));
  } else if (!providers.empty()) {
    absl::StatusOr<ProviderProfileCatalogue::Selection> read = options_.profiles->GetAll(providers);
    if (!read.ok()) {
      selection->entries.assign(providers.size(), read.status());
    } else {
      *selection = *std::move(read);
    }
  }
  for (size_t i = 0; i < providers.size(); ++i) {
    const std::string& provider = providers[i];
    const absl::StatusOr<const ProviderProfileCatalogue::Entry*>& entry = selection->entries[i];
    if (std::optional<std::string> alias = policy::ProviderAliasRefusal(provider)) {
      // Upstream composes the profile of the alias's canonical id for it, never this one (a stored profile of
      // the alias's id, set before it was refused, is not used).
      out->Deny(absl::StatusCode::kFailedPrecondition, "unknown_provider", *alias);
      return false;
    }
    if (entry.ok()) continue;
    if (entry.status().code() == absl::StatusCode::kNotFound) {
      out->Deny(absl::StatusCode::kFailedPrecondition, "unknown_provider",
                absl::StrCat("provider '", provider,
                             "' has no profile in this gateway's catalogue (policyctl profile list), so its policy "
                             "layer cannot be checked against the ceiling"));
    } else if (common::ReasonOf(entry.status()) == "profile_unverified") {
      out->Deny(absl::StatusCode::kFailedPrecondition, "profile_unverified",
                std::string(absl::StripPrefix(entry.status().message(), "profile_unverified: ")));
    } else {
      LogError(absl::StrCat("interceptor: the provider profile '", provider, "' could not be read: ",
                            entry.status().message()));
      out->Deny(absl::StatusCode::kFailedPrecondition, "storage_error",
                absl::StrCat("the provider profile '", provider,
                             "' could not be read, so nothing that depends on it is allowed (fail closed); try again"));
    }
    return false;
  }
  // One composition, one catalogue: the layers were read at one generation, which a record of them names.
  if (!providers.empty()) out->catalogue_generation = (*selection->entries.front())->generation;
  return true;
}

bool InterceptorEvaluator::CheckCandidate(const SandboxPolicy& own, const std::vector<std::string>& providers,
                                          Outcome* out, absl::string_view own_key) const {
  ProviderProfileCatalogue::Selection selection;
  if (!ResolveProviders(providers, &selection, out)) return false;
  return CheckCandidateWith(own, providers, selection, out, own_key);
}

bool InterceptorEvaluator::CheckCandidateWith(const SandboxPolicy& own, const std::vector<std::string>& providers,
                                              const ProviderProfileCatalogue::Selection& selection, Outcome* out,
                                              absl::string_view own_key) const {
  // A composition made before from the same own policy (`own_key` names it) and the same profiles (their
  // hashes cover everything a layer is made of) is the same candidate: made once, checked each time.
  std::string memo_key;
  std::shared_ptr<const ComposedCandidate> composed;
  if (!own_key.empty()) {
    memo_key.assign(own_key.data(), own_key.size());
    for (size_t i = 0; i < providers.size(); ++i) {
      absl::StrAppend(&memo_key, "\x1e", providers[i], "\x1f", (*selection.entries[i])->hash);
    }
    ComposedCandidates().Find(memo_key, &composed);
  }
  if (composed == nullptr) {
    std::vector<ProviderLayer> layers;
    layers.reserve(providers.size());
    for (size_t i = 0; i < providers.size(); ++i) layers.emplace_back(providers[i], &(*selection.entries[i])->profile);
    composed = std::make_shared<const ComposedCandidate>(ComposeCandidate(own, layers));
    if (!memo_key.empty()) ComposedCandidates().Keep(memo_key, composed);
  }
  ComposedVerdict verdict = CheckComposed(*ceiling_, ceiling_->current(), own, *composed);
  out->candidate_digest = std::move(verdict.candidate_digest);
  if (verdict.ok()) return true;
  out->Deny(absl::StatusCode::kPermissionDenied, verdict.reason, std::move(verdict.detail));
  return false;
}

namespace {

const google::protobuf::Value* InterceptorField(const google::protobuf::Struct& object, const char* name) {
  auto it = object.fields().find(name);
  return it == object.fields().end() ? nullptr : &it->second;
}

// Admit mode's modify phase replaces the request's spec.policy with the admitted body and reads nothing of
// it: the payload without that member (copied when it has one), so a request's own policy — most of what
// there is to decode — is never decoded. Null when the payload has no spec.policy (decode it as it is).
std::unique_ptr<google::protobuf::Struct> WithoutOwnPolicy(const google::protobuf::Struct& payload) {
  const google::protobuf::Value* spec = InterceptorField(payload, "spec");
  if (spec == nullptr || spec->kind_case() != google::protobuf::Value::kStructValue ||
      InterceptorField(spec->struct_value(), "policy") == nullptr) {
    return nullptr;
  }
  auto stripped = std::make_unique<google::protobuf::Struct>();
  auto& fields = *stripped->mutable_fields();
  for (const auto& [key, value] : payload.fields()) {
    if (key != "spec") fields[key] = value;
  }
  auto& spec_fields = *fields["spec"].mutable_struct_value()->mutable_fields();
  for (const auto& [key, value] : spec->struct_value().fields()) {
    if (key != "policy") spec_fields[key] = value;
  }
  return stripped;
}

}  // namespace

void InterceptorEvaluator::DecideCreateSandbox(const interceptor_v1::InterceptorEvaluation& evaluation,
                                               const google::protobuf::Struct& payload, bool validate, Outcome* out) {
  std::shared_ptr<const os_v1::CreateSandboxRequest> decoded;
  if (options_.admission != nullptr && !validate) {
    if (std::unique_ptr<google::protobuf::Struct> stripped = WithoutOwnPolicy(payload)) {
      // Not the memo's (its key is the whole payload's digest): the rest of a request decodes in microseconds.
      auto request = std::make_shared<os_v1::CreateSandboxRequest>();
      if (absl::Status status = DecodeInterceptorPayloadUncached(*stripped, request.get()); !status.ok()) {
        return out->Deny(absl::StatusCode::kPermissionDenied, "invalid_request", std::string(status.message()));
      }
      decoded = std::move(request);
    }
  }
  if (decoded == nullptr) decoded = InterceptorDecodeSharedOrDeny<os_v1::CreateSandboxRequest>(payload, out);
  if (decoded == nullptr) return;
  const os_v1::CreateSandboxRequest& request = *decoded;
  if (!TakeSandboxName("name", request.name(), request.workspace(), /*required=*/false, out)) return;
  if (options_.admission != nullptr) {
    if (request.name().empty()) {
      return out->Deny(absl::StatusCode::kPermissionDenied, "invalid_request",
                       "admit mode admits the sandbox under its name: send CreateSandbox with name");
    }
    return validate ? ValidateAdmittedSandbox(evaluation, request, out)
                    : AdmitCreateSandbox(evaluation, request, out);
  }
  if (!request.spec().has_policy()) {
    out->Deny(absl::StatusCode::kPermissionDenied, "policy_required",
              "ceiling mode checks the sandbox's own policy: send spec.policy");
    return;
  }
  // A create is user-authored: a reserved key is refused, never stripped (so the policy checked and recorded
  // is the payload's own, which the memo keys below name).
  if (OwnPolicyAsKept(request.spec().policy(), /*strip=*/false, "spec.policy", nullptr, out) == nullptr) return;
  const std::vector<std::string> providers(request.spec().providers().begin(), request.spec().providers().end());
  // The own policy is named by the payload it was decoded from (its digest, out->payload_digest).
  const std::string own_key = absl::StrCat("CreateSandboxRequest.spec.policy\n", out->payload_digest);
  if (!CheckCandidate(request.spec().policy(), providers, out, own_key)) return;
  if (validate && !request.name().empty()) {
    // The record's encoding, made once per payload (the payload names its policy and providers).
    std::shared_ptr<const std::string> encoded;
    if (!EncodedRecords().Find(own_key, &encoded)) {
      encoded = std::make_shared<const std::string>(InterceptorRecords::Encode({request.spec().policy(), providers}));
      EncodedRecords().Keep(own_key, encoded);
    }
    // Stored before the allow is answered: an allowed state is never lost to a restart.
    StoreRecord(evaluation, request.name(), *encoded, nullptr, out);
  }
}

namespace {

// A refusal of the Policy subsystem as a deny: its reason code and detail; FAILED_PRECONDITION where the
// state is unknown (driver or database not answering), PERMISSION_DENIED where the projection was refused.
template <typename Outcome>
void InterceptorDenyAdmission(const absl::Status& status, Outcome* out) {
  std::string reason = common::ReasonOf(status);
  if (reason.empty()) {
    // Not a refusal of the Policy subsystem (a storage or driver error): its text stays in the log.
    LogError(absl::StrCat("interceptor: admission failed: ", absl::StatusCodeToString(status.code()), ": ",
                          status.message()));
    return out->Deny(absl::StatusCode::kFailedPrecondition, "admission_failed",
                     "the admission could not be completed (the gateway's log says why); try again");
  }
  const bool unknown_state = status.code() == absl::StatusCode::kUnavailable ||
                             status.code() == absl::StatusCode::kDeadlineExceeded ||
                             status.code() == absl::StatusCode::kAborted ||
                             status.code() == absl::StatusCode::kInternal || reason == "storage_error" ||
                             reason == "driver_unavailable";
  out->Deny(unknown_state ? absl::StatusCode::kFailedPrecondition : absl::StatusCode::kPermissionDenied, reason,
            std::string(absl::StripPrefix(status.message(), absl::StrCat(reason, ": "))));
}

// RFC 6901: '~' is "~0" and '/' is "~1" in a JSON Pointer's reference token.
std::string InterceptorPointerToken(absl::string_view key) {
  std::string out;
  for (const char c : key) {
    if (c == '~') {
      out += "~0";
    } else if (c == '/') {
      out += "~1";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

// The annotations that tie a stored sandbox to its admitted projection (README §9).
std::vector<std::pair<std::string, std::string>> InterceptorAdmittedAnnotations(
    const InterceptorAdmission::Admitted& admitted, const std::string& decision_id) {
  std::vector<std::pair<std::string, std::string>> out = {
      {kAnnotationPolicyDigest, admitted.digest},
      {kAnnotationPolicyVersion, absl::StrCat(admitted.version)},
      {kAnnotationKeyIds, absl::StrJoin(admitted.key_ids, ",")},
  };
  if (!decision_id.empty()) out.emplace_back(kAnnotationDecisionId, decision_id);
  return out;
}

}  // namespace

namespace {

// Admit mode's context of a CreateSandbox (sandbox_id = name, user_subject = the principal's subject,
// attributes = labels), or false with the deny set when the request cannot be admitted under one: only a
// user creates a sandbox, with a subject, in the default workspace (the name alone is the sandbox id, and
// the push addresses the default workspace).
template <typename Outcome>
bool InterceptorAdmitContext(const interceptor_v1::InterceptorEvaluation& evaluation,
                             const os_v1::CreateSandboxRequest& request, const ContextLimits& limits,
                             driver_v1::RuntimeContext* context, Outcome* out) {
  const std::string kind = InterceptorPrincipal(evaluation, "kind");
  const std::string subject = InterceptorPrincipal(evaluation, "subject");
  if (kind != "user") {
    out->Deny(absl::StatusCode::kPermissionDenied, "invalid_request",
              absl::StrCat("admit mode admits a sandbox a user creates; the principal is of kind '",
                           BoundedText(kind, kMaxAuditFieldBytes), "'"));
    return false;
  }
  if (subject.empty()) {
    out->Deny(absl::StatusCode::kPermissionDenied, "invalid_request",
              "admit mode admits the sandbox for its user: the principal names no subject");
    return false;
  }
  if (!request.workspace().empty() && request.workspace() != "default") {
    out->Deny(absl::StatusCode::kPermissionDenied, "invalid_request",
              absl::StrCat("admit mode serves the default workspace only (the sandbox name is this gateway's sandbox "
                           "id); the request names workspace '", BoundedText(request.workspace(), kMaxAuditFieldBytes),
                           "'"));
    return false;
  }
  // The tenant chooses the builtin driver's tenant:<id> scope (policy/scope.h): it is the operator's to
  // state (AdmitSandbox), never a label the sandbox's creator writes.
  if (request.labels().contains(std::string(policy::kTenantAttribute))) {
    out->Deny(absl::StatusCode::kPermissionDenied, "invalid_request",
              absl::StrCat("labels[\"", policy::kTenantAttribute, "\"]: reserved — the attribute chooses a tenant's "
                           "policy scope, which the sandbox's creator does not choose (admit mode admits the sandbox "
                           "with its labels as the context's attributes)"));
    return false;
  }
  context->set_sandbox_id(request.name());
  context->set_user_subject(subject);
  context->mutable_attributes()->insert(request.labels().begin(), request.labels().end());
  // The admission's own limits, said in the request's terms (the admission would refuse the same context).
  if (absl::Status valid = CheckContext(*context, limits); !valid.ok()) {
    std::string detail(valid.message());
    for (const auto& [from, to] : {std::pair<absl::string_view, absl::string_view>{"context.sandbox_id", "name"},
                                   {"context.user_subject", "the principal's subject"},
                                   {"context.attributes", "labels"}}) {
      if (absl::StartsWith(detail, from)) {
        detail = absl::StrCat(to, detail.substr(from.size()));
        break;
      }
    }
    out->Deny(absl::StatusCode::kPermissionDenied, "invalid_request",
              absl::StrCat(detail, " (admit mode admits the sandbox with this context)"));
    return false;
  }
  return true;
}

}  // namespace

void InterceptorEvaluator::AdmitCreateSandbox(const interceptor_v1::InterceptorEvaluation& evaluation,
                                              const os_v1::CreateSandboxRequest& request, Outcome* out) {
  auto pending = std::make_shared<PendingAdmission>();
  if (!InterceptorAdmitContext(evaluation, request, options_.context_limits, &pending->context, out)) return;
  pending->providers.assign(request.spec().providers().begin(), request.spec().providers().end());
  pending->name = request.name();
  // An unknown provider is refused before anything is admitted.
  if (!ResolveProviders(pending->providers, &pending->selection, out)) return;
  out->pending = std::move(pending);  // the admission is made by Evaluate (or EvaluateAsync), then answered
}

InterceptorAdmission::AdmitCheck InterceptorEvaluator::AdmitCheckFor(
    const interceptor_v1::InterceptorEvaluation& evaluation, Outcome* out, std::shared_ptr<const void> keep) {
  // A fresh admission checks the composed candidate before it commits (a refused one is never admitted),
  // and commits this Evaluate's own audit event with it: one durable write.
  return [this, &evaluation, out, keep = std::move(keep)](const SandboxPolicy& policy,
                                                          std::vector<store::AuditEvent>* events) {
    PendingAdmission& pending = *out->pending;
    trust::CheckResult verdict;
    pending.checked_under = CeilingGuard::StampOf(ceiling_->current());
    // The memo's key for a policy: the hex SHA-256 of bytes that parse to it (here its deterministic
    // serialization, below the served body's own bytes): two keys are equal only for the same bytes.
    pending.checked = policy::Sha256Hex(policy::SerializeDeterministic(policy));
    if (!CheckCandidateWith(policy, pending.providers, pending.selection, out,
                            absl::StrCat("admitted policy\n", pending.checked))) {
      pending.checked.clear();
      pending.denied_by_check = true;
      verdict.reason = out->reason_code;
      verdict.detail = out->detail;
      return verdict;
    }
    events->push_back(InterceptionEvent(evaluation, "modify_operation", *out));
    events->back().outcome = trust::audit::Outcome::kOk;
    events->back().reason = absl::StrCat(RpcOf(evaluation), " modify_operation: allowed");
    out->audited = true;
    return verdict;
  };
}

bool InterceptorEvaluator::AdmissionNeedsCheck(const Outcome& out,
                                               const absl::StatusOr<InterceptorAdmission::Admitted>& admitted) const {
  // A reused admission (ALREADY_EXISTS), one whose policy moved on while it was admitted (the core refreshes
  // it), or one committed under another ceiling than the check read (a ceiling stored meanwhile: the core
  // checks the policy alone against it, not its composition): the ceiling in force on the whole composed
  // candidate of what is served now.
  // (The served digest is of the body's bytes: equal to the checked serialization's, the body is exactly the
  // policy checked; a driver whose bytes are not serialized that way is checked again, never skipped.)
  const PendingAdmission& pending = *out.pending;
  return !admitted.ok() || pending.checked.empty() || pending.checked != admitted->digest ||
         CeilingGuard::StampOf(ceiling_->current()) != pending.checked_under;
}

void InterceptorEvaluator::AdmitAnswered(const interceptor_v1::InterceptorEvaluation& evaluation,
                                         absl::StatusOr<InterceptorAdmission::Admitted> admitted, bool check_again,
                                         Outcome* out) {
  const PendingAdmission& pending = *out->pending;
  const google::protobuf::Struct& payload = evaluation.modify_operation().proposed_operation();
  bool fresh = true;
  if (!admitted.ok()) out->audited = false;  // not committed: Evaluate records the deny
  if (admitted.status().code() == absl::StatusCode::kAlreadyExists) {
    // A retried create (the OpenShell gateway failed after this phase) reuses the admission it made; the
    // same name with another context is another sandbox.
    fresh = false;
    check_again = true;
    auto current = options_.admission->Current(pending.name);
    if (!current.ok()) return InterceptorDenyAdmission(current.status(), out);
    if (!current->has_value()) {
      // Committed (the store refused a second admission) but not in this replica's view yet: another
      // replica admitted it a moment ago, and the replica feed has not brought it here.
      return out->Deny(absl::StatusCode::kFailedPrecondition, "already_admitted",
                       absl::StrCat("sandbox '", pending.name,
                                    "' is admitted already, by another replica of this gateway, and not yet seen "
                                    "here; try again"));
    }
    if (!google::protobuf::util::MessageDifferencer::Equals((*current)->context, pending.context)) {
      return out->Deny(absl::StatusCode::kFailedPrecondition, "already_admitted",
                       absl::StrCat("sandbox '", pending.name,
                                    "' is admitted here already with another context (user subject or labels); "
                                    "delete it first (policyctl delete --sandbox ", pending.name, ")"));
    }
    admitted = **std::move(current);
  }
  if (!admitted.ok()) {
    if (pending.denied_by_check) return;  // the deny the composed check set stays as it is
    return InterceptorDenyAdmission(admitted.status(), out);
  }
  if (check_again) {
    if (!CheckCandidate(*admitted->policy, pending.providers, out,
                        absl::StrCat("admitted policy\n", admitted->digest))) {
      if (fresh) {
        if (absl::Status withdrawn = options_.admission->Withdraw(pending.name); !withdrawn.ok()) {
          LogError(absl::StrCat("interceptor: the admission of sandbox '", pending.name,
                                "' refused by the composed check could not be withdrawn: ", withdrawn.message()));
        }
      }
      return;
    }
  }
  // The served body's digest names it (the registry's envelope was verified: its digest is of these bytes).
  auto body = MessageToInterceptorValue(*admitted->policy, absl::StrCat("body sha256 ", admitted->digest));
  if (!body.ok()) {
    return out->Deny(absl::StatusCode::kFailedPrecondition, "internal_error", std::string(body.status().message()));
  }
  // RFC 6902: "replace" needs the member to exist, "add" makes or replaces it.
  const google::protobuf::Value* spec = InterceptorField(payload, "spec");
  auto* policy_patch = &out->patches.emplace_back();
  if (spec == nullptr || spec->kind_case() != google::protobuf::Value::kStructValue) {
    policy_patch->set_op("add");
    policy_patch->set_path("/spec");
    (*policy_patch->mutable_value()->mutable_struct_value()->mutable_fields())["policy"] = **body;
  } else {
    policy_patch->set_op(InterceptorField(spec->struct_value(), "policy") != nullptr ? "replace" : "add");
    policy_patch->set_path("/spec/policy");
    out->shared_values.emplace_back(out->patches.size() - 1, *std::move(body));
  }
  const auto annotations = InterceptorAdmittedAnnotations(*admitted, out->decision_id);
  const google::protobuf::Value* existing = InterceptorField(payload, "annotations");
  if (existing == nullptr || existing->kind_case() != google::protobuf::Value::kStructValue) {
    auto* patch = &out->patches.emplace_back();
    patch->set_op("add");
    patch->set_path("/annotations");
    auto& fields = *patch->mutable_value()->mutable_struct_value()->mutable_fields();
    for (const auto& [key, value] : annotations) fields[key].set_string_value(value);
  } else {
    for (const auto& [key, value] : annotations) {
      auto* patch = &out->patches.emplace_back();
      patch->set_op("add");
      patch->set_path(absl::StrCat("/annotations/", InterceptorPointerToken(key)));
      patch->mutable_value()->set_string_value(value);
    }
  }
}

void InterceptorEvaluator::ValidateAdmittedSandbox(const interceptor_v1::InterceptorEvaluation& evaluation,
                                                   const os_v1::CreateSandboxRequest& request, Outcome* out) {
  driver_v1::RuntimeContext context;
  if (!InterceptorAdmitContext(evaluation, request, options_.context_limits, &context, out)) return;
  auto current = options_.admission->Current(request.name());
  if (!current.ok()) return InterceptorDenyAdmission(current.status(), out);
  if (!current->has_value()) {
    return out->Deny(absl::StatusCode::kFailedPrecondition, "unknown_sandbox",
                     absl::StrCat("sandbox '", request.name(),
                                  "' is not admitted here: admit mode admits it at CreateSandbox's modify_operation "
                                  "phase (bind that phase to this interceptor)"));
  }
  const InterceptorAdmission::Admitted& admitted = **current;
  // The request that reaches validate is the one admitted: the same user and labels (a later interceptor,
  // or a binding without our modify phase, cannot borrow another sandbox's admission).
  if (!google::protobuf::util::MessageDifferencer::Equals(admitted.context, context)) {
    return out->Deny(absl::StatusCode::kPermissionDenied, "policy_not_admitted",
                     absl::StrCat("sandbox '", request.name(),
                                  "' was admitted for another user subject or other labels than this request's"));
  }
  if (!request.spec().has_policy() ||
      !google::protobuf::util::MessageDifferencer::Equals(request.spec().policy(), *admitted.policy)) {
    return out->Deny(absl::StatusCode::kPermissionDenied, "policy_not_admitted",
                     absl::StrCat("spec.policy of sandbox '", request.name(), "' is not the body admitted for it (digest ",
                                  admitted.digest, ", version ", admitted.version,
                                  "): it was changed after this interceptor's modify phase"));
  }
  for (const auto& [key, value] : InterceptorAdmittedAnnotations(admitted, "")) {
    auto it = request.annotations().find(key);
    if (it == request.annotations().end() || it->second != value) {
      return out->Deny(absl::StatusCode::kPermissionDenied, "policy_not_admitted",
                       absl::StrCat("annotation ", key, " of sandbox '", request.name(), "' is ",
                                    it == request.annotations().end()
                                        ? "missing"
                                        : absl::StrCat("'", BoundedText(it->second, kMaxAuditFieldBytes), "'"),
                                    ", not '", value, "': it was changed after this interceptor's modify phase"));
    }
  }
  const std::vector<std::string> providers(request.spec().providers().begin(), request.spec().providers().end());
  // The served body's digest names the policy in the composition memo (as the admission's check names it).
  if (!CheckCandidate(*admitted.policy, providers, out, absl::StrCat("admitted policy\n", admitted.digest))) return;
  // Stored before the allow is answered: later merges, attaches and pushes start from it.
  StoreRecord(evaluation, request.name(), InterceptorRecords::Encode({*admitted.policy, providers}), nullptr, out);
}

bool InterceptorEvaluator::AdmitModeAllowsWrite(const os_v1::UpdateConfigRequest& request, Outcome* out,
                                                bool* admitted_body, const SandboxPolicy* kept) const {
  if (admitted_body != nullptr) *admitted_body = false;
  if (options_.admission == nullptr) return true;
  if (!AdmitModeAnnotationsHold(request, out)) return false;
  if (!request.global() && request.has_policy() && request.merge_operations_size() == 0) {
    // The push of a changed projection (or a write of the body already served) is what the driver said.
    auto current = options_.admission->Current(request.name());
    if (!current.ok()) {
      InterceptorDenyAdmission(current.status(), out);
      return false;
    }
    if (current->has_value() &&
        google::protobuf::util::MessageDifferencer::Equals(kept != nullptr ? *kept : request.policy(),
                                                           *(*current)->policy)) {
      if (admitted_body != nullptr) *admitted_body = true;
      return true;
    }
  }
  if (options_.admission->permits_mutation()) return true;
  out->Deny(absl::StatusCode::kPermissionDenied, "mutation_not_permitted",
            absl::StrCat(request.global() ? "the global policy" : absl::StrCat("the policy of sandbox '", request.name(), "'"),
                         " comes from this gateway's Policy subsystem, whose driver does not permit mutation: change "
                         "it where the driver takes its policies from; the change is then pushed here"));
  return false;
}

bool InterceptorEvaluator::AdmitModeAnnotationsHold(const os_v1::UpdateConfigRequest& request, Outcome* out) const {
  if (!request.global() && !request.workspace().empty() && request.workspace() != "default") {
    // Admitted sandboxes are the default workspace's (their name is the sandbox id): a sandbox of the same
    // name elsewhere is another one, never admitted here, and nothing of it is written in admit mode.
    out->Deny(absl::StatusCode::kPermissionDenied, "invalid_request",
              absl::StrCat("admit mode serves the default workspace only; the request names workspace '",
                           BoundedText(request.workspace(), kMaxAuditFieldBytes), "'"));
    return false;
  }
  bool any = false;
  for (const auto& [key, value] : request.annotations()) any = any || absl::StartsWith(key, "policy-gateway/");
  if (!any) return true;
  // The policy-gateway/* annotations tie a sandbox to its admitted projection: only that projection's
  // own (the push) may be written.
  std::optional<InterceptorAdmission::Admitted> admitted;
  if (!request.global()) {
    auto current = options_.admission->Current(request.name());
    if (!current.ok()) {
      InterceptorDenyAdmission(current.status(), out);
      return false;
    }
    admitted = *std::move(current);
  }
  for (const auto& [key, value] : request.annotations()) {
    if (!absl::StartsWith(key, "policy-gateway/") || key == kAnnotationDecisionId) continue;
    bool holds = false;
    if (admitted.has_value()) {
      for (const auto& [own_key, own_value] : InterceptorAdmittedAnnotations(*admitted, "")) {
        if (own_key == key) holds = own_value == value;
      }
    }
    if (!holds) {
      out->Deny(absl::StatusCode::kPermissionDenied, "policy_not_admitted",
                absl::StrCat("annotation ", BoundedText(key, kMaxAuditFieldBytes), " = '",
                             BoundedText(value, kMaxAuditFieldBytes), "' does not name the projection admitted for ",
                             request.global() ? std::string("the global policy")
                                              : absl::StrCat("sandbox '", request.name(), "'"),
                             ": only this gateway writes policy-gateway/* annotations"));
      return false;
    }
  }
  return true;
}

bool InterceptorEvaluator::TakeSandboxName(const char* field, const std::string& name, const std::string& workspace,
                                           bool required, Outcome* out) const {
  out->sandbox = name;  // the audit event bounds and escapes it (InterceptionEvent)
  out->record_key = InterceptorRecords::Key(workspace, name);
  if (workspace != "default") out->workspace = workspace;
  if (name.empty() && !required) return true;
  if (absl::Status valid = CheckSandboxId(name, options_.context_limits); !valid.ok()) {
    out->Deny(absl::StatusCode::kPermissionDenied, "invalid_request",
              absl::StrCat(field, ": ", valid.message(), " (a sandbox name is this gateway's sandbox id)"));
    return false;
  }
  // A workspace is part of the record's key: held to the same rules (no control character can join it).
  if (absl::Status valid = CheckSandboxId(workspace, options_.context_limits); !workspace.empty() && !valid.ok()) {
    out->Deny(absl::StatusCode::kPermissionDenied, "invalid_request",
              absl::StrCat("workspace: ", valid.message(), " (held to a sandbox name's rules)"));
    return false;
  }
  return true;
}

void InterceptorEvaluator::DecideUpdateConfig(const interceptor_v1::InterceptorEvaluation& evaluation,
                                              const google::protobuf::Struct& payload, bool validate, Outcome* out) {
  os_v1::UpdateConfigRequest request;
  if (!InterceptorDecodeOrDeny(payload, &request, out)) return;
  // Upstream trims the key before it looks the setting up: trimmed, it may name another setting than here.
  if (policy::UpstreamTrimMayChange(request.setting_key())) {
    out->Deny(absl::StatusCode::kPermissionDenied, "invalid_request",
              "settingKey: white space or a non-ASCII character at either end (upstream trims the key before it "
              "names a setting: send the key itself)");
    return;
  }
  // A sandbox-scoped write names its sandbox: unnamed, it would be checked against nothing recorded.
  if (!request.global() && !TakeSandboxName("name", request.name(), request.workspace(), /*required=*/true, out)) {
    return;
  }
  // First, whatever else the request carries: a policy beside it must not carry auto-approval past this check.
  if (request.setting_key() == "proposal_approval_mode" && !request.delete_setting() &&
      absl::AsciiStrToLower(request.setting_value().string_value()) == "auto") {
    out->Deny(absl::StatusCode::kPermissionDenied, kInterceptorApprovalUnverifiable,
              "auto-approval applies proposals never checked here; send UpdateConfig with the policy");
    return;
  }
  // Upstream refuses a request carrying more than one of policy, setting and mergeOperations, or none
  // (handle_update_config: "mutually exclusive"), and a global policy with delete_setting: allowed here, its policy
  // would be recorded as the sandbox's while the OpenShell gateway keeps the one before, and later attaches
  // would be checked against a policy nobody enforces (review 99).
  const int mutations = int{request.has_policy()} + int{!request.setting_key().empty()} +
                        int{request.merge_operations_size() > 0};
  if (mutations != 1 || (request.global() && request.has_policy() && request.delete_setting())) {
    out->Deny(absl::StatusCode::kPermissionDenied, "invalid_request",
              mutations == 0 ? "one of policy, settingKey or mergeOperations is required (upstream refuses the request)"
                             : "policy, settingKey and mergeOperations are mutually exclusive, and a global policy "
                               "takes no deleteSetting (upstream refuses the request; send each as a request of its own)");
    return;
  }
  if (request.merge_operations_size() > 0) {
    if (request.global() || request.has_policy()) {
      out->Deny(absl::StatusCode::kPermissionDenied, "invalid_request",
                "mergeOperations apply to one sandbox's policy, without policy and without global");
      return;
    }
    if (!AdmitModeAllowsWrite(request, out)) return;
    if (validate) {
      // Our modify phase replaces them; reaching validate they would be merged by upstream's own rules,
      // unchecked.
      out->Deny(absl::StatusCode::kPermissionDenied, "merge_unverifiable",
                "mergeOperations reached the validate phase unreplaced (bind UpdateConfig's modify_operation "
                "phase to this interceptor), or send UpdateConfig with the full policy");
      return;
    }
    auto stored = records_.Get(out->record_key);
    if (!stored.ok()) return out->RecordFailed(request.name(), "read", stored.status());
    const std::optional<InterceptorRecords::Record>& record = *stored;
    if (!record.has_value()) {
      out->Deny(absl::StatusCode::kFailedPrecondition, "unknown_sandbox",
                absl::StrCat("no policy is recorded here for sandbox ", InterceptorRecords::Describe(out->record_key),
                             ", so mergeOperations cannot be applied and checked (a sandbox from before this "
                             "interceptor: policyctl interceptor seed)"));
      return;
    }
    SandboxPolicy merged = record->policy;
    if (absl::Status applied = ApplyUpstreamMergeOperations(request.merge_operations(), &merged); !applied.ok()) {
      out->Deny(absl::StatusCode::kFailedPrecondition, common::ReasonOf(applied),
                std::string(absl::StripPrefix(applied.message(), absl::StrCat(common::ReasonOf(applied), ": "))));
      return;
    }
    // The merged policy is what this modify phase sends as the full `/policy`: user-authored, so a merge
    // adding a reserved key is refused here as upstream would refuse that policy.
    if (OwnPolicyAsKept(merged, /*strip=*/false, "mergeOperations", nullptr, out) == nullptr) return;
    if (!CheckCandidate(merged, record->providers, out)) return;
    auto value = MessageToInterceptorValue(merged);
    if (!value.ok()) {
      out->Deny(absl::StatusCode::kFailedPrecondition, "internal_error", std::string(value.status().message()));
      return;
    }
    auto* remove = &out->patches.emplace_back();
    remove->set_op("remove");
    remove->set_path("/mergeOperations");
    auto* add = &out->patches.emplace_back();
    add->set_op("add");
    add->set_path("/policy");
    out->shared_values.emplace_back(out->patches.size() - 1, *std::move(value));
    return;
  }
  if (request.has_policy()) {
    // A sandbox's own sync (principal kind "sandbox") has its `_provider_*` entries dropped by upstream before
    // it keeps the policy; anyone else's policy with one is refused upstream. Checked and recorded: the rest.
    SandboxPolicy stripped;
    const SandboxPolicy* own = OwnPolicyAsKept(request.policy(), InterceptorPrincipal(evaluation, "kind") == "sandbox",
                                               "policy", &stripped, out);
    if (own == nullptr) return;
    bool admitted_body = false;
    if (!AdmitModeAllowsWrite(request, out, &admitted_body, own)) return;
    std::vector<std::string> providers;
    std::optional<std::string> previous;  // the record's bytes the providers came from
    if (!request.global()) {
      auto record = records_.Get(out->record_key, &previous);
      if (!record.ok()) return out->RecordFailed(request.name(), "read", record.status());
      if (!record->has_value() && !admitted_body) {
        // Upstream composes the policy with the sandbox's providers, which are not known here: checked
        // alone, a policy that drops a deny rule could let a provider's layer allow beyond the ceiling.
        out->Deny(absl::StatusCode::kFailedPrecondition, "unknown_sandbox",
                  absl::StrCat("no policy is recorded here for sandbox ", InterceptorRecords::Describe(out->record_key),
                               ", so its providers are not known and the policy cannot be checked composed with their "
                               "layers; a sandbox is recorded when it is created through this interceptor"));
        return;
      }
      if (record->has_value()) providers = (*record)->providers;
    }
    if (!CheckCandidate(*own, providers, out)) return;
    // Admit mode: the admitted body is recorded by the push once the OpenShell gateway accepted it (an allow
    // is not a commit): a push lost between here and upstream's answer is then still seen as not pushed.
    if (validate && !request.global() && !request.name().empty() && !admitted_body) {
      StoreRecord(evaluation, request.name(), InterceptorRecords::Encode({*own, providers}), &previous, out);
    }
    return;
  }
  // Neither a policy nor merges (a setting, annotations): in admit mode its policy-gateway/* annotations
  // must still name the sandbox's admitted projection.
  if (request.annotations().empty() || options_.admission == nullptr) return;
  bool ours = false;
  for (const auto& [key, value] : request.annotations()) ours = ours || absl::StartsWith(key, "policy-gateway/");
  if (ours) AdmitModeAnnotationsHold(request, out);
}

void InterceptorEvaluator::Decide(const interceptor_v1::InterceptorEvaluation& evaluation, bool validate, Outcome* out) {
  const google::protobuf::Struct& payload = validate ? evaluation.validate().proposed_operation()
                                                     : evaluation.modify_operation().proposed_operation();
  const std::string& method = evaluation.method();
  if (method == "CreateSandbox") return DecideCreateSandbox(evaluation, payload, validate, out);
  if (method == "UpdateConfig") return DecideUpdateConfig(evaluation, payload, validate, out);
  if (method == "AttachSandboxProvider") {
    os_v1::AttachSandboxProviderRequest request;
    if (!InterceptorDecodeOrDeny(payload, &request, out)) return;
    if (!TakeSandboxName("sandboxName", request.sandbox_name(), request.workspace(), /*required=*/true, out)) return;
    std::vector<std::string> providers;
    SandboxPolicy own;
    std::optional<std::string> previous;
    auto record = records_.Get(out->record_key, &previous);
    if (!record.ok()) return out->RecordFailed(request.sandbox_name(), "read", record.status());
    if (!record->has_value()) {
      // An unknown provider is refused as such; a known one cannot be composed with a policy not seen here.
      ProviderProfileCatalogue::Selection ignored;
      if (!ResolveProviders({request.provider_name()}, &ignored, out)) return;
      return out->Deny(absl::StatusCode::kFailedPrecondition, "unknown_sandbox",
                       absl::StrCat("no policy is recorded here for sandbox ",
                                    InterceptorRecords::Describe(out->record_key),
                                    ", so the candidate composed with provider '", request.provider_name(),
                                    "' cannot be checked against the ceiling (a sandbox from before this interceptor: "
                                    "policyctl interceptor seed)"));
    }
    providers = (*record)->providers;
    own = (*record)->policy;
    // Attached already (another replica's attach of it, say): the composition is the one recorded.
    if (std::find(providers.begin(), providers.end(), request.provider_name()) == providers.end()) {
      providers.push_back(request.provider_name());
    }
    // The whole composed candidate, the new layer included.
    if (!CheckCandidate(own, providers, out)) return;
    if (validate) {
      // Later candidates of this sandbox compose the attached provider's layer too.
      StoreRecord(evaluation, request.sandbox_name(), InterceptorRecords::Encode({own, providers}), &previous, out);
    }
    return;
  }
  if (method == "DetachSandboxProvider") {
    os_v1::DetachSandboxProviderRequest request;
    if (!InterceptorDecodeOrDeny(payload, &request, out)) return;
    if (!TakeSandboxName("sandboxName", request.sandbox_name(), request.workspace(), /*required=*/true, out)) return;
    // A detach narrows only if no deny rule of the layer hid anything: what remains is checked whole.
    std::optional<std::string> previous;
    auto record = records_.Get(out->record_key, &previous);
    if (!record.ok()) return out->RecordFailed(request.sandbox_name(), "read", record.status());
    if (!record->has_value()) {
      // Upstream composes what remains, which is not known here: a detach narrows only when no deny rule of
      // the layer hid anything, and that needs the rest of the composition.
      return out->Deny(absl::StatusCode::kFailedPrecondition, "unknown_sandbox",
                       absl::StrCat("no policy is recorded here for sandbox ",
                                    InterceptorRecords::Describe(out->record_key), ", so what remains after detaching "
                                    "provider '", request.provider_name(), "' cannot be checked against the ceiling"));
    }
    {
      std::vector<std::string> remaining;
      for (const std::string& p : (*record)->providers) {
        if (p != request.provider_name()) remaining.push_back(p);
      }
      if (!CheckCandidate((*record)->policy, remaining, out)) return;
      // What was checked is what is recorded, and only over the record it came from (another write since,
      // an attach on another replica say: decided again on it).
      if (validate) {
        StoreRecord(evaluation, request.sandbox_name(), InterceptorRecords::Encode({(*record)->policy, remaining}), &previous,
                    out);
      }
    }
    return;
  }
  if (method == "ApproveDraftChunk" || method == "ApproveAllDraftChunks") {
    // The sandbox name is read for the audit event only; the request carries chunk ids, not content.
    google::protobuf::Message* request = nullptr;
    os_v1::ApproveDraftChunkRequest one;
    os_v1::ApproveAllDraftChunksRequest all;
    request = method == "ApproveDraftChunk" ? static_cast<google::protobuf::Message*>(&one) : &all;
    if (!InterceptorDecodeOrDeny(payload, request, out)) return;
    out->sandbox = method == "ApproveDraftChunk" ? one.name() : all.name();
    return out->Deny(absl::StatusCode::kPermissionDenied, kInterceptorApprovalUnverifiable,
                     "a draft-chunk approval carries chunk ids, not their content, so the policy it makes cannot be "
                     "checked against the ceiling; send UpdateConfig with the policy (full, or mergeOperations)");
  }
  if (method == "EditDraftChunk") {
    os_v1::EditDraftChunkRequest request;
    if (!InterceptorDecodeOrDeny(payload, &request, out)) return;
    out->sandbox = request.name();
    return;
  }
  if (method == "UndoDraftChunk") {
    os_v1::UndoDraftChunkRequest request;
    if (!InterceptorDecodeOrDeny(payload, &request, out)) return;
    if (!TakeSandboxName("name", request.name(), request.workspace(), /*required=*/true, out)) return;
    if (options_.admission != nullptr && !options_.admission->permits_mutation()) {
      // The policy is the Policy subsystem's; an undo would change it (and forget what was pushed).
      return out->Deny(absl::StatusCode::kPermissionDenied, "mutation_not_permitted",
                       absl::StrCat("the policy of sandbox '", request.name(),
                                    "' comes from this gateway's Policy subsystem, whose driver does not permit "
                                    "mutation: a draft chunk cannot be undone into it"));
    }
    // The undo removes a rule named by chunk id, not by content: what remains cannot be checked (removing a
    // rule with deny rules widens), and the record here could no longer say what upstream holds.
    return out->Deny(absl::StatusCode::kPermissionDenied, kInterceptorApprovalUnverifiable,
                     "a draft-chunk undo carries a chunk id, not the rule it removes, so the policy it leaves cannot be "
                     "checked against the ceiling; send UpdateConfig with the policy without that rule");
  }
  if (method == "ImportProviderProfiles" || method == "UpdateProviderProfiles" || method == "DeleteProviderProfile") {
    os_v1::ImportProviderProfilesRequest import_request;
    os_v1::UpdateProviderProfilesRequest update_request;
    os_v1::DeleteProviderProfileRequest delete_request;
    google::protobuf::Message* request = &delete_request;
    if (method == "ImportProviderProfiles") request = &import_request;
    if (method == "UpdateProviderProfiles") request = &update_request;
    if (!InterceptorDecodeOrDeny(payload, request, out)) return;
    if (options_.profiles == nullptr) return;  // no catalogue here: upstream's own is not this gateway's to guard
    auto count = options_.profiles->Count();
    if (!count.ok()) {
      LogError(absl::StrCat("interceptor: the provider profiles could not be counted: ", count.status().message()));
      return out->Deny(absl::StatusCode::kFailedPrecondition, "storage_error",
                       "this gateway's provider-profile catalogue could not be read, so a profile write is not "
                       "allowed (fail closed); try again");
    }
    if (*count > 0) {
      return out->Deny(absl::StatusCode::kPermissionDenied, "profile_catalogue_managed",
                       absl::StrCat("provider profiles are managed in this gateway's signed catalogue (", *count,
                                    " profile(s)); author them with `policyctl profile set|delete`, not ", method));
    }
    return;  // an empty catalogue manages nothing: upstream's own profiles are not this gateway's to guard
  }
  out->Deny(absl::StatusCode::kPermissionDenied, "unbound_method",
            absl::StrCat(kInterceptorService, "/", method, " is not bound to this interceptor"));
}

std::string InterceptorEvaluator::RpcOf(const interceptor_v1::InterceptorEvaluation& evaluation) {
  return absl::StrCat(evaluation.service(), "/", evaluation.method());
}

bool InterceptorEvaluator::StoreRecord(const interceptor_v1::InterceptorEvaluation& evaluation, const std::string& name,
                                       std::string encoded, const std::optional<std::string>* previous, Outcome* out) {
  // Review (stop 70): the record and the allow's event were two transactions, so a record could commit
  // whose allow the audit log never held (the event's write failing, or the process ending between them).
  store::AuditEvent event = AllowEvent(evaluation, "validate", *out);
  const absl::Status put =
      records_.PutEncoded(out->record_key, std::move(encoded), out->catalogue_generation, previous, &event);
  if (!put.ok()) {
    out->RecordFailed(name, "stored", put);
    return false;
  }
  out->audited = true;
  return true;
}

store::AuditEvent InterceptorEvaluator::AllowEvent(const interceptor_v1::InterceptorEvaluation& evaluation,
                                                   const std::string& phase, const Outcome& outcome) {
  return AuditRecorder::Prepare(InterceptionEvent(evaluation, phase, outcome), trust::audit::Outcome::kOk,
                                absl::StrCat(RpcOf(evaluation), " ", phase, ": allowed"));
}

store::AuditEvent InterceptorEvaluator::InterceptionEvent(const interceptor_v1::InterceptorEvaluation& evaluation,
                                                          const std::string& phase, const Outcome& outcome) {
  const std::string kind = InterceptorPrincipal(evaluation, "kind");
  const std::string subject = kind == "sandbox" ? InterceptorPrincipal(evaluation, "sandbox_id")
                                                : InterceptorPrincipal(evaluation, "subject");
  store::AuditEvent event = AuditRecorder::For(trust::audit::Type::kInterception, outcome.sandbox);
  event.policy_digest = outcome.candidate_digest;
  event.actor = BoundedText(absl::StrCat("openshell:", kind.empty() ? "unknown" : kind, ":", subject), kMaxAuditFieldBytes);
  event.audit_context = {
      {"decision_id", outcome.decision_id},
      {"rpc", BoundedText(RpcOf(evaluation), kMaxAuditFieldBytes)},
      {"phase", phase},
      {"decision", outcome.allowed ? "allow" : "deny"},
      {"principal_kind", BoundedText(kind, kMaxAuditFieldBytes)},
      {"principal_subject", BoundedText(subject, kMaxAuditFieldBytes)},
  };
  if (!outcome.workspace.empty()) event.audit_context["workspace"] = BoundedText(outcome.workspace, kMaxAuditFieldBytes);
  event.sandbox_id = BoundedText(event.sandbox_id, kMaxAuditFieldBytes);
  return event;
}

absl::Status InterceptorEvaluator::RecordPushed(const std::string& key, const SandboxPolicy& pushed) {
  SharedHold steady_catalogue(options_.profiles != nullptr ? &options_.profiles->change_lock() : nullptr);
  for (int attempt = 1;; ++attempt) {
    if (attempt > 1) {
      // Another replica's change holds the catalogue: a moment for it, without holding this one's.
      steady_catalogue.Release();
      absl::SleepFor(absl::Milliseconds(10 << (attempt - 2)));
      steady_catalogue.Take();
    }
    // The generation before anything is read: what this record is fenced at when no layer was resolved
    // (a provider deleted or not verifying: the check refused before reading one).
    std::optional<uint64_t> generation;
    if (options_.profiles != nullptr) {
      auto read = options_.profiles->Generation();
      if (!read.ok()) return read.status();
      generation = *read;
    }
    std::optional<std::string> previous;
    auto recorded = records_.Get(key, &previous);
    if (!recorded.ok()) return recorded.status();
    if (!recorded->has_value()) return absl::OkStatus();
    const std::vector<std::string>& providers = (*recorded)->providers;
    Outcome out;
    out.catalogue_generation = generation;
    if (!CheckCandidate(pushed, providers, &out)) {
      LogError(absl::StrCat("interceptor push: sandbox ", InterceptorRecords::Describe(key),
                            ": the pushed policy, composed with its providers' layers now, is refused: ", out.Reason(),
                            " (a profile change committed after the push was checked); recorded all the same, as "
                            "the OpenShell gateway holds it"));
    }
    absl::Status put = records_.Put(key, {pushed, providers}, out.catalogue_generation, &previous);
    const std::string reason = common::ReasonOf(put);
    if ((reason != "catalogue_changed" && reason != "record_changed") || attempt == kPushRecordAttempts) return put;
  }
}

interceptor_v1::InterceptorResult InterceptorEvaluator::Evaluate(const interceptor_v1::InterceptorEvaluation& evaluation,
                                                                 std::string payload_digest) {
  interceptor_v1::InterceptorResult result;
  Evaluate(evaluation, std::move(payload_digest), &result);
  return result;
}

void InterceptorEvaluator::Begin(const interceptor_v1::InterceptorEvaluation& evaluation, std::string payload_digest,
                                 Outcome* out, std::string* phase_out) {
  Outcome& outcome = *out;
  // What the memos are keyed on: computed here when the caller did not (InterceptorPayloadDigest).
  if (payload_digest.empty() && evaluation.has_validate()) {
    payload_digest = InterceptorPayloadDigest(evaluation.validate().proposed_operation());
  } else if (payload_digest.empty() && evaluation.has_modify_operation()) {
    payload_digest = InterceptorPayloadDigest(evaluation.modify_operation().proposed_operation());
  }
  outcome.payload_digest = std::move(payload_digest);
  outcome.decision_id = InterceptorNewDecisionId();
  std::string& phase = *phase_out;
  switch (evaluation.phase_case()) {
    case interceptor_v1::InterceptorEvaluation::kModifyOperation: phase = "modify_operation"; break;
    case interceptor_v1::InterceptorEvaluation::kValidate: phase = "validate"; break;
    case interceptor_v1::InterceptorEvaluation::kPostCommit: phase = "post_commit"; break;
    case interceptor_v1::InterceptorEvaluation::PHASE_NOT_SET: phase = "unspecified"; break;
  }
  if (evaluation.service() != kInterceptorService) {
    outcome.Deny(absl::StatusCode::kPermissionDenied, "unbound_method",
                 absl::StrCat("service '", evaluation.service(), "' is not bound to this interceptor"));
  } else if (evaluation.phase_case() == interceptor_v1::InterceptorEvaluation::kPostCommit) {
    // No binding has post_commit; a post-commit deny is a contract violation upstream: allow, and record.
  } else if (evaluation.phase_case() == interceptor_v1::InterceptorEvaluation::PHASE_NOT_SET) {
    outcome.Deny(absl::StatusCode::kPermissionDenied, "invalid_request", "the evaluation names no phase");
  } else {
    const bool validate = evaluation.phase_case() == interceptor_v1::InterceptorEvaluation::kValidate;
    // A validate records what it composed: no profile change is checked and written meanwhile in this
    // process (ProviderProfileCatalogue::change_lock).
    SharedHold steady_catalogue(validate && options_.profiles != nullptr ? &options_.profiles->change_lock() : nullptr);
    // A validate whose record met a catalogue changed since its layers were read (another replica's
    // change) is decided again on the new catalogue, a few times at most; nothing was written for it.
    for (int attempt = 1;; ++attempt) {
      Decide(evaluation, validate, &outcome);
      const bool moved = outcome.reason_code == "catalogue_changed" || outcome.reason_code == "record_changed";
      if (!validate || !moved || attempt == kDecideAttempts) break;
      // A change being committed on another replica, or the record written meanwhile: a moment (10, then
      // 20 ms), without holding
      // this gateway's catalogue (a change waiting here would hold every other validate back meanwhile).
      steady_catalogue.Release();
      absl::SleepFor(absl::Milliseconds(10 << (attempt - 1)));
      steady_catalogue.Take();
      Outcome again;
      again.payload_digest = std::move(outcome.payload_digest);
      again.decision_id = std::move(outcome.decision_id);
      outcome = std::move(again);
    }
  }
}

bool InterceptorEvaluator::MayAdmit(const interceptor_v1::InterceptorEvaluation& evaluation) const {
  return options_.admission != nullptr && evaluation.service() == kInterceptorService &&
         evaluation.method() == "CreateSandbox" && evaluation.has_modify_operation();
}

bool InterceptorEvaluator::DecidesWithoutBlocking(const interceptor_v1::InterceptorEvaluation& evaluation) const {
  // Admit mode's CreateSandbox modify: decoded, its context made and its providers resolved — from the
  // catalogue, which reads the store's generation, unless it names none — then admitted (callbacks).
  if (!MayAdmit(evaluation) || !options_.admission->admits_without_blocking()) return false;
  const google::protobuf::Value* spec = InterceptorField(evaluation.modify_operation().proposed_operation(), "spec");
  if (spec == nullptr) return true;
  if (spec->kind_case() != google::protobuf::Value::kStructValue) return true;  // refused as it decodes
  const google::protobuf::Value* providers = InterceptorField(spec->struct_value(), "providers");
  // Absent, null or an empty list names none; anything else may name one (or is refused as it decodes).
  return providers == nullptr || providers->kind_case() == google::protobuf::Value::kNullValue ||
         (providers->kind_case() == google::protobuf::Value::kListValue && providers->list_value().values().empty());
}

bool InterceptorEvaluator::AnswerAudits(const Outcome& out) { return !out.audited || !out.allowed; }

void InterceptorEvaluator::Answer(const interceptor_v1::InterceptorEvaluation& evaluation, const std::string& phase,
                                  Outcome& outcome, interceptor_v1::InterceptorResult* response) {
  // An allow is answered only once its event is durable (everything is audited): one whose event cannot
  // be written is a deny (fail closed), recorded below if the store takes that. An allow committed with
  // its admission is audited already.
  bool audited = !AnswerAudits(outcome);
  if (outcome.allowed && !audited) {
    const absl::Status committed = AuditRecorder(audit_).Commit(AllowEvent(evaluation, phase, outcome));
    audited = committed.ok();
    outcome.audited = audited;  // an exception building the answer below is then followed by a refusal
    if (!audited) {
      outcome.Deny(absl::StatusCode::kFailedPrecondition, "storage_error",
                   "the decision could not be audited, so nothing is allowed (fail closed); try again");
      outcome.patches.clear();
      outcome.shared_values.clear();
    }
  }
  interceptor_v1::InterceptorResult& result = *response;
  result.Clear();
  const std::string& decision_id = outcome.decision_id;
  const std::string decision = outcome.allowed ? "allow" : "deny";
  result.set_allowed(outcome.allowed);
  auto& annotations = *result.mutable_log_annotations();
  annotations[kAnnotationDecisionId] = decision_id;
  annotations[kAnnotationDecision] = decision;
  if (!outcome.candidate_digest.empty()) annotations[kAnnotationCandidateDigest] = outcome.candidate_digest;
  if (!outcome.allowed) {
    result.set_reason(outcome.Reason());
    result.set_status_code(outcome.code == absl::StatusCode::kFailedPrecondition ? "FAILED_PRECONDITION"
                                                                                 : "PERMISSION_DENIED");
    annotations[kAnnotationReasonCode] = outcome.reason_code;
  } else {
    // Each patch handed over, not copied: a result on an arena (the service's) takes ownership of a heap
    // object as it is. A shared value (kilobytes of Struct: the admitted or merged policy) is copied once,
    // into the result's own arena, never onto the heap first.
    std::vector<const google::protobuf::Value*> shared(outcome.patches.size(), nullptr);
    for (const auto& [index, value] : outcome.shared_values) shared[index] = value.get();
    for (size_t i = 0; i < outcome.patches.size(); ++i) {
      if (shared[i] == nullptr) {
        result.mutable_patches()->AddAllocated(new interceptor_v1::JsonPatch(std::move(outcome.patches[i])));
        continue;
      }
      // Made on the result's arena (a heap patch would copy the value onto the heap) and filled there.
      interceptor_v1::JsonPatch* patch = result.add_patches();
      patch->set_op(std::move(*outcome.patches[i].mutable_op()));
      patch->set_path(std::move(*outcome.patches[i].mutable_path()));
      patch->set_from(std::move(*outcome.patches[i].mutable_from()));
      *patch->mutable_value() = *shared[i];
    }
  }

  // A deny is recorded here — also one decided after an admission committed (the served policy moved on
  // and was refused), or an allow whose event could not be written (above).
  if (!audited) {
    AuditRecorder(audit_).Record(InterceptionEvent(evaluation, phase, outcome), trust::audit::Outcome::kRefused,
                                 outcome.Reason());
    outcome.deny_audited = true;
  }
}

void InterceptorEvaluator::Evaluate(const interceptor_v1::InterceptorEvaluation& evaluation, std::string payload_digest,
                                    interceptor_v1::InterceptorResult* response) {
  Outcome outcome;
  std::string phase;
  Begin(evaluation, std::move(payload_digest), &outcome, &phase);
  if (outcome.pending != nullptr) {
    auto admitted = options_.admission->Admit(outcome.pending->context, AdmitCheckFor(evaluation, &outcome, nullptr));
    const bool check_again = AdmissionNeedsCheck(outcome, admitted);
    AdmitAnswered(evaluation, std::move(admitted), check_again, &outcome);
  }
  Answer(evaluation, phase, outcome, response);
}

void InterceptorEvaluator::EvaluateAsync(const interceptor_v1::InterceptorEvaluation& evaluation,
                                         std::string payload_digest, interceptor_v1::InterceptorResult* response,
                                         WorkerPool* pool, std::function<void()> done, bool here_may_block) {
  if (pool == nullptr) {
    // Nowhere to hand what may block: the admission waited for here.
    Evaluate(evaluation, std::move(payload_digest), response);
    return done();
  }
  std::shared_ptr<Call> call;
  try {
    call = std::make_shared<Call>();
  } catch (...) {
    response->set_allowed(false);  // no memory for the call: answered, denied
    return done();
  }
  call->done = std::move(done);
  // Whatever throws on the way (memory), from the decision to the answer, the call is answered once, with
  // a deny; nothing escapes into the thread that started it (gRPC's, for a create decided on arrival) or
  // into the thread a step runs on. That deny's `done` runs when every step has let go of the call (Call's
  // destructor), not at the throw: a step handed on before it still reads `evaluation`. The callbacks below
  // capture pointers only: copying them allocates nothing.
  auto answer_once = [this, &evaluation, response, call](bool failed) {
    if (call->answered.exchange(true)) return;
    if (!failed) {
      try {
        Answer(evaluation, call->phase, call->outcome, response);
      } catch (...) {
        failed = true;  // answered below with the deny: `done` runs whatever threw
      }
    }
    if (failed) {
      try {
        LogError("interceptor: an Evaluate could not be answered (an exception); answered with a deny");
        response->Clear();
        response->set_allowed(false);
        response->set_status_code("FAILED_PRECONDITION");
        response->set_reason("internal_error: the call could not be answered; try again");
        (*response->mutable_log_annotations())[kAnnotationDecision] = "deny";
        (*response->mutable_log_annotations())[kAnnotationDecisionId] = call->outcome.decision_id;
        (*response->mutable_log_annotations())[kAnnotationReasonCode] = "internal_error";
      } catch (...) {
        response->set_allowed(false);  // what could be written: the call is still answered, and denied
      }
      // An allow audited already (with its record, its admission, or by Answer) and answered as this deny,
      // with no refusal recorded since: the log says so too (reviews 121, 122), under the same decision id.
      // (Rare: an exception. Written here, on whichever thread the step threw on.)
      if (call->outcome.audited && !call->outcome.deny_audited) {
        try {
          call->outcome.Deny(absl::StatusCode::kFailedPrecondition, "internal_error", "the call could not be answered");
          AuditRecorder(audit_).Record(InterceptionEvent(evaluation, call->phase, call->outcome),
                                       trust::audit::Outcome::kRefused,
                                       "internal_error: the allow audited before could not be answered; answered with a deny");
        } catch (...) {
        }
      }
      // Not answered yet: a step under way (the admission's check, its answer) may still read `evaluation`.
      call->done_when_released = true;
      return;
    }
    call->done();
  };
  auto guarded = [answer_once](auto&& step) {  // a template: wrapping `step` allocates nothing
    try {
      step();
    } catch (...) {
      try {
        answer_once(/*failed=*/true);
      } catch (...) {
      }
    }
  };
  guarded([&] {
    Begin(evaluation, std::move(payload_digest), &call->outcome, &call->phase);
    if (call->outcome.pending == nullptr) {
      if (!here_may_block && AnswerAudits(call->outcome)) {
        return pool->Submit([answer_once, guarded] { guarded([&] { answer_once(false); }); });
      }
      return answer_once(false);
    }
    // The admission is a chain of callbacks (GatewayCore::AdmitAsync): no thread waits for it. Its answer
    // arrives on the thread it completed on (the store's completion thread, say), where nothing may block:
    // what would (a check again, a withdrawal, a deny's audit event) goes to `pool`.
    driver_v1::RuntimeContext context = call->outcome.pending->context;
    options_.admission->AdmitAsync(
        std::move(context), AdmitCheckFor(evaluation, &call->outcome, call),
        [this, &evaluation, pool, call, answer_once, guarded](
            absl::StatusOr<InterceptorAdmission::Admitted> admitted) mutable {
          guarded([&] {
            const bool check_again = AdmissionNeedsCheck(call->outcome, admitted);
            if (check_again) {
              return pool->Submit([this, &evaluation, call, answer_once, guarded,
                                   admitted = std::move(admitted)]() mutable {
                guarded([&] {
                  AdmitAnswered(evaluation, std::move(admitted), /*check_again=*/true, &call->outcome);
                  answer_once(false);
                });
              });
            }
            AdmitAnswered(evaluation, std::move(admitted), /*check_again=*/false, &call->outcome);
            if (AnswerAudits(call->outcome)) {
              return pool->Submit([answer_once, guarded] { guarded([&] { answer_once(false); }); });
            }
            answer_once(false);
          });
        });
  });
}

InterceptorEvaluatorMemoStats InterceptorEvaluatorMemoCounts() {
  const auto composed = ComposedCandidates().counts();
  const auto encoded = EncodedRecords().counts();
  return {{composed.hits, composed.misses}, {encoded.hits, encoded.misses}};
}

}  // namespace osh::gateway
