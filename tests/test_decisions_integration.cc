// Egress decisions and ceilings through the real daemon and policyctl.
#include <catch2/catch.hpp>

#include "absl/strings/match.h"
#include "policy/policy_file.h"
#include "trust/ceiling.h"
#include "trust/keys.h"
#include "tests/gateway_fixture.h"

using namespace osh::test;

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

namespace {

void WriteKey(const TempDir& dir, const std::string& name) {
  auto key = osh::trust::PrivateKey::Generate("ed25519");
  REQUIRE(key.ok());
  WriteFile(dir / (name + ".key"), key->ToPem());
  WriteFile(dir / (name + ".pub"), key->PublicKeyPem());
}

// A signed ceiling file made with policyctl from `policy_file`.
std::string SignCeiling(const TempDir& dir, const std::string& policy_file, int version, const std::string& name) {
  std::string out, err;
  const std::string path = dir / name;
  REQUIRE(CtlOffline({"ceiling", "sign", "-f", policy_file, "--id", "corp-max", "--version", std::to_string(version),
                      "--label", "security review 42", "--key", dir / "authority.key", "--key-id", "authority",
                      "--out", path}, &out, &err) == 0);
  return path;
}

}  // namespace

TEST_CASE("ceiling: set signed, widening refused with the widening named, narrowing accepted, rollback and unsigned refused",
          "[integration][ceiling]") {
  TempDir keys;
  WriteKey(keys, "authority");
  WriteKey(keys, "gateway");
  WriteFile(keys / "trust.json", TrustStoreJson({{"authority", ReadFile(keys / "authority.pub")},
                                                 {"gateway-key", ReadFile(keys / "gateway.pub")}}));
  GatewayFixture g({"--trust-store", keys / "trust.json", "--builtin-signing-key", keys / "gateway.key",
                    "--builtin-signing-key-id", "gateway-key"});
  REQUIRE(g.SetPolicy("default", Example("github.yaml")).ok());
  gw::AdmitSandboxResponse admitted;
  REQUIRE(g.Admit("sb-1", &admitted).ok());

  // The ceiling: exactly the GitHub policy. The admitted sandbox is inside it.
  const std::string v1 = SignCeiling(keys, kExamples + "github.yaml", 1, "c1.json");
  std::string out, err;
  CHECK(CtlOffline({"ceiling", "verify", v1, "--trust-store", keys / "trust.json"}, &out, &err) == 0);
  REQUIRE(Ctl(g, {"ceiling", "set", v1}, &out, &err) == 0);
  CHECK_THAT(out, Catch::Contains("ceiling corp-max version 1") && Catch::Contains("0 admitted sandbox(es) outside it"));
  gw::GetStatusResponse status;
  REQUIRE(g.admin().GetStatus(GatewayFixture::Context().get(), gw::GetStatusRequest(), &status).ok());
  CHECK(status.ceiling().ceiling_id() == "corp-max");
  CHECK(status.ceiling().version() == 1);
  CHECK(status.ceiling().key_ids(0) == "authority");

  // A widening update (python may now reach the API) is refused, naming the widening; nothing changes.
  gw::UpdatePolicyRequest widen;
  widen.set_scope("default");
  auto* add = widen.add_operations()->mutable_add_rule();
  add->set_rule_id("pypi");
  add->mutable_rule()->add_binaries()->set_path("/usr/bin/python3");
  auto* ep = add->mutable_rule()->add_endpoints();
  ep->set_host("pypi.org");
  ep->set_port(443);
  gw::PolicyRevision revision;
  auto refused = g.admin().UpdatePolicy(GatewayFixture::Context().get(), widen, &revision);
  CHECK(refused.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
  CHECK_THAT(refused.error_message(), Catch::StartsWith("exceeds_ceiling: ") && Catch::Contains("pypi.org:443") &&
                                          Catch::Contains("/usr/bin/python3"));
  gw::GetPolicyRequest get;
  get.set_scope("default");
  gw::GetPolicyResponse current;
  REQUIRE(g.admin().GetPolicy(GatewayFixture::Context().get(), get, &current).ok());
  CHECK(current.revision().revision() == 1);
  drv::Projection fetched;
  REQUIRE(g.Fetch(admitted.sandbox_handle(), &fetched).ok());
  CHECK(fetched.policy_digest() == admitted.policy_digest());
  // The same through policyctl, offline: the check explains why.
  WriteFile(keys / "wide.yaml", ReadFile(kExamples + "github.yaml") +
                                    "  pypi:\n    endpoints: [{host: pypi.org, port: 443}]\n    binaries: [{path: /usr/bin/python3}]\n");
  CHECK(CtlOffline({"ceiling", "check", "-f", keys / "wide.yaml", "--ceiling", v1}, &out, &err) == 1);
  CHECK_THAT(out, Catch::StartsWith("exceeds_ceiling: ") && Catch::Contains("pypi.org"));
  CHECK(CtlOffline({"ceiling", "check", "-f", kExamples + "github.yaml", "--ceiling", v1, "-o", "json"}, &out, &err) == 0);
  CHECK_THAT(out, Catch::Contains("\"verdict\":\"inside\""));

  // A narrowing update (curl loses access) is accepted and re-projected.
  gw::UpdatePolicyRequest narrow;
  narrow.set_scope("default");
  auto* remove = narrow.add_operations()->mutable_remove_binary();
  remove->set_rule_id("github_api");
  remove->set_path("/usr/bin/curl");
  REQUIRE(g.admin().UpdatePolicy(GatewayFixture::Context().get(), narrow, &revision).ok());
  CHECK(revision.revision() == 2);
  CHECK(revision.sandboxes_updated() == 1);

  // Rollback: the same version again is refused; so is an unsigned ceiling (whatever its version).
  CHECK(Ctl(g, {"ceiling", "set", v1}, &out, &err) == 1);
  CHECK_THAT(err, Catch::Contains("rollback: "));
  auto unsigned_ceiling = osh::trust::ParseCeilingJson(ReadFile(SignCeiling(keys, kExamples + "github.yaml", 5, "c5.json")), "c5");
  REQUIRE(unsigned_ceiling.ok());
  unsigned_ceiling->clear_signatures();
  WriteFile(keys / "unsigned.json", osh::trust::CeilingToJson(*unsigned_ceiling));
  CHECK(Ctl(g, {"ceiling", "set", keys / "unsigned.json"}, &out, &err) == 1);
  CHECK_THAT(err, Catch::Contains("unsigned: "));
  // A tampered body: the digest no longer matches.
  auto tampered = *unsigned_ceiling;
  tampered.set_body(tampered.body() + " ");
  WriteFile(keys / "tampered.json", osh::trust::CeilingToJson(tampered));
  CHECK(Ctl(g, {"ceiling", "set", keys / "tampered.json"}, &out, &err) == 1);
  CHECK_THAT(err, Catch::Contains("digest_mismatch: "));

  // A narrower ceiling (no network at all) with a higher version: the admitted sandbox is now outside.
  const std::string v2 = SignCeiling(keys, kExamples + "restrictive-default.yaml", 2, "c2.json");
  REQUIRE(Ctl(g, {"ceiling", "set", v2}, &out, &err) == 0);
  CHECK_THAT(out, Catch::Contains("1 admitted sandbox(es) outside it"));
  // ...so its refresh keeps the last good and says why; a new admission is refused.
  gw::RefreshSandboxRequest refresh;
  refresh.set_sandbox_id("sb-1");
  gw::RefreshSandboxResponse refreshed;
  auto refresh_status = g.admin().RefreshSandbox(GatewayFixture::Context().get(), refresh, &refreshed);
  CHECK(refresh_status.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
  CHECK_THAT(refresh_status.error_message(), Catch::StartsWith("exceeds_ceiling: "));
  gw::GetSandboxRequest get_sandbox;
  get_sandbox.set_sandbox_id("sb-1");
  gw::SandboxInfo info;
  REQUIRE(g.admin().GetSandbox(GatewayFixture::Context().get(), get_sandbox, &info).ok());
  CHECK_THAT(info.last_refresh_error(), Catch::StartsWith("exceeds_ceiling: "));
  gw::AdmitSandboxResponse second;
  auto admit_status = g.Admit("sb-2", &second);
  CHECK_THAT(admit_status.error_message(), Catch::StartsWith("exceeds_ceiling: "));

  // The ceiling survives a restart, verbatim; every set and refusal is in the audit chain.
  g.Stop();
  g.Start();
  REQUIRE(Ctl(g, {"ceiling", "get", "--out", keys / "got.json"}, &out, &err) == 0);
  CHECK_THAT(out, Catch::Contains("ceiling corp-max version 2"));
  CHECK(ReadFile(keys / "got.json") == ReadFile(v2));
  REQUIRE(Ctl(g, {"audit", "export", "-o", "json"}, &out, &err) == 0);
  CHECK_THAT(out, Catch::Contains("ceiling_set"));
  CHECK_THAT(out, Catch::Contains("exceeds_ceiling"));
  CHECK(g.Stop() == 0);
}

TEST_CASE("ceiling: a third-party driver's projection outside the ceiling is refused at admission",
          "[integration][ceiling][remote]") {
  TempDir keys;
  WriteKey(keys, "authority");
  WriteFile(keys / "trust.json", TrustStoreJson({{"authority", ReadFile(keys / "authority.pub")}}));
  DriverProcess driver(keys, "null", {OSH_NULL_DRIVER_BINARY, "--policy", kExamples + "github.yaml", "--key",
                                      keys / "authority.key", "--key-id", "authority"});
  driver.Start();
  GatewayFixture g({"--driver-socket", driver.socket(), "--trust-store", keys / "trust.json"});
  gw::AdmitSandboxResponse admitted;
  REQUIRE(g.Admit("sb-1", &admitted).ok());  // no ceiling yet
  // Setting a ceiling is allowed under a driver that forbids mutation: it carries the authority's signature.
  std::string out, err;
  // The ceiling: GitHub's filesystem and process rules, but no network at all.
  auto no_network = Example("github.yaml");
  no_network.clear_network_policies();
  WriteFile(keys / "no-network.yaml", osh::policy::PolicyToYaml(no_network));
  REQUIRE(Ctl(g, {"ceiling", "set", SignCeiling(keys, keys / "no-network.yaml", 1, "c1.json")}, &out, &err) == 0);
  gw::AdmitSandboxResponse refused;
  auto status = g.Admit("sb-2", &refused);
  CHECK(status.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
  CHECK_THAT(status.error_message(), Catch::StartsWith("exceeds_ceiling: ") && Catch::Contains("api.github.com"));
  // The refused admission's handle went back to the driver.
  CHECK(Eventually([&] { return CountLines(driver.log(), "release: handle=") == 1; }));
  CHECK(g.Stop() == 0);
}
