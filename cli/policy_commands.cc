// policyctl policy set | update | delete | get | list (builtin driver policies, on the admin socket).
#include <algorithm>
#include <iomanip>
#include <iostream>
#include <thread>

#include <google/protobuf/util/json_util.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "cli/commands.h"
#include "cli/diff_output.h"
#include "openshell/policy/gateway/v1/gateway.grpc.pb.h"
#include "policy/body_codec.h"
#include "policy/containment.h"
#include "policy/merge.h"
#include "policy/policy_file.h"
#include "policy/yaml_message.h"

namespace osh::cli {
namespace {

namespace v1 = openshell::policy::gateway::v1;

// A policy file, or what `policy get -o json` printed (a GetPolicyResponse): its policy then goes through
// the policy-file parser as YAML, so it is checked exactly as a file would be.
absl::StatusOr<openshell::sandbox::v1::SandboxPolicy> LoadPolicyOrGetOutput(const std::string& path) {
  auto text = policy::ReadFileToString(path);
  if (!text.ok()) return text.status();
  v1::GetPolicyResponse got;
  if (text->find("\"revision\"") != std::string::npos &&
      google::protobuf::util::JsonStringToMessage(*text, &got).ok() && (got.has_policy() || got.revision().deleted())) {
    if (got.revision().deleted()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": the scope's revision ", got.revision().revision(),
                                                     " is a deletion; there is no policy to set"));
    }
    return policy::ParsePolicyText(policy::PolicyToYaml(got.policy()), path);
  }
  return policy::ParsePolicyText(*text, path);
}

// A mutation re-projects every sandbox of the scope before it answers: over a large fleet with context
// binding that is one signature and one check per sandbox. Its call gets at least 10 minutes (more with a
// longer --timeout), and after 5 s the operator is told what it is waiting for (issue 25.16).
class MutationCall {
 public:
  explicit MutationCall(const Options& options) : context_(MakeContext(options)) {
    context_->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(std::max(options.timeout_s, 600)));
    notice_ = std::thread([this] {
      if (!done_.WaitForNotificationWithTimeout(absl::Seconds(5))) {
        std::cerr << "policyctl: the gateway is re-projecting the scope's sandboxes (a signature and a check each); "
                     "waiting for it to finish. Interrupting leaves it running; `policyctl list` shows the result.\n";
      }
    });
  }
  ~MutationCall() {
    done_.Notify();
    notice_.join();
  }
  grpc::ClientContext* get() { return context_.get(); }

 private:
  std::unique_ptr<grpc::ClientContext> context_;
  absl::Notification done_;
  std::thread notice_;
};

void PrintRevision(const Options& options, const v1::PolicyRevision& r) {
  if (options.json()) {
    std::cout << ToJson(r) << "\n";
    return;
  }
  std::cout << r.scope() << (r.unchanged() ? " unchanged at revision " : " revision ") << r.revision()
            << (r.deleted() ? " (deleted)" : " digest " + r.policy_digest()) << "; " << r.sandboxes_updated()
            << " sandbox(es) re-projected";
  if (r.sandboxes_kept_last_good() > 0) {
    std::cout << ", " << r.sandboxes_kept_last_good()
              << " kept their last good projection (see `policyctl list` and each one's refresh error)";
  }
  if (r.reprojection_pending()) {
    std::cout << "; the re-projection did not commit: its sandboxes keep the previous policy until the gateway's "
                 "retry commits (`policyctl status`: re-projections queued; the gateway's log says why)";
  }
  std::cout << "\n";
}

// --dry-run of `policy set` and `policy update`: the diff of the scope's latest revision (none: an empty
// policy) against `candidate`, and the verdict of the ceiling in force, asked with read-only calls
// (ExplainChange, GetCeiling; the containment check is the library the gateway's guard uses), so the
// gateway changes nothing. Exit 0 when the ceiling (or its absence) would admit the candidate, 1 when
// it would refuse it, 2 bad input or a gateway error.
int DryRun(const Options& options, v1::PolicyGateway::Stub& stub, const std::string& scope,
           const openshell::sandbox::v1::SandboxPolicy& candidate) {
  v1::ExplainChangeRequest request;
  {
    v1::GetPolicyRequest get;
    get.set_scope(scope);
    v1::GetPolicyResponse latest;
    auto ctx = MakeContext(options);
    const grpc::Status status = stub.GetPolicy(ctx.get(), get, &latest);
    if (status.ok() && !latest.revision().deleted()) {
      auto* from = request.mutable_from()->mutable_scope_revision();
      from->set_scope(scope);
      from->set_revision(latest.revision().revision());
    } else if (status.ok() || status.error_code() == grpc::StatusCode::NOT_FOUND) {
      request.mutable_from()->mutable_policy()->set_version(candidate.version());  // nothing yet
    } else {
      ReportRpcError(status);
      return kExitUsage;
    }
  }
  *request.mutable_to()->mutable_policy() = candidate;
  v1::ExplainChangeResponse diff;
  {
    auto ctx = MakeContext(options);
    if (auto status = stub.ExplainChange(ctx.get(), request, &diff); !status.ok()) {
      ReportRpcError(status);
      return kExitUsage;
    }
  }
  std::string verdict;
  bool admitted = true;
  {
    v1::GetCeilingResponse ceiling;
    auto ctx = MakeContext(options);
    const grpc::Status status = stub.GetCeiling(ctx.get(), v1::GetCeilingRequest(), &ceiling);
    if (status.error_code() == grpc::StatusCode::NOT_FOUND) {
      verdict = "no ceiling in force";
    } else if (!status.ok()) {
      ReportRpcError(status);
      return kExitUsage;
    } else {
      auto ceiling_policy = policy::ParseBodyStrict(ceiling.ceiling().body());
      if (!ceiling_policy.ok()) return ReportLocalError(ceiling_policy.status());
      const auto result = policy::CheckContainment(candidate, *ceiling_policy);
      admitted = result.verdict == policy::Containment::kInside;
      verdict = admitted ? absl::StrCat("inside ceiling '", ceiling.ceiling().ceiling_id(), "' version ", ceiling.ceiling().version())
                         : std::string(result.ToStatus().message());
    }
  }
  if (options.json()) {
    google::protobuf::Struct report = DiffToStruct(diff);
    auto& ceiling = *(*report.mutable_fields())["ceiling"].mutable_struct_value()->mutable_fields();
    ceiling["verdict"].set_string_value(verdict);
    ceiling["admitted"].set_bool_value(admitted);
    (*report.mutable_fields())["dry_run"].set_bool_value(true);
    std::cout << ToJson(report) << "\n";
  } else {
    PrintDiff(options, diff);
    std::cout << "ceiling: " << verdict << "\n" << "dry run: nothing was changed\n";
  }
  return admitted ? kExitOk : kExitRefused;
}

// Parses "RULE=HOST:PORT" (PORT optional) into an endpoint selector.
absl::StatusOr<v1::EndpointSelector> ParseEndpoint(const std::string& text) {
  v1::EndpointSelector selector;
  const auto eq = text.find('=');
  if (eq == std::string::npos || eq == 0) return absl::InvalidArgumentError(text + ": expected RULE=HOST[:PORT]");
  selector.set_rule_id(text.substr(0, eq));
  std::string host = text.substr(eq + 1);
  if (const auto colon = host.rfind(':'); colon != std::string::npos) {
    uint32_t port = 0;
    if (!absl::SimpleAtoi(host.substr(colon + 1), &port) || port == 0 || port > 65535) {
      return absl::InvalidArgumentError(text + ": bad port");
    }
    selector.set_port(port);
    host.resize(colon);
  }
  if (host.empty()) return absl::InvalidArgumentError(text + ": expected RULE=HOST[:PORT]");
  selector.set_host(host);
  return selector;
}

}  // namespace

void AddPolicyCommands(CLI::App& app, const Options& options, int& exit_code) {
  auto* policy = app.add_subcommand("policy", "Author builtin-driver policies per scope: default, tenant:<id>, sandbox:<id>");
  policy->require_subcommand(1);

  // set
  {
    auto* cmd = policy->add_subcommand("set", "Set the policy of a scope from a YAML or JSON policy file");
    auto scope = std::make_shared<std::string>();
    auto file = std::make_shared<std::string>();
    auto expected_revision = std::make_shared<int64_t>(-1);
    cmd->add_option("scope", *scope, "default | tenant:<id> | sandbox:<id>")->required();
    cmd->add_option("--file,-f", *file, "policy file (YAML or JSON), or what `policy get -o json` printed")->required();
    cmd->add_option("--expected-revision", *expected_revision, "refuse unless the scope is at this revision (0: has none)");
    auto dry_run = std::make_shared<bool>(false);
    cmd->add_flag("--dry-run", *dry_run,
                  "print what the change newly allows and no longer allows and the ceiling's verdict; change nothing "
                  "(exit 0 admitted, 1 refused by the ceiling)");
    cmd->callback([&options, &exit_code, scope, file, expected_revision, dry_run] {
      auto loaded = LoadPolicyOrGetOutput(*file);
      if (!loaded.ok()) { exit_code = ReportLocalError(loaded.status()); return; }
      auto stub = AdminStub(options);
      if (!stub) { exit_code = kExitUsage; return; }
      if (*dry_run) {
        exit_code = DryRun(options, *stub, *scope, *loaded);
        return;
      }
      v1::SetPolicyRequest request;
      request.set_scope(*scope);
      *request.mutable_policy() = *loaded;
      if (*expected_revision >= 0) request.set_expected_revision(static_cast<uint64_t>(*expected_revision));
      v1::PolicyRevision response;
      MutationCall ctx(options);
      if (auto status = stub->SetPolicy(ctx.get(), request, &response); !status.ok()) {
        exit_code = ReportRpcError(status);
        return;
      }
      PrintRevision(options, response);
      exit_code = kExitOk;
    });
  }
  // update
  {
    auto* cmd = policy->add_subcommand("update", "Apply merge operations to a scope's policy");
    auto scope = std::make_shared<std::string>();
    auto ops_file = std::make_shared<std::string>();
    auto remove_rules = std::make_shared<std::vector<std::string>>();
    auto remove_endpoints = std::make_shared<std::vector<std::string>>();
    auto remove_binaries = std::make_shared<std::vector<std::string>>();
    auto expected_revision = std::make_shared<int64_t>(-1);
    cmd->add_option("scope", *scope, "default | tenant:<id> | sandbox:<id>")->required();
    cmd->add_option("--ops", *ops_file,
                    "YAML/JSON file with `operations:` (add_rule, remove_rule, add_allow_rules, add_deny_rules, "
                    "remove_endpoint, remove_binary)");
    cmd->add_option("--remove-rule", *remove_rules, "remove a network rule by id (repeatable)");
    cmd->add_option("--remove-endpoint", *remove_endpoints, "remove endpoints RULE=HOST[:PORT] (repeatable)");
    cmd->add_option("--remove-binary", *remove_binaries, "remove a binary RULE=PATH (repeatable)");
    cmd->add_option("--expected-revision", *expected_revision, "refuse unless the scope is at this revision");
    auto dry_run = std::make_shared<bool>(false);
    cmd->add_flag("--dry-run", *dry_run,
                  "apply the operations to the latest revision here, print what the result newly allows and no longer "
                  "allows and the ceiling's verdict; change nothing (exit 0 admitted, 1 refused by the ceiling)");
    cmd->callback([&options, &exit_code, scope, ops_file, remove_rules, remove_endpoints, remove_binaries, expected_revision,
                   dry_run] {
      v1::UpdatePolicyRequest request;
      if (!ops_file->empty()) {
        auto text = policy::ReadFileToString(*ops_file);
        if (!text.ok()) { exit_code = ReportLocalError(text.status()); return; }
        if (auto status = policy::ReadYamlMessage(*text, *ops_file, {}, &request, nullptr); !status.ok()) {
          exit_code = ReportLocalError(status);
          return;
        }
        if (!request.scope().empty() || request.has_expected_revision()) {
          exit_code = ReportLocalError(absl::InvalidArgumentError(*ops_file + ": only `operations` belongs in an ops file"));
          return;
        }
      }
      for (const auto& id : *remove_rules) request.add_operations()->mutable_remove_rule()->set_rule_id(id);
      for (const auto& text : *remove_endpoints) {
        auto selector = ParseEndpoint(text);
        if (!selector.ok()) { exit_code = ReportLocalError(selector.status()); return; }
        *request.add_operations()->mutable_remove_endpoint()->mutable_endpoint() = *selector;
      }
      for (const auto& text : *remove_binaries) {
        const auto eq = text.find('=');
        if (eq == std::string::npos || eq == 0) {
          exit_code = ReportLocalError(absl::InvalidArgumentError(text + ": expected RULE=PATH"));
          return;
        }
        auto* op = request.add_operations()->mutable_remove_binary();
        op->set_rule_id(text.substr(0, eq));
        op->set_path(text.substr(eq + 1));
      }
      if (request.operations().empty()) {
        exit_code = ReportLocalError(absl::InvalidArgumentError("policy update: give --ops FILE or a --remove-* flag"));
        return;
      }
      request.set_scope(*scope);
      if (*expected_revision >= 0) request.set_expected_revision(static_cast<uint64_t>(*expected_revision));
      auto stub = AdminStub(options);
      if (!stub) { exit_code = kExitUsage; return; }
      if (*dry_run) {
        // The same merge the builtin driver applies (policy/merge.h), on the revision read here.
        v1::GetPolicyRequest get;
        get.set_scope(*scope);
        v1::GetPolicyResponse latest;
        auto ctx = MakeContext(options);
        if (auto status = stub->GetPolicy(ctx.get(), get, &latest); !status.ok()) {
          ReportRpcError(status);
          exit_code = kExitUsage;
          return;
        }
        if (latest.revision().deleted()) {
          exit_code = ReportLocalError(absl::NotFoundError(absl::StrCat("scope '", *scope, "' has no policy to update")));
          return;
        }
        if (request.has_expected_revision() && request.expected_revision() != latest.revision().revision()) {
          exit_code = ReportLocalError(absl::AbortedError(absl::StrCat("scope '", *scope, "' is at revision ",
                                                                       latest.revision().revision(), ", expected ",
                                                                       request.expected_revision())));
          return;
        }
        openshell::sandbox::v1::SandboxPolicy merged = latest.policy();
        if (auto status = policy::ApplyMergeOperations(request.operations(), &merged); !status.ok()) {
          exit_code = ReportLocalError(status);
          return;
        }
        exit_code = DryRun(options, *stub, *scope, merged);
        return;
      }
      v1::PolicyRevision response;
      MutationCall ctx(options);
      if (auto status = stub->UpdatePolicy(ctx.get(), request, &response); !status.ok()) {
        exit_code = ReportRpcError(status);
        return;
      }
      PrintRevision(options, response);
      exit_code = kExitOk;
    });
  }
  // delete
  {
    auto* cmd = policy->add_subcommand("delete", "Delete the policy of a scope (recorded as a revision)");
    auto scope = std::make_shared<std::string>();
    auto expected_revision = std::make_shared<int64_t>(-1);
    cmd->add_option("scope", *scope, "default | tenant:<id> | sandbox:<id>")->required();
    cmd->add_option("--expected-revision", *expected_revision, "refuse unless the scope is at this revision");
    cmd->callback([&options, &exit_code, scope, expected_revision] {
      auto stub = AdminStub(options);
      if (!stub) { exit_code = kExitUsage; return; }
      v1::DeletePolicyRequest request;
      request.set_scope(*scope);
      if (*expected_revision >= 0) request.set_expected_revision(static_cast<uint64_t>(*expected_revision));
      v1::PolicyRevision response;
      MutationCall ctx(options);
      if (auto status = stub->DeletePolicy(ctx.get(), request, &response); !status.ok()) {
        exit_code = ReportRpcError(status);
        return;
      }
      PrintRevision(options, response);
      exit_code = kExitOk;
    });
  }
  // get
  {
    auto* cmd = policy->add_subcommand("get", "Print a scope's policy (YAML policy file format; -o json for JSON)");
    auto scope = std::make_shared<std::string>();
    auto revision = std::make_shared<uint64_t>(0);
    cmd->add_option("scope", *scope, "default | tenant:<id> | sandbox:<id>")->required();
    cmd->add_option("--revision", *revision, "a past revision (default: the latest)");
    cmd->callback([&options, &exit_code, scope, revision] {
      auto stub = AdminStub(options);
      if (!stub) { exit_code = kExitUsage; return; }
      v1::GetPolicyRequest request;
      request.set_scope(*scope);
      request.set_revision(*revision);
      v1::GetPolicyResponse response;
      auto ctx = MakeContext(options);
      if (auto status = stub->GetPolicy(ctx.get(), request, &response); !status.ok()) {
        exit_code = ReportRpcError(status);
        return;
      }
      if (options.json()) {
        std::cout << ToJson(response) << "\n";
      } else {
        std::cout << "# " << response.revision().scope() << " revision " << response.revision().revision()
                  << (response.revision().deleted() ? " (deleted)" : " digest " + response.revision().policy_digest()) << "\n";
        if (!response.revision().deleted()) std::cout << policy::PolicyToYaml(response.policy());
      }
      exit_code = kExitOk;
    });
  }
  // list
  {
    auto* cmd = policy->add_subcommand("list", "List policy revisions (of one scope, or of all)");
    auto scope = std::make_shared<std::string>();
    cmd->add_option("scope", *scope, "default | tenant:<id> | sandbox:<id> (default: all scopes)");
    cmd->callback([&options, &exit_code, scope] {
      auto stub = AdminStub(options);
      if (!stub) { exit_code = kExitUsage; return; }
      v1::ListPolicyRevisionsRequest request;
      request.set_scope(*scope);
      request.set_page_size(1000);
      // Every page, gathered into one answer (the gateway pages a long history).
      v1::ListPolicyRevisionsResponse response;
      do {
        v1::ListPolicyRevisionsResponse page;
        auto ctx = MakeContext(options);
        if (auto status = stub->ListPolicyRevisions(ctx.get(), request, &page); !status.ok()) {
          exit_code = ReportRpcError(status);
          return;
        }
        for (auto& revision : *page.mutable_revisions()) *response.add_revisions() = std::move(revision);
        if (!page.next_page_token().empty() &&
            (page.revisions().empty() || page.next_page_token() == request.page_token())) {
          std::cerr << "error: the gateway answered a page_token that does not advance; stopping\n";
          exit_code = kExitUsage;
          return;
        }
        request.set_page_token(page.next_page_token());
      } while (!request.page_token().empty());
      if (options.json()) {
        std::cout << ToJson(response) << "\n";
      } else {
        std::vector<std::vector<std::string>> rows;
        for (const auto& r : response.revisions()) {
          rows.push_back({r.scope(), std::to_string(r.revision()),
                          absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixSeconds(r.created_at_unix()), absl::UTCTimeZone()),
                          r.deleted() ? "(deleted)" : r.policy_digest()});
        }
        PrintTable({"SCOPE", "REVISION", "CREATED", "DIGEST"}, rows);
      }
      exit_code = kExitOk;
    });
  }
}

}  // namespace osh::cli
