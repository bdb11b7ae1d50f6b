// Which L7 endpoint applies to a request when several share a host:port, and which such policies
// upstream's loader refuses as ambiguous (policy/route_path.h). Each case names the upstream rule
// (crates/openshell-supervisor-network/src/l7/{mod.rs,relay.rs}, crates/openshell-policy/src/ambiguity.rs).
#include <catch2/catch.hpp>

#include <algorithm>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"

#include "policy/containment.h"
#include "policy/egress.h"
#include "policy/explain.h"
#include "policy/policy_file.h"
#include "policy/route_path.h"

namespace {

using osh::policy::EgressDecision;
using osh::policy::EgressIntent;
using osh::policy::EgressPolicy;
using osh::policy::EgressRequest;
using osh::policy::RoutePathMatches;
using osh::policy::RoutePathsOverlap;
using osh::policy::RoutePathSpecificity;

// A policy with `entries` (YAML mapping lines, indented by four) for api.example.com:443 and curl.
absl::StatusOr<openshell::sandbox::v1::SandboxPolicy> Parse(const std::string& entries) {
  return osh::policy::ParsePolicyText("version: 1\nnetwork_policies:\n" + entries, "p.yaml");
}

std::string Entry(const std::string& key, const std::string& endpoints, const std::string& binary = "/usr/bin/curl") {
  return "  " + key + ":\n    endpoints: [" + endpoints + "]\n    binaries: [{path: '" + binary + "'}]\n";
}

EgressDecision Decide(const openshell::sandbox::v1::SandboxPolicy& policy, const std::string& method, const std::string& path) {
  EgressIntent intent;
  intent.host = "api.example.com";
  intent.port = 443;
  intent.binary = "/usr/bin/curl";
  intent.request = EgressRequest{method, path, {}};
  return EgressPolicy::Compile(policy)->Decide(intent);
}

}  // namespace

TEST_CASE("route path: an endpoint path selects requests as the Rust glob crate matches, after upstream's shortcuts",
          "[policy][egress][route]") {
  // l7/mod.rs endpoint_path_matches: "", "**", "/**" and equality; "<prefix>/**" is the prefix or below it.
  CHECK(RoutePathMatches("", "/anything"));
  CHECK(RoutePathMatches("/**", "/"));
  CHECK(RoutePathMatches("/repos/**", "/repos"));  // unlike Rego's glob.match, which needs a segment
  CHECK(RoutePathMatches("/repos/**", "/repos/a/b"));
  CHECK_FALSE(RoutePathMatches("/repos/**", "/reposx"));
  CHECK(RoutePathMatches("/v*/**", "/v*/x"));  // the prefix is taken literally
  CHECK_FALSE(RoutePathMatches("/v*/**", "/v1/x"));
  // glob::Pattern::matches with default options: `*` crosses '/', `?` is any one character.
  CHECK(RoutePathMatches("/api/*", "/api/a/b"));
  CHECK(RoutePathMatches("/a?c", "/a/c"));
  CHECK(RoutePathMatches("/é?", "/éé"));  // characters, not bytes
  CHECK_FALSE(RoutePathMatches("/é", "/e"));
  // A `**` component matches nothing or anything ending in '/'.
  CHECK(RoutePathMatches("/a/**/b", "/a/b"));
  CHECK(RoutePathMatches("/a/**/b", "/a/x/y/b"));
  CHECK_FALSE(RoutePathMatches("/a/**/b", "/a/xb"));
  CHECK(RoutePathMatches("**/graphql", "/v1/graphql"));
  // Classes, negated classes and a ']' first in a class.
  CHECK(RoutePathMatches("/v[12]", "/v2"));
  CHECK_FALSE(RoutePathMatches("/v[12]", "/v3"));
  CHECK(RoutePathMatches("/v[0-9]/x", "/v7/x"));
  CHECK(RoutePathMatches("/v[!0]", "/v1"));
  CHECK_FALSE(RoutePathMatches("/v[!0]", "/v0"));
  CHECK(RoutePathMatches("/x[]]", "/x]"));
  // A `**` that only stars follow takes any rest of the text (the crate's loop falls through it).
  CHECK(RoutePathMatches("/api/**/", "/api/x"));
  CHECK(RoutePathMatches("/api/**/", "/api/x/y"));
  CHECK_FALSE(RoutePathMatches("/api/**/", "/api"));
  CHECK(RoutePathMatches("/**/", "/x"));
  CHECK(RoutePathMatches("/a/**/*", "/a/bc"));
  CHECK_FALSE(RoutePathMatches("/a/**/c", "/a/bc"));
  // Invalid patterns match nothing: `***`, `**` inside a component, an unclosed class.
  CHECK_FALSE(RoutePathMatches("/a/***", "/a/b"));
  CHECK_FALSE(RoutePathMatches("/a**", "/ab"));
  CHECK_FALSE(RoutePathMatches("/a/**b", "/a/b"));
  CHECK_FALSE(RoutePathMatches("/v[12", "/v1"));
  // Specificity: characters other than '*'.
  CHECK(RoutePathSpecificity("") == 0);
  CHECK(RoutePathSpecificity("/repos/**") == 7);
  CHECK(RoutePathSpecificity("/é") == 2);
}

TEST_CASE("route path: overlap is judged as upstream's loader judges it", "[policy][validation][route]") {
  CHECK(RoutePathsOverlap("", "/graphql"));
  CHECK(RoutePathsOverlap("/**", "/graphql"));
  CHECK_FALSE(RoutePathsOverlap("/graphql", "/repos/**"));
  CHECK(RoutePathsOverlap("/v?", "/v1"));
  CHECK(RoutePathsOverlap("/v[12]", "/v[23]"));
  CHECK_FALSE(RoutePathsOverlap("/v[12]", "/v[34]"));
  CHECK(RoutePathsOverlap("/v[!0]", "/v1"));
  CHECK_FALSE(RoutePathsOverlap("/v[!0]", "/v0"));
  CHECK(RoutePathsOverlap("/a/*/c", "/a/b/x/c"));  // `*` stands for any run here
  CHECK(RoutePathsOverlap("/a**", "/zzz"));        // a pattern the loader cannot read overlaps everything
}

TEST_CASE("egress: the L7 endpoint a request is inspected under is chosen as upstream's proxy chooses it",
          "[policy][egress][route]") {
  SECTION("an L4 endpoint listed first does not hide a REST endpoint on the same host:port") {
    // Rego's endpoint configs hold a_l4 (it has allowed_ips) first; parse_l7_config drops it (no protocol).
    auto policy = Parse(Entry("a_l4", "{host: api.example.com, port: 443, allowed_ips: [10.0.0.0/8], path: /x}") +
                        Entry("b_rest", "{host: api.example.com, port: 443, allowed_ips: [10.0.0.0/8], protocol: rest, "
                                        "enforcement: enforce, rules: [{allow: {method: GET, path: /repos/**}}]}"));
    REQUIRE(policy.ok());
    const auto denied = Decide(*policy, "DELETE", "/repos/a");
    CHECK(VerdictName(denied.verdict) == "deny");
    CHECK(denied.matched_policy == "a_l4");
    CHECK_THAT(denied.endpoint, Catch::StartsWith("network_policies.b_rest.endpoints[0]"));
    CHECK_THAT(denied.reason, Catch::Contains("not permitted by policy"));
    CHECK(VerdictName(Decide(*policy, "GET", "/repos/a").verdict) == "allow");
  }
  SECTION("several: the most specific path wins, whatever the key order; none matching is a denial even in audit") {
    auto policy = Parse(Entry("a_admin", "{host: api.example.com, port: 443, path: '/v1/admin/**', protocol: rest, "
                                         "enforcement: audit, rules: [{allow: {method: GET, path: '/**'}}]}") +
                        Entry("b_api", "{host: api.example.com, port: 443, path: '/v1/**', protocol: rest, "
                                       "enforcement: enforce, rules: [{allow: {method: GET, path: '/**'}}]}"));
    REQUIRE(policy.ok());
    // /v1/admin/x: a_admin (specificity 10) over b_api (4): audit.
    const auto admin = Decide(*policy, "POST", "/v1/admin/x");
    CHECK(VerdictName(admin.verdict) == "audit");
    CHECK_THAT(admin.endpoint, Catch::StartsWith("network_policies.a_admin.endpoints[0]"));
    // /v1/x: only b_api: enforce.
    const auto api = Decide(*policy, "POST", "/v1/x");
    CHECK(VerdictName(api.verdict) == "deny");
    CHECK_THAT(api.endpoint, Catch::StartsWith("network_policies.b_api.endpoints[0]"));
    CHECK(VerdictName(Decide(*policy, "GET", "/v1/x").verdict) == "allow");
    // The route shortcut lets /v1/** select /v1 itself (Rego's scope does not: not permitted).
    CHECK(VerdictName(Decide(*policy, "GET", "/v1").verdict) == "deny");
    const auto none = Decide(*policy, "GET", "/v2/x");
    CHECK(VerdictName(none.verdict) == "deny");
    CHECK(none.reason == "no L7 endpoint path matched request");
  }
  SECTION("one L7 endpoint applies to every request: its path scopes its rules, it does not route") {
    auto policy = Parse(Entry("api", "{host: api.example.com, port: 443, path: '/v1/**', protocol: rest, "
                                     "enforcement: audit, rules: [{allow: {method: GET, path: '/**'}}]}"));
    REQUIRE(policy.ok());
    CHECK(VerdictName(Decide(*policy, "GET", "/v1/x").verdict) == "allow");
    const auto outside = Decide(*policy, "GET", "/v2/x");
    CHECK(VerdictName(outside.verdict) == "audit");
    CHECK_THAT(outside.reason, Catch::Contains("not permitted by policy"));
  }
  SECTION("a route by glob: `*` crosses '/' when selecting, so GraphQL takes a nested path REST would allow") {
    auto policy = Parse(Entry("api", "{host: api.example.com, port: 443, protocol: rest, enforcement: enforce, "
                                     "access: full}, {host: api.example.com, port: 443, path: '/graphql/*', "
                                     "protocol: graphql, enforcement: enforce, rules: [{allow: {operation_type: query}}]}"));
    REQUIRE(policy.ok());
    CHECK(VerdictName(Decide(*policy, "POST", "/repos/x").verdict) == "allow");
    const auto graphql = Decide(*policy, "POST", "/graphql/v1/batch");
    CHECK(VerdictName(graphql.verdict) == "unsupported");
    CHECK_THAT(graphql.endpoint, Catch::StartsWith("network_policies.api.endpoints[1]"));
  }
}

TEST_CASE("validation: endpoints that can serve the same request must agree, as upstream's loader requires",
          "[policy][validation][route]") {
  struct Case {
    const char* name;
    std::string entries;
    const char* conflict;  // "" = valid
  };
  const std::string rest = "protocol: rest, access: full";
  const std::vector<Case> cases = {
      // connection_conflicts: transparent_tcp_eligible
      {"tcp beside rest", Entry("a", "{host: api.example.com, port: 443, protocol: tcp}") +
                              Entry("b", "{host: api.example.com, port: 443, " + rest + "}"),
       "protocol: 'tcp' vs 'rest'"},
      // host_patterns_overlap: a hostless endpoint overlaps every host
      {"hostless beside a named host with other IPs",
       Entry("a", "{port: 443, allowed_ips: [10.0.0.0/8]}") + Entry("b", "{host: api.example.com, port: 443, allowed_ips: [192.168.0.0/16]}"),
       "allowed_ips"},
      {"allowed_ips equal as sets, case and order aside",
       Entry("a", "{host: api.example.com, port: 443, allowed_ips: [10.0.1.0/24, 'FD00::/8']}") +
           Entry("b", "{host: api.example.com, port: 443, allowed_ips: ['fd00::/8', 10.0.1.0/24]}"),
       ""},
      // request_pipeline_conflicts at equal specificity
      {"two REST endpoints of different enforcement", Entry("a", "{host: api.example.com, port: 443, enforcement: enforce, " + rest + "}") +
                                                          Entry("b", "{host: api.example.com, port: 443, " + rest + "}"),
       "enforcement: 'enforce' vs 'audit'"},
      {"same path, different protocol", Entry("a", "{host: api.example.com, port: 443, path: /v1, " + rest + "}") +
                                            Entry("b", "{host: api.example.com, port: 443, path: /v1, protocol: graphql, "
                                                       "rules: [{allow: {operation_type: query}}]}"),
       "protocol: 'rest' vs 'graphql'"},
      {"/v? and /v1 overlap at equal rank", Entry("a", "{host: api.example.com, port: 443, path: '/v?', " + rest + "}") +
                                                Entry("b", "{host: api.example.com, port: 443, path: /v1, protocol: graphql, "
                                                           "rules: [{allow: {operation_type: query}}]}"),
       "protocol"},
      {"disjoint classes do not overlap", Entry("a", "{host: api.example.com, port: 443, path: '/v[12]', " + rest + "}") +
                                              Entry("b", "{host: api.example.com, port: 443, path: '/v[34]', protocol: graphql, "
                                                         "rules: [{allow: {operation_type: query}}]}"),
       ""},
      {"a more specific path may differ", Entry("a", "{host: api.example.com, port: 443, enforcement: enforce, " + rest + "}") +
                                              Entry("b", "{host: api.example.com, port: 443, path: /graphql, protocol: graphql, "
                                                         "rules: [{allow: {operation_type: query}}]}"),
       ""},
      {"a plain L4 endpoint does not compete with an L7 one", Entry("a", "{host: api.example.com, port: 443}") +
                                                                 Entry("b", "{host: api.example.com, port: 443, enforcement: enforce, " + rest + "}"),
       ""},
      {"signing settings", Entry("a", "{host: api.example.com, port: 443, " + rest + ", credential_signing: sigv4, signing_service: s3}") +
                               Entry("b", "{host: api.example.com, port: 443, " + rest + ", credential_signing: sigv4, signing_service: bedrock}"),
       "signing_service: 's3' vs 'bedrock'"},
      {"mcp strict tool names default to true", Entry("a", "{host: api.example.com, port: 443, protocol: mcp, mcp: {allow_all_known_mcp_methods: true}}") +
                                                    Entry("b", "{host: api.example.com, port: 443, protocol: mcp, mcp: {allow_all_known_mcp_methods: true, strict_tool_names: false}}"),
       "mcp.strict_tool_names: 'true' vs 'false'"},
      {"tls skip beside none", Entry("a", "{host: api.example.com, port: 443, tls: skip}") + Entry("b", "{host: api.example.com, port: 443}"),
       "tls: 'skip' vs ''"},
      {"tls passthrough is not skip", Entry("a", "{host: api.example.com, port: 443, tls: passthrough}") +
                                          Entry("b", "{host: api.example.com, port: 443}"),
       ""},
      // ambiguity.rs host_patterns_overlap: `?` is a plain character to the loader
      {"a ? in a glob host is literal to the loader", Entry("a", "{host: 'a?*.example.com', port: 443, tls: skip}") +
                                                          Entry("b", "{host: ab.example.com, port: 443}"),
       ""},
      {"a * in a glob host reads no dot", Entry("a", "{host: '*.example.com', port: 443, tls: skip}") +
                                             Entry("b", "{host: a.b.example.com, port: 443}"),
       ""},
      {"a ** reads dots", Entry("a", "{host: '**.example.com', port: 443, tls: skip}") + Entry("b", "{host: a.b.example.com, port: 443}"),
       "tls"},
      {"other ports never conflict", Entry("a", "{host: api.example.com, port: 443, protocol: tcp}") +
                                         Entry("b", "{host: api.example.com, port: 8443, " + rest + "}"),
       ""},
  };
  for (const Case& c : cases) {
    INFO(c.name << "\n" << c.entries);
    const auto policy = Parse(c.entries);
    if (std::string(c.conflict).empty()) {
      CHECK(policy.ok());
      if (!policy.ok()) WARN(policy.status().message());
    } else {
      REQUIRE_FALSE(policy.ok());
      CHECK_THAT(std::string(policy.status().message()), Catch::Contains("can serve the same request but disagree on"));
      CHECK_THAT(std::string(policy.status().message()), Catch::Contains(c.conflict));
    }
  }
}

TEST_CASE("validation: a thousand long overlapping endpoint paths are refused, not checked for hours",
          "[policy][validation][route][bounds]") {
  std::string endpoints;
  const std::string path = "/" + std::string(2000, 'a') + "*";
  for (int i = 0; i < 200; ++i) {
    if (i > 0) endpoints += ", ";
    endpoints += "{host: api.example.com, port: 443, path: '" + path + std::to_string(i % 10) +
                 "', protocol: rest, access: full, enforcement: " + (i % 2 == 0 ? "enforce" : "audit") + "}";
  }
  const auto policy = Parse(Entry("a", endpoints));
  REQUIRE_FALSE(policy.ok());
  CHECK_THAT(std::string(policy.status().message()), Catch::Contains("to check them for ambiguity"));
  // Endpoints that agree on everything need no path compared, however long: accepted (as upstream does).
  std::string agreeing;
  for (int i = 0; i < 8; ++i) {
    if (i > 0) agreeing += ", ";
    agreeing += "{host: api.example.com, port: 443, path: '/" + std::string(4000, static_cast<char>('a' + i)) +
                "', protocol: rest, access: full}";
  }
  CHECK(Parse(Entry("a", agreeing)).ok());
}

TEST_CASE("containment and explain see a request the ceiling's routes leave unselected", "[policy][containment][route]") {
  // From a review: the ceiling's two REST endpoints route by path; /repos/acme/issues is in E1's Rego scope
  // (`/repos/*/**`) but no route selects it (the `<prefix>/**` shortcut takes `/repos/*` literally), so the
  // ceiling denies it "no L7 endpoint path matched request" — the proof by scopes said "inside".
  auto ceiling = Parse(Entry("c", "{host: api.example.com, port: 443, path: '/repos/*/**', protocol: rest, enforcement: enforce, "
                                  "access: full}, {host: api.example.com, port: 443, path: /graphql, protocol: rest, "
                                  "enforcement: enforce, access: full}"));
  auto candidate = Parse(Entry("c", "{host: api.example.com, port: 443, protocol: rest, enforcement: enforce, "
                                    "rules: [{allow: {method: GET, path: /repos/acme/issues}}]}"));
  REQUIRE((ceiling.ok() && candidate.ok()));
  const auto denied = Decide(*ceiling, "GET", "/repos/acme/issues");
  CHECK(denied.reason == "no L7 endpoint path matched request");
  const auto verdict = osh::policy::CheckContainment(*candidate, *ceiling);
  CHECK(verdict.verdict == osh::policy::Containment::kOutside);
  CHECK_THAT(verdict.detail, Catch::Contains("GET /repos/acme/issues") && Catch::Contains("no L7 endpoint path matched request"));
  // A route that selects all its scope does prove it: `/repos/**` beside `/graphql`.
  auto routed = Parse(Entry("c", "{host: api.example.com, port: 443, path: '/repos/**', protocol: rest, enforcement: enforce, "
                                 "access: full}, {host: api.example.com, port: 443, path: /graphql, protocol: rest, "
                                 "enforcement: enforce, access: full}"));
  REQUIRE(routed.ok());
  CHECK(osh::policy::CheckContainment(*candidate, *routed).verdict == osh::policy::Containment::kInside);
  // Explain: from E1 alone (one config: every request inspected under it, GET allowed) to E1 + E2.
  auto from = Parse(Entry("c", "{host: api.example.com, port: 443, path: '/repos/*/**', protocol: rest, enforcement: enforce, "
                               "access: full}"));
  REQUIRE(from.ok());
  CHECK(VerdictName(Decide(*from, "GET", "/repos/acme/issues").verdict) == "allow");
  const auto change = osh::policy::ExplainChange(*from, *ceiling);
  // Either a removed class whose witness the two policies decide as it says, or "may be no longer
  // allowed, not decided" — never silence.
  bool said = false;
  for (const auto& removed : change.removed) {
    if (!removed.intent || !removed.intent->request) continue;
    const auto& request = *removed.intent->request;
    said = said || (VerdictName(Decide(*from, request.method, request.path).verdict) == "allow" &&
                    Decide(*ceiling, request.method, request.path).reason == "no L7 endpoint path matched request");
  }
  for (const auto& c : change.unknown) said = said || absl::StrContains(c.description, "may be no longer allowed");
  CHECK(said);
}

TEST_CASE("egress: choosing among L7 endpoints by long path globs is bounded per request", "[policy][egress][route][bounds]") {
  // From a review: a few route globs of thousands of characters against a 4 KiB request path (the longest
  // the proxy takes) would cost each request about 10^7 steps per endpoint; beyond the bound the answer is
  // unsupported, at once.
  std::string endpoints;
  for (int i = 0; i < 3; ++i) {
    if (i > 0) endpoints += ", ";
    endpoints += "{host: api.example.com, port: 443, path: '/*" + std::string(3000 + i, 'z') + "', protocol: rest, access: full}";
  }
  auto policy = Parse(Entry("a", endpoints));
  REQUIRE(policy.ok());
  const auto decision = Decide(*policy, "GET", "/" + std::string(4095, 'z'));
  CHECK(VerdictName(decision.verdict) == "unsupported");
  CHECK_THAT(decision.reason, Catch::Contains("exceeds the evaluator's bounds") && Catch::Contains("by their paths"));
  // A short request path on the same policy is decided.
  CHECK(VerdictName(Decide(*policy, "GET", "/a").verdict) == "deny");
}

TEST_CASE("egress: a route ending in **/ selects the rest of the path, as the crate does", "[policy][egress][route]") {
  // From a review: `/api/**/` tokenizes to `/api/` and a `**` with nothing after it, which the crate lets
  // take `/api/x`; the request is then inspected (and allowed by E2's rule, whose scope admits it).
  auto policy = Parse(Entry("a", "{host: api.example.com, port: 443, path: '/api/**/', protocol: rest, enforcement: enforce, "
                                 "rules: [{allow: {method: POST, path: '/nothing'}}]}, {host: api.example.com, port: 443, "
                                 "path: '/*/**', protocol: rest, enforcement: enforce, rules: [{allow: {method: GET, path: '/**'}}]}"));
  REQUIRE(policy.ok());
  CHECK(VerdictName(Decide(*policy, "GET", "/api/x").verdict) == "allow");
}

TEST_CASE("validation: disagreeing endpoints with long glob hosts are refused, not compared for minutes",
          "[policy][validation][route][bounds]") {
  // The same long tail after the star, so no cheap test tells them apart; distinct prefixes, so they never
  // meet: every disagreeing pair needs the glob comparison.
  const std::string label(60, 'l');
  std::string endpoints;
  for (int i = 0; i < 100; ++i) {
    const std::string host = "p" + std::to_string(i) + "x*." + label + "." + label + "." + label + ".com";
    if (i > 0) endpoints += ", ";
    endpoints += "{host: '" + host + "', port: 443" + (i % 2 == 0 ? ", tls: skip" : "") + "}";
  }
  const auto policy = Parse(Entry("a", endpoints));
  REQUIRE_FALSE(policy.ok());
  CHECK_THAT(std::string(policy.status().message()), Catch::Contains("long host or `path` globs"));
  // Many glob hosts beside many literal ones they cannot meet (the tail after the star tells) disagree
  // freely and cost nothing: accepted, as upstream does.
  std::string many;
  for (int i = 0; i < 300; ++i) {
    if (i > 0) many += ", ";
    many += "{host: '*.svc-" + std::to_string(i) + ".internal.example.com', port: 443, tls: skip}, {host: 'h" +
            std::to_string(i) + ".example.com', port: 443}";
  }
  const auto large = Parse(Entry("a", many));
  INFO(large.status());
  CHECK(large.ok());
}

namespace {

// A line-by-line port of the glob crate's Pattern::new and matches_from (rust-lang/glob src/lib.rs,
// default MatchOptions), recursive and with its early exits, as the reference the state-set matcher of
// policy/route_path.cc is checked against. Characters are bytes here (the alphabet below is ASCII).
namespace crate_port {

enum Kind { kChar, kAnyChar, kAnySequence, kAnyRecursive, kWithin, kExcept };
struct Token {
  Kind kind;
  char c = 0;
  std::vector<std::pair<char, char>> specs{};
};
enum Result { kMatch, kSub, kEntire };

std::vector<std::pair<char, char>> Specs(const std::string& s) {
  std::vector<std::pair<char, char>> out;
  for (size_t i = 0; i < s.size();) {
    if (i + 3 <= s.size() && s[i + 1] == '-') {
      out.emplace_back(s[i], s[i + 2]);
      i += 3;
    } else {
      out.emplace_back(s[i], s[i]);
      ++i;
    }
  }
  return out;
}

std::optional<std::vector<Token>> New(const std::string& chars) {
  std::vector<Token> tokens;
  size_t i = 0;
  while (i < chars.size()) {
    const char ch = chars[i];
    if (ch == '?') {
      tokens.push_back({kAnyChar});
      ++i;
    } else if (ch == '*') {
      const size_t old = i;
      while (i < chars.size() && chars[i] == '*') ++i;
      const size_t count = i - old;
      if (count > 2) return std::nullopt;
      if (count == 2) {
        if (i == 2 || chars[i - count - 1] == '/') {
          if (i < chars.size() && chars[i] == '/') {
            ++i;
          } else if (i != chars.size()) {
            return std::nullopt;
          }
        } else {
          return std::nullopt;
        }
        if (!(tokens.size() > 1 && tokens.back().kind == kAnyRecursive)) tokens.push_back({kAnyRecursive});
      } else {
        tokens.push_back({kAnySequence});
      }
    } else if (ch == '[') {
      bool done = false;
      if (i + 4 <= chars.size() && chars[i + 1] == '!') {
        const size_t j = chars.find(']', i + 3);
        if (j != std::string::npos) {
          tokens.push_back({kExcept, 0, Specs(chars.substr(i + 2, j - (i + 2)))});
          i = j + 1;
          done = true;
        }
      } else if (i + 3 <= chars.size() && chars[i + 1] != '!') {
        const size_t j = chars.find(']', i + 2);
        if (j != std::string::npos) {
          tokens.push_back({kWithin, 0, Specs(chars.substr(i + 1, j - (i + 1)))});
          i = j + 1;
          done = true;
        }
      }
      if (!done) return std::nullopt;
    } else {
      tokens.push_back({kChar, ch});
      ++i;
    }
  }
  return tokens;
}

bool In(const std::vector<std::pair<char, char>>& specs, char c) {
  for (auto [low, high] : specs) {
    if (low <= c && c <= high) return true;
  }
  return false;
}

Result MatchesFrom(const std::vector<Token>& tokens, bool follows_separator, const std::string& file, size_t pos, size_t i) {
  for (size_t ti = i; ti < tokens.size(); ++ti) {
    const Token& token = tokens[ti];
    if (token.kind == kAnySequence || token.kind == kAnyRecursive) {
      const Result empty = MatchesFrom(tokens, follows_separator, file, pos, ti + 1);
      if (empty != kSub) return empty;
      while (pos < file.size()) {
        const char c = file[pos++];
        follows_separator = c == '/';
        if (token.kind == kAnyRecursive && !follows_separator) continue;
        const Result m = MatchesFrom(tokens, follows_separator, file, pos, ti + 1);
        if (m != kSub) return m;
      }
    } else {
      if (pos >= file.size()) return kEntire;
      const char c = file[pos++];
      bool ok = false;
      switch (token.kind) {
        case kAnyChar: ok = true; break;
        case kWithin: ok = In(token.specs, c); break;
        case kExcept: ok = !In(token.specs, c); break;
        case kChar: ok = c == token.c; break;
        default: break;
      }
      if (!ok) return kSub;
      follows_separator = c == '/';
    }
  }
  return pos >= file.size() ? kMatch : kSub;
}

// l7/mod.rs endpoint_path_matches, then the crate.
bool EndpointPathMatches(const std::string& pattern, const std::string& path) {
  if (pattern.empty() || pattern == "**" || pattern == "/**" || pattern == path) return true;
  if (pattern.size() >= 3 && pattern.compare(pattern.size() - 3, 3, "/**") == 0) {
    const std::string prefix = pattern.substr(0, pattern.size() - 3);
    return path == prefix || path.rfind(prefix + "/", 0) == 0;
  }
  const auto tokens = New(pattern);
  return tokens && MatchesFrom(*tokens, true, path, 0, 0) == kMatch;
}

}  // namespace crate_port
}  // namespace

TEST_CASE("route path: the state-set matcher agrees with a port of the glob crate's backtracking matcher",
          "[policy][egress][route][property]") {
  std::mt19937 rng(20261206);
  const std::string pattern_alphabet = "/ab*?[]!-";
  const std::string text_alphabet = "/ab-]";
  auto draw = [&](const std::string& alphabet, int max) {
    std::string out;
    const int n = std::uniform_int_distribution<int>(0, max)(rng);
    for (int i = 0; i < n; ++i) out += alphabet[std::uniform_int_distribution<size_t>(0, alphabet.size() - 1)(rng)];
    return out;
  };
  int matched = 0;
  for (int n = 0; n < 200000; ++n) {
    std::string pattern = draw(pattern_alphabet, 9);
    if (n % 2 == 0) pattern = "/" + pattern;
    const std::string path = "/" + draw(text_alphabet, 8);
    const bool expected = crate_port::EndpointPathMatches(pattern, path);
    matched += expected;
    if (RoutePathMatches(pattern, path) != expected) {
      FAIL("pattern '" << pattern << "' path '" << path << "': crate " << expected);
    }
  }
  CHECK(matched > 10000);  // the sample exercises matches, not only refusals
}

TEST_CASE("validation: credential_signing is a mode upstream's proxy knows, with its signing_service",
          "[policy][validation][route]") {
  // From a review: `credential_signing: sigv4` without a signing_service makes the endpoint no L7 config
  // (upstream's parse_l7_config drops it, and its requests pass uninspected) — and upstream's loader refuses
  // it (UnknownCredentialSigning, MissingSigningService); containment had taken it for an inspected one.
  auto missing = Parse(Entry("api", "{host: api.example.com, port: 443, protocol: rest, enforcement: enforce, "
                                    "credential_signing: sigv4, rules: [{allow: {method: GET, path: '/v1/**'}}]}"));
  REQUIRE_FALSE(missing.ok());
  CHECK_THAT(std::string(missing.status().message()),
             Catch::Contains("network_policies.api.endpoints[0].signing_service: is required with credential_signing"));
  auto unknown = Parse(Entry("api", "{host: api.example.com, port: 443, protocol: rest, enforcement: enforce, "
                                    "credential_signing: hmac, signing_service: s3, access: full}"));
  REQUIRE_FALSE(unknown.ok());
  CHECK_THAT(std::string(unknown.status().message()),
             Catch::Contains("network_policies.api.endpoints[0].credential_signing: must be empty, 'sigv4', 'sigv4:body' or "
                             "'sigv4:no_body', got 'hmac'"));
  auto usable = Parse(Entry("api", "{host: api.example.com, port: 443, protocol: rest, enforcement: enforce, "
                                   "credential_signing: 'sigv4:body', signing_service: s3, access: full}"));
  CHECK(usable.ok());
  auto rewrite = Parse(Entry("api", "{host: api.example.com, port: 443, protocol: rest, enforcement: enforce, "
                                    "credential_signing: sigv4, signing_service: s3, access: full, "
                                    "request_body_credential_rewrite: true}"));
  REQUIRE_FALSE(rewrite.ok());
  CHECK_THAT(std::string(rewrite.status().message()),
             Catch::Contains("endpoints[0].request_body_credential_rewrite: may not be set with credential_signing"));
}

TEST_CASE("containment: a ceiling that cannot decide a request is no witness against it", "[policy][containment][route][bounds]") {
  // From a review: the ceiling's routes are too long for the evaluator's bound, so it answers
  // `unsupported` for the candidate's request — which upstream may well allow. That is not a widening.
  const std::string run(3000, 'z');
  std::string routes;
  for (int i = 0; i < 3; ++i) {
    if (i > 0) routes += ", ";
    routes += "{host: api.example.com, port: 443, path: '/*" + run + std::to_string(i) + "/**', protocol: rest, "
              "enforcement: enforce, access: full}";
  }
  auto ceiling = Parse(Entry("c", routes));
  auto candidate = Parse(Entry("c", "{host: api.example.com, port: 443, protocol: rest, enforcement: enforce, "
                                    "rules: [{allow: {method: GET, path: '/" + run + "0/x'}}]}"));
  REQUIRE((ceiling.ok() && candidate.ok()));
  CHECK(VerdictName(Decide(*ceiling, "GET", "/" + run + "0/x").verdict) == "unsupported");
  CHECK(VerdictName(Decide(*candidate, "GET", "/" + run + "0/x").verdict) == "allow");
  CHECK(osh::policy::CheckContainment(*candidate, *ceiling).verdict == osh::policy::Containment::kUnknown);
}

TEST_CASE("egress: after the policy, upstream's proxy refuses what it refuses without DNS: always-blocked addresses, "
          "control-plane ports and addresses outside allowed_ips",
          "[policy][egress][destination]") {
  // proxy/destination.rs: an IP-literal host is its own allowed address, never loopback, link-local or
  // unspecified; an endpoint with allowed_ips never reaches a control-plane port and only its addresses.
  auto policy = Parse(Entry("literals", "{host: 127.0.0.1, port: 8080}, {host: 169.254.169.254, port: 80}, "
                                        "{host: 10.1.2.3, ports: [443, 6443]}, "
                                        "{host: 0.0.0.0, port: 80}") +
                      Entry("ips", "{host: db.example.com, ports: [5432, 2379], allowed_ips: [10.0.5.0/24]}, "
                                   "{ports: [9000, 10250], allowed_ips: [10.9.0.0/16, '192.168.1.7']}"));
  INFO(policy.status().ToString());
  REQUIRE(policy.ok());
  const auto compiled = EgressPolicy::Compile(*policy);
  auto decide = [&](const std::string& host, uint32_t port) {
    EgressIntent intent;
    intent.host = host;
    intent.port = port;
    intent.binary = "/usr/bin/curl";
    return compiled->Decide(intent);
  };
  struct Case {
    std::string host;
    uint32_t port;
    std::string verdict;
    std::string reason;
  };
  for (const Case& c : std::vector<Case>{
           {"127.0.0.1", 8080, "deny", "127.0.0.1 resolves to always-blocked address 127.0.0.1, connection rejected"},
           {"169.254.169.254", 80, "deny", "169.254.169.254 resolves to always-blocked address 169.254.169.254"},
           {"::1", 9000, "deny", "::1 resolves to always-blocked address ::1"},  // hosts cannot be IPv6 literals here
           {"[::1]", 9000, "deny", "[::1] resolves to always-blocked address ::1"},
           {"0.0.0.0", 80, "deny", "always-blocked address 0.0.0.0"},
           {"10.1.2.3", 443, "allow", ""},     // a private literal: its own allowed address
           {"10.1.2.3", 6443, "deny", "port 6443 is a blocked control-plane port"},  // private: refused by every version
           {"db.example.com", 5432, "allow", ""},  // a name: what it resolves to is not known here
           {"db.example.com", 2379, "deny", "port 2379 is a blocked control-plane port, connection rejected"},
           {"10.9.3.4", 9000, "allow", ""},
           {"192.168.1.7", 9000, "allow", ""},
           {"192.168.1.8", 9000, "deny", "192.168.1.8 resolves to 192.168.1.8 which is not in allowed_ips, connection rejected"},
           {"127.0.0.1", 9000, "deny", "always-blocked address 127.0.0.1"},
           {"::ffff:127.0.0.1", 9000, "deny", "always-blocked address ::ffff:127.0.0.1"},
           {"::ffff:10.9.3.4", 9000, "deny", "which is not in allowed_ips"},  // an IPv4 block holds no IPv6 address
           {"10.9.3.4", 10250, "deny", "port 10250 is a blocked control-plane port"},
       }) {
    INFO(c.host << ":" << c.port);
    const EgressDecision d = decide(c.host, c.port);
    CHECK(std::string(osh::policy::VerdictName(d.verdict)) == c.verdict);
    CHECK_THAT(d.reason, Catch::Contains(c.reason));
    if (c.verdict == "deny") CHECK(d.matched_policy.empty());  // the connection itself is refused
  }
  // A public literal on a control-plane port without allowed_ips: refused by newer upstream proxies only.
  auto public_literal = Parse(Entry("pub", "{host: 8.8.8.8, port: 6443}"));
  REQUIRE(public_literal.ok());
  EgressIntent intent;
  intent.host = "8.8.8.8";
  intent.port = 6443;
  intent.binary = "/usr/bin/curl";
  CHECK(EgressPolicy::Compile(*public_literal)->Decide(intent).verdict == osh::policy::EgressVerdict::kAllow);

  // The settings come from the first matched endpoint with a protocol, allowed_ips or tls, over every
  // matched entry: here entry b's, though entry a matches first (review finding).
  auto two = Parse(Entry("a", "{host: x.db1.example.com, port: 6443}") +
                   Entry("b", "{host: '*.db?.example.com', port: 6443, allowed_ips: [10.0.0.0/8]}"));
  INFO(two.status().ToString());
  REQUIRE(two.ok());
  intent.host = "x.db1.example.com";
  const EgressDecision refused = EgressPolicy::Compile(*two)->Decide(intent);
  CHECK(refused.verdict == osh::policy::EgressVerdict::kDeny);
  CHECK(refused.reason == "port 6443 is a blocked control-plane port, connection rejected");
  // Whether entry b applies cannot be decided (its binary glob has a class, outside the modelled
  // language): unsupported, not a guess that its settings do not apply (review finding).
  auto undecided = Parse(Entry("a", "{host: x.db1.example.com, port: 6443}") +
                         Entry("b", "{host: '*.db?.example.com', port: 6443, allowed_ips: [10.0.0.0/8]}", "/usr/bin/[c]url*"));
  INFO(undecided.status().ToString());
  REQUIRE(undecided.ok());
  CHECK(EgressPolicy::Compile(*undecided)->Decide(intent).verdict == osh::policy::EgressVerdict::kUnsupported);
}

TEST_CASE("containment: a grant to an address the enforcer always refuses widens nothing", "[policy][containment][destination]") {
  // Review finding: a candidate granting 127.0.0.1 was "not decided" (no witness: the enforcer refuses
  // every connection there), where it widens nothing.
  auto ceiling = Parse(Entry("api", "{host: api.example.com, port: 443}"));
  auto candidate = Parse(Entry("api", "{host: api.example.com, port: 443}") + Entry("local", "{host: 127.0.0.1, port: 8080}") +
                         Entry("metadata", "{host: 169.254.169.254, port: 80}"));
  REQUIRE(ceiling.ok());
  REQUIRE(candidate.ok());
  const auto result = osh::policy::CheckContainment(*candidate, *ceiling);
  INFO(result.detail);
  CHECK(result.verdict == osh::policy::Containment::kInside);
  auto wider = Parse(Entry("api", "{host: api.example.com, port: 443}") + Entry("private", "{host: 10.1.2.3, port: 8080}"));
  REQUIRE(wider.ok());
  CHECK(osh::policy::CheckContainment(*wider, *ceiling).verdict == osh::policy::Containment::kOutside);
}
