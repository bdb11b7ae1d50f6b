// Issue 25, items 3 and 7: the policy library agrees with upstream's enforcer (its Rego and its glob
// matcher, regorus/globset) and stays bounded on hostile input. Each case names the upstream rule.
#include <catch2/catch.hpp>

#include <chrono>
#include <string>

#include "policy/containment.h"
#include "policy/egress.h"
#include "policy/glob.h"
#include "policy/policy_file.h"
#include "policy/validation.h"

namespace {

using osh::policy::CheckContainment;
using osh::policy::Containment;
using osh::policy::EgressIntent;
using osh::policy::EgressPolicy;
using osh::policy::EgressRequest;
using osh::policy::EgressVerdict;
using osh::policy::Glob;

openshell::sandbox::v1::SandboxPolicy Load(const std::string& yaml) {
  auto policy = osh::policy::ParsePolicyText(yaml, "p.yaml");
  INFO(yaml);
  if (!policy.ok()) FAIL(std::string(policy.status().message()));
  return *policy;
}

absl::Status LoadStatus(const std::string& yaml) { return osh::policy::ParsePolicyText(yaml, "p.yaml").status(); }

std::string Rest(const std::string& endpoint_fields, const std::string& binary = "/usr/bin/curl") {
  return "version: 1\nnetwork_policies:\n  api:\n    endpoints:\n      - {host: api.example.com, port: 443, " +
         endpoint_fields + "}\n    binaries: [{path: '" + binary + "'}]\n";
}

std::string OneEndpoint(const std::string& endpoint) {
  return "version: 1\nnetwork_policies:\n  r:\n    endpoints:\n      - " + endpoint + "\n    binaries: [{path: /usr/bin/curl}]\n";
}

EgressVerdict Decide(const openshell::sandbox::v1::SandboxPolicy& policy, const std::string& host, const std::string& method,
                     const std::string& path, const std::string& binary = "/usr/bin/curl",
                     std::vector<std::pair<std::string, std::vector<std::string>>> query = {}) {
  EgressIntent intent;
  intent.host = host;
  intent.port = 443;
  intent.binary = binary;
  if (!method.empty()) intent.request = EgressRequest{method, path, std::move(query)};
  return EgressPolicy::Compile(policy)->Decide(intent).verdict;
}

bool GlobMatches(const std::string& pattern, char delimiter, const std::string& text) {
  auto glob = Glob::Parse(pattern, delimiter);
  REQUIRE(glob.ok());
  return glob->Matches(text);
}

}  // namespace

// ---- item 3: the glob language of upstream's `glob.match` (regorus 0.9.1 on globset) ----------------

TEST_CASE("glob: a trailing /** needs a segment, like globset's RecursiveSuffix", "[policy][glob][semantics]") {
  CHECK_FALSE(GlobMatches("/repos/**", '/', "/repos"));
  CHECK(GlobMatches("/repos/**", '/', "/repos/"));
  CHECK(GlobMatches("/repos/**", '/', "/repos/a"));
  CHECK(GlobMatches("/repos/**", '/', "/repos/a/b/c"));
  CHECK_FALSE(GlobMatches("/repos/**", '/', "/reposx"));
  // A leading or middle `**/` is globset's RecursivePrefix / RecursiveZeroOrMore: zero or more.
  CHECK(GlobMatches("/**/info/refs", '/', "/info/refs"));
  CHECK(GlobMatches("/**/info/refs", '/', "/o/r.git/info/refs"));
  CHECK(GlobMatches("/a/**/b", '/', "/a/b"));
  CHECK(GlobMatches("**/python3", '/', "python3"));
  CHECK(GlobMatches("**/python3", '/', "/usr/bin/python3"));
  // The whole pattern `**` matches everything (globset special-cases it to `.*`).
  CHECK(GlobMatches("**", '/', ""));
  CHECK(GlobMatches("**", '/', "/a/b"));
  // `/**` is any absolute path, including `/`.
  CHECK(GlobMatches("/**", '/', "/"));
  CHECK(GlobMatches("/**", '/', "/usr/bin/x"));
}

TEST_CASE("glob: with the '.' delimiter every ** needs a segment", "[policy][glob][semantics]") {
  CHECK_FALSE(GlobMatches("**.example.com", '.', "example.com"));
  CHECK(GlobMatches("**.example.com", '.', "a.example.com"));
  CHECK(GlobMatches("**.example.com", '.', "a.b.example.com"));
  // Query values: globset sees `a/./**`, a RecursiveSuffix after a literal '.', so `a.**` needs `a.`.
  CHECK_FALSE(GlobMatches("a.**", '.', "a"));
  CHECK(GlobMatches("a.**", '.', "a.b"));
  CHECK(GlobMatches("a.**", '.', "a.b.c"));
  CHECK_FALSE(GlobMatches("a.**.b", '.', "a.b"));
  CHECK(GlobMatches("a.**.b", '.', "a.x.b"));
  CHECK(GlobMatches("**", '.', "anything.at.all"));
}

TEST_CASE("glob: ? is one character in a segment and glued stars are one *", "[policy][glob][semantics]") {
  CHECK(GlobMatches("/usr/bin/python3.?", '/', "/usr/bin/python3.1"));
  CHECK_FALSE(GlobMatches("/usr/bin/python3.?", '/', "/usr/bin/python3.11"));
  CHECK_FALSE(GlobMatches("/usr/bin/?", '/', "/usr/bin/"));
  CHECK_FALSE(GlobMatches("/a?b", '/', "/a/b"));
  CHECK(GlobMatches("a?.example.com", '.', "ab.example.com"));
  CHECK_FALSE(GlobMatches("a?.example.com", '.', "a.example.com"));
  // globset's parse_star: `**` that is not a whole segment is two ZeroOrMore, i.e. `*`.
  CHECK(GlobMatches("/opt/tool**", '/', "/opt/tool-1"));
  CHECK_FALSE(GlobMatches("/opt/tool**", '/', "/opt/tool/x"));
  CHECK(GlobMatches("/opt/***/x", '/', "/opt/abc/x"));
  CHECK_FALSE(GlobMatches("/opt/***/x", '/', "/opt/a/b/x"));
  // Coverage and intersection understand `?`.
  auto one = Glob::Parse("/v?/items", '/');
  auto any = Glob::Parse("/v*/items", '/');
  REQUIRE(one.ok());
  REQUIRE(any.ok());
  CHECK(any->Matches(one->Symbolic()));
  CHECK_FALSE(one->Matches(any->Symbolic()));
  CHECK(one->Intersects(*any));
  CHECK_FALSE(one->Intersects(*Glob::Parse("/v12/items", '/')));
}

TEST_CASE("egress: GET /repos is denied under a GET /repos/** rule", "[policy][egress][semantics]") {
  const auto policy = Load(Rest("protocol: rest, enforcement: enforce, rules: [{allow: {method: GET, path: '/repos/**'}}]"));
  CHECK(Decide(policy, "api.example.com", "GET", "/repos") == EgressVerdict::kDeny);
  CHECK(Decide(policy, "api.example.com", "GET", "/repos/acme") == EgressVerdict::kAllow);
  CHECK(Decide(policy, "api.example.com", "GET", "/repos/acme/app/pulls") == EgressVerdict::kAllow);
}

TEST_CASE("egress: a trailing .** in a query glob needs a label", "[policy][egress][semantics]") {
  const auto policy = Load(Rest("protocol: rest, enforcement: enforce, rules: [{allow: {method: GET, path: /dl, query: {v: {glob: 'v1.**'}}}}]"));
  CHECK(Decide(policy, "api.example.com", "GET", "/dl", "/usr/bin/curl", {{"v", {"v1.2"}}}) == EgressVerdict::kAllow);
  CHECK(Decide(policy, "api.example.com", "GET", "/dl", "/usr/bin/curl", {{"v", {"v1"}}}) == EgressVerdict::kDeny);
}

TEST_CASE("egress: hosts with ? are valid and decided exactly", "[policy][egress][semantics]") {
  // With a `*` the host is a glob (Rego `endpoint_allowed` globs hosts that contain `*`): `?` is one character.
  const auto glob = Load(OneEndpoint("{host: '*.a?.example.com', port: 443}"));
  CHECK(Decide(glob, "x.ab.example.com", "", "") == EgressVerdict::kAllow);
  CHECK(Decide(glob, "x.abc.example.com", "", "") == EgressVerdict::kDeny);
  // Without a `*` it is compared exactly (lower-cased), `?` included.
  const auto exact = Load(OneEndpoint("{host: 'a?.example.com', port: 443}"));
  CHECK(Decide(exact, "ab.example.com", "", "") == EgressVerdict::kDeny);
  CHECK(Decide(exact, "A?.example.com", "", "") == EgressVerdict::kAllow);
  // Containment decides them too (a policy is inside itself; a narrower `?` is inside a `*`).
  CHECK(CheckContainment(glob, glob).verdict == Containment::kInside);
  const auto wide = Load(OneEndpoint("{host: '*.*.example.com', port: 443}"));
  CHECK(CheckContainment(glob, wide).verdict == Containment::kInside);
  CHECK(CheckContainment(wide, glob).verdict == Containment::kOutside);
}

TEST_CASE("containment: a ceiling allowing GET /repos/** does not cover GET /repos", "[policy][containment][semantics]") {
  const auto ceiling = Load(Rest("protocol: rest, enforcement: enforce, rules: [{allow: {method: GET, path: '/repos/**'}}]"));
  const auto candidate = Load(Rest("protocol: rest, enforcement: enforce, rules: [{allow: {method: GET, path: /repos}}]"));
  const auto result = CheckContainment(candidate, ceiling);
  CHECK(result.verdict == Containment::kOutside);
  CHECK_THAT(result.detail, Catch::Contains("GET /repos is allowed by the candidate"));
  const auto deeper = Load(Rest("protocol: rest, enforcement: enforce, rules: [{allow: {method: GET, path: '/repos/*/x'}}]"));
  CHECK(CheckContainment(deeper, ceiling).verdict == Containment::kInside);
  CHECK(CheckContainment(ceiling, ceiling).verdict == Containment::kInside);
  // A middle `**` (zero or more) is wider than a trailing one (one or more).
  const auto middle = Load(Rest("protocol: rest, enforcement: enforce, rules: [{allow: {method: GET, path: '/repos/**/x'}}]"));
  CHECK(CheckContainment(middle, ceiling).verdict == Containment::kInside);
  const auto tail_ceiling = Load(Rest("protocol: rest, enforcement: enforce, rules: [{allow: {method: GET, path: '/a/**/x'}}]"));
  const auto tail = Load(Rest("protocol: rest, enforcement: enforce, rules: [{allow: {method: GET, path: '/a/x'}}]"));
  CHECK(CheckContainment(tail, tail_ceiling).verdict == Containment::kInside);
}

TEST_CASE("containment: an L4-only ceiling endpoint allows every request of a path-scoped REST endpoint", "[policy][containment][semantics]") {
  // The ceiling's endpoint has no L7 protocol: upstream's proxy inspects nothing there (the L7 configs are
  // the matched endpoints with an L7 protocol: none), so whatever the candidate allows on the connection
  // the ceiling allows. (This was "not decided" while the evaluator chose the applying endpoint by
  // another rule; policy/route_path.h now has upstream's.)
  const auto ceiling = Load(Rest("enforcement: enforce"));
  const auto candidate =
      Load(Rest("protocol: rest, enforcement: enforce, path: '/api/**', rules: [{allow: {method: GET, path: '/api/**'}}]"));
  CHECK(CheckContainment(candidate, ceiling).verdict == Containment::kInside);
  const auto unscoped = Load(Rest("protocol: rest, enforcement: enforce, rules: [{allow: {method: GET, path: '/api/**'}}]"));
  CHECK(CheckContainment(unscoped, ceiling).verdict == Containment::kInside);
  // And the other way round: the candidate's L4 endpoint lets every request through, which the ceiling's
  // path-scoped REST endpoint does not.
  const auto outside = CheckContainment(ceiling, candidate);
  CHECK(outside.verdict == Containment::kOutside);
  CHECK_THAT(outside.detail, Catch::Contains("but not by the ceiling"));
}

TEST_CASE("containment: the filesystem a supervisor applies, not only the paths a policy lists",
          "[policy][containment][semantics]") {
  // Review finding (helper 72). crates/openshell-sandbox landlock.rs applies no ruleset to a policy with no
  // path; openshell-core reads a missing filesystem section as include_workdir: true; and with network
  // entries the supervisor adds baseline paths a policy does not list (enrich_proto_baseline_paths).
  const std::string process = "process: {run_as_user: sandbox, run_as_group: sandbox}\n";
  const auto ceiling = Load("version: 1\nfilesystem_policy: {include_workdir: true, read_only: [/usr, /lib, /etc], "
                            "read_write: [/sandbox, /tmp]}\n" + process);
  const auto bare = Load("version: 1\nfilesystem_policy: {include_workdir: false}\n" + process);
  const auto no_landlock = CheckContainment(bare, ceiling);
  CHECK(no_landlock.verdict == Containment::kOutside);
  CHECK_THAT(no_landlock.detail, Catch::Contains("no Landlock ruleset is applied"));
  CHECK(CheckContainment(bare, bare).verdict == Containment::kInside);
  // Upstream adds the workdir before it looks for paths (helper 73): a ceiling with only the workdir is a
  // ruleset, so a candidate without even that is outside it, and one with only the workdir is inside.
  const auto workdir_only = Load("version: 1\nfilesystem_policy: {include_workdir: true}\n" + process);
  CHECK(CheckContainment(bare, workdir_only).verdict == Containment::kOutside);
  CHECK(CheckContainment(workdir_only, ceiling).verdict == Containment::kInside);
  // Landlock opens each path following symlinks: below /proc a path may lead anywhere (helper 74).
  const auto ceiling_proc = Load("version: 1\nfilesystem_policy: {include_workdir: true, read_only: [/usr, /proc], "
                                 "read_write: [/sandbox, /tmp]}\n" + process);
  const auto root_link = Load("version: 1\nfilesystem_policy: {include_workdir: true, read_only: [/usr, /proc/self/root], "
                              "read_write: [/sandbox, /tmp]}\n" + process);
  const auto link = CheckContainment(root_link, ceiling_proc);
  CHECK(link.verdict == Containment::kUnknown);
  CHECK_THAT(link.detail, Catch::Contains("/proc/self/root is /"));
  CHECK(CheckContainment(ceiling_proc, ceiling_proc).verdict == Containment::kInside);
  // The workdir is the supervisor's, /sandbox only by default: a ceiling listing /sandbox does not grant it
  // (helper 74), nor does a ceiling's workdir cover a listed /sandbox.
  const auto lists_sandbox = Load("version: 1\nfilesystem_policy: {include_workdir: false, read_only: [/usr], "
                                  "read_write: [/sandbox, /tmp]}\n" + process);
  const auto with_workdir = Load("version: 1\nfilesystem_policy: {include_workdir: true, read_only: [/usr], "
                                 "read_write: [/sandbox, /tmp]}\n" + process);
  CHECK(CheckContainment(with_workdir, lists_sandbox).verdict == Containment::kOutside);
  CHECK(CheckContainment(lists_sandbox, workdir_only).verdict == Containment::kOutside);

  const std::string net = "network_policies:\n  api:\n    endpoints:\n      - {host: api.example.com, port: 443}\n"
                          "    binaries: [{path: /usr/bin/curl}]\n";
  // The ceiling lists /tmp and /sandbox read-only, so the supervisor leaves them read-only; the candidate
  // lists neither, and gains them read-write.
  const auto ceiling_ro = Load("version: 1\nfilesystem_policy: {include_workdir: false, read_only: [/usr, /lib, /etc, "
                               "/app, /var/log, /proc, /dev/urandom, /tmp, /sandbox], read_write: [/dev/null]}\n" + net);
  const auto gains = Load("version: 1\nfilesystem_policy: {include_workdir: false, read_only: [/usr], "
                          "read_write: [/dev/null]}\n" + net);
  const auto enriched = CheckContainment(gains, ceiling_ro);
  CHECK(enriched.verdict == Containment::kOutside);
  CHECK_THAT(enriched.detail, Catch::Contains("a baseline path the supervisor adds"));
  CHECK(CheckContainment(ceiling_ro, ceiling_ro).verdict == Containment::kInside);
  // Listed as the ceiling lists them, the same policy is inside.
  const auto listed = Load("version: 1\nfilesystem_policy: {include_workdir: false, read_only: [/usr, /tmp, /sandbox], "
                           "read_write: [/dev/null]}\n" + net);
  CHECK(CheckContainment(listed, ceiling_ro).verdict == Containment::kInside);

  // No filesystem section at all: the workdir, read-write, which this ceiling does not give.
  const auto no_workdir = Load("version: 1\nfilesystem_policy: {include_workdir: false, read_only: [/usr, /lib, /etc, "
                               "/app, /var/log, /proc, /dev/urandom], read_write: [/tmp, /dev/null]}\n" + net);
  auto sectionless = Load("version: 1\n" + net);
  sectionless.clear_filesystem();
  const auto workdir = CheckContainment(sectionless, no_workdir);
  CHECK(workdir.verdict == Containment::kOutside);
  CHECK_THAT(workdir.detail, Catch::Contains("which upstream reads as include_workdir"));
}

TEST_CASE("containment: what the model does not decide is unknown — a ceiling's middlewares, non-ASCII methods, "
          "encoded slashes",
          "[policy][containment][semantics]") {
  // Review findings (helper 72).
  // A ceiling's middleware may deny what its rules allow (fail-closed, it denies what it cannot inspect).
  const auto plain = Load(Rest("protocol: rest, enforcement: enforce, access: full"));
  auto guarded = plain;
  (*guarded.mutable_network_middlewares())["dlp"].set_middleware("corp/dlp");
  const auto middlewares = CheckContainment(plain, guarded);
  CHECK(middlewares.verdict == Containment::kUnknown);
  CHECK_THAT(middlewares.detail, Catch::Contains("network_middlewares differ"));
  CHECK(CheckContainment(guarded, guarded).verdict == Containment::kInside);
  CHECK(CheckContainment(guarded, plain).verdict == Containment::kUnknown);
  // Compared as upstream loads a middleware (an empty name is its key, a missing config an empty one).
  auto spelled_out = guarded;
  (*spelled_out.mutable_network_middlewares())["dlp"].set_name("dlp");
  (*spelled_out.mutable_network_middlewares())["dlp"].mutable_config();
  CHECK(CheckContainment(spelled_out, guarded).verdict == Containment::kInside);
  CHECK(CheckContainment(guarded, spelled_out).verdict == Containment::kInside);
  // Upstream's Rego compares methods as upper(actual) == upper(expected), Unicode: "poſt" is POST there.
  const auto no_push = Load(Rest("protocol: rest, enforcement: enforce, access: full, "
                                 "deny_rules: [{method: POST, path: '/repos/**'}]"));
  const auto long_s = Load(Rest("protocol: rest, enforcement: enforce, rules: [{allow: {method: \"po\u017Ft\", path: '/repos/**'}}]"));
  const auto methods = CheckContainment(long_s, no_push);
  CHECK(methods.verdict == Containment::kUnknown);
  CHECK_THAT(methods.detail, Catch::Contains("method: not ASCII"));
  // With allow_encoded_slash a %2F stays inside a segment: /projects/grp%2Fsecret is one segment there.
  const auto one_segment = Load(Rest("protocol: rest, enforcement: enforce, rules: [{allow: {method: GET, path: '/projects/*'}}]"));
  const auto encoded = Load(Rest("protocol: rest, enforcement: enforce, allow_encoded_slash: true, "
                                 "rules: [{allow: {method: GET, path: '/projects/*'}}]"));
  const auto slashes = CheckContainment(encoded, one_segment);
  CHECK(slashes.verdict == Containment::kUnknown);
  CHECK_THAT(slashes.detail, Catch::Contains("allow_encoded_slash"));
}

TEST_CASE("containment: a group without a user, credential use, and a magic link spelled with // or . are never "
          "inside by accident",
          "[policy][containment][semantics]") {
  // Review findings (helper 94) against upstream's supervisor.
  // (1) process.rs before upstream's identity fix: run_as_group without run_as_user changes the group and keeps
  // the supervisor's own user (root); a policy naming neither runs as sandbox:sandbox (or the supervisor's user).
  const auto no_process = Load("version: 1\nfilesystem_policy: {include_workdir: true, read_only: [/usr]}\n");
  const auto group_only = Load("version: 1\nfilesystem_policy: {include_workdir: true, read_only: [/usr]}\n"
                               "process: {run_as_group: sandbox}\n");
  const auto root_kept = CheckContainment(group_only, no_process);
  CHECK(root_kept.verdict == Containment::kOutside);
  CHECK_THAT(root_kept.detail, Catch::Contains("process.run_as_group 'sandbox' without run_as_user"));
  CHECK(CheckContainment(group_only, group_only).verdict == Containment::kInside);  // the same shape and group
  const auto both = Load("version: 1\nfilesystem_policy: {include_workdir: true, read_only: [/usr]}\n"
                         "process: {run_as_user: sandbox, run_as_group: sandbox}\n");
  CHECK(CheckContainment(both, no_process).verdict == Containment::kInside);  // as before: the ceiling pins nothing
  CHECK(CheckContainment(group_only, both).verdict == Containment::kOutside);

  // (2) An endpoint that makes the proxy sign its requests with a provider's keys (or put secrets into bodies)
  // uses authority the same traffic unsigned does not.
  const auto unsigned_full = Load(Rest("protocol: rest, enforcement: enforce, access: full"));
  const auto signing = Load(Rest("protocol: rest, enforcement: enforce, access: full, credential_signing: sigv4, "
                                 "signing_service: bedrock"));
  const auto signed_widening = CheckContainment(signing, unsigned_full);
  CHECK(signed_widening.verdict == Containment::kUnknown);
  CHECK_THAT(signed_widening.detail, Catch::Contains("credential use"));
  CHECK(CheckContainment(signing, signing).verdict == Containment::kInside);
  CHECK(CheckContainment(unsigned_full, signing).verdict == Containment::kInside);  // unsigned is narrower
  // The credential use must be the same binaries' (review 97): a ceiling signing for aws does not decide curl's
  // signed requests (the loader refuses the same endpoint unsigned beside it for curl: ambiguous).
  const auto aws_signs = Load(Rest("protocol: rest, enforcement: enforce, access: full, credential_signing: sigv4, "
                                   "signing_service: bedrock",
                                   "/usr/bin/aws"));
  const auto other_binary = CheckContainment(signing, aws_signs);
  CHECK(other_binary.verdict == Containment::kUnknown);
  CHECK_THAT(other_binary.detail, Catch::Contains("credential use"));
  // ... nor on paths its signing endpoint does not serve.
  const auto signs_uploads = Load(Rest("protocol: rest, enforcement: enforce, access: full, path: '/upload/**', "
                                       "credential_signing: sigv4, signing_service: bedrock"));
  const auto other_path = CheckContainment(signing, signs_uploads);
  CHECK(other_path.verdict == Containment::kUnknown);
  CHECK_THAT(other_path.detail, Catch::Contains("credential use"));
  const auto rewriting = Load(Rest("protocol: rest, enforcement: enforce, access: full, request_body_credential_rewrite: true"));
  // With a second L7 endpoint of the ceiling on the host, /admin's requests take that one, without the rewrite
  // (review 100): the candidate's rewrite on every path is not decided.
  const auto two_routes = Load("version: 1\nnetwork_policies:\n  api:\n    endpoints:\n"
                               "      - {host: api.example.com, port: 443, protocol: rest, enforcement: enforce, access: full, "
                               "request_body_credential_rewrite: true}\n"
                               "      - {host: api.example.com, port: 443, path: '/admin/**', protocol: rest, "
                               "enforcement: enforce, access: read-only}\n"
                               "    binaries: [{path: '/usr/bin/curl'}]\n");
  const auto routed = CheckContainment(rewriting, two_routes);
  CHECK(routed.verdict == Containment::kUnknown);
  CHECK_THAT(routed.detail, Catch::Contains("credential use"));
  CHECK(CheckContainment(rewriting, unsigned_full).verdict == Containment::kUnknown);
  CHECK(CheckContainment(rewriting, signing).verdict == Containment::kUnknown);  // other settings
  CHECK(CheckContainment(rewriting, rewriting).verdict == Containment::kInside);

  // (2b) An entry without binaries: nothing under upstream's runtime Rego, every binary under its merge rules
  // and docs (the shared vector empty_binaries_ceiling_grants_nothing notes both): never inside by accident.
  auto no_binaries = unsigned_full;
  no_binaries.mutable_network_policies()->at("api").clear_binaries();
  const auto anyone = CheckContainment(no_binaries, unsigned_full);
  CHECK(anyone.verdict == Containment::kUnknown);
  CHECK_THAT(anyone.detail, Catch::Contains("no binaries"));
  CHECK(CheckContainment(unsigned_full, no_binaries).verdict == Containment::kOutside);  // a ceiling's grants nothing

  // (3) /dev//fd/3 and /dev/./fd/3 are /dev/fd/3, which Landlock opens as whatever fd 3 of the supervisor is.
  const auto ceiling_dev = Load("version: 1\nfilesystem_policy: {include_workdir: true, read_only: [/usr], "
                                "read_write: [/dev]}\n");
  for (const std::string path : {"/dev//fd/3", "/dev/./fd/3", "/dev/./stdin", "//dev/fd/0", "/proc//self/root"}) {
    INFO(path);
    const auto linked = CheckContainment(
        Load("version: 1\nfilesystem_policy: {include_workdir: true, read_only: [/usr], read_write: ['" + path + "']}\n"),
        ceiling_dev);
    CHECK(linked.verdict == Containment::kUnknown);
    CHECK_THAT(linked.detail, Catch::Contains(path));
  }
  CHECK(CheckContainment(Load("version: 1\nfilesystem_policy: {include_workdir: true, read_only: [/usr], "
                              "read_write: ['/dev//shm']}\n"),
                         ceiling_dev)
            .verdict == Containment::kInside);
}

TEST_CASE("validation: upstream loader rules", "[policy][validation][semantics]") {
  struct Case {
    const char* name;
    std::string yaml;
    const char* field;  // "" = valid
  };
  const std::vector<Case> cases = {
      // crates/openshell-policy/src/l7_validate.rs rule 5
      {"rest without rules or access", Rest("protocol: rest"), "network_policies.api.endpoints[0].rules: protocol requires rules or access"},
      {"rest with access", Rest("protocol: rest, access: read-only"), ""},
      // rule 9
      {"deny_rules without an allow base", Rest("protocol: rest, deny_rules: [{method: DELETE, path: '/**'}]"),
       "network_policies.api.endpoints[0].deny_rules: deny_rules require rules or access"},
      // rule 4
      {"json-rpc with access", Rest("protocol: json-rpc, access: full"), "network_policies.api.endpoints[0].access: protocol json-rpc does not support access presets"},
      {"json-rpc without rules", Rest("protocol: json-rpc"), "network_policies.api.endpoints[0].rules: protocol json-rpc requires explicit rules"},
      // l7/mod.rs validate_matcher_value
      {"query matcher with an empty any", Rest("protocol: rest, rules: [{allow: {method: GET, path: /x, query: {k: {any: []}}}}]"),
       "network_policies.api.endpoints[0].rules[0].allow.query.k.any: list must not be empty"},
      {"query matcher with any", Rest("protocol: rest, rules: [{allow: {method: GET, path: /x, query: {k: {any: [a, b]}}}}]"), ""},
      // l7/mod.rs validate_l7_policies: endpoint path
      {"endpoint path without a leading slash", Rest("protocol: rest, access: full, path: 'api/**'"),
       "network_policies.api.endpoints[0].path: must start with '/' or be '**'"},
      {"endpoint path **", Rest("protocol: rest, access: full, path: '**'"), ""},
      // explicit tcp takes a DNS selector
      {"tcp with an IPv4 literal", OneEndpoint("{host: 10.1.2.3, port: 5432, protocol: tcp}"),
       "network_policies.r.endpoints[0].host: a 'tcp' endpoint's host must be a DNS name"},
      {"tcp with an IPv6 literal", OneEndpoint("{host: '::1', port: 5432, protocol: tcp}"), "endpoints[0].host"},
      {"tcp with a DNS name", OneEndpoint("{host: db.example.com, port: 5432, protocol: tcp}"), ""},
      {"omitted protocol with an IP literal", OneEndpoint("{host: 10.1.2.3, port: 5432}"), ""},
      // ambiguity.rs: explicit tcp beside an omitted protocol on the same host:port
      {"tcp beside omitted protocol",
       "version: 1\nnetwork_policies:\n  a:\n    endpoints: [{host: db.example.com, port: 5432, protocol: tcp}]\n"
       "    binaries: [{path: /usr/bin/psql}]\n  b:\n    endpoints: [{host: db.example.com, ports: [5432, 5433]}]\n"
       "    binaries: [{path: /usr/bin/psql}]\n",
       "network_policies: network_policies.a.endpoints[0] (db.example.com) and network_policies.b.endpoints[0] (db.example.com) can serve the same request but disagree on protocol: 'tcp' vs ''"},
      {"tcp beside omitted protocol on another port",
       "version: 1\nnetwork_policies:\n  a:\n    endpoints: [{host: db.example.com, port: 5432, protocol: tcp}]\n"
       "    binaries: [{path: /usr/bin/psql}]\n  b:\n    endpoints: [{host: db.example.com, port: 5433}]\n"
       "    binaries: [{path: /usr/bin/psql}]\n",
       ""},
      // l7/mod.rs validate_l7_policies and the rule checks it calls: the shapes each protocol's rules take
      {"mcp with access", Rest("protocol: mcp, access: full"), "endpoints[0].access: protocol mcp does not support access presets"},
      {"mcp without host", OneEndpoint("{allowed_ips: [10.0.0.0/8], port: 443, protocol: mcp, mcp: {allow_all_known_mcp_methods: true}}"),
       "endpoints[0].host: protocol mcp requires host"},
      {"persisted_queries unknown", Rest("protocol: graphql, access: read-only, persisted_queries: allow_all"),
       "endpoints[0].persisted_queries: must be 'deny' or 'allow_registered', got 'allow_all'"},
      {"persisted_queries allow_registered", Rest("protocol: graphql, access: read-only, persisted_queries: allow_registered"), ""},
      {"mcp options on rest", Rest("protocol: rest, access: read-only, mcp: {strict_tool_names: true}"),
       "endpoints[0].mcp: mcp options are only valid for protocol mcp"},
      {"mcp allow-all on an L4 endpoint", Rest("mcp: {allow_all_known_mcp_methods: false}"), "endpoints[0].mcp: mcp options are only valid"},
      {"graphql rule without operation_type", Rest("protocol: graphql, rules: [{allow: {operation_name: GetUser}}]"),
       "endpoints[0].rules[0].allow.operation_type: required for GraphQL L7 rules"},
      {"graphql deny rule with a bad operation_type", Rest("protocol: graphql, access: full, deny_rules: [{operation_type: update}]"),
       "endpoints[0].deny_rules[0].operation_type: must be query, mutation, or subscription, got 'update'"},
      {"graphql rule ok", Rest("protocol: graphql, rules: [{allow: {operation_type: query, fields: [user, 'repo*']}}]"), ""},
      {"graphql rule with a capitalised operation_type", Rest("protocol: graphql, rules: [{allow: {operation_type: Query}}]"),
       "endpoints[0].rules[0].allow.operation_type: must be query, mutation, or subscription, got 'Query'"},
      {"graphql rule with operation_type *", Rest("protocol: graphql, rules: [{allow: {operation_type: '*'}}]"),
       "endpoints[0].rules[0].allow.operation_type: must be query, mutation, or subscription"},
      {"graphql access full", Rest("protocol: graphql, access: full"), ""},
      {"persisted query without fields", Rest("protocol: graphql, access: read-only, graphql_persisted_queries: {abc: {operation_type: query}}"),
       "endpoints[0].graphql_persisted_queries[abc].fields: a persisted query must list its root fields"},
      {"persisted query ok", Rest("protocol: graphql, access: read-only, graphql_persisted_queries: {abc: {operation_type: query, fields: [viewer]}}"), ""},
      {"graphql rule with an empty field", Rest("protocol: graphql, rules: [{allow: {operation_type: query, fields: [user, '']}}]"),
       "endpoints[0].rules[0].allow.fields[1]: field glob must not be empty"},
      {"persisted query without operation_type", Rest("protocol: graphql, access: read-only, graphql_persisted_queries: {abc: {operation_name: X}}"),
       "endpoints[0].graphql_persisted_queries[abc].operation_type: required"},
      {"params on rest", Rest("protocol: rest, rules: [{allow: {method: GET, path: '/**', params: {name: {glob: x}}}}]"),
       "endpoints[0].rules[0].allow.params: params matching is only valid for protocol mcp"},
      {"json-rpc rule without method", Rest("protocol: json-rpc, rules: [{allow: {path: /rpc}}]"), "endpoints[0].rules[0].allow.method: required for json-rpc"},
      {"json-rpc rule with a path", Rest("protocol: json-rpc, rules: [{allow: {method: ping, path: /rpc}}]"),
       "endpoints[0].rules[0].allow: json-rpc L7 rules must use method, not path/query"},
      {"json-rpc rule ok", Rest("protocol: json-rpc, rules: [{allow: {method: '*'}}], deny_rules: [{method: shutdown}]"), ""},
      {"json-rpc method glob", Rest("protocol: json-rpc, rules: [{allow: {method: 'eth_*'}}]"),
       "endpoints[0].rules[0].allow.method: generic JSON-RPC method rules do not support glob"},
      {"json-rpc params", Rest("protocol: json-rpc, rules: [{allow: {method: ping, params: {a: {glob: x}}}}]"),
       "endpoints[0].rules[0].allow.params: JSON-RPC rules do not support params matchers yet"},
      {"mcp allowing every known method with an empty rule", Rest("protocol: mcp, mcp: {allow_all_known_mcp_methods: true}, rules: [{allow: {}}]"), ""},
      {"websocket GraphQL rule with operation_type * in any case", Rest("protocol: websocket, rules: [{allow: {method: GET, path: '/**'}}, {allow: {operation_type: Subscription}}, {allow: {operation_type: '*'}}]"), ""},
      {"mcp method glob outside tools/", Rest("protocol: mcp, rules: [{allow: {method: 'resources/*'}}]"),
       "endpoints[0].rules[0].allow.method: MCP method globs are only valid for the tools/ method family"},
      {"mcp rule without method", Rest("protocol: mcp, rules: [{allow: {params: {name: {glob: search}}}}]"),
       "endpoints[0].rules[0].allow.method: required when mcp.allow_all_known_mcp_methods is false"},
      {"mcp tool name with another method", Rest("protocol: mcp, rules: [{allow: {method: tools/list, params: {name: {glob: search}}}}]"),
       "endpoints[0].rules[0].allow.method: must be tools/call when an MCP rule uses params.name"},
      {"mcp params other than name", Rest("protocol: mcp, rules: [{allow: {method: tools/call, params: {name: {glob: search}, query: {glob: x}}}}]"),
       "endpoints[0].rules[0].allow.params.query: MCP tool argument matching is not supported yet"},
      {"mcp wildcard tool name without strict names", Rest("protocol: mcp, mcp: {strict_tool_names: false}, rules: [{allow: {method: tools/call, params: {name: {any: [search, 'get_*']}}}}]"),
       "endpoints[0].rules[0].allow.params.name: wildcard tool-name matchers require mcp.strict_tool_names"},
      {"mcp rule with a path", Rest("protocol: mcp, rules: [{allow: {method: tools/list, path: /mcp}}]"),
       "endpoints[0].rules[0].allow: mcp L7 rules must use method/tool, not path/query"},
      {"mcp allow of every tool call beside tool rules", Rest("protocol: mcp, rules: [{allow: {method: tools/call, params: {name: {glob: search}}}}, {allow: {method: 'tools/*'}}]"),
       "endpoints[0].rules[1].allow: method matcher allows every tool call and conflicts with MCP tool allow rules"},
      {"mcp deny of every tool call beside tool rules", Rest("protocol: mcp, rules: [{allow: {method: tools/call, params: {name: {glob: search}}}}], deny_rules: [{method: 'tools/*'}]"),
       "endpoints[0].deny_rules[0]: method matcher denies every tool call"},
      {"mcp rules ok", Rest("protocol: mcp, mcp: {allow_all_known_mcp_methods: true}, rules: [{allow: {method: tools/call, params: {name: {glob: 'search_*'}}}}, {allow: {method: tools/list}}], deny_rules: [{method: tools/call, params: {name: {glob: delete}}}]"), ""},
      {"websocket rule mixing GraphQL and HTTP fields", Rest("protocol: websocket, rules: [{allow: {method: GET, path: '/**', operation_type: query}}]"),
       "endpoints[0].rules[0].allow: WebSocket GraphQL rules must not combine method/path/query"},
      {"websocket text beside a GraphQL policy", Rest("protocol: websocket, rules: [{allow: {method: GET, path: '/**'}}, {allow: {method: websocket_text, path: '/**'}}, {allow: {operation_type: subscription}}]"),
       "endpoints[0].rules[1].allow.method: WebSocket endpoints with GraphQL operation policy must use operation_type"},
      {"websocket GraphQL rule without operation_type", Rest("protocol: websocket, rules: [{allow: {method: GET, path: '/**'}}, {allow: {operation_name: Feed}}]"),
       "endpoints[0].rules[1].allow.operation_type: required"},
      {"websocket with GraphQL rules ok", Rest("protocol: websocket, rules: [{allow: {method: GET, path: '/**'}}, {allow: {operation_type: subscription, fields: [feed]}}]"), ""},
      // lib.rs validate_sandbox_policy: explicit tcp carries no L7-only field, mcp options only on mcp
      {"tcp with enforcement", OneEndpoint("{host: db.example.com, port: 5432, protocol: tcp, enforcement: enforce}"),
       "endpoints[0].enforcement: protocol tcp does not support L7-only fields: enforcement; remove those fields"},
      {"tcp with a path and a body limit", OneEndpoint("{host: db.example.com, port: 5432, protocol: tcp, path: /x, json_rpc_max_body_bytes: 10}"),
       "endpoints[0].path: protocol tcp does not support L7-only fields: path, json_rpc_max_body_bytes"},
      {"tcp with mcp options", OneEndpoint("{host: db.example.com, port: 5432, protocol: tcp, mcp: {}}"), "endpoints[0].mcp: protocol tcp does not support"},
      {"empty mcp options on rest", Rest("protocol: rest, access: full, mcp: {}"), "endpoints[0].mcp: mcp options are only valid for protocol mcp"},
      {"tcp with a 64-character label", OneEndpoint("{host: " + std::string(64, 'a') + ".example.com, port: 5432, protocol: tcp}"),
       "is longer than 63 characters"},
      {"tcp with a 63-character label", OneEndpoint("{host: " + std::string(63, 'a') + ".example.com, port: 5432, protocol: tcp}"), ""},
      {"tcp with ?", OneEndpoint("{host: 'db?.example.com', port: 5432, protocol: tcp}"), "endpoints[0].host: a 'tcp' endpoint's host must be a DNS name: 'db?' is not a DNS label"},
      {"tcp with a label starting with -", OneEndpoint("{host: '-db.example.com', port: 5432, protocol: tcp}"), "'-db' is not a DNS label"},
      {"tcp with wildcards and _", OneEndpoint("{host: '*.db_1-x.example.com', port: 5432, protocol: tcp}"), ""},
      // l7_validate.rs rule 7: a query alone names no traffic
      {"rules naming only a query", Rest("protocol: rest, rules: [{allow: {query: {q: {glob: x}}}}]"),
       "endpoints[0].rules: rules would deny all traffic"},
      {"a query beside a rule with a method", Rest("protocol: rest, rules: [{allow: {query: {q: {glob: x}}}}, {allow: {method: GET, path: /x}}]"), ""},
      // hosts with `?` are valid upstream
      {"host with ?", OneEndpoint("{host: 'api-?.example.com', port: 443}"), ""},
      {"glob host with ?", OneEndpoint("{host: '*.v?.example.com', port: 443}"), ""},
  };
  for (const auto& c : cases) {
    INFO(c.name);
    const absl::Status status = LoadStatus(c.yaml);
    if (std::string(c.field).empty()) {
      CHECK(status.ok());
      if (!status.ok()) WARN(std::string(status.message()));
    } else {
      REQUIRE_FALSE(status.ok());
      CHECK(status.code() == absl::StatusCode::kInvalidArgument);
      CHECK_THAT(std::string(status.message()), Catch::Contains("invalid_policy: "));
      CHECK_THAT(std::string(status.message()), Catch::Contains(c.field));
    }
  }
}

// ---- item 7: bounded work, no crash ---------------------------------------------------------------

TEST_CASE("glob: matching a very deep ** pattern is iterative", "[policy][glob][bounds]") {
  // 200k globstar segments: MatchFrom recursed once per segment (stack overflow) before.
  std::string pattern;
  for (int i = 0; i < 200000; ++i) pattern += "/**";
  pattern += "/x";
  auto glob = Glob::Parse(pattern, '/');
  REQUIRE(glob.ok());
  CHECK(glob->Matches("/a/b/x"));
  CHECK_FALSE(glob->Matches("/a/b/y"));
  CHECK(glob->Intersects(*Glob::Parse("/*/x", '/')));
}

TEST_CASE("glob: a long pattern against a long subject needs no pattern×subject table", "[policy][glob][bounds]") {
  // 200k × 2M segments: the memo was 4e11 bytes (bad_alloc, escaping as an exception) before; now two
  // subject-sized rows, and the first segment that matches nowhere ends the work.
  std::string pattern = "/b";
  for (int i = 0; i < 200000; ++i) pattern += "/*";
  std::string text;
  for (int i = 0; i < 2000000; ++i) text += "/a";
  auto glob = Glob::Parse(pattern, '/');
  REQUIRE(glob.ok());
  CHECK_FALSE(glob->Matches(text));
}

TEST_CASE("validation: bounds on paths, segments, ports and sizes", "[policy][validation][bounds]") {
  std::string deep;
  for (int i = 0; i < 300; ++i) deep += "/**";
  const absl::Status deep_binary = LoadStatus(Rest("access: full, protocol: rest", deep));
  REQUIRE_FALSE(deep_binary.ok());
  CHECK_THAT(std::string(deep_binary.message()), Catch::Contains("network_policies.api.binaries[0].path: more than 256 '/'-separated segments"));
  const absl::Status long_binary = LoadStatus(Rest("access: full, protocol: rest", "/" + std::string(5000, 'a')));
  REQUIRE_FALSE(long_binary.ok());
  CHECK_THAT(std::string(long_binary.message()), Catch::Contains("binaries[0].path: longer than 4096"));
  CHECK(LoadStatus(Rest("access: full, protocol: rest", "/usr/**/bin/*")).ok());

  const absl::Status long_rule = LoadStatus(Rest("protocol: rest, rules: [{allow: {method: GET, path: '" + deep + "'}}]"));
  REQUIRE_FALSE(long_rule.ok());
  CHECK_THAT(std::string(long_rule.message()), Catch::Contains("endpoints[0].rules[0].allow.path: more than 256"));

  std::string ports;
  for (int p = 1; p <= 257; ++p) ports += (p > 1 ? "," : "") + std::to_string(p);
  const absl::Status many_ports = LoadStatus(OneEndpoint("{host: a.example.com, ports: [" + ports + "]}"));
  REQUIRE_FALSE(many_ports.ok());
  CHECK_THAT(std::string(many_ports.message()), Catch::Contains("network_policies.r.endpoints[0].ports: at most 256 ports"));

  const absl::Status long_host = LoadStatus(OneEndpoint("{host: " + std::string(250, 'a') + ".example.com, port: 443}"));
  REQUIRE_FALSE(long_host.ok());
  CHECK_THAT(std::string(long_host.message()), Catch::Contains("endpoints[0].host: longer than 253"));

  openshell::sandbox::v1::SandboxPolicy many;
  many.set_version(1);
  for (int i = 0; i < 1025; ++i) {
    auto& rule = (*many.mutable_network_policies())["r" + std::to_string(i)];
    auto* ep = rule.add_endpoints();
    ep->set_host("h" + std::to_string(i) + ".example.com");
    ep->set_port(443);
  }
  CHECK_THAT(std::string(osh::policy::ValidatePolicy(many).message()), Catch::Contains("network_policies: at most 1024 entries"));
}

TEST_CASE("validation: two endpoints with huge port lists are refused at once", "[policy][validation][bounds]") {
  // 100k ports each on one host: the ambiguity check compared them pairwise (1e10 steps) before.
  openshell::sandbox::v1::SandboxPolicy policy;
  policy.set_version(1);
  for (int e = 0; e < 2; ++e) {
    auto& rule = (*policy.mutable_network_policies())["r" + std::to_string(e)];
    rule.add_binaries()->set_path("/usr/bin/curl");
    auto* ep = rule.add_endpoints();
    ep->set_host("api.example.com");
    for (int p = 0; p < 100000; ++p) ep->add_ports(static_cast<uint32_t>(1 + (p * 2 + e) % 65535));
  }
  const auto start = std::chrono::steady_clock::now();
  const absl::Status status = osh::policy::ValidatePolicy(policy);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  REQUIRE_FALSE(status.ok());
  CHECK_THAT(std::string(status.message()), Catch::Contains("network_policies.r0.endpoints[0].ports: at most 256 ports"));
  CHECK(elapsed < std::chrono::seconds(2));
}

TEST_CASE("validation: the ambiguity check merges sorted port lists", "[policy][validation][bounds]") {
  // The most endpoints, each with the most ports, all on one host and agreeing: accepted, quickly.
  openshell::sandbox::v1::SandboxPolicy policy;
  policy.set_version(1);
  for (int e = 0; e < 512; ++e) {
    auto& rule = (*policy.mutable_network_policies())["r" + std::to_string(e)];
    rule.add_binaries()->set_path("/usr/bin/curl");
    auto* ep = rule.add_endpoints();
    ep->set_host("api.example.com");
    for (int p = 0; p < 256; ++p) ep->add_ports(static_cast<uint32_t>(60000 - p * 7 - e));
  }
  const auto start = std::chrono::steady_clock::now();
  CHECK(osh::policy::ValidatePolicy(policy).ok());
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(10));
}

TEST_CASE("egress: an intent beyond the bounds is unsupported, not evaluated", "[policy][egress][bounds]") {
  const auto policy = Load(Rest("protocol: rest, enforcement: enforce, rules: [{allow: {method: GET, path: '/**/x'}}]", "/usr/**/curl"));
  EgressIntent intent;
  intent.host = "api.example.com";
  intent.port = 443;
  intent.binary = "/usr/bin/curl";
  std::string path;
  for (int i = 0; i < 100000; ++i) path += "/a";
  intent.request = EgressRequest{"GET", path, {}};
  const auto decision = EgressPolicy::Compile(policy)->Decide(intent);
  CHECK(decision.verdict == EgressVerdict::kUnsupported);
  CHECK_THAT(decision.reason, Catch::Contains("exceeds the evaluator's bounds"));
  intent.request->path = "/a/b/x";
  CHECK(EgressPolicy::Compile(policy)->Decide(intent).verdict == EgressVerdict::kAllow);
}

TEST_CASE("glob: host patterns intersect label by label from the right", "[policy][glob][semantics]") {
  using osh::policy::HostPatternsIntersect;
  struct Case {
    const char* a;
    const char* b;
    bool intersect;
  };
  const Case cases[] = {
      {"api.x.com", "api.x.com", true},        {"api.x.com", "web.x.com", false},
      {"*.x.com", "a.x.com", true},            {"*.x.com", "a.b.x.com", false},
      {"*.x.com", "x.com", false},             {"**.x.com", "x.com", false},
      {"**.x.com", "a.b.x.com", true},         {"**.x.com", "*.y.com", false},
      {"**.x.com", "**.b.x.com", true},        {"**.x.com", "**.y.com", false},
      {"**.com", "*.x.com", true},             {"*-api.x.com", "a-api.x.com", true},
      {"*-api.x.com", "api.x.com", false},     {"*.s3.*.amazonaws.com", "b.s3.us-east-1.amazonaws.com", true},
      {"*.s3.*.amazonaws.com", "b.s3.amazonaws.com", false}, {"*.v?.x.com", "a.v1.x.com", true},
      {"*.v?.x.com", "a.v12.x.com", false},    {"a?.x.com", "ab.x.com", false},  // no '*': '?' is literal
      {"*.x.com", "*.x.com", true},            {"a.*.com", "*.b.com", true},
  };
  for (const Case& c : cases) {
    INFO(c.a << " ~ " << c.b);
    CHECK(HostPatternsIntersect(c.a, c.b) == c.intersect);
    CHECK(HostPatternsIntersect(c.b, c.a) == c.intersect);
  }
}
