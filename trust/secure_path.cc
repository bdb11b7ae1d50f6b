#include "trust/secure_path.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"

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
