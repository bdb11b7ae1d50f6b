#include "gateway/core/interceptor_merge.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/errors.h"
#include "policy/merge.h"

namespace osh::gateway {

namespace {

namespace merge_ours = openshell::policy::gateway::v1;
using openshell::sandbox::v1::SandboxPolicy;

constexpr char kInvalidMergeOperation[] = "invalid_merge_operation";

// The rules holding an endpoint with `host` (case-insensitive) and `port` (0: any), sorted by name.
std::vector<std::string> MergeRulesWithEndpoint(const SandboxPolicy& policy, const std::string& host, uint32_t port) {
  std::vector<std::string> rules;
  for (const auto& [name, rule] : policy.network_policies()) {
    for (const auto& endpoint : rule.endpoints()) {
      bool port_matches = port == 0 || endpoint.port() == port;
      for (uint32_t p : endpoint.ports()) port_matches = port_matches || p == port;
      if (absl::EqualsIgnoreCase(endpoint.host(), host) && port_matches) {
        rules.push_back(name);
        break;
      }
    }
  }
  std::sort(rules.begin(), rules.end());
  return rules;
}

// The selector of an operation naming only host and port, resolved against `policy`.
absl::StatusOr<merge_ours::EndpointSelector> MergeResolveSelector(const SandboxPolicy& policy, const std::string& rule_name,
                                                            const std::string& host, uint32_t port) {
  merge_ours::EndpointSelector selector;
  selector.set_host(host);
  selector.set_port(port);
  if (!rule_name.empty()) {
    selector.set_rule_id(rule_name);
    return selector;
  }
  const auto rules = MergeRulesWithEndpoint(policy, host, port);
  const std::string where = absl::StrCat(host, port ? absl::StrCat(":", port) : "");
  if (rules.empty()) return absl::NotFoundError(absl::StrCat("no rule has an endpoint ", where));
  if (rules.size() > 1) {
    return absl::FailedPreconditionError(absl::StrCat("ambiguous: rules ", absl::StrJoin(rules, ", "),
                                                      " all have an endpoint ", where,
                                                      "; send UpdateConfig with the full policy instead"));
  }
  selector.set_rule_id(rules.front());
  return selector;
}

absl::StatusOr<merge_ours::PolicyMergeOperation> MergeTranslate(const openshell::v1::PolicyMergeOperation& op,
                                                          const SandboxPolicy& policy) {
  merge_ours::PolicyMergeOperation out;
  switch (op.operation_case()) {
    case openshell::v1::PolicyMergeOperation::kAddRule: {
      auto* add = out.mutable_add_rule();
      add->set_rule_id(op.add_rule().rule_name());
      *add->mutable_rule() = op.add_rule().rule();
      if (add->rule().name().empty()) add->mutable_rule()->set_name(op.add_rule().rule_name());
      return out;
    }
    case openshell::v1::PolicyMergeOperation::kRemoveRule:
      out.mutable_remove_rule()->set_rule_id(op.remove_rule().rule_name());
      return out;
    case openshell::v1::PolicyMergeOperation::kRemoveBinary:
      out.mutable_remove_binary()->set_rule_id(op.remove_binary().rule_name());
      out.mutable_remove_binary()->set_path(op.remove_binary().binary_path());
      return out;
    case openshell::v1::PolicyMergeOperation::kRemoveEndpoint: {
      const auto& remove = op.remove_endpoint();
      auto selector = MergeResolveSelector(policy, remove.rule_name(), remove.host(), remove.port());
      if (!selector.ok()) return selector.status();
      *out.mutable_remove_endpoint()->mutable_endpoint() = *selector;
      return out;
    }
    case openshell::v1::PolicyMergeOperation::kAddAllowRules: {
      const auto& add = op.add_allow_rules();
      auto selector = MergeResolveSelector(policy, "", add.host(), add.port());
      if (!selector.ok()) return selector.status();
      *out.mutable_add_allow_rules()->mutable_endpoint() = *selector;
      *out.mutable_add_allow_rules()->mutable_rules() = add.rules();
      return out;
    }
    case openshell::v1::PolicyMergeOperation::kAddDenyRules: {
      const auto& add = op.add_deny_rules();
      auto selector = MergeResolveSelector(policy, "", add.host(), add.port());
      if (!selector.ok()) return selector.status();
      *out.mutable_add_deny_rules()->mutable_endpoint() = *selector;
      *out.mutable_add_deny_rules()->mutable_deny_rules() = add.deny_rules();
      return out;
    }
    case openshell::v1::PolicyMergeOperation::OPERATION_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError("names no operation");
}

}  // namespace

absl::Status ApplyUpstreamMergeOperations(
    const google::protobuf::RepeatedPtrField<openshell::v1::PolicyMergeOperation>& operations, SandboxPolicy* policy) {
  if (operations.size() > kMaxUpstreamMergeOperations) {
    // Each operation is translated against the policy the ones before it made: bounded, so that one
    // request of a megabyte of operations cannot hold a worker for seconds.
    return common::Refused(absl::StatusCode::kFailedPrecondition, kInvalidMergeOperation,
                           absl::StrCat("mergeOperations: ", operations.size(), " operations, more than the ",
                                        kMaxUpstreamMergeOperations, " one request may carry; send the full policy"));
  }
  SandboxPolicy working = *policy;
  uint64_t copied = 0;  // across the request's operations (policy::kMaxMergeCopiedBytes)
  for (int i = 0; i < operations.size(); ++i) {
    const std::string where = absl::StrCat("mergeOperations[", i, "]");
    auto translated = MergeTranslate(operations[i], working);
    absl::Status status = translated.status();
    // Applied in place to the working copy (a copy per operation was a request's policy size × 256).
    if (status.ok()) status = policy::ApplyMergeOperation(*translated, "", &working, &copied);
    if (!status.ok()) {
      std::string detail(status.message());
      if (absl::StartsWith(detail, ": ")) detail = detail.substr(2);
      return common::Refused(absl::StatusCode::kFailedPrecondition, kInvalidMergeOperation,
                             absl::StrCat(where, ": ", detail));
    }
  }
  *policy = std::move(working);
  return absl::OkStatus();
}

}  // namespace osh::gateway
