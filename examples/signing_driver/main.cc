// example-signing-driver: a third-party PolicyDriver an operator might run. It serves per-subject policy
// files from a folder (<subject>.yaml, falling back to default.yaml), binds each projection to the
// sandbox's runtime context, stamps policy_version from the folder's last change (see Version: any change
// an operator makes has a higher version), and signs with an Ed25519 key made by `policyctl keygen`.
// Walkthrough: docs/driver-walkthrough.md.
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <iostream>

#include <CLI/CLI.hpp>

#include "absl/strings/str_cat.h"
#include "drivers/driver_kit/driver_service.h"
#include "policy/policy_file.h"

namespace {

// Subjects become file names: anything but [A-Za-z0-9._@-] is refused, so no subject reaches outside
// the folder.
bool SafeSubject(const std::string& subject) {
  if (subject.empty() || subject[0] == '.') return false;
  for (char c : subject) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '@' || c == '-')) return false;
  }
  return true;
}

// The file that holds a subject's policy: <subject>.yaml, else default.yaml. PERMISSION_DENIED for a
// subject that cannot name a file or has neither.
absl::StatusOr<std::filesystem::path> PolicyFileFor(const std::filesystem::path& folder, const std::string& subject) {
  if (!SafeSubject(subject)) return absl::PermissionDeniedError(absl::StrCat("subject '", subject, "' is not served"));
  for (const auto& file : {folder / (subject + ".yaml"), folder / "default.yaml"}) {
    if (std::filesystem::exists(file)) return file;
  }
  return absl::PermissionDeniedError(absl::StrCat("no policy for subject '", subject, "' and no default.yaml"));
}

// policy_version: the latest inode change time (ctime) of the file served and of the folder, in
// nanoseconds. The change time, not the modification time: no one sets it back (`cp -p`, `rsync -a`, tar
// and `touch -d` keep or set an old mtime, and each moves the ctime to now). The folder's too: deleting a
// subject's file (back to an older default.yaml) or swapping a link changes the folder, not the file now
// served; and `--policies` itself when it is a link (swapped back to an older release's folder, its
// target's times are old, the link's are new). The version goes up with every change, as SPEC §2 requires
// (review 109: an mtime version went back, and the gateway refused the operator's change as a rollback) —
// unless the clock is set back. Any change in the folder raises every subject's version: their sandboxes
// get their policy again, re-signed.
absl::StatusOr<uint64_t> Version(const std::filesystem::path& folder, const std::filesystem::path& file) {
  uint64_t version = 0;
  for (const auto& [path, follow] : {std::pair{file, true}, std::pair{folder, true}, std::pair{folder, false}}) {
    struct stat st {};
    if ((follow ? ::stat(path.c_str(), &st) : ::lstat(path.c_str(), &st)) != 0) {
      return absl::NotFoundError(absl::StrCat(path.string(), ": gone"));
    }
    version = std::max<uint64_t>(version, static_cast<uint64_t>(st.st_ctim.tv_sec) * 1'000'000'000ULL +
                                    static_cast<uint64_t>(st.st_ctim.tv_nsec));
  }
  return version;
}

absl::StatusOr<osh::driver_kit::SourcedPolicy> Source(const std::filesystem::path& folder,
                                                      const openshell::policy::driver::v1::RuntimeContext& context) {
  auto file = PolicyFileFor(folder, context.user_subject());
  if (!file.ok()) return file.status();
  auto version = Version(folder, *file);  // before the read: a change meanwhile is served at a higher one
  if (!version.ok()) return version.status();
  auto policy = osh::policy::LoadPolicyFile(file->string());
  if (!policy.ok()) return absl::FailedPreconditionError(std::string(policy.status().message()));
  osh::driver_kit::SourcedPolicy sourced;
  sourced.policy = *std::move(policy);
  sourced.version = *version;
  sourced.audit_context = {{"driver", "example-signing-driver"}, {"policy_file", file->filename().string()}};
  return sourced;
}

}  // namespace

int main(int argc, char** argv) {
  osh::driver_kit::BlockStopSignals();
  CLI::App app{"example-signing-driver: per-subject policy files, context-bound, versioned, signed (Ed25519)"};
  app.set_version_flag("--version", OSH_VERSION);
  std::string socket, socket_group, folder, key_path, key_id;
  int64_t expires_in = 0;
  app.add_option("--socket", socket, "Unix socket to serve on (created 0600)")->required();
  app.add_option("--socket-group", socket_group,
                 "group (name or gid) whose members may connect: the socket is 0660 for it instead of 0600 (a gateway "
                 "running as another user in that group)");
  app.add_option("--policies", folder, "folder of <subject>.yaml files and default.yaml")->required()->check(CLI::ExistingDirectory);
  app.add_option("--key", key_path, "PEM private key from `policyctl keygen`")->required();
  app.add_option("--key-id", key_id, "the key's id in the gateway's trust store")->required();
  app.add_option("--expires-in", expires_in, "seconds until each projection expires (0: never)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  auto key = osh::driver_kit::LoadPrivateKey(key_path);
  if (!key.ok()) {
    std::cerr << "example-signing-driver: " << key.status().message() << "\n";
    return 2;
  }
  osh::driver_kit::DriverOptions options;
  options.driver_name = "example-signing-driver";
  options.driver_version = OSH_VERSION;
  options.signing_key = *std::move(key);
  options.signing_key_id = key_id;
  options.expires_in_s = expires_in;
  const std::filesystem::path policies(folder);
  osh::driver_kit::DriverService service(
      std::move(options), [policies](const auto& context) { return Source(policies, context); },
      [policies](const auto& context) { return PolicyFileFor(policies, context.user_subject()).status(); });
  auto server = osh::driver_kit::ServeOnUnixSocket(socket, &service, socket_group);
  if (!server.ok()) {
    std::cerr << "example-signing-driver: " << server.status().message() << "\n";
    return 1;
  }
  std::cerr << "example-signing-driver: serving " << folder << " on " << socket << ", signing as " << key_id << std::endl;
  osh::driver_kit::RunUntilStopped(server->get(), "example-signing-driver");
  return 0;
}
