#include "drivers/unix_server.h"

#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "trust/secure_path.h"

namespace osh::drivers {

absl::Status EnsureGroupEnterableDir(const std::string& dir, gid_t gid) {
  // Missing parents are made 0711: the group must pass through them to reach the socket.
  std::filesystem::path built;
  for (const auto& part : std::filesystem::absolute(dir).parent_path()) {
    built /= part;
    if (::mkdir(built.c_str(), 0711) != 0 && errno != EEXIST) {
      return absl::FailedPreconditionError(absl::StrCat("cannot create folder ", built.string(), ": ", std::strerror(errno)));
    }
  }
  if (::mkdir(dir.c_str(), 0710) != 0 && errno != EEXIST) {
    return absl::FailedPreconditionError(absl::StrCat("cannot create folder ", dir, ": ", std::strerror(errno)));
  }
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != ::geteuid()) {
    return absl::FailedPreconditionError(absl::StrCat("socket folder ", dir, " must be a folder owned by uid ", ::geteuid()));
  }
  if (::chown(dir.c_str(), static_cast<uid_t>(-1), gid) != 0 || ::chmod(dir.c_str(), 0710) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("socket folder ", dir, ": cannot give it to group ", gid, " with mode 0710: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::StatusOr<gid_t> ResolveGroup(const std::string& group) {
  uint32_t gid = 0;
  if (absl::SimpleAtoi(group, &gid)) return static_cast<gid_t>(gid);
  std::vector<char> buffer(16384);
  ::group entry{};
  ::group* found = nullptr;
  if (::getgrnam_r(group.c_str(), &entry, buffer.data(), buffer.size(), &found) != 0 || found == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("no group named '", group, "'"));
  }
  return found->gr_gid;
}

absl::Status PrepareServerSocketPath(const std::string& path, SocketFolder folder) {
  if (path.size() >= sizeof(sockaddr_un::sun_path)) {
    return absl::FailedPreconditionError(absl::StrCat("socket path too long (max ", sizeof(sockaddr_un::sun_path) - 1, "): ", path));
  }
  const std::string dir = std::filesystem::absolute(path).parent_path().string();
  if (folder == SocketFolder::kPrivate) {
    if (auto status = trust::EnsurePrivateDir(dir); !status.ok()) return status;
  }
  struct stat dir_st;
  if (::stat(dir.c_str(), &dir_st) != 0) return absl::FailedPreconditionError(absl::StrCat("cannot stat ", dir));
  if (folder == SocketFolder::kGroupEnterable &&
      (dir_st.st_uid != ::geteuid() || (dir_st.st_mode & 067) != 0 || (dir_st.st_mode & 0010) == 0)) {
    return absl::FailedPreconditionError(absl::StrCat("socket folder ", dir, " must be owned by uid ", ::geteuid(),
                                                      ", enterable by its group and closed to others (chmod 710 it)"));
  }
  if (folder == SocketFolder::kPrivate && (dir_st.st_uid != ::geteuid() || (dir_st.st_mode & 077) != 0)) {
    return absl::FailedPreconditionError(absl::StrCat("socket folder ", dir, " must be owned by uid ", ::geteuid(),
                                                      " and not accessible to group or others (chmod 700 it)"));
  }
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return absl::OkStatus();
  if (!S_ISSOCK(st.st_mode)) return absl::FailedPreconditionError(absl::StrCat(path, " exists and is not a socket"));
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  const int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  const int err = errno;
  ::close(fd);
  if (rc == 0) return absl::FailedPreconditionError(absl::StrCat("another process is listening on ", path));
  if (err != ECONNREFUSED) return absl::FailedPreconditionError(absl::StrCat("cannot probe ", path, ": ", std::strerror(err)));
  if (::unlink(path.c_str()) != 0) return absl::FailedPreconditionError(absl::StrCat("cannot remove stale ", path));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<grpc::Server>> StartUnixServer(const std::string& path, grpc::ServerBuilder& builder,
                                                             SocketFolder folder, std::optional<gid_t> group) {
  if (auto status = PrepareServerSocketPath(path, folder); !status.ok()) return status;
  const std::string absolute = std::filesystem::absolute(path).lexically_normal().string();
  builder.AddListeningPort(absl::StrCat("unix:", absolute), grpc::InsecureServerCredentials());
  const mode_t old_mask = ::umask(0177);  // the socket is created 0600
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ::umask(old_mask);
  if (server == nullptr) return absl::UnavailableError(absl::StrCat("cannot listen on ", absolute));
  // The socket just made (lchown: a link put in its place is not followed). Given to the group while 0600,
  // then opened to it; each step checked (review 109: the result was ignored).
  const auto refuse = [&](const std::string& step, int error) {
    server->Shutdown();
    return absl::FailedPreconditionError(absl::StrCat("cannot ", step, " ", absolute, ": ", std::strerror(error)));
  };
  if (group.has_value() && ::lchown(absolute.c_str(), static_cast<uid_t>(-1), *group) != 0) {
    const int error = errno;
    return refuse(absl::StrCat("give group ", *group, " the socket"), error);
  }
  // chmod follows links: the entry must still be a socket (not a link put in its place since).
  struct stat st {};
  if (::lstat(absolute.c_str(), &st) != 0) {
    const int error = errno;
    return refuse("find the socket at", error);
  }
  if (!S_ISSOCK(st.st_mode)) return refuse("find the socket at", EEXIST);
  if (::chmod(absolute.c_str(), group.has_value() ? 0660 : 0600) != 0) {
    const int error = errno;
    return refuse("set the mode of", error);
  }
  return server;
}

}  // namespace osh::drivers
