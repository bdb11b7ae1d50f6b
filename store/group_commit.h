// Group commit, shared by the stores: a write that finds another group being committed queues behind
// it, and the next leader commits every queued write in one transaction (one fsync for all). Each write
// returns only once it is durable or refused. Thread-safe.
#pragma once

#include <deque>
#include <functional>
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
};

class GroupCommitQueue {
 public:
  // Queues `write`; if no group is being led, this thread leads: `lead` gets every queued write (this
  // one included) and must set each one's status. Returns once `write` is done.
  void Submit(GroupWrite* write, absl::FunctionRef<void(const std::vector<GroupWrite*>&)> lead);

 private:
  absl::Mutex mu_;
  std::deque<GroupWrite*> queue_ ABSL_GUARDED_BY(mu_);
  bool leading_ ABSL_GUARDED_BY(mu_) = false;
};

// Runs each write of a group inside the leader's open transaction, each in its own savepoint, so one
// write's failure (rolled back to its savepoint, its audit events un-sealed from `chain`) leaves the
// others intact. `exec` runs one SQL statement on the transaction's connection. Returns how many succeeded;
// when none did, the caller must roll the transaction back (a group of one runs without a savepoint).
size_t RunInSavepoints(const std::vector<GroupWrite*>& group, absl::FunctionRef<absl::Status(const char*)> exec,
                       trust::ChainSealer& chain);

}  // namespace osh::store
