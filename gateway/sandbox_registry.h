// The admitted sandboxes in memory: what sandboxes fetch is served from here, never from disk.
// Mirrors the store (the store is written first; the registry follows once the write is durable).
// Thread-safe. Watchers are called with the registry lock held and must not call back into it.
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "store/store.h"

namespace osh::gateway {

using ProjectionPtr = std::shared_ptr<const openshell::policy::driver::v1::Projection>;

class ProjectionWatcher {
 public:
  virtual ~ProjectionWatcher() = default;
  // A newly admitted projection for the watched sandbox.
  virtual void OnProjection(ProjectionPtr projection) = 0;
  // The sandbox was deleted (its handle revoked) or the gateway is stopping: no more calls follow.
  virtual void OnClosed(bool revoked) = 0;
};

class SandboxRegistry {
 public:
  // A consistent copy of one sandbox's record.
  struct Snapshot {
    store::SandboxRecord record;
    ProjectionPtr projection;
  };

  void Insert(store::SandboxRecord record);
  // Replaces the admitted projection and notifies watchers. False if the sandbox is gone.
  bool ReplaceProjection(const std::string& sandbox_id, const openshell::policy::driver::v1::Projection& projection,
                         const std::string& verification, const std::vector<std::string>& key_ids, int64_t now_unix);
  void SetRefreshError(const std::string& sandbox_id, const std::string& error);
  void SetReport(const std::string& sandbox_id, const std::string& digest,
                 openshell::policy::gateway::v1::LoadStatus status, const std::string& error, int64_t now_unix);
  // Removes the sandbox, revoking its handle and closing its watchers. False if absent.
  bool Remove(const std::string& sandbox_id);

  bool Contains(const std::string& sandbox_id) const;
  std::optional<Snapshot> Get(const std::string& sandbox_id) const;
  // Sandbox ids in order, after `after` (exclusive), at most `limit`.
  std::vector<Snapshot> List(const std::string& after, size_t limit) const;
  std::vector<Snapshot> All() const;
  size_t size() const;
  size_t watcher_count() const;

  // Authenticates a sandbox handle: the sandbox id and its current projection, or nothing.
  // The lookup is by SHA-256 of the handle; the stored hash is then compared in constant time.
  struct Authenticated {
    std::string sandbox_id;
    ProjectionPtr projection;
  };
  std::optional<Authenticated> Authenticate(const std::string& handle) const;

  // Registers a watcher for the sandbox the handle belongs to and returns its current projection;
  // nothing (and no registration) for a bad handle.
  std::optional<Authenticated> Watch(const std::string& handle, ProjectionWatcher* watcher);
  void Unwatch(const std::string& sandbox_id, ProjectionWatcher* watcher);
  // Closes every watcher (gateway stopping); later Watch calls still work.
  void CloseAllWatchers();

 private:
  struct Entry {
    store::SandboxRecord record;
    ProjectionPtr projection;
    std::set<ProjectionWatcher*> watchers;
  };
  const Entry* FindByHandleLocked(const std::string& handle) const ABSL_SHARED_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  std::map<std::string, Entry> by_id_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> id_by_handle_hash_ ABSL_GUARDED_BY(mu_);
};

}  // namespace osh::gateway
