// policyctl policy lint | fmt | test: policy files as code, offline (what authors run in their own CI).
//  lint FILE...            every error of each file, "FILE:LINE: what"; exit 0 clean, 1 errors, 2 unreadable
//  fmt FILE [-w | --check]  the canonical YAML (policy/policy_file.h FormatPolicyText)
//  test FILE --cases CASES  expected egress decisions (PolicyTestCases), a table of pass/fail; exit 1 on a failure
#include <google/protobuf/struct.pb.h>
#include <sys/stat.h>

#include <iostream>

#include "absl/strings/str_cat.h"
#include "cli/commands.h"
#include "gateway/core/egress_intent.h"
#include "openshell/policy/gateway/v1/policy_tests.pb.h"
#include "policy/egress.h"
#include "policy/policy_file.h"
#include "policy/yaml_message.h"

namespace osh::cli {
namespace {

namespace v1 = openshell::policy::gateway::v1;
using google::protobuf::Struct;
using google::protobuf::Value;


int LintFiles(const Options& options, const std::vector<std::string>& files) {
  int exit_code = kExitOk;
  Struct json;
  auto* results = (*json.mutable_fields())["files"].mutable_list_value();
  for (const std::string& file : files) {
    auto text = policy::ReadFileToString(file);
    if (!text.ok()) return ReportLocalError(text.status());
    const std::vector<std::string> errors = policy::LintPolicyText(*text, file);
    if (!errors.empty()) exit_code = kExitRefused;
    if (options.json()) {
      Struct result;
      (*result.mutable_fields())["file"] = TextValue(file);
      auto* list = (*result.mutable_fields())["errors"].mutable_list_value();
      for (const auto& e : errors) *list->add_values() = TextValue(e);
      *results->add_values()->mutable_struct_value() = result;
    } else {
      for (const auto& e : errors) std::cout << e << "\n";
      if (errors.empty()) std::cerr << file << ": ok\n";
    }
  }
  if (options.json()) {
    (*json.mutable_fields())["ok"].set_bool_value(exit_code == kExitOk);
    std::cout << ToJson(json) << "\n";
  }
  return exit_code;
}

int FormatFile(const std::string& file, bool write, bool check) {
  auto text = policy::ReadFileToString(file);
  if (!text.ok()) return ReportLocalError(text.status());
  auto formatted = policy::FormatPolicyText(*text, file);
  if (!formatted.ok()) return ReportLocalError(formatted.status());
  if (check) {
    if (*formatted == *text) return kExitOk;
    std::cerr << file << ": not in canonical form (policyctl policy fmt -w " << file << ")\n";
    return kExitRefused;
  }
  if (!write) {
    std::cout << *formatted;
    return kExitOk;
  }
  if (*formatted == *text) return kExitOk;
  struct stat st {};
  const unsigned mode = ::stat(file.c_str(), &st) == 0 ? (st.st_mode & 07777) : 0644;
  if (auto status = WriteFileAtomically(file, *formatted, mode); !status.ok()) return ReportLocalError(status);
  std::cerr << file << ": formatted\n";
  return kExitOk;
}

int RunPolicyTests(const Options& options, const std::string& file, const std::string& cases_file) {
  auto policy = policy::LoadPolicyFile(file);
  if (!policy.ok()) return ReportLocalError(policy.status());
  auto text = policy::ReadFileToString(cases_file);
  if (!text.ok()) return ReportLocalError(text.status());
  v1::PolicyTestCases cases;
  policy::LineMap lines;
  if (auto status = policy::ReadYamlMessage(*text, cases_file, {}, &cases, &lines); !status.ok()) {
    return ReportLocalError(status);
  }
  if (cases.cases().empty()) return ReportLocalError(absl::InvalidArgumentError(absl::StrCat(cases_file, ": no cases")));
  for (int i = 0; i < cases.cases_size(); ++i) {
    const auto& c = cases.cases(i);
    const std::string at = absl::StrCat("cases[", i, "]");
    auto bad = [&](const std::string& field, const std::string& what) {
      return ReportLocalError(absl::InvalidArgumentError(absl::StrCat(cases_file, ":", policy::LineOf(lines, at + "." + field),
                                                                      ": ", at, ".", field, ": ", what)));
    };
    if (c.expect() != "allow" && c.expect() != "deny" && c.expect() != "audit" && c.expect() != "unsupported") {
      return bad("expect", absl::StrCat("must be allow, deny, audit or unsupported, got '", c.expect(), "'"));
    }
    if (c.intent().policy_source_case() != v1::EvaluateEgressRequest::POLICY_SOURCE_NOT_SET) {
      return bad("intent", "a case names no policy: the policy is the file under test");
    }
    if (c.intent().host().empty()) return bad("intent.host", "required");
  }

  const auto compiled = policy::EgressPolicy::Compile(*policy);
  int failed = 0;
  std::vector<std::vector<std::string>> rows;
  Struct json;
  auto* list = (*json.mutable_fields())["cases"].mutable_list_value();
  for (int i = 0; i < cases.cases_size(); ++i) {
    const auto& c = cases.cases(i);
    v1::EvaluateEgressRequest request = c.intent();
    if (request.has_request() && request.request().path().empty()) request.mutable_request()->set_path("/");
    const policy::EgressDecision decision = compiled->Decide(gateway::IntentFrom(request));
    const std::string got(policy::VerdictName(decision.verdict));
    const bool pass = got == c.expect() && (c.matched_policy().empty() || c.matched_policy() == decision.matched_policy);
    if (!pass) ++failed;
    const int line = policy::LineOf(lines, absl::StrCat("cases[", i, "]"));
    const std::string name = c.name().empty() ? absl::StrCat("cases[", i, "]") : c.name();
    std::string detail;
    if (!pass) {
      detail = absl::StrCat(cases_file, ":", line, ": expected ", c.expect(),
                            c.matched_policy().empty() ? "" : absl::StrCat(" by ", c.matched_policy()), ", got ", got,
                            decision.matched_policy.empty() ? "" : absl::StrCat(" by ", decision.matched_policy),
                            decision.reason.empty() ? "" : absl::StrCat(" (", decision.reason, ")"));
    }
    rows.push_back({pass ? "PASS" : "FAIL", name, c.expect(), got, detail});
    Struct result;
    auto& f = *result.mutable_fields();
    f["name"] = TextValue(name);
    f["line"].set_number_value(line);
    f["expect"] = TextValue(c.expect());
    f["got"] = TextValue(got);
    f["matched_policy"] = TextValue(decision.matched_policy);
    f["rule"] = TextValue(decision.rule);
    f["reason"] = TextValue(decision.reason);
    f["pass"].set_bool_value(pass);
    *list->add_values()->mutable_struct_value() = result;
  }
  if (options.json()) {
    (*json.mutable_fields())["passed"].set_number_value(cases.cases_size() - failed);
    (*json.mutable_fields())["failed"].set_number_value(failed);
    std::cout << ToJson(json) << "\n";
  } else {
    PrintTable({"RESULT", "CASE", "EXPECTED", "GOT", "DETAIL"}, rows);
    std::cout << "\n" << (cases.cases_size() - failed) << " of " << cases.cases_size() << " cases pass"
              << (failed > 0 ? absl::StrCat(", ", failed, " fail") : "") << "\n";
  }
  return failed > 0 ? kExitRefused : kExitOk;
}

}  // namespace

void AddPolicyFileCommands(CLI::App* policy, const Options& options, int& exit_code) {
  {
    auto* cmd = policy->add_subcommand(
        "lint", "Offline: every error of each policy file in one run, FILE:LINE: what (each field reports its first; a "
                "YAML or key error stops that file). Exit 0 clean, 1 errors, 2 unreadable");
    auto files = std::make_shared<std::vector<std::string>>();
    cmd->add_option("files", *files, "policy files, YAML or JSON")->required();
    cmd->callback([&options, &exit_code, files] { exit_code = LintFiles(options, *files); });
  }
  {
    auto* cmd = policy->add_subcommand(
        "fmt", "Offline: the policy file in canonical YAML (field order of the schema, sorted keys, defaults omitted; "
               "the opening comment block kept, comments inside dropped). Prints it, or -w rewrites the file, or "
               "--check exits 1 when the file is not canonical");
    auto file = std::make_shared<std::string>();
    auto write = std::make_shared<bool>(false);
    auto check = std::make_shared<bool>(false);
    cmd->add_option("file", *file, "a policy file")->required();
    auto* w = cmd->add_flag("-w,--write", *write, "rewrite the file in place (atomically) when it is not canonical");
    cmd->add_flag("--check", *check, "change nothing; exit 1 when the file is not canonical")->excludes(w);
    cmd->callback([&exit_code, file, write, check] { exit_code = FormatFile(*file, *write, *check); });
  }
  {
    auto* cmd = policy->add_subcommand(
        "test", "Offline: decide each case of CASES (YAML or JSON: cases: [{name, intent, expect, matched_policy}]) "
                "against the policy file and print a table of pass/fail. Exit 0 all pass, 1 a case fails, 2 bad input");
    auto file = std::make_shared<std::string>();
    auto cases = std::make_shared<std::string>();
    cmd->add_option("file", *file, "the policy file under test")->required();
    cmd->add_option("--cases", *cases, "the cases file")->required();
    cmd->callback([&options, &exit_code, file, cases] { exit_code = RunPolicyTests(options, *file, *cases); });
  }
}

}  // namespace osh::cli
