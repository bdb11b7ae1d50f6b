#include "store/group_commit.h"

#include "absl/strings/str_cat.h"
#include "common/errors.h"
#include "store/audit_actor.h"

namespace osh::store {

void GroupCommitQueue::Submit(GroupWrite* write, absl::FunctionRef<void(const std::vector<GroupWrite*>&)> lead) {
  std::vector<GroupWrite*> group;
  {
    absl::MutexLock lock(&mu_);
    queue_.push_back(write);
    auto can_lead = [this, write]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return write->done || !leading_; };
    mu_.Await(absl::Condition(&can_lead));
    if (write->done) return;  // a leader committed it for us
    leading_ = true;
    group.assign(queue_.begin(), queue_.end());
    queue_.clear();
  }
  lead(group);
  Complete(EndLeading(group));
}

std::vector<GroupWrite*> GroupCommitQueue::EndLeading(const std::vector<GroupWrite*>& group) {
  std::vector<GroupWrite*> async;
  absl::MutexLock lock(&mu_);
  for (GroupWrite* w : group) {
    if (w->on_done) async.push_back(w);
    w->done = true;  // a Submit caller may return (and free its write) from here: not touched again
  }
  leading_ = false;
  return async;
}

void GroupCommitQueue::Complete(const std::vector<GroupWrite*>& async) {
  for (GroupWrite* w : async) {
    std::unique_ptr<GroupWrite> owned(w);
    try {
      owned->on_done(owned->status);
    } catch (...) {  // e.g. bad_alloc: the callback's own guard answers its caller; the others still run
    }
  }
}

void GroupCommitQueue::SubmitAsync(std::unique_ptr<GroupWrite> write, Lead lead) {
  std::string refused = "the store is closing";
  {
    absl::MutexLock lock(&mu_);
    if (!stopping_) {
      auto make = [this](std::function<void()> body) {
        return make_thread_ ? make_thread_(std::move(body)) : std::make_unique<std::thread>(std::move(body));
      };
      try {
        // First: if a thread cannot be made, nothing was queued (and the next write tries again).
        if (completer_ == nullptr) completer_ = make([this] { CompleterLoop(); });
        if (committer_ == nullptr) {
          committer_ = make([this] { CommitterLoop(); });
          lead_ = std::move(lead);
        }
        queue_.push_back(write.release());
        return;
      } catch (const std::exception& error) {  // std::system_error: no thread could be made
        refused = absl::StrCat("cannot start the store's commit thread: ", error.what());
      }
    }
  }
  // A storage error like any other (ToGrpc answers clients "storage_error: …").
  write->on_done(common::StorageError(absl::StatusCode::kUnavailable, "store", refused));
}

void GroupCommitQueue::CommitterLoop() {
  for (;;) {
    std::vector<GroupWrite*> group;
    Lead lead;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return !leading_ && completions_.size() < kMaxPendingCompletions && (!queue_.empty() || stopping_);
      };
      mu_.Await(absl::Condition(&ready));
      if (queue_.empty()) {  // stopping, and nothing is left
        committer_done_ = true;
        return;
      }
      leading_ = true;
      group.assign(queue_.begin(), queue_.end());
      queue_.clear();
      lead = lead_;
    }
    lead(group);
    std::vector<GroupWrite*> async = EndLeading(group);
    if (async.empty()) continue;
    absl::MutexLock lock(&mu_);
    completions_.push_back(std::move(async));
  }
}

void GroupCommitQueue::CompleterLoop() {
  for (;;) {
    std::vector<GroupWrite*> async;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !completions_.empty() || committer_done_; };
      mu_.Await(absl::Condition(&ready));
      if (completions_.empty()) return;  // the committer is gone and every group's callbacks ran
      async = std::move(completions_.front());
      completions_.pop_front();
    }
    Complete(async);
  }
}

GroupCommitQueue::~GroupCommitQueue() { Stop(); }

void GroupCommitQueue::Stop() {
  std::unique_ptr<std::thread> committer, completer;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    // No committer (never started, or it could not be made): nothing will end the completion thread's wait.
    if (committer_ == nullptr) committer_done_ = true;
    committer = std::move(committer_);
    completer = std::move(completer_);
  }
  if (committer != nullptr) committer->join();
  if (completer != nullptr) completer->join();
}

size_t RunInSavepoints(const std::vector<GroupWrite*>& group, absl::FunctionRef<absl::Status(const char*)> exec,
                       trust::ChainSealer& chain) {
  size_t succeeded = 0;
  if (group.size() == 1) {  // alone: a failure rolls the whole transaction back, no savepoint needed
    AuditActorScope actor(group[0]->actor);
    group[0]->status = group[0]->run();
    return group[0]->status.ok() ? 1 : 0;
  }
  // Each write's savepoint is released together with the next one's start, in one call of `exec` (one
  // round trip to a server); the last one is released on its own.
  bool open = false;
  for (GroupWrite* w : group) {
    const trust::ChainSealer::Mark before = chain.head();
    if (absl::Status s = exec(open ? "RELEASE w; SAVEPOINT w" : "SAVEPOINT w"); !s.ok()) {
      w->status = s;
      open = false;
      continue;
    }
    open = true;
    {
      AuditActorScope actor(w->actor);  // the writer's, on the leader's thread
      w->status = w->run();
    }
    if (!w->status.ok()) {
      exec("ROLLBACK TO w").IgnoreError();
      chain.Rewind(before);
    } else {
      ++succeeded;
    }
  }
  if (open) exec("RELEASE w").IgnoreError();
  return succeeded;
}

}  // namespace osh::store
