// policyctl interceptor records | seed | forget (admin socket): what the OpenShell interceptor knows of each
// OpenShell sandbox — the policy and providers merges and attaches are composed from, and provider-profile
// changes are checked against (docs/openshell-interceptor.md, "Records") — and forgetting the record of a
// sandbox deleted on the OpenShell gateway.
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/commands.h"
#include "policy/policy_file.h"
#include "openshell/policy/gateway/v1/gateway.grpc.pb.h"

namespace osh::cli {

namespace v1 = openshell::policy::gateway::v1;

void AddInterceptorCommands(CLI::App& app, const Options& options, int& exit_code) {
  auto* interceptor = app.add_subcommand(
      "interceptor", "What the OpenShell interceptor recorded of each OpenShell sandbox (docs/openshell-interceptor.md)");
  interceptor->require_subcommand(1);

  // records
  {
    auto* cmd = interceptor->add_subcommand(
        "records", "List the interceptor's sandbox records: workspace, name, providers, and the recorded policy's "
                   "digest and network rules (-o json: ListInterceptorRecordsResponse)");
    cmd->callback([&options, &exit_code] {
      // Every page, one after the other, as one answer.
      v1::ListInterceptorRecordsResponse response;
      v1::ListInterceptorRecordsRequest request;
      for (;;) {
        v1::ListInterceptorRecordsResponse page;
        if (!CallAdmin(options, exit_code, &v1::PolicyGateway::Stub::ListInterceptorRecords, request, &page)) return;
        for (auto& record : *page.mutable_records()) *response.add_records() = std::move(record);
        if (!page.more() || response.records().empty()) break;
        request.set_after_workspace(response.records().rbegin()->workspace());
        request.set_after_sandbox(response.records().rbegin()->sandbox());
      }
      if (options.json()) {
        std::cout << ToJson(response) << "\n";
      } else {
        std::vector<std::vector<std::string>> rows;
        for (const auto& record : response.records()) {
          if (record.undecodable()) {
            rows.push_back({record.workspace().empty() ? "default" : record.workspace(), record.sandbox(),
                            "(does not decode: forget it)", "-", "-"});
            continue;
          }
          rows.push_back({record.workspace().empty() ? "default" : record.workspace(), record.sandbox(),
                          record.providers().empty() ? "-" : absl::StrJoin(record.providers(), ","),
                          absl::StrCat(record.network_rules()), record.policy_digest().substr(0, 16)});
        }
        PrintTable({"WORKSPACE", "SANDBOX", "PROVIDERS", "NETWORK RULES", "POLICY DIGEST"}, rows);
        std::cout << response.records_size() << " record(s)\n";
      }
      exit_code = kExitOk;
    });
  }
  // seed
  {
    auto* cmd = interceptor->add_subcommand(
        "seed", "Give the interceptor a record of a sandbox it has none of (created before the interceptor was "
                "bound, or forgotten): the policy and providers the OpenShell gateway holds for it. Checked as a "
                "validate checks a record (providers in the catalogue, the composed candidate inside the ceiling), "
                "audited, behind the mutation gate; never over an existing record");
    auto sandbox = std::make_shared<std::string>();
    auto workspace = std::make_shared<std::string>();
    auto file = std::make_shared<std::string>();
    auto providers = std::make_shared<std::vector<std::string>>();
    cmd->add_option("sandbox", *sandbox, "the OpenShell sandbox's name")->required();
    cmd->add_option("-f,--policy", *file, "the sandbox's own policy as the OpenShell gateway holds it (YAML, SCHEMA.md)")
        ->required();
    cmd->add_option("--provider", *providers, "an attached provider, in the order attached (repeat for each)");
    cmd->add_option("--workspace", *workspace, "its OpenShell workspace (default: the default workspace)");
    cmd->callback([&options, &exit_code, sandbox, workspace, file, providers] {
      auto policy = policy::LoadPolicyFile(*file);
      if (!policy.ok()) {
        exit_code = ReportLocalError(policy.status());
        return;
      }
      v1::SeedInterceptorRecordRequest request;
      request.set_sandbox(*sandbox);
      request.set_workspace(*workspace);
      *request.mutable_policy() = *std::move(policy);
      for (const std::string& provider : *providers) request.add_providers(provider);
      v1::SeedInterceptorRecordResponse response;
      if (!CallAdmin(options, exit_code, &v1::PolicyGateway::Stub::SeedInterceptorRecord, request, &response)) return;
      if (options.json()) {
        std::cout << ToJson(response) << "\n";
      } else {
        const auto& record = response.record();
        std::cout << "seeded the record of sandbox " << record.sandbox()
                  << (record.workspace().empty() ? "" : absl::StrCat(" (workspace ", record.workspace(), ")")) << ": "
                  << record.network_rules() << " network rule(s), providers "
                  << (record.providers().empty() ? "none" : absl::StrJoin(record.providers(), ","))
                  << ", composed candidate " << response.candidate_digest().substr(0, 16) << " inside the ceiling\n";
      }
      exit_code = kExitOk;
    });
  }
  // forget
  {
    auto* cmd = interceptor->add_subcommand(
        "forget", "Drop the record of a sandbox deleted on the OpenShell gateway (audited; behind the mutation "
                  "gate): a record no sandbox has any more otherwise holds provider-profile changes back");
    auto sandbox = std::make_shared<std::string>();
    auto workspace = std::make_shared<std::string>();
    cmd->add_option("sandbox", *sandbox, "the OpenShell sandbox's name")->required();
    cmd->add_option("--workspace", *workspace, "its OpenShell workspace (default: the default workspace)");
    cmd->callback([&options, &exit_code, sandbox, workspace] {
      v1::ForgetInterceptorRecordRequest request;
      request.set_sandbox(*sandbox);
      request.set_workspace(*workspace);
      v1::ForgetInterceptorRecordResponse response;
      if (!CallAdmin(options, exit_code, &v1::PolicyGateway::Stub::ForgetInterceptorRecord, request, &response)) return;
      std::cout << (options.json() ? ToJson(response)
                                   : absl::StrCat("forgot the record of sandbox ", *sandbox,
                                                  workspace->empty() ? "" : absl::StrCat(" (workspace ", *workspace, ")")))
                << "\n";
      exit_code = kExitOk;
    });
  }
}

}  // namespace osh::cli
