#include "trust/secure_path.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <vector>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "policy/policy_file.h"

namespace osh::trust {

absl::Status CheckNoOneElseCanWrite(const std::string& path, const std::string& what) {
  std::error_code error;
  const std::filesystem::path resolved = std::filesystem::canonical(path, error);
  if (error) return absl::NotFoundError(absl::StrCat(what, " ", path, ": ", error.message()));
  const uid_t me = ::geteuid();
  for (std::filesystem::path at = resolved;; at = at.parent_path()) {
    struct stat st;
    if (::stat(at.c_str(), &st) != 0) {
      return absl::PermissionDeniedError(absl::StrCat(what, " ", path, ": cannot stat ", at.string()));
    }
    const bool root_sticky_folder = S_ISDIR(st.st_mode) && (st.st_mode & S_ISVTX) != 0 && st.st_uid == 0;
    if (st.st_uid != 0 && st.st_uid != me) {
      return absl::PermissionDeniedError(absl::StrCat(what, " ", path, ": ", at.string(), " is owned by uid ",
                                                      st.st_uid, ", neither root nor this user (uid ", me, ")"));
    }
    if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0 && !root_sticky_folder) {
      return absl::PermissionDeniedError(absl::StrCat(what, " ", path, ": ", at.string(),
                                                      " is writable by group or others (chmod go-w ", at.string(), ")"));
    }
    if (at == at.parent_path()) return absl::OkStatus();  // reached /
  }
}

absl::StatusOr<std::string> ReadPrivateKeyFile(const std::string& path, const std::string& what) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    const std::string message = absl::StrCat(what, " ", path, ": ", std::strerror(err));
    return err == ENOENT ? absl::NotFoundError(message) : absl::PermissionDeniedError(message);
  }
  if (!S_ISREG(st.st_mode)) return absl::PermissionDeniedError(absl::StrCat(what, " ", path, ": not a regular file"));
  const auto refuse = [&](absl::string_view why, absl::string_view fix) {
    return absl::PermissionDeniedError(absl::StrCat(what, " ", path, ": ", why, " (mode ",
                                                    absl::StrFormat("%04o", st.st_mode & 07777), "; ", fix, ")"));
  };
  if ((st.st_mode & S_IRWXO) != 0) return refuse("a private key must not be accessible to others", "chmod o-rwx");
  if ((st.st_mode & (S_IWGRP | S_IXGRP)) != 0) return refuse("a private key must not be writable by its group", "chmod g-wx");
  if ((st.st_mode & S_IRGRP) != 0 && st.st_gid != ::getegid()) {
    std::vector<gid_t> groups(static_cast<size_t>(std::max(0, ::getgroups(0, nullptr))));
    const int n = groups.empty() ? 0 : ::getgroups(static_cast<int>(groups.size()), groups.data());
    if (std::find(groups.begin(), groups.begin() + std::max(0, n), st.st_gid) == groups.begin() + std::max(0, n)) {
      return refuse(absl::StrCat("readable by group ", st.st_gid, ", which this process is not in"), "chmod g-r");
    }
  }
  if (absl::Status safe = CheckNoOneElseCanWrite(path, what); !safe.ok()) return safe;
  return policy::ReadFileToString(path);
}

absl::Status EnsurePrivateDir(const std::string& dir) {
  std::error_code error;
  const std::filesystem::path path = std::filesystem::absolute(dir, error);
  std::filesystem::path built;
  for (const auto& part : path) {
    built /= part;
    if (::mkdir(built.c_str(), 0700) != 0 && errno != EEXIST) {
      return absl::FailedPreconditionError(absl::StrCat("cannot create folder ", built.string(), ": ", std::strerror(errno)));
    }
  }
  return absl::OkStatus();
}

}  // namespace osh::trust
