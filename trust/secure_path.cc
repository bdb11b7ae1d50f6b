#include "trust/secure_path.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
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
  return ResolveNoOneElseCanWrite(path, what).status();
}

absl::StatusOr<std::string> ReadFileNoOneElseCanWrite(const std::string& path, const std::string& what) {
  absl::StatusOr<std::string> resolved = ResolveNoOneElseCanWrite(path, what);
  if (!resolved.ok()) return resolved.status();
  struct stat st;
  if (::stat(resolved->c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return absl::PermissionDeniedError(absl::StrCat(what, " ", path, ": not a regular file"));
  }
  return policy::ReadFileToString(*resolved);
}

namespace {

std::atomic<int64_t> accepted_folder_group{-1};  // AcceptGroupWritableFolders; -1: none

// `start` and every folder above it: owned by root or this user, writable by no one else (a root-owned
// sticky folder aside, and a folder of the accepted group: a Kubernetes pod's volumes are its fsGroup's,
// group-writable — review 110: the shipped StatefulSet's state folder was refused, the pod never started).
absl::Status CheckChain(const std::filesystem::path& start, const std::string& path, const std::string& what) {
  const uid_t me = ::geteuid();
  const int64_t accepted_group = accepted_folder_group.load();
  for (std::filesystem::path at = start;; at = at.parent_path()) {
    struct stat st;
    if (::stat(at.c_str(), &st) != 0) {
      return absl::PermissionDeniedError(absl::StrCat(what, " ", path, ": cannot stat ", at.string()));
    }
    const bool root_sticky_folder = S_ISDIR(st.st_mode) && (st.st_mode & S_ISVTX) != 0 && st.st_uid == 0;
    if (st.st_uid != 0 && st.st_uid != me) {
      return absl::PermissionDeniedError(absl::StrCat(what, " ", path, ": ", at.string(), " is owned by uid ",
                                                      st.st_uid, ", neither root nor this user (uid ", me, ")"));
    }
    const bool accepted_group_folder = S_ISDIR(st.st_mode) && accepted_group >= 0 &&
                                       static_cast<int64_t>(st.st_gid) == accepted_group;
    const bool others_write = (st.st_mode & S_IWOTH) != 0 || ((st.st_mode & S_IWGRP) != 0 && !accepted_group_folder);
    if (others_write && !root_sticky_folder) {
      return absl::PermissionDeniedError(absl::StrCat(what, " ", path, ": ", at.string(),
                                                      " is writable by group or others (chmod go-w ", at.string(), ")"));
    }
    if (at == at.parent_path()) return absl::OkStatus();  // reached /
  }
}

}  // namespace

bool ProcessHasGroup(gid_t group) {
  if (group == ::getegid()) return true;
  std::vector<gid_t> groups(static_cast<size_t>(std::max(0, ::getgroups(0, nullptr))));
  const int n = groups.empty() ? 0 : ::getgroups(static_cast<int>(groups.size()), groups.data());
  groups.resize(static_cast<size_t>(std::max(0, n)));
  return std::find(groups.begin(), groups.end(), group) != groups.end();
}

void AcceptGroupWritableFolders(std::optional<gid_t> group) {
  accepted_folder_group = group ? static_cast<int64_t>(*group) : -1;
}

absl::StatusOr<std::string> ResolveNoOneElseCanWrite(const std::string& path, const std::string& what) {
  // Resolved one component at a time: the folder each symlink sits in is checked as well as the file's own
  // folders, since whoever may write that folder may point the link anywhere (review 107).
  std::error_code error;
  const std::filesystem::path absolute = std::filesystem::absolute(path, error);
  if (error) return absl::NotFoundError(absl::StrCat(what, " ", path, ": ", error.message()));
  std::vector<std::string> pending;  // components still to resolve, the next one last
  for (const auto& part : absolute.relative_path()) pending.push_back(part.string());
  std::reverse(pending.begin(), pending.end());
  std::filesystem::path resolved = "/";
  std::vector<std::filesystem::path> link_folders;
  int links = 0;
  while (!pending.empty()) {
    const std::string part = std::move(pending.back());
    pending.pop_back();
    if (part.empty() || part == ".") continue;
    if (part == "..") {
      resolved = resolved.parent_path();
      continue;
    }
    const std::filesystem::path candidate = resolved / part;
    struct stat st;
    if (::lstat(candidate.c_str(), &st) != 0) {
      const int err = errno;
      const std::string message = absl::StrCat(what, " ", path, ": ", candidate.string(), ": ", std::strerror(err));
      return err == ENOENT || err == ENOTDIR ? absl::NotFoundError(message) : absl::PermissionDeniedError(message);
    }
    if (!S_ISLNK(st.st_mode)) {
      resolved = candidate;
      continue;
    }
    if (++links > 40) return absl::PermissionDeniedError(absl::StrCat(what, " ", path, ": too many symbolic links"));
    link_folders.push_back(resolved);
    const std::filesystem::path target = std::filesystem::read_symlink(candidate, error);
    if (error) return absl::PermissionDeniedError(absl::StrCat(what, " ", path, ": ", candidate.string(), ": ", error.message()));
    if (target.is_absolute()) resolved = "/";
    std::vector<std::string> parts;
    for (const auto& p : target.relative_path()) parts.push_back(p.string());
    for (auto it = parts.rbegin(); it != parts.rend(); ++it) pending.push_back(*it);
  }
  for (const auto& folder : link_folders) {
    if (absl::Status safe = CheckChain(folder, path, what); !safe.ok()) return safe;
  }
  if (absl::Status safe = CheckChain(resolved, path, what); !safe.ok()) return safe;
  return resolved.string();
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
  if ((st.st_mode & S_IRGRP) != 0 && !ProcessHasGroup(st.st_gid)) {
    return refuse(absl::StrCat("readable by group ", st.st_gid, ", which this process is not in"), "chmod g-r");
  }
  absl::StatusOr<std::string> checked = ResolveNoOneElseCanWrite(path, what);
  if (!checked.ok()) return checked.status();
  return policy::ReadFileToString(*checked);  // the file checked, not the path resolved again
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
