#include "policy/policy_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "policy/validation.h"
#include "policy/yaml_message.h"

namespace osh::policy {
namespace {

const std::map<std::string, std::string>& FileAliases() {
  static const auto* aliases = new std::map<std::string, std::string>{{"filesystem_policy", "filesystem"}};
  return *aliases;
}

// At most this many errors from one lint run (each field reports its first).
constexpr size_t kMaxLintErrors = 1000;

// "<source>:<line>: invalid_policy: <path>: <message>", with the file's spelling of the top-level key.
std::string DescribeViolation(const Violation& violation, const LineMap& lines, absl::string_view source) {
  std::string path = violation.path;
  if (path.rfind("filesystem", 0) == 0) path.replace(0, std::strlen("filesystem"), "filesystem_policy");
  const int line = LineOf(lines, path);  // the line map has the file's keys
  return absl::StrCat(source, line > 0 ? absl::StrCat(":", line) : "", ": invalid_policy: ", path, ": ",
                      violation.message);
}

}  // namespace

absl::StatusOr<openshell::sandbox::v1::SandboxPolicy> ParsePolicyText(absl::string_view text,
                                                                      absl::string_view source) {
  openshell::sandbox::v1::SandboxPolicy policy;
  LineMap lines;
  YamlReadOptions options;
  options.top_level_aliases = FileAliases();
  if (auto status = ReadYamlMessage(text, source, options, &policy, &lines); !status.ok()) return status;
  if (auto violation = FindViolation(policy)) {
    return absl::InvalidArgumentError(DescribeViolation(*violation, lines, source));
  }
  return policy;
}

std::vector<std::string> LintPolicyText(absl::string_view text, absl::string_view source) {
  openshell::sandbox::v1::SandboxPolicy policy;
  LineMap lines;
  YamlReadOptions options;
  options.top_level_aliases = FileAliases();
  if (auto status = ReadYamlMessage(text, source, options, &policy, &lines); !status.ok()) {
    return {std::string(status.message())};
  }
  std::vector<std::string> errors;
  for (const Violation& violation : FindViolations(policy, kMaxLintErrors)) {
    errors.push_back(DescribeViolation(violation, lines, source));
  }
  return errors;
}

absl::StatusOr<std::string> FormatPolicyText(absl::string_view text, absl::string_view source) {
  openshell::sandbox::v1::SandboxPolicy policy;
  LineMap lines;
  YamlReadOptions options;
  options.top_level_aliases = FileAliases();
  if (auto status = ReadYamlMessage(text, source, options, &policy, &lines); !status.ok()) return status;
  // The opening comment block: leading lines that are comments or blank, less trailing blank ones.
  std::string header;
  size_t kept = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    const absl::string_view stripped = absl::StripLeadingAsciiWhitespace(line);
    if (!stripped.empty() && stripped.front() != '#') break;
    absl::StrAppend(&header, absl::StripTrailingAsciiWhitespace(line), "\n");
    if (!stripped.empty()) kept = header.size();
  }
  header.resize(kept);
  return absl::StrCat(header, PolicyToYaml(policy));
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

namespace {

absl::Status PutFileAtomically(const std::string& path, const std::string& text, unsigned mode, bool replace) {
  // A name of its own each time (mkostemp: O_EXCL, 0600 until the fchmod below): a temporary file a crash
  // left behind, or one of another thread, never blocks the write (a name from the pid alone was taken
  // again by a restarted process with the same pid, PID 1 in a container).
  std::string temp = absl::StrCat(path, ".tmp.XXXXXX");
  const int fd = ::mkostemp(temp.data(), O_CLOEXEC);
  if (fd < 0) return absl::InternalError(absl::StrCat(path, ": cannot create ", temp, ": ", std::strerror(errno)));
  int error = 0;
  for (size_t written = 0; written < text.size() && error == 0;) {
    const ssize_t n = ::write(fd, text.data() + written, text.size() - written);
    if (n > 0) written += static_cast<size_t>(n);
    else if (errno != EINTR) error = errno;
  }
  if (error == 0 && (::fchmod(fd, mode) != 0 || ::fsync(fd) != 0)) error = errno;
  ::close(fd);
  if (error == 0 && replace && ::rename(temp.c_str(), path.c_str()) != 0) error = errno;
  if (error == 0 && !replace && ::link(temp.c_str(), path.c_str()) != 0) error = errno;
  if (error != 0 || !replace) ::unlink(temp.c_str());
  if (error == 0) {
    // The rename (or link) is durable once the folder is: without this a crash can bring the old file back.
    const std::string folder = std::filesystem::path(path).has_parent_path() ? std::filesystem::path(path).parent_path().string() : ".";
    const int dir = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0 || ::fsync(dir) != 0) error = errno;
    if (dir >= 0) ::close(dir);
    if (error != 0) {
      // A new file (a key) is taken back, so that "nothing written" holds and the command can be run again.
      if (!replace) ::unlink(path.c_str());
      return absl::InternalError(absl::StrCat(path, ": written, but its folder cannot be flushed: ", std::strerror(error)));
    }
  }
  if (error == EEXIST && !replace) return absl::AlreadyExistsError(absl::StrCat(path, ": already exists (not replaced)"));
  if (error != 0) return absl::InternalError(absl::StrCat(path, ": cannot write: ", std::strerror(error)));
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteFileAtomically(const std::string& path, const std::string& text, unsigned mode) {
  return PutFileAtomically(path, text, mode, /*replace=*/true);
}

absl::Status CreateFileAtomically(const std::string& path, const std::string& text, unsigned mode) {
  return PutFileAtomically(path, text, mode, /*replace=*/false);
}

}  // namespace osh::policy
