// The group-commit queue on its own (store/group_commit.h), led by a function that commits nothing: the
// committer's bound on the groups it leads ahead of a slow callback, and a queue whose committer thread
// could not be made. (The stores' group commit on a real database is in test_store_commit.cc.)
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/synchronization/notification.h"
#include "common/errors.h"
#include "store/group_commit.h"

using osh::store::GroupCommitQueue;
using osh::store::GroupWrite;

namespace {

// Counts the groups led; every write of a group succeeds.
struct CountingLeader {
  std::atomic<int> groups{0};
  GroupCommitQueue::Lead lead() {
    return [this](const std::vector<GroupWrite*>& group) {
      for (GroupWrite* w : group) w->status = w->run();
      groups.fetch_add(1);
    };
  }
  // True once `n` groups were led (waits up to 20 s: the queue's threads, not a figure under test).
  bool WaitGroups(int n) const {
    for (int i = 0; i < 20000 && groups.load() < n; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return groups.load() >= n;
  }
};

std::unique_ptr<GroupWrite> WriteCalling(std::function<void(absl::Status)> on_done) {
  auto w = std::make_unique<GroupWrite>();
  w->run = [] { return absl::OkStatus(); };
  w->on_done = std::move(on_done);
  return w;
}

}  // namespace

TEST_CASE("group commit: the committer leads at most kMaxPendingCompletions groups ahead of a slow callback",
          "[store][commit]") {
  constexpr int kAhead = static_cast<int>(GroupCommitQueue::kMaxPendingCompletions);
  CountingLeader leader;
  absl::Notification first_running, release_first;
  std::mutex mu;
  std::vector<int> answered;  // the writes whose on_done ran, in the order they ran
  int failed = 0;
  GroupCommitQueue queue;
  auto submit = [&](int i) {
    queue.SubmitAsync(WriteCalling([&, i](absl::Status s) {
                        if (i == 0) {  // a slow callback: holds the completion thread until released
                          first_running.Notify();
                          release_first.WaitForNotification();
                        }
                        std::lock_guard<std::mutex> lock(mu);
                        if (!s.ok()) ++failed;
                        answered.push_back(i);
                      }),
                      leader.lead());
  };
  submit(0);
  first_running.WaitForNotification();  // group 0 led and its callback running (taken off the pending list)
  // One write at a time, each led alone: the committer may lead kAhead groups while group 0's callback runs.
  for (int i = 1; i <= kAhead; ++i) {
    submit(i);
    REQUIRE(leader.WaitGroups(i + 1));
  }
  // One more: its group must wait until the completion thread takes a group off the pending list. (A
  // committer that did not wait would lead it within microseconds; the window only gives it the chance.)
  submit(kAhead + 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  CHECK(leader.groups.load() == kAhead + 1);
  release_first.Notify();
  REQUIRE(leader.WaitGroups(kAhead + 2));
  queue.Stop();  // waits for every callback of the groups the committer led
  std::vector<int> in_order(kAhead + 2);
  for (int i = 0; i < kAhead + 2; ++i) in_order[i] = i;
  std::lock_guard<std::mutex> lock(mu);
  CHECK(answered == in_order);  // every write answered once, in commit order
  CHECK(failed == 0);
}

TEST_CASE("group commit: a committer thread that cannot be made refuses the write, and Stop still returns",
          "[store][commit]") {
  CountingLeader leader;
  std::atomic<int> made{0};
  std::atomic<bool> fail_committer{true};
  // The completion thread is made first and succeeds; the committer's creation fails while
  // `fail_committer` holds (as std::thread fails when the process is out of threads).
  GroupCommitQueue queue([&](std::function<void()> body) -> std::unique_ptr<std::thread> {
    if (made.fetch_add(1) >= 1 && fail_committer.load()) {
      throw std::system_error(std::make_error_code(std::errc::resource_unavailable_try_again));
    }
    return std::make_unique<std::thread>(std::move(body));
  });
  absl::Status first;
  queue.SubmitAsync(WriteCalling([&](absl::Status s) { first = s; }), leader.lead());
  // Answered at once, on this thread, as a storage error; nothing was led.
  CHECK(absl::IsUnavailable(first));
  CHECK(osh::common::IsStorageError(first));
  CHECK(first.message().find("commit thread") != absl::string_view::npos);
  CHECK(leader.groups.load() == 0);

  SECTION("Stop returns though no committer will ever end the completion thread's wait") {
    queue.Stop();  // before the fix this waited forever (ctest's timeout reports such a hang)
    absl::Status after;
    queue.SubmitAsync(WriteCalling([&](absl::Status s) { after = s; }), leader.lead());
    CHECK(absl::IsUnavailable(after));
    CHECK(leader.groups.load() == 0);
  }
  SECTION("the next write tries again, and is committed once a thread can be made") {
    fail_committer = false;
    absl::Notification done;
    absl::Status second;
    queue.SubmitAsync(WriteCalling([&](absl::Status s) {
                        second = s;
                        done.Notify();
                      }),
                      leader.lead());
    REQUIRE(done.WaitForNotificationWithTimeout(absl::Seconds(20)));
    CHECK(second.ok());
    CHECK(leader.groups.load() == 1);
    CHECK(made.load() == 3);  // the completion thread once, the committer twice (once failed)
    queue.Stop();
  }
}
