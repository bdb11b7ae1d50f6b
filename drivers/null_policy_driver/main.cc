// null-policy-driver: the minimal conforming PolicyDriver. One policy file for every context, bound to
// the context, signed when given a key. See docs/driver-walkthrough.md.
#include <iostream>

#include <CLI/CLI.hpp>

#include "drivers/driver_kit/driver_service.h"
#include "policy/policy_file.h"

int main(int argc, char** argv) {
  osh::driver_kit::BlockStopSignals();
  CLI::App app{"null-policy-driver: serves one policy file to every sandbox context over the PolicyDriver contract"};
  app.set_version_flag("--version", OSH_VERSION);
  std::string socket, socket_group, policy_path, key_path, key_id, handles_file;
  uint64_t version = 1;
  int64_t expires_in = 0;
  bool no_context_binding = false;
  app.add_option("--socket", socket, "Unix socket to serve on (created 0600)")->required();
  app.add_option("--socket-group", socket_group,
                 "group (name or gid) whose members may connect: the socket is 0660 for it instead of 0600 (a gateway "
                 "running as another user in that group)");
  app.add_option("--policy", policy_path, "policy file (YAML or JSON) served to every context")->required();
  app.add_option("--key", key_path, "PEM private key to sign projections with (from policyctl keygen)");
  app.add_option("--key-id", key_id, "trust-store key id of --key");
  app.add_option("--policy-version", version, "policy_version stamped on projections (0: unversioned)")->capture_default_str();
  app.add_option("--expires-in", expires_in, "seconds until each projection expires (0: never)")->capture_default_str();
  app.add_flag("--no-context-binding", no_context_binding, "leave context_digest empty");
  app.add_option("--handles-file", handles_file,
                 "keep the live handle table in this file (rewritten on each change, read back at start)");
  bool handle_per_acquire = false, ignore_keys = false;
  app.add_flag("--handle-per-acquire", handle_per_acquire,
               "a new handle on every AcquireHandle (as SPEC allows), except for a repeated idempotency key");
  app.add_flag("--ignore-idempotency-key", ignore_keys, "ignore AcquireHandle's idempotency_key (for tests)");
  CLI11_PARSE(app, argc, argv);
  if (key_path.empty() != key_id.empty()) {
    std::cerr << "null-policy-driver: --key and --key-id go together\n";
    return 2;
  }

  auto policy = osh::policy::LoadPolicyFile(policy_path);
  if (!policy.ok()) {
    std::cerr << "null-policy-driver: " << policy.status().message() << "\n";
    return 2;
  }
  osh::driver_kit::DriverOptions options;
  options.driver_name = "null-policy-driver";
  options.driver_version = OSH_VERSION;
  options.signing_key_id = key_id;
  options.bind_context = !no_context_binding;
  options.versioned = version != 0;
  options.expires_in_s = expires_in;
  options.handles_file = handles_file;
  options.handle_per_acquire = handle_per_acquire;
  options.honour_idempotency_key = !ignore_keys;
  if (!key_path.empty()) {
    auto key = osh::driver_kit::LoadPrivateKey(key_path);
    if (!key.ok()) {
      std::cerr << "null-policy-driver: " << key.status().message() << "\n";
      return 2;
    }
    options.signing_key = *std::move(key);
  }
  osh::driver_kit::SourcedPolicy sourced{*policy, version, {{"driver", "null-policy-driver"}, {"policy_file", policy_path}}};
  osh::driver_kit::DriverService service(std::move(options),
                                         [sourced](const auto&) -> absl::StatusOr<osh::driver_kit::SourcedPolicy> { return sourced; });
  auto server = osh::driver_kit::ServeOnUnixSocket(socket, &service, socket_group);
  if (!server.ok()) {
    std::cerr << "null-policy-driver: " << server.status().message() << "\n";
    return 1;
  }
  std::cerr << "null-policy-driver: serving " << policy_path << " on " << socket
            << (key_path.empty() ? " (unsigned)" : " (signed as " + key_id + ")") << std::endl;
  osh::driver_kit::RunUntilStopped(server->get(), "null-policy-driver");
  return 0;
}
