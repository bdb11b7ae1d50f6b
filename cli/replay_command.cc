// policyctl decide --replay: recorded egress intents (JSON lines, policy/replay.h) decided against one
// policy — a file, or an admitted sandbox's through the gateway — or against two (--against), printing
// which decisions change, grouped by the rules that change them, with counts and one example each.
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include <iostream>

#include "absl/strings/str_cat.h"
#include "cli/commands.h"
#include "policy/replay.h"

namespace osh::cli {
namespace {

namespace v1 = openshell::policy::gateway::v1;
using google::protobuf::Struct;
using google::protobuf::Value;

v1::EvaluateEgressRequest RequestFrom(const policy::EgressIntent& intent) {
  v1::EvaluateEgressRequest request;
  request.set_host(intent.host);
  request.set_port(intent.port);
  request.set_binary(intent.binary);
  for (const auto& a : intent.ancestors) request.add_ancestors(a);
  for (const auto& c : intent.cmdline_paths) request.add_cmdline_paths(c);
  if (intent.request.has_value()) {
    auto* http = request.mutable_request();
    http->set_method(intent.request->method);
    http->set_path(intent.request->path);
    for (const auto& [key, values] : intent.request->query) {
      auto* param = http->add_query();
      param->set_key(key);
      for (const auto& v : values) param->add_values(v);
    }
  }
  return request;
}

policy::EgressVerdict VerdictFrom(const std::string& name) {
  if (name == "allow") return policy::EgressVerdict::kAllow;
  if (name == "audit") return policy::EgressVerdict::kAudit;
  if (name == "unsupported") return policy::EgressVerdict::kUnsupported;
  return policy::EgressVerdict::kDeny;
}

// The sandbox's decisions, asked of the gateway one intent at a time (EvaluateEgress).
absl::StatusOr<policy::ReplayReport> ReplayThroughGateway(const Options& options, const std::string& sandbox,
                                                          const std::string& path, const policy::EgressPolicy* to,
                                                          int* exit_code) {
  auto reader = policy::IntentLineReader::Open(path);
  if (!reader.ok()) return reader.status();
  auto stub = AdminStub(options);
  if (!stub) {
    *exit_code = kExitUsage;
    return absl::UnavailableError("no gateway");
  }
  policy::ReplayTally tally(to != nullptr);
  policy::EgressIntent intent;
  policy::EgressDecision from, against;
  std::string digest;  // the policy every decision is asked of
  for (;;) {
    auto more = (*reader)->Next(&intent);
    if (!more.ok()) return more.status();
    if (!*more) break;
    v1::EvaluateEgressRequest request = RequestFrom(intent);
    request.set_sandbox_id(sandbox);
    v1::EvaluateEgressResponse response;
    auto ctx = MakeContext(options);
    if (auto status = stub->EvaluateEgress(ctx.get(), request, &response); !status.ok()) {
      *exit_code = ReportRpcError(status);
      if (*exit_code == kExitRefused) *exit_code = kExitUsage;  // 1 means "decisions change" here
      return absl::CancelledError("reported");
    }
    // One policy for the whole replay: a re-projection part-way would split the decisions between two
    // policies without saying so (review 104).
    if (digest.empty()) {
      digest = response.policy_digest();
    } else if (response.policy_digest() != digest) {
      return absl::AbortedError(absl::StrCat("sandbox ", sandbox, "'s policy changed during the replay (",
                                             digest.substr(0, 12), " -> ", response.policy_digest().substr(0, 12),
                                             " at line ", (*reader)->line_number(),
                                             "): its decisions would mix two policies; replay again"));
    }
    from.verdict = VerdictFrom(response.decision());
    from.matched_policy = response.matched_policy();
    from.endpoint = response.endpoint();
    from.rule = response.rule();
    from.reason = response.reason();
    if (to != nullptr) to->Decide(intent, &against);
    tally.Add(from, to != nullptr ? &against : nullptr, (*reader)->line_number(), (*reader)->line());
  }
  return std::move(tally).Finish();
}


void PrintJson(const policy::ReplayReport& report, bool two) {
  Struct out;
  auto& fields = *out.mutable_fields();
  fields["intents"] = TextValue(absl::StrCat(report.intents));  // 64-bit counts as decimal strings (ProtoJSON)
  if (two) fields["changed"] = TextValue(absl::StrCat(report.changed));
  auto* groups = fields["groups"].mutable_list_value();
  for (const auto& g : report.groups) {
    Struct group;
    auto& gf = *group.mutable_fields();
    gf["count"] = TextValue(absl::StrCat(g.count));
    Struct from;
    (*from.mutable_fields())["decision"] = TextValue(g.from_verdict);
    (*from.mutable_fields())["rule"] = TextValue(g.from_rule);
    *gf["from"].mutable_struct_value() = from;
    if (two) {
      Struct to;
      (*to.mutable_fields())["decision"] = TextValue(g.to_verdict);
      (*to.mutable_fields())["rule"] = TextValue(g.to_rule);
      *gf["to"].mutable_struct_value() = to;
    }
    Struct example;
    (*example.mutable_fields())["line"].set_number_value(static_cast<double>(g.example_line));
    Value intent;
    if (!google::protobuf::util::JsonStringToMessage(g.example, &intent).ok()) intent = TextValue(g.example);
    (*example.mutable_fields())["intent"] = intent;
    (*example.mutable_fields())["reason"] = TextValue(g.example_reason);
    *gf["example"].mutable_struct_value() = example;
    *groups->add_values()->mutable_struct_value() = group;
  }
  std::cout << ToJson(out) << "\n";
}

void PrintText(const policy::ReplayReport& report, bool two, const std::string& source, const std::string& from,
               const std::string& to) {
  if (two) {
    std::cout << "replayed " << report.intents << " intents from " << source << ": " << report.changed
              << (report.changed == 1 ? " decision changes" : " decisions change") << " from " << from << " to " << to
              << "\n";
  } else {
    std::cout << "replayed " << report.intents << " intents from " << source << " against " << from << "\n";
  }
  if (report.groups.empty()) return;
  std::vector<std::vector<std::string>> rows;
  for (const auto& g : report.groups) {
    if (two) {
      rows.push_back({absl::StrCat(g.count), absl::StrCat(g.from_verdict, " -> ", g.to_verdict), g.from_rule, g.to_rule,
                      absl::StrCat("line ", g.example_line)});
    } else {
      rows.push_back({absl::StrCat(g.count), g.from_verdict, g.from_rule, absl::StrCat("line ", g.example_line)});
    }
  }
  std::cout << "\n";
  if (two) {
    PrintTable({"COUNT", "CHANGE", "RULE (FROM)", "RULE (TO)", "EXAMPLE"}, rows);
  } else {
    PrintTable({"COUNT", "DECISION", "RULE", "EXAMPLE"}, rows);
  }
  std::cout << "\nexamples:\n";
  for (const auto& g : report.groups) {
    std::cout << "  line " << g.example_line << ": " << g.example << "\n";
    if (!g.example_reason.empty()) std::cout << "    " << g.example_reason << "\n";
  }
}

}  // namespace

int RunDecideReplay(const Options& options, const ReplayArgs& args) {
  std::shared_ptr<const policy::EgressPolicy> from, to;
  if (!args.policy_file.empty()) {
    auto policy = policy::LoadPolicyFile(args.policy_file);
    if (!policy.ok()) return ReportLocalError(policy.status());
    from = policy::EgressPolicy::Compile(*policy);
  }
  if (!args.against_file.empty()) {
    auto policy = policy::LoadPolicyFile(args.against_file);
    if (!policy.ok()) return ReportLocalError(policy.status());
    to = policy::EgressPolicy::Compile(*policy);
  }
  absl::StatusOr<policy::ReplayReport> report;
  int exit_code = kExitOk;
  if (from != nullptr) {
    report = policy::ReplayFile(args.replay_file, *from, to.get());
  } else {
    report = ReplayThroughGateway(options, args.sandbox, args.replay_file, to.get(), &exit_code);
    if (!report.ok() && exit_code != kExitOk) return exit_code;  // already reported
  }
  if (!report.ok()) return ReportLocalError(report.status());
  const bool two = to != nullptr;
  if (options.json()) {
    PrintJson(*report, two);
  } else {
    const std::string from_name = from != nullptr ? args.policy_file : absl::StrCat("sandbox ", args.sandbox);
    PrintText(*report, two, args.replay_file, from_name, args.against_file);
  }
  return two && report->changed > 0 ? kExitRefused : kExitOk;
}

}  // namespace osh::cli
