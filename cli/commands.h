// policyctl's command groups. Each Add* registers subcommands on `app`; a subcommand's callback sets
// `exit_code`. `options` is filled by the global flags before any callback runs.
#pragma once

#include <CLI/CLI.hpp>

#include "cli/cli_common.h"

namespace osh::cli {

void AddSandboxCommands(CLI::App& app, const Options& options, int& exit_code);  // admit delete get list refresh status
void AddSandboxClientCommands(CLI::App& app, const Options& options, int& exit_code);  // fetch watch report
void AddTrustCommands(CLI::App& app, const Options& options, int& exit_code);    // keygen sign verify trust reload
void AddAuditCommands(CLI::App& app, const Options& options, int& exit_code);    // audit export|verify|head|tail
void AddAuditTail(CLI::App& audit, const Options& options, int& exit_code);      // audit tail, on `audit`
void AddWaitCommand(CLI::App& app, const Options& options, int& exit_code);      // wait (a sandbox's load report)
void AddSandboxEventsCommand(CLI::App& app, const Options& options, int& exit_code);  // events (WatchSandboxes)
void AddDecideCommand(CLI::App& app, const Options& options, int& exit_code);   // decide (egress decisions)

// decide --replay (replay_command.cc): the intents of `replay_file` against `policy_file` or the admitted
// `sandbox`, and against `against_file` when given. Exit 0, or 1 when against two some decision changes.
struct ReplayArgs {
  std::string replay_file, policy_file, sandbox, against_file;
};
int RunDecideReplay(const Options& options, const ReplayArgs& args);
void AddDiffCommand(CLI::App& app, const Options& options, int& exit_code);     // diff (ExplainChange)
void AddCeilingCommands(CLI::App& app, const Options& options, int& exit_code);  // ceiling sign|verify|check|set|get
void AddPolicyCommands(CLI::App& app, const Options& options, int& exit_code);   // policy set|update|delete|get|list
void AddProfileCommands(CLI::App& app, const Options& options, int& exit_code);  // profile set|get|list|delete
void AddInterceptorCommands(CLI::App& app, const Options& options, int& exit_code);  // interceptor records|forget
// policy lint|fmt|test (offline, policy files as code), on the `policy` subcommand.
void AddPolicyFileCommands(CLI::App* policy, const Options& options, int& exit_code);
// trust init|add-key|revoke|show, on the `trust` subcommand.
void AddTrustStoreFileCommands(CLI::App* trust, const Options& options, int& exit_code);
void AddHealthCommand(CLI::App& app, const Options& options, int& exit_code);    // health
// log keygen|checkpoint|consistency|verify-proof|monitor (the verifiable log's static files; offline).
void AddLogCommands(CLI::App& app, const Options& options, int& exit_code);

}  // namespace osh::cli
