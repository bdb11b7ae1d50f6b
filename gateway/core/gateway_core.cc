#include "gateway/core/gateway_core.h"

#include <chrono>

#include <openssl/crypto.h>

#include "gateway/core/profile_change_check.h"

#include "store/audit_actor.h"

#include "absl/strings/match.h"
#include "absl/strings/strip.h"

#include "policy/containment.h"

#include <malloc.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cstdlib>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "trust/audit_vocabulary.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/errors.h"
#include "gateway/core/audit_recorder.h"
#include "gateway/core/context_limits.h"
#include "gateway/core/drift.h"
#include "gateway/core/log.h"
#include "policy/body_codec.h"
#include "policy/digest.h"
#include "policy/scope.h"
#include "policy/validation.h"
#include "trust/audit_chain.h"
#include "trust/projection_check.h"

namespace osh::gateway {

namespace audit = trust::audit;
namespace {

using store::Verification;
constexpr uint32_t kDefaultPageSize = 100;
constexpr uint32_t kMaxPageSize = 1000;

// Notes gateway-internal markers in a driver-supplied body (SCHEMA.md): relayed as issued, audited.
std::string MarkerNote(const openshell::sandbox::v1::SandboxPolicy& policy) {
  const auto markers = policy::InternalMarkers(policy);
  return markers.empty() ? "" : absl::StrCat("body sets gateway-internal markers: ", absl::StrJoin(markers, ", "));
}

gateway_v1::SandboxInfo InfoFrom(const SandboxRegistry::Snapshot& s) {
  gateway_v1::SandboxInfo info;
  const auto& r = s.record;
  const auto p = r.envelope->Header();
  *info.mutable_context() = r.context;
  info.set_surface_id(p.surface_id());
  info.set_policy_digest(p.policy_digest());
  info.set_policy_version(p.policy_version());
  for (const auto& id : r.signing_key_ids) info.add_signing_key_ids(id);
  info.set_verification(std::string(NameOf(r.verification)));
  info.set_load_status(r.load_status);
  info.set_load_error(r.load_error);
  info.set_reported_digest(r.reported_digest);
  info.set_admitted_at_unix(r.admitted_at_unix);
  info.set_updated_at_unix(r.updated_at_unix);
  info.set_reported_at_unix(r.reported_at_unix);
  info.set_expires_at_unix(p.expires_at_unix());
  info.set_last_refresh_error(r.last_refresh_error);
  info.set_reported_behind(!r.reported_digest.empty() && r.reported_digest != p.policy_digest());
  return info;
}

// The same keys signed both (a projection re-signed by another key after a rotation is a new one).
bool SameSigners(const driver_v1::Projection& a, const driver_v1::Projection& b) {
  if (a.signing_key_id() != b.signing_key_id() || a.additional_signatures_size() != b.additional_signatures_size()) {
    return false;
  }
  for (int i = 0; i < a.additional_signatures_size(); ++i) {
    if (a.additional_signatures(i).key_id() != b.additional_signatures(i).key_id()) return false;
  }
  return true;
}

}  // namespace

std::string MintSandboxHandle() {
  unsigned char bytes[32];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) std::abort();  // never hand out a guessable handle
  return absl::StrCat("sbh_", absl::WebSafeBase64Escape(absl::string_view(reinterpret_cast<char*>(bytes), sizeof(bytes))));
}

GatewayCore::GatewayCore(const Config& config, store::Database* store, drivers::PolicyDriver* driver,
                         SandboxRegistry* registry, std::shared_ptr<const trust::TrustStore> trust_store,
                         const store::Clock* clock)
    : config_(config),
      store_(store),
      driver_(driver),
      registry_(registry),
      clock_(clock),
      audit_(&store->audit()),
      reports_(config_.limits.reports_per_second, config_.limits.report_burst),
      handles_(&store->releases(), driver, registry, &slots_),
      gate_(config_, &store->ceiling(), &store->audit(), clock, &audit_, std::move(trust_store)),
      reprojector_(config_, &store->sandboxes(), store->replication().shared(), driver, registry, &gate_, clock),
      profiles_(&store->provider_profiles(), [this] { return this->trust_store(); }, clock) {
  registry_->SetServingChecks(&gate_);  // fetches, watches and egress decisions ask the gate through the registry
  store_->sandboxes().SetChangeListener(registry_);  // the registry follows the store: every committed batch, in order
  store_->replication().SetRemoteChangeListener(this);  // and what other replicas commit
  if (driver_->authoring() != nullptr) store_->revisions().revision_listeners().Add(this);
  if (driver_->authoring() != nullptr) {
    // Builtin SetPolicy/UpdatePolicy: the whole new policy must be inside the ceiling in force.
    driver_->authoring()->SetPolicyGuard([this](const openshell::sandbox::v1::SandboxPolicy& candidate) {
      return gate_.ceiling().Check(candidate, policy::Sha256Hex(policy::SerializeDeterministic(candidate))).ToStatus();
    });
  }
  // A provider profile set or deleted: no OpenShell sandbox the interceptor recorded with that provider may
  // be widened beyond the ceiling by the change of its layer. A refusal is audited as a refused mutation.
  profiles_.SetChangeGuard(
      [this](const std::string& id, const openshell::v1::ProviderProfile* changed,
             const std::vector<store::InterceptorRecordRow>& records, int64_t* checked_ceiling) {
        return CheckProfileChange(gate_.ceiling(), records, profiles_, id, changed, checked_ceiling);
      },
      &store_->interceptor_records(),
      [this](const std::string& id, const openshell::v1::ProviderProfile* changed, const absl::Status& refusal) {
        store::AuditEvent event = AuditRecorder::For(audit::Type::kMutation, "");
        event.audit_context = {{"provider_profile", BoundedText(id, kMaxAuditFieldBytes)},
                               {"change", changed != nullptr ? "set" : "delete"}};
        audit_.Record(std::move(event), audit::Outcome::kRefused, std::string(refusal.message()));
      },
      // Only replicas write records this process's change lock does not exclude.
      store_->replication().shared(),
      // A change refused ceiling_changed is checked again against the ceiling the database holds.
      [this] { return ReloadCeiling(); });
}

GatewayCore::~GatewayCore() {
  store_->replication().SetRemoteChangeListener(nullptr);  // waits for a delivery in progress
  store_->revisions().revision_listeners().Remove(this);
  {
    absl::MutexLock lock(&reproject_mu_);
    stopping_reprojection_ = true;
  }
  if (reproject_thread_.joinable()) reproject_thread_.join();
  store_->sandboxes().SetChangeListener(nullptr);
}

void GatewayCore::CatchUpReprojections() {
  drivers::PolicyAuthoring* authoring = driver_->authoring();
  if (authoring == nullptr) return;
  // Behind: served another policy (digest or version) than its scope's current revision gives. Only that
  // starts a catch-up (a projection signed with an older key, say, is not behind); once started, the
  // re-projection moves every sandbox not current, those signed with an older key included.
  size_t behind = 0;
  for (const auto& m : registry_->Select([](const std::string&) { return true; })) {
    driver_v1::RuntimeContext context;
    if (!context.ParseFromString(m->context_bytes)) continue;
    const auto desired = authoring->DesiredFor(context);
    if (desired && !desired->policy_digest.empty() &&
        (desired->policy_digest != m->envelope->policy_digest() ||
         desired->policy_version != m->envelope->policy_version())) {
      ++behind;
    }
  }
  if (behind == 0) return;
  LogWarning(absl::StrCat(behind, " sandbox(es) are served another policy than their scope's current revision (a ",
                          "re-projection that had not committed before the last stop, or one that kept the last ",
                          "good): re-projecting"));
  // The default scope's selection is every admitted sandbox; the re-projection moves those not current.
  QueueReprojection(std::string(policy::kDefaultScope));
}

void GatewayCore::QueueReprojection(const std::string& scope, bool failed_here) {
  absl::MutexLock lock(&reproject_mu_);
  if (stopping_reprojection_) return;  // the core is going: nothing would run it
  auto [it, inserted] = reproject_scopes_.try_emplace(scope);
  QueuedScope& queued = it->second;
  if (!failed_here) {
    // A change queued now runs at once, even for a scope waiting out a failure's pause; the pause it had
    // reached is kept (a database that stays broken is not hammered because changes keep coming).
    queued.not_before = std::chrono::steady_clock::time_point::min();
    queued.awaiting_origin = false;
  } else {
    // The caller's own re-projection of `scope` just failed: it runs again after the pause reached.
    RequeueFailedLocked(queued, inserted, queued.retry_ms, std::chrono::steady_clock::now(), /*own_change=*/true);
  }
  ++reproject_queued_;
  if (reproject_thread_.joinable()) return;
  reproject_thread_ = std::thread([this] { ReprojectionLoop(); });
}

void GatewayCore::ReprojectionLoop() {
  using Clock = std::chrono::steady_clock;
  for (;;) {
    struct Due {
      std::string scope;
      int64_t retry_ms;  // the pause it had reached
      bool own_change;   // a retry of this replica's own change: announced to the other replicas
    };
    std::vector<Due> due;
    {
      absl::MutexLock lock(&reproject_mu_);
      for (;;) {
        if (stopping_reprojection_) return;
        // The scopes due now; the next to fall due bounds the wait (a steady clock: a step of the wall
        // clock neither delays nor hastens a retry).
        const Clock::time_point now = Clock::now();
        Clock::time_point next = Clock::time_point::max();
        for (auto it = reproject_scopes_.begin(); it != reproject_scopes_.end();) {
          if (it->second.not_before <= now) {
            due.push_back({it->first, it->second.retry_ms, it->second.own_change});
            it = reproject_scopes_.erase(it);
          } else {
            next = std::min(next, it->second.not_before);
            ++it;
          }
        }
        if (!due.empty()) break;
        const uint64_t queued = reproject_queued_;
        auto woken = [this, queued]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(reproject_mu_) {
          return stopping_reprojection_ || reproject_queued_ != queued;
        };
        if (next == Clock::time_point::max()) {
          reproject_mu_.Await(absl::Condition(&woken));
        } else {
          reproject_mu_.AwaitWithTimeout(absl::Condition(&woken), absl::FromChrono(next - now));
        }
      }
    }
    std::vector<Due> failed, not_run;
    for (size_t i = 0; i < due.size(); ++i) {
      const auto& [scope, retry_ms, own_change] = due[i];
      {
        absl::MutexLock lock(&reproject_mu_);
        if (stopping_reprojection_) {  // a stop waits for the scope running, not for every due one
          not_run.assign(due.begin() + static_cast<std::ptrdiff_t>(i), due.end());
          break;
        }
      }
      // Sandboxes another replica already moved are passed by (PolicyAuthoring::IsCurrent).
      const Reprojector::Outcome moved = Reproject(scope, own_change);
      if (moved.failed) failed.push_back(due[i]);
      if (moved.moved > 0 || moved.kept > 0) {
        LogInfo(absl::StrCat("policy scope ", scope, " changed: ", moved.moved, " sandbox(es) re-projected here",
                             moved.kept > 0 ? absl::StrCat(", ", moved.kept, " kept the last good") : ""));
      }
    }
    absl::MutexLock lock(&reproject_mu_);
    if (!not_run.empty()) return;  // stopping
    // A failed scope (nothing moved; logged by the re-projection) runs again after its pause, until it
    // commits: no sandbox may stay on a withdrawn policy because one commit failed (a deadlock's victim, a
    // restart, a constraint). Its pause doubles while it keeps failing, up to kReprojectionRetryMaxMs; other
    // scopes do not wait for it. Queued again meanwhile by a change, it stays due at once; by a failure
    // of its own, it waits the longer of the two pauses.
    const Clock::time_point failed_at = Clock::now();
    for (const auto& [scope, retry_ms, own_change] : failed) {
      auto [it, inserted] = reproject_scopes_.try_emplace(scope);
      RequeueFailedLocked(it->second, inserted, retry_ms, failed_at, own_change);
    }
  }
}

void GatewayCore::RequeueFailedLocked(QueuedScope& queued, bool inserted, int64_t pause_ms,
                                      std::chrono::steady_clock::time_point failed_at, bool own_change) {
  if (own_change) {
    queued.own_change = true;
    // This replica's own change retries after its pause, not after a wait for another replica's.
    if (queued.awaiting_origin) {
      queued.awaiting_origin = false;
      queued.not_before = failed_at + std::chrono::milliseconds(pause_ms);
    }
  }
  // Queued meanwhile by a change (due at once), it stays due at once; otherwise it waits the longer of the
  // pause it had and this one. The next pause doubles, never shrinking below one already reached.
  if (inserted || queued.not_before != std::chrono::steady_clock::time_point::min()) {
    queued.not_before = std::max(queued.not_before, failed_at + std::chrono::milliseconds(pause_ms));
  }
  queued.retry_ms = std::max<int64_t>(queued.retry_ms, std::min<int64_t>(2 * pause_ms, kReprojectionRetryMaxMs));
}

bool GatewayCore::HoldsFleetLease(const std::string& name, int64_t duration_ms) {
  auto held = store_->replication().TryLease(name, duration_ms);
  return held.ok() && *held;
}

void GatewayCore::OnRemoteChanges(const store::RemoteChanges& changes) {
  const auto trust = trust_store();
  std::vector<bool> verdicts;
  verdicts.reserve(changes.sandboxes.size());
  // As VerifyLoaded: a shared (not context-bound) envelope is checked once per admission time.
  absl::flat_hash_map<std::pair<const store::Envelope*, int64_t>, bool> shared_verdicts;
  for (const auto& r : changes.sandboxes) {
    const auto key = std::make_pair(r.envelope.get(), r.updated_at_unix);
    if (auto known = shared_verdicts.find(key); !r.envelope->context_bound() && known != shared_verdicts.end()) {
      verdicts.push_back(known->second);
      continue;
    }
    absl::Status checked = gate_.CheckStored(r.context.sandbox_id(), r.context, *r.envelope, r.verification,
                                             r.updated_at_unix, trust.get());
    if (!r.envelope->context_bound()) shared_verdicts[key] = checked.ok();
    if (!checked.ok()) {
      LogError(absl::StrCat("sandbox ", r.context.sandbox_id(), ": envelope stored by another replica fails verification (",
                            checked.message(), "); not served"));
    }
    verdicts.push_back(checked.ok());
  }
  registry_->ApplyRemote(changes.sandboxes, verdicts, changes.removed);
  if (trust_store() != trust && !changes.sandboxes.empty()) {
    // A reload while these were checked: checked again under it, off the feed's thread (a recheck may
    // refresh, and a refresh commits).
    std::vector<std::string> ids;
    for (const auto& r : changes.sandboxes) ids.push_back(r.context.sandbox_id());
    auto recheck = [this, trust, ids = std::move(ids)] { RecheckIfTrustMoved(trust.get(), ids); };
    if (blocking_pool_ != nullptr) {
      blocking_pool_->Submit(std::move(recheck));
    } else {
      recheck();
    }
  }
}

void GatewayCore::OnPolicyRevision(const store::PolicyRevisionRecord& revision, bool remote) {
  // A local change re-projects its scope itself (Mutate). The replica that changed the scope re-projects
  // the sandboxes it knows of; ones this replica admitted meanwhile may not be among them, and that replica
  // may stop before it commits. So this one re-projects the scope too — after that replica's
  // re-projection arrived, when it passes by every sandbox already moved (PolicyAuthoring::IsCurrent),
  // rather than at once, when it would sign and commit every one of them a second time. Not here: this
  // runs inside the store's feed delivery, and a re-projection commits.
  if (!remote) return;
  absl::MutexLock lock(&reproject_mu_);
  if (stopping_reprojection_) return;
  auto [it, inserted] = reproject_scopes_.try_emplace(revision.scope);
  QueuedScope& queued = it->second;
  const auto now = std::chrono::steady_clock::now();
  const auto until = now + std::chrono::milliseconds(config_.replica_reprojection_wait_ms);
  if (!inserted && queued.awaiting_origin) {  // waiting already: now for a re-projection of this revision
    queued.awaited_revision = std::max(queued.awaited_revision, revision.revision);
    queued.not_before = std::max(queued.not_before, until);
    return;
  }
  if (!inserted && queued.not_before <= now) return;  // due at once
  // Waiting out a failure's pause here: the sooner of its end and the wait's.
  queued.not_before = inserted ? until : std::min(queued.not_before, until);
  queued.awaiting_origin = true;
  queued.awaited_revision = revision.revision;
  ++reproject_queued_;
  if (!reproject_thread_.joinable()) reproject_thread_ = std::thread([this] { ReprojectionLoop(); });
}

void GatewayCore::OnRemoteReprojections(const std::vector<store::RemoteReprojection>& reprojections) {
  absl::MutexLock lock(&reproject_mu_);
  for (const auto& r : reprojections) {
    auto it = reproject_scopes_.find(r.scope);
    // One made from an older revision (the feed tells them after the round's revisions) is not the one awaited.
    if (it == reproject_scopes_.end() || !it->second.awaiting_origin || r.revision < it->second.awaited_revision) continue;
    it->second.not_before = std::chrono::steady_clock::time_point::min();
    it->second.awaiting_origin = false;
    ++reproject_queued_;
  }
}

std::shared_ptr<const trust::TrustStore> GatewayCore::trust_store() const { return gate_.trust(); }

bool GatewayCore::permits_mutation() const {
  auto caps = driver_->GetCapabilities();
  return caps.ok() && caps->permits_mutation() && driver_->authoring() != nullptr;
}

std::string GatewayCore::SurfaceFor() const {
  auto caps = driver_->GetCapabilities();
  if (caps.ok()) {
    for (const auto& surface : config_.accepted_surfaces) {
      const auto& supported = caps->supported_surfaces();
      if (std::find(supported.begin(), supported.end(), surface) != supported.end()) return surface;
    }
  }
  return config_.accepted_surfaces.front();
}

absl::StatusOr<size_t> GatewayCore::LoadAdmitted() {
  const absl::Time start = absl::Now();
  // The audit chain says which ceiling must be in force: a deleted or replaced row is not run without.
  // Replicas: another one's ceiling_set may not be sealed into the chain yet (pending while the head is
  // held), or may commit between the two reads — both are read again for a few seconds before the start
  // is refused (review 108: a false "replaced behind the gateway's back").
  for (int attempt = 0;; ++attempt) {
    if (absl::Status loaded = gate_.ReloadCeiling(); !loaded.ok()) return loaded;
    absl::Status recorded = gate_.ceiling().CheckAgainstAudit();
    if (recorded.ok()) break;
    if (!store_->replication().shared() || attempt >= 10) return recorded;
    absl::SleepFor(absl::Milliseconds(500));
  }
  // Read and installed with the replicas' feed held: what another replica commits meanwhile is applied
  // after the reset, never overwritten by this older read (review 108).
  absl::Time read;
  size_t loaded = 0;
  if (absl::Status installed = store_->replication().WithFeedHeld([&]() -> absl::Status {
        auto records = store_->sandboxes().LoadSandboxes();
        if (!records.ok()) return records.status();
        read = absl::Now();
        loaded = records->size();
        registry_->Reset(*std::move(records));  // unverified until re-verified: lazily on use, and in the background
        return absl::OkStatus();
      });
      !installed.ok()) {
    return installed;
  }
  LogInfo(absl::StrCat("loaded ", loaded, " admitted sandbox(es) in ", absl::FormatDuration(absl::Now() - start),
                       " (store ", absl::FormatDuration(read - start), ")"));
  return loaded;
}

absl::Status GatewayCore::Reverify(const std::string& sandbox_id, const driver_v1::RuntimeContext& context,
                                   const store::EnvelopePtr& envelope, Verification verification,
                                   int64_t updated_at_unix, const trust::TrustStore* trust) {
  absl::Status status = gate_.CheckStored(sandbox_id, context, *envelope, verification, updated_at_unix, trust);
  if (!status.ok()) {
    LogError(absl::StrCat("sandbox ", sandbox_id, ": stored envelope fails re-verification (", status.message(),
                          "); not served"));
    // Listed still (operators see it, drift says why), refused with the reason (review 104: it was dropped
    // from the registry and vanished from list, drift and wait while its row stayed). Only under the trust
    // store still in force: a reload meanwhile cleared the marks and decides again (review 105).
    if (trust_store().get() == trust) registry_->MarkUnservable(sandbox_id, envelope, UnservableReason(status));
    return status;
  }
  registry_->MarkVerified(sandbox_id, envelope);
  return absl::OkStatus();
}

GatewayCore::CeilingCommit GatewayCore::CommitUnderCeiling(const std::function<store::ChangeBatch()>& make_batch,
                                                           const openshell::sandbox::v1::SandboxPolicy& policy,
                                                           const std::string& digest, int64_t ceiling_stamp,
                                                           int attempts_made) {
  for (int attempt = attempts_made;; ++attempt) {
    store::ChangeBatch batch = make_batch();
    batch.checked_ceiling = ceiling_stamp;
    auto committed = store_->sandboxes().Commit(std::move(batch));
    if (committed.ok()) return {};
    if (!store::IsCeilingChanged(committed.status()) || attempt == kMaxCeilingRetries) return {committed.status(), {}};
    if (absl::Status reloaded = ReloadCeiling(); !reloaded.ok()) return {reloaded, {}};
    if (auto inside = gate_.CheckCeiling(policy, digest, &ceiling_stamp); !inside.ok()) {
      return {absl::OkStatus(), std::move(inside)};
    }
  }
}

size_t GatewayCore::VerifyLoaded(size_t batch) {
  size_t verified = 0, failed = 0;
  std::string after;
  const auto trust = trust_store();
  // Envelopes without context binding are shared by many sandboxes: verify each (as of one admission
  // time) once per pass.
  absl::flat_hash_map<std::pair<const store::Envelope*, int64_t>, bool> shared_verdicts;
  while (!stop_verifying_) {
    const auto ids = registry_->Unverified(after, batch);
    if (ids.empty()) break;
    after = ids.back();
    for (const auto& id : ids) {
      auto snapshot = registry_->Get(id);
      if (!snapshot || snapshot->verified) continue;
      const auto& r = snapshot->record;
      // Failed already, on a fetch (marked; its failure audited then): not again.
      if (!snapshot->unservable.empty()) {
        ++failed;
        continue;
      }
      const bool shareable = !r.envelope->context_bound();
      const auto key = std::make_pair(r.envelope.get(), r.updated_at_unix);
      if (auto known = shared_verdicts.find(key); shareable && known != shared_verdicts.end() && known->second) {
        registry_->MarkVerified(id, r.envelope);  // the very same envelope, as of the same time, passed
        ++verified;
        continue;
      }
      const bool ok = Reverify(id, r.context, r.envelope, r.verification, r.updated_at_unix, trust.get()).ok();
      if (shareable) shared_verdicts[key] = ok;
      ++(ok ? verified : failed);
    }
  }
  // Loading and this pass made and dropped a copy of every row and envelope (in several threads' malloc
  // arenas): give the memory back, or a large fleet keeps tens of MB it will never use again.
  ::malloc_trim(0);
  if (verified + failed > 0) {
    LogInfo(absl::StrCat("re-verified ", verified, " admitted sandbox(es) since start",
                         failed > 0 ? absl::StrCat("; ", failed, " failed and are not served") : ""));
  }
  return verified;
}

absl::Status GatewayCore::RefuseAdmission(const driver_v1::RuntimeContext& context,
                                          const DriverHandles::Acquired& acquired,
                                          const driver_v1::Projection* projection, const std::string& reason_code,
                                          const std::string& detail) {
  // `detail` may quote the driver (a no_verified_policy reason): bounded and escaped like all such text.
  const std::string message = absl::StrCat(reason_code, ": ", BoundedText(detail, kMaxDriverTextBytes));
  audit_.Record(AuditRecorder::For(audit::Type::kRefusal, context.sandbox_id(), projection), audit::Outcome::kRefused,
                message);
  handles_.Release(acquired);
  LogInfo(absl::StrCat("admission of ", context.sandbox_id(), " refused: ", message),
          {{"event", "refusal"}, {"sandbox_id", context.sandbox_id()}, {"reason", reason_code}, {"detail", message}});
  return common::Refused(absl::StatusCode::kFailedPrecondition, reason_code, BoundedText(detail, kMaxDriverTextBytes));
}

absl::Status GatewayCore::AuditedDriverError(const driver_v1::RuntimeContext& context, const absl::Status& error) {
  if (common::IsStorageError(error)) return error;  // the builtin driver's own store: not a refusal to record
  // As a refresh records the driver's failures (review 114: an admission the driver refused — PERMISSION_DENIED,
  // "will not serve that subject" — or failed left no trace in the audit chain).
  const std::string code = common::ReasonOf(error);
  const std::string reason =
      !code.empty() ? std::string(error.message())
                    : absl::StrCat("driver_error: ", absl::StatusCodeToString(error.code()), ": ", error.message());
  audit_.Record(AuditRecorder::For(audit::Type::kRefusal, context.sandbox_id()), audit::Outcome::kRefused, reason);
  LogInfo(absl::StrCat("admission of ", context.sandbox_id(), " refused: ", reason),
          {{"event", "refusal"}, {"sandbox_id", context.sandbox_id()},
           {"reason", code.empty() ? std::string("driver_error") : code}, {"detail", reason}});
  return error;
}

void GatewayCore::RecordAuthenticationFailures(const std::string& summary) {
  audit_.Record(AuditRecorder::For(audit::Type::kAuthenticationFailures, ""), audit::Outcome::kRefused, summary);
}

absl::StatusOr<gateway_v1::AdmitSandboxResponse> GatewayCore::Admit(const driver_v1::RuntimeContext& context,
                                                                   const AdmitCheck& also_check) {
  absl::Notification finished;
  absl::StatusOr<gateway_v1::AdmitSandboxResponse> out;
  AdmitAsync(context, also_check, [&](absl::StatusOr<gateway_v1::AdmitSandboxResponse> answer) {
    out = std::move(answer);
    finished.Notify();
  });
  finished.WaitForNotification();
  return out;
}

struct GatewayCore::Admission {
  driver_v1::RuntimeContext context;
  AdmitCheck also_check;
  AdmitDone done;
  std::string actor;  // AuditActorScope of the caller, for every event this admission writes
  std::optional<AdmissionSlots::Slot> slot;
  std::string key_before;  // the builtin driver's projection key when the admission began
  DriverHandles::Acquired acquired;
  // Set by the check, for the commit and its retries.
  std::shared_ptr<const openshell::sandbox::v1::SandboxPolicy> policy;
  std::vector<std::string> key_ids;
  store::Verification verification = store::Verification::kNone;
  store::ChangeBatch batch;  // the admission's commit (kept for a retry under a changed ceiling)
  std::shared_ptr<const trust::TrustStore> checked_with;  // the trust store the projection was checked under
  driver_v1::Projection admitted;  // the envelope's header
  std::string sandbox_handle;
  bool committed = false;  // durable: from here the handle is the admitted sandbox's
};

void GatewayCore::Step(const std::shared_ptr<Admission>& admission, absl::FunctionRef<void()> step) {
  store::AuditActorScope actor(admission->actor);  // the caller's, in the events and log lines of this step
  try {
    step();
  } catch (const std::exception& error) {
    LogError(absl::StrCat("admission of ", BoundedText(admission->context.sandbox_id(), 256), ": ", error.what()));
    if (!admission->done) return;  // it was being answered
    absl::Status failed = absl::InternalError(absl::StrCat("AdmitSandbox: ", error.what()));
    if (admission->acquired.handle.empty() || admission->committed) return AdmitFinish(admission, std::move(failed));
    auto release = [this, admission, failed] {
      handles_.Release(admission->acquired);
      AdmitFinish(admission, failed);
    };
    try {
      if (blocking_pool_ != nullptr) return blocking_pool_->Submit(std::move(release));
      release();
    } catch (...) {
      AdmitFinish(admission, failed);  // the note stays in flight: a due release at the next start
    }
  }
}

void GatewayCore::Offload(std::shared_ptr<Admission> admission, std::function<void()> work) {
  auto step = [this, admission, work = std::move(work)] { Step(admission, work); };
  if (blocking_pool_ == nullptr) return step();
  blocking_pool_->Submit(std::move(step));
}

void GatewayCore::AdmitFinish(const std::shared_ptr<Admission>& admission,
                              absl::StatusOr<gateway_v1::AdmitSandboxResponse> out) {
  admission->slot.reset();  // before the caller hears: a retry of the same id must find the slot free
  AdmitDone done = std::move(admission->done);
  admission->done = nullptr;
  done(std::move(out));
}

void GatewayCore::AdmitAsync(driver_v1::RuntimeContext context, AdmitCheck also_check, AdmitDone done) {
  if (absl::Status bounded = CheckContext(context, config_.limits.context); !bounded.ok()) return done(bounded);
  const std::string& id = context.sandbox_id();
  if (registry_->Contains(id)) return done(absl::AlreadyExistsError(absl::StrCat("sandbox '", id, "' is already admitted")));
  AdmissionSlots::Slot slot = slots_.Take(id);
  if (!slot.taken()) {
    return done(common::Refused(absl::StatusCode::kAborted, "admission_in_progress",
                                absl::StrCat("an admission of sandbox '", id,
                                             "' is in progress (or its old handle is being released); retry")));
  }
  // Again with the slot held: a racing admission may have finished between the check above and Take.
  if (registry_->Contains(id)) return done(absl::AlreadyExistsError(absl::StrCat("sandbox '", id, "' is already admitted")));
  auto admission = std::make_shared<Admission>();
  admission->context = std::move(context);
  admission->also_check = std::move(also_check);
  admission->done = std::move(done);
  admission->actor = store::AuditActorScope::Current();
  admission->slot.emplace(std::move(slot));
  if (driver_->available()) return Step(admission, [&] { AdmitAcquire(admission); });
  // Down: try it at once (a driver restarted a moment ago answers now) rather than at the next monitor tick.
  Offload(admission, [this, admission] {
    if (!driver_->TryReconnect()) {
      return AdmitFinish(admission, AuditedDriverError(admission->context,
                                                       common::Refused(absl::StatusCode::kUnavailable, "driver_unavailable",
                                                                       "the policy driver is not reachable")));
    }
    AdmitAcquire(admission);
  });
}

void GatewayCore::AdmitAcquire(std::shared_ptr<Admission> admission) {
  // What the driver would serve this context as of now: if a policy change (here, or committed by another
  // replica) lands between this fetch and the commit, the re-projection it triggers may not see this
  // sandbox yet — so the admission re-checks after its commit and moves itself (issue 25.2).
  if (drivers::PolicyAuthoring* authoring = driver_->authoring(); authoring != nullptr) {
    admission->key_before = authoring->ProjectionKey(admission->context);
  }
  handles_.AcquireAsync(
      admission->context,
      [this, admission](std::function<void()> work) { Offload(admission, std::move(work)); },
      [this, admission](absl::StatusOr<DriverHandles::Acquired> handle) {
        Step(admission, [&] {
          if (!handle.ok()) {
            // Not on this (the driver's completion) thread: the refusal writes an audit event.
            return Offload(admission, [this, admission, status = handle.status()] {
              AdmitFinish(admission, AuditedDriverError(admission->context, DriverError(status, "AcquireHandle")));
            });
          }
          admission->acquired = *std::move(handle);
          driver_->GetProjectionAsync(admission->acquired.handle, SurfaceFor(),
                                      [this, admission](absl::StatusOr<driver_v1::GetProjectionResponse> response) {
                                        Step(admission, [&] { AdmitChecked(admission, std::move(response)); });
                                      });
        });
      });
}

void GatewayCore::AdmitChecked(std::shared_ptr<Admission> admission,
                               absl::StatusOr<driver_v1::GetProjectionResponse> response) {
  const driver_v1::RuntimeContext& context = admission->context;
  // A refusal releases the driver handle and writes an audit event: not on this thread.
  auto refuse = [this, admission](std::shared_ptr<driver_v1::Projection> projection, std::string reason,
                                  std::string detail) {
    Offload(admission, [this, admission, projection = std::move(projection), reason = std::move(reason),
                        detail = std::move(detail)] {
      AdmitFinish(admission,
                  RefuseAdmission(admission->context, admission->acquired, projection.get(), reason, detail));
    });
  };
  if (!response.ok()) {
    return Offload(admission, [this, admission, status = response.status()] {
      handles_.Release(admission->acquired);
      AdmitFinish(admission, AuditedDriverError(admission->context, DriverError(status, "GetProjection")));
    });
  }
  if (response->has_no_verified_policy()) {
    return refuse(nullptr, trust::reason::kNoVerifiedPolicy, response->no_verified_policy().reason());
  }
  auto projection = std::make_shared<driver_v1::Projection>(std::move(*response->mutable_projection()));
  projection->DiscardUnknownFields();  // both sides ignore unknown envelope fields on the wire

  const int64_t now = clock_->NowUnix();
  admission->checked_with = trust_store();
  const ProjectionGate::Verdict verdict =
      gate_.CheckNew(*projection, context, now, std::nullopt, admission->checked_with.get());
  const trust::CheckResult& result = verdict.result;
  if (!result.ok()) return refuse(projection, result.reason, result.detail);
  std::vector<store::AuditEvent> also_events;
  if (admission->also_check) {
    const trust::CheckResult also = admission->also_check(*result.policy, &also_events);
    if (!also.ok()) return refuse(projection, also.reason, also.detail);
  }
  admission->policy = result.policy;
  admission->key_ids = result.verified_key_ids;
  admission->verification = verdict.verification;

  admission->sandbox_handle = MintSandboxHandle();
  const store::EnvelopePtr envelope = store_->sandboxes().envelopes().Intern(std::move(*projection));
  admission->admitted = envelope->Header();
  store::SandboxRecord record;
  record.context = context;
  record.handle_sha256 = policy::Sha256(admission->sandbox_handle);
  record.driver_handle = admission->acquired.handle;
  record.acquisition_id = admission->acquired.intent;
  record.envelope = envelope;
  record.verification = verdict.verification;
  record.signing_key_ids = result.verified_key_ids;
  record.admitted_at_unix = record.updated_at_unix = now;

  auto event = AuditRecorder::For(audit::Type::kAdmission, context.sandbox_id(), &admission->admitted);
  event.key_ids = result.verified_key_ids;
  event.outcome = audit::Outcome::kOk;
  event.reason = absl::StrCat("verification=", NameOf(verdict.verification));
  if (const std::string note = MarkerNote(*result.policy); !note.empty()) absl::StrAppend(&event.reason, "; ", note);
  store::ChangeBatch& batch = admission->batch;
  batch.changes.push_back(store::change::AdmitSandbox{std::move(record)});
  batch.events.push_back(std::move(event));
  batch.events.insert(batch.events.end(), std::make_move_iterator(also_events.begin()),
                      std::make_move_iterator(also_events.end()));
  // The ceiling it was checked against: the store refuses the commit (ceiling_changed) if another was
  // stored meanwhile — here or on another replica; then CommitUnderCeiling checks again (issue 25.10).
  batch.checked_ceiling = verdict.ceiling_stamp;
  store_->sandboxes().CommitAsync(batch, [this, admission](absl::StatusOr<store::CommitResult> committed) {
    Step(admission, [&] { AdmitCommitted(admission, committed.status()); });
  });
}

void GatewayCore::AdmitCommitted(std::shared_ptr<Admission> admission, absl::Status committed) {
  const driver_v1::RuntimeContext& context = admission->context;
  const driver_v1::Projection& admitted = admission->admitted;
  if (!committed.ok()) {
    return Offload(admission, [this, admission, committed]() mutable {
      if (store::IsCeilingChanged(committed)) {
        // Another ceiling was stored since the check: load it, check against it and commit again (the
        // one rule, CommitUnderCeiling), or refuse.
        const std::string& digest = admission->admitted.policy_digest();
        int64_t stamp = store::kNoCeiling;
        std::optional<trust::CheckResult> outside;
        if (committed = ReloadCeiling(); committed.ok()) {
          if (auto inside = gate_.CheckCeiling(*admission->policy, digest, &stamp); !inside.ok()) {
            outside = std::move(inside);
          } else {
            CeilingCommit retried = CommitUnderCeiling([admission] { return admission->batch; }, *admission->policy,
                                                       digest, stamp, /*attempts_made=*/1);
            committed = retried.status;
            outside = std::move(retried.outside);
          }
        }
        if (outside) {
          return AdmitFinish(admission, RefuseAdmission(admission->context, admission->acquired, &admission->admitted,
                                                        outside->reason, outside->detail));
        }
        if (committed.ok()) return AdmitCommitted(admission, absl::OkStatus());
      }
      handles_.Release(admission->acquired);
      AdmitFinish(admission, committed);
    });
  }
  admission->committed = true;

  gateway_v1::AdmitSandboxResponse out;
  out.set_sandbox_id(context.sandbox_id());
  out.set_sandbox_handle(admission->sandbox_handle);
  out.set_surface_id(admitted.surface_id());
  out.set_policy_digest(admitted.policy_digest());
  out.set_policy_version(admitted.policy_version());
  for (const auto& id : admission->key_ids) out.add_signing_key_ids(id);
  out.set_verification(std::string(NameOf(admission->verification)));
  LogInfo(absl::StrCat("admitted sandbox ", context.sandbox_id(), " digest ", admitted.policy_digest(), " version ",
                       admitted.policy_version(), " verification ", NameOf(admission->verification)),
          {{"event", "admission"}, {"sandbox_id", context.sandbox_id()}, {"digest", admitted.policy_digest()},
           {"version", absl::StrCat(admitted.policy_version())},
           {"verification", std::string(NameOf(admission->verification))}});
  // A trust-store reload since the check: its recheck may have passed this sandbox by (not in the registry
  // yet), so it is checked again under the reloaded store before the answer (refused to fetchers if it no
  // longer verifies). The policy changed while this admission was in flight: it is moved now, as the
  // change's re-projection would have. Either may ask the driver: off this thread.
  const bool trust_moved = trust_store() != admission->checked_with;
  drivers::PolicyAuthoring* authoring = driver_->authoring();
  const bool policy_moved = authoring != nullptr && authoring->ProjectionKey(context) != admission->key_before;
  if (!trust_moved && !policy_moved) return AdmitFinish(admission, std::move(out));
  Offload(admission, [this, admission, policy_moved, out = std::move(out)]() mutable {
    const std::string& id = admission->context.sandbox_id();
    if (policy_moved) {
      if (auto moved = Refresh(id); moved.ok() && moved->changed()) {
        LogInfo(absl::StrCat("sandbox ", id, ": its policy changed during admission; now at digest ", moved->policy_digest()));
      }
    }
    RecheckIfTrustMoved(admission->checked_with.get(), {id});
    // The answer names what is in force now for this admission (a refresh may have moved it; another
    // replica may have deleted and admitted the id again meanwhile: then its projection is not named).
    if (auto snapshot = registry_->Get(id);
        snapshot && snapshot->record.handle_sha256 == policy::Sha256(admission->sandbox_handle)) {
      const auto header = snapshot->record.envelope->Header();
      out.set_policy_digest(header.policy_digest());
      out.set_policy_version(header.policy_version());
    }
    AdmitFinish(admission, std::move(out));
  });
}

absl::StatusOr<gateway_v1::DeleteSandboxResponse> GatewayCore::Delete(const std::string& sandbox_id) {
  if (sandbox_id.empty()) return absl::InvalidArgumentError("sandbox_id: required");
  // Not while the id is being admitted: the answer "nothing deleted" would be followed by the admission.
  std::optional<AdmissionSlots::Slot> slot(slots_.Take(sandbox_id));
  if (!slot->taken()) {
    return common::Refused(absl::StatusCode::kAborted, "admission_in_progress",
                           absl::StrCat("sandbox '", sandbox_id,
                                        "' is being admitted (or its handle released); retry the delete"));
  }
  auto event = AuditRecorder::For(audit::Type::kDeletion, sandbox_id, nullptr);
  event.outcome = audit::Outcome::kOk;
  auto deleted = store_->sandboxes().DeleteSandbox(sandbox_id, std::move(event));
  if (!deleted.ok()) return deleted.status();  // the registry revoked the handle and closed watchers
  gateway_v1::DeleteSandboxResponse out;
  out.set_deleted(*deleted);
  slot.reset();  // the queued releases may include this id's
  if (*deleted) {
    reports_.Forget(sandbox_id);
    LogInfo(absl::StrCat("deleted sandbox ", sandbox_id), {{"event", "deletion"}, {"sandbox_id", sandbox_id}});
    // Not behind another delivery (a slow driver would hold this admin-pool thread): that one, or the next
    // tick, takes this release in its turn.
    handles_.DeliverQueued(/*wait=*/false);
  }
  return out;
}

void GatewayCore::DeliverPendingReleases() { handles_.DeliverQueued(); }

absl::StatusOr<gateway_v1::SandboxInfo> GatewayCore::GetSandbox(const std::string& sandbox_id, bool include_policy) const {
  auto snapshot = registry_->Get(sandbox_id);
  if (!snapshot) return absl::NotFoundError(absl::StrCat("no sandbox '", sandbox_id, "' is admitted"));
  gateway_v1::SandboxInfo info = InfoFrom(*snapshot);
  FillDriftOf(*snapshot, &info);
  if (include_policy && !info.mutable_policy()->ParseFromString(snapshot->record.envelope->body())) {
    return absl::DataLossError(absl::StrCat("sandbox '", sandbox_id, "': its admitted body does not parse"));
  }
  return info;
}

absl::StatusOr<gateway_v1::ListSandboxesResponse> GatewayCore::ListSandboxes(
    const gateway_v1::ListSandboxesRequest& request) const {
  const uint32_t size = request.page_size() == 0 ? kDefaultPageSize : std::min(request.page_size(), kMaxPageSize);
  std::string after;
  if (!request.page_token().empty() && !absl::WebSafeBase64Unescape(request.page_token(), &after)) {
    return absl::InvalidArgumentError("page_token: not a token from a previous ListSandboxes");
  }
  auto page = registry_->List(after, size + 1);
  gateway_v1::ListSandboxesResponse out;
  for (size_t i = 0; i < page.size() && i < size; ++i) {
    gateway_v1::SandboxInfo* info = out.add_sandboxes();
    *info = InfoFrom(page[i]);
    FillDriftOf(page[i], info);
  }
  if (page.size() > size) {
    out.set_next_page_token(absl::WebSafeBase64Escape(page[size - 1].record.context.sandbox_id()));
  }
  return out;
}

void GatewayCore::FillDriftOf(const SandboxRegistry::Snapshot& snapshot, gateway_v1::SandboxInfo* info) const {
  drivers::PolicyAuthoring* authoring = driver_->authoring();
  // The serving rule's own answer (failing re-verification, expired, revoked): a sandbox refused its
  // projection is not in sync, whatever it reported about it earlier (review 104).
  const absl::Status served = !snapshot.unservable.empty() ? absl::FailedPreconditionError(snapshot.unservable)
                                                           : gate_.ServingError(*snapshot.record.envelope, clock_->NowUnix());
  FillDrift(authoring != nullptr ? authoring->DesiredFor(info->context()) : std::nullopt, served, info);
}

std::vector<std::pair<std::string, uint64_t>> GatewayCore::CountByDrift() const {
  std::vector<std::pair<std::string, uint64_t>> counts;
  for (const auto& [state, name] : kDriftStateNames) counts.emplace_back(std::string(name), 0);
  std::string after;
  for (;;) {
    const auto page = registry_->List(after, kMaxPageSize);
    for (const auto& snapshot : page) {
      gateway_v1::SandboxInfo info = InfoFrom(snapshot);
      FillDriftOf(snapshot, &info);
      for (auto& [name, count] : counts) count += name == info.drift_state() ? 1 : 0;
    }
    if (page.size() < kMaxPageSize) break;
    after = page.back().record.context.sandbox_id();
  }
  return counts;
}

absl::Status GatewayCore::RecordRefreshError(const std::string& sandbox_id, const std::string& reason_code,
                                             const std::string& detail) {
  auto snapshot = registry_->Get(sandbox_id);
  if (!snapshot) return absl::NotFoundError(absl::StrCat("no sandbox '", sandbox_id, "' is admitted"));
  const std::string message = absl::StrCat(reason_code, ": ", BoundedText(detail, kMaxDriverTextBytes));
  if (snapshot->record.last_refresh_error == message) return absl::OkStatus();
  auto event = AuditRecorder::For(audit::Type::kRefresh, sandbox_id);
  event.outcome = audit::Outcome::kRefused;
  event.reason = message;
  return store_->sandboxes().SetRefreshError(sandbox_id, message, std::move(event));
}

absl::Status GatewayCore::ClearRefreshError(const std::string& sandbox_id, const std::string& reason_code) {
  auto snapshot = registry_->Get(sandbox_id);
  if (!snapshot) return absl::NotFoundError(absl::StrCat("no sandbox '", sandbox_id, "' is admitted"));
  if (!absl::StartsWith(snapshot->record.last_refresh_error, absl::StrCat(reason_code, ": "))) return absl::OkStatus();
  auto event = AuditRecorder::For(audit::Type::kRefresh, sandbox_id);
  event.outcome = audit::Outcome::kOk;
  event.reason = absl::StrCat("cleared ", reason_code);
  return store_->sandboxes().SetRefreshError(sandbox_id, "", std::move(event));
}

absl::StatusOr<gateway_v1::RefreshSandboxResponse> GatewayCore::Refresh(const std::string& sandbox_id) {
  std::shared_ptr<const trust::TrustStore> checked_with;
  auto out = RefreshChecked(sandbox_id, &checked_with);
  // A reload between the check and the commit: checked again (after refresh_mu_ is released: the recheck
  // may refresh).
  if (out.ok() && out->changed()) RecheckIfTrustMoved(checked_with.get(), {sandbox_id});
  return out;
}

// Refresh errors an unchanged answer inside the ceiling shows to be over.
// Refresh errors the driver's answer with the admitted projection does not disprove: they are about the
// admitted envelope itself (its key revoked) or about something else than the driver (admit mode's push to
// the OpenShell gateway, cleared when a push is accepted). Every other refresh error — the driver
// unreachable or failing, none offered, an offered projection refused for any reason (a bad signature, an
// invalid policy, a rollback, outside the ceiling) — is over once the driver serves the admitted one
// again (review 104: an offered typo, reverted, left the sandbox refresh_failed for good).
const absl::string_view kStandsAgainstCurrent[] = {trust::reason::kKeyRevoked, "openshell_push_refused"};

absl::StatusOr<gateway_v1::RefreshSandboxResponse> GatewayCore::RefreshChecked(
    const std::string& sandbox_id, std::shared_ptr<const trust::TrustStore>* checked_with) {
  absl::MutexLock lock(&refresh_mu_);
  auto snapshot = registry_->Get(sandbox_id);
  if (!snapshot) return absl::NotFoundError(absl::StrCat("no sandbox '", sandbox_id, "' is admitted"));
  const auto current = snapshot->record.envelope->Header();

  auto keep_last_good = [&](const std::string& reason_code, const std::string& driver_detail,
                            const driver_v1::Projection* offered) -> absl::Status {
    // A driver's words (or what the check quotes of its projection) go to the audit chain, the store, the
    // logs and the caller: bounded and escaped, as an admission's are.
    const std::string detail = BoundedText(driver_detail, kMaxDriverTextBytes);
    const std::string message = absl::StrCat(reason_code, ": ", detail);
    // A failure repeated by the scheduler is said once: the same error again writes nothing.
    const absl::Status refused = common::Refused(absl::StatusCode::kFailedPrecondition, reason_code, detail);
    if (snapshot->record.last_refresh_error == message) return refused;
    auto event = AuditRecorder::For(audit::Type::kRefresh, sandbox_id, offered);
    event.outcome = audit::Outcome::kKeptLastGood;
    event.reason = message;
    if (auto status = store_->sandboxes().SetRefreshError(sandbox_id, message, std::move(event)); !status.ok()) return status;
    LogWarning(absl::StrCat("refresh of ", sandbox_id, " kept the last good projection: ", message),
               {{"event", "refresh"}, {"sandbox_id", sandbox_id}, {"outcome", "kept_last_good"},
                {"reason", reason_code}, {"detail", message}});
    return refused;
  };

  if (!driver_->available()) driver_->TryReconnect();  // back a moment ago: ask now, not at the next tick
  auto response = driver_->GetProjection(snapshot->record.driver_handle, current.surface_id());
  if (!response.ok()) {
    // Visible like any refused refresh: kept the last good, logged, audited, in last_refresh_error.
    const absl::Status error = DriverError(response.status(), "GetProjection");
    const bool unreachable = DriverUnreachable(response.status());
    const absl::Status recorded =
        keep_last_good(unreachable ? "driver_unavailable" : "driver_error",
                       unreachable ? std::string(absl::StripPrefix(error.message(), "driver_unavailable: "))
                                   : std::string(error.message()),
                       nullptr);
    if (!absl::IsFailedPrecondition(recorded)) return recorded;  // the store failed
    return error;
  }
  if (response->has_no_verified_policy()) {
    return keep_last_good(trust::reason::kNoVerifiedPolicy, response->no_verified_policy().reason(), nullptr);
  }
  driver_v1::Projection projection = std::move(*response->mutable_projection());
  projection.DiscardUnknownFields();

  gateway_v1::RefreshSandboxResponse out;
  // The same policy, version, binding and lifetime: nothing to admit (a fresh issued_at and signature
  // alone do not make a new projection, so polling does not churn the store or the watchers).
  if (projection.surface_id() == current.surface_id() && projection.policy_digest() == current.policy_digest() &&
      projection.policy_version() == current.policy_version() &&
      projection.context_digest() == current.context_digest() &&
      projection.expires_at_unix() == current.expires_at_unix() && SameSigners(projection, current)) {
    // Still the admitted projection: it must still be inside the ceiling in force (a narrower ceiling
    // may have come since). Outside, it keeps being served — there is nothing better — and says why.
    if (const auto inside = gate_.ceiling().CheckBody(snapshot->record.envelope->body()); !inside.ok()) {
      if (snapshot->record.last_refresh_error == inside.Message()) return inside.ToStatus();  // said already
      return keep_last_good(inside.reason, inside.detail, &projection);
    }
    // The driver answers again, with the admitted projection, inside the ceiling: an error this answer
    // disproves (the driver unreachable or failing, an offered projection refused, none offered) is over,
    // so drift and `policyctl wait` stop reporting it. A revoked key stands until a new projection.
    const std::string& last = snapshot->record.last_refresh_error;
    if (!last.empty() &&
        std::none_of(std::begin(kStandsAgainstCurrent), std::end(kStandsAgainstCurrent),
                     [&](absl::string_view code) { return absl::StartsWith(last, absl::StrCat(code, ": ")); })) {
      auto event = AuditRecorder::For(audit::Type::kRefresh, sandbox_id, &projection);
      event.outcome = audit::Outcome::kOk;
      event.reason = absl::StrCat("the driver serves the admitted projection again; cleared: ", last);
      if (auto status = store_->sandboxes().SetRefreshError(sandbox_id, "", std::move(event)); !status.ok()) return status;
    }
    out.set_changed(false);
    out.set_policy_digest(current.policy_digest());
    out.set_policy_version(current.policy_version());
    return out;
  }
  const int64_t now = clock_->NowUnix();
  *checked_with = trust_store();
  const ProjectionGate::Verdict verdict =
      gate_.CheckNew(projection, snapshot->record.context, now, current.policy_version(), checked_with->get());
  const trust::CheckResult& result = verdict.result;
  if (!result.ok()) return keep_last_good(result.reason, result.detail, &projection);
  const Verification verification = verdict.verification;
  auto event = AuditRecorder::For(audit::Type::kRefresh, sandbox_id, &projection);
  event.key_ids = result.verified_key_ids;
  event.outcome = audit::Outcome::kOk;
  event.reason = absl::StrCat("admitted; previous digest ", current.policy_digest());
  if (const std::string note = MarkerNote(*result.policy); !note.empty()) absl::StrAppend(&event.reason, "; ", note);
  out.set_changed(true);
  out.set_policy_digest(projection.policy_digest());
  out.set_policy_version(projection.policy_version());
  const store::EnvelopePtr envelope = store_->sandboxes().envelopes().Intern(std::move(projection));
  // As in Admit: refused by the store if another ceiling was stored since the check (issue 25.10).
  const CeilingCommit committed = CommitUnderCeiling(
      [&] {
        store::ChangeBatch batch;
        // Only over the projection this refresh was checked against (its rollback baseline): another
        // replica's newer one is never replaced by it.
        batch.changes.push_back(store::change::ReplaceProjection{
            {sandbox_id}, envelope, verification, result.verified_key_ids, now, true, snapshot->record.envelope, {}});
        batch.events.push_back(event);
        return batch;
      },
      *result.policy, envelope->policy_digest(), verdict.ceiling_stamp);
  if (committed.outside) {
    const driver_v1::Projection offered = envelope->Header();
    return keep_last_good(committed.outside->reason, committed.outside->detail, &offered);
  }
  if (!committed.status.ok()) return committed.status;
  LogInfo(absl::StrCat("refreshed sandbox ", sandbox_id, " to digest ", out.policy_digest(), " version ",
                       out.policy_version()),
          {{"event", "refresh"}, {"sandbox_id", sandbox_id}, {"digest", out.policy_digest()},
           {"version", absl::StrCat(out.policy_version())}});
  return out;
}

Reprojector::Outcome GatewayCore::Reproject(const std::string& scope, bool own_change) {
  const auto trust = trust_store();
  Reprojector::Outcome outcome;
  {
    absl::MutexLock lock(&refresh_mu_);  // refreshes and re-projections one at a time (version high-water)
    outcome = reprojector_.Run(scope, trust.get(), own_change);
  }
  // A reload during the re-projection (rare; its sandboxes are not listed here): every sandbox again.
  RecheckIfTrustMoved(trust.get(), {});
  return outcome;
}

absl::StatusOr<gateway_v1::PolicyRevision> GatewayCore::AfterMutation(
    absl::StatusOr<gateway_v1::PolicyRevision> revision) {
  if (!revision.ok()) {
    // Every refusal, not the ceiling's alone (review 117: a stale expected revision, an invalid policy or
    // scope left no trace; SPEC §8 lists refused mutations). Not the store failing: nothing was refused.
    if (common::IsStorageError(revision.status())) return revision;
    const absl::string_view message = revision.status().message();
    const std::string reason = common::ReasonOf(revision.status());
    audit_.Record(AuditRecorder::For(audit::Type::kMutation, ""), audit::Outcome::kRefused,
                  reason.empty() ? absl::StrCat(absl::StatusCodeToString(revision.status().code()), ": ", message)
                                 : std::string(message));
    LogWarning(absl::StrCat("policy mutation refused: ", BoundedText(std::string(message), kMaxAuditReasonBytes)),
               {{"event", "mutation"}, {"outcome", "refused"}, {"reason", reason}});
    return revision;
  }
  // Nothing appended when unchanged: the sandboxes already at the live revision are current and not
  // re-signed; those behind it (kept their last good after a refused or failed move) are tried again, as a
  // re-applied file is meant to. Not announced to other replicas: nothing changed for them.
  const Reprojector::Outcome moved = Reproject(revision->scope(), /*own_change=*/!revision->unchanged());
  // The revision is committed; its re-projection is not: tried again in the background until it commits.
  if (moved.failed) {
    QueueReprojection(revision->scope(), /*failed_here=*/true);
    revision->set_reprojection_pending(true);  // said, not answered as if nothing were owed (review 117)
  }
  revision->set_sandboxes_updated(moved.moved);
  revision->set_sandboxes_kept_last_good(moved.kept);
  LogInfo(absl::StrCat("policy ", revision->scope(), revision->unchanged() ? " unchanged at revision " : " now at revision ",
                       revision->revision(), revision->deleted() ? " (deleted)" : "", "; ", revision->sandboxes_updated(),
                       " sandbox(es) re-projected", moved.kept == 0 ? "" : absl::StrCat(", ", moved.kept, " kept the last good"),
                       moved.failed ? "; the re-projection did not commit and is retried in the background" : ""),
          {{"event", "mutation"}, {"scope", revision->scope()}, {"revision", absl::StrCat(revision->revision())},
           {"digest", revision->policy_digest()}, {"sandboxes_updated", absl::StrCat(revision->sandboxes_updated())}});
  return revision;
}

absl::StatusOr<gateway_v1::PolicyRevision> GatewayCore::SetPolicy(const gateway_v1::SetPolicyRequest& request) {
  return AfterMutation(driver_->authoring()->SetPolicy(request));
}
absl::StatusOr<gateway_v1::PolicyRevision> GatewayCore::UpdatePolicy(const gateway_v1::UpdatePolicyRequest& request) {
  return AfterMutation(driver_->authoring()->UpdatePolicy(request));
}
absl::StatusOr<gateway_v1::PolicyRevision> GatewayCore::DeletePolicy(const gateway_v1::DeletePolicyRequest& request) {
  return AfterMutation(driver_->authoring()->DeletePolicy(request));
}

absl::StatusOr<gateway_v1::GetPolicyResponse> GatewayCore::GetPolicy(const gateway_v1::GetPolicyRequest& request) {
  if (driver_->authoring() == nullptr) return absl::FailedPreconditionError("the active driver keeps no policies here");
  return driver_->authoring()->GetPolicy(request);
}

absl::StatusOr<gateway_v1::ListPolicyRevisionsResponse> GatewayCore::ListPolicyRevisions(
    const gateway_v1::ListPolicyRevisionsRequest& request) {
  if (driver_->authoring() == nullptr) return absl::FailedPreconditionError("the active driver keeps no policies here");
  return driver_->authoring()->ListPolicyRevisions(request);
}

absl::StatusOr<gateway_v1::GetStatusResponse> GatewayCore::GetStatus() const {
  gateway_v1::GetStatusResponse out;
  out.set_gateway_version(OSH_VERSION);
  out.set_driver_kind(driver_->kind());
  if (auto caps = driver_->GetCapabilities(); caps.ok()) *out.mutable_capabilities() = *caps;
  out.set_driver_state(driver_->available() ? "connected" : "unavailable");
  if (!driver_->available()) {
    absl::MutexLock lock(&driver_detail_mu_);
    out.set_driver_state_detail(driver_detail_.empty() ? "no answer from the driver yet" : driver_detail_);
  }
  for (const auto& s : config_.accepted_surfaces) out.add_accepted_surfaces(s);
  const auto trust = trust_store();
  out.set_verification(trust ? "trust_store" : "none");
  out.set_trust_store(config_.trust_store);
  if (trust) {
    out.set_trust_threshold(trust->threshold());
    for (const auto& key : trust->keys()) {
      auto* info = out.add_trust_keys();
      info->set_key_id(key.key_id);
      info->set_algorithm(key.public_key.algorithm());
      info->set_fingerprint(key.public_key.fingerprint());
      info->set_not_before_unix(key.not_before_unix.value_or(0));
      info->set_not_after_unix(key.not_after_unix.value_or(0));
      info->set_revoked(key.revoked);
    }
  }
  const store::ReplicaStatus replica = store_->replication().replica_status();
  out.set_replica_id(replica.replica_id);
  out.set_database_kind(replica.database_kind);
  out.set_live_replicas(replica.live_replicas);
  out.set_database_reachable(replica.database_reachable);
  out.set_feed_changes_behind(static_cast<uint64_t>(replica.feed_changes_behind));
  out.set_feed_read_age_ms(static_cast<uint64_t>(replica.feed_read_age_ms));
  out.set_admitted_sandboxes(registry_->size());
  out.set_watchers(registry_->watcher_count());
  out.set_refresh_errors(registry_->refresh_error_count());
  out.set_possibly_leaked_handles(handles_.possible_leaks());
  out.set_revoked_sandboxes(gate_.revoked_sandboxes());
  if (driver_->authoring() != nullptr) {
    if (auto n = driver_->authoring()->CountPolicyScopes(); n.ok()) out.set_policy_scopes(*n);
  }
  if (auto pending = store_->releases().CountPendingReleases(); pending.ok()) out.set_pending_releases(*pending);
  {
    absl::MutexLock lock(&reproject_mu_);
    out.set_reprojections_pending(reproject_scopes_.size());
  }
  if (auto active = gate_.ceiling().current()) *out.mutable_ceiling() = CeilingGuard::InfoOf(*active);
  return out;
}

absl::StatusOr<gateway_v1::SetCeilingResponse> GatewayCore::SetCeiling(const gateway_v1::SetCeilingRequest& request) {
  const auto trust = trust_store();
  return gate_.ceiling().Set(request.ceiling(), trust.get(), clock_->NowUnix(), config_.clock_skew_s);
}

absl::StatusOr<gateway_v1::GetCeilingResponse> GatewayCore::GetCeiling() const {
  auto active = gate_.ceiling().current();
  if (active == nullptr) return absl::NotFoundError("no ceiling is in force");
  gateway_v1::GetCeilingResponse out;
  *out.mutable_ceiling() = active->ceiling;
  *out.mutable_info() = CeilingGuard::InfoOf(*active);
  return out;
}

absl::Status GatewayCore::ReloadCeiling() {
  absl::Status loaded = gate_.ReloadCeiling();
  if (!loaded.ok()) LogError(absl::StrCat("reloading the ceiling: ", loaded.message()));
  return loaded;
}

absl::Status GatewayCore::Report(const std::string& sandbox_id, const gateway_v1::ReportPolicyStatusRequest& request,
                                 const AdmittedSandbox::HandleHash* from) {
  if (request.status() != gateway_v1::LOADED && request.status() != gateway_v1::FAILED) {
    return absl::InvalidArgumentError("status: must be LOADED or FAILED");
  }
  if (!policy::IsLowercaseHexDigest(request.policy_digest())) {
    return absl::InvalidArgumentError("policy_digest: expected 64 lowercase hex characters");
  }
  if (!reports_.Allow(sandbox_id, clock_->NowUnixMillis())) {
    return common::Refused(absl::StatusCode::kResourceExhausted, "rate_limited",
                           absl::StrCat("at most ", config_.limits.reports_per_second,
                                        " reports a second per sandbox (bursts of ", config_.limits.report_burst, ")"));
  }
  const int64_t now = clock_->NowUnix();
  const std::string error = BoundedText(request.error(), config_.limits.max_report_error_bytes);
  store::AuditEvent event;
  event.type = audit::Type::kReport;
  event.sandbox_id = sandbox_id;
  event.policy_digest = request.policy_digest();
  event.outcome = request.status() == gateway_v1::LOADED ? audit::Outcome::kLoaded : audit::Outcome::kFailed;
  event.reason = error;
  // Only a digest the sandbox was given: the admitted one, or (during a change) the one before it.
  auto snapshot = registry_->Get(sandbox_id);
  if (!snapshot) return absl::NotFoundError(absl::StrCat("no sandbox '", sandbox_id, "' is admitted"));
  if (from != nullptr && (snapshot->record.handle_sha256.size() != from->size() ||
                          CRYPTO_memcmp(snapshot->record.handle_sha256.data(), from->data(), from->size()) != 0)) {
    return absl::UnauthenticatedError("a valid sandbox handle is required");  // deleted or re-admitted meanwhile
  }
  const std::string admitted = snapshot->record.envelope->policy_digest();
  if (request.policy_digest() != admitted) {
    const bool previous = snapshot->previous_body != nullptr &&
                          policy::Sha256Hex(*snapshot->previous_body) == request.policy_digest();
    if (!previous) {
      const std::string why = absl::StrCat("policy_digest: the sandbox was never given ", request.policy_digest(),
                                           " (its admitted digest is ", admitted, ")");
      audit_.Record(std::move(event), audit::Outcome::kRefused, why);
      return absl::InvalidArgumentError(why);
    }
    event.reason = absl::StrCat("behind: reported the previous digest while ", admitted, " is admitted",
                                error.empty() ? "" : "; ", error);
  }
  if (auto status = store_->sandboxes().RecordReport(sandbox_id, request.policy_digest(), request.status(), error, now,
                                         std::move(event));
      !status.ok()) {
    return status;
  }
  return absl::OkStatus();
}

absl::StatusOr<gateway_v1::ListAuditEventsResponse> GatewayCore::ListAuditEvents(
    const gateway_v1::ListAuditEventsRequest& request) {
  constexpr uint32_t kDefaultLimit = 100, kMaxLimit = 1000;
  const uint32_t limit = request.limit() == 0 ? kDefaultLimit : std::min(request.limit(), kMaxLimit);
  const store::AuditLog::ChainHead head = store_->audit().AuditChainHead();
  gateway_v1::ListAuditEventsResponse out;
  if (request.after_seq() < head.seq) {  // else nothing to list (and after_seq may not fit the store's int64)
    auto events = store_->audit().ListAuditEvents(request.after_seq(), limit);
    if (!events.ok()) return events.status();
    // Paged by bytes as well as by count: at least one event, then stop before passing kMaxPageBytes.
    size_t bytes = 0;
    for (const auto& event : *events) {
      gateway_v1::AuditEvent wire = trust::ToProto(event);
      bytes += wire.ByteSizeLong();
      if (out.events_size() > 0 && bytes > kMaxAuditPageBytes) break;
      *out.add_events() = std::move(wire);
    }
  }
  out.set_head_seq(head.seq);
  out.set_head_hash(head.hash);
  return out;
}

absl::StatusOr<gateway_v1::ReloadTrustStoreResponse> GatewayCore::ReloadTrustStore() {
  if (config_.trust_store.empty()) {
    return absl::FailedPreconditionError("no trust store is configured (trust_store is unset)");
  }
  auto loaded = trust::TrustStore::Load(config_.trust_store);
  if (!loaded.ok()) {
    const std::string message = absl::StrCat("trust_store_invalid: ", loaded.status().message(), "; the last good trust store stays in force");
    audit_.Record(AuditRecorder::For(audit::Type::kTrustStoreReload, ""), audit::Outcome::kFailed, message);
    LogError(absl::StrCat("trust store reload failed: ", message));
    return absl::FailedPreconditionError(message);
  }
  auto fresh = std::make_shared<const trust::TrustStore>(*std::move(loaded));
  gateway_v1::ReloadTrustStoreResponse out;
  out.set_trust_store(config_.trust_store);
  out.set_keys(static_cast<uint32_t>(fresh->keys().size()));
  out.set_threshold(fresh->threshold());
  gate_.SetTrust(std::move(fresh));
  registry_->ClearUnservableMarks();  // each checked again, under this store, when next asked for
  audit_.Record(AuditRecorder::For(audit::Type::kTrustStoreReload, ""), audit::Outcome::kOk,
                absl::StrCat(out.keys(), " key(s), threshold ", out.threshold()));
  LogInfo(absl::StrCat("trust store reloaded: ", config_.trust_store, ", ", out.keys(), " key(s), threshold ", out.threshold()));
  out.set_sandboxes_refused(RecheckAdmitted());
  // What this replica could not verify before (another replica's record under a key this one learns only
  // now) is verified under the new store, and its watchers are sent it (review 115: they waited for a
  // reconnect, on the older policy).
  VerifyLoaded();
  return out;
}

namespace {

// Whether admitted projections' signatures verify under one trust store, as of each one's admission
// (key windows then): "" when they do, else why not. One check per distinct envelope and time.
class EnvelopeVerdicts {
 public:
  EnvelopeVerdicts(const trust::TrustStore& trust, int64_t clock_skew_s) : trust_(trust), skew_(clock_skew_s) {}
  const std::string& operator()(const store::SandboxRecord& r) {
    auto [it, fresh] = verdicts_.try_emplace(std::make_pair(r.envelope.get(), r.updated_at_unix));
    if (fresh) {
      const trust::CheckResult result = trust::CheckSignatures(r.envelope->Header(), trust_, r.updated_at_unix, skew_);
      it->second = result.ok() ? "" : result.Message();
    }
    return it->second;
  }

 private:
  const trust::TrustStore& trust_;
  const int64_t skew_;
  absl::flat_hash_map<std::pair<const store::Envelope*, int64_t>, std::string> verdicts_;
};

// Set on a thread running a recheck: a refresh it makes does not start another (recheck_mu_ is held, and
// a reload made meanwhile runs its own recheck of every sandbox after this one).
thread_local bool in_recheck = false;

}  // namespace

uint64_t GatewayCore::RecheckAdmitted() {
  absl::MutexLock lock(&recheck_mu_);
  // The newest store, read under the lock: a recheck under an older one (a reload or a raced check that
  // waited here) never replaces the refused set a newer reload's recheck made.
  const auto in_force = trust_store();
  if (in_force == nullptr) return 0;
  const trust::TrustStore& trust = *in_force;
  in_recheck = true;
  EnvelopeVerdicts verdict(trust, config_.clock_skew_s);
  std::vector<std::string> failing;
  std::string after;
  for (;;) {
    auto page = registry_->List(after, 4096);
    if (page.empty()) break;
    // Every sandbox, those admitted while no trust store was in force (verification none) too: served by a
    // gateway with one only while they verify under it (CheckStored), so a revoked key reaches them as well.
    for (const auto& snapshot : page) {
      if (!verdict(snapshot.record).empty()) {
        failing.push_back(snapshot.record.context.sandbox_id());
      }
    }
    after = page.back().record.context.sandbox_id();
  }
  // Refused at once, before any refresh: each refresh waits on the driver (up to its call timeout), and a
  // slow or dead driver must not keep a revoked key's projections served meanwhile. A refresh that
  // replaces one moves its sandbox to another envelope; the final set below is what stays refused.
  ProjectionGate::RevokedEnvelopes pending;
  uint64_t pending_sandboxes = 0;
  for (const std::string& id : failing) {
    auto snapshot = registry_->Get(id);
    // Its envelope as it is now: a refresh committed since the listing may have replaced it with a good one.
    if (!snapshot || verdict(snapshot->record).empty()) continue;
    ++pending_sandboxes;
    // Its own reason code (review 116): a supervisor told key_revoked withdraws its policy, and this one may
    // be replaced by a re-signed projection in a moment; a watch opened meanwhile is refused, not ended.
    pending.try_emplace(snapshot->record.envelope.get(), snapshot->record.envelope,
                        absl::StrCat(kRevocationPending,
                                     ": the admitted projection no longer verifies under the reloaded trust store (",
                                     verdict(snapshot->record), "); being refreshed, not served meanwhile"));
  }
  gate_.SetRevoked(std::move(pending), pending_sandboxes);
  auto [revoked, refused] = RevokeFailing(trust, failing);
  gate_.SetRevoked(std::move(revoked), refused);
  // What stays refused is refused to open watches too: their streams end with the reason (review 115).
  if (const size_t ended = registry_->CloseRefusedWatchers(clock_->NowUnix()); ended > 0) {
    LogWarning(absl::StrCat(ended, " watch stream(s) of sandboxes no longer served ended (key_revoked)"));
  }
  in_recheck = false;
  return refused;
}

void GatewayCore::RecheckIfTrustMoved(const trust::TrustStore* checked_with, const std::vector<std::string>& ids) {
  if (in_recheck) return;
  const auto in_force = trust_store();
  if (in_force.get() == checked_with || in_force == nullptr) return;
  if (ids.empty()) {
    RecheckAdmitted();
    return;
  }
  absl::MutexLock lock(&recheck_mu_);
  in_recheck = true;
  const auto trust = trust_store();  // the newest, read under the lock a reload's recheck also takes
  EnvelopeVerdicts verdict(*trust, config_.clock_skew_s);
  std::vector<std::string> failing;
  for (const std::string& id : ids) {
    auto snapshot = registry_->Get(id);
    if (snapshot && !verdict(snapshot->record).empty()) {  // verification none too, as RecheckAdmitted
      failing.push_back(id);
    }
  }
  if (!failing.empty()) {
    LogWarning(absl::StrCat(failing.size(), " sandbox(es) checked before a trust-store reload and committed after it "
                            "fail under the reloaded trust store; refreshing them"));
  }
  ProjectionGate::RevokedEnvelopes revoked = RevokeFailing(*trust, failing).first;
  absl::flat_hash_map<const store::Envelope*, uint64_t> holders;
  for (const std::string& id : failing) {
    if (auto snapshot = registry_->Get(id); snapshot && revoked.contains(snapshot->record.envelope.get())) {
      ++holders[snapshot->record.envelope.get()];
    }
  }
  gate_.AddRevoked(std::move(revoked), holders);
  if (!holders.empty()) registry_->CloseRefusedWatchers(clock_->NowUnix());
  in_recheck = false;
}

std::pair<ProjectionGate::RevokedEnvelopes, uint64_t> GatewayCore::RevokeFailing(
    const trust::TrustStore& trust, const std::vector<std::string>& failing) {
  EnvelopeVerdicts verdict(trust, config_.clock_skew_s);
  ProjectionGate::RevokedEnvelopes revoked;
  for (const std::string& id : failing) {
    const auto refreshed = Refresh(id);  // a projection signed by a key still trusted replaces it
    auto snapshot = registry_->Get(id);
    if (!snapshot) continue;
    const std::string& still = verdict(snapshot->record);
    if (still.empty()) {
      LogInfo(absl::StrCat("sandbox ", id, ": re-signed projection admitted after the trust-store reload"));
      continue;
    }
    const std::string message = absl::StrCat(
        trust::reason::kKeyRevoked, ": the admitted projection no longer verifies under the reloaded trust store (",
        still, "); a refresh did not replace it",
        refreshed.ok() ? "" : absl::StrCat(" (", refreshed.status().message(), ")"), "; not served");
    revoked.try_emplace(snapshot->record.envelope.get(), snapshot->record.envelope, message);
    auto event = AuditRecorder::For(audit::Type::kRefresh, id);
    event.outcome = audit::Outcome::kRefused;
    event.reason = message;
    if (auto status = store_->sandboxes().SetRefreshError(id, message, std::move(event)); !status.ok()) {
      LogError(absl::StrCat("sandbox ", id, ": cannot record the revocation: ", status.ToString()));
    }
    LogError(absl::StrCat("sandbox ", id, ": ", message));
  }
  uint64_t refused = 0;
  for (const std::string& id : failing) {
    auto snapshot = registry_->Get(id);
    if (snapshot && revoked.contains(snapshot->record.envelope.get())) ++refused;
  }
  return {std::move(revoked), refused};
}

void GatewayCore::OnDriverState(bool available, const std::string& driver_detail) {
  // It quotes the driver (its errors, its name): bounded and escaped wherever it goes.
  const std::string detail = BoundedText(driver_detail, kMaxDriverTextBytes);
  {
    absl::MutexLock lock(&driver_detail_mu_);
    driver_detail_ = available ? "" : detail;
  }
  // Deciding and recording under one lock: the events reach the log in the order they were decided.
  absl::MutexLock order(&driver_audit_mu_);
  if (auto event = driver_audit_.OnReport(available, detail, absl::FromUnixSeconds(clock_->NowUnix()))) {
    RecordDriverState(*event);
  }
}

void GatewayCore::AuditPendingDriverState() {
  // The lock first: a report decided and recorded meanwhile is not overtaken by a state read before it.
  absl::MutexLock order(&driver_audit_mu_);
  const bool available = driver_->available();
  std::string detail = available ? "connected (seen on the driver connection)" : "";
  if (!available) {
    absl::MutexLock lock(&driver_detail_mu_);
    detail = driver_detail_.empty() ? "unavailable (no reason reported yet)" : driver_detail_;
  }
  if (auto event = driver_audit_.Pending(available, detail, absl::FromUnixSeconds(clock_->NowUnix()))) {
    RecordDriverState(*event);
  }
}

void GatewayCore::RecordDriverState(const DriverStateAudit::Event& state) {
  auto event = AuditRecorder::For(state.available ? audit::Type::kDriverUp : audit::Type::kDriverDown, "");
  std::string held_back;
  if (state.not_audited > 0) {
    event.audit_context["driver_reports_not_audited"] = absl::StrCat(state.not_audited);
    held_back = absl::StrCat(" (", state.not_audited, " driver report(s) since the last one not audited: the driver "
                             "is flapping or its error text keeps changing)");
  }
  audit_.Record(std::move(event), state.available ? audit::Outcome::kOk : audit::Outcome::kUnavailable, state.detail);
  if (state.available) {
    LogInfo(absl::StrCat("policy driver available: ", state.detail, "; admissions are served", held_back));
  } else {
    LogError(absl::StrCat("POLICY DRIVER UNAVAILABLE: ", state.detail,
                          "; admissions fail closed (admitted sandboxes are still served); retrying", held_back));
  }
}

namespace {
// A steady clock's time for the audit budgets: a step of the wall clock neither stops nor floods them.
absl::Time SteadyNow() { return absl::UnixEpoch() + absl::FromChrono(std::chrono::steady_clock::now().time_since_epoch()); }
constexpr char kNotAuditedKey[] = "refused.not_audited";  // refused calls counted before this event
}  // namespace

bool GatewayCore::TakeMutationRefusalAudit(uint64_t* held_back) { return mutation_refusals_.Take(SteadyNow(), held_back); }

void GatewayCore::RecordMutationRefused(const std::string& method, uint64_t held_back) {
  store::AuditEvent event = AuditRecorder::For(audit::Type::kMutationRefused, "");
  std::string reason = absl::StrCat("mutation_not_permitted: ", method);
  if (held_back > 0) {
    event.audit_context[kNotAuditedKey] = absl::StrCat(held_back);
    absl::StrAppend(&reason, " (and ", held_back, " refused call(s) before it, counted, not audited one by one)");
  }
  audit_.Record(std::move(event), audit::Outcome::kRefused, reason);
}

void GatewayCore::AuditHeldMutationRefusals(bool at_stop) {
  const uint64_t held_back = mutation_refusals_.TakeHeldBack(SteadyNow(), at_stop);
  if (held_back == 0) return;
  store::AuditEvent event = AuditRecorder::For(audit::Type::kMutationRefused, "");
  event.audit_context[kNotAuditedKey] = absl::StrCat(held_back);
  audit_.Record(std::move(event), audit::Outcome::kRefused,
                absl::StrCat("mutation_not_permitted: ", held_back,
                             " refused call(s) at the mutation gate, counted, not audited one by one (more than ",
                             kMutationRefusalBurst, " at once, or one a second)"));
  LogWarning(absl::StrCat("mutation gate: ", held_back, " refused call(s) not audited one by one"));
}

}  // namespace osh::gateway
