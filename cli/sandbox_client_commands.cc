// policyctl fetch | watch | report: what a sandbox supervisor does, on the sandbox API (socket or
// --server), with its handle — built on the supervisor library (sandbox_client/), so they verify and
// report exactly as a supervisor linked with it does.
#include <fstream>
#include <iostream>

#include <google/protobuf/struct.pb.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/commands.h"
#include "sandbox_client/sandbox_client.h"
#include "trust/trust_store.h"

namespace osh::cli {
namespace {

namespace driver_v1 = openshell::policy::driver::v1;

// The flags every sandbox-side command shares: the handle, and what to verify against.
struct SandboxArgs {
  std::string handle_file;
  std::string trust_store;
  std::string sandbox_id, user_subject;
  std::vector<std::string> attributes;
};

void AddHandleFlags(CLI::App* cmd, SandboxArgs& args) {
  cmd->add_option("--handle-file", args.handle_file,
                  absl::StrCat("file whose first line is the sandbox handle (default: $", sandbox_client::kHandleVariable, ")"));
}

void AddVerifyFlags(CLI::App* cmd, SandboxArgs& args) {
  cmd->add_option("--trust-store", args.trust_store,
                  "verify the projection end to end against this trust store (the sandbox's own copy)");
  cmd->add_option("--sandbox-id", args.sandbox_id, "the sandbox's runtime context, which a bound projection must match");
  cmd->add_option("--user-subject", args.user_subject, "runtime context: user subject");
  cmd->add_option("--attr", args.attributes, "runtime context attribute key=value (repeatable)");
}

// The library client for `args`, or nullptr after printing why (exit 2).
std::unique_ptr<sandbox_client::SandboxClient> MakeClient(const Options& options, const SandboxArgs& args,
                                                          bool report = true) {
  sandbox_client::ClientOptions client;
  client.report = report;
  client.endpoint = EndpointFor(options, Api::kSandbox);
  client.call_timeout = std::chrono::seconds(options.timeout_s);
  // From a file or the environment, never the command line (issue 12: other local users read argv).
  auto handle = sandbox_client::ReadSandboxHandle(args.handle_file);
  if (!handle.ok()) {
    ReportLocalError(handle.status());
    return nullptr;
  }
  client.handle = *std::move(handle);
  if (!args.trust_store.empty()) {
    auto store = trust::TrustStore::Load(args.trust_store);
    if (!store.ok()) {
      ReportLocalError(store.status());
      return nullptr;
    }
    client.trust_store = std::make_shared<const trust::TrustStore>(*std::move(store));
  }
  if (!args.sandbox_id.empty() || !args.user_subject.empty() || !args.attributes.empty()) {
    driver_v1::RuntimeContext context;
    context.set_sandbox_id(args.sandbox_id);
    context.set_user_subject(args.user_subject);
    if (auto parsed = ParsePairs(args.attributes, "--attr", context.mutable_attributes()); !parsed.ok()) {
      ReportLocalError(parsed);
      return nullptr;
    }
    client.context = std::move(context);
  } else {
    // A viewer without the sandbox's context: a context-bound projection is shown with its binding unchecked
    // (fetch says so with --trust-store). A supervisor on the library refuses it instead.
    client.allow_unchecked_context = true;
  }
  auto connected = sandbox_client::SandboxClient::Connect(std::move(client));
  if (!connected.ok()) {
    ReportLocalError(connected.status());
    return nullptr;
  }
  return *std::move(connected);
}

// A refusal by the gateway exits 1 (2 when it could not be reached); a failed verification exits 1.
int ReportStatus(const absl::Status& status) {
  return ReportError(status);
}

std::string Verification(const sandbox_client::VerifiedPolicy& verified, bool has_trust_store) {
  if (!has_trust_store) return "verification none (no --trust-store)";
  return absl::StrCat("verified by ", absl::StrJoin(verified.verified_key_ids, ", "));
}

}  // namespace

void AddSandboxClientCommands(CLI::App& app, const Options& options, int& exit_code) {
  // fetch
  {
    auto* cmd = app.add_subcommand(
        "fetch", "Fetch the admitted projection (protobuf JSON of openshell.policy.driver.v1.Projection); with "
                 "--trust-store, verify it as the sandbox would first (exit 1 if it does not pass)");
    auto args = std::make_shared<SandboxArgs>();
    auto out = std::make_shared<std::string>();
    AddHandleFlags(cmd, *args);
    AddVerifyFlags(cmd, *args);
    cmd->add_option("--out", *out, "write the projection to this file instead of standard output");
    cmd->callback([&options, &exit_code, args, out] {
      auto client = MakeClient(options, *args);
      if (!client) { exit_code = kExitUsage; return; }
      auto projection = client->FetchUnverified();
      if (!projection.ok()) { exit_code = ReportStatus(projection.status()); return; }
      if (auto verified = client->Verify(*projection); !verified.ok()) {
        std::cerr << "error: the projection does not pass verification: " << verified.status().message() << "\n";
        exit_code = kExitRefused;
        return;
      } else if (!args->trust_store.empty()) {
        std::cerr << Verification(*verified, true) << "\n";
        if (!projection->context_digest().empty() && args->sandbox_id.empty()) {
          std::cerr << "context binding not checked (no --sandbox-id/--user-subject)\n";
        }
      }
      const std::string json = ToJson(*projection, /*pretty=*/true);
      if (out->empty()) {
        std::cout << json << "\n";
      } else if (auto written = WriteFileAtomically(*out, json + "\n", 0644); !written.ok()) {
        exit_code = ReportLocalError(written);
        return;
      }
      exit_code = kExitOk;
    });
  }
  // watch
  {
    auto* cmd = app.add_subcommand(
        "watch", "Stream the admitted projection, then every newly admitted one, verifying each (reconnects "
                 "with back-off; ends when the handle is revoked)");
    auto args = std::make_shared<SandboxArgs>();
    auto count = std::make_shared<int>(0);
    auto report = std::make_shared<bool>(false);
    AddHandleFlags(cmd, *args);
    AddVerifyFlags(cmd, *args);
    cmd->add_option("--count", *count, "stop after this many verified projections (0: until the stream ends)");
    cmd->add_flag("--report", *report,
                  "report each projection as a supervisor does: LOADED when it passes verification, FAILED with "
                  "the reason when not");
    cmd->callback([&options, &exit_code, args, count, report] {
      auto client = MakeClient(options, *args, *report);
      if (!client) { exit_code = kExitUsage; return; }
      int seen = 0;
      auto* watching = client.get();
      const bool verified_by_keys = !args->trust_store.empty();
      const bool json = options.json();
      const absl::Status ended = client->Watch(
          [&](const sandbox_client::VerifiedPolicy& verified) {
            if (json) {
              std::cout << ToJson(verified.projection) << std::endl;
            } else {
              std::cout << "projection " << verified.digest() << " version " << verified.projection.policy_version()
                        << " (" << Verification(verified, verified_by_keys) << ")" << std::endl;
            }
            if (*count > 0 && ++seen >= *count) watching->Stop();
            return absl::OkStatus();
          },
          [&](const sandbox_client::WatchEvent& event) {
            if (event.kind == sandbox_client::WatchEvent::kRejected) {
              std::cerr << "rejected " << event.digest << ": " << event.detail << " (keeping the last good)" << std::endl;
            } else if (event.kind == sandbox_client::WatchEvent::kDisconnected) {
              std::cerr << "disconnected: " << event.detail << "; retrying in " << event.retry_in.count() << " ms"
                        << std::endl;
            } else if (event.kind == sandbox_client::WatchEvent::kReportFailed && *report) {
              std::cerr << "report for " << event.digest << " failed: " << event.detail << std::endl;
            } else if (event.kind == sandbox_client::WatchEvent::kExpired ||
                       event.kind == sandbox_client::WatchEvent::kRevoked) {
              std::cerr << "no longer in force " << event.digest << ": " << event.detail << std::endl;
            }
          });
      exit_code = ended.ok() ? kExitOk : ReportStatus(ended);
    });
  }
  // report
  {
    auto* cmd = app.add_subcommand("report", "Report whether the sandbox loaded a projection");
    auto args = std::make_shared<SandboxArgs>();
    auto digest = std::make_shared<std::string>();
    auto loaded = std::make_shared<bool>(false);
    auto failed = std::make_shared<std::string>();
    AddHandleFlags(cmd, *args);
    cmd->add_option("--digest", *digest, "policy digest the report is about")->required();
    auto* loaded_flag = cmd->add_flag("--loaded", *loaded, "the projection was loaded");
    auto* failed_opt = cmd->add_option("--failed", *failed, "the projection failed to load, with this message");
    loaded_flag->excludes(failed_opt);
    cmd->callback([&options, &exit_code, args, digest, loaded, failed, failed_opt] {
      if (!*loaded && (failed_opt->count() == 0 || failed->empty())) {
        exit_code = ReportLocalError(absl::InvalidArgumentError("report: one of --loaded or --failed MSG is required"));
        return;
      }
      auto client = MakeClient(options, *args);
      if (!client) { exit_code = kExitUsage; return; }
      if (auto reported = client->Report(*digest, *loaded ? "" : *failed); !reported.ok()) {
        exit_code = ReportStatus(reported);
        return;
      }
      if (options.json()) {
        google::protobuf::Struct doc;
        (*doc.mutable_fields())["reported"].set_bool_value(true);
        std::cout << ToJson(doc) << "\n";
      } else {
        std::cout << "reported " << (*loaded ? "loaded" : "failed") << " for " << *digest << "\n";
      }
      exit_code = kExitOk;
    });
  }
}

}  // namespace osh::cli
