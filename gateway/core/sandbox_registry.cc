#include "gateway/core/sandbox_registry.h"

#include "common/errors.h"

#include "gateway/core/log.h"

#include "absl/strings/str_cat.h"

#include <openssl/crypto.h>

#include <algorithm>
#include <type_traits>

#include "policy/body_codec.h"
#include "policy/digest.h"
#include "trust/projection_check.h"

namespace osh::gateway {

SandboxRegistry::HandleHash SandboxRegistry::ToHandleHash(const std::string& sha256) {
  HandleHash out{};  // a hash of another length (never written by the gateway) can match no handle's hash
  if (sha256.size() == out.size()) std::copy(sha256.begin(), sha256.end(), out.begin());
  return out;
}

void SandboxRegistry::Reset(std::vector<store::SandboxRecord> records) {
  absl::MutexLock lock(&mu_);
  for (auto it = by_id_.begin(); it != by_id_.end();) RemoveLocked(it++, /*revoked=*/false);
  reports_.Clear();
  by_handle_hash_.reserve(records.size());
  for (auto& record : records) InsertLocked(std::move(record), /*verified=*/false);
}

void SandboxRegistry::InsertLocked(store::SandboxRecord r, bool verified) {
  auto [it, inserted] = by_id_.try_emplace(r.context.sandbox_id());
  if (!inserted) {  // re-admitted under the same id: the old entry's handle and watchers go
    RemoveLocked(it, /*revoked=*/true);
    it = by_id_.try_emplace(r.context.sandbox_id()).first;
  }
  auto next = std::make_shared<AdmittedSandbox>();
  next->sandbox_id = it->first;
  next->context_bytes = r.context_bytes.empty() ? policy::SerializeDeterministic(r.context) : std::move(r.context_bytes);
  next->handle_sha256 = ToHandleHash(r.handle_sha256);
  next->driver_handle = std::move(r.driver_handle);
  next->envelope = std::move(r.envelope);
  next->verified_by = SharedVerificationLocked(r.verification, std::move(r.signing_key_ids));
  next->admitted_at_unix = r.admitted_at_unix;
  next->updated_at_unix = r.updated_at_unix;
  next->verified = verified;
  RecordReportsLocked(r);
  Entry& e = it->second;
  PublishLocked(e, std::move(next));
  by_handle_hash_[e.admitted->handle_sha256] = &*it;
}

void SandboxRegistry::RecordReportsLocked(store::SandboxRecord& r) {
  const std::string& id = r.context.sandbox_id();
  reports_.RecordReport(id, r.load_status, std::move(r.load_error), std::move(r.reported_digest), r.reported_at_unix);
  reports_.SetRefreshError(id, std::move(r.last_refresh_error));
}

std::shared_ptr<const AdmittedSandbox::Verification> SandboxRegistry::SharedVerificationLocked(
    store::Verification verification, std::vector<std::string> key_ids) {
  if (last_verification_ && last_verification_->verification == verification &&
      last_verification_->key_ids == key_ids) {
    return last_verification_;
  }
  last_verification_ =
      std::make_shared<const AdmittedSandbox::Verification>(AdmittedSandbox::Verification{verification, std::move(key_ids)});
  return last_verification_;
}

void SandboxRegistry::PublishLocked(Entry& entry, std::shared_ptr<AdmittedSandbox> next) {
  if (entry.admitted && entry.admitted->envelope->expires_at_unix() != 0) --expiring_;
  entry.admitted = std::move(next);
  if (entry.admitted && entry.admitted->envelope->expires_at_unix() != 0) ++expiring_;
}

void SandboxRegistry::RemoveLocked(std::map<std::string, Entry>::iterator it, bool revoked) {
  for (ProjectionWatcher* watcher : it->second.watchers) watcher->OnClosed(revoked);
  watchers_ -= it->second.watchers.size() + it->second.ending.size();  // an ending one's Unwatch finds no entry
  reports_.Forget(it->first);
  by_handle_hash_.erase(it->second.admitted->handle_sha256);
  PublishLocked(it->second, nullptr);
  by_id_.erase(it);
}

void SandboxRegistry::OnCommitted(const store::ChangeBatch& batch, const store::CommitResult& result) {
  absl::MutexLock lock(&mu_);
  for (const store::Change& change : batch.changes) {
    std::visit(
        [&](const auto& c) ABSL_NO_THREAD_SAFETY_ANALYSIS {
          using T = std::decay_t<decltype(c)>;
          if constexpr (std::is_same_v<T, store::change::AdmitSandbox>) {
            InsertLocked(c.record, /*verified=*/true);  // checked at admission
          } else if constexpr (std::is_same_v<T, store::change::ReplaceProjection>) {
            ProjectionPtr shared;  // one message for every watcher of every sandbox moved here
            const auto verified_by = SharedVerificationLocked(c.verification, c.key_ids);
            for (size_t i = 0; i < c.sandbox_ids.size(); ++i) {
              const std::string& id = c.sandbox_ids[i];
              auto it = by_id_.find(id);
              if (it == by_id_.end()) continue;
              Entry& e = it->second;
              // As the store decided (change.h): not a sandbox admitted again under another handle since —
              // here, or on another replica whose change this registry has not been brought yet (stop 70,
              // review 121: the store passed it by, and this registry still held the listed handle).
              if (!store::change::ListedUnder(
                      c, i, std::string_view(reinterpret_cast<const char*>(e.admitted->handle_sha256.data()),
                                             e.admitted->handle_sha256.size())) ||
                  std::binary_search(result.passed_by.begin(), result.passed_by.end(), id)) {
                continue;
              }
              auto next = std::make_shared<AdmittedSandbox>(*e.admitted);
              if (next->envelope->shared_body() != c.envelope->shared_body()) next->previous_body = next->envelope->shared_body();
              next->envelope = c.envelope;
              next->verified_by = verified_by;
              next->updated_at_unix = c.now_unix;
              next->verified = true;
              next->watchers_untold = false;  // told below
              PublishLocked(e, std::move(next));
              reports_.SetRefreshError(id, "");
              if (projection_observer_) projection_observer_(id);
              if (e.watchers.empty()) continue;
              if (!shared) shared = c.envelope->Shared();
              for (ProjectionWatcher* watcher : e.watchers) watcher->OnProjection(shared);
            }
          } else if constexpr (std::is_same_v<T, store::change::SetRefreshError>) {
            if (by_id_.contains(c.sandbox_id)) reports_.SetRefreshError(c.sandbox_id, c.error);
          } else if constexpr (std::is_same_v<T, store::change::DeleteSandbox>) {
            if (auto it = by_id_.find(c.sandbox_id); it != by_id_.end()) RemoveLocked(it, /*revoked=*/true);
          } else {
            static_assert(std::is_same_v<T, store::change::RecordReport>);
            if (by_id_.contains(c.sandbox_id)) reports_.RecordReport(c.sandbox_id, c.status, c.error, c.digest, c.now_unix);
          }
        },
        change);
  }
}

void SandboxRegistry::ApplyRemote(std::vector<store::SandboxRecord> present, const std::vector<bool>& verified,
                                  const std::vector<std::string>& removed) {
  absl::MutexLock lock(&mu_);
  for (const auto& id : removed) {
    if (auto it = by_id_.find(id); it != by_id_.end()) RemoveLocked(it, /*revoked=*/true);
  }
  for (size_t i = 0; i < present.size(); ++i) {
    store::SandboxRecord& r = present[i];
    auto it = by_id_.find(r.context.sandbox_id());
    // A record this replica cannot verify (its trust store behind another replica's during a rotation, a
    // row rewritten) stays listed, unverified: a fetch checks it again and, failing, is refused with the
    // reason (Servable); its watchers keep the projection they have. It is not a revocation (review 104:
    // it was dropped, and its handle refused UNAUTHENTICATED, which ends a supervisor's watch for good).
    const bool checked = verified[i];
    if (it == by_id_.end() || it->second.admitted->handle_sha256 != ToHandleHash(r.handle_sha256)) {
      InsertLocked(std::move(r), checked);  // new here, or re-admitted under the same id
      continue;
    }
    Entry& e = it->second;
    auto next = std::make_shared<AdmittedSandbox>(*e.admitted);
    const bool moved = !next->envelope->SameAs(*r.envelope);
    if (moved) {
      if (next->envelope->shared_body() != r.envelope->shared_body()) next->previous_body = next->envelope->shared_body();
      next->envelope = r.envelope;
    }
    next->verified_by = SharedVerificationLocked(r.verification, std::move(r.signing_key_ids));
    next->updated_at_unix = r.updated_at_unix;
    next->verified = checked;
    // Watchers are sent what they were not: this envelope when it moved, or one held back unverified before.
    const bool tell = moved || e.admitted->watchers_untold;
    next->watchers_untold = tell && !checked;
    PublishLocked(e, std::move(next));
    RecordReportsLocked(r);
    if (!tell || !checked || e.watchers.empty()) continue;
    ProjectionPtr shared = e.admitted->envelope->Shared();
    for (ProjectionWatcher* watcher : e.watchers) watcher->OnProjection(shared);
  }
}

void SandboxRegistry::SetProjectionObserver(std::function<void(const std::string& sandbox_id)> observer) {
  absl::MutexLock lock(&mu_);
  projection_observer_ = std::move(observer);
}

bool SandboxRegistry::MarkVerified(const std::string& sandbox_id, const store::EnvelopePtr& envelope) {
  absl::MutexLock lock(&mu_);
  auto it = by_id_.find(sandbox_id);
  if (it == by_id_.end() || it->second.admitted->envelope != envelope) return false;
  SetVerifiedLocked(it->second);
  return true;
}

AdmittedPtr SandboxRegistry::PublishVerified(const AdmittedPtr& found) {
  absl::MutexLock lock(&mu_);
  auto it = by_id_.find(found->sandbox_id);
  if (it == by_id_.end() || it->second.admitted != found) return nullptr;
  SetVerifiedLocked(it->second);
  return found;
}

void SandboxRegistry::SetVerifiedLocked(Entry& entry) {
  const AdmittedPtr& admitted = entry.admitted;
  if (admitted->verified) return;
  admitted->verified.Set();
  admitted->unservable.Clear();
  // Another replica's record this one could not verify when it came, now verified: its watchers, still on
  // the projection before it, are sent it now (review 105).
  if (!admitted->watchers_untold || entry.watchers.empty()) return;
  ProjectionPtr shared = admitted->envelope->Shared();
  for (ProjectionWatcher* watcher : entry.watchers) watcher->OnProjection(shared);
}

bool SandboxRegistry::MarkUnservable(const std::string& sandbox_id, const store::EnvelopePtr& envelope,
                                     std::string why) {
  absl::MutexLock lock(&mu_);
  auto it = by_id_.find(sandbox_id);
  if (it == by_id_.end() || it->second.admitted->envelope != envelope || it->second.admitted->verified) return false;
  it->second.admitted->unservable.Set(std::move(why));
  return true;
}

void SandboxRegistry::ClearUnservableMarks() {
  absl::ReaderMutexLock lock(&mu_);
  for (const auto& [id, entry] : by_id_) entry.admitted->unservable.Clear();
}

std::string UnservableReason(const absl::Status& failed) {
  return absl::StrCat(failed.message(), " (the stored envelope fails re-verification; not served)");
}

std::vector<std::string> SandboxRegistry::Unverified(const std::string& after, size_t limit) const {
  absl::ReaderMutexLock lock(&mu_);
  std::vector<std::string> out;
  for (auto it = by_id_.upper_bound(after); it != by_id_.end() && out.size() < limit; ++it) {
    if (!it->second.admitted->verified) out.push_back(it->first);
  }
  return out;
}

SandboxRegistry::Snapshot SandboxRegistry::SnapshotOf(const AdmittedSandbox& a) const {
  Snapshot s;
  store::SandboxRecord& r = s.record;
  if (!r.context.ParseFromString(a.context_bytes)) r.context.set_sandbox_id(a.sandbox_id);
  r.handle_sha256.assign(a.handle_sha256.begin(), a.handle_sha256.end());
  r.driver_handle = a.driver_handle;
  r.envelope = a.envelope;
  r.verification = a.verified_by->verification;
  r.signing_key_ids = a.verified_by->key_ids;
  r.admitted_at_unix = a.admitted_at_unix;
  r.updated_at_unix = a.updated_at_unix;
  s.unservable = a.unservable.Get();
  if (auto reports = reports_.Get(a.sandbox_id)) {
    r.load_status = reports->load_status;
    r.load_error = std::move(reports->load_error);
    r.reported_digest = std::move(reports->reported_digest);
    r.reported_at_unix = reports->reported_at_unix;
    r.last_refresh_error = std::move(reports->last_refresh_error);
  }
  s.verified = a.verified;
  s.previous_body = a.previous_body;
  return s;
}

bool SandboxRegistry::Contains(const std::string& sandbox_id) const {
  absl::ReaderMutexLock lock(&mu_);
  return by_id_.contains(sandbox_id);
}

bool SandboxRegistry::HoldsDriverHandle(const std::string& sandbox_id, const std::string& driver_handle) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = by_id_.find(sandbox_id);
  return it != by_id_.end() && it->second.admitted->driver_handle == driver_handle;
}

std::optional<SandboxRegistry::Snapshot> SandboxRegistry::Get(const std::string& sandbox_id) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = by_id_.find(sandbox_id);
  if (it == by_id_.end()) return std::nullopt;
  return SnapshotOf(*it->second.admitted);
}

std::vector<SandboxRegistry::Snapshot> SandboxRegistry::List(const std::string& after, size_t limit) const {
  absl::ReaderMutexLock lock(&mu_);
  std::vector<Snapshot> out;
  for (auto it = by_id_.upper_bound(after); it != by_id_.end() && out.size() < limit; ++it) {
    out.push_back(SnapshotOf(*it->second.admitted));
  }
  return out;
}

std::vector<std::string> SandboxRegistry::TakeDueForRefresh(int64_t now, int64_t interval_s,
                                                            int64_t (*lead)(int64_t issued_at, int64_t expires_at)) {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> due;
  if (interval_s <= 0 && expiring_ == 0) return due;
  refresh_scan_visits_ += by_id_.size();
  for (auto& [id, e] : by_id_) {
    const AdmittedSandbox& a = *e.admitted;
    const int64_t last = std::max(e.last_refresh_attempt, a.updated_at_unix);
    const int64_t expires = a.envelope->expires_at_unix();
    const bool interval_due = interval_s > 0 && now - last >= interval_s;
    const bool expiry_due = expires != 0 && now >= expires - lead(a.envelope->issued_at_unix(), expires) && now > last;
    if (!interval_due && !expiry_due) continue;
    e.last_refresh_attempt = now;
    due.push_back(id);
  }
  return due;
}

uint64_t SandboxRegistry::refresh_scan_visits() const {
  absl::ReaderMutexLock lock(&mu_);
  return refresh_scan_visits_;
}

void SandboxRegistry::SetWatchLimits(size_t per_sandbox, size_t total) {
  absl::MutexLock lock(&mu_);
  max_watchers_per_sandbox_ = per_sandbox;
  max_watchers_ = total;
}

size_t SandboxRegistry::size() const {
  absl::ReaderMutexLock lock(&mu_);
  return by_id_.size();
}

size_t SandboxRegistry::refresh_error_count() const { return reports_.refresh_error_count(); }

size_t SandboxRegistry::watcher_count() const {
  absl::ReaderMutexLock lock(&mu_);
  return watchers_;
}

std::pair<const std::string, SandboxRegistry::Entry>* SandboxRegistry::FindByHandleLocked(
    const std::string& handle) const {
  if (handle.empty()) return nullptr;
  const HandleHash hash = ToHandleHash(policy::Sha256(handle));
  auto it = by_handle_hash_.find(hash);
  if (it == by_handle_hash_.end()) return nullptr;
  const HandleHash& stored = it->second->second.admitted->handle_sha256;
  if (CRYPTO_memcmp(stored.data(), hash.data(), hash.size()) != 0) return nullptr;
  return it->second;
}

AdmittedPtr SandboxRegistry::Authenticate(const std::string& handle) const {
  absl::ReaderMutexLock lock(&mu_);
  auto* found = FindByHandleLocked(handle);
  return found == nullptr ? nullptr : found->second.admitted;
}

void SandboxRegistry::SetServingChecks(ServingChecks* checks) { checks_ = checks; }

absl::StatusOr<AdmittedPtr> SandboxRegistry::Servable(AdmittedPtr found, int64_t now_unix) {
  if (!found->verified) {
    if (checks_ == nullptr) return absl::FailedPreconditionError("no serving checks are set");
    // Failed already (marked): refused with its reason, not verified again at each fetch.
    if (std::string marked = found->unservable.Get(); !marked.empty()) return absl::FailedPreconditionError(marked);
    // Loaded at start-up (or from another replica) and not re-verified yet: verify now, outside the lock.
    absl::Status verified = checks_->VerifyLoaded(found->sandbox_id, found->context_bytes, *found->envelope,
                                                  found->verified_by->verification, found->updated_at_unix);
    if (!verified.ok()) {
      LogError(absl::StrCat("sandbox ", found->sandbox_id, ": stored envelope fails re-verification (",
                            verified.message(), "); not served"));
      // This sandbox as published is marked; a newer projection or re-admission meanwhile is another one.
      std::string why = UnservableReason(verified);
      found->unservable.Set(why);
      return absl::FailedPreconditionError(std::move(why));
    }
    AdmittedPtr published = PublishVerified(found);
    // Gone meanwhile: replaced (a new projection, a re-admission, another replica's change) or removed
    // (deleted, quarantined). Ask again, once: what is admitted now is served by the rule, or refused.
    if (published == nullptr) return AdmittedPtr();  // the caller finds it again, once
    found = std::move(published);
  }
  if (checks_ != nullptr) {
    if (absl::Status serving = checks_->ServingError(*found->envelope, now_unix); !serving.ok()) return serving;
  }
  return found;
}

absl::StatusOr<AdmittedPtr> SandboxRegistry::Serve(const std::string& handle, int64_t now_unix) {
  const absl::Status refused = absl::UnauthenticatedError("a valid sandbox handle is required");
  for (int attempt = 0; attempt < 2; ++attempt) {
    AdmittedPtr found = Authenticate(handle);
    if (!found) return refused;
    auto served = Servable(std::move(found), now_unix);
    if (!served.ok() || *served != nullptr) return served;
  }
  return refused;  // changed under each attempt: fail closed, the caller may ask again
}

absl::StatusOr<AdmittedPtr> SandboxRegistry::Lookup(const std::string& sandbox_id, int64_t now_unix) {
  const absl::Status refused = absl::NotFoundError(absl::StrCat("no sandbox '", sandbox_id, "' is admitted"));
  for (int attempt = 0; attempt < 2; ++attempt) {
    AdmittedPtr found;
    {
      absl::ReaderMutexLock lock(&mu_);
      auto it = by_id_.find(sandbox_id);
      if (it != by_id_.end()) found = it->second.admitted;
    }
    if (!found) return refused;
    auto served = Servable(std::move(found), now_unix);
    if (!served.ok() || *served != nullptr) return served;
  }
  return refused;
}

absl::StatusOr<AdmittedPtr> SandboxRegistry::Watch(const std::string& handle, ProjectionWatcher* watcher,
                                                   int64_t now_unix) {
  if (auto served = Serve(handle, now_unix); !served.ok()) return served.status();
  absl::MutexLock lock(&mu_);
  // Found again under the lock: a projection committed here since passed the commit's checks, but another
  // replica's record may have been published unverified meanwhile (review 105): not streamed unchecked.
  auto* found = FindByHandleLocked(handle);
  if (found == nullptr) return absl::UnauthenticatedError("a valid sandbox handle is required");
  if (!found->second.admitted->verified) {
    return absl::UnavailableError("the sandbox's projection changed while the watch opened; open it again");
  }
  // Asked again under the lock CloseRefusedWatchers takes: a reload's revocation between Serve and here
  // would otherwise register a watcher its pass never saw (review 115).
  if (checks_ != nullptr) {
    if (absl::Status serving = checks_->ServingError(*found->second.admitted->envelope, now_unix); !serving.ok()) {
      return serving;
    }
  }
  if (watchers_ >= max_watchers_) {  // ended streams not yet gone count: an eviction frees nothing here
    return absl::ResourceExhaustedError(
        absl::StrCat("watch_limit: the gateway already serves ", max_watchers_, " watch streams"));
  }
  auto& watchers = found->second.watchers;
  auto& ending = found->second.ending;
  if (watchers.size() >= max_watchers_per_sandbox_) {
    // The newest wins (review 115): the oldest is most likely a stream its supervisor gave up on (a
    // restart, a connection gone without a reset); refusing the new one let whoever holds the handle keep
    // the real supervisor out with streams that never read. An evicted stream is counted until it is gone
    // (a reader that takes nothing is cancelled after watch_stall_s): at most as many as the cap, or the
    // evictions would let one handle hold streams without bound (review 118).
    if (ending.size() >= max_watchers_per_sandbox_) {
      return common::Refused(absl::StatusCode::kResourceExhausted, "watch_limit",
                             absl::StrCat("the sandbox has ", watchers.size(), " watch streams open and ", ending.size(),
                                          " more ended whose readers have not taken their last message; try again "
                                          "once they are gone"));
    }
    ProjectionWatcher* oldest = watchers.front();
    watchers.erase(watchers.begin());
    ending.push_back(oldest);
    oldest->OnRefused(common::Refused(
        absl::StatusCode::kResourceExhausted, "watch_limit",
        absl::StrCat("a newer watch of this sandbox took this one's place (at most ", max_watchers_per_sandbox_,
                     " are open at once)")));
  }
  watchers.push_back(watcher);
  ++watchers_;
  return found->second.admitted;
}

void SandboxRegistry::Unwatch(const std::string& sandbox_id, ProjectionWatcher* watcher) {
  absl::MutexLock lock(&mu_);
  auto it = by_id_.find(sandbox_id);
  if (it == by_id_.end()) return;
  for (auto* list : {&it->second.watchers, &it->second.ending}) {
    if (auto w = std::find(list->begin(), list->end(), watcher); w != list->end()) {
      list->erase(w);
      --watchers_;
      return;
    }
  }
}

size_t SandboxRegistry::CloseRefusedWatchers(int64_t now_unix) {
  absl::MutexLock lock(&mu_);
  size_t closed = 0;
  for (auto& [id, entry] : by_id_) {
    if (entry.watchers.empty()) continue;
    if (checks_ == nullptr) break;
    const absl::Status refused = checks_->ServingError(*entry.admitted->envelope, now_unix);
    // Revoked only (review 116): an expired projection's watchers know it already (their own timer), and a
    // watch ended now would back off past the fresh projection the driver may bring.
    if (refused.ok() || common::ReasonOf(refused) != trust::reason::kKeyRevoked) continue;
    for (ProjectionWatcher* watcher : entry.watchers) watcher->OnRefused(refused);
    closed += entry.watchers.size();
    watchers_ -= entry.watchers.size();
    entry.watchers.clear();
  }
  return closed;
}

void SandboxRegistry::CloseAllWatchers() {
  absl::MutexLock lock(&mu_);
  for (auto& [id, entry] : by_id_) {
    for (ProjectionWatcher* watcher : entry.watchers) watcher->OnClosed(/*revoked=*/false);
    watchers_ -= entry.watchers.size();
    entry.watchers.clear();
  }
}

}  // namespace osh::gateway
