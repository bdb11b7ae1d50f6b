// The one-gateway-per-state lock: an exclusive flock(2) on "<database file>.lock", taken before the
// database is opened and held for the process's life (the kernel drops it when the process dies, even by
// kill -9, so a crash never leaves a stale lock). The holder's pid is written into the file so a second
// start can name it. Not for PostgreSQL, whose replicas share a database by design.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace osh::store {

class StateLock {
 public:
  // FAILED_PRECONDITION naming the lock file and the holder's pid when another process holds it;
  // INTERNAL when the lock file cannot be opened.
  static absl::StatusOr<StateLock> Acquire(const std::string& database_path);

  StateLock(StateLock&& other) noexcept;
  StateLock& operator=(StateLock&& other) noexcept;
  StateLock(const StateLock&) = delete;
  StateLock& operator=(const StateLock&) = delete;
  ~StateLock();  // releases the lock (the file stays)

  const std::string& path() const { return path_; }

 private:
  StateLock(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  std::string path_;
  int fd_ = -1;
};

}  // namespace osh::store
