// Who can change a file the gateway trusts, checked like OpenSSH's StrictModes: the file and every
// folder above it must be owned by root or by this process's user and not writable by group or others —
// except a root-owned folder with the sticky bit (such as /tmp), where others cannot replace our entries.
// Symlinks are resolved first. Pure function of the filesystem; thread-safe.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace osh::trust {

// OK, or PERMISSION_DENIED "<what> <path>: <component> is …" naming the first component at fault and
// the fix. NOT_FOUND when the path does not exist.
absl::Status CheckNoOneElseCanWrite(const std::string& path, const std::string& what);

// Creates `dir` (and parents) if missing, with mode 0700 for what it creates. FAILED_PRECONDITION naming
// the folder that cannot be created.
absl::Status EnsurePrivateDir(const std::string& dir);

}  // namespace osh::trust
