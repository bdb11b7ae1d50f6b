#include "gateway/core/interceptor_records.h"

#include <algorithm>

namespace osh::gateway {

void InterceptorRecords::Put(const std::string& sandbox, Record record) {
  absl::MutexLock lock(&mu_);
  records_[sandbox] = std::move(record);
}

std::optional<InterceptorRecords::Record> InterceptorRecords::Get(const std::string& sandbox) const {
  absl::MutexLock lock(&mu_);
  auto it = records_.find(sandbox);
  if (it == records_.end()) return std::nullopt;
  return it->second;
}

void InterceptorRecords::Forget(const std::string& sandbox) {
  absl::MutexLock lock(&mu_);
  records_.erase(sandbox);
}

void InterceptorRecords::RemoveProvider(const std::string& sandbox, const std::string& provider) {
  absl::MutexLock lock(&mu_);
  auto it = records_.find(sandbox);
  if (it == records_.end()) return;
  auto& providers = it->second.providers;
  providers.erase(std::remove(providers.begin(), providers.end(), provider), providers.end());
}

size_t InterceptorRecords::size() const {
  absl::MutexLock lock(&mu_);
  return records_.size();
}

}  // namespace osh::gateway
