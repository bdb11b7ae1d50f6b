// The audit chain as it grows, for WatchAuditEvents streams (docs/audit.md, "The event stream").
//
// One thread serves every subscription. While any is open it reads the chain's head every `poll` (and at
// once when a subscriber makes room); new events are read from the log once and shared by every
// subscription that is caught up and has room for them. A subscription that is behind (it asked for older
// events, or its reader is slower than the chain grows) is filled from the log page by page, only as its
// reader takes what it was given: no subscription ever holds more than `backlog` events (`backlog_bytes`).
// A subscription whose reader takes nothing for `stall` while events wait for it (it stopped reading) is
// ended with RESOURCE_EXHAUSTED "audit_stream_lagging" and its queue dropped. Each subscription gets every
// event after its cursor exactly once, in seq order; the seq is the cursor to resume from, in this process
// or after a restart (the log is the store's).
//
// Thread-safe. The log must outlive the feed.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "openshell/policy/gateway/v1/gateway.pb.h"
#include "store/store.h"

namespace osh::gateway {

class AuditFeed;

// One stream's place in the chain: the feed fills it, the stream takes from it. Thread-safe.
class AuditSubscription {
 public:
  using EventPtr = std::shared_ptr<const openshell::policy::gateway::v1::AuditEvent>;
  // The next event to send, or (nothing queued) the end when the subscription ended, or nullptr and OK
  // (nothing yet: the wake callback is called when there is).
  struct Next {
    EventPtr event;
    absl::Status end;  // not OK: the subscription ended with this (nothing more follows)
  };
  Next Take();
  // The last seq handed out by Take (the cursor to resume from).
  uint64_t cursor() const;
  // Why the subscription ended (OK while it has not), whether or not Take has returned it yet.
  absl::Status end() const;

 private:
  friend class AuditFeed;
  explicit AuditSubscription(uint64_t after_seq) : queued_through_(after_seq), taken_through_(after_seq) {}

  mutable absl::Mutex mu_;
  AuditFeed* feed_ ABSL_GUARDED_BY(mu_) = nullptr;  // to ask for more when a behind subscription has room
  std::deque<EventPtr> queue_ ABSL_GUARDED_BY(mu_);
  size_t queued_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t queued_through_ ABSL_GUARDED_BY(mu_);  // the seq of the last event queued (or the start cursor)
  uint64_t taken_through_ ABSL_GUARDED_BY(mu_);
  // When the reader last took an event (or subscribed), or events began to wait in its empty queue.
  absl::Time last_take_ ABSL_GUARDED_BY(mu_) = absl::Now();
  absl::Status end_ ABSL_GUARDED_BY(mu_);          // set once: the subscription is over
  // Called (on the feed's thread) when something was queued or the subscription ended; cleared by
  // Unsubscribe, which waits for a call in progress.
  absl::Mutex wake_mu_;
  std::function<void()> wake_ ABSL_GUARDED_BY(wake_mu_);
};

class AuditFeed {
 public:
  struct Options {
    absl::Duration poll = absl::Milliseconds(20);  // how often the head is read while anyone subscribes
    size_t backlog = 1024;                         // events queued for one subscription at most
    size_t backlog_bytes = 16 << 20;               // ... and their serialized bytes at most
    absl::Duration stall = absl::Seconds(10);      // a reader that takes nothing this long while events wait ends
    size_t max_subscriptions = 256;
    uint32_t page = 256;                           // events read from the log at a time
  };
  // `log` must outlive the feed. The thread starts with the first subscription.
  AuditFeed(store::AuditLog* log, Options options);
  ~AuditFeed();  // ends every subscription (as Close does) and joins the thread
  AuditFeed(const AuditFeed&) = delete;
  AuditFeed& operator=(const AuditFeed&) = delete;

  // A subscription to every event with seq > after_seq. `wake` is called on the feed's thread whenever
  // the subscription has something to Take; it must not block nor call Subscribe/Unsubscribe.
  // RESOURCE_EXHAUSTED "audit_streams_limit" at max_subscriptions; UNAVAILABLE "gateway_stopping" after Close.
  absl::StatusOr<std::shared_ptr<AuditSubscription>> Subscribe(uint64_t after_seq, std::function<void()> wake);
  // Forgets the subscription; once it returns `wake` is never called again.
  void Unsubscribe(const std::shared_ptr<AuditSubscription>& subscription);
  // Ends every subscription with UNAVAILABLE "gateway_stopping" (their queues dropped; it replaces an earlier
  // end, which Take has then not returned yet) and refuses new ones.
  void Close();
  size_t subscriptions() const;

 private:
  friend class AuditSubscription;
  using EventPtr = AuditSubscription::EventPtr;
  void Run();
  bool Due() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return kicked_ || closed_; }
  // One round: new events to caught-up subscriptions, then a page to each behind one with room.
  void Deliver();
  // Asks the thread for a round now (a behind subscription made room).
  void Kick();
  static void End(AuditSubscription& s, absl::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu_);
  // Appends `event` if it is the next one `s` needs and there is room. Returns whether it appended.
  bool Offer(AuditSubscription& s, const EventPtr& event) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu_);
  static void Wake(AuditSubscription& s);
  absl::StatusOr<std::vector<EventPtr>> Read(uint64_t after_seq, uint32_t limit);

  store::AuditLog* const log_;
  const Options options_;
  mutable absl::Mutex mu_;
  std::vector<std::shared_ptr<AuditSubscription>> subscriptions_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  bool kicked_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;  // started by the first Subscribe (under mu_)
  uint64_t seen_ = 0;   // the head as of the last round (the feed's thread only)
};

}  // namespace osh::gateway
