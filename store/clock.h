// The one source of "now" for every policy decision and every record (Envoy's TimeSource, LevelDB's
// Env::NowMicros): the store stamps audit events and queued releases with it, the builtin driver its
// revisions, the gateway core its checks, expiry and refresh scheduling. Injected, so tests run on
// simulated time instead of sleeping. (RPC deadlines and log timestamps stay on the wall clock.)
//
// Implementations are thread-safe. Clock::System() lives for the whole process.
#pragma once

#include <atomic>
#include <cstdint>

namespace osh::store {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual int64_t NowUnixMillis() const = 0;
  int64_t NowUnix() const { return NowUnixMillis() / 1000; }

  // The system's real-time clock.
  static const Clock* System();
};

// Simulated time: stands still until set or advanced.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(int64_t unix_millis) : now_ms_(unix_millis) {}
  int64_t NowUnixMillis() const override { return now_ms_.load(); }
  void SetUnixMillis(int64_t unix_millis) { now_ms_ = unix_millis; }
  void AdvanceSeconds(int64_t seconds) { now_ms_ += seconds * 1000; }

 private:
  std::atomic<int64_t> now_ms_;
};

}  // namespace osh::store
