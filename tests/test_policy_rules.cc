// Every validation rule of SCHEMA.md, accepted and refused, with the field path in the message.
#include <catch2/catch.hpp>

#include "policy/policy_file.h"
#include "policy/validation.h"

namespace {

struct Case {
  const char* name;
  std::string yaml;
  bool ok;
  const char* expect;  // substring of the error ("" when ok)
};

std::string Base(const std::string& extra) { return "version: 1\n" + extra; }
std::string Endpoint(const std::string& fields) {
  return Base("network_policies:\n  r:\n    endpoints:\n      - " + fields + "\n");
}

}  // namespace

TEST_CASE("policy rules: each SCHEMA.md rule accepts and refuses, naming the field", "[policy][validation]") {
  const std::vector<Case> cases = {
      {"version 1", Base(""), true, ""},
      {"version 2", "version: 2\n", false, "invalid_policy: version: must be 1"},
      {"version missing", "landlock: {compatibility: best_effort}\n", false, "version: must be 1"},
      {"absolute path", Base("filesystem_policy: {read_only: [/usr]}\n"), true, ""},
      {"relative path", Base("filesystem_policy: {read_only: [usr]}\n"), false, "filesystem_policy.read_only[0]: must be an absolute path"},
      {"dotdot", Base("filesystem_policy: {read_write: [/tmp/../etc]}\n"), false, "filesystem_policy.read_write[0]: must not contain a '..' segment"},
      {"long path", Base("filesystem_policy: {read_only: [/" + std::string(4096, 'a') + "]}\n"), false, "longer than 4096"},
      {"path 4096 ok", Base("filesystem_policy: {read_only: [/" + std::string(4095, 'a') + "]}\n"), true, ""},
      {"root rw", Base("filesystem_policy: {read_write: [/tmp, /]}\n"), false, "filesystem_policy.read_write[1]: '/' may not be read-write"},
      {"root rw as //", Base("filesystem_policy: {read_write: [/tmp, //]}\n"), false, "filesystem_policy.read_write[1]: '/' may not be read-write"},
      // Upstream's supervisor drops "." segments (paths.rs normalize_path): "/." is "/" read-write (review 103).
      {"root rw as /.", Base("filesystem_policy: {read_write: [/tmp, /.]}\n"), false, "filesystem_policy.read_write[1]: '/' may not be read-write"},
      {"root rw as /./", Base("filesystem_policy: {read_write: [/tmp, //././/]}\n"), false, "filesystem_policy.read_write[1]: '/' may not be read-write"},
      {"dot under root rw", Base("filesystem_policy: {read_write: [/tmp/.]}\n"), true, ""},
      {"root ro ok", Base("filesystem_policy: {read_only: [/]}\n"), true, ""},
      {"landlock hard", Base("landlock: {compatibility: hard_requirement}\n"), true, ""},
      {"landlock bad", Base("landlock: {compatibility: strict}\n"), false, "landlock.compatibility"},
      {"user sandbox", Base("process: {run_as_user: sandbox, run_as_group: '1000'}\n"), true, ""},
      {"user root", Base("process: {run_as_user: root}\n"), false, "process.run_as_user: root is refused"},
      {"user 0", Base("process: {run_as_user: '0'}\n"), false, "process.run_as_user: root (id 0)"},
      {"group max", Base("process: {run_as_group: '4294967294'}\n"), true, ""},
      {"group too big", Base("process: {run_as_group: '4294967295'}\n"), false, "process.run_as_group"},
      {"user name", Base("process: {run_as_user: alice}\n"), false, "process.run_as_user: must be empty, 'sandbox' or a numeric id"},
      {"host exact", Endpoint("{host: API.Example.com, port: 443}"), true, ""},
      {"host one label glob", Endpoint("{host: '*.example.com', port: 443}"), true, ""},
      {"host many labels glob", Endpoint("{host: '**.example.com', port: 443}"), true, ""},
      {"host pattern in label", Endpoint("{host: '*-api.example.com', port: 443}"), true, ""},
      {"bare star", Endpoint("{host: '*', port: 443}"), false, "network_policies.r.endpoints[0].host: a bare wildcard"},
      {"bare double star", Endpoint("{host: '**', port: 443}"), false, "a bare wildcard"},
      {"wildcard tld", Endpoint("{host: '*.com', port: 443}"), false, "top-level domain"},
      {"wildcard last label", Endpoint("{host: 'example.*', port: 443}"), false, "wildcard top-level domain"},
      {"whole-label wildcard in a middle label", Endpoint("{host: '*.s3.*.amazonaws.com', port: 443}"), true, ""},
      {"partial wildcard in a middle label", Endpoint("{host: 'a.s3-*.amazonaws.com', port: 443}"), false, "must be a whole label"},
      {"globstar after the first label", Endpoint("{host: 'api.**.example.com', port: 443}"), false, "must be a whole label"},
      {"tcp without a host", Endpoint("{port: 6379, protocol: tcp, allowed_ips: [10.0.0.0/8]}"), false, "endpoints[0].host: a 'tcp' endpoint needs a host"},
      {"sql enforce", Endpoint("{host: db.internal, port: 5432, protocol: sql, enforcement: enforce}"), false, "endpoints[0].enforcement: 'sql' endpoints can only audit"},
      {"rule naming nothing", Endpoint("{host: a.example.com, port: 443, protocol: rest, rules: [{allow: {method: ''}}]}"), false, "endpoints[0].rules[0].allow: a rule that names nothing"},
      {"tcp with access", Endpoint("{host: a.example.com, port: 443, protocol: tcp, access: full}"), false, "endpoints[0].access: an access preset needs an L7 protocol"},
      {"double star inside label", Endpoint("{host: 'a**.example.com', port: 443}"), false, "'**' must be the whole first label"},
      {"empty host without ips", Endpoint("{port: 443}"), false, "endpoints[0].host: may be empty only when allowed_ips is set"},
      {"empty host with ips", Endpoint("{port: 443, allowed_ips: [10.0.0.0/8]}"), true, ""},
      {"port 0 without ports", Endpoint("{host: a.example.com}"), false, "endpoints[0].port: an endpoint needs port or ports"},
      {"port too big", Endpoint("{host: a.example.com, port: 70000}"), false, "endpoints[0].port: must be from 1 to 65535"},
      {"ports list", Endpoint("{host: a.example.com, ports: [80, 443]}"), true, ""},
      {"ports bad entry", Endpoint("{host: a.example.com, ports: [80, 0]}"), false, "endpoints[0].ports[1]: must be from 1 to 65535"},
      {"protocol rest", Endpoint("{host: a.example.com, port: 443, protocol: rest, access: read-only}"), true, ""},
      // Upstream's loader (l7_validate.rs rule 5) refuses an L7 endpoint that allows nothing: issue 25, item 3.
      {"protocol rest without rules or access", Endpoint("{host: a.example.com, port: 443, protocol: rest}"), false, "endpoints[0].rules: protocol requires rules or access"},
      {"protocol bad", Endpoint("{host: a.example.com, port: 443, protocol: http}"), false, "endpoints[0].protocol: unsupported protocol 'http'"},
      {"l7 rules need l7", Endpoint("{host: a.example.com, port: 443, rules: [{allow: {method: GET}}]}"), false, "endpoints[0].rules: L7 rules need an L7 protocol"},
      {"l7 deny rules need l7", Endpoint("{host: a.example.com, port: 443, protocol: tcp, deny_rules: [{method: GET}]}"), false, "endpoints[0].deny_rules: L7 rules need an L7 protocol"},
      {"l7 rules with rest", Endpoint("{host: a.example.com, port: 443, protocol: rest, rules: [{allow: {method: GET, path: /x}}], deny_rules: [{method: DELETE}]}"), true, ""},
      {"enforcement audit", Endpoint("{host: a.example.com, port: 443, enforcement: audit}"), true, ""},
      {"enforcement bad", Endpoint("{host: a.example.com, port: 443, enforcement: block}"), false, "endpoints[0].enforcement"},
      {"access full", Endpoint("{host: a.example.com, port: 443, protocol: rest, access: full}"), true, ""},
      {"access bad", Endpoint("{host: a.example.com, port: 443, access: everything}"), false, "endpoints[0].access"},
      {"access with rules", Endpoint("{host: a.example.com, port: 443, protocol: rest, access: read-only, rules: [{allow: {method: GET}}]}"), false, "endpoints[0].access: access may not be combined with rules"},
      {"ips v4 v6 cidr", Endpoint("{host: a.example.com, port: 443, allowed_ips: [192.0.2.1, '2001:db8::/32', 10.1.0.0/16]}"), true, ""},
      {"ips bad", Endpoint("{host: a.example.com, port: 443, allowed_ips: [300.1.1.1]}"), false, "endpoints[0].allowed_ips[0]: not an IPv4/IPv6 address"},
      {"ips bad prefix", Endpoint("{host: a.example.com, port: 443, allowed_ips: [10.0.0.0/33]}"), false, "endpoints[0].allowed_ips[0]: invalid prefix length"},
      {"binary empty", Base("network_policies:\n  r:\n    binaries: [{path: ''}]\n"), false, "network_policies.r.binaries[0].path"},
      {"middleware ok", Base("network_middlewares:\n  m1: {middleware: x, order: 1, on_error: fail_open, config: {a: 1, b: [x, true]}, endpoints: {include: ['*.example.com'], exclude: [api.example.com]}}\n  m2: {middleware: y, order: 2, endpoints: {include: ['**']}}\n"), true, ""},
      {"middleware order dup", Base("network_middlewares:\n  m1: {middleware: x, order: 1, endpoints: {include: [a.com]}}\n  m2: {middleware: x, order: 1, endpoints: {include: [a.com]}}\n"), false, "network_middlewares.m2.order: order 1 is also used by 'm1'"},
      {"middleware on_error bad", Base("network_middlewares:\n  m1: {middleware: x, on_error: retry, endpoints: {include: [a.com]}}\n"), false, "network_middlewares.m1.on_error"},
      // What upstream's supervisor refuses at load (crates/openshell-policy/src/middleware.rs `validate`).
      {"middleware empty name", Base("network_middlewares:\n  '': {middleware: x, endpoints: {include: [a.com]}}\n"), false, "network_middlewares.: middleware config name must not be empty"},
      {"middleware without implementation", Base("network_middlewares:\n  m1: {endpoints: {include: [a.com]}}\n"), false, "network_middlewares.m1.middleware: must not be empty"},
      {"middleware without selector", Base("network_middlewares:\n  m1: {middleware: x}\n"), false, "network_middlewares.m1.endpoints: an endpoint selector is required"},
      {"middleware selector without include", Base("network_middlewares:\n  m1: {middleware: x, endpoints: {exclude: [a.com]}}\n"), false, "network_middlewares.m1.endpoints.include: must list at least one host pattern"},
      {"middleware selector empty label", Base("network_middlewares:\n  m1: {middleware: x, endpoints: {include: [a..com]}}\n"), false, "network_middlewares.m1.endpoints.include[0]: 'a..com': host pattern must not contain empty DNS labels"},
      {"middleware selector trailing dot", Base("network_middlewares:\n  m1: {middleware: x, endpoints: {include: [a.com.]}}\n"), false, "endpoints.include[0]: 'a.com.': host pattern must not contain empty DNS labels"},
      {"middleware selector whitespace", Base("network_middlewares:\n  m1: {middleware: x, endpoints: {include: [a.com], exclude: ['b .com']}}\n"), false, "endpoints.exclude[0]: 'b .com': host pattern must not contain whitespace"},
      {"middleware selector unicode whitespace", Base("network_middlewares:\n  m1: {middleware: x, endpoints: {include: [\"a\\u00a0b.com\"]}}\n"), false, "host pattern must not contain whitespace"},
      {"middleware selector braces", Base("network_middlewares:\n  m1: {middleware: x, endpoints: {include: ['*.{a,b}.com']}}\n"), false, "must not contain brace alternates"},
      {"middleware selector star inside label", Base("network_middlewares:\n  m1: {middleware: x, endpoints: {include: ['api**.example.com']}}\n"), false, "endpoints.include[0]: 'api**.example.com': invalid host pattern"},
      {"middleware selector three stars", Base("network_middlewares:\n  m1: {middleware: x, endpoints: {include: ['***.example.com']}}\n"), false, "invalid host pattern"},
      {"middleware selector open class", Base("network_middlewares:\n  m1: {middleware: x, endpoints: {include: ['api[.example.com']}}\n"), false, "invalid host pattern"},
      {"middleware selector globs ok", Base("network_middlewares:\n  m1: {middleware: x, endpoints: {include: ['*-api.example.com', 'api.**.com', 'a?[0-9].example.com', '[!x]*.Example.COM']}}\n"), true, ""},
  };
  for (const auto& c : cases) {
    INFO(c.name);
    auto policy = osh::policy::ParsePolicyText(c.yaml, "p.yaml");
    if (c.ok) {
      CHECK(policy.ok());
      if (!policy.ok()) WARN(policy.status().message());
    } else {
      REQUIRE_FALSE(policy.ok());
      CHECK(policy.status().code() == absl::StatusCode::kInvalidArgument);
      CHECK_THAT(std::string(policy.status().message()), Catch::Contains(c.expect));
      CHECK_THAT(std::string(policy.status().message()), Catch::StartsWith("p.yaml:"));
    }
  }
}

TEST_CASE("policy rules: path and middleware counts are bounded", "[policy][validation]") {
  openshell::sandbox::v1::SandboxPolicy policy;
  policy.set_version(1);
  for (int i = 0; i < 256; ++i) policy.mutable_filesystem()->add_read_only("/p" + std::to_string(i));
  CHECK(osh::policy::ValidatePolicy(policy).ok());
  policy.mutable_filesystem()->add_read_write("/one-more");
  CHECK_THAT(std::string(osh::policy::ValidatePolicy(policy).message()), Catch::Contains("filesystem: at most 256 paths"));

  openshell::sandbox::v1::SandboxPolicy middlewares;
  middlewares.set_version(1);
  const auto add = [&](const std::string& id, int order) {
    auto& mw = (*middlewares.mutable_network_middlewares())[id];
    mw.set_order(order);
    mw.set_middleware("x");
    mw.mutable_endpoints()->add_include("**");
  };
  for (int i = 0; i < 10; ++i) add("m" + std::to_string(i), i);
  CHECK(osh::policy::ValidatePolicy(middlewares).ok());
  // A selector holds at most 32 patterns, include and exclude together (upstream's limit).
  auto& selector = *(*middlewares.mutable_network_middlewares())["m0"].mutable_endpoints();
  for (int i = 0; i < 15; ++i) selector.add_include("h" + std::to_string(i) + ".example.com");
  for (int i = 0; i < 16; ++i) selector.add_exclude("x" + std::to_string(i) + ".example.com");
  CHECK(osh::policy::ValidatePolicy(middlewares).ok());
  selector.add_exclude("one-more.example.com");
  CHECK_THAT(std::string(osh::policy::ValidatePolicy(middlewares).message()),
             Catch::Contains("network_middlewares.m0.endpoints: at most 32 include and exclude patterns together, got 33"));
  selector.mutable_exclude()->RemoveLast();
  add("m10", 10);
  CHECK_THAT(std::string(osh::policy::ValidatePolicy(middlewares).message()), Catch::Contains("at most 10 middleware"));
}

TEST_CASE("policy rules: internal markers are accepted and reported", "[policy][validation]") {
  auto policy = osh::policy::ParsePolicyText(
      Endpoint("{host: a.example.com, port: 443, advisor_proposed: true, provider_credentialed: true}"), "p.yaml");
  REQUIRE(policy.ok());
  const auto markers = osh::policy::InternalMarkers(*policy);
  REQUIRE(markers.size() == 2);
  CHECK(markers[0] == "network_policies.r.endpoints[0].advisor_proposed");
  // A binary's deprecated harness: upstream's runtime still reads it (as the advisor's provenance).
  auto harness = osh::policy::ParsePolicyText(
      Base("network_policies:\n  r:\n    endpoints: [{host: a.example.com, port: 443}]\n"
           "    binaries: [{path: /usr/bin/curl}, {path: /usr/bin/git, harness: true}]\n"),
      "p.yaml");
  REQUIRE(harness.ok());
  CHECK(osh::policy::InternalMarkers(*harness) == std::vector<std::string>{"network_policies.r.binaries[1].harness"});
}

TEST_CASE("policy rules: endpoints that serve the same host:port must agree on the connection", "[policy][validation]") {
  auto load = [](const std::string& left, const std::string& right) {
    return osh::policy::ParsePolicyText("version: 1\nnetwork_policies:\n  a:\n    endpoints: [" + left +
                                            "]\n    binaries: [{path: /usr/bin/curl}]\n  b:\n    endpoints: [" + right +
                                            "]\n    binaries: [{path: /usr/bin/curl}]\n",
                                        "p.yaml");
  };
  // Overlapping hosts (a globstar over a deeper exact host), a shared port, different TLS: refused.
  auto deep = load("{host: '**.example.com', port: 443, tls: skip}", "{host: a.b.example.com, ports: [80, 443]}");
  REQUIRE_FALSE(deep.ok());
  CHECK_THAT(std::string(deep.status().message()), Catch::Contains("disagree on tls"));
  // A one-label wildcard cannot match a two-label name: no overlap, accepted.
  CHECK(load("{host: '*.example.com', port: 443, tls: skip}", "{host: a.b.example.com, port: 443}").ok());
  // Same host, no shared port: accepted. 'terminate' is the deprecated spelling of the default.
  CHECK(load("{host: a.example.com, port: 443, tls: skip}", "{host: a.example.com, port: 8443}").ok());
  CHECK(load("{host: a.example.com, port: 443, tls: terminate}", "{host: A.example.com, port: 443}").ok());
  // Two intra-label patterns overlap when their fixed parts are compatible.
  auto intra = load("{host: 'api-*.example.com', port: 443, allowed_ips: [10.0.0.1]}", "{host: '*-eu.example.com', port: 443}");
  REQUIRE_FALSE(intra.ok());
  CHECK_THAT(std::string(intra.status().message()), Catch::Contains("disagree on allowed_ips"));
  CHECK(load("{host: 'api-*.example.com', port: 443, allowed_ips: [10.0.0.1]}", "{host: 'web-*.example.com', port: 443}").ok());
}
