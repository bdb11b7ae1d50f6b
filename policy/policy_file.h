// Policy files as operators write them (SCHEMA.md "Policy files"): YAML or JSON, top-level key
// `filesystem_policy` for the `filesystem` field, unknown keys refused with their line.
#pragma once

#include <string>
#include <vector>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"
#include "openshell/sandbox/v1/sandbox.pb.h"

namespace osh::policy {

// Parses and validates a policy document. `source` names it in errors, which are INVALID_ARGUMENT of
// the form "<source>:<line>: <field path>: <what>" (validation errors: "... invalid_policy: ...").
absl::StatusOr<openshell::sandbox::v1::SandboxPolicy> ParsePolicyText(absl::string_view text,
                                                                      absl::string_view source);

// Every error of a policy document, each "<source>:<line>: <what>" as ParsePolicyText words its first: a
// structural error (YAML syntax, an unknown key, a wrong type) stops the reading and is the only one;
// otherwise every broken validation rule (FindViolations), in the order of the rules. Empty: valid.
std::vector<std::string> LintPolicyText(absl::string_view text, absl::string_view source);

// The document in canonical form (PolicyToYaml: proto field order, sorted map keys, defaults omitted),
// after the comment block that opens it, which is kept verbatim (comments inside the document are not:
// the YAML parser does not keep them). Idempotent. Structural errors as ParsePolicyText; a document that
// reads but breaks validation rules is formatted all the same (lint says what is wrong).
absl::StatusOr<std::string> FormatPolicyText(absl::string_view text, absl::string_view source);

// Reads and parses a file; an unreadable file is NOT_FOUND / PERMISSION_DENIED naming the path.
absl::StatusOr<openshell::sandbox::v1::SandboxPolicy> LoadPolicyFile(const std::string& path);

// The policy in the file format (YAML), so `policy get` output can be edited and set again.
std::string PolicyToYaml(const openshell::sandbox::v1::SandboxPolicy& policy);

// The restrictive default of SCHEMA.md (used by examples and tests).
openshell::sandbox::v1::SandboxPolicy RestrictiveDefaultPolicy();

// Reads a whole file into memory, with errors naming the path.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);

// Writes `text` to `path` with permission bits `mode`, atomically: a temporary file beside it, flushed
// to disk, then renamed over `path`, and the folder flushed (the rename survives a crash). On error
// nothing is left behind and `path` is unchanged — but when only the last step fails (INTERNAL: the new
// file is in place, its folder not flushed).
absl::Status WriteFileAtomically(const std::string& path, const std::string& text, unsigned mode);
// The same for a file that must not exist yet (keys): ALREADY_EXISTS, and nothing written, when `path`
// exists (the temporary file is linked into place, which never replaces a file); when the folder cannot be
// flushed the new file is removed again (INTERNAL).
absl::Status CreateFileAtomically(const std::string& path, const std::string& text, unsigned mode);

}  // namespace osh::policy
