#include "gateway/core/sandbox_registry.h"

#include "common/errors.h"

#include "gateway/core/log.h"

#include "absl/strings/str_cat.h"

#include <openssl/crypto.h>

#include <algorithm>
#include <type_traits>

#include "policy/body_codec.h"
#include "policy/digest.h"

namespace osh::gateway {

SandboxRegistry::HandleHash SandboxRegistry::ToHandleHash(const std::string& sha256) {
  HandleHash out{};  // a hash of another length (never written by the gateway) can match no handle's hash
  if (sha256.size() == out.size()) std::copy(sha256.begin(), sha256.end(), out.begin());
  return out;
}

void SandboxRegistry::Reset(std::vector<store::SandboxRecord> records) {
  absl::MutexLock lock(&mu_);
  for (auto it = by_id_.begin(); it != by_id_.end();) RemoveLocked(it++, /*revoked=*/false);
  by_handle_hash_.reserve(records.size());
  for (auto& record : records) InsertLocked(std::move(record), /*verified=*/false);
}

void SandboxRegistry::InsertLocked(store::SandboxRecord r, bool verified) {
  auto [it, inserted] = by_id_.try_emplace(r.context.sandbox_id());
  if (!inserted) {  // re-admitted under the same id: the old entry's handle and watchers go
    RemoveLocked(it, /*revoked=*/true);
    it = by_id_.try_emplace(r.context.sandbox_id()).first;
  }
  Entry& e = it->second;
  e.context_bytes = r.context_bytes.empty() ? policy::SerializeDeterministic(r.context) : std::move(r.context_bytes);
  e.handle_sha256 = ToHandleHash(r.handle_sha256);
  e.driver_handle = std::move(r.driver_handle);
  SetEnvelopeLocked(e, std::move(r.envelope));
  e.admitted_at_unix = r.admitted_at_unix;
  TakeRecordStateLocked(e, r);
  e.verified = verified;
  by_handle_hash_[e.handle_sha256] = &*it;
}

void SandboxRegistry::TakeRecordStateLocked(Entry& e, store::SandboxRecord& r) {
  e.verified_by = SharedVerificationLocked(r.verification, std::move(r.signing_key_ids));
  e.updated_at_unix = r.updated_at_unix;
  SetReportLocked(e, r.load_status, std::move(r.load_error), std::move(r.reported_digest), r.reported_at_unix);
  SetRefreshErrorLocked(e, std::move(r.last_refresh_error));
}

std::shared_ptr<const SandboxRegistry::Verification> SandboxRegistry::SharedVerificationLocked(
    store::Verification verification, std::vector<std::string> key_ids) {
  if (last_verification_ && last_verification_->verification == verification &&
      last_verification_->key_ids == key_ids) {
    return last_verification_;
  }
  last_verification_ = std::make_shared<const Verification>(Verification{verification, std::move(key_ids)});
  return last_verification_;
}

void SandboxRegistry::SetReportLocked(Entry& e, openshell::policy::gateway::v1::LoadStatus status, std::string error,
                                      std::string digest, int64_t at_unix) {
  const bool none = status == openshell::policy::gateway::v1::LOAD_STATUS_UNSPECIFIED && error.empty() &&
                    digest.empty() && at_unix == 0;
  if (none && !e.reports) return;
  if (!e.reports) e.reports = std::make_unique<Reports>();
  e.reports->load_status = status;
  e.reports->load_error = std::move(error);
  e.reports->reported_digest = std::move(digest);
  e.reports->reported_at_unix = at_unix;
}

void SandboxRegistry::SetEnvelopeLocked(Entry& entry, store::EnvelopePtr envelope) {
  if (entry.envelope && entry.envelope->expires_at_unix() != 0) --expiring_;
  entry.envelope = std::move(envelope);
  if (entry.envelope && entry.envelope->expires_at_unix() != 0) ++expiring_;
}

void SandboxRegistry::SetRefreshErrorLocked(Entry& entry, std::string error) {
  if (!entry.reports) {
    if (error.empty()) return;
    entry.reports = std::make_unique<Reports>();
  }
  if (!entry.reports->last_refresh_error.empty()) --refresh_errors_;
  entry.reports->last_refresh_error = std::move(error);
  if (!entry.reports->last_refresh_error.empty()) ++refresh_errors_;
}

void SandboxRegistry::RemoveLocked(std::map<std::string, Entry>::iterator it, bool revoked) {
  for (ProjectionWatcher* watcher : it->second.watchers) watcher->OnClosed(revoked);
  watchers_ -= it->second.watchers.size();
  SetEnvelopeLocked(it->second, nullptr);
  SetRefreshErrorLocked(it->second, "");
  by_handle_hash_.erase(it->second.handle_sha256);
  by_id_.erase(it);
}

void SandboxRegistry::OnCommitted(const store::ChangeBatch& batch, const store::CommitResult&) {
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
            for (const auto& id : c.sandbox_ids) {
              auto it = by_id_.find(id);
              if (it == by_id_.end()) continue;
              Entry& e = it->second;
              if (e.envelope && e.envelope->shared_body() != c.envelope->shared_body()) e.previous_body = e.envelope->shared_body();
              SetEnvelopeLocked(e, c.envelope);
              e.verified_by = verified_by;
              e.updated_at_unix = c.now_unix;
              SetRefreshErrorLocked(e, "");
              e.verified = true;
              if (projection_observer_) projection_observer_(id);
              if (e.watchers.empty()) continue;
              if (!shared) shared = c.envelope->Shared();
              for (ProjectionWatcher* watcher : e.watchers) watcher->OnProjection(shared);
            }
          } else if constexpr (std::is_same_v<T, store::change::SetRefreshError>) {
            if (auto it = by_id_.find(c.sandbox_id); it != by_id_.end()) SetRefreshErrorLocked(it->second, c.error);
          } else if constexpr (std::is_same_v<T, store::change::DeleteSandbox>) {
            if (auto it = by_id_.find(c.sandbox_id); it != by_id_.end()) RemoveLocked(it, /*revoked=*/true);
          } else {
            static_assert(std::is_same_v<T, store::change::RecordReport>);
            auto it = by_id_.find(c.sandbox_id);
            if (it == by_id_.end()) return;
            SetReportLocked(it->second, c.status, c.error, c.digest, c.now_unix);
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
    if (!verified[i]) {
      if (it != by_id_.end()) RemoveLocked(it, /*revoked=*/true);
      continue;
    }
    if (it == by_id_.end() || it->second.handle_sha256 != ToHandleHash(r.handle_sha256)) {
      InsertLocked(std::move(r), /*verified=*/true);  // new here, or re-admitted under the same id
      continue;
    }
    Entry& e = it->second;
    const bool moved = !e.envelope->SameAs(*r.envelope);
    if (moved) {
      if (e.envelope->shared_body() != r.envelope->shared_body()) e.previous_body = e.envelope->shared_body();
      SetEnvelopeLocked(e, r.envelope);
    }
    TakeRecordStateLocked(e, r);
    e.verified = true;
    if (!moved || e.watchers.empty()) continue;
    ProjectionPtr shared = e.envelope->Shared();
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
  if (it == by_id_.end() || it->second.envelope != envelope) return false;
  it->second.verified = true;
  return true;
}

bool SandboxRegistry::Quarantine(const std::string& sandbox_id) {
  absl::MutexLock lock(&mu_);
  auto it = by_id_.find(sandbox_id);
  if (it == by_id_.end()) return false;
  RemoveLocked(it, /*revoked=*/true);
  return true;
}

std::vector<std::string> SandboxRegistry::Unverified(const std::string& after, size_t limit) const {
  absl::ReaderMutexLock lock(&mu_);
  std::vector<std::string> out;
  for (auto it = by_id_.upper_bound(after); it != by_id_.end() && out.size() < limit; ++it) {
    if (!it->second.verified) out.push_back(it->first);
  }
  return out;
}

SandboxRegistry::Snapshot SandboxRegistry::SnapshotOf(const std::string& id, const Entry& e) const {
  Snapshot s;
  store::SandboxRecord& r = s.record;
  if (!r.context.ParseFromString(e.context_bytes)) r.context.set_sandbox_id(id);
  r.handle_sha256.assign(e.handle_sha256.begin(), e.handle_sha256.end());
  r.driver_handle = e.driver_handle;
  r.envelope = e.envelope;
  if (e.verified_by) {
    r.verification = e.verified_by->verification;
    r.signing_key_ids = e.verified_by->key_ids;
  }
  r.admitted_at_unix = e.admitted_at_unix;
  r.updated_at_unix = e.updated_at_unix;
  if (e.reports) {
    r.load_status = e.reports->load_status;
    r.load_error = e.reports->load_error;
    r.reported_digest = e.reports->reported_digest;
    r.reported_at_unix = e.reports->reported_at_unix;
    r.last_refresh_error = e.reports->last_refresh_error;
  }
  s.verified = e.verified;
  s.previous_body = e.previous_body;
  return s;
}

SandboxRegistry::Authenticated SandboxRegistry::AuthenticatedOf(const std::string& id, const Entry& e) const {
  Authenticated a{id, e.envelope, e.verified, {}, e.updated_at_unix, {}};
  if (!e.verified) {
    a.context_bytes = e.context_bytes;
    if (e.verified_by) a.verification = e.verified_by->verification;
  }
  return a;
}

bool SandboxRegistry::Contains(const std::string& sandbox_id) const {
  absl::ReaderMutexLock lock(&mu_);
  return by_id_.contains(sandbox_id);
}

bool SandboxRegistry::HoldsDriverHandle(const std::string& sandbox_id, const std::string& driver_handle) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = by_id_.find(sandbox_id);
  return it != by_id_.end() && it->second.driver_handle == driver_handle;
}

std::optional<SandboxRegistry::Snapshot> SandboxRegistry::Get(const std::string& sandbox_id) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = by_id_.find(sandbox_id);
  if (it == by_id_.end()) return std::nullopt;
  return SnapshotOf(it->first, it->second);
}

std::vector<SandboxRegistry::Snapshot> SandboxRegistry::List(const std::string& after, size_t limit) const {
  absl::ReaderMutexLock lock(&mu_);
  std::vector<Snapshot> out;
  for (auto it = by_id_.upper_bound(after); it != by_id_.end() && out.size() < limit; ++it) {
    out.push_back(SnapshotOf(it->first, it->second));
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
    const int64_t last = std::max(e.last_refresh_attempt, e.updated_at_unix);
    const int64_t expires = e.envelope->expires_at_unix();
    const bool interval_due = interval_s > 0 && now - last >= interval_s;
    const bool expiry_due = expires != 0 && now >= expires - lead(e.envelope->issued_at_unix(), expires) && now > last;
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

size_t SandboxRegistry::refresh_error_count() const {
  absl::ReaderMutexLock lock(&mu_);
  return refresh_errors_;
}

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
  const HandleHash& stored = it->second->second.handle_sha256;
  if (CRYPTO_memcmp(stored.data(), hash.data(), hash.size()) != 0) return nullptr;
  return it->second;
}

std::optional<SandboxRegistry::Authenticated> SandboxRegistry::Authenticate(const std::string& handle) const {
  absl::ReaderMutexLock lock(&mu_);
  auto* found = FindByHandleLocked(handle);
  if (found == nullptr) return std::nullopt;
  return AuthenticatedOf(found->first, found->second);
}

void SandboxRegistry::SetServingChecks(ServingChecks* checks) { checks_ = checks; }

absl::StatusOr<SandboxRegistry::Authenticated> SandboxRegistry::Servable(Authenticated found, int64_t now_unix,
                                                                         const absl::Status& refused_unverified) {
  if (!found.verified) {
    // Loaded at start-up (or from another replica) and not re-verified yet: verify now, outside the lock.
    absl::Status verified =
        checks_ == nullptr ? absl::FailedPreconditionError("no serving checks are set")
                           : checks_->VerifyLoaded(found.sandbox_id, found.context_bytes, *found.envelope,
                                                   found.verification, found.updated_at_unix);
    if (!verified.ok()) {
      LogError(absl::StrCat("sandbox ", found.sandbox_id, ": stored envelope fails re-verification (",
                            verified.message(), "); not served"));
      Quarantine(found.sandbox_id);
      return refused_unverified;
    }
    MarkVerified(found.sandbox_id, found.envelope);
    found.verified = true;
  }
  if (checks_ != nullptr) {
    if (absl::Status serving = checks_->ServingError(*found.envelope, now_unix); !serving.ok()) return serving;
  }
  return found;
}

absl::StatusOr<SandboxRegistry::Authenticated> SandboxRegistry::Serve(const std::string& handle, int64_t now_unix) {
  const absl::Status refused = absl::UnauthenticatedError("a valid sandbox handle is required");
  auto found = Authenticate(handle);
  if (!found) return refused;
  return Servable(*std::move(found), now_unix, refused);
}

absl::StatusOr<SandboxRegistry::Authenticated> SandboxRegistry::Lookup(const std::string& sandbox_id, int64_t now_unix) {
  const absl::Status refused = absl::NotFoundError(absl::StrCat("no sandbox '", sandbox_id, "' is admitted"));
  std::optional<Authenticated> found;
  {
    absl::ReaderMutexLock lock(&mu_);
    auto it = by_id_.find(sandbox_id);
    if (it != by_id_.end()) found = AuthenticatedOf(it->first, it->second);
  }
  if (!found) return refused;
  return Servable(*std::move(found), now_unix, refused);
}

absl::StatusOr<SandboxRegistry::Authenticated> SandboxRegistry::Watch(const std::string& handle,
                                                                      ProjectionWatcher* watcher, int64_t now_unix) {
  if (auto served = Serve(handle, now_unix); !served.ok()) return served.status();
  absl::MutexLock lock(&mu_);
  // Found again under the lock: a projection admitted since is one the commit's checks passed.
  auto* found = FindByHandleLocked(handle);
  if (found == nullptr) return absl::UnauthenticatedError("a valid sandbox handle is required");
  if (found->second.watchers.size() >= max_watchers_per_sandbox_) {
    return common::Refused(absl::StatusCode::kResourceExhausted, "watch_limit",
                           absl::StrCat("the sandbox already has ", max_watchers_per_sandbox_,
                                        " watch streams open; close one first"));
  }
  if (watchers_ >= max_watchers_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("watch_limit: the gateway already serves ", max_watchers_, " watch streams"));
  }
  found->second.watchers.push_back(watcher);
  ++watchers_;
  return AuthenticatedOf(found->first, found->second);
}

void SandboxRegistry::Unwatch(const std::string& sandbox_id, ProjectionWatcher* watcher) {
  absl::MutexLock lock(&mu_);
  auto it = by_id_.find(sandbox_id);
  if (it == by_id_.end()) return;
  auto& list = it->second.watchers;
  if (auto w = std::find(list.begin(), list.end(), watcher); w != list.end()) {
    list.erase(w);
    --watchers_;
  }
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
