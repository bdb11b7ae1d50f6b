#include "policy/policy_file.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "policy/validation.h"
#include "policy/yaml_message.h"

namespace osh::policy {
namespace {

const std::map<std::string, std::string>& FileAliases() {
  static const auto* aliases = new std::map<std::string, std::string>{{"filesystem_policy", "filesystem"}};
  return *aliases;
}

}  // namespace

absl::StatusOr<openshell::sandbox::v1::SandboxPolicy> ParsePolicyText(absl::string_view text,
                                                                      absl::string_view source) {
  openshell::sandbox::v1::SandboxPolicy policy;
  LineMap lines;
  YamlReadOptions options{FileAliases()};
  if (auto status = ReadYamlMessage(text, source, options, &policy, &lines); !status.ok()) return status;
  if (auto violation = FindViolation(policy)) {
    std::string path = violation->path;
    // Report the file's spelling of the top-level key.
    if (path.rfind("filesystem", 0) == 0) path.replace(0, std::strlen("filesystem"), "filesystem_policy");
    const int line = LineOf(lines, violation->path);
    return absl::InvalidArgumentError(absl::StrCat(source, line > 0 ? absl::StrCat(":", line) : "",
                                                   ": invalid_policy: ", path, ": ", violation->message));
  }
  return policy;
}

absl::StatusOr<std::string> ReadFileToString(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    const std::string message = absl::StrCat(path, ": cannot read: ", std::strerror(err));
    if (err == ENOENT) return absl::NotFoundError(message);
    if (err == EACCES) return absl::PermissionDeniedError(message);
    return absl::InvalidArgumentError(message);
  }
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read error"));
  return buffer.str();
}

absl::StatusOr<openshell::sandbox::v1::SandboxPolicy> LoadPolicyFile(const std::string& path) {
  auto text = ReadFileToString(path);
  if (!text.ok()) return text.status();
  return ParsePolicyText(*text, path);
}

std::string PolicyToYaml(const openshell::sandbox::v1::SandboxPolicy& policy) {
  return WriteYamlMessage(policy, FileAliases());
}

openshell::sandbox::v1::SandboxPolicy RestrictiveDefaultPolicy() {
  openshell::sandbox::v1::SandboxPolicy policy;
  policy.set_version(1);
  auto* fs = policy.mutable_filesystem();
  fs->set_include_workdir(true);
  for (const char* p : {"/usr", "/lib", "/proc", "/dev/urandom", "/app", "/etc", "/var/log"}) fs->add_read_only(p);
  for (const char* p : {"/tmp", "/dev/null"}) fs->add_read_write(p);
  policy.mutable_landlock()->set_compatibility("best_effort");
  return policy;
}

}  // namespace osh::policy
