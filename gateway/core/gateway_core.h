// The gateway's behaviour, independent of transport: admission, refresh, deletion, reports, policy
// mutation with re-projection, status. The gRPC services are thin adapters over this class.
//
// Every refusal is a Status whose message begins with the SPEC reason code ("reason_code: detail").
// A refused admission persists nothing but its audit event, and releases the driver handle (queued
// durably when the driver cannot be reached). Thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "drivers/policy_driver.h"
#include "gateway/core/audit_budget.h"
#include "gateway/core/audit_recorder.h"
#include "gateway/core/report_limiter.h"
#include "gateway/core/ceiling_guard.h"
#include "gateway/core/config.h"
#include "gateway/core/driver_handles.h"
#include "gateway/core/driver_state_audit.h"
#include "gateway/core/projection_gate.h"
#include "gateway/core/provider_catalogue.h"
#include "gateway/core/reprojection.h"
#include "gateway/core/sandbox_registry.h"
#include "gateway/core/worker_pool.h"
#include "store/clock.h"
#include "store/store.h"
#include "trust/trust_store.h"
#include "trust/validated_body_cache.h"

namespace osh::gateway {

namespace gateway_v1 = openshell::policy::gateway::v1;
namespace driver_v1 = openshell::policy::driver::v1;

// Fixed limits (docs/policy-gateway.md, "Limits"); the settable ones are config.limits.
inline constexpr size_t kMaxAuditPageBytes = 1 << 20;  // ListAuditEvents pages by bytes as well as count
inline constexpr size_t kMaxDriverTextBytes = 1024;    // a driver's refusal reason or error, as quoted onward
// How often a commit refused because the ceiling changed under it is checked again and retried.
inline constexpr int kMaxCeilingRetries = 3;

class GatewayCore final : private store::RemoteChangeListener, private store::RevisionListener {
 public:
  // `store`, `driver`, `registry` and `clock` must outlive the core. `trust_store` may be null (no
  // verification). Every time-based decision reads `clock`.
  GatewayCore(const Config& config, store::Database* store, drivers::PolicyDriver* driver, SandboxRegistry* registry,
              std::shared_ptr<const trust::TrustStore> trust_store, const store::Clock* clock = store::Clock::System());
  const store::Clock& clock() const { return *clock_; }

  ~GatewayCore();

  // Loads admitted sandboxes from the store into the registry, unverified: nothing is served before its
  // stored envelope is re-verified (digest, signatures, windows as of admission, binding, body), so a
  // rewritten database row is not served. Returns how many loaded.
  absl::StatusOr<size_t> LoadAdmitted();
  // Re-verifies every loaded sandbox not yet verified (the background pass after start-up), `batch` at
  // a time; envelopes shared by many sandboxes are verified once. Returns how many it verified.
  size_t VerifyLoaded(size_t batch = 1024);
  // Makes a running VerifyLoaded return soon (shutdown).
  void StopVerifying() { stop_verifying_ = true; }

  // `also_check` (the interceptor's admit mode), when set, is asked about the admitted policy after the
  // projection check and before anything is committed: a failure refuses the admission as the projection
  // check's would (nothing persisted, the driver handle released, audited as a refused admission with its
  // reason); the audit events it adds to `events` are committed in the admission's own transaction (one
  // durable write). It runs on whichever thread completed the driver's answer and must not call the core.
  using AdmitCheck = std::function<trust::CheckResult(const openshell::sandbox::v1::SandboxPolicy& admitted,
                                                      std::vector<store::AuditEvent>* events)>;
  // AdmitAsync, waited for.
  absl::StatusOr<gateway_v1::AdmitSandboxResponse> Admit(const driver_v1::RuntimeContext& context,
                                                         const AdmitCheck& also_check = nullptr);
  // An admission as a chain of callbacks, with no thread held while it waits: the in-flight note's
  // group commit, AcquireHandle, GetProjection, the check (on the thread the driver's answer arrived on),
  // the admission's group commit. Both durability promises hold as in Admit: the note is durable before
  // AcquireHandle is sent, the admission before `done` is called. Refusals, ceiling retries, reconnects
  // and the rare re-projection after a policy change run on the blocking pool (SetBlockingPool). `done`
  // runs exactly once, on any thread; the audit actor is the calling thread's (AuditActorScope).
  using AdmitDone = std::function<void(absl::StatusOr<gateway_v1::AdmitSandboxResponse>)>;
  void AdmitAsync(driver_v1::RuntimeContext context, AdmitCheck also_check, AdmitDone done);
  // Where AdmitAsync's blocking steps run (null: on the thread that reached them). Set before serving.
  void SetBlockingPool(WorkerPool* pool) { blocking_pool_ = pool; }
  // Audits (authentication_failures, refused) a summary of sandbox calls refused for a bad handle.
  void RecordAuthenticationFailures(const std::string& summary);
  absl::StatusOr<gateway_v1::DeleteSandboxResponse> Delete(const std::string& sandbox_id);
  // `include_policy`: also the enforced policy, parsed from the admitted body.
  absl::StatusOr<gateway_v1::SandboxInfo> GetSandbox(const std::string& sandbox_id, bool include_policy = false) const;
  absl::StatusOr<gateway_v1::ListSandboxesResponse> ListSandboxes(const gateway_v1::ListSandboxesRequest& request) const;
  absl::StatusOr<gateway_v1::RefreshSandboxResponse> Refresh(const std::string& sandbox_id);
  // Records "reason_code: detail" as the sandbox's last refresh error (drift refresh_failed, audited as a
  // refused refresh, cleared by its next projection): a step after the refresh failed, e.g. the OpenShell
  // gateway refused the push of the changed projection (admit mode). The same error again writes nothing.
  // NOT_FOUND when the sandbox is not admitted.
  absl::Status RecordRefreshError(const std::string& sandbox_id, const std::string& reason_code,
                                  const std::string& detail);
  // Clears the sandbox's refresh error when it is one RecordRefreshError wrote with `reason_code` (the
  // step succeeded since; audited). Nothing otherwise; NOT_FOUND when the sandbox is not admitted.
  absl::Status ClearRefreshError(const std::string& sandbox_id, const std::string& reason_code);
  // Admitted sandboxes by drift state (gateway/core/drift.h), every state named in kDriftStateNames' order
  // with its count (0 included), for the metrics. O(admitted sandboxes): one pass over the registry.
  std::vector<std::pair<std::string, uint64_t>> CountByDrift() const;

  absl::StatusOr<gateway_v1::PolicyRevision> SetPolicy(const gateway_v1::SetPolicyRequest& request);
  absl::StatusOr<gateway_v1::PolicyRevision> UpdatePolicy(const gateway_v1::UpdatePolicyRequest& request);
  absl::StatusOr<gateway_v1::PolicyRevision> DeletePolicy(const gateway_v1::DeletePolicyRequest& request);
  absl::StatusOr<gateway_v1::GetPolicyResponse> GetPolicy(const gateway_v1::GetPolicyRequest& request);
  absl::StatusOr<gateway_v1::ListPolicyRevisionsResponse> ListPolicyRevisions(
      const gateway_v1::ListPolicyRevisionsRequest& request);
  absl::StatusOr<gateway_v1::GetStatusResponse> GetStatus() const;

  // The signed ceiling (docs/decisions-and-ceilings.md): put one in force, or read the one in force.
  absl::StatusOr<gateway_v1::SetCeilingResponse> SetCeiling(const gateway_v1::SetCeilingRequest& request);
  absl::StatusOr<gateway_v1::GetCeilingResponse> GetCeiling() const;

  // A sandbox's report about the projection it loaded (the sandbox is already authenticated). `from`: the
  // hash of the handle it was authenticated with — the report is refused (UNAUTHENTICATED, nothing
  // recorded) when the sandbox was deleted or re-admitted since, so an old supervisor's report never lands
  // on a new admission (review 104); null for in-process callers speaking for the current admission.
  absl::Status Report(const std::string& sandbox_id, const gateway_v1::ReportPolicyStatusRequest& request,
                      const AdmittedSandbox::HandleHash* from = nullptr);

  // Reloads the trust store from its file. On any error the last good store stays in force, and the
  // failure is logged and audited (FAILED_PRECONDITION "trust_store_invalid: ...").
  absl::StatusOr<gateway_v1::ReloadTrustStoreResponse> ReloadTrustStore();

  // The audit chain from after_seq on: at most `limit` events (0: 100, capped at 1000), and the head.
  absl::StatusOr<gateway_v1::ListAuditEventsResponse> ListAuditEvents(const gateway_v1::ListAuditEventsRequest& request);

  // A call the mutation gate refused: whether to audit it (AuditBudget, kMutationRefusalBurst at once, then
  // one a second; the rest are counted). When true, RecordMutationRefused it with *held_back. Cheap: asked
  // on gRPC's thread before any work is queued for the refusal. Thread-safe.
  bool TakeMutationRefusalAudit(uint64_t* held_back);
  // Records that the mutation gate refused `method`; `held_back` refused calls before it were counted and
  // not audited one by one (said in the event).
  void RecordMutationRefused(const std::string& method, uint64_t held_back);
  // Audits how many refused calls were held back, once the budget allows. Called once a second by the
  // daemon, and a last time at its stop with `at_stop` (whatever the budget: no count is left unsaid).
  void AuditHeldMutationRefusals(bool at_stop = false);
  static constexpr int kMutationRefusalBurst = 20;

  // Delivers queued driver-handle releases; each is removed only once the driver acknowledged it.
  void DeliverPendingReleases();

  bool permits_mutation() const;

  // Records a change of the driver's reachability (audited as driver_up / driver_down, logged loudly),
  // bounded as DriverStateAudit says (a flapping driver cannot flood the audit log).
  void OnDriverState(bool available, const std::string& detail);
  // Audits the driver's present state when the last driver event audited does not say it (reports were
  // held back by the bound) and the bound allows now. Called once a second by the daemon.
  void AuditPendingDriverState();

  // The gate every admission, refresh and re-projection passes and the registry's serving rule asks
  // (trust store, ceiling, revocations).
  const ProjectionGate& gate() const { return gate_; }

  const Config& config() const { return config_; }
  // The audit chain (the store's), for events a caller beside the core writes.
  store::AuditLog* audit_log() { return &store_->audit(); }

  // The provider-profile catalogue (SetProviderProfile, ..., and the interceptor), verified against the
  // trust store in force.
  ProviderProfileCatalogue& provider_profiles() { return profiles_; }

  // Whether this replica holds (took or renewed) the fleet-wide lease `name` for `duration_ms`; false
  // also when the database cannot say. Always true with a single-process store.
  bool HoldsFleetLease(const std::string& name, int64_t duration_ms);

  // Once serving: with the builtin driver, every admitted sandbox whose projection is not the one its
  // scope's current revision gives (a policy change acknowledged before the last stop whose re-projection
  // had not committed — a crash between the two transactions, or a retry still waiting) is re-projected on
  // the re-projection thread (logged). Sandboxes already current cost a comparison each; nothing is
  // written then. A projection of the current policy signed with another key is not behind.
  void CatchUpReprojections();

 private:
  std::shared_ptr<const trust::TrustStore> trust_store() const;
  // SandboxInfo's desired_* and drift fields (gateway/core/drift.h), desired as the driver says it.
  void FillDriftOf(const SandboxRegistry::Snapshot& snapshot, gateway_v1::SandboxInfo* info) const;
  // Another replica's committed changes (PostgreSQL feed): each changed sandbox is checked as a stored
  // envelope is at start-up, then applied to the registry; the builtin driver re-reads changed scopes;
  // a changed ceiling is loaded and re-verified.
  void OnRemoteChanges(const store::RemoteChanges& changes) override;
  // A revision another replica appended: the sandboxes of its scope that replica did not move (ones
  // admitted here meanwhile; all of them if it stops first) are re-projected here (issue 25.2) — once a
  // re-projection of the scope made from that revision or a newer one arrived (OnRemoteReprojections), or
  // replica_reprojection_wait_ms after the revision if none does, so the scope is not re-projected by two
  // replicas at once. The driver's cache already has the revision (it listens first).
  void OnPolicyRevision(const store::PolicyRevisionRecord& revision, bool remote) override;
  // Other replicas' re-projections committed: a scope waiting for one made from its revision runs now.
  void OnRemoteReprojections(const std::vector<store::RemoteReprojection>& reprojections) override;
  // The gate's CheckStored, then marks the sandbox verified, or logs and takes it out of what is served.
  absl::Status Reverify(const std::string& sandbox_id, const driver_v1::RuntimeContext& context,
                        const store::EnvelopePtr& envelope, store::Verification verification, int64_t updated_at_unix,
                        const trust::TrustStore* trust);
  // The surface to ask the driver for: the first accepted surface the driver supports.
  std::string SurfaceFor() const;
  // AdmitAsync's steps; one Admission travels through them.
  struct Admission;
  // Runs one step of `admission` under its caller's audit actor; an exception (bad_alloc) ends the
  // admission with INTERNAL — its driver handle released when one was acquired and not committed —
  // rather than leaving its caller unanswered.
  void Step(const std::shared_ptr<Admission>& admission, absl::FunctionRef<void()> step);
  // Step, on the blocking pool (inline without one).
  void Offload(std::shared_ptr<Admission> admission, std::function<void()> work);
  void AdmitAcquire(std::shared_ptr<Admission> admission);
  void AdmitChecked(std::shared_ptr<Admission> admission,
                    absl::StatusOr<driver_v1::GetProjectionResponse> response);
  void AdmitCommitted(std::shared_ptr<Admission> admission, absl::Status committed);
  void AdmitFinish(const std::shared_ptr<Admission>& admission,
                   absl::StatusOr<gateway_v1::AdmitSandboxResponse> out);
  // `error` (a driver's failure for an admission), returned as is and recorded as a refusal: its own
  // `reason_code: detail`, or `driver_error: <code>: …`; not when it is the builtin driver's storage
  // failing. Writes: not on a completion thread.
  absl::Status AuditedDriverError(const driver_v1::RuntimeContext& context, const absl::Status& error);
  absl::Status RefuseAdmission(const driver_v1::RuntimeContext& context, const DriverHandles::Acquired& acquired,
                               const driver_v1::Projection* projection, const std::string& reason_code,
                               const std::string& detail);
  // Re-projects every admitted sandbox whose effective policy may come from `scope`, in one store
  // transaction (all or none) with one statement per distinct new envelope and one summary audit event.
  // `own_change`: re-projecting this replica's own policy change (announced to the other replicas).
  Reprojector::Outcome Reproject(const std::string& scope, bool own_change = false);
  // Re-projects `scope` on this gateway's re-projection thread (started on first use), after another
  // replica changed it or after a re-projection here failed to commit. Queued scopes are coalesced and
  // run at once; a scope whose re-projection fails is queued again with its own pause
  // (kReprojectionRetryMs, doubling while it keeps failing, at most kReprojectionRetryMaxMs), until it
  // commits or the core is destroyed (a restart re-projects nothing by itself: see docs/design.md), so
  // one scope that cannot commit delays no other. `failed_here`: the caller's own re-projection of
  // `scope` just failed, so it waits out a pause first (unless a change is queued for it already).
  // Thread-safe; never blocks on a re-projection; does nothing once the core is being destroyed.
  void QueueReprojection(const std::string& scope, bool failed_here = false);
  void ReprojectionLoop();  // the thread's body; returns when the core is destroyed
  static constexpr int64_t kReprojectionRetryMs = 1000;
  static constexpr int64_t kReprojectionRetryMaxMs = 30000;
  // After a commit refused with ceiling_changed: loads the ceiling the database holds now (the caller
  // then checks its candidate again). An error (ceiling_missing: the database lost the one in force) is
  // what the caller returns.
  absl::Status ReloadCeiling();
  // Commits the batch `make_batch` builds for a candidate checked against the ceiling stamped
  // `ceiling_stamp`, one rule for admissions and refreshes (issue 25.10): when the store refuses it because
  // another ceiling was stored since (ceiling_changed, here or on another replica), loads that ceiling,
  // checks `policy` (digest `digest`) against it and commits again with its stamp, at most
  // kMaxCeilingRetries times. `outside` is set when the new ceiling refuses the candidate (the caller
  // refuses it as it would have at the first check); else `status` is the commit's (or the reload's).
  struct CeilingCommit {
    absl::Status status;
    std::optional<trust::CheckResult> outside;
  };
  // `attempts_made`: commits of this candidate already refused with ceiling_changed (they count toward
  // the bound).
  CeilingCommit CommitUnderCeiling(const std::function<store::ChangeBatch()>& make_batch,
                                   const openshell::sandbox::v1::SandboxPolicy& policy, const std::string& digest,
                                   int64_t ceiling_stamp, int attempts_made = 0);
  // After a trust-store reload: every admitted projection is checked against the store in force (signatures as of
  // its admission); those that no longer verify are refreshed from the driver at once, and those still
  // failing are refused to fetchers (key_revoked), audited and shown. Returns how many are refused.
  uint64_t RecheckAdmitted();
  // Refresh's work; `checked_with` is set to the trust store its projection was checked under.
  absl::StatusOr<gateway_v1::RefreshSandboxResponse> RefreshChecked(const std::string& sandbox_id,
                                                                    std::shared_ptr<const trust::TrustStore>* checked_with);
  // A check and its commit are not one step with a reload: sandboxes whose projections were checked under
  // `checked_with` and are in the registry now are checked again, as RecheckAdmitted does, when the trust
  // store in force is another by now (a reload came in between, and its own recheck may have passed them
  // by). `ids` empty: every sandbox. Nothing when the trust store is the same. Blocking (a refresh may ask
  // the driver): not on a gRPC callback thread.
  void RecheckIfTrustMoved(const trust::TrustStore* checked_with, const std::vector<std::string>& ids);
  // RecheckAdmitted's rule for `failing` (ids whose projections fail under `trust`): refreshed, and those
  // still failing refused to fetchers. Returns the refused envelopes and how many sandboxes hold them.
  std::pair<ProjectionGate::RevokedEnvelopes, uint64_t> RevokeFailing(const trust::TrustStore& trust,
                                                                      const std::vector<std::string>& failing)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(recheck_mu_);
  // One recheck at a time: a reload's (which replaces the refused set) and those of checks it raced (which
  // add to it).
  absl::Mutex recheck_mu_;
  absl::StatusOr<gateway_v1::PolicyRevision> AfterMutation(absl::StatusOr<gateway_v1::PolicyRevision> revision);
  void RecordDriverState(const DriverStateAudit::Event& state);

  const Config config_;
  store::Database* const store_;
  drivers::PolicyDriver* const driver_;
  SandboxRegistry* const registry_;
  const store::Clock* const clock_;
  AuditRecorder audit_;      // events that record no state change
  mutable absl::Mutex driver_detail_mu_;
  std::string driver_detail_ ABSL_GUARDED_BY(driver_detail_mu_);  // why the driver is down (OnDriverState)
  DriverStateAudit driver_audit_;  // which driver reports are audited
  AuditBudget mutation_refusals_{kMutationRefusalBurst, absl::Seconds(1)};  // which gate refusals are audited
  absl::Mutex driver_audit_mu_;    // held from deciding a driver event to recording it
  ReportLimiter reports_;
  WorkerPool* blocking_pool_ = nullptr;
  AdmissionSlots slots_;     // one admission (or release by context) per sandbox id at a time
  DriverHandles handles_;    // the crash-safe driver-handle protocol
  ProjectionGate gate_;      // trust store, ceiling, body cache, revocations: every check of a projection
  Reprojector reprojector_;  // a builtin scope's re-projection
  ProviderProfileCatalogue profiles_;
  absl::Mutex refresh_mu_;   // one refresh at a time: keeps the version high-water mark exact
  struct QueuedScope {
    // When it may run; min(): at once (a change). A failed scope waits out its pause.
    std::chrono::steady_clock::time_point not_before = std::chrono::steady_clock::time_point::min();
    int64_t retry_ms = kReprojectionRetryMs;  // its next pause, should it fail (again)
    // Waiting for the re-projection of the replica that changed it (OnPolicyRevision): not_before is the
    // wait's end, and the arrival of a re-projection made from awaited_revision or later makes it due.
    bool awaiting_origin = false;
    uint64_t awaited_revision = 0;
    bool own_change = false;  // a retry of this replica's own change (its re-projection is announced)
  };
  // After `queued`'s scope failed to re-project (`inserted`: it was not queued): its next run and pause.
  // `own_change`: the failed run was this replica's own change (it stays announced, and a wait for
  // another replica's re-projection no longer delays it).
  void RequeueFailedLocked(QueuedScope& queued, bool inserted, int64_t pause_ms,
                           std::chrono::steady_clock::time_point failed_at, bool own_change)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(reproject_mu_);
  mutable absl::Mutex reproject_mu_;
  std::map<std::string, QueuedScope> reproject_scopes_ ABSL_GUARDED_BY(reproject_mu_);  // to re-project
  uint64_t reproject_queued_ ABSL_GUARDED_BY(reproject_mu_) = 0;  // wakes the thread from a pause
  bool stopping_reprojection_ ABSL_GUARDED_BY(reproject_mu_) = false;
  std::thread reproject_thread_;  // started by the first QueueReprojection
  std::atomic<bool> stop_verifying_{false};
};

// The sandbox handle: 256 bits from the OpenSSL CSPRNG, base64url, with a recognisable prefix.
std::string MintSandboxHandle();

}  // namespace osh::gateway
