// Egress decisions and ceilings through the real daemon and policyctl.
#include <catch2/catch.hpp>

#include "absl/strings/match.h"
#include "policy/policy_file.h"
#include "tests/gateway_fixture.h"

using namespace osh::test;

namespace {

const std::string kExamples = std::string(OSH_SOURCE_DIR) + "/examples/policies/";

openshell::sandbox::v1::SandboxPolicy Example(const std::string& name) {
  auto policy = osh::policy::LoadPolicyFile(kExamples + name);
  REQUIRE(policy.ok());
  return *policy;
}

}  // namespace

TEST_CASE("decisions: EvaluateEgress answers for an admitted sandbox and for an inline policy", "[integration][decisions]") {
  GatewayFixture g;
  REQUIRE(g.SetPolicy("default", Example("github.yaml")).ok());
  gw::AdmitSandboxResponse admitted;
  REQUIRE(g.Admit("sb-1", &admitted).ok());

  // policyctl decide --sandbox: allow (exit 0), deny by L7 (exit 1), deny by binary (exit 1).
  std::string out, err;
  CHECK(Ctl(g, {"decide", "--sandbox", "sb-1", "--host", "api.github.com", "--port", "443", "--binary", "/usr/bin/curl",
                "--method", "GET", "--path", "/repos/x"}, &out, &err) == 0);
  CHECK_THAT(out, Catch::Contains("decision:       allow") && Catch::Contains("matched policy: github_api"));
  CHECK_THAT(out, Catch::Contains(admitted.policy_digest()));
  CHECK(Ctl(g, {"decide", "--sandbox", "sb-1", "--host", "api.github.com", "--port", "443", "--binary", "/usr/bin/curl",
                "--method", "DELETE", "--path", "/repos/x", "-o", "json"}, &out, &err) == 1);
  CHECK_THAT(out, Catch::Contains("\"decision\":\"deny\"") && Catch::Contains("DELETE /repos/x not permitted by policy"));
  CHECK(Ctl(g, {"decide", "--sandbox", "sb-1", "--host", "github.com", "--port", "443", "--binary", "/usr/bin/python3"},
            &out, &err) == 1);
  CHECK_THAT(out, Catch::Contains("binary '/usr/bin/python3' not allowed in policy 'github_api'"));
  // An unknown sandbox is bad input (2), not a deny.
  CHECK(Ctl(g, {"decide", "--sandbox", "nope", "--host", "github.com", "--port", "443", "--binary", "/usr/bin/git"},
            &out, &err) == 2);
  CHECK_THAT(err, Catch::Contains("NOT_FOUND"));

  // Inline: an invalid policy names the field; a valid one is decided.
  gw::EvaluateEgressRequest inline_request;
  auto* bad = inline_request.mutable_policy();
  bad->set_version(1);
  (*bad->mutable_network_policies())["r"].add_endpoints()->set_host("*");
  inline_request.set_host("x.example.com");
  inline_request.set_port(443);
  inline_request.set_binary("/usr/bin/curl");
  gw::EvaluateEgressResponse response;
  auto status = g.admin().EvaluateEgress(GatewayFixture::Context().get(), inline_request, &response);
  CHECK(status.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK_THAT(status.error_message(), Catch::Contains("invalid_policy: network_policies.r.endpoints[0].host"));
  *inline_request.mutable_policy() = Example("github.yaml");
  inline_request.set_host("GitHub.com");
  inline_request.set_binary("/usr/bin/git");
  REQUIRE(g.admin().EvaluateEgress(GatewayFixture::Context().get(), inline_request, &response).ok());
  CHECK(response.decision() == "allow");
  CHECK(response.matched_policy() == "github_api");
  CHECK(g.Stop() == 0);
}
