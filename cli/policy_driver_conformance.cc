// policy-driver-conformance: exercises a running PolicyDriver against the contract (SPEC §3,
// docs/driver-contract.md) and prints one row per check. Exit 0 when nothing fails, 1 when a check
// fails, 2 on usage errors, an unreadable trust store, or no driver answering on the socket.
#include <iomanip>
#include <iostream>

#include <CLI/CLI.hpp>

#include "absl/strings/str_cat.h"
#include "cli/cli_common.h"
#include "drivers/remote_driver.h"
#include "drivers/conformance/conformance.h"

namespace {

using namespace osh::cli;
namespace conformance_v1 = openshell::policy::conformance::v1;

const char* OutcomeName(conformance_v1::Outcome outcome) {
  switch (outcome) {
    case conformance_v1::PASS: return "pass";
    case conformance_v1::FAIL: return "FAIL";
    case conformance_v1::SKIPPED: return "skip";
    case conformance_v1::WARN: return "WARN";
    default: return "?";
  }
}

void PrintTable(const conformance_v1::Report& report) {
  std::cout << "driver:  " << (report.driver_name().empty() ? "(unnamed)" : report.driver_name()) << " "
            << report.driver_version() << "\nsocket:  " << report.socket() << "\nsurface: " << report.surface()
            << "\ntrust:   " << (report.trust_store() ? "signatures checked against the trust store" : "not checked (no --trust-store)")
            << "\n\n";
  size_t width = 0;
  for (const auto& check : report.checks()) width = std::max(width, check.id().size());
  for (const auto& check : report.checks()) {
    std::cout << std::left << std::setw(6) << OutcomeName(check.outcome()) << std::setw(static_cast<int>(width + 2))
              << check.id() << check.detail() << "\n";
    if (check.outcome() == conformance_v1::FAIL || check.outcome() == conformance_v1::WARN) {
      std::cout << std::string(6 + width + 2, ' ') << (check.outcome() == conformance_v1::FAIL ? "requires: " : "expects:  ")
                << check.title() << " (docs/driver-contract.md " << check.spec() << ")\n";
    }
  }
  std::cout << "\n" << report.passed() << " passed, " << report.failed() << " failed, " << report.warnings()
            << " warnings, " << report.skipped() << " skipped: "
            << (report.failed() == 0 ? (report.warnings() == 0 ? "conformant" : "conformant, with warnings")
                                     : "NOT conformant")
            << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"policy-driver-conformance: exercise a running PolicyDriver against the driver contract (SPEC §3)\n"
               "and print one row per check (pass / FAIL / WARN / skip, with the reason). WARN marks what the contract\n"
               "allows but a gateway pays for: a `features` claim not honoured, an optional behaviour missing.\n"
               "Exit status: 0 nothing failed (warnings allowed), 1 a check failed, 2 usage error or no driver on the socket."};
  app.set_version_flag("--version", OSH_VERSION);
  osh::conformance::ConformanceOptions options;
  std::string output = "table", trust_store_path;
  std::vector<std::string> attributes;
  app.add_option("--socket", options.socket, "the driver's Unix socket")->required();
  app.add_option("--trust-store", trust_store_path,
                 "verify signatures (and context binding, if required) against this trust store");
  std::string socket_owner;
  app.add_option("--socket-owner", socket_owner,
                 "user (name or uid) who may own the socket besides root and you (as the gateway's driver_socket_owner)");
  app.add_option("--surface", options.surface, "the policy surface to ask for")->capture_default_str();
  app.add_option("--sandbox-id", *options.context.mutable_sandbox_id(),
                 "sandbox id of the test context (default: a fresh random one)");
  options.context.set_user_subject("conformance@example.com");
  app.add_option("--subject", *options.context.mutable_user_subject(), "user subject of the test context (one the driver serves)")
      ->capture_default_str();
  app.add_option("--attr", attributes, "attribute key=value of the test context (repeatable)");
  app.add_option("--clients", options.clients, "concurrent clients, each on its own connection")->capture_default_str()
      ->check(CLI::Range(1, 64));
  app.add_option("--rounds", options.rounds, "acquire/get/release rounds per client")->capture_default_str()
      ->check(CLI::Range(1, 10000));
  app.add_option("--call-timeout-ms", options.call_timeout_ms, "deadline of each call")->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--connect-timeout-ms", options.connect_timeout_ms, "how long to wait for the driver to answer")
      ->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--clock-skew-s", options.clock_skew_s, "tolerance for issued/expiry times and key windows")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  app.add_option("--restart-cmd", options.restart_command,
                 "shell command that restarts the driver; then check that a handle acquired before still serves");
  app.add_option("-o,--output", output, "output format")->check(CLI::IsMember({"table", "json"}))->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    return app.exit(error) == 0 ? kExitOk : kExitUsage;
  }

  if (auto status = ParsePairs(attributes, "--attr", options.context.mutable_attributes()); !status.ok()) {
    return ReportLocalError(status);
  }
  if (!socket_owner.empty()) {
    auto uid = osh::drivers::ResolveUser(socket_owner);
    if (!uid.ok()) return ReportLocalError(absl::InvalidArgumentError(absl::StrCat("--socket-owner: ", uid.status().message())));
    options.socket_owner = *uid;
  }
  if (!trust_store_path.empty()) {
    auto store = osh::trust::TrustStore::Load(trust_store_path);
    if (!store.ok()) return ReportLocalError(store.status());
    options.trust_store = std::make_shared<const osh::trust::TrustStore>(*std::move(store));
  }
  auto report = osh::conformance::RunConformance(options);
  if (!report.ok()) return ReportLocalError(report.status());
  if (output == "json") std::cout << ToJson(*report) << "\n";
  else PrintTable(*report);
  return report->failed() == 0 ? kExitOk : kExitRefused;
}
