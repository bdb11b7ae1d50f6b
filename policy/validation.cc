#include "policy/validation.h"

#include "common/errors.h"
#include "common/ip_network.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <map>
#include <vector>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "policy/glob.h"
#include "policy/route_path.h"

namespace osh::policy {
namespace {

using openshell::sandbox::v1::NetworkEndpoint;
using openshell::sandbox::v1::SandboxPolicy;

constexpr size_t kMaxPathLength = 4096;
constexpr size_t kMaxPaths = 256;
constexpr size_t kMaxMiddlewares = 10;
constexpr size_t kMaxSelectorPatterns = 32;  // include + exclude of one middleware selector (upstream's limit)

// Bounds on what one policy may ask the evaluator to hold (issue 25, item 7). They are ours, not
// upstream's: each keeps the work of matching, containment and the ambiguity check bounded, so a policy
// that exceeds one can never be stored, admitted or evaluated. docs/decisions-and-ceilings.md
// ("Bounds") lists them; a change here is a change there.
constexpr size_t kMaxPolicyBytes = 4 << 20;     // the serialized policy
constexpr size_t kMaxRules = 1024;              // network_policies entries
constexpr size_t kMaxEndpoints = 1024;          // endpoints, in all entries together
constexpr size_t kMaxBinaries = 1024;           // binaries, in all entries together
constexpr size_t kMaxPortsPerEndpoint = 256;    // `ports` of one endpoint
constexpr size_t kMaxMatchersPerRule = 64;      // `query` plus `params` keys of one rule, and `any` entries of one matcher
constexpr size_t kMaxHostLength = 253;          // a DNS name's longest text form
constexpr size_t kMaxGlobLength = 4096;         // a binary path, endpoint or rule path, method, or query glob
constexpr size_t kMaxGlobSegments = 256;        // '/'-separated segments of a binary path or REST path

const std::set<std::string, std::less<>> kProtocols = {"", "tcp", "rest", "websocket", "graphql",
                                                       "sql", "json-rpc", "mcp"};
const std::set<std::string, std::less<>> kL7Protocols = {"rest", "websocket", "graphql", "sql",
                                                         "json-rpc", "mcp"};
const std::set<std::string, std::less<>> kEnforcements = {"", "enforce", "audit"};
const std::set<std::string, std::less<>> kAccess = {"", "read-only", "read-write", "full"};
const std::set<std::string, std::less<>> kCompatibility = {"", "best_effort", "hard_requirement"};
const std::set<std::string, std::less<>> kOnError = {"", "fail_closed", "fail_open"};

std::string Quote(absl::string_view s) { return absl::StrCat("'", s, "'"); }

std::optional<std::string> CheckFilesystemPath(absl::string_view path) {
  if (path.empty() || path.front() != '/') return "must be an absolute path";
  if (path.size() > kMaxPathLength) return absl::StrCat("longer than ", kMaxPathLength, " characters");
  // Every segment follows a '/', so a ".." segment is "/.." followed by '/' or the end.
  for (size_t at = path.find("/.."); at != absl::string_view::npos; at = path.find("/..", at + 1)) {
    if (at + 3 == path.size() || path[at + 3] == '/') return "must not contain a '..' segment";
  }
  return std::nullopt;
}

// Whether an absolute path names "/" once upstream's supervisor normalises it (openshell-core paths.rs
// `normalize_path`: empty and "." segments dropped) — "/", "//", "/.", "/././/".
bool NamesRoot(absl::string_view path) {
  if (path.empty() || path.front() != '/') return false;
  for (absl::string_view segment : absl::StrSplit(path, '/')) {
    if (!segment.empty() && segment != ".") return false;
  }
  return true;
}

std::optional<std::string> CheckRunAs(absl::string_view value) {
  if (value.empty() || value == "sandbox") return std::nullopt;
  if (value == "root") return "root is refused";
  if (std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    uint64_t id = 0;
    if (value.size() > 10 || !absl::SimpleAtoi(value, &id)) return "numeric id out of range";
    if (id == 0) return "root (id 0) is refused";
    if (id > 4294967294ULL) return "numeric id must be from 1 to 4294967294";
    return std::nullopt;
  }
  return absl::StrCat("must be empty, 'sandbox' or a numeric id, got ", Quote(value));
}

// Upstream's host rules: crates/openshell-supervisor-network/src/l7/mod.rs `validate_host_wildcard` and
// crates/openshell-policy/src/lib.rs (`TldWildcard`, `InvalidHostWildcard`). Only `*` makes a host a
// glob there; `?` is accepted (Rego globs it, one character inside a label, when the host also has a
// `*`; otherwise the host is compared exactly), so it is valid here too.
std::optional<std::string> CheckHost(absl::string_view host) {
  if (host.size() > kMaxHostLength) return absl::StrCat("longer than ", kMaxHostLength, " characters");
  if (host == "*" || host == "**") return "a bare wildcard host is refused";
  std::vector<absl::string_view> labels = absl::StrSplit(host, '.');
  bool wildcard = false;
  for (size_t i = 0; i < labels.size(); ++i) {
    absl::string_view label = labels[i];
    if (label.empty()) return absl::StrCat("empty label in ", Quote(host));
    for (char c : label) {
      if (!(absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '*' || c == '?')) {
        return absl::StrCat("invalid character '", std::string(1, c), "' in ", Quote(host));
      }
    }
    const size_t stars = static_cast<size_t>(std::count(label.begin(), label.end(), '*'));
    if (stars == 0) continue;
    wildcard = true;
    if (i + 1 == labels.size()) return absl::StrCat("a wildcard top-level domain is refused: ", Quote(host));
    if (i == 0) {
      if (label == "**" || stars == 1) continue;
      return absl::StrCat("'**' must be the whole first label, and a pattern in it has one '*': ", Quote(host));
    }
    if (label != "*") {
      return absl::StrCat("after the first label a wildcard must be a whole label ('*'): ", Quote(host));
    }
  }
  if (wildcard && labels.size() < 3) {
    return absl::StrCat("a wildcard over a top-level domain is refused: ", Quote(host));
  }
  return std::nullopt;
}

std::optional<std::string> CheckIpOrCidr(absl::string_view entry) {
  const auto network = common::ParseIpNetwork(entry);
  if (network.ok()) return std::nullopt;
  return absl::StrCat(network.status().message(), absl::StartsWith(network.status().message(), "invalid") ? " in " : ": ", Quote(entry));
}

// A glob's size: at most kMaxGlobLength characters and, split at `delimiter`, kMaxGlobSegments segments.
std::optional<std::string> CheckGlobSize(absl::string_view glob, char delimiter) {
  if (glob.size() > kMaxGlobLength) return absl::StrCat("longer than ", kMaxGlobLength, " characters");
  if (static_cast<size_t>(std::count(glob.begin(), glob.end(), delimiter)) + 1 > kMaxGlobSegments) {
    return absl::StrCat("more than ", kMaxGlobSegments, " '", std::string(1, delimiter), "'-separated segments");
  }
  return std::nullopt;
}

bool IsIpLiteral(absl::string_view host) {
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  return common::ParseIpAddress(host).has_value();
}

// A query (or params) matcher: upstream's `validate_matcher_value` (crates/openshell-supervisor-network/
// src/l7/mod.rs) refuses `any: []` ("list must not be empty") and `glob` together with `any`; a matcher
// with neither matches no value at runtime (`query_value_matches` needs a non-empty glob or any).
template <typename Matchers>
std::optional<Violation> CheckMatchers(const Matchers& matchers, const std::string& path) {
  std::vector<std::string> keys;
  for (const auto& [key, matcher] : matchers) keys.push_back(key);
  std::sort(keys.begin(), keys.end());
  for (const auto& key : keys) {
    const auto& matcher = matchers.at(key);
    const std::string where = absl::StrCat(path, ".", key);
    if (!matcher.glob().empty() && matcher.any_size() > 0) {
      return Violation{where, "a matcher cannot specify both `glob` and `any`"};
    }
    if (matcher.glob().empty() && matcher.any_size() == 0) {
      return Violation{where + ".any", "list must not be empty (a matcher needs `glob` or a non-empty `any`)"};
    }
    if (static_cast<size_t>(matcher.any_size()) > kMaxMatchersPerRule) {
      return Violation{where + ".any", absl::StrCat("at most ", kMaxMatchersPerRule, " patterns")};
    }
    if (auto error = CheckGlobSize(matcher.glob(), '.')) return Violation{where + ".glob", *error};
    for (int i = 0; i < matcher.any_size(); ++i) {
      if (matcher.any(i).empty()) return Violation{absl::StrCat(where, ".any[", i, "]"), "may not be empty"};
      if (auto error = CheckGlobSize(matcher.any(i), '.')) return Violation{absl::StrCat(where, ".any[", i, "]"), *error};
    }
  }
  return std::nullopt;
}

// The size bounds and matchers of one allow or deny rule.
template <typename RuleT>
std::optional<Violation> CheckRule(const RuleT& rule, const std::string& path) {
  if (rule.method().size() > kMaxGlobLength) {
    return Violation{path + ".method", absl::StrCat("longer than ", kMaxGlobLength, " characters")};
  }
  if (auto error = CheckGlobSize(rule.path(), '/')) return Violation{path + ".path", *error};
  if (static_cast<size_t>(rule.query_size() + rule.params_size()) > kMaxMatchersPerRule) {
    return Violation{path, absl::StrCat("at most ", kMaxMatchersPerRule, " query and params matchers")};
  }
  if (auto v = CheckMatchers(rule.query(), path + ".query")) return v;
  if (auto v = CheckMatchers(rule.params(), path + ".params")) return v;
  return std::nullopt;
}

// --- The rule shapes upstream's loader refuses per protocol (crates/openshell-supervisor-network/src/l7/
// mod.rs `validate_l7_policies`, `validate_jsonrpc_rule_fields`, `validate_graphql_rule`; the checks every
// version of it with this schema's fields makes). A policy it would not load is not admitted here either.

// l7/mod.rs `glob_uses_wildcard`.
bool UsesWildcard(absl::string_view glob) { return glob.find_first_of("*?[]{}") != absl::string_view::npos; }

template <typename RuleT>
bool HasGraphqlFields(const RuleT& rule) {
  return !rule.operation_type().empty() || !rule.operation_name().empty() || rule.fields_size() > 0;
}

template <typename RuleT>
bool HasTransportFields(const RuleT& rule) {
  return !rule.method().empty() || !rule.path().empty() || rule.query_size() > 0;
}

// An MCP rule that names a tool (`params.name`).
template <typename RuleT>
bool HasToolSelector(const RuleT& rule) { return rule.params().count("name") > 0; }

// `validate_graphql_rule(…, required = true)`: an operation type and no empty field glob. On a `graphql`
// endpoint (lib.rs `validate_sandbox_policy`) the type is exactly `query`, `mutation` or `subscription`;
// in a `websocket` endpoint's GraphQL rules (l7/mod.rs) also `*`, in any case. A persisted query is given
// to upstream's runtime with its `fields` always present, so it must list some (an empty list is refused
// there).
template <typename RuleT>
std::optional<Violation> CheckGraphqlRule(const RuleT& rule, const std::string& path, bool graphql_endpoint,
                                          bool persisted = false) {
  if (rule.operation_type().empty()) return Violation{path + ".operation_type", "required for GraphQL L7 rules"};
  const std::string& type = rule.operation_type();
  if (graphql_endpoint) {
    if (type != "query" && type != "mutation" && type != "subscription") {
      return Violation{path + ".operation_type", absl::StrCat("must be query, mutation, or subscription, got ", Quote(type))};
    }
  } else {
    const std::string lower = absl::AsciiStrToLower(type);
    if (lower != "query" && lower != "mutation" && lower != "subscription" && lower != "*") {
      return Violation{path + ".operation_type", absl::StrCat("expected query, mutation, subscription, or *, got ", Quote(type))};
    }
  }
  if (persisted && rule.fields_size() == 0) {
    return Violation{path + ".fields", "a persisted query must list its root fields (upstream refuses an empty list)"};
  }
  for (int i = 0; i < rule.fields_size(); ++i) {
    if (rule.fields(i).empty()) return Violation{absl::StrCat(path, ".fields[", i, "]"), "field glob must not be empty"};
  }
  return std::nullopt;
}

// `validate_jsonrpc_rule_fields` and the per-protocol rule checks around it, for one allow or deny rule.
template <typename RuleT>
std::optional<Violation> CheckRuleShape(const NetworkEndpoint& ep, const RuleT& rule, const std::string& path, bool is_allow,
                                        bool endpoint_has_tool_allows, bool websocket_graphql_policy) {
  const std::string& protocol = ep.protocol();
  const std::string& method = rule.method();
  if (protocol == "json-rpc") {
    if (method.empty()) return Violation{path + ".method", "required for json-rpc L7 rules"};
    if (method != "*" && UsesWildcard(method)) {
      return Violation{path + ".method",
                       "generic JSON-RPC method rules do not support glob or wildcard matchers; use \"*\" to allow all "
                       "methods or an exact method name"};
    }
    if (rule.params_size() > 0) return Violation{path + ".params", "JSON-RPC rules do not support params matchers yet"};
    if (!rule.path().empty() || rule.query_size() > 0) {
      return Violation{path, "json-rpc L7 rules must use method, not path/query"};
    }
    return std::nullopt;
  }
  if (protocol == "mcp") {
    const bool allow_all_methods = ep.mcp().allow_all_known_mcp_methods();
    const bool strict_names = !ep.mcp().has_strict_tool_names() || ep.mcp().strict_tool_names();
    if (UsesWildcard(method) && !absl::StartsWith(method, "tools/")) {
      return Violation{path + ".method",
                       "MCP method globs are only valid for the tools/ method family; omit method to use the endpoint "
                       "method profile"};
    }
    if (method.empty() && !allow_all_methods) {
      return Violation{path + ".method", "required when mcp.allow_all_known_mcp_methods is false"};
    }
    if (HasToolSelector(rule) && !method.empty() && method != "tools/call") {
      return Violation{path + ".method", absl::StrCat("must be tools/call when an MCP rule uses params.name, got ", Quote(method))};
    }
    std::vector<std::string> keys;
    for (const auto& [key, matcher] : rule.params()) keys.push_back(key);
    std::sort(keys.begin(), keys.end());
    for (const auto& key : keys) {
      if (key != "name") return Violation{absl::StrCat(path, ".params.", key), "MCP tool argument matching is not supported yet"};
    }
    if (HasToolSelector(rule) && !strict_names) {
      const auto& name = rule.params().at("name");
      const bool wildcard = UsesWildcard(name.glob()) ||
                            std::any_of(name.any().begin(), name.any().end(), [](const std::string& g) { return UsesWildcard(g); });
      if (wildcard) {
        return Violation{path + ".params.name", "wildcard tool-name matchers require mcp.strict_tool_names to remain enabled"};
      }
    }
    if (!rule.path().empty() || rule.query_size() > 0) {
      return Violation{path, "mcp L7 rules must use method/tool, not path/query"};
    }
    // A rule without a tool that selects every tools/call, beside allow rules that name tools.
    if (endpoint_has_tool_allows && !HasToolSelector(rule)) {
      const bool every_tool_call = method == "tools/call" || method == "*" || GlobCrateMatches(method, "tools/call") ||
                                   (is_allow && method.empty() && allow_all_methods);
      if (every_tool_call) {
        return Violation{path, is_allow ? "method matcher allows every tool call and conflicts with MCP tool allow rules; "
                                          "add params.name to narrow tools/call, or remove the tool allow rules"
                                        : "method matcher denies every tool call and conflicts with MCP tool allow rules; "
                                          "add params.name to deny specific tools, or remove the tool allow rules"};
      }
    }
    return std::nullopt;
  }
  if (rule.params_size() > 0) {
    return Violation{path + ".params", "params matching is only valid for protocol mcp"};
  }
  if (protocol == "websocket") {
    if (is_allow && websocket_graphql_policy && absl::EqualsIgnoreCase(method, "WEBSOCKET_TEXT")) {
      return Violation{path + ".method",
                       "WebSocket endpoints with GraphQL operation policy must use operation_type/operation_name/fields "
                       "rules for client messages instead of WEBSOCKET_TEXT"};
    }
    if (HasGraphqlFields(rule)) {
      if (HasTransportFields(rule)) {
        return Violation{path, "WebSocket GraphQL rules must not combine method/path/query with operation_type/operation_name/fields"};
      }
      return CheckGraphqlRule(rule, path, false);
    }
    return std::nullopt;
  }
  if (protocol == "graphql") return CheckGraphqlRule(rule, path, true);
  return std::nullopt;
}

std::optional<Violation> CheckProtocolShapes(const NetworkEndpoint& ep, const std::string& path) {
  auto at = [&](absl::string_view field) { return absl::StrCat(path, ".", field); };
  const std::string& protocol = ep.protocol();
  if (!ep.persisted_queries().empty() && ep.persisted_queries() != "deny" && ep.persisted_queries() != "allow_registered") {
    return Violation{at("persisted_queries"), absl::StrCat("must be 'deny' or 'allow_registered', got ", Quote(ep.persisted_queries()))};
  }
  // crates/openshell-policy/src/lib.rs `validate_sandbox_policy`: explicit tcp is L4 — no L7-only field
  // (`validate_explicit_tcp_additional_fields`); `mcp` options only on an mcp endpoint.
  if (protocol == "tcp") {
    std::vector<std::string> l7_only;
    if (!ep.enforcement().empty()) l7_only.push_back("enforcement");
    if (!ep.path().empty()) l7_only.push_back("path");
    if (ep.allow_encoded_slash()) l7_only.push_back("allow_encoded_slash");
    if (ep.websocket_credential_rewrite()) l7_only.push_back("websocket_credential_rewrite");
    if (ep.request_body_credential_rewrite()) l7_only.push_back("request_body_credential_rewrite");
    if (!ep.persisted_queries().empty()) l7_only.push_back("persisted_queries");
    if (!ep.graphql_persisted_queries().empty()) l7_only.push_back("graphql_persisted_queries");
    if (ep.graphql_max_body_bytes() > 0) l7_only.push_back("graphql_max_body_bytes");
    if (ep.json_rpc_max_body_bytes() > 0) l7_only.push_back("json_rpc_max_body_bytes");
    if (ep.has_mcp()) l7_only.push_back("mcp");
    if (!l7_only.empty()) {
      return Violation{at(l7_only.front()), absl::StrCat("protocol tcp does not support L7-only fields: ", absl::StrJoin(l7_only, ", "),
                                                         "; remove those fields")};
    }
  }
  if (protocol != "mcp" && ep.has_mcp()) return Violation{at("mcp"), "mcp options are only valid for protocol mcp"};
  std::vector<std::string> keys;
  for (const auto& [key, op] : ep.graphql_persisted_queries()) keys.push_back(key);
  std::sort(keys.begin(), keys.end());
  for (const auto& key : keys) {
    if (auto v = CheckGraphqlRule(ep.graphql_persisted_queries().at(key), absl::StrCat(path, ".graphql_persisted_queries[", key, "]"),
                                  protocol == "graphql", true)) {
      return v;
    }
  }
  bool tool_allows = false;
  bool graphql_policy = !ep.graphql_persisted_queries().empty() ||
                        (!ep.persisted_queries().empty() && ep.persisted_queries() != "deny");
  for (const auto& rule : ep.rules()) {
    tool_allows = tool_allows || HasToolSelector(rule.allow());
    graphql_policy = graphql_policy || HasGraphqlFields(rule.allow());
  }
  for (const auto& rule : ep.deny_rules()) graphql_policy = graphql_policy || HasGraphqlFields(rule);
  tool_allows = tool_allows && protocol == "mcp";
  graphql_policy = graphql_policy && protocol == "websocket";
  for (int r = 0; r < ep.deny_rules_size(); ++r) {
    if (auto v = CheckRuleShape(ep, ep.deny_rules(r), absl::StrCat(path, ".deny_rules[", r, "]"), false, tool_allows, graphql_policy)) {
      return v;
    }
  }
  for (int r = 0; r < ep.rules_size(); ++r) {
    if (auto v = CheckRuleShape(ep, ep.rules(r).allow(), absl::StrCat(path, ".rules[", r, "].allow"), true, tool_allows, graphql_policy)) {
      return v;
    }
  }
  return std::nullopt;
}

std::optional<Violation> CheckEndpoint(const NetworkEndpoint& ep, const std::string& path) {
  auto at = [&](absl::string_view field) { return absl::StrCat(path, ".", field); };
  if (ep.host().empty()) {
    if (ep.allowed_ips_size() == 0) return Violation{at("host"), "may be empty only when allowed_ips is set"};
    if (ep.protocol() == "tcp") return Violation{at("host"), "a 'tcp' endpoint needs a host"};
    // l7/mod.rs `validate_l7_policies`.
    if (ep.protocol() == "mcp") return Violation{at("host"), "protocol mcp requires host; protocol alone is not a wildcard endpoint"};
  } else if (auto error = CheckHost(ep.host())) {
    return Violation{at("host"), *error};
  } else if (ep.protocol() == "tcp" && IsIpLiteral(ep.host())) {
    // Explicit tcp takes a DNS selector (crates/openshell-policy/src/lib.rs, the explicit-tcp host rules);
    // an address belongs in allowed_ips.
    return Violation{at("host"), "a 'tcp' endpoint's host must be a DNS name, not an IP literal (use allowed_ips)"};
  } else if (ep.protocol() == "tcp") {
    // lib.rs `validate_tcp_dns_host_selector`: a DNS name (wildcards read as one letter) — a label of at
    // most 63 characters.
    for (const absl::string_view label : absl::StrSplit(ep.host(), '.')) {
      // Each '*' (or a whole-label "**") stands for one letter there; hickory's `Label::from_ascii` then takes
      // letters, digits, '_' and a '-' that does not begin the label.
      if (label != "**") {
        for (size_t k = 0; k < label.size(); ++k) {
          const char c = label[k];
          if (!(absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '*' || (c == '-' && k > 0))) {
            return Violation{at("host"), absl::StrCat("a 'tcp' endpoint's host must be a DNS name: ", Quote(label),
                                                      " is not a DNS label (letters, digits, '_', and '-' not first)")};
          }
        }
      }
      if (label != "**" && label.size() > 63) {  // each '*' stands for one letter there: the length is the label's
        return Violation{at("host"), absl::StrCat("a 'tcp' endpoint's host must be a DNS name: the label ", Quote(label),
                                                  " is longer than 63 characters")};
      }
    }
  }
  if (ep.port() > 65535) return Violation{at("port"), "must be from 1 to 65535"};
  if (static_cast<size_t>(ep.ports_size()) > kMaxPortsPerEndpoint) {
    return Violation{at("ports"), absl::StrCat("at most ", kMaxPortsPerEndpoint, " ports")};
  }
  for (int i = 0; i < ep.ports_size(); ++i) {
    if (ep.ports(i) < 1 || ep.ports(i) > 65535) {
      return Violation{absl::StrCat(path, ".ports[", i, "]"), "must be from 1 to 65535"};
    }
  }
  if (ep.port() == 0 && ep.ports_size() == 0) return Violation{at("port"), "an endpoint needs port or ports"};
  if (!kProtocols.contains(ep.protocol())) {
    return Violation{at("protocol"), absl::StrCat("unsupported protocol ", Quote(ep.protocol()))};
  }
  const bool l7 = kL7Protocols.contains(ep.protocol());
  if (!l7 && ep.rules_size() > 0) return Violation{at("rules"), "L7 rules need an L7 protocol"};
  if (!l7 && ep.deny_rules_size() > 0) return Violation{at("deny_rules"), "L7 rules need an L7 protocol"};
  if (!kEnforcements.contains(ep.enforcement())) {
    return Violation{at("enforcement"), absl::StrCat("must be empty, 'enforce' or 'audit', got ", Quote(ep.enforcement()))};
  }
  if (!kAccess.contains(ep.access())) {
    return Violation{at("access"),
                     absl::StrCat("must be empty, 'read-only', 'read-write' or 'full', got ", Quote(ep.access()))};
  }
  if (!ep.access().empty() && ep.rules_size() > 0) {
    return Violation{at("access"), "access may not be combined with rules"};
  }
  if (!ep.access().empty() && ep.protocol() == "tcp") {
    return Violation{at("access"), "an access preset needs an L7 protocol, not 'tcp'"};
  }
  // l7_validate.rs rule 3: the JSON-RPC family takes no access preset.
  if (!ep.access().empty() && (ep.protocol() == "json-rpc" || ep.protocol() == "mcp")) {
    return Violation{at("access"), ep.protocol() == "mcp"
                                       ? "protocol mcp does not support access presets; use rules/deny_rules or set "
                                         "mcp.allow_all_known_mcp_methods: true for an allow-all MCP policy"
                                       : "protocol json-rpc does not support access presets; use explicit rules with "
                                         "allow.method such as \"*\""};
  }
  // Upstream's loader (crates/openshell-policy/src/lib.rs validate_sandbox_policy:
  // PolicyViolation::UnknownCredentialSigning, ::MissingSigningService): a signing mode its proxy knows, and
  // the service it signs for.
  if (!ep.credential_signing().empty()) {
    const std::string& signing = ep.credential_signing();
    if (signing != "sigv4" && signing != "sigv4:body" && signing != "sigv4:no_body") {
      return Violation{at("credential_signing"),
                       absl::StrCat("must be empty, 'sigv4', 'sigv4:body' or 'sigv4:no_body', got ", Quote(signing))};
    }
    if (ep.signing_service().empty()) return Violation{at("signing_service"), "is required with credential_signing"};
    // ::CredentialSigningWithBodyRewrite
    if (ep.request_body_credential_rewrite()) {
      return Violation{at("request_body_credential_rewrite"), "may not be set with credential_signing: they are mutually exclusive"};
    }
  }
  if (ep.protocol() == "sql" && ep.enforcement() == "enforce") {
    return Violation{at("enforcement"), "'sql' endpoints can only audit: enforcement 'enforce' is refused"};
  }
  // Upstream's loader, crates/openshell-policy/src/l7_validate.rs `validate_l7_endpoint_semantics`
  // (also crates/openshell-supervisor-network/src/l7/mod.rs `validate_l7_policies`):
  //   rule 4: json-rpc requires explicit rules; rule 5: every other L7 protocol but mcp requires rules or
  //   access; rule 6: mcp requires rules unless mcp.allow_all_known_mcp_methods.
  const bool has_rules = ep.rules_size() > 0;
  const bool has_access = !ep.access().empty();
  //   rule 9: deny_rules require a base allow set (rules or access), except for mcp.
  if (ep.deny_rules_size() > 0 && ep.protocol() != "mcp" && !has_rules && !has_access) {
    return Violation{at("deny_rules"), "deny_rules require rules or access to define the base allow set"};
  }
  if (ep.protocol() == "json-rpc" && !has_rules) {
    return Violation{at("rules"), "protocol json-rpc requires explicit rules with allow.method"};
  }
  if (l7 && ep.protocol() != "mcp" && ep.protocol() != "json-rpc" && !has_rules && !has_access) {
    return Violation{at("rules"), "protocol requires rules or access to define allowed traffic"};
  }
  if (ep.protocol() == "mcp" && !has_rules && !has_access && !ep.mcp().allow_all_known_mcp_methods()) {
    return Violation{at("rules"), "protocol mcp requires rules when mcp.allow_all_known_mcp_methods is false"};
  }
  // l7/mod.rs `validate_l7_policies`: "endpoint path must start with '/' or be '**'".
  if (!ep.path().empty()) {
    if (ep.path().front() != '/' && ep.path() != "**") {
      return Violation{at("path"), absl::StrCat("must start with '/' or be '**', got ", Quote(ep.path()))};
    }
    if (auto error = CheckGlobSize(ep.path(), '/')) return Violation{at("path"), *error};
  }
  if (static_cast<size_t>(ep.rules_size() + ep.deny_rules_size()) > kMaxL7RulesPerEndpoint) {
    return Violation{at("rules"), absl::StrCat("at most ", kMaxL7RulesPerEndpoint, " rules and deny_rules together")};
  }
  for (int r = 0; r < ep.rules_size(); ++r) {
    const auto& allow = ep.rules(r).allow();
    // (Upstream accepts it on an mcp endpoint that allows every known method: there it means that profile.)
    if (allow.method().empty() && allow.path().empty() && allow.command().empty() && allow.query().empty() &&
        allow.operation_type().empty() && allow.operation_name().empty() && allow.fields().empty() &&
        allow.params().empty() && !(ep.protocol() == "mcp" && ep.mcp().allow_all_known_mcp_methods())) {
      return Violation{absl::StrCat(path, ".rules[", r, "].allow"), "a rule that names nothing allows nothing"};
    }
    if (auto v = CheckRule(allow, absl::StrCat(path, ".rules[", r, "].allow"))) return v;
  }
  for (int r = 0; r < ep.deny_rules_size(); ++r) {
    if (auto v = CheckRule(ep.deny_rules(r), absl::StrCat(path, ".deny_rules[", r, "]"))) return v;
  }
  // l7_validate.rs rule 7 (as lib.rs `validate_sandbox_policy` computes it): rules of which none names a
  // method, path, command, operation, field or params would deny all traffic — a query alone does not count
  // (an mcp endpoint allowing every known method is exempt).
  if (has_rules && !(ep.protocol() == "mcp" && ep.mcp().allow_all_known_mcp_methods()) &&
      std::all_of(ep.rules().begin(), ep.rules().end(), [](const auto& rule) {
        const auto& allow = rule.allow();
        return allow.method().empty() && allow.path().empty() && allow.command().empty() && allow.operation_type().empty() &&
               allow.operation_name().empty() && allow.fields().empty() && allow.params().empty();
      })) {
    return Violation{at("rules"), "rules would deny all traffic (no allow clause names a method, path, command, operation, "
                                  "field or params; a query alone does not). Use `access: full` or add allow clauses to rules."};
  }
  for (int i = 0; i < ep.allowed_ips_size(); ++i) {
    if (auto error = CheckIpOrCidr(ep.allowed_ips(i))) {
      return Violation{absl::StrCat(path, ".allowed_ips[", i, "]"), *error};
    }
  }
  return CheckProtocolShapes(ep, path);
}

// Sorted and without repeats, so two endpoints' ports are compared by one merge.
std::vector<uint32_t> EffectivePorts(const NetworkEndpoint& ep) {
  std::vector<uint32_t> ports;
  if (ep.ports_size() > 0) {
    ports.assign(ep.ports().begin(), ep.ports().end());
  } else {
    ports.push_back(ep.port());
  }
  std::sort(ports.begin(), ports.end());
  ports.erase(std::unique(ports.begin(), ports.end()), ports.end());
  return ports;
}

bool SharePort(const std::vector<uint32_t>& a, const std::vector<uint32_t>& b) {
  for (size_t i = 0, j = 0; i < a.size() && j < b.size();) {
    if (a[i] == b[j]) return true;
    if (a[i] < b[j]) {
      ++i;
    } else {
      ++j;
    }
  }
  return false;
}

// The connection-level settings as upstream's loader compares them (crates/openshell-policy/src/
// ambiguity.rs `normalized_tls`, `normalized_strings`): `skip` or not; the set of trimmed, lower-cased IPs.
std::string TlsMode(absl::string_view tls) { return tls == "skip" ? "skip" : ""; }

std::string AllowedIps(const NetworkEndpoint& ep) {
  std::set<std::string> ips;
  for (const auto& ip : ep.allowed_ips()) ips.insert(absl::AsciiStrToLower(absl::StripAsciiWhitespace(ip)));
  return absl::StrJoin(ips, ",");
}

// ambiguity.rs `endpoint_contributes_request_pipeline_metadata`: an endpoint that takes part in choosing
// the config a request is handled with (Rego's `endpoint_has_extended_config`, plus a credential binding).
bool ContributesRequestMetadata(const NetworkEndpoint& ep) {
  return (!ep.protocol().empty() && ep.protocol() != "tcp") || ep.allowed_ips_size() > 0 || !ep.tls().empty() ||
         ep.has_credential_binding();
}

// ambiguity.rs `websocket_graphql_policy`.
bool WebsocketGraphqlPolicy(const NetworkEndpoint& ep) {
  auto graphql_fields = [](const auto& rule) {
    return !rule.operation_type().empty() || !rule.operation_name().empty() || rule.fields_size() > 0;
  };
  return !ep.graphql_persisted_queries().empty() || (!ep.persisted_queries().empty() && ep.persisted_queries() != "deny") ||
         std::any_of(ep.rules().begin(), ep.rules().end(), [&](const auto& r) { return graphql_fields(r.allow()); }) ||
         std::any_of(ep.deny_rules().begin(), ep.deny_rules().end(), graphql_fields);
}

std::string BodyLimit(uint32_t bytes) { return absl::StrCat(bytes == 0 ? 65536 : bytes); }

using Conflict = std::array<std::string, 3>;  // field, left, right

// The settings two endpoints that can serve the same request must agree on where they differ: upstream's
// `connection_conflicts` (always) and `request_pipeline_conflicts` (when both take part in choosing the
// request's config and neither's `path` is the more specific route for it). `ips` are AllowedIps of each.
void ConnectionConflicts(const NetworkEndpoint& a, const NetworkEndpoint& b, const std::string& a_ips,
                         const std::string& b_ips, std::vector<Conflict>* out) {
  auto differ = [&](absl::string_view field, const std::string& left, const std::string& right) {
    if (left != right) out->push_back({std::string(field), left, right});
  };
  // `tcp` (native L4, eligible for the transparent path) beside anything else: which transport applies
  // would depend on order.
  if ((a.protocol() == "tcp") != (b.protocol() == "tcp")) differ("protocol", a.protocol(), b.protocol());
  differ("tls", TlsMode(a.tls()), TlsMode(b.tls()));
  differ("allowed_ips", a_ips, b_ips);
}

// `a_ws_graphql`, `b_ws_graphql`: WebsocketGraphqlPolicy of each (computed once per endpoint).
void RequestConflicts(const NetworkEndpoint& a, const NetworkEndpoint& b, bool a_ws_graphql, bool b_ws_graphql,
                      std::vector<Conflict>* out) {
  auto differ = [&](absl::string_view field, const std::string& left, const std::string& right) {
    if (left != right) out->push_back({std::string(field), left, right});
  };
  auto flag = [](bool value) { return std::string(value ? "true" : "false"); };
  auto protocol = [](const NetworkEndpoint& ep) { return ep.protocol() == "tcp" ? std::string() : ep.protocol(); };
  if ((a.protocol() == "tcp") == (b.protocol() == "tcp")) differ("protocol", protocol(a), protocol(b));
  differ("enforcement", a.enforcement() == "enforce" ? "enforce" : "audit", b.enforcement() == "enforce" ? "enforce" : "audit");
  differ("allow_encoded_slash", flag(a.allow_encoded_slash()), flag(b.allow_encoded_slash()));
  differ("websocket_credential_rewrite", flag(a.websocket_credential_rewrite()), flag(b.websocket_credential_rewrite()));
  differ("request_body_credential_rewrite", flag(a.request_body_credential_rewrite()),
         flag(b.request_body_credential_rewrite()));
  if (a.protocol() == "websocket" && b.protocol() == "websocket") {
    differ("websocket_graphql_policy", flag(a_ws_graphql), flag(b_ws_graphql));
  }
  differ("credential_signing", a.credential_signing(), b.credential_signing());
  differ("signing_service", a.signing_service(), b.signing_service());
  differ("signing_region", a.signing_region(), b.signing_region());
  differ("credential_binding.provider", a.credential_binding().provider(), b.credential_binding().provider());
  if (a.protocol() == "graphql" && b.protocol() == "graphql") {
    differ("graphql_max_body_bytes", BodyLimit(a.graphql_max_body_bytes()), BodyLimit(b.graphql_max_body_bytes()));
  }
  if (a.protocol() == b.protocol() && (a.protocol() == "json-rpc" || a.protocol() == "mcp")) {
    differ("json_rpc_max_body_bytes", BodyLimit(a.json_rpc_max_body_bytes()), BodyLimit(b.json_rpc_max_body_bytes()));
  }
  if (a.protocol() == "mcp" && b.protocol() == "mcp") {
    auto strict = [&](const NetworkEndpoint& ep) { return flag(!ep.mcp().has_strict_tool_names() || ep.mcp().strict_tool_names()); };
    differ("mcp.strict_tool_names", strict(a), strict(b));
  }
}

// Work the overlap tests of one policy may do (pattern characters × pattern characters, summed over the
// pairs of glob hosts and of paths they compare): ours, so a policy of a thousand long globs cannot stall
// validation.
constexpr size_t kMaxOverlapWork = size_t{64} << 20;

// Two endpoints that can serve the same request must agree on how it is handled: otherwise which one
// applies would depend on evaluation order. Upstream's loader refuses such a policy
// (crates/openshell-policy/src/ambiguity.rs `find_endpoint_ambiguities`); so do we, naming both.
std::optional<Violation> FindAmbiguity(const SandboxPolicy& policy, const std::vector<std::string>& rule_ids) {
  struct Located {
    std::string where;
    const NetworkEndpoint* ep;
    std::vector<uint32_t> ports;
    std::string ips;  // AllowedIps, once
    bool request_metadata;
    size_t specificity;
    bool ws_graphql;  // WebsocketGraphqlPolicy, once
    std::string tail;  // the lower-cased host after its last '*' (all of it without one)
  };
  std::vector<Located> all;
  for (const auto& id : rule_ids) {
    const auto& rule = policy.network_policies().at(id);
    for (int i = 0; i < rule.endpoints_size(); ++i) {
      const NetworkEndpoint& ep = rule.endpoints(i);
      const std::string host = absl::AsciiStrToLower(ep.host());
      all.push_back({absl::StrCat("network_policies.", id, ".endpoints[", i, "]"), &ep, EffectivePorts(ep), AllowedIps(ep),
                     ContributesRequestMetadata(ep), RoutePathSpecificity(ep.path()),
                     ep.protocol() == "websocket" && WebsocketGraphqlPolicy(ep), host.substr(host.find_last_of('*') + 1)});
    }
  }
  size_t work = 0;
  for (size_t i = 0; i < all.size(); ++i) {
    for (size_t j = i + 1; j < all.size(); ++j) {
      const Located& a = all[i];
      const Located& b = all[j];
      if (!SharePort(a.ports, b.ports)) continue;
      // Hosts that cannot meet, found cheaply: two literal hosts that differ, or literal tails (what
      // follows the last '*') of which neither ends the other — every name a host matches ends with its
      // tail. (Hostless endpoints meet every host.)
      const std::string& ha = a.ep->host();
      const std::string& hb = b.ep->host();
      const bool glob_hosts = ha.find('*') != std::string::npos || hb.find('*') != std::string::npos;
      if (!ha.empty() && !hb.empty() && !absl::EndsWith(a.tail, b.tail) && !absl::EndsWith(b.tail, a.tail)) continue;
      if (!ha.empty() && !hb.empty() && !glob_hosts && a.tail != b.tail) continue;
      // Then what they disagree on; only a disagreement needs the globs compared, and that work is bounded.
      std::vector<Conflict> conflicts;
      ConnectionConflicts(*a.ep, *b.ep, a.ips, b.ips, &conflicts);
      std::vector<Conflict> request;
      if (a.request_metadata && b.request_metadata && a.specificity == b.specificity) {
        RequestConflicts(*a.ep, *b.ep, a.ws_graphql, b.ws_graphql, &request);
      }
      if (conflicts.empty() && request.empty()) continue;
      auto charge = [&](absl::string_view x, absl::string_view y) {
        work += (x.size() + 1) * (y.size() + 1);
        return work <= kMaxOverlapWork;
      };
      auto too_much = [&] {
        return Violation{"network_policies",
                         absl::StrCat("too many endpoints that disagree with long host or `path` globs on one port to check "
                                      "them for ambiguity (at ", a.where, " and ", b.where, ")")};
      };
      // Hosts as upstream's loader reads them (a hostless endpoint serves any host; `?` is literal).
      if (!ha.empty() && !hb.empty() && glob_hosts) {
        if (!charge(ha, hb)) return too_much();
        if (!LoaderHostsOverlap(ha, hb)) continue;
      }
      if (!request.empty()) {
        if (!charge(a.ep->path(), b.ep->path())) return too_much();
        if (RoutePathsOverlap(a.ep->path(), b.ep->path())) conflicts.insert(conflicts.end(), request.begin(), request.end());
      }
      if (conflicts.empty()) continue;
      std::vector<std::string> parts;
      for (const auto& [field, left, right] : conflicts) parts.push_back(absl::StrCat(field, ": ", Quote(left), " vs ", Quote(right)));
      auto selector = [](const NetworkEndpoint& ep) {
        return absl::StrCat(ep.host().empty() ? "any host" : ep.host(), ep.path().empty() ? "" : " ", ep.path());
      };
      return Violation{"network_policies",
                       absl::StrCat(a.where, " (", selector(*a.ep), ") and ", b.where, " (", selector(*b.ep),
                                    ") can serve the same request but disagree on ", absl::StrJoin(parts, "; "))};
    }
  }
  return std::nullopt;
}

}  // namespace

std::vector<Violation> FindViolations(const SandboxPolicy& policy, size_t limit) {
  std::vector<Violation> out;
  // true once `limit` violations are found: the caller returns them.
  auto found = [&](Violation v) {
    out.push_back(std::move(v));
    return out.size() >= limit;
  };
  if (policy.version() != 1) {
    if (found(Violation{"version", absl::StrCat("must be 1, got ", policy.version())})) return out;
  }
  const auto& fs = policy.filesystem();
  if (static_cast<size_t>(fs.read_only_size() + fs.read_write_size()) > kMaxPaths) {
    if (found(Violation{"filesystem", absl::StrCat("at most ", kMaxPaths, " paths in all")})) return out;
  }
  for (int i = 0; i < fs.read_only_size(); ++i) {
    if (auto error = CheckFilesystemPath(fs.read_only(i))) {
      if (found(Violation{absl::StrCat("filesystem.read_only[", i, "]"), *error})) return out;
    }
  }
  for (int i = 0; i < fs.read_write_size(); ++i) {
    if (auto error = CheckFilesystemPath(fs.read_write(i))) {
      if (found(Violation{absl::StrCat("filesystem.read_write[", i, "]"), *error})) return out;
    }
    if (NamesRoot(fs.read_write(i))) {  // "/", "//", "/.", "/./": upstream's supervisor normalises them to "/"
      if (found(Violation{absl::StrCat("filesystem.read_write[", i, "]"), "'/' may not be read-write"})) return out;
    }
  }
  if (!kCompatibility.contains(policy.landlock().compatibility())) {
    if (found(Violation{"landlock.compatibility",
                     absl::StrCat("must be empty, 'best_effort' or 'hard_requirement', got ",
                                  Quote(policy.landlock().compatibility()))})) return out;
  }
  if (auto error = CheckRunAs(policy.process().run_as_user()); error && found(Violation{"process.run_as_user", *error})) {
    return out;
  }
  if (auto error = CheckRunAs(policy.process().run_as_group()); error && found(Violation{"process.run_as_group", *error})) {
    return out;
  }

  if (const size_t bytes = policy.ByteSizeLong(); bytes > kMaxPolicyBytes) {
    if (found(Violation{"network_policies", absl::StrCat("the policy is ", bytes, " bytes; at most ", kMaxPolicyBytes)})) return out;
  }
  if (static_cast<size_t>(policy.network_policies_size()) > kMaxRules) {
    if (found(Violation{"network_policies", absl::StrCat("at most ", kMaxRules, " entries")})) return out;
  }
  size_t endpoints = 0, binaries = 0;
  for (const auto& [id, rule] : policy.network_policies()) {
    endpoints += static_cast<size_t>(rule.endpoints_size());
    binaries += static_cast<size_t>(rule.binaries_size());
  }
  if (endpoints > kMaxEndpoints) {
    if (found(Violation{"network_policies", absl::StrCat("at most ", kMaxEndpoints, " endpoints in all, got ", endpoints)})) return out;
  }
  if (binaries > kMaxBinaries) {
    if (found(Violation{"network_policies", absl::StrCat("at most ", kMaxBinaries, " binaries in all, got ", binaries)})) return out;
  }
  // Past a bound nothing further is checked: each check below is sized by what the bounds allow.
  if (!out.empty() && out.back().path == "network_policies") return out;

  // Map iteration order is unspecified; check rules in key order so the first violation is stable.
  std::vector<std::string> rule_ids;
  for (const auto& [id, rule] : policy.network_policies()) rule_ids.push_back(id);
  std::sort(rule_ids.begin(), rule_ids.end());
  for (const auto& id : rule_ids) {
    const auto& rule = policy.network_policies().at(id);
    const std::string rule_path = absl::StrCat("network_policies.", id);
    if (id.empty() && found(Violation{"network_policies", "a rule id may not be empty"})) return out;
    for (int i = 0; i < rule.endpoints_size(); ++i) {
      if (auto v = CheckEndpoint(rule.endpoints(i), absl::StrCat(rule_path, ".endpoints[", i, "]")); v && found(*v)) return out;
    }
    for (int i = 0; i < rule.binaries_size(); ++i) {
      if (rule.binaries(i).path().empty()) {
        if (found(Violation{absl::StrCat(rule_path, ".binaries[", i, "].path"), "may not be empty"})) return out;
      }
      if (auto error = CheckGlobSize(rule.binaries(i).path(), '/')) {
        if (found(Violation{absl::StrCat(rule_path, ".binaries[", i, "].path"), *error})) return out;
      }
    }
  }

  // Ambiguity is judged between valid endpoints only.
  if (out.empty()) {
    if (auto v = FindAmbiguity(policy, rule_ids); v && found(*v)) return out;
  }

  if (static_cast<size_t>(policy.network_middlewares_size()) > kMaxMiddlewares) {
    if (found(Violation{"network_middlewares", absl::StrCat("at most ", kMaxMiddlewares, " middleware configs")})) return out;
  }
  std::vector<std::string> middleware_ids;
  for (const auto& [id, mw] : policy.network_middlewares()) middleware_ids.push_back(id);
  std::sort(middleware_ids.begin(), middleware_ids.end());
  std::map<int32_t, std::string> orders;
  for (const auto& id : middleware_ids) {
    const auto& mw = policy.network_middlewares().at(id);
    const std::string mw_path = absl::StrCat("network_middlewares.", id);
    // Upstream's supervisor refuses, at load, what its validator refuses (crates/openshell-policy/src/
    // middleware.rs `validate`), in its order; a policy it would not load is not admitted here either.
    if (id.empty()) {
      if (found(Violation{mw_path, "middleware config name must not be empty"})) return out;
    }
    if (auto [it, inserted] = orders.emplace(mw.order(), id); !inserted) {
      if (found(Violation{mw_path + ".order", absl::StrCat("order ", mw.order(), " is also used by ", Quote(it->second))})) return out;
    }
    if (mw.middleware().empty()) {
      if (found(Violation{mw_path + ".middleware", "must not be empty (the middleware implementation to run)"})) return out;
    }
    if (!kOnError.contains(mw.on_error())) {
      if (found(Violation{mw_path + ".on_error",
                       absl::StrCat("must be empty, 'fail_closed' or 'fail_open', got ", Quote(mw.on_error()))})) return out;
    }
    if (!mw.has_endpoints()) {
      if (found(Violation{mw_path + ".endpoints", "an endpoint selector is required (endpoints.include: the hosts it runs for)"})) return out;
      continue;
    }
    const auto& selector = mw.endpoints();
    if (selector.include().empty()) {
      if (found(Violation{mw_path + ".endpoints.include", "must list at least one host pattern"})) return out;
    }
    if (static_cast<size_t>(selector.include_size()) + selector.exclude_size() > kMaxSelectorPatterns) {
      if (found(Violation{mw_path + ".endpoints", absl::StrCat("at most ", kMaxSelectorPatterns, " include and exclude patterns together, got ",
                                                             selector.include_size() + selector.exclude_size())})) return out;
      continue;
    }
    for (const auto& [list, field] : {std::pair{&selector.include(), "include"}, std::pair{&selector.exclude(), "exclude"}}) {
      for (int i = 0; i < list->size(); ++i) {
        if (auto error = SelectorHostPatternError(list->Get(i))) {
          if (found(Violation{absl::StrCat(mw_path, ".endpoints.", field, "[", i, "]"), absl::StrCat(Quote(list->Get(i)), ": ", *error)})) return out;
        }
      }
    }
  }
  return out;
}

std::optional<Violation> FindViolation(const SandboxPolicy& policy) {
  std::vector<Violation> first = FindViolations(policy, 1);
  if (first.empty()) return std::nullopt;
  return std::move(first.front());
}

absl::Status ValidatePolicy(const SandboxPolicy& policy) {
  if (auto violation = FindViolation(policy)) {
    return common::Refused(absl::StatusCode::kInvalidArgument, "invalid_policy",
                           absl::StrCat(violation->path, ": ", violation->message));
  }
  return absl::OkStatus();
}

std::vector<std::string> InternalMarkers(const SandboxPolicy& policy) {
  std::vector<std::string> markers;
  for (const auto& [id, rule] : policy.network_policies()) {
    for (int i = 0; i < rule.endpoints_size(); ++i) {
      const auto& ep = rule.endpoints(i);
      const std::string path = absl::StrCat("network_policies.", id, ".endpoints[", i, "].");
      if (ep.advisor_proposed()) markers.push_back(path + "advisor_proposed");
      if (ep.provider_credentialed()) markers.push_back(path + "provider_credentialed");
    }
    // Deprecated and ignored by SCHEMA.md and upstream's file loader, but upstream's runtime reads it as the
    // advisor's provenance (no exact-host private-address trust for that binary): noted (review 103).
    for (int i = 0; i < rule.binaries_size(); ++i) {
      if (rule.binaries(i).harness()) markers.push_back(absl::StrCat("network_policies.", id, ".binaries[", i, "].harness"));
    }
  }
  std::sort(markers.begin(), markers.end());
  return markers;
}

}  // namespace osh::policy
