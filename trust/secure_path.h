// Who can change a file the gateway trusts, checked like OpenSSH's StrictModes: the file and every
// folder above it must be owned by root or by this process's user and not writable by group or others —
// except a root-owned folder with the sticky bit (such as /tmp), where others cannot replace our entries,
// and a folder writable by the group AcceptGroupWritableFolders names (a Kubernetes pod's fsGroup).
// Symlinks are resolved first. A function of the filesystem and of AcceptGroupWritableFolders (set once at
// start); thread-safe.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace osh::trust {

// Whether this process runs with `group` (its effective group or a supplementary one).
bool ProcessHasGroup(gid_t group);

// A group whose write permission on a folder counts as this process's own: a Kubernetes pod's fsGroup
// (Kubernetes makes its volumes' folders group-writable). Folders only, never files. The caller checks
// that the process runs with the group (ProcessHasGroup) and that it is not root's (the gateway's
// `fs_group`). Set once at start-up, before any check; none by default (nullopt).
void AcceptGroupWritableFolders(std::optional<gid_t> group);

// OK, or PERMISSION_DENIED "<what> <path>: <component> is …" naming the first component at fault and
// the fix. NOT_FOUND when the path does not exist.
absl::Status CheckNoOneElseCanWrite(const std::string& path, const std::string& what);
// The same check, answering the path it checked (symlinks resolved): read that one, not `path` again, so a
// link swapped after the check is not followed (review 106).
absl::StatusOr<std::string> ResolveNoOneElseCanWrite(const std::string& path, const std::string& what);

// Reads a file that decides trust (the trust store): a regular file once symlinks are resolved (a
// Kubernetes Secret or ConfigMap volume holds links) for which CheckNoOneElseCanWrite holds, read through
// the path checked. NOT_FOUND when missing; PERMISSION_DENIED naming what is wrong.
absl::StatusOr<std::string> ReadFileNoOneElseCanWrite(const std::string& path, const std::string& what);

// Reads a private key file the way OpenSSH reads one: it must be a regular file (symlinks resolved) that
// no one else can read or replace — no permission bits for others, none for the group but read, and group
// read only when the file's group is one this process is in (a Kubernetes Secret mounted 0440 under the
// pod's fsGroup) — and CheckNoOneElseCanWrite must hold. NOT_FOUND when missing; PERMISSION_DENIED naming
// the file, what is wrong and the chmod that fixes it.
absl::StatusOr<std::string> ReadPrivateKeyFile(const std::string& path, const std::string& what);

// Creates `dir` (and parents) if missing, with mode 0700 for what it creates. FAILED_PRECONDITION naming
// the folder that cannot be created.
absl::Status EnsurePrivateDir(const std::string& dir);

}  // namespace osh::trust
