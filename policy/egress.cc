#include "policy/egress.h"

#include <algorithm>
#include <map>
#include <new>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/container/inlined_vector.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "policy/destination.h"
#include "policy/glob.h"
#include "policy/route_path.h"

namespace osh::policy {

using openshell::sandbox::v1::NetworkEndpoint;
using openshell::sandbox::v1::SandboxPolicy;

absl::string_view VerdictName(EgressVerdict verdict) {
  switch (verdict) {
    case EgressVerdict::kAllow: return "allow";
    case EgressVerdict::kDeny: return "deny";
    case EgressVerdict::kAudit: return "audit";
    case EgressVerdict::kUnsupported: return "unsupported";
  }
  return "deny";
}

std::vector<std::pair<std::string, std::string>> PresetRules(absl::string_view protocol, absl::string_view access) {
  // Upstream's access_preset_rules (l7/mod.rs): graphql's presets are operation-type rules (query,
  // mutation, any), which allow no request by method and path; websocket's allow the upgrade (GET) and,
  // read-write, text frames; every other protocol takes REST's.
  if (protocol == "graphql") return {};
  if (protocol == "websocket") {
    if (access == "read-only") return {{"GET", "**"}};
    if (access == "read-write") return {{"GET", "**"}, {"WEBSOCKET_TEXT", "**"}};
    if (access == "full") return {{"*", "**"}};
    return {};
  }
  if (access == "read-only") return {{"GET", "**"}, {"HEAD", "**"}, {"OPTIONS", "**"}};
  if (access == "read-write") {
    return {{"GET", "**"}, {"HEAD", "**"}, {"OPTIONS", "**"}, {"POST", "**"}, {"PUT", "**"}, {"PATCH", "**"}};
  }
  if (access == "full") return {{"*", "**"}};
  return {};
}

namespace {

enum class Match { kNo, kYes, kUnknown };

// A glob that may be outside the modelled language: then `unsupported` says why.
struct MaybeGlob {
  std::optional<Glob> glob;
  std::string unsupported;
  bool match_all = false;  // the REST path "**", which upstream matches without a glob

  static MaybeGlob Of(absl::string_view pattern, char delimiter) {
    MaybeGlob out;
    auto parsed = Glob::Parse(pattern, delimiter);
    if (parsed.ok()) {
      out.glob = std::move(*parsed);
    } else {
      out.unsupported = std::string(parsed.status().message());
    }
    return out;
  }
  Match Test(absl::string_view text) const {
    if (match_all) return Match::kYes;
    if (!glob) return Match::kUnknown;
    return glob->Matches(text) ? Match::kYes : Match::kNo;
  }
};

struct QueryMatcher {
  std::string key;
  std::vector<MaybeGlob> patterns;  // the `glob` (when set) and every `any`
};

struct Rule {
  std::string method;
  MaybeGlob path;
  std::vector<QueryMatcher> query;
  std::string label;
};

struct Endpoint {
  size_t entry = 0;
  std::string host;  // lower-cased
  std::optional<Glob> host_glob;
  std::string host_suffix;  // a glob host's literal text after its last '*': a cheap first test
  bool hostless = false;
  std::vector<IpNetwork> allowed_ips;  // checked after the policy (policy/destination.h)
  std::string tls;                     // "skip": the proxy does not terminate TLS there
  bool extended = false;  // a protocol, allowed_ips or tls: where upstream's proxy takes its destination settings
  std::vector<uint32_t> ports;
  std::string protocol;
  bool enforce = false;
  // An L7 config upstream's proxy inspects requests with (l7/mod.rs `parse_l7_config`): an L7 protocol.
  // (It also drops an unusable credential_signing, which validation refuses.)
  bool l7_config = false;
  std::string route;  // the endpoint's `path`: selects among L7 configs (policy/route_path.h)
  std::optional<MaybeGlob> path_scope;  // the same `path` as Rego reads it: scopes the rules
  std::vector<Rule> allow;
  std::vector<Rule> deny;
  std::string label;

  bool HasPort(uint32_t port) const { return std::find(ports.begin(), ports.end(), port) != ports.end(); }
};

struct Entry {
  std::string key;
  absl::flat_hash_set<std::string> exact_binaries;
  std::vector<MaybeGlob> glob_binaries;
  std::vector<std::string> glob_sources;
};

// Bounds on one intent (docs/decisions-and-ceilings.md, "Bounds"): beyond them the answer is
// `unsupported`, never a guess, and matching work stays bounded (O(pattern × subject), both bounded).
constexpr size_t kMaxIntentHost = 1024;
constexpr size_t kMaxIntentPath = 8192;  // the executable, each ancestor, the request path
constexpr size_t kMaxIntentAncestors = 256;
constexpr size_t kMaxIntentQueryValues = 1024;  // query values in all
constexpr size_t kMaxRouteWork = size_t{1} << 23;  // route matching for one request (route_path.h)

std::optional<std::string> IntentTooLarge(const EgressIntent& intent) {
  if (intent.host.size() > kMaxIntentHost) return absl::StrCat("the host is longer than ", kMaxIntentHost, " bytes");
  if (intent.binary.size() > kMaxIntentPath) return absl::StrCat("the binary path is longer than ", kMaxIntentPath, " bytes");
  if (intent.ancestors.size() > kMaxIntentAncestors) return absl::StrCat("more than ", kMaxIntentAncestors, " ancestors");
  for (const auto& a : intent.ancestors) {
    if (a.size() > kMaxIntentPath) return absl::StrCat("an ancestor path is longer than ", kMaxIntentPath, " bytes");
  }
  if (intent.request) {
    if (intent.request->path.size() > kMaxIntentPath || intent.request->method.size() > kMaxIntentPath) {
      return absl::StrCat("the request method or path is longer than ", kMaxIntentPath, " bytes");
    }
    size_t values = 0;
    for (const auto& [key, list] : intent.request->query) {
      values += list.size() + 1;
      if (key.size() > kMaxIntentPath) return absl::StrCat("a query key is longer than ", kMaxIntentPath, " bytes");
      for (const auto& v : list) {
        if (v.size() > kMaxIntentPath) return absl::StrCat("a query value is longer than ", kMaxIntentPath, " bytes");
      }
    }
    if (values > kMaxIntentQueryValues) return absl::StrCat("more than ", kMaxIntentQueryValues, " query keys and values");
  }
  return std::nullopt;
}

bool HasControl(absl::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; });
}

MaybeGlob RestPath(absl::string_view pattern) {
  if (pattern == "**") {
    MaybeGlob all;
    all.match_all = true;
    return all;
  }
  return MaybeGlob::Of(pattern, '/');
}

Rule CompileRule(absl::string_view method, absl::string_view path,
                 const google::protobuf::Map<std::string, openshell::sandbox::v1::L7QueryMatcher>& query,
                 std::string label) {
  Rule rule;
  rule.method = std::string(method);
  rule.path = RestPath(path);
  std::map<std::string, const openshell::sandbox::v1::L7QueryMatcher*> sorted;
  for (const auto& [key, matcher] : query) sorted.emplace(key, &matcher);
  for (const auto& [key, matcher] : sorted) {
    QueryMatcher compiled;
    compiled.key = key;
    if (!matcher->glob().empty()) compiled.patterns.push_back(MaybeGlob::Of(matcher->glob(), '.'));
    for (const auto& any : matcher->any()) compiled.patterns.push_back(MaybeGlob::Of(any, '.'));
    rule.query.push_back(std::move(compiled));
  }
  rule.label = std::move(label);
  return rule;
}

}  // namespace

// A middleware whose effective on_uninspectable is deny (on_error other than fail_open; this schema has no
// on_uninspectable field): upstream's supervisor denies uninspectable traffic it selects
// (l7/uninspectable.rs; the newest refuses to load such a policy when a `tls: skip` endpoint is selected).
struct DenyingMiddleware {
  std::string key;
  std::vector<MaybeGlob> include;  // lower-cased host patterns, '.'-delimited
  std::vector<MaybeGlob> exclude;
  // kYes when the middleware selects `host` (an include matches, no exclude does); kUnknown when a
  // pattern it would take is outside the glob language.
  Match Selects(absl::string_view host) const {
    Match included = Match::kNo;
    for (const MaybeGlob& g : include) {
      const Match m = g.Test(host);
      if (m == Match::kYes) {
        included = Match::kYes;
        break;
      }
      if (m == Match::kUnknown) included = Match::kUnknown;
    }
    if (included == Match::kNo) return Match::kNo;
    for (const MaybeGlob& g : exclude) {
      const Match m = g.Test(host);
      if (m == Match::kYes) return Match::kNo;
      if (m == Match::kUnknown) included = Match::kUnknown;
    }
    return included;
  }
};

struct EgressPolicy::Compiled {
  std::vector<Entry> entries;      // sorted by key
  std::vector<DenyingMiddleware> denying_middlewares;  // sorted by key
  std::vector<Endpoint> endpoints;  // in (entry, endpoint) order
  absl::flat_hash_map<std::string, std::vector<size_t>> exact_hosts;  // lower-cased host -> endpoints
  std::vector<size_t> wildcard_hosts;
  std::vector<size_t> hostless;
};

EgressPolicy::EgressPolicy(std::unique_ptr<Compiled> compiled) : compiled_(std::move(compiled)) {}
EgressPolicy::~EgressPolicy() = default;

std::shared_ptr<const EgressPolicy> EgressPolicy::Compile(const SandboxPolicy& policy) {
  auto c = std::make_unique<Compiled>();
  std::vector<std::string> keys;
  for (const auto& [key, rule] : policy.network_policies()) keys.push_back(key);
  std::sort(keys.begin(), keys.end());
  for (size_t e = 0; e < keys.size(); ++e) {
    const auto& source = policy.network_policies().at(keys[e]);
    Entry entry;
    entry.key = keys[e];
    for (const auto& binary : source.binaries()) {
      if (binary.path().find('*') == std::string::npos) {
        entry.exact_binaries.insert(binary.path());
      } else {
        entry.glob_binaries.push_back(MaybeGlob::Of(binary.path(), '/'));
        entry.glob_sources.push_back(binary.path());
      }
    }
    c->entries.push_back(std::move(entry));
    for (int i = 0; i < source.endpoints_size(); ++i) {
      const NetworkEndpoint& ep = source.endpoints(i);
      Endpoint out;
      out.entry = e;
      out.host = absl::AsciiStrToLower(ep.host());
      out.hostless = ep.host().empty();
      for (const std::string& entry : ep.allowed_ips()) {
        if (auto network = common::ParseIpNetwork(entry); network.ok()) out.allowed_ips.push_back(*network);  // validated
      }
      out.extended = !ep.protocol().empty() || ep.allowed_ips_size() > 0 || !ep.tls().empty();
      out.tls = ep.tls();
      if (!out.hostless && out.host.find('*') != std::string::npos) {
        auto glob = Glob::Parse(out.host, '.');
        if (glob.ok()) out.host_glob = std::move(*glob);  // validation admits only parseable host globs
        out.host_suffix = out.host.substr(out.host.find_last_of("*?") + 1);  // literal text only
      }
      if (ep.ports_size() > 0) {
        out.ports.assign(ep.ports().begin(), ep.ports().end());
      } else {
        out.ports.push_back(ep.port());
      }
      out.protocol = ep.protocol();
      out.enforce = ep.enforcement() == "enforce";
      out.l7_config = !ep.protocol().empty() && ep.protocol() != "tcp";
      out.route = ep.path();
      if (!ep.path().empty()) out.path_scope = RestPath(ep.path());
      const std::string prefix = absl::StrCat("network_policies.", keys[e], ".endpoints[", i, "]");
      out.label = absl::StrCat(prefix, " (", ep.host().empty() ? "*" : ep.host(), ":",
                               absl::StrJoin(out.ports, ","), ")");
      const google::protobuf::Map<std::string, openshell::sandbox::v1::L7QueryMatcher> no_query;
      for (const auto& [method, path] : PresetRules(ep.protocol(), ep.access())) {
        out.allow.push_back(CompileRule(method, path, no_query,
                                        absl::StrCat(prefix, ".access ", ep.access(), " (", method, " ", path, ")")));
      }
      for (int r = 0; r < ep.rules_size(); ++r) {
        const auto& allow = ep.rules(r).allow();
        out.allow.push_back(CompileRule(allow.method(), allow.path(), allow.query(),
                                        absl::StrCat(prefix, ".rules[", r, "] (", allow.method(), " ", allow.path(), ")")));
      }
      for (int r = 0; r < ep.deny_rules_size(); ++r) {
        const auto& deny = ep.deny_rules(r);
        out.deny.push_back(CompileRule(deny.method(), deny.path(), deny.query(),
                                       absl::StrCat(prefix, ".deny_rules[", r, "] (", deny.method(), " ", deny.path(), ")")));
      }
      const size_t index = c->endpoints.size();
      if (out.hostless) {
        if (ep.allowed_ips_size() > 0) c->hostless.push_back(index);  // hostless without IPs matches nothing
      } else if (out.host.find('*') != std::string::npos) {
        c->wildcard_hosts.push_back(index);
      } else {
        c->exact_hosts[out.host].push_back(index);
      }
      c->endpoints.push_back(std::move(out));
    }
  }
  std::vector<std::string> middleware_keys;
  for (const auto& [key, config] : policy.network_middlewares()) {
    if (config.on_error() != "fail_open") middleware_keys.push_back(key);
  }
  std::sort(middleware_keys.begin(), middleware_keys.end());
  for (const std::string& key : middleware_keys) {
    const auto& config = policy.network_middlewares().at(key);
    DenyingMiddleware m;
    m.key = key;
    for (const std::string& pattern : config.endpoints().include()) {
      m.include.push_back(MaybeGlob::Of(absl::AsciiStrToLower(pattern), '.'));
    }
    for (const std::string& pattern : config.endpoints().exclude()) {
      m.exclude.push_back(MaybeGlob::Of(absl::AsciiStrToLower(pattern), '.'));
    }
    c->denying_middlewares.push_back(std::move(m));
  }
  return std::shared_ptr<const EgressPolicy>(new EgressPolicy(std::move(c)));
}

std::string PathNotCanonical(absl::string_view path) {
  if (path.empty() || path.front() != '/') return "it does not start with '/'";
  if (path.size() > kMaxRequestTargetPath) {
    return absl::StrCat("longer than ", kMaxRequestTargetPath, " bytes: the proxy refuses it");
  }
  if (path.find('%') != absl::string_view::npos) return "percent-encoded";
  if (path.find(';') != absl::string_view::npos) return "';' parameters";
  if (path.find_first_of("?#") != absl::string_view::npos) return "a query or fragment in the path";
  for (absl::string_view segment : absl::StrSplit(path.substr(1), '/')) {
    if (segment == "." || segment == "..") return "a '.' or '..' segment";
  }
  if (path.find("//") != absl::string_view::npos) return "an empty segment ('//')";
  // What upstream's canonical form writes literally: RFC 3986's pchar without the percent-encoded slot, and
  // '/'. Any other byte it refuses (raw non-ASCII) or percent-encodes (' ', '|', '[', '"', '^', ...).
  for (const char c : path) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte >= 0x80) return "raw non-ASCII bytes (the proxy refuses them; percent-encoded, they stay encoded)";
    if (absl::ascii_isalnum(c) || absl::string_view("-._~!$&'()*+,;=:@/").find(c) != absl::string_view::npos) continue;
    if (byte < 0x20 || byte == 0x7f) return "a control character";
    return absl::StrCat("'", absl::string_view(&c, 1), "', which the proxy percent-encodes");
  }
  return "";
}

namespace {

bool MethodMatches(absl::string_view actual, absl::string_view expected) {
  if (expected == "*") return true;
  if (absl::EqualsIgnoreCase(actual, expected)) return true;
  return absl::EqualsIgnoreCase(actual, "HEAD") && absl::EqualsIgnoreCase(expected, "GET");
}

// Every value the request gives `key`, in order; nullopt when the key is absent. A key given twice is one
// key with all its values (upstream's request holds its query as a map of key to the list of values).
std::optional<std::vector<std::string>> QueryValues(const EgressRequest& request, absl::string_view key) {
  std::optional<std::vector<std::string>> out;
  for (const auto& [k, values] : request.query) {
    if (k != key) continue;
    if (!out) out.emplace();
    // A key without a value (`?force`) reaches upstream's policy as one empty value, never as none.
    if (values.empty()) out->emplace_back();
    out->insert(out->end(), values.begin(), values.end());
  }
  return out;
}

// One value against one matcher: matches if any of its patterns does.
Match ValueMatches(const QueryMatcher& matcher, absl::string_view value, std::string* why) {
  bool unknown = false;
  for (const MaybeGlob& pattern : matcher.patterns) {
    switch (pattern.Test(value)) {
      case Match::kYes: return Match::kYes;
      case Match::kUnknown: unknown = true; *why = pattern.unsupported; break;
      case Match::kNo: break;
    }
  }
  return unknown ? Match::kUnknown : Match::kNo;
}

Match And(Match a, Match b) {
  if (a == Match::kNo || b == Match::kNo) return Match::kNo;
  if (a == Match::kUnknown || b == Match::kUnknown) return Match::kUnknown;
  return Match::kYes;
}

// Allow side: every configured key present with at least one value, every value matching.
Match AllowQueryMatches(const Rule& rule, const EgressRequest& request, std::string* why) {
  Match result = Match::kYes;
  for (const QueryMatcher& matcher : rule.query) {
    const auto values = QueryValues(request, matcher.key);
    if (!values || values->empty()) return Match::kNo;
    for (const std::string& value : *values) {
      result = And(result, ValueMatches(matcher, value, why));
      if (result == Match::kNo) return result;
    }
  }
  return result;
}

// Deny side: no matchers matches anything; otherwise every configured key present and, for each key
// with values, some value matching.
Match DenyQueryMatches(const Rule& rule, const EgressRequest& request, std::string* why) {
  Match result = Match::kYes;
  for (const QueryMatcher& matcher : rule.query) {
    const auto values = QueryValues(request, matcher.key);
    if (!values) return Match::kNo;
    if (values->empty()) continue;
    Match any = Match::kNo;
    for (const std::string& value : *values) {
      const Match m = ValueMatches(matcher, value, why);
      if (m == Match::kYes) {
        any = Match::kYes;
        break;
      }
      if (m == Match::kUnknown) any = Match::kUnknown;
    }
    result = And(result, any);
    if (result == Match::kNo) return result;
  }
  return result;
}

Match RuleMatches(const Rule& rule, const EgressRequest& request, bool deny_side, std::string* why) {
  if (rule.method.empty() || !MethodMatches(request.method, rule.method)) return Match::kNo;
  Match path = rule.path.Test(request.path);
  if (path == Match::kUnknown) *why = rule.path.unsupported;
  if (path == Match::kNo) return path;
  return And(path, deny_side ? DenyQueryMatches(rule, request, why) : AllowQueryMatches(rule, request, why));
}

void SetDecision(EgressDecision* out, EgressVerdict verdict, absl::string_view reason) {
  out->verdict = verdict;
  out->reason.assign(reason.data(), reason.size());
}

}  // namespace

EgressDecision EgressPolicy::Decide(const EgressIntent& intent) const {
  EgressDecision decision;
  Decide(intent, &decision);
  return decision;
}

void EgressPolicy::Decide(const EgressIntent& intent, EgressDecision* out) const {
  // No exception leaves the library (issue 25, item 7): the work is bounded (see IntentTooLarge and the
  // validation bounds), so only the allocator can still throw, and then the answer fails closed.
  try {
    DecideBounded(intent, out);
  } catch (const std::bad_alloc&) {
    out->matched_policy.clear();
    out->rule.clear();
    out->verdict = EgressVerdict::kUnsupported;
    out->reason.assign("policy evaluation error: out of memory");
  }
}

void EgressPolicy::DecideBounded(const EgressIntent& intent, EgressDecision* out) const {
  const Compiled& c = *compiled_;
  out->matched_policy.clear();
  out->endpoint.clear();
  out->rule.clear();
  out->reason.clear();
  if (auto too_large = IntentTooLarge(intent)) {
    return SetDecision(out, EgressVerdict::kUnsupported, absl::StrCat("the intent exceeds the evaluator's bounds: ", *too_large));
  }
  if (c.entries.empty()) return SetDecision(out, EgressVerdict::kDeny, "network connections not allowed by policy");
  if (HasControl(intent.host) || HasControl(intent.binary) ||
      std::any_of(intent.ancestors.begin(), intent.ancestors.end(), [](const std::string& a) { return HasControl(a); })) {
    return SetDecision(out, EgressVerdict::kDeny,
                       "policy evaluation error: the host or a process path contains a control character");
  }

  // Lower-case the host without allocating for any real DNS name.
  char buffer[256];
  std::string long_host;
  absl::string_view host;
  if (intent.host.size() <= sizeof(buffer)) {
    for (size_t i = 0; i < intent.host.size(); ++i) buffer[i] = absl::ascii_tolower(static_cast<unsigned char>(intent.host[i]));
    host = absl::string_view(buffer, intent.host.size());
  } else {
    long_host = absl::AsciiStrToLower(intent.host);
    host = long_host;
  }

  // Endpoints matching host:port, in (entry key, endpoint) order.
  absl::InlinedVector<size_t, 8> matches;
  if (auto it = c.exact_hosts.find(host); it != c.exact_hosts.end()) {
    for (size_t index : it->second) {
      if (c.endpoints[index].HasPort(intent.port)) matches.push_back(index);
    }
  }
  for (size_t index : c.wildcard_hosts) {
    const Endpoint& ep = c.endpoints[index];
    if (!absl::EndsWith(host, ep.host_suffix) || !ep.HasPort(intent.port)) continue;
    if (ep.host_glob && ep.host_glob->Matches(host)) matches.push_back(index);
  }
  for (size_t index : c.hostless) {
    if (c.endpoints[index].HasPort(intent.port)) matches.push_back(index);
  }
  if (matches.empty()) {
    out->verdict = EgressVerdict::kDeny;
    absl::StrAppend(&out->reason, "endpoint ", intent.host, ":", intent.port, " is not allowed by any policy");
    return;
  }
  if (matches.size() > 1) std::sort(matches.begin(), matches.end());
  if (intent.binary.empty()) {
    return SetDecision(out, EgressVerdict::kDeny,
                       "binary identity unavailable: the process's executable path is required and was not given");
  }

  // Which entries with a matching endpoint also match the process (exe or an ancestor).
  absl::InlinedVector<std::pair<size_t, Match>, 8> entries;  // (entry, binary match), distinct, in order
  std::string unsupported;
  for (size_t index : matches) {
    const size_t e = c.endpoints[index].entry;
    if (!entries.empty() && entries.back().first == e) continue;
    const Entry& entry = c.entries[e];
    Match binary = Match::kNo;
    if (entry.exact_binaries.contains(intent.binary)) binary = Match::kYes;
    for (size_t a = 0; binary != Match::kYes && a < intent.ancestors.size(); ++a) {
      if (entry.exact_binaries.contains(intent.ancestors[a])) binary = Match::kYes;
    }
    for (size_t g = 0; binary != Match::kYes && g < entry.glob_binaries.size(); ++g) {
      const MaybeGlob& glob = entry.glob_binaries[g];
      Match m = glob.Test(intent.binary);
      for (size_t a = 0; m == Match::kNo && a < intent.ancestors.size(); ++a) m = glob.Test(intent.ancestors[a]);
      if (m == Match::kUnknown) unsupported = glob.unsupported;
      if (m != Match::kNo) binary = m;
    }
    entries.emplace_back(e, binary);
  }
  const auto matched = std::find_if(entries.begin(), entries.end(), [](const auto& p) { return p.second != Match::kNo; });
  if (matched != entries.end() && matched->second == Match::kUnknown) {
    return SetDecision(out, EgressVerdict::kUnsupported, absl::StrCat("binary match undecidable: ", unsupported));
  }
  if (matched == entries.end()) {
    out->verdict = EgressVerdict::kDeny;
    const std::string ancestors = absl::StrJoin(intent.ancestors, " -> ");
    const std::string cmdline = absl::StrJoin(intent.cmdline_paths, ", ");
    for (const auto& [e, binary] : entries) {
      if (!out->reason.empty()) out->reason.append("; ");
      absl::StrAppend(&out->reason, "binary '", intent.binary, "' not allowed in policy '", c.entries[e].key,
                      "' (ancestors: [", ancestors, "], cmdline: [", cmdline, "])", kBinaryMissHint);
    }
    return;
  }
  const size_t matched_entry = matched->first;
  auto entry_matched = [&](size_t e) {
    for (const auto& [candidate, binary] : entries) {
      if (candidate == e) return binary == Match::kYes;
    }
    return false;
  };
  out->matched_policy.assign(c.entries[matched_entry].key);
  for (size_t index : matches) {
    if (c.endpoints[index].entry == matched_entry) {
      out->endpoint.assign(c.endpoints[index].label);
      break;
    }
  }
  // Upstream's proxy then checks the destination (proxy/destination.rs): what needs no DNS is decided here
  // (an IP-literal host, a control-plane port behind allowed_ips). The connection is refused, whatever
  // the request.
  // The settings are the first matched endpoint's with a protocol, allowed_ips or tls, over every matched
  // entry (the Rego's matched endpoint config).
  static const std::vector<IpNetwork> kNone;
  const std::vector<IpNetwork>* allowed_ips = &kNone;
  const Endpoint* settings = nullptr;
  for (size_t index : matches) {
    const Endpoint& ep = c.endpoints[index];
    if (!ep.extended) continue;
    // An entry whose binary match cannot be decided may be the one whose settings apply: not a guess.
    for (const auto& [e, binary] : entries) {
      if (e == ep.entry && binary == Match::kUnknown) {
        return SetDecision(out, EgressVerdict::kUnsupported, absl::StrCat("binary match undecidable: ", unsupported));
      }
    }
    if (entry_matched(ep.entry)) {
      allowed_ips = &ep.allowed_ips;
      settings = &ep;
      break;
    }
  }
  if (auto refused = DestinationRefusal(intent.host, intent.port, *allowed_ips)) {
    out->matched_policy.clear();
    out->endpoint.clear();
    return SetDecision(out, EgressVerdict::kDeny, *refused);
  }
  // `tls: skip` on the endpoint whose settings apply, where its requests would be inspected: older proxies
  // relay such a connection raw, uninspected (every request passes), newer ones refuse it before connecting
  // (review 98). The versions disagree on the connection and on each request: not a guess. (An L4 endpoint
  // with `tls: skip` beside an L7 one on its host is refused by the loader, as upstream's ambiguity rules do.)
  if (settings != nullptr && settings->tls == "skip" && settings->l7_config) {
    return SetDecision(out, EgressVerdict::kUnsupported,
                       absl::StrCat(settings->label, " has tls 'skip' where its requests would be inspected: older "
                                                     "proxies relay the connection uninspected, newer ones refuse it"));
  }
  // Traffic no middleware can inspect, to a host a middleware selects that does not fail open: upstream's
  // supervisor denies it (l7/uninspectable.rs; review 103) — a `tls: skip` tunnel or SQL passthrough
  // always; through an L4 endpoint, what the connection carries decides (TLS and HTTP/1 are inspected, h2c
  // and any other protocol denied: review 105), which a connection-level intent does not say.
  const bool uninspected = settings != nullptr && (settings->tls == "skip" || settings->protocol == "sql");
  bool l7 = false;  // asked only of policies with a middleware that does not fail open (most have none)
  for (size_t i = 0; !c.denying_middlewares.empty() && !l7 && i < matches.size(); ++i) {
    l7 = c.endpoints[matches[i]].l7_config && entry_matched(c.endpoints[matches[i]].entry);
  }
  if (!c.denying_middlewares.empty() && (uninspected || (!l7 && !intent.request))) {
    for (const DenyingMiddleware& m : c.denying_middlewares) {
      const Match selects = m.Selects(host);
      if (selects == Match::kNo) continue;
      if (selects == Match::kUnknown) {
        return SetDecision(out, EgressVerdict::kUnsupported,
                           absl::StrCat("whether network_middlewares.", m.key, " selects this host is undecidable (a "
                                        "pattern outside the glob language)"));
      }
      if (!uninspected) {
        return SetDecision(out, EgressVerdict::kUnsupported,
                           absl::StrCat("network_middlewares.", m.key, " selects ", intent.host,
                                        " and does not fail open: the sandbox's proxy inspects TLS and HTTP/1 on this "
                                        "connection and denies any other protocol; give the request to decide it"));
      }
      const std::string what = settings->tls == "skip" ? "a tls 'skip' tunnel" : "SQL passthrough";
      return SetDecision(out, EgressVerdict::kDeny,
                         absl::StrCat("network_middlewares.", m.key, " selects ", intent.host, " and does not fail open: ",
                                      what, " (", settings->label, ") cannot be inspected by required middleware"));
    }
  }
  out->verdict = EgressVerdict::kAllow;
  if (!intent.request) return;

  // The L7 config the request is inspected under (l7/relay.rs): upstream's proxy collects the L7 configs
  // of the matched endpoints of every matched entry, in (entry key, endpoint) order. None: the connection
  // is not inspected. One: it applies to every request. Several: each request takes the most specific
  // whose `path` selects it (ties: the last; policy/route_path.h), and none selecting it is a denial
  // whatever the enforcement.
  const Endpoint* selected = nullptr;
  size_t configs = 0;
  for (size_t index : matches) {
    const Endpoint& ep = c.endpoints[index];
    if (!ep.l7_config) continue;
    for (const auto& [e, binary] : entries) {
      if (e == ep.entry && binary == Match::kUnknown) {
        return SetDecision(out, EgressVerdict::kUnsupported, absl::StrCat("binary match undecidable: ", unsupported));
      }
    }
    if (!entry_matched(ep.entry)) continue;
    ++configs;
    if (selected == nullptr) selected = &ep;
  }
  if (selected == nullptr) {
    out->rule.assign("(none: no matched endpoint has an L7 protocol, so requests are not inspected)");
    return;
  }
  const EgressRequest& request = *intent.request;
  if (HasControl(request.method) || HasControl(request.path)) {
    return SetDecision(out, EgressVerdict::kDeny, "policy evaluation error: the request contains a control character");
  }
  if (request.path.size() > kMaxRequestTargetPath && request.path.find('%') == std::string::npos) {
    // Upstream's proxy refuses the request before its policy sees it (l7/path.rs, MAX_PATH_LEN), whatever the
    // enforcement; a canonical path without '%' is no shorter as sent (with '%', a raw byte may have become
    // three: not canonical here, unsupported below).
    return SetDecision(out, EgressVerdict::kDeny,
                       "HTTP request-target rejected: request-target exceeds the configured maximum length");
  }
  if (std::string why = PathNotCanonical(request.path); !why.empty()) {
    return SetDecision(out, EgressVerdict::kUnsupported,
                       absl::StrCat("the request path is not canonical (", why,
                                    "): the sandbox's proxy decodes and normalises a path before its policy sees it; "
                                    "give the path as it would"));
  }
  if (configs > 1) {
    // Bounded: a policy of many long route globs cannot make one request cost minutes.
    size_t work = 0;
    for (size_t index : matches) {
      const Endpoint& ep = c.endpoints[index];
      if (ep.l7_config && entry_matched(ep.entry)) work += RoutePathCost(ep.route, request.path);
    }
    if (work > kMaxRouteWork) {
      return SetDecision(out, EgressVerdict::kUnsupported,
                         absl::StrCat("the intent exceeds the evaluator's bounds: choosing among ", configs,
                                      " L7 endpoints by their paths would take more than ", kMaxRouteWork, " steps"));
    }
    selected = nullptr;
    size_t best = 0;
    for (size_t index : matches) {
      const Endpoint& ep = c.endpoints[index];
      if (!ep.l7_config || !entry_matched(ep.entry) || !RoutePathMatches(ep.route, request.path)) continue;
      const size_t rank = RoutePathSpecificity(ep.route);
      if (selected == nullptr || rank >= best) selected = &ep, best = rank;
    }
    if (selected == nullptr) {
      out->rule.assign("(none: the L7 endpoints on this host:port select requests by path, and none selects this one)");
      return SetDecision(out, EgressVerdict::kDeny, "no L7 endpoint path matched request");
    }
  }
  out->endpoint.assign(selected->label);
  if (selected->protocol != "rest") {
    return SetDecision(out, EgressVerdict::kUnsupported,
                       absl::StrCat("the endpoint's protocol is '", selected->protocol,
                                    "': its requests are judged on their body or frames, which this evaluator does not model"));
  }
  const Rule* allowing = nullptr;
  const Rule* denying = nullptr;
  bool unknown_allow = false, unknown_deny = false;
  for (size_t index : matches) {
    const Endpoint& ep = c.endpoints[index];
    if (!entry_matched(ep.entry) || ep.protocol == "json-rpc") continue;
    if (ep.path_scope) {
      const Match scope = ep.path_scope->Test(request.path);
      if (scope == Match::kUnknown) {
        unknown_allow = unknown_deny = true;
        unsupported = ep.path_scope->unsupported;
      }
      if (scope != Match::kYes) continue;
    }
    for (const Rule& rule : ep.allow) {
      if (allowing != nullptr) break;
      const Match m = RuleMatches(rule, request, false, &unsupported);
      if (m == Match::kYes) allowing = &rule;
      if (m == Match::kUnknown) unknown_allow = true;
    }
    for (const Rule& rule : ep.deny) {
      if (denying != nullptr) break;
      const Match m = RuleMatches(rule, request, true, &unsupported);
      if (m == Match::kYes) denying = &rule;
      if (m == Match::kUnknown) unknown_deny = true;
    }
  }
  const EgressVerdict refused = selected->enforce ? EgressVerdict::kDeny : EgressVerdict::kAudit;
  if (denying != nullptr) {
    out->rule.assign(denying->label);
    out->verdict = refused;
    absl::StrAppend(&out->reason, request.method, " ", request.path, " blocked by deny rule");
    return;
  }
  if (unknown_deny || (allowing == nullptr && unknown_allow)) {
    return SetDecision(out, EgressVerdict::kUnsupported, absl::StrCat("a rule the request meets is undecidable: ", unsupported));
  }
  if (allowing != nullptr) {
    out->rule.assign(allowing->label);
    return;
  }
  out->verdict = refused;
  absl::StrAppend(&out->reason, request.method, " ", request.path, " not permitted by policy");
}

}  // namespace osh::policy
