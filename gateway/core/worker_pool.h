// A fixed pool of threads for work that may block (SQLite commits, driver calls), so gRPC's callback
// threads never do. Thread-safe; Shutdown (or the destructor) finishes queued work, then joins.
#pragma once

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace osh::gateway {

class WorkerPool {
 public:
  explicit WorkerPool(size_t threads);
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  void Submit(std::function<void()> work);
  // Submits unless `max_queued` pieces of work are already waiting; false (and `work` not run) then.
  bool TrySubmit(std::function<void()> work, size_t max_queued);
  // Runs the queued work (including work it submits), then joins the threads. Idempotent; called
  // by the destructor. Work submitted afterwards never runs.
  void Shutdown();

 private:
  void Run();
  absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace osh::gateway
