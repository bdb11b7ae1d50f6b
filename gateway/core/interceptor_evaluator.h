// The OpenShell gateway interceptor's decisions (docs/openshell-interceptor.md; the contract is
// ../shared/interceptor/README.md): Describe's manifest, every Evaluate, and the provider-profile snapshot,
// knowing no gRPC server (the service in gateway/server authenticates the caller and hands the call over).
// In `ceiling` mode the request's own policy stays, and every path that can widen a sandbox's
// authority is decided on an absolute candidate checked against the signed ceiling in force (exact
// containment), or refused. `admit` mode (Options::admission set) differs where the policy comes from:
//   CreateSandbox modify   admits the sandbox through this gateway's Policy subsystem exactly as
//                          AdmitSandbox does (sandbox_id = the request's name, user_subject = the
//                          principal's subject, attributes = its labels; only a user principal with a
//                          subject, in the default workspace), with the composed candidate (admitted body
//                          + provider layers) checked before the admission commits (a refused one is not
//                          admitted) and this Evaluate's audit event committed with it, and
//                          patches /spec/policy with the admitted body and /annotations with
//                          policy-gateway/{policy-digest,policy-version,key-ids,decision-id}; a retried
//                          create of a sandbox admitted with the same context reuses its admission, another
//                          context is refused (already_admitted);
//   CreateSandbox validate the same context as admitted, spec.policy exactly the body the sandbox is served
//                          now (by the registry's serving rule) and the annotations naming it
//                          (policy_not_admitted otherwise; unknown_sandbox when it was not admitted here or
//                          is not served), then the composed candidate is checked and recorded;
//   UpdateConfig           a full policy equal to the sandbox's admitted body (the push of a changed
//                          projection, OpenShellPush) is checked as in ceiling mode but not recorded (the
//                          push records it once the OpenShell gateway accepted it); any other policy
//                          write (full, merged, global) is refused with mutation_not_permitted unless the
//                          driver permits mutation, and then checked as in ceiling mode; policy-gateway/*
//                          annotations must name the sandbox's admitted projection (policy_not_admitted);
//   UndoDraftChunk         mutation_not_permitted unless the driver permits mutation.
// The other RPCs are decided alike in both modes. The candidate is always the whole composed policy: the sandbox's own policy
// plus one `_provider_<name>` layer per provider, from this gateway's profile catalogue
// (ProviderProfileCatalogue; README §7 "Composition", policy::ComposeProviderLayers), where a provider
// name is the id of a catalogue profile:
//   CreateSandbox          spec.policy composed with spec.providers' layers, checked (modify and validate);
//   UpdateConfig           a full policy (sandbox or global) checked, composed with the sandbox's recorded
//                          providers; mergeOperations applied at modify to the policy recorded for the
//                          sandbox and replaced by the result (patches remove /mergeOperations and add
//                          /policy); unknown sandbox: unknown_sandbox; proposal_approval_mode = auto:
//                          approval_unverifiable;
//   AttachSandboxProvider  the sandbox's recorded policy and providers plus the new one, composed, checked
//                          (and recorded at validate); a sandbox with no record: unknown_sandbox;
//   DetachSandboxProvider  narrows: allowed, recorded;
//   ApproveDraftChunk, ApproveAllDraftChunks: approval_unverifiable (only chunk ids travel);
//   EditDraftChunk         allowed (a proposal, not the policy); UndoDraftChunk allowed (narrows), and the
//                          sandbox's record is dropped (its policy changed in a way not seen here);
//   ImportProviderProfiles, UpdateProviderProfiles, DeleteProviderProfile: refused with
//                          profile_catalogue_managed while the catalogue holds at least one profile (the
//                          catalogue is then this gateway's, authored with `policyctl profile`); allowed
//                          and recorded while it is empty.
// A sandbox name that a record is kept under, or that admit mode admits, must be a valid sandbox id (the
// gateway's limits: length, UTF-8, no control characters such as NUL), and in admit mode the subject and
// labels must fit the admission context's limits: otherwise invalid_request (PERMISSION_DENIED) naming the
// request's field, before anything is read, admitted or recorded.
// A provider with no catalogue profile is refused (unknown_provider, FAILED_PRECONDITION), as is one whose
// stored profile does not verify against the trust store (profile_unverified).
// A deny's reason is "reason_code: detail" and its status_code PERMISSION_DENIED, or FAILED_PRECONDITION
// where the state is unknown. The sandboxes' records are kept in the store (InterceptorRecords): a record
// is durable before the allow that made it is answered, and a record (or profile) that cannot be read or
// written is a deny (storage_error, FAILED_PRECONDITION): fail closed. Every Evaluate is one audit event
// (type interception) whose decision id, decision, reason code and candidate digest are also the result's
// log_annotations.
//
// Thread-safe. The ceiling guard, the audit log, the record store and the catalogue must outlive the
// evaluator.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "gateway/core/bounded_memo.h"
#include "gateway/core/ceiling_guard.h"
#include "gateway/core/composed_candidate.h"
#include "gateway/core/context_limits.h"
#include "gateway/core/interceptor_admission.h"
#include "gateway/core/worker_pool.h"
#include "gateway/core/interceptor_payload.h"
#include "gateway/core/interceptor_records.h"
#include "gateway/core/provider_catalogue.h"
#include "openshell/gateway_interceptor/v1/gateway_interceptor.pb.h"
#include "store/store.h"

namespace osh::gateway {

namespace interceptor_v1 = openshell::gateway_interceptor::v1;

// Log-annotation keys (README §9).
inline constexpr char kAnnotationDecisionId[] = "policy-gateway/decision-id";
inline constexpr char kAnnotationDecision[] = "policy-gateway/decision";
inline constexpr char kAnnotationReasonCode[] = "policy-gateway/reason-code";
inline constexpr char kAnnotationCandidateDigest[] = "policy-gateway/candidate-digest";
// Annotations of an admitted sandbox (admit mode, README §9).
inline constexpr char kAnnotationPolicyDigest[] = "policy-gateway/policy-digest";
inline constexpr char kAnnotationPolicyVersion[] = "policy-gateway/policy-version";
inline constexpr char kAnnotationKeyIds[] = "policy-gateway/key-ids";

// True for the RPCs the manifest binds ("CreateSandbox", ...): a bounded set, for metric labels.
bool IsInterceptorBoundMethod(absl::string_view method);

class InterceptorEvaluator {
 public:
  struct Options {
    std::string audience;  // Describe's expected_audience
    // The provider-profile catalogue (not owned); null: an empty one (every provider is unknown).
    const ProviderProfileCatalogue* profiles = nullptr;
    // Admit mode's Policy subsystem (not owned); null: ceiling mode.
    InterceptorAdmission* admission = nullptr;
    // What a sandbox name (a record's key, and admit mode's sandbox id) and admit mode's context may hold:
    // the gateway's own context limits (CheckSandboxId, CheckContext).
    ContextLimits context_limits;
  };

  InterceptorEvaluator(const CeilingGuard* ceiling, store::AuditLog* audit, store::InterceptorRecordStore* records,
                       Options options)
      : ceiling_(ceiling), audit_(audit), options_(std::move(options)), records_(records) {}

  // The manifest: name policy-gateway, fail_closed, exactly one binding per RPC, expected_audience, and
  // provider_profiles true when the catalogue holds at least one profile.
  interceptor_v1::InterceptorManifest Describe() const;

  // SnapshotProviderProfiles: the catalogue, verified, with revision = the governance snapshot hash
  // (README §7, "This product's revision"). FAILED_PRECONDITION "provider_profiles_empty" when it holds
  // none (upstream refuses an empty list), "profile_unverified" when a profile does not verify.
  absl::StatusOr<interceptor_v1::ProviderProfileSnapshot> SnapshotProviderProfiles() const;

  // Always a result (a malformed evaluation is a deny, never a gRPC error): allow, allow with patches
  // (modify phase only), or deny; audited.
  // `payload_digest`: InterceptorPayloadDigest of the phase's proposed_operation when the caller computed it
  // already (where the request was still in its core's cache); empty: computed when needed.
  interceptor_v1::InterceptorResult Evaluate(const interceptor_v1::InterceptorEvaluation& evaluation,
                                             std::string payload_digest = {});
  // The same into `result` (cleared first; may live on an arena: what it holds is handed over, not copied).
  void Evaluate(const interceptor_v1::InterceptorEvaluation& evaluation, std::string payload_digest,
                interceptor_v1::InterceptorResult* result);
  // The same, with admit mode's admission (a CreateSandbox modify) waited for on no thread: `done` runs
  // exactly once, when `result` is filled, on the calling thread or on the one the admission completed on
  // (InterceptorAdmission::AdmitAsync). What may block after the admission (a check again, a withdrawal, a
  // deny's audit event) is handed to `pool` (null: the admission is waited for, as Evaluate does). `evaluation`
  // and `result` must stay alive until `done` runs; once it has run, nothing here reads them (a deny answered
  // because something threw runs `done` only when every step handed on before the throw has let go of the
  // call, on the thread that let go last). The decision before the admission may block (it reads
  // the store) unless DecidesWithoutBlocking(evaluation); `here_may_block` false: the calling thread must not
  // block (gRPC's callback thread), so a deny's audit event is handed to `pool` too.
  void EvaluateAsync(const interceptor_v1::InterceptorEvaluation& evaluation, std::string payload_digest,
                     interceptor_v1::InterceptorResult* result, WorkerPool* pool, std::function<void()> done,
                     bool here_may_block = true);
  // Whether EvaluateAsync's decision reads no store and waits on nothing before it answers or admits: admit
  // mode's CreateSandbox modify naming no provider (its admission is a chain of callbacks).
  bool DecidesWithoutBlocking(const interceptor_v1::InterceptorEvaluation& evaluation) const;
  // Whether the call may admit: admit mode's CreateSandbox modify phase.
  bool MayAdmit(const interceptor_v1::InterceptorEvaluation& evaluation) const;

  const InterceptorRecords& records() const { return records_; }

  // Admit mode's push was accepted (the OpenShell gateway now holds `pushed` for the sandbox of record key
  // `key`): records it with the sandbox's recorded providers, as a validate records what it composed — not
  // while a profile change is checked here, and only at the catalogue generation its providers' layers are
  // read at (another replica's change committed meanwhile: read and checked again, up to
  // kPushRecordAttempts times with a growing pause, as when the record was written meanwhile; then ABORTED
  // catalogue_changed or record_changed and the push pushes again later), so a profile change's check sees it. The composition is checked against the ceiling first: the push's own validate checked it,
  // but a profile change may have committed since; outside, it is recorded all the same (it is what upstream
  // enforces, and later changes must be checked against it) and the error is logged. OK and nothing written
  // when the sandbox has no record.
  absl::Status RecordPushed(const std::string& key, const openshell::sandbox::v1::SandboxPolicy& pushed);

 private:
  struct Outcome;
  struct PendingAdmission;
  struct Call;
  // Evaluate's decision: `out` final, or with out->pending set (admit mode's admission to make); `phase` named.
  void Begin(const interceptor_v1::InterceptorEvaluation& evaluation, std::string payload_digest, Outcome* out,
             std::string* phase);
  // The admission's check of the composed candidate before it commits (GatewayCore::AdmitCheck), on
  // out->pending; `keep` is held as long as the check is (what `out` lives in).
  InterceptorAdmission::AdmitCheck AdmitCheckFor(const interceptor_v1::InterceptorEvaluation& evaluation, Outcome* out,
                                                 std::shared_ptr<const void> keep);
  // Whether the admission's answer needs more than its patches made: the composed candidate checked again
  // (a reused admission, a policy moved on, another ceiling), which may block.
  bool AdmissionNeedsCheck(const Outcome& out, const absl::StatusOr<InterceptorAdmission::Admitted>& admitted) const;
  // The admission's answer into `out`: the patches, or the deny (checked again when `check_again`,
  // withdrawn when that check refuses it).
  void AdmitAnswered(const interceptor_v1::InterceptorEvaluation& evaluation,
                     absl::StatusOr<InterceptorAdmission::Admitted> admitted, bool check_again, Outcome* out);
  // Whether Answer writes an audit event (blocking) for `out`.
  static bool AnswerAudits(const Outcome& out);
  // `out` into `result`, audited unless its admission committed its audit event already.
  void Answer(const interceptor_v1::InterceptorEvaluation& evaluation, const std::string& phase, Outcome& out,
              interceptor_v1::InterceptorResult* result);
  void Decide(const interceptor_v1::InterceptorEvaluation& evaluation, bool validate, Outcome* out);
  void DecideCreateSandbox(const interceptor_v1::InterceptorEvaluation& evaluation,
                           const google::protobuf::Struct& payload, bool validate, Outcome* out);
  // Admit mode's CreateSandbox phases.
  void AdmitCreateSandbox(const interceptor_v1::InterceptorEvaluation& evaluation,
                          const openshell::v1::CreateSandboxRequest& request, Outcome* out);
  void ValidateAdmittedSandbox(const interceptor_v1::InterceptorEvaluation& evaluation,
                               const openshell::v1::CreateSandboxRequest& request, Outcome* out);
  // Admit mode: a sandbox-scoped write names the default workspace (invalid_request), and policy-gateway/*
  // annotations on an UpdateConfig must name the sandbox's admitted projection (policy_not_admitted);
  // false with the deny set.
  bool AdmitModeAnnotationsHold(const openshell::v1::UpdateConfigRequest& request, Outcome* out) const;
  // Admit mode: whether a policy write through UpdateConfig may go on to the ceiling-mode checks (the
  // driver permits mutation, or `policy` is the sandbox's admitted body); false with the deny set.
  // `admitted_body` (may be null) is set when the policy is exactly the sandbox's admitted body.
  // `kept`: the request's policy as upstream keeps it (a sandbox's sync without its `_provider_*` entries);
  // null: request.policy().
  bool AdmitModeAllowsWrite(const openshell::v1::UpdateConfigRequest& request, Outcome* out,
                            bool* admitted_body = nullptr,
                            const openshell::sandbox::v1::SandboxPolicy* kept = nullptr) const;
  void DecideUpdateConfig(const interceptor_v1::InterceptorEvaluation& evaluation,
                          const google::protobuf::Struct& payload, bool validate, Outcome* out);
  // Sets out->sandbox to `name` and out->record_key to its record's key in `workspace`
  // (InterceptorRecords::Key), and checks the name and a workspace as sandbox ids (CheckSandboxId): false
  // with the deny set (invalid_request naming the field). An empty name is accepted where `required` is false.
  bool TakeSandboxName(const char* field, const std::string& name, const std::string& workspace, bool required,
                       Outcome* out) const;
  // The catalogue profile of each provider, in order, all read from one catalogue, whose generation
  // out->catalogue_generation is set to; false (with the deny set: unknown_provider, profile_unverified,
  // storage_error) when one has none.
  bool ResolveProviders(const std::vector<std::string>& providers, ProviderProfileCatalogue::Selection* selection,
                        Outcome* out) const;
  // Checks `own` composed with the catalogue layers of `providers` against the ceiling; fills the
  // candidate digest (of the composed candidate). `own_key`, when not empty, names `own` exactly (two
  // policies never share one): the composition is then kept (a process-wide memo) and made once per own policy and
  // profiles' hashes.
  bool CheckCandidate(const openshell::sandbox::v1::SandboxPolicy& own, const std::vector<std::string>& providers,
                      Outcome* out, absl::string_view own_key = {}) const;
  // The same with the providers' profiles read already (ResolveProviders): reads no store.
  bool CheckCandidateWith(const openshell::sandbox::v1::SandboxPolicy& own, const std::vector<std::string>& providers,
                          const ProviderProfileCatalogue::Selection& selection, Outcome* out,
                          absl::string_view own_key = {}) const;

  // Records `encoded` (InterceptorRecords::Encode's) as the sandbox's, the last step of a validate's allow
  // (InterceptorRecords::PutEncoded with `catalogue_generation` and `previous`), in one transaction with the
  // allow's audit event (AllowEvent): the record never commits without it, and the allow is audited when it
  // does (out->audited). False with the deny set (RecordFailed) when it did not.
  bool StoreRecord(const interceptor_v1::InterceptorEvaluation& evaluation, const std::string& name, std::string encoded,
                   const std::optional<std::string>* previous, Outcome* out);
  // The audit event of an allow answered for `outcome` at `phase`, as Answer commits it.
  static store::AuditEvent AllowEvent(const interceptor_v1::InterceptorEvaluation& evaluation,
                                      const std::string& phase, const Outcome& outcome);
  // Evaluate's audit event (type interception) for `outcome`, outcome and reason left to the caller.
  static store::AuditEvent InterceptionEvent(const interceptor_v1::InterceptorEvaluation& evaluation,
                                             const std::string& phase, const Outcome& outcome);
  static std::string RpcOf(const interceptor_v1::InterceptorEvaluation& evaluation);
  // How often a validate is decided when its record meets a changed catalogue (catalogue_changed) or a
  // record written since it was read (record_changed).
  static constexpr int kDecideAttempts = 3;
  // How often RecordPushed reads and writes (10, 20, 40 ... ms apart): it has no caller to try again.
  static constexpr int kPushRecordAttempts = 8;

  const CeilingGuard* const ceiling_;
  store::AuditLog* const audit_;
  const Options options_;
  InterceptorRecords records_;
};

// How often the evaluator's own memos (process-wide, content-addressed: any evaluator may use what another
// kept) held the answer: compositions (a payload's own policy with its providers' profiles) and record
// encodings (a payload's policy and providers), since the process started.
struct InterceptorEvaluatorMemoStats {
  InterceptorMemoStats::Counts composed;
  InterceptorMemoStats::Counts record_encoded;
};
InterceptorEvaluatorMemoStats InterceptorEvaluatorMemoCounts();

}  // namespace osh::gateway
