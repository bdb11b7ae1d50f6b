// Small private files the supervisor keeps beside its policy (the rollback state, the newest log
// checkpoint seen): read strictly, written so that a crash leaves the old content or the new. Stateless.
#pragma once

#include <cstddef>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace osh::sandbox_client {

// The file's content; nullopt when it does not exist (a first start). An error (message without the path)
// when it cannot be read, is not a regular file, is writable by group or others, is not owned by the
// process's effective user, or exceeds `max_bytes` — or when another user could remove it: its folder, or
// one above, is writable by group or others (not a root-owned sticky folder) or owned by neither root nor
// this user (trust::CheckNoOneElseCanWrite), or it does not exist: then PERMISSION_DENIED, the folder
// named (FAILED_PRECONDITION for the others).
absl::StatusOr<std::optional<std::string>> ReadPrivateFile(const std::string& path, size_t max_bytes);

// Replaces `path` with `text`: a 0600 temporary file in the same folder, fsync'd, renamed over it, and the
// folder fsync'd. INTERNAL "<what> <path>: ..." on failure (the old file stays).
absl::Status WritePrivateFileAtomically(const std::string& path, const std::string& text, const std::string& what);

}  // namespace osh::sandbox_client
