// Policy files as code (issue 29 item 5): policyctl policy lint | fmt | test, offline, as a policy
// author's CI runs them; and the library calls under them (LintPolicyText, FormatPolicyText, FindViolations).
#include <filesystem>

#include <catch2/catch.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "policy/policy_file.h"
#include "policy/validation.h"
#include "tests/gateway_fixture.h"

using namespace osh::test;

namespace {

const char* kBrokenPolicy = R"(# Team policy
# owned by infra

version: 2
filesystem_policy:
  read_write: [/, relative]
network_policies:
  a:
    endpoints:
      - host: "*"
        port: 443
      - host: api.x.com
        port: 443
        protocol: rest
    binaries: [{path: ""}]
)";

std::string ExamplePath(const std::string& name) { return std::string(OSH_SOURCE_DIR) + "/examples/policies/" + name; }

}  // namespace

TEST_CASE("policy tools: lint reports every error of a file with its line, and the first is what loading says",
          "[policy_tools]") {
  const std::vector<std::string> errors = osh::policy::LintPolicyText(kBrokenPolicy, "team.yaml");
  CHECK(errors == std::vector<std::string>{
                      "team.yaml:4: invalid_policy: version: must be 1, got 2",
                      "team.yaml:6: invalid_policy: filesystem_policy.read_write[0]: '/' may not be read-write",
                      "team.yaml:6: invalid_policy: filesystem_policy.read_write[1]: must be an absolute path",
                      "team.yaml:10: invalid_policy: network_policies.a.endpoints[0].host: a bare wildcard host is refused",
                      "team.yaml:12: invalid_policy: network_policies.a.endpoints[1].rules: protocol requires rules or "
                      "access to define allowed traffic",
                      "team.yaml:15: invalid_policy: network_policies.a.binaries[0].path: may not be empty"});
  auto loaded = osh::policy::ParsePolicyText(kBrokenPolicy, "team.yaml");
  REQUIRE_FALSE(loaded.ok());
  CHECK(std::string(loaded.status().message()) == errors.front());

  // An empty read_write path is one violation (not absolute), not also "'/' may not be read-write"; a
  // path of slashes only is '/' (review finding).
  const auto empty = osh::policy::LintPolicyText("version: 1\nfilesystem_policy: {read_write: ['', '//']}\n", "t.yaml");
  REQUIRE(empty.size() == 2);
  CHECK_THAT(empty[0], Catch::Contains("filesystem_policy.read_write[0]: must be an absolute path"));
  CHECK_THAT(empty[1], Catch::Contains("filesystem_policy.read_write[1]: '/' may not be read-write"));

  // A structural error stops the reading: it is the only one.
  CHECK(osh::policy::LintPolicyText("version: 1\nnetwork_policy: {}\n", "t.yaml") ==
        std::vector<std::string>{"t.yaml:2: network_policy: unknown key 'network_policy' (known: version, "
                                 "filesystem_policy, landlock, process, network_policies, network_middlewares)"});
  // Every shipped example is clean.
  for (const char* name : {"github.yaml", "restrictive-default.yaml"}) {
    auto text = osh::policy::ReadFileToString(ExamplePath(name));
    REQUIRE(text.ok());
    CHECK(osh::policy::LintPolicyText(*text, name).empty());
  }
}

TEST_CASE("policy tools: FindViolations' first violation is FindViolation's, for every broken vector policy", "[policy_tools]") {
  // Policies broken one field at a time, then all at once: the first of the list is always the single answer.
  openshell::sandbox::v1::SandboxPolicy policy = osh::policy::RestrictiveDefaultPolicy();
  CHECK(osh::policy::FindViolations(policy, 100).empty());
  policy.set_version(3);
  policy.mutable_filesystem()->add_read_write("/");
  policy.mutable_process()->set_run_as_user("root");
  (*policy.mutable_network_policies())["b"].add_endpoints()->set_host("*");
  (*policy.mutable_network_policies())["a"].add_binaries();
  const auto all = osh::policy::FindViolations(policy, 100);
  REQUIRE(all.size() >= 4);
  REQUIRE(osh::policy::FindViolation(policy).has_value());
  CHECK(osh::policy::FindViolation(policy)->path == all.front().path);
  CHECK(osh::policy::FindViolations(policy, 2).size() == 2);
  CHECK(all[1].path == "filesystem.read_write[" + std::to_string(policy.filesystem().read_write_size() - 1) + "]");
}

TEST_CASE("policy tools: fmt is canonical and idempotent, keeps the opening comments, and --check / -w behave",
          "[policy_tools]") {
  TempDir dir;
  const std::string file = dir / "github.yaml";
  WriteFile(file, ReadFile(ExamplePath("github.yaml")));
  std::string out, err;
  REQUIRE(CtlOffline({"policy", "fmt", file}, &out, &err) == 0);
  CHECK(absl::StartsWith(out, "# SCHEMA.md's example: read-only GitHub API access for git and curl.\nversion: 1\n"));
  // The same policy, and formatting the output again changes nothing.
  auto original = osh::policy::LoadPolicyFile(file);
  auto formatted = osh::policy::ParsePolicyText(out, "formatted");
  REQUIRE(original.ok());
  REQUIRE(formatted.ok());
  CHECK(original->SerializeAsString() == formatted->SerializeAsString());
  auto again = osh::policy::FormatPolicyText(out, "again");
  REQUIRE(again.ok());
  CHECK(*again == out);

  CHECK(CtlOffline({"policy", "fmt", "--check", file}, &out, &err) == 1);
  CHECK_THAT(err, Catch::Contains("not in canonical form"));
  const std::string before = ReadFile(file);
  REQUIRE(CtlOffline({"policy", "fmt", "-w", file}, &out, &err) == 0);
  CHECK(ReadFile(file) != before);
  CHECK(CtlOffline({"policy", "fmt", "--check", file}, &out, &err) == 0);
  // A document that does not read is refused with its line, and the file is left as it was.
  WriteFile(dir / "bad.yaml", "version: 1\nnetwork_policies: [1\n");
  CHECK(CtlOffline({"policy", "fmt", "-w", dir / "bad.yaml"}, &out, &err) == 2);
  CHECK_THAT(err, Catch::Contains("bad.yaml:"));
  CHECK(ReadFile(dir / "bad.yaml") == "version: 1\nnetwork_policies: [1\n");
}

TEST_CASE("policy tools: lint and test through policyctl, with the exit codes a CI reads", "[policy_tools]") {
  TempDir dir;
  WriteFile(dir / "team.yaml", kBrokenPolicy);
  std::string out, err;
  CHECK(CtlOffline({"policy", "lint", dir / "team.yaml", ExamplePath("github.yaml")}, &out, &err) == 1);
  CHECK(std::vector<std::string>(absl::StrSplit(out, '\n', absl::SkipEmpty())).size() == 6);
  CHECK_THAT(err, Catch::Contains("github.yaml: ok"));
  CHECK(CtlOffline({"-o", "json", "policy", "lint", ExamplePath("github.yaml")}, &out, &err) == 0);
  CHECK_THAT(out, Catch::Contains("\"ok\":true"));
  CHECK(CtlOffline({"policy", "lint", dir / "missing.yaml"}, &out, &err) == 2);

  WriteFile(dir / "cases.yaml", R"(cases:
  - name: git reads the API
    intent: {host: api.github.com, port: 443, binary: /usr/bin/git, request: {method: GET, path: /repos/o/r}}
    expect: allow
    matched_policy: github_api
  - name: curl may not write
    intent:
      host: api.github.com
      port: 443
      binary: /usr/bin/curl
      request: {method: POST, path: /repos/o/r/issues}
    expect: deny
)");
  CHECK(CtlOffline({"policy", "test", ExamplePath("github.yaml"), "--cases", dir / "cases.yaml"}, &out, &err) == 0);
  CHECK_THAT(out, Catch::Contains("PASS    git reads the API") && Catch::Contains("2 of 2 cases pass"));
  WriteFile(dir / "failing.yaml", R"(cases:
  - name: python is not on the list
    intent: {host: github.com, port: 443, binary: /usr/bin/python3}
    expect: allow
)");
  CHECK(CtlOffline({"policy", "test", ExamplePath("github.yaml"), "--cases", dir / "failing.yaml"}, &out, &err) == 1);
  CHECK_THAT(out, Catch::Contains("FAIL") && Catch::Contains("failing.yaml:2: expected allow, got deny") &&
                      Catch::Contains("0 of 1 cases pass, 1 fail"));
  CHECK(CtlOffline({"-o", "json", "policy", "test", ExamplePath("github.yaml"), "--cases", dir / "failing.yaml"}, &out,
                   &err) == 1);
  CHECK_THAT(out, Catch::Contains("\"pass\":false") && Catch::Contains("\"failed\":1"));
  // Bad cases are bad input (2), named by file, line and field.
  WriteFile(dir / "bad.yaml", "cases:\n  - intent: {host: a, port: 1}\n    expect: maybe\n");
  CHECK(CtlOffline({"policy", "test", ExamplePath("github.yaml"), "--cases", dir / "bad.yaml"}, &out, &err) == 2);
  CHECK_THAT(err, Catch::Contains("bad.yaml:3: cases[0].expect: must be allow, deny, audit or unsupported, got 'maybe'"));
  WriteFile(dir / "bad2.yaml", "cases:\n  - intent: {host: a, sandbox_id: sb-1}\n    expect: deny\n");
  CHECK(CtlOffline({"policy", "test", ExamplePath("github.yaml"), "--cases", dir / "bad2.yaml"}, &out, &err) == 2);
  CHECK_THAT(err, Catch::Contains("cases[0].intent: a case names no policy"));
}
