// policyctl decide: what a policy decides for one egress intent — an admitted sandbox's policy (asked of
// the gateway, EvaluateEgress) or a policy file (evaluated here, offline, by the same library).
// With --fs-path, what a policy file lets the sandbox do at a filesystem path (read, or write), by the
// rule `policyctl diff` judges filesystem classes with (policy/explain.h, FilesystemAccessOf).
// Exit status: 0 allow, 1 deny, 3 audit, 4 unsupported, 2 bad input (an invalid policy names the field).
// With --replay FILE, many recorded intents at once (replay_command.cc).
#include <iostream>

#include <google/protobuf/struct.pb.h>

#include "absl/strings/str_cat.h"
#include "cli/commands.h"
#include "gateway/core/egress_intent.h"
#include "openshell/policy/gateway/v1/gateway.grpc.pb.h"
#include "policy/body_codec.h"
#include "policy/digest.h"
#include "policy/egress.h"
#include "policy/explain.h"
#include "policy/policy_file.h"

namespace osh::cli {
namespace {

namespace v1 = openshell::policy::gateway::v1;

constexpr int kExitDeny = 1;
constexpr int kExitAudit = 3;
constexpr int kExitUnsupported = 4;

int ExitFor(const std::string& decision) {
  if (decision == "allow") return kExitOk;
  if (decision == "audit") return kExitAudit;
  if (decision == "unsupported") return kExitUnsupported;
  return kExitDeny;
}

void PrintDecision(const Options& options, const v1::EvaluateEgressResponse& r) {
  if (options.json()) {
    std::cout << ToJson(r) << "\n";
    return;
  }
  std::cout << "decision:       " << r.decision() << "\n";
  if (!r.matched_policy().empty()) std::cout << "matched policy: " << r.matched_policy() << "\n";
  if (!r.endpoint().empty()) std::cout << "endpoint:       " << r.endpoint() << "\n";
  if (!r.rule().empty()) std::cout << "rule:           " << r.rule() << "\n";
  if (!r.reason().empty()) std::cout << "reason:         " << r.reason() << "\n";
  std::cout << "policy digest:  " << r.policy_digest() << "\n";
}

}  // namespace

void AddDecideCommand(CLI::App& app, const Options& options, int& exit_code) {
  auto* cmd = app.add_subcommand(
      "decide",
      "What a policy decides for one egress intent: allow, deny, audit (allowed only because enforcement is not "
      "'enforce') or unsupported (depends on something not modelled). Exit 0 allow, 1 deny, 3 audit, "
      "4 unsupported, 2 bad input. With --replay, recorded intents (JSON lines) against one policy, or against "
      "two with --against: exit 0, or 1 when some decision changes");
  struct Flags {
    std::string sandbox, file, host, binary, method, path, replay, against, fs_path, access = "read";
    uint32_t port = 0;
    std::vector<std::string> ancestors, cmdline, query;
  };
  auto f = std::make_shared<Flags>();
  auto* source = cmd->add_option_group("policy", "the policy to ask");
  source->add_option("--sandbox", f->sandbox, "an admitted sandbox's id (asks the gateway)");
  source->add_option("-f,--file,--policy", f->file, "a policy file, YAML or JSON (evaluated offline)");
  source->require_option(1);
  auto* replay = cmd->add_option("--replay", f->replay,
                                 "recorded intents, one EvaluateEgress intent as JSON per line ('-': standard input); "
                                 "prints the decisions grouped by rule, with counts and one example each");
  cmd->add_option("--against", f->against,
                  "with --replay: a second policy file; prints only the decisions that change, grouped by the "
                  "rules that change them")
      ->needs(replay);
  auto* host = cmd->add_option("--host", f->host, "destination host name")->excludes(replay);
  auto* port = cmd->add_option("--port", f->port, "destination port")->check(CLI::Range(1, 65535))->excludes(replay);
  auto* binary = cmd->add_option("--binary", f->binary, "the process's executable path (kernel-resolved)")->excludes(replay);
  auto* fs_path = cmd->add_option("--fs-path", f->fs_path, "instead of egress: a filesystem path, judged with -f (allow: the access is granted)")->excludes(replay);
  cmd->add_option("--access", f->access, "with --fs-path: read or write")->check(CLI::IsMember({"read", "write"}))->needs(fs_path);
  cmd->add_option("--ancestor", f->ancestors, "an ancestor's executable path (repeatable, nearest first)");
  cmd->add_option("--cmdline-path", f->cmdline, "a path from the command line (evidence only; never grants)");
  cmd->add_option("--method", f->method, "REST request method (asks about one request on the connection)");
  cmd->add_option("--path", f->path, "REST request path (canonical), with --method");
  cmd->add_option("--query", f->query, "query parameter key=value (repeatable; a key may repeat), with --method");
  cmd->callback([&options, &exit_code, f, host, port, binary] {
    if (!f->replay.empty()) {
      exit_code = RunDecideReplay(options, ReplayArgs{f->replay, f->file, f->sandbox, f->against});
      return;
    }
    if (!f->fs_path.empty()) {
      if (f->file.empty()) {
        exit_code = ReportLocalError(absl::InvalidArgumentError("--fs-path is judged offline: give -f POLICY"));
        return;
      }
      auto policy = policy::LoadPolicyFile(f->file);
      if (!policy.ok()) { exit_code = ReportLocalError(policy.status()); return; }
      const policy::FilesystemAccess access = policy::FilesystemAccessOf(*policy, f->fs_path);
      const bool allowed = f->access == "write" ? access.write : access.read;
      if (options.json()) {
        google::protobuf::Struct out;
        (*out.mutable_fields())["decision"].set_string_value(allowed ? "allow" : "deny");
        (*out.mutable_fields())["access"].set_string_value(access.write ? "read-write" : access.read ? "read" : "none");
        std::cout << ToJson(out) << "\n";
      } else {
        std::cout << "decision:       " << (allowed ? "allow" : "deny") << "\n";
        std::cout << "access:         " << (access.write ? "read-write" : access.read ? "read" : "none") << " at "
                  << f->fs_path << "\n";
      }
      exit_code = allowed ? kExitOk : kExitDeny;
      return;
    }
    for (const CLI::Option* needed : {host, port, binary}) {
      if (needed->count() == 0) {
        exit_code = ReportLocalError(absl::InvalidArgumentError(absl::StrCat(needed->get_name(), " is required (or --replay FILE, or --fs-path PATH)")));
        return;
      }
    }
    v1::EvaluateEgressRequest request;
    request.set_host(f->host);
    request.set_port(f->port);
    request.set_binary(f->binary);
    for (const auto& a : f->ancestors) request.add_ancestors(a);
    for (const auto& c : f->cmdline) request.add_cmdline_paths(c);
    if ((!f->path.empty() || !f->query.empty()) && f->method.empty()) {
      exit_code = ReportLocalError(absl::InvalidArgumentError("--path and --query need --method"));
      return;
    }
    if (!f->method.empty()) {
      auto* http = request.mutable_request();
      http->set_method(f->method);
      http->set_path(f->path.empty() ? "/" : f->path);
      for (const auto& pair : f->query) {
        const auto eq = pair.find('=');
        if (eq == std::string::npos || eq == 0) {
          exit_code = ReportLocalError(absl::InvalidArgumentError(absl::StrCat("--query ", pair, ": expected key=value")));
          return;
        }
        const std::string key = pair.substr(0, eq);
        v1::EgressQueryParam* param = nullptr;
        for (auto& existing : *http->mutable_query()) {
          if (existing.key() == key) param = &existing;
        }
        if (param == nullptr) {
          param = http->add_query();
          param->set_key(key);
        }
        param->add_values(pair.substr(eq + 1));
      }
    }
    v1::EvaluateEgressResponse response;
    if (!f->file.empty()) {
      auto policy = policy::LoadPolicyFile(f->file);
      if (!policy.ok()) { exit_code = ReportLocalError(policy.status()); return; }
      const auto decision = policy::EgressPolicy::Compile(*policy)->Decide(gateway::IntentFrom(request));
      response.set_decision(std::string(policy::VerdictName(decision.verdict)));
      response.set_matched_policy(decision.matched_policy);
      response.set_endpoint(decision.endpoint);
      response.set_rule(decision.rule);
      response.set_reason(decision.reason);
      response.set_policy_digest(policy::Sha256Hex(policy::SerializeDeterministic(*policy)));
    } else {
      request.set_sandbox_id(f->sandbox);
      auto stub = AdminStub(options);
      if (!stub) { exit_code = kExitUsage; return; }
      auto ctx = MakeContext(options);
      if (auto status = stub->EvaluateEgress(ctx.get(), request, &response); !status.ok()) {
        exit_code = ReportRpcError(status);
        if (exit_code == kExitRefused) exit_code = kExitUsage;  // 1 means "deny" here
        return;
      }
    }
    PrintDecision(options, response);
    exit_code = ExitFor(response.decision());
  });
}

}  // namespace osh::cli
