// Policy files as operators write them (SCHEMA.md "Policy files"): YAML or JSON, top-level key
// `filesystem_policy` for the `filesystem` field, unknown keys refused with their line.
#pragma once

#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"
#include "openshell/sandbox/v1/sandbox.pb.h"

namespace osh::policy {

// Parses and validates a policy document. `source` names it in errors, which are INVALID_ARGUMENT of
// the form "<source>:<line>: <field path>: <what>" (validation errors: "... invalid_policy: ...").
absl::StatusOr<openshell::sandbox::v1::SandboxPolicy> ParsePolicyText(absl::string_view text,
                                                                      absl::string_view source);

// Reads and parses a file; an unreadable file is NOT_FOUND / PERMISSION_DENIED naming the path.
absl::StatusOr<openshell::sandbox::v1::SandboxPolicy> LoadPolicyFile(const std::string& path);

// The policy in the file format (YAML), so `policy get` output can be edited and set again.
std::string PolicyToYaml(const openshell::sandbox::v1::SandboxPolicy& policy);

// The restrictive default of SCHEMA.md (used by examples and tests).
openshell::sandbox::v1::SandboxPolicy RestrictiveDefaultPolicy();

// Reads a whole file into memory, with errors naming the path.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);

// Writes `text` to `path` with permission bits `mode`, atomically: a temporary file beside it, flushed
// to disk, then renamed over `path`. On error nothing is left behind and `path` is unchanged.
absl::Status WriteFileAtomically(const std::string& path, const std::string& text, unsigned mode);
// The same for a file that must not exist yet (keys): ALREADY_EXISTS, and nothing written, when `path`
// exists (the temporary file is linked into place, which never replaces a file).
absl::Status CreateFileAtomically(const std::string& path, const std::string& text, unsigned mode);

}  // namespace osh::policy
