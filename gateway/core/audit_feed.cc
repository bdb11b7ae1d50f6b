#include "gateway/core/audit_feed.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/errors.h"
#include "gateway/core/log.h"
#include "trust/audit_chain.h"

namespace osh::gateway {

AuditSubscription::Next AuditSubscription::Take() {
  Next next;
  AuditFeed* ask = nullptr;
  {
    absl::MutexLock lock(&mu_);
    if (!queue_.empty()) {
      next.event = std::move(queue_.front());
      queue_.pop_front();
      queued_bytes_ -= next.event->ByteSizeLong();
      taken_through_ = next.event->seq();
      last_take_ = absl::Now();
    } else if (!end_.ok()) {
      next.end = end_;
    }
    if (queue_.empty() && end_.ok()) ask = feed_;  // room: a behind subscription gets its next page now
  }
  if (ask != nullptr) ask->Kick();
  return next;
}

uint64_t AuditSubscription::cursor() const {
  absl::MutexLock lock(&mu_);
  return taken_through_;
}

absl::Status AuditSubscription::end() const {
  absl::MutexLock lock(&mu_);
  return end_;
}

AuditFeed::AuditFeed(store::AuditLog* log, Options options) : log_(log), options_(options) {}

AuditFeed::~AuditFeed() {
  Close();
  if (thread_.joinable()) thread_.join();
}

absl::StatusOr<std::shared_ptr<AuditSubscription>> AuditFeed::Subscribe(uint64_t after_seq, std::function<void()> wake) {
  // A cursor past the head would wait, silently, until the chain reached it: it comes from another chain
  // (a restored or rewound database) or is mistyped. Refused only when the log says so (event after_seq
  // is not there); a log that cannot be read now (a database unreachable) takes the cursor as it is.
  if (after_seq > 0) {
    auto at = log_->ListAuditEvents(after_seq - 1, 1);
    if (at.ok() && at->empty()) {
      const uint64_t head = log_->AuditChainHead().seq;
      return common::Refused(absl::StatusCode::kOutOfRange, "audit_cursor_ahead",
                             absl::StrCat("after_seq ", after_seq, " is past the audit chain's head (", head,
                                          "): a cursor from another chain (a restored database?); resume from ",
                                          head, " or below"));
    }
  }
  std::shared_ptr<AuditSubscription> s(new AuditSubscription(after_seq));
  {
    absl::MutexLock lock(&s->wake_mu_);
    s->wake_ = std::move(wake);
  }
  absl::MutexLock lock(&mu_);
  if (closed_) return common::Refused(absl::StatusCode::kUnavailable, "gateway_stopping", "the gateway is stopping");
  if (subscriptions_.size() >= options_.max_subscriptions) {
    return common::Refused(absl::StatusCode::kResourceExhausted, "audit_streams_limit",
                           absl::StrCat(subscriptions_.size(), " audit streams are open (max_audit_streams)"));
  }
  {
    absl::MutexLock sub_lock(&s->mu_);
    s->feed_ = this;
  }
  subscriptions_.push_back(s);
  kicked_ = true;
  if (!thread_.joinable()) thread_ = std::thread([this] { Run(); });
  return s;
}

void AuditFeed::Unsubscribe(const std::shared_ptr<AuditSubscription>& subscription) {
  {
    absl::MutexLock lock(&mu_);
    subscriptions_.erase(std::remove(subscriptions_.begin(), subscriptions_.end(), subscription), subscriptions_.end());
  }
  {
    absl::MutexLock lock(&subscription->mu_);
    subscription->feed_ = nullptr;
  }
  absl::MutexLock lock(&subscription->wake_mu_);  // waits for a wake in progress
  subscription->wake_ = nullptr;
}

void AuditFeed::Close() {
  std::vector<std::shared_ptr<AuditSubscription>> ended;
  {
    absl::MutexLock lock(&mu_);
    closed_ = true;
    ended = subscriptions_;
  }
  for (const auto& s : ended) {
    {
      absl::MutexLock lock(&s->mu_);
      s->end_ = absl::OkStatus();  // stopping overrides an earlier end (a lagging stream's pending write ends now)
      End(*s, common::Refused(absl::StatusCode::kUnavailable, "gateway_stopping",
                              "the gateway is stopping; resume from the last seq received"));
    }
    Wake(*s);
  }
}

size_t AuditFeed::subscriptions() const {
  absl::MutexLock lock(&mu_);
  return subscriptions_.size();
}

void AuditFeed::Kick() {
  absl::MutexLock lock(&mu_);
  kicked_ = true;
}

void AuditFeed::End(AuditSubscription& s, absl::Status status) {
  if (!s.end_.ok()) return;
  s.end_ = std::move(status);
  s.queue_.clear();
  s.queued_bytes_ = 0;
}

void AuditFeed::Wake(AuditSubscription& s) {
  absl::MutexLock lock(&s.wake_mu_);
  if (s.wake_) s.wake_();
}

bool AuditFeed::Offer(AuditSubscription& s, const EventPtr& event) {
  if (!s.end_.ok() || event->seq() != s.queued_through_ + 1) return false;
  const size_t bytes = event->ByteSizeLong();
  if (s.queue_.size() >= options_.backlog || (!s.queue_.empty() && s.queued_bytes_ + bytes > options_.backlog_bytes)) {
    return false;  // no room: it falls behind, and catches up from the log as its reader takes
  }
  // The stall is counted from the last take, or from when events began to wait in an empty queue: a
  // reader caught up on a quiet chain is not lagging when the next event comes.
  if (s.queue_.empty()) s.last_take_ = std::max(s.last_take_, absl::Now());
  s.queue_.push_back(event);
  s.queued_bytes_ += bytes;
  s.queued_through_ = event->seq();
  return true;
}

absl::StatusOr<std::vector<AuditFeed::EventPtr>> AuditFeed::Read(uint64_t after_seq, uint32_t limit) {
  auto events = log_->ListAuditEvents(after_seq, limit);
  if (!events.ok()) return events.status();
  std::vector<EventPtr> out;
  out.reserve(events->size());
  for (const auto& event : *events) out.push_back(std::make_shared<const openshell::policy::gateway::v1::AuditEvent>(trust::ToProto(event)));
  return out;
}

void AuditFeed::Run() {
  seen_ = log_->AuditChainHead().seq;  // older events reach a subscription through its catch-up
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(this, &AuditFeed::Due), options_.poll);
      if (closed_) return;
      kicked_ = false;
      if (subscriptions_.empty()) continue;
    }
    Deliver();
  }
}

void AuditFeed::Deliver() {
  std::vector<std::shared_ptr<AuditSubscription>> subscriptions;
  {
    absl::MutexLock lock(&mu_);
    subscriptions = subscriptions_;
  }
  std::vector<bool> woken(subscriptions.size(), false);
  // New events: read once, shared by every subscription that is caught up.
  const uint64_t head = log_->AuditChainHead().seq;
  while (seen_ < head) {
    auto page = Read(seen_, options_.page);
    if (!page.ok()) {
      LogWarning(absl::StrCat("audit streams: reading the audit log: ", page.status().message()));
      break;
    }
    if (page->empty()) break;
    for (size_t i = 0; i < subscriptions.size(); ++i) {
      AuditSubscription& s = *subscriptions[i];
      absl::MutexLock lock(&s.mu_);
      for (const auto& event : *page) woken[i] = Offer(s, event) || woken[i];
    }
    seen_ = page->back()->seq();
  }
  // A reader that took nothing for `stall` while events wait is ended; ended ones still open are woken
  // every round (a stream whose write is stuck cancels itself).
  const absl::Time now = absl::Now();
  for (size_t i = 0; i < subscriptions.size(); ++i) {
    AuditSubscription& s = *subscriptions[i];
    absl::MutexLock lock(&s.mu_);
    if (s.end_.ok() && !s.queue_.empty() && now - s.last_take_ > options_.stall) {
      End(s, common::Refused(absl::StatusCode::kResourceExhausted, "audit_stream_lagging",
                             absl::StrCat("the reader took no event for ", absl::FormatDuration(now - s.last_take_),
                                          " while ", s.queue_.size(), " waited (the newest seq ", seen_,
                                          "); resume with after_seq ", s.taken_through_)));
    }
    woken[i] = woken[i] || !s.end_.ok();
  }
  // Behind subscriptions: one page each, as much as it has room for.
  for (size_t i = 0; i < subscriptions.size(); ++i) {
    AuditSubscription& s = *subscriptions[i];
    uint64_t after = 0;
    size_t room = 0;
    {
      absl::MutexLock lock(&s.mu_);
      if (!s.end_.ok() || s.queued_through_ >= seen_ || s.queue_.size() >= options_.backlog) continue;
      after = s.queued_through_;
      room = options_.backlog - s.queue_.size();
    }
    auto page = Read(after, static_cast<uint32_t>(std::min<size_t>(room, options_.page)));
    if (!page.ok()) continue;  // logged above when the log fails; the next round tries again
    absl::MutexLock lock(&s.mu_);
    // The rest follows as the reader takes these (Take kicks the feed when the queue is empty).
    for (const auto& event : *page) woken[i] = Offer(s, event) || woken[i];
  }
  for (size_t i = 0; i < subscriptions.size(); ++i) {
    if (woken[i]) Wake(*subscriptions[i]);
  }
}

}  // namespace osh::gateway
