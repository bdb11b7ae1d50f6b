// policyctl wait --sandbox ID [--loaded | --digest D] [--timeout 30s]: waits until the sandbox runs what
// it should: served the digest waited for (the one it should be served now, or D), reported LOADED for
// it, drift in_sync. Exit 0 loaded; 1 reported FAILED (its load error printed), the change was refused by
// the ceiling, or refused by the gateway (no such sandbox); 2 usage or connection; 3 the timeout passed.
// Polls GetSandbox (docs/policyctl.md, "wait").
#include <algorithm>
#include <iostream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cli/commands.h"
#include "common/errors.h"
#include "common/grpc_status.h"

namespace osh::cli {
namespace {

namespace v1 = openshell::policy::gateway::v1;

constexpr int kExitTimeout = 3;
constexpr absl::Duration kPollEvery = absl::Milliseconds(200);

// "30s", "500ms", "2m" (absl durations), or a number of seconds.
bool ParseWaitTimeout(const std::string& text, absl::Duration* out) {
  int64_t seconds = 0;
  if (absl::SimpleAtoi(text, &seconds)) {
    *out = absl::Seconds(seconds);
    return seconds >= 0;
  }
  return absl::ParseDuration(text, out) && *out >= absl::ZeroDuration();
}

std::string Short(const std::string& digest) { return digest.substr(0, 12); }

}  // namespace

void AddWaitCommand(CLI::App& app, const Options& options, int& exit_code) {
  auto* cmd = app.add_subcommand(
      "wait", "Wait until a sandbox reports LOADED for the digest it is served (exit 0), FAILED (1) or the timeout (3)");
  auto id = std::make_shared<std::string>();
  auto digest = std::make_shared<std::string>();
  auto timeout = std::make_shared<std::string>("30s");
  auto loaded = std::make_shared<bool>(false);
  cmd->add_option("--sandbox", *id, "sandbox id")->required();
  auto* loaded_flag = cmd->add_flag("--loaded", *loaded, "wait for the digest it is served now (the default)");
  cmd->add_option("--digest", *digest, "wait for this policy digest instead")->excludes(loaded_flag);
  cmd->add_option("--timeout", *timeout, "how long to wait: 30s, 500ms, 2m or seconds (default 30s)");
  cmd->callback([&options, &exit_code, id, digest, timeout] {
    absl::Duration limit;
    if (!ParseWaitTimeout(*timeout, &limit)) {
      exit_code = ReportLocalError(absl::InvalidArgumentError(absl::StrCat("--timeout ", *timeout, ": not a duration")));
      return;
    }
    auto stub = AdminStub(options);
    if (!stub) { exit_code = kExitUsage; return; }
    const absl::Time deadline = absl::Now() + limit;
    v1::GetSandboxRequest request;
    request.set_sandbox_id(*id);
    v1::SandboxInfo info;
    std::string last_error;  // the last call that failed for want of the gateway (it may be restarting)
    for (;;) {
      auto ctx = MakeContext(options);
      const grpc::Status status = stub->GetSandbox(ctx.get(), request, &info);
      if (status.ok()) {
        last_error.clear();
        // What should run: D, or else what the sandbox is served (in sync, that is the desired digest too).
        const std::string& want = digest->empty() ? info.policy_digest() : *digest;
        // Refused: the change waited for (the desired one, or for a third-party driver the one it offered)
        // will not run; the last good is still served and loaded. A refusal the driver's later answer
        // disproved is cleared by the gateway.
        const bool refused = digest->empty() && info.drift() == v1::DRIFT_REFUSED_BY_CEILING &&
                             (!info.desired_known() || info.desired_digest() != info.policy_digest());
        if (refused) {
          if (options.json()) std::cout << ToJson(info) << "\n";
          std::cerr << "error: sandbox " << *id << ": the change was refused by the ceiling, so it still runs "
                    << Short(info.policy_digest()) << ": " << info.drift_reason() << "\n";
          exit_code = kExitRefused;
          return;
        }
        // The default asks that nothing drifts (served the desired digest, reported it LOADED, nothing
        // pending, refused or failing); `--digest D` asks about D alone (served, reported LOADED).
        const bool loaded = digest->empty() ? info.drift() == v1::DRIFT_IN_SYNC
                                            : info.policy_digest() == want && info.reported_digest() == want &&
                                                  info.load_status() == v1::LOADED;
        if (loaded) {
          if (options.json()) std::cout << ToJson(info) << "\n";
          else std::cout << "sandbox " << *id << " loaded " << Short(want) << " (version " << info.policy_version() << ")\n";
          exit_code = kExitOk;
          return;
        }
        if (info.reported_digest() == want && info.load_status() == v1::FAILED) {
          if (options.json()) std::cout << ToJson(info) << "\n";
          std::cerr << "error: sandbox " << *id << " failed to load " << Short(want) << ": " << info.load_error() << "\n";
          exit_code = kExitRefused;
          return;
        }
      } else {
        const absl::Status error = common::FromGrpc(status);
        // The gateway answered (no such sandbox, ...): that is the answer. Unreachable: it may be restarting.
        if (error.code() != absl::StatusCode::kUnavailable || !common::ReasonOf(error).empty()) {
          exit_code = ReportError(error);
          return;
        }
        last_error = std::string(error.message());
      }
      if (absl::Now() >= deadline) break;
      absl::SleepFor(std::min(kPollEvery, deadline - absl::Now()));
    }
    if (options.json() && last_error.empty()) std::cout << ToJson(info) << "\n";
    std::cerr << "error: timed out after " << absl::FormatDuration(limit) << " waiting for sandbox " << *id
              << (last_error.empty() ? absl::StrCat(": ", info.drift_state(),
                                                    info.drift_reason().empty() ? "" : " (" + info.drift_reason() + ")")
                                     : absl::StrCat("; the gateway did not answer: ", last_error))
              << "\n";
    exit_code = kExitTimeout;
  });
}

}  // namespace osh::cli
