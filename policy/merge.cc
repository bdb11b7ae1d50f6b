#include "policy/merge.h"

#include "policy/validation.h"

#include "absl/strings/match.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace osh::policy {
namespace {

using openshell::policy::gateway::v1::EndpointSelector;
using openshell::policy::gateway::v1::PolicyMergeOperation;
using openshell::sandbox::v1::NetworkEndpoint;
using openshell::sandbox::v1::NetworkPolicyRule;
using openshell::sandbox::v1::SandboxPolicy;

bool Matches(const NetworkEndpoint& endpoint, const EndpointSelector& selector) {
  if (!absl::EqualsIgnoreCase(endpoint.host(), selector.host())) return false;
  if (selector.port() == 0) return true;
  if (endpoint.ports_size() > 0) {
    for (uint32_t port : endpoint.ports()) {
      if (port == selector.port()) return true;
    }
    return false;
  }
  return endpoint.port() == selector.port();
}

absl::StatusOr<NetworkPolicyRule*> FindRule(SandboxPolicy* policy, const std::string& rule_id,
                                            const std::string& where) {
  if (rule_id.empty()) return absl::InvalidArgumentError(absl::StrCat(where, ": rule_id is required"));
  auto it = policy->mutable_network_policies()->find(rule_id);
  if (it == policy->mutable_network_policies()->end()) {
    return absl::NotFoundError(absl::StrCat(where, ": no network policy rule '", rule_id, "'"));
  }
  return &it->second;
}

// Every endpoint the selector names; NOT_FOUND when there is none.
absl::StatusOr<std::vector<NetworkEndpoint*>> FindEndpoints(SandboxPolicy* policy, const EndpointSelector& selector,
                                                            const std::string& where) {
  auto rule = FindRule(policy, selector.rule_id(), where);
  if (!rule.ok()) return rule.status();
  std::vector<NetworkEndpoint*> found;
  for (auto& endpoint : *(*rule)->mutable_endpoints()) {
    if (Matches(endpoint, selector)) found.push_back(&endpoint);
  }
  if (found.empty()) {
    return absl::NotFoundError(absl::StrCat(where, ": rule '", selector.rule_id(), "' has no endpoint ",
                                            selector.host(), selector.port() ? absl::StrCat(":", selector.port()) : ""));
  }
  return found;
}

// Rules to be added to each of `endpoints`: refused before anything is copied when one would hold more
// than validation takes (a selector matching every endpoint of a host times a list of rules).
template <typename Rules>
absl::Status RulesPastBound(const std::vector<NetworkEndpoint*>& endpoints, const Rules& rules, const std::string& where,
                            uint64_t* copied) {
  uint64_t bytes = 0;
  for (const auto& rule : rules) bytes += rule.ByteSizeLong();
  *copied += bytes * endpoints.size();
  if (*copied > kMaxMergeCopiedBytes) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": the update copies ", *copied,
                                                   " bytes of rules into the endpoints its selectors match, at most ",
                                                   kMaxMergeCopiedBytes));
  }
  const int adding = rules.size();
  for (const NetworkEndpoint* endpoint : endpoints) {
    const size_t total = static_cast<size_t>(endpoint->rules_size()) + endpoint->deny_rules_size() + adding;
    if (total > kMaxL7RulesPerEndpoint) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": endpoint ", endpoint->host(), " would hold ", total,
                                                     " rules and deny_rules, at most ", kMaxL7RulesPerEndpoint));
    }
  }
  return absl::OkStatus();
}

absl::Status ApplyOne(const PolicyMergeOperation& op, const std::string& where, SandboxPolicy* policy,
                      uint64_t* copied) {
  switch (op.operation_case()) {
    case PolicyMergeOperation::kAddRule: {
      if (op.add_rule().rule_id().empty()) return absl::InvalidArgumentError(absl::StrCat(where, ": rule_id is required"));
      (*policy->mutable_network_policies())[op.add_rule().rule_id()] = op.add_rule().rule();
      return absl::OkStatus();
    }
    case PolicyMergeOperation::kRemoveRule: {
      auto rule = FindRule(policy, op.remove_rule().rule_id(), where);
      if (!rule.ok()) return rule.status();
      policy->mutable_network_policies()->erase(op.remove_rule().rule_id());
      return absl::OkStatus();
    }
    case PolicyMergeOperation::kAddAllowRules: {
      auto endpoints = FindEndpoints(policy, op.add_allow_rules().endpoint(), where);
      if (!endpoints.ok()) return endpoints.status();
      if (auto full = RulesPastBound(*endpoints, op.add_allow_rules().rules(), where, copied); !full.ok()) return full;
      for (NetworkEndpoint* endpoint : *endpoints) {
        for (const auto& rule : op.add_allow_rules().rules()) *endpoint->add_rules() = rule;
      }
      return absl::OkStatus();
    }
    case PolicyMergeOperation::kAddDenyRules: {
      auto endpoints = FindEndpoints(policy, op.add_deny_rules().endpoint(), where);
      if (!endpoints.ok()) return endpoints.status();
      if (auto full = RulesPastBound(*endpoints, op.add_deny_rules().deny_rules(), where, copied); !full.ok()) return full;
      for (NetworkEndpoint* endpoint : *endpoints) {
        for (const auto& rule : op.add_deny_rules().deny_rules()) *endpoint->add_deny_rules() = rule;
      }
      return absl::OkStatus();
    }
    case PolicyMergeOperation::kRemoveEndpoint: {
      const auto& selector = op.remove_endpoint().endpoint();
      if (auto found = FindEndpoints(policy, selector, where); !found.ok()) return found.status();
      auto* endpoints = (*policy->mutable_network_policies())[selector.rule_id()].mutable_endpoints();
      for (int i = endpoints->size() - 1; i >= 0; --i) {
        if (Matches(endpoints->Get(i), selector)) endpoints->DeleteSubrange(i, 1);
      }
      return absl::OkStatus();
    }
    case PolicyMergeOperation::kRemoveBinary: {
      auto rule = FindRule(policy, op.remove_binary().rule_id(), where);
      if (!rule.ok()) return rule.status();
      auto* binaries = (*rule)->mutable_binaries();
      const int before = binaries->size();
      for (int i = binaries->size() - 1; i >= 0; --i) {
        if (binaries->Get(i).path() == op.remove_binary().path()) binaries->DeleteSubrange(i, 1);
      }
      if (binaries->size() == before) {
        return absl::NotFoundError(absl::StrCat(where, ": rule '", op.remove_binary().rule_id(), "' has no binary '",
                                                op.remove_binary().path(), "'"));
      }
      // An entry left without binaries goes, as upstream's merge removes it: an empty list grants nothing to
      // upstream's runtime but every binary to its merge rules and docs, so a removal never leaves one. (A later
      // operation of the batch naming the entry then fails NOT_FOUND, where newest upstream does nothing.)
      if (binaries->empty()) policy->mutable_network_policies()->erase(op.remove_binary().rule_id());
      return absl::OkStatus();
    }
    case PolicyMergeOperation::OPERATION_NOT_SET: break;
  }
  return absl::InvalidArgumentError(absl::StrCat(where, ": no operation set"));
}

}  // namespace

absl::Status ApplyMergeOperation(const PolicyMergeOperation& operation, absl::string_view where,
                                 SandboxPolicy* policy, uint64_t* copied) {
  uint64_t own = 0;
  return ApplyOne(operation, std::string(where), policy, copied != nullptr ? copied : &own);
}

absl::Status ApplyMergeOperations(const google::protobuf::RepeatedPtrField<PolicyMergeOperation>& operations,
                                  SandboxPolicy* policy) {
  if (operations.empty()) return absl::InvalidArgumentError("operations: at least one operation is required");
  if (operations.size() > kMaxMergeOperations) {
    return absl::InvalidArgumentError(
        absl::StrCat("operations: ", operations.size(), ", at most ", kMaxMergeOperations, " in one update"));
  }
  SandboxPolicy working = *policy;
  uint64_t copied = 0;
  for (int i = 0; i < operations.size(); ++i) {
    if (auto status = ApplyOne(operations.Get(i), absl::StrCat("operations[", i, "]"), &working, &copied);
        !status.ok()) {
      return status;
    }
  }
  *policy = std::move(working);
  return absl::OkStatus();
}

}  // namespace osh::policy
