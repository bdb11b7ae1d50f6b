#include "common/state_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace osh::common {

absl::StatusOr<StateLock> StateLock::Acquire(const std::string& guarded_path, absl::string_view holder,
                                             absl::string_view advice) {
  std::string path = guarded_path + ".lock";
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return absl::InternalError(absl::StrCat("lock file ", path, ": ", std::strerror(errno)));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    char written[32] = {};
    const ssize_t n = ::pread(fd, written, sizeof(written) - 1, 0);
    ::close(fd);
    if (error != EWOULDBLOCK) return absl::InternalError(absl::StrCat("lock file ", path, ": ", std::strerror(error)));
    const std::string pid = n > 0 ? std::string(absl::StripAsciiWhitespace(std::string(written, n))) : "unknown";
    return absl::FailedPreconditionError(
        absl::StrCat("the state is in use by another ", holder, " (pid ", pid, ", holding ", path, "): ", advice));
  }
  const std::string pid = absl::StrCat(::getpid(), "\n");
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    const int error = errno;
    ::close(fd);
    return absl::InternalError(absl::StrCat("lock file ", path, ": ", std::strerror(error)));
  }
  return StateLock(std::move(path), fd);
}

StateLock::StateLock(StateLock&& other) noexcept : path_(std::move(other.path_)), fd_(std::exchange(other.fd_, -1)) {}

StateLock& StateLock::operator=(StateLock&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    path_ = std::move(other.path_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

StateLock::~StateLock() {
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace osh::common
