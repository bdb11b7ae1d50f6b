#include "sandbox_client/private_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "trust/secure_path.h"

namespace osh::sandbox_client {

namespace {

std::string FolderOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
}

}  // namespace

absl::StatusOr<std::optional<std::string>> ReadPrivateFile(const std::string& path, size_t max_bytes) {
  // Whoever can write the folder can remove the file, and a missing file reads as a first start — no
  // rollback floor, no checkpoint seen (review 116): the folder, and each above it, writable by this user or
  // root only (a root-owned sticky folder such as /tmp aside: others cannot remove our entries there).
  // A folder that is not there is refused too: nothing could be written in it, and a folder another user
  // renamed away for a moment (any user may rename what a writable folder above holds) would otherwise pass
  // unchecked and read as a first start (review 120).
  if (absl::Status safe = trust::CheckNoOneElseCanWrite(FolderOf(path), "its folder"); !safe.ok()) {
    const char* why = absl::IsNotFound(safe) ? "" : ": whoever can write it can remove this file, which then reads as a first start";
    return absl::PermissionDeniedError(absl::StrCat(safe.message(), why));
  }
  // O_NONBLOCK: a FIFO (or a device) put at the path is refused below, not waited on for ever (review 113).
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) {
    if (errno == ENOENT) return std::optional<std::string>();
    return absl::FailedPreconditionError(absl::StrCat("cannot be read: ", std::strerror(errno)));
  }
  struct stat st {};
  std::string text;
  int error = ::fstat(fd, &st) != 0 ? errno : 0;
  if (error == 0 && S_ISREG(st.st_mode) && st.st_size <= static_cast<off_t>(max_bytes)) {
    char buffer[4096];
    for (;;) {
      const ssize_t n = ::read(fd, buffer, sizeof(buffer));
      if (n > 0) {
        text.append(buffer, static_cast<size_t>(n));
        if (text.size() > max_bytes) break;
      } else if (n == 0) {
        break;
      } else if (errno != EINTR) {
        error = errno;
        break;
      }
    }
  }
  ::close(fd);
  if (error != 0) return absl::FailedPreconditionError(absl::StrCat("cannot be read: ", std::strerror(error)));
  if (!S_ISREG(st.st_mode)) return absl::FailedPreconditionError("not a regular file");
  if ((st.st_mode & 022) != 0) return absl::FailedPreconditionError("writable by group or others (expected mode 0600)");
  // Another user's file put in its place (by whoever can write the folder) would set the floor it likes
  // (review 115): the process's own files only.
  if (st.st_uid != ::geteuid()) {
    return absl::FailedPreconditionError(absl::StrCat("owned by uid ", st.st_uid, ", not by this process's user (uid ",
                                                      ::geteuid(), ")"));
  }
  if (text.size() > max_bytes || st.st_size > static_cast<off_t>(max_bytes)) return absl::FailedPreconditionError("corrupt: too large");
  return std::optional<std::string>(std::move(text));
}

absl::Status WritePrivateFileAtomically(const std::string& path, const std::string& text, const std::string& what) {
  const std::string temp = absl::StrCat(path, ".tmp.", ::getpid());
  ::unlink(temp.c_str());  // a leftover of a crash of this process id
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return absl::InternalError(absl::StrCat(what, " ", path, ": cannot create ", temp, ": ", std::strerror(errno)));
  int error = 0;
  for (size_t written = 0; written < text.size() && error == 0;) {
    const ssize_t n = ::write(fd, text.data() + written, text.size() - written);
    if (n > 0) written += static_cast<size_t>(n);
    else if (errno != EINTR) error = errno;
  }
  if (error == 0 && (::fchmod(fd, 0600) != 0 || ::fsync(fd) != 0)) error = errno;
  if (::close(fd) != 0 && error == 0) error = errno;
  if (error == 0 && ::rename(temp.c_str(), path.c_str()) != 0) error = errno;
  if (error != 0) {
    ::unlink(temp.c_str());
    return absl::InternalError(absl::StrCat(what, " ", path, ": cannot write: ", std::strerror(error)));
  }
  const std::string folder = FolderOf(path);
  const int dir = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0 || ::fsync(dir) != 0) error = errno;
  if (dir >= 0) ::close(dir);
  if (error != 0) {
    return absl::InternalError(absl::StrCat(what, " ", path, ": cannot sync its folder ", folder, ": ", std::strerror(error)));
  }
  return absl::OkStatus();
}

}  // namespace osh::sandbox_client
