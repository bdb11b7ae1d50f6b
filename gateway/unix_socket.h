// Unix socket paths for servers and clients. Pure POSIX; no gRPC.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace osh::gateway {

// Makes `path` ready for a server to bind: its folder exists (created 0700), is owned by this user and
// is not accessible to group or others; a stale socket file is removed only when nothing listens on it.
// FAILED_PRECONDITION naming the path otherwise (a live listener, a non-socket file, a loose folder).
absl::Status PrepareServerSocketPath(const std::string& path);

// Creates `dir` (and parents) if missing, with mode 0700 for what it creates.
absl::Status EnsurePrivateDir(const std::string& dir);

}  // namespace osh::gateway
