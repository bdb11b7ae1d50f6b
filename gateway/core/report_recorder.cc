#include "gateway/core/report_recorder.h"

namespace osh::gateway {

namespace {
bool Empty(const ReportRecorder::Reports& r) {
  return r.load_status == openshell::policy::gateway::v1::LOAD_STATUS_UNSPECIFIED && r.load_error.empty() &&
         r.reported_digest.empty() && r.reported_at_unix == 0 && r.last_refresh_error.empty();
}
}  // namespace

void ReportRecorder::TrimLocked(absl::flat_hash_map<std::string, Reports>::iterator it) {
  if (Empty(it->second)) by_id_.erase(it);
}

void ReportRecorder::RecordReport(const std::string& sandbox_id, openshell::policy::gateway::v1::LoadStatus status,
                                  std::string error, std::string digest, int64_t at_unix) {
  absl::MutexLock lock(&mu_);
  auto it = by_id_.find(sandbox_id);
  const bool none = status == openshell::policy::gateway::v1::LOAD_STATUS_UNSPECIFIED && error.empty() &&
                    digest.empty() && at_unix == 0;
  if (it == by_id_.end()) {
    if (none) return;
    it = by_id_.try_emplace(sandbox_id).first;
  }
  Reports& r = it->second;
  r.load_status = status;
  r.load_error = std::move(error);
  r.reported_digest = std::move(digest);
  r.reported_at_unix = at_unix;
  TrimLocked(it);
}

void ReportRecorder::SetRefreshError(const std::string& sandbox_id, std::string error) {
  absl::MutexLock lock(&mu_);
  auto it = by_id_.find(sandbox_id);
  if (it == by_id_.end()) {
    if (error.empty()) return;
    it = by_id_.try_emplace(sandbox_id).first;
  }
  if (!it->second.last_refresh_error.empty()) --refresh_errors_;
  it->second.last_refresh_error = std::move(error);
  if (!it->second.last_refresh_error.empty()) ++refresh_errors_;
  TrimLocked(it);
}

void ReportRecorder::Forget(const std::string& sandbox_id) {
  absl::MutexLock lock(&mu_);
  auto it = by_id_.find(sandbox_id);
  if (it == by_id_.end()) return;
  if (!it->second.last_refresh_error.empty()) --refresh_errors_;
  by_id_.erase(it);
}

void ReportRecorder::Clear() {
  absl::MutexLock lock(&mu_);
  by_id_.clear();
  refresh_errors_ = 0;
}

std::optional<ReportRecorder::Reports> ReportRecorder::Get(const std::string& sandbox_id) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = by_id_.find(sandbox_id);
  if (it == by_id_.end()) return std::nullopt;
  return it->second;
}

size_t ReportRecorder::refresh_error_count() const {
  absl::ReaderMutexLock lock(&mu_);
  return refresh_errors_;
}

}  // namespace osh::gateway
