#include "trust/validated_body_cache.h"

namespace osh::trust {

ValidatedBodyCache::Policy ValidatedBodyCache::Find(const std::string& digest) const {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(digest);
  return it == entries_.end() ? nullptr : it->second;
}

void ValidatedBodyCache::Insert(const std::string& digest, Policy policy) {
  if (capacity_ == 0) return;
  absl::MutexLock lock(&mu_);
  if (!entries_.emplace(digest, std::move(policy)).second) return;
  order_.push_back(digest);
  while (order_.size() > capacity_) {
    entries_.erase(order_.front());
    order_.pop_front();
  }
}

size_t ValidatedBodyCache::size() const {
  absl::MutexLock lock(&mu_);
  return entries_.size();
}

}  // namespace osh::trust
