// A bounded memo of a pure function (nothing its result depends on can change, or the key names all of
// it): key -> value, the oldest dropped first, bounded in entries and in bytes (`bytes_of` a value plus the
// key); a value larger than a thirty-second of the byte bound is not kept. Only what the caller keeps is
// kept (successful results). Thread-safe; values are handed out by copy, so keep shared_ptrs of large ones.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"

namespace osh::gateway {

template <typename Value>
class BoundedMemo {
 public:
  struct Counts {
    uint64_t hits = 0;
    uint64_t misses = 0;
  };

  BoundedMemo(size_t (*bytes_of)(const Value&), size_t max_entries = 1024, size_t max_bytes = 32 << 20)
      : bytes_of_(bytes_of), max_entries_(max_entries), max_bytes_(max_bytes) {}

  bool Find(const std::string& key, Value* value) {
    absl::MutexLock lock(&mu_);
    auto it = kept_.find(key);
    if (it == kept_.end()) {
      ++counts_.misses;
      return false;
    }
    ++counts_.hits;
    *value = it->second;
    return true;
  }
  void Keep(const std::string& key, const Value& value) {
    const size_t bytes = bytes_of_(value) + key.size();
    if (bytes > max_bytes_ / 32) return;
    absl::MutexLock lock(&mu_);
    if (kept_.contains(key)) return;
    bytes_ += bytes;
    kept_.emplace(key, value);
    order_.emplace_back(key, bytes);
    while (kept_.size() > max_entries_ || bytes_ > max_bytes_) {
      kept_.erase(order_.front().first);
      bytes_ -= order_.front().second;
      order_.pop_front();
    }
  }
  Counts counts() {
    absl::MutexLock lock(&mu_);
    return counts_;
  }

 private:
  size_t (*const bytes_of_)(const Value&);
  const size_t max_entries_;
  const size_t max_bytes_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, Value> kept_ ABSL_GUARDED_BY(mu_);
  std::deque<std::pair<std::string, size_t>> order_ ABSL_GUARDED_BY(mu_);
  size_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
  Counts counts_ ABSL_GUARDED_BY(mu_);
};

}  // namespace osh::gateway
