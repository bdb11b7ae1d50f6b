// The one-process-per-state lock: an exclusive flock(2) on "<guarded file>.lock", taken before the file
// is read and held for the process's life (the kernel drops it when the process dies, even by kill -9, so
// a crash never leaves a stale lock). The holder's pid is written into the file so a second start can name
// it. The gateway takes it on its SQLite database (not for PostgreSQL, whose replicas share a database by
// design); the witness on its state file (C2SP tlog-witness: checking a checkpoint against the latest
// one and persisting it are one atomic step — two processes on one file could cosign a fork).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace osh::common {

class StateLock {
 public:
  // FAILED_PRECONDITION naming the lock file, the holder (`holder`, e.g. "gateway") and its pid, then
  // `advice`, when another process holds it; INTERNAL when the lock file cannot be opened.
  static absl::StatusOr<StateLock> Acquire(
      const std::string& guarded_path, absl::string_view holder = "gateway",
      absl::string_view advice = "one gateway per SQLite database; stop it first, or give this one its own state_dir");

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

}  // namespace osh::common
