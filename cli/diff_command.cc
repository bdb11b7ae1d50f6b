// policyctl diff: the exact authority a change adds and takes away (docs/explain.md) — two policy files
// (offline, by the same library the gateway uses), two revisions of a builtin scope, or an admitted
// sandbox's served policy against a candidate file (asked of the gateway, ExplainChange).
// Exit status: 0 no difference, 1 differences (added or removed classes), 3 no decided difference but
// some classes are unknown, 2 bad input or a gateway error.
#include <iostream>

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/commands.h"
#include "cli/diff_output.h"
#include "openshell/policy/gateway/v1/gateway.grpc.pb.h"
#include "policy/explain.h"
#include "policy/explain_wire.h"
#include "policy/policy_file.h"

namespace osh::cli {

namespace v1 = openshell::policy::gateway::v1;

namespace {

std::string WitnessText(const v1::ChangeClass& c) {
  if (!c.has_witness()) return "-";
  const v1::ChangeWitness& w = c.witness();
  if (c.area() == "filesystem") return absl::StrCat(w.access(), " ", w.path());
  if (c.area() == "process") return absl::StrCat(w.field(), "=", w.value().empty() ? "''" : w.value());
  std::string out = absl::StrCat(w.binary(), " -> ", w.host(), ":", w.port());
  if (!w.method().empty()) absl::StrAppend(&out, " ", w.method(), " ", w.path());
  if (w.ancestors_size() > 0) absl::StrAppend(&out, " (ancestors ", absl::StrJoin(w.ancestors(), ","), ")");
  return out;
}

}  // namespace

google::protobuf::Struct DiffToStruct(const v1::ExplainChangeResponse& diff) {
  google::protobuf::util::JsonPrintOptions print;
  print.preserve_proto_field_names = true;
  std::string json;
  google::protobuf::Struct out;
  // A message always prints, and protobuf's own output always parses back.
  if (google::protobuf::util::MessageToJsonString(diff, &json, print).ok()) {
    (void)google::protobuf::util::JsonStringToMessage(json, &out);
  }
  for (const char* list : {"added", "removed", "unknown"}) {
    if (!out.fields().contains(list)) (*out.mutable_fields())[list].mutable_list_value();
  }
  return out;
}

void PrintDiff(const Options& options, const v1::ExplainChangeResponse& diff) {
  if (options.json()) {
    std::cout << ToJson(DiffToStruct(diff)) << "\n";
    return;
  }
  std::vector<std::vector<std::string>> rows;
  auto add = [&](const char* change, const v1::ChangeClass& c, bool allowing_is_to) {
    const auto& rules = allowing_is_to ? c.rules().to() : c.rules().from();
    rows.push_back({change, c.area(), c.description(), WitnessText(c), absl::StrJoin(rules, "; ")});
  };
  for (const auto& c : diff.added()) add("added", c, true);
  for (const auto& c : diff.removed()) add("removed", c, false);
  for (const auto& c : diff.unknown()) {
    std::vector<std::string> rules(c.rules().from().begin(), c.rules().from().end());
    rules.insert(rules.end(), c.rules().to().begin(), c.rules().to().end());
    rows.push_back({"unknown", c.area(), c.description(), "-", absl::StrJoin(rules, "; ")});
  }
  if (!rows.empty()) PrintTable({"CHANGE", "AREA", "CLASS", "WITNESS", "RULE"}, rows);
  std::cout << diff.added_size() << " added, " << diff.removed_size() << " removed, " << diff.unknown_size()
            << " unknown\n";
}

int DiffExitCode(const v1::ExplainChangeResponse& diff) {
  if (diff.added_size() > 0 || diff.removed_size() > 0) return kExitDiffers;
  if (diff.unknown_size() > 0) return kExitDiffUnknown;
  return kExitOk;
}

void AddDiffCommand(CLI::App& app, const Options& options, int& exit_code) {
  auto* cmd = app.add_subcommand(
      "diff",
      "What a change newly allows and no longer allows, in classes of requests with a witness each: "
      "OLD NEW (files), --scope S --from-revision A --to-revision B, or --sandbox ID NEW. Exit 0 no difference, "
      "1 differences, 3 only undecided classes, 2 bad input or gateway error");
  struct Flags {
    std::vector<std::string> files;
    std::string scope, sandbox;
    int64_t from_revision = -1, to_revision = -1;
  };
  auto f = std::make_shared<Flags>();
  cmd->add_option("files", f->files, "OLD NEW policy files (YAML or JSON); with --sandbox or --scope/--from-revision, NEW only");
  cmd->add_option("--scope", f->scope, "a builtin scope whose revisions to compare (asks the gateway)");
  cmd->add_option("--from-revision", f->from_revision, "the scope's old revision (0: the latest)");
  cmd->add_option("--to-revision", f->to_revision, "the scope's new revision (0: the latest)");
  cmd->add_option("--sandbox", f->sandbox, "an admitted sandbox: its served policy is the old side (asks the gateway)");
  cmd->callback([&options, &exit_code, f] {
    auto usage = [&](const std::string& what) {
      exit_code = ReportLocalError(absl::InvalidArgumentError(absl::StrCat("diff: ", what)));
    };
    auto file_source = [&](const std::string& path, v1::PolicySource* out) -> bool {
      auto policy = policy::LoadPolicyFile(path);
      if (!policy.ok()) {
        exit_code = ReportLocalError(policy.status());
        return false;
      }
      *out->mutable_policy() = *policy;
      return true;
    };
    v1::ExplainChangeRequest request;
    const bool remote = !f->scope.empty() || !f->sandbox.empty();
    if (!f->sandbox.empty() && !f->scope.empty()) return usage("give --sandbox or --scope, not both");
    if (!f->sandbox.empty()) {
      if (f->files.size() != 1 || f->from_revision >= 0 || f->to_revision >= 0) return usage("--sandbox ID takes one NEW file");
      request.mutable_from()->set_sandbox_id(f->sandbox);
      if (!file_source(f->files[0], request.mutable_to())) return;
    } else if (!f->scope.empty()) {
      if (f->from_revision < 0) return usage("--scope needs --from-revision");
      auto* from = request.mutable_from()->mutable_scope_revision();
      from->set_scope(f->scope);
      from->set_revision(static_cast<uint64_t>(f->from_revision));
      if (f->to_revision >= 0) {
        if (!f->files.empty()) return usage("give --to-revision or a NEW file, not both");
        auto* to = request.mutable_to()->mutable_scope_revision();
        to->set_scope(f->scope);
        to->set_revision(static_cast<uint64_t>(f->to_revision));
      } else {
        if (f->files.size() != 1) return usage("--scope S --from-revision A takes --to-revision B or one NEW file");
        if (!file_source(f->files[0], request.mutable_to())) return;
      }
    } else {
      if (f->files.size() != 2 || f->from_revision >= 0 || f->to_revision >= 0) {
        return usage("give OLD NEW files, --scope S --from-revision A --to-revision B, or --sandbox ID NEW");
      }
      if (!file_source(f->files[0], request.mutable_from()) || !file_source(f->files[1], request.mutable_to())) return;
    }
    v1::ExplainChangeResponse response;
    if (!remote) {
      response = policy::ExplanationToProto(policy::ExplainChange(request.from().policy(), request.to().policy()));
    } else {
      auto stub = AdminStub(options);
      if (!stub) { exit_code = kExitUsage; return; }
      auto ctx = MakeContext(options);
      if (auto status = stub->ExplainChange(ctx.get(), request, &response); !status.ok()) {
        exit_code = ReportRpcError(status);
        if (exit_code == kExitRefused) exit_code = kExitUsage;  // 1 means "differences" here
        return;
      }
    }
    PrintDiff(options, response);
    exit_code = DiffExitCode(response);
  });
}

}  // namespace osh::cli
