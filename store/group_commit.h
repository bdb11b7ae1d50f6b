// Group commit, shared by the stores: a write that finds another group being committed queues behind
// it, and the next leader commits every queued write in one transaction (one fsync for all). A write
// submitted with Submit returns only once it is durable or refused; one submitted with SubmitAsync
// returns at once and its `on_done` runs once it is: for a group the committer thread led, on the queue's
// completion thread, group after group in commit order (the committer leads the next group meanwhile, at
// most kMaxPendingCompletions groups ahead); for a group a Submit caller led, on that caller's thread at
// once — so across the two, a later group's callbacks may run before an earlier one's, and a later group's
// `committed` before an earlier group's `on_done`. Thread-safe.
#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <thread>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "trust/audit_chain.h"

namespace osh::store {

// One write: its statements (run inside the shared transaction) and what follows its commit.
struct GroupWrite {
  std::function<absl::Status()> run;
  std::function<void()> committed;  // may be empty; runs after the commit, in commit order
  absl::Status status;
  bool done = false;
  std::string actor;  // AuditActorScope::Current() of the writing thread, for its events
  bool touches_chain = true;  // false: writes no audit event and no change a view must apply
  // PostgreSQL only: the group locks and reads the audit chain's head before anything else (an import,
  // which writes sealed events itself). Every other write appends its events unsealed.
  bool head_first = false;
  // PostgreSQL only: how `run` uses a value every replica's writes are checked against — the stored
  // ceiling, the policy revisions. kChecks: it checks its batch against the value in force
  // (CheckCeilingUnchanged, CheckRevisionsKnown); kSets: it stores a new one (SaveCeiling,
  // AppendPolicyRevision, an import). A group takes each value's advisory lock (exclusive if one of its
  // writes sets it, else shared; the ceiling's first) before any of its writes runs, and reads the ceiling
  // once: in every transaction these locks come before any row lock a write takes, so neither is part of
  // a deadlock. Then the rows of existing sandboxes the group's writes change (`sandbox_rows`: every
  // write's, together), locked in one order (by id) when there are two or more: two replicas' groups over
  // the same sandboxes queue on the first row they share, whatever order their writes came in, instead of
  // each holding a row the other waits for.
  enum class LockUse { kNone, kChecks, kSets };  // ordered: a group takes the strongest of its writes'
  struct Locks {
    LockUse ceiling = LockUse::kNone;
    LockUse revisions = LockUse::kNone;
    std::vector<std::string> sandbox_rows = {};  // ids of sandboxes `run` updates or deletes (not the ones it admits)
  };
  Locks locks;
  // SubmitAsync only: runs once `status` is final, after the leader gave up leading (it may submit
  // again), and must not block on the disk or the network; the queue then deletes the write.
  std::function<void(absl::Status)> on_done;
};

class GroupCommitQueue {
 public:
  using Lead = std::function<void(const std::vector<GroupWrite*>&)>;
  // Makes the queue's two threads (the committer and the completion thread); may throw, as
  // std::thread's constructor does (std::system_error). The default makes a std::thread; tests pass one
  // that fails to see the queue through a thread that could not be made.
  using ThreadMaker = std::function<std::unique_ptr<std::thread>(std::function<void()> body)>;
  GroupCommitQueue() = default;
  explicit GroupCommitQueue(ThreadMaker make_thread) : make_thread_(std::move(make_thread)) {}
  // Stop().
  ~GroupCommitQueue();
  // Commits the asynchronous writes queued so far and waits for every callback of the groups the
  // committer led, then stops both threads; a SubmitAsync from then on is answered UNAVAILABLE at once.
  // Idempotent; never from an `on_done` (it would join its own thread). A store calls it first when it
  // closes.
  void Stop();
  GroupCommitQueue(const GroupCommitQueue&) = delete;
  GroupCommitQueue& operator=(const GroupCommitQueue&) = delete;

  // Queues `write`; if no group is being led, this thread leads: `lead` gets every queued write (this
  // one included) and must set each one's status. Returns once `write` is done.
  void Submit(GroupWrite* write, absl::FunctionRef<void(const std::vector<GroupWrite*>&)> lead);
  // Queues `write` (owned from here; its `on_done` must be set) and returns at once. Writes no Submit caller
  // leads are led by the queue's committer thread (started on first use, with `lead`, which must be the
  // same function every time), so a burst of asynchronous writes shares one transaction. If a thread
  // cannot be made, `write` is answered UNAVAILABLE at once (a storage error) and nothing is queued (the
  // next call tries again).
  void SubmitAsync(std::unique_ptr<GroupWrite> write, Lead lead);

  // Groups the committer may lead before the completion thread catches up (a slow callback then slows
  // the committer, as it did when the committer ran the callbacks, instead of queueing without bound).
  static constexpr size_t kMaxPendingCompletions = 64;

 private:
  // Marks `group` done and ends this leadership; returns its asynchronous writes.
  std::vector<GroupWrite*> EndLeading(const std::vector<GroupWrite*>& group);
  // Runs the asynchronous writes' `on_done` and deletes them.
  static void Complete(const std::vector<GroupWrite*>& async);
  void CommitterLoop();
  void CompleterLoop();

  absl::Mutex mu_;
  std::deque<GroupWrite*> queue_ ABSL_GUARDED_BY(mu_);
  bool leading_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  Lead lead_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<std::thread> committer_ ABSL_GUARDED_BY(mu_);
  const ThreadMaker make_thread_;  // null: std::thread
  // Groups the committer led whose callbacks the completion thread has yet to run, oldest first.
  std::deque<std::vector<GroupWrite*>> completions_ ABSL_GUARDED_BY(mu_);
  bool committer_done_ ABSL_GUARDED_BY(mu_) = false;  // the committer returned: no more completions
  std::unique_ptr<std::thread> completer_ ABSL_GUARDED_BY(mu_);
};

// Runs each write of a group inside the leader's open transaction, each in its own savepoint, so one
// write's failure (rolled back to its savepoint, its audit events un-sealed from `chain`) leaves the
// others intact. `exec` runs one SQL statement, or several separated by "; ", on the
// transaction's connection (one round trip to a server). Returns how many succeeded;
// when none did, the caller must roll the transaction back (a group of one runs without a savepoint).
size_t RunInSavepoints(const std::vector<GroupWrite*>& group, absl::FunctionRef<absl::Status(const char*)> exec,
                       trust::ChainSealer& chain);

}  // namespace osh::store
