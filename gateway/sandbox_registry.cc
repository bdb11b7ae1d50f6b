#include "gateway/sandbox_registry.h"

#include <openssl/crypto.h>

#include "policy/digest.h"

namespace osh::gateway {

void SandboxRegistry::Insert(store::SandboxRecord record) {
  absl::MutexLock lock(&mu_);
  const std::string id = record.context.sandbox_id();
  id_by_handle_hash_[record.handle_sha256] = id;
  Entry& entry = by_id_[id];
  entry.projection = std::make_shared<const openshell::policy::driver::v1::Projection>(record.projection);
  entry.record = std::move(record);
}

bool SandboxRegistry::ReplaceProjection(const std::string& sandbox_id,
                                        const openshell::policy::driver::v1::Projection& projection,
                                        const std::string& verification, const std::vector<std::string>& key_ids,
                                        int64_t now_unix) {
  absl::MutexLock lock(&mu_);
  auto it = by_id_.find(sandbox_id);
  if (it == by_id_.end()) return false;
  Entry& entry = it->second;
  entry.projection = std::make_shared<const openshell::policy::driver::v1::Projection>(projection);
  entry.record.projection = projection;
  entry.record.verification = verification;
  entry.record.signing_key_ids = key_ids;
  entry.record.updated_at_unix = now_unix;
  entry.record.last_refresh_error.clear();
  for (ProjectionWatcher* watcher : entry.watchers) watcher->OnProjection(entry.projection);
  return true;
}

void SandboxRegistry::SetRefreshError(const std::string& sandbox_id, const std::string& error) {
  absl::MutexLock lock(&mu_);
  if (auto it = by_id_.find(sandbox_id); it != by_id_.end()) it->second.record.last_refresh_error = error;
}

void SandboxRegistry::SetReport(const std::string& sandbox_id, const std::string& digest,
                                openshell::policy::gateway::v1::LoadStatus status, const std::string& error,
                                int64_t now_unix) {
  absl::MutexLock lock(&mu_);
  auto it = by_id_.find(sandbox_id);
  if (it == by_id_.end()) return;
  it->second.record.load_status = status;
  it->second.record.load_error = error;
  it->second.record.reported_digest = digest;
  it->second.record.reported_at_unix = now_unix;
}

bool SandboxRegistry::Remove(const std::string& sandbox_id) {
  absl::MutexLock lock(&mu_);
  auto it = by_id_.find(sandbox_id);
  if (it == by_id_.end()) return false;
  for (ProjectionWatcher* watcher : it->second.watchers) watcher->OnClosed(/*revoked=*/true);
  id_by_handle_hash_.erase(it->second.record.handle_sha256);
  by_id_.erase(it);
  return true;
}

bool SandboxRegistry::Contains(const std::string& sandbox_id) const {
  absl::ReaderMutexLock lock(&mu_);
  return by_id_.contains(sandbox_id);
}

std::optional<SandboxRegistry::Snapshot> SandboxRegistry::Get(const std::string& sandbox_id) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = by_id_.find(sandbox_id);
  if (it == by_id_.end()) return std::nullopt;
  return Snapshot{it->second.record, it->second.projection};
}

std::vector<SandboxRegistry::Snapshot> SandboxRegistry::List(const std::string& after, size_t limit) const {
  absl::ReaderMutexLock lock(&mu_);
  std::vector<Snapshot> out;
  for (auto it = by_id_.upper_bound(after); it != by_id_.end() && out.size() < limit; ++it) {
    out.push_back({it->second.record, it->second.projection});
  }
  return out;
}

std::vector<SandboxRegistry::Snapshot> SandboxRegistry::All() const {
  return List("", static_cast<size_t>(-1));
}

size_t SandboxRegistry::size() const {
  absl::ReaderMutexLock lock(&mu_);
  return by_id_.size();
}

size_t SandboxRegistry::watcher_count() const {
  absl::ReaderMutexLock lock(&mu_);
  size_t n = 0;
  for (const auto& [id, entry] : by_id_) n += entry.watchers.size();
  return n;
}

const SandboxRegistry::Entry* SandboxRegistry::FindByHandleLocked(const std::string& handle) const {
  if (handle.empty()) return nullptr;
  const std::string hash = policy::Sha256(handle);
  auto id = id_by_handle_hash_.find(hash);
  if (id == id_by_handle_hash_.end()) return nullptr;
  auto entry = by_id_.find(id->second);
  if (entry == by_id_.end()) return nullptr;
  const std::string& stored = entry->second.record.handle_sha256;
  if (stored.size() != hash.size() || CRYPTO_memcmp(stored.data(), hash.data(), hash.size()) != 0) return nullptr;
  return &entry->second;
}

std::optional<SandboxRegistry::Authenticated> SandboxRegistry::Authenticate(const std::string& handle) const {
  absl::ReaderMutexLock lock(&mu_);
  const Entry* entry = FindByHandleLocked(handle);
  if (entry == nullptr) return std::nullopt;
  return Authenticated{entry->record.context.sandbox_id(), entry->projection};
}

std::optional<SandboxRegistry::Authenticated> SandboxRegistry::Watch(const std::string& handle,
                                                                     ProjectionWatcher* watcher) {
  absl::MutexLock lock(&mu_);
  const Entry* entry = FindByHandleLocked(handle);
  if (entry == nullptr) return std::nullopt;
  const_cast<Entry*>(entry)->watchers.insert(watcher);
  return Authenticated{entry->record.context.sandbox_id(), entry->projection};
}

void SandboxRegistry::Unwatch(const std::string& sandbox_id, ProjectionWatcher* watcher) {
  absl::MutexLock lock(&mu_);
  if (auto it = by_id_.find(sandbox_id); it != by_id_.end()) it->second.watchers.erase(watcher);
}

void SandboxRegistry::CloseAllWatchers() {
  absl::MutexLock lock(&mu_);
  for (auto& [id, entry] : by_id_) {
    for (ProjectionWatcher* watcher : entry.watchers) watcher->OnClosed(/*revoked=*/false);
    entry.watchers.clear();
  }
}

}  // namespace osh::gateway
