// policyctl: the operator and sandbox CLI of the policy gateway. See docs/policyctl.md.
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>

#include "cli/cli_common.h"
#include "sandbox_client/endpoint.h"
#include "cli/commands.h"

namespace {

// A socket policyctl uses when no flag or variable names one: the Quickstart's ./var/<name>; without one
// there, the packaged service's (the systemd unit's RuntimeDirectory) when it exists; else ./var/<name>,
// which the error then names.
std::string DefaultSocket(const std::string& name) {
  const std::string local = "./var/" + name;
  const std::string packaged = "/run/openshell-policy-gateway/" + name;
  std::error_code ec;
  if (!std::filesystem::exists(local, ec) && std::filesystem::exists(packaged, ec)) return packaged;
  return local;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace osh::cli;
  osh::sandbox_client::QuietGrpcLogs();  // errors are reported as statuses with hints, not gRPC core's log lines
  CLI::App app{"policyctl: operate the policy gateway (admin socket) and act as a sandbox (sandbox socket).\n"
               "Exit status: 0 success, 1 refused by the gateway, 2 usage or I/O error."};
  app.name("policyctl");  // the usage line names the program also when help is printed before parsing
  app.set_version_flag("--version", OSH_VERSION);
  Options options;
  const char* admin_env = std::getenv("POLICY_GATEWAY_ADMIN_SOCKET");
  const char* sandbox_env = std::getenv("POLICY_GATEWAY_SANDBOX_SOCKET");
  options.admin_socket = admin_env ? admin_env : DefaultSocket("admin.sock");
  options.sandbox_socket = sandbox_env ? sandbox_env : DefaultSocket("sandbox.sock");
  app.add_option("-o,--output", options.output, "output format")->check(CLI::IsMember({"table", "json"}))->capture_default_str();
  app.add_option("--admin-socket", options.admin_socket, "admin socket (env POLICY_GATEWAY_ADMIN_SOCKET; default ./var/admin.sock, or the packaged service's "
                 "/run/openshell-policy-gateway/admin.sock when there is none in ./var)")->capture_default_str();
  app.add_option("--sandbox-socket", options.sandbox_socket, "sandbox socket (env POLICY_GATEWAY_SANDBOX_SOCKET; default ./var/sandbox.sock, or "
                 "/run/openshell-policy-gateway/sandbox.sock as for --admin-socket)")->capture_default_str();
  auto from_env = [](const char* name, std::string* out) {
    if (const char* value = std::getenv(name)) *out = value;
  };
  from_env("POLICYCTL_SERVER", &options.server);
  from_env("POLICYCTL_CA", &options.ca_file);
  from_env("POLICYCTL_CERT", &options.cert_file);
  from_env("POLICYCTL_KEY", &options.key_file);
  app.add_option("--server", options.server,
                 "host:port of the gateway over TCP instead of a socket: its admin_listen for admin commands, its "
                 "sandbox_listen for fetch/watch/report (env POLICYCTL_SERVER)");
  app.add_option("--ca", options.ca_file, "PEM CA file that issued the gateway's certificate: TLS (env POLICYCTL_CA)");
  app.add_option("--cert", options.cert_file, "PEM client certificate for mutual TLS (env POLICYCTL_CERT)");
  app.add_option("--key", options.key_file, "PEM private key of --cert (env POLICYCTL_KEY)");
  app.add_option("--timeout", options.timeout_s, "seconds to wait for a connection and for each call")->capture_default_str();
  app.require_subcommand(1);
  app.fallthrough();  // global options may follow the subcommand

  int exit_code = kExitUsage;
  AddSandboxCommands(app, options, exit_code);
  AddWaitCommand(app, options, exit_code);
  AddSandboxEventsCommand(app, options, exit_code);
  AddSandboxClientCommands(app, options, exit_code);
  AddPolicyCommands(app, options, exit_code);
  AddPolicyFileCommands(app.get_subcommand("policy"), options, exit_code);
  AddDecideCommand(app, options, exit_code);
  AddDiffCommand(app, options, exit_code);
  AddCeilingCommands(app, options, exit_code);
  AddProfileCommands(app, options, exit_code);
  AddInterceptorCommands(app, options, exit_code);
  AddTrustCommands(app, options, exit_code);
  AddAuditCommands(app, options, exit_code);
  AddHealthCommand(app, options, exit_code);
  AddLogCommands(app, options, exit_code);
  if (argc == 1) {  // no command: the list of commands, not only "a subcommand is required"
    std::cerr << app.help();
    return kExitUsage;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    const int code = app.exit(error);
    return code == 0 ? kExitOk : kExitUsage;
  }
  return exit_code;
}
