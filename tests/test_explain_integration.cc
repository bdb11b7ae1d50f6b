// ExplainChange and `policyctl diff` / `--dry-run` through the real daemon and policyctl.
#include <catch2/catch.hpp>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "policy/yaml_message.h"
#include "tests/gateway_fixture.h"

using namespace osh::test;

namespace {

// github.yaml plus python reaching pypi.org and a read-write /data.
openshell::sandbox::v1::SandboxPolicy Widened() {
  auto policy = Example("github.yaml");
  auto& pypi = (*policy.mutable_network_policies())["pypi"];
  pypi.add_binaries()->set_path("/usr/bin/python3");
  auto* ep = pypi.add_endpoints();
  ep->set_host("pypi.org");
  ep->set_port(443);
  policy.mutable_filesystem()->add_read_write("/data");
  return policy;
}

google::protobuf::Struct ParseJson(const std::string& text) {
  google::protobuf::Struct out;
  INFO(text);
  REQUIRE(google::protobuf::util::JsonStringToMessage(text, &out).ok());
  return out;
}

// `policyctl decide -f FILE` on a network witness: its exit status (0 allow, 1 deny).
int DecideWitness(const std::string& file, const google::protobuf::Struct& witness) {
  const auto& w = witness.fields();
  std::vector<std::string> args = {"decide", "-f", file, "--host", w.at("host").string_value(), "--port",
                                   absl::StrCat(static_cast<int>(w.at("port").number_value())), "--binary",
                                   w.at("binary").string_value()};
  if (w.contains("ancestors")) {
    for (const auto& a : w.at("ancestors").list_value().values()) {
      args.push_back("--ancestor");
      args.push_back(a.string_value());
    }
  }
  if (w.contains("method")) {
    args.insert(args.end(), {"--method", w.at("method").string_value(), "--path", w.at("path").string_value()});
  }
  std::string out, err;
  return CtlOffline(args, &out, &err);
}

size_t RevisionCount(GatewayFixture& g) {
  gw::ListPolicyRevisionsResponse revisions;
  REQUIRE(g.admin().ListPolicyRevisions(GatewayFixture::Context().get(), gw::ListPolicyRevisionsRequest(), &revisions).ok());
  return static_cast<size_t>(revisions.revisions_size());
}

}  // namespace

TEST_CASE("explain: policyctl diff on files, scope revisions and a sandbox, and ExplainChange refusals", "[integration][explain]") {
  TempDir dir;
  GatewayFixture g;
  const std::string old_file = kExamples + "github.yaml";
  const std::string new_file = dir / "widened.yaml";
  WriteFile(new_file, osh::policy::PolicyToYaml(Widened()));

  // Files, offline: the table, then JSON whose network witnesses `decide -f` judges as the class says.
  std::string out, err;
  CHECK(CtlOffline({"diff", old_file, new_file}, &out, &err) == 1);
  CHECK_THAT(out, Catch::Contains("connect to pypi.org:443 for /usr/bin/python3, every request (not inspected)") &&
                      Catch::Contains("read-write /data and below") && Catch::Contains("2 added, 0 removed, 0 unknown"));
  CHECK(CtlOffline({"-o", "json", "diff", old_file, new_file}, &out, &err) == 1);
  const auto json = ParseJson(out);
  REQUIRE(json.fields().at("added").list_value().values_size() == 2);
  CHECK(json.fields().at("removed").list_value().values_size() == 0);
  CHECK(json.fields().at("unknown").list_value().values_size() == 0);
  int network = 0;
  for (const auto& c : json.fields().at("added").list_value().values()) {
    const auto& fields = c.struct_value().fields();
    CHECK(fields.contains("description"));
    CHECK(fields.contains("rules"));
    if (fields.at("area").string_value() != "network") {
      const auto& witness = fields.at("witness").struct_value().fields();
      CHECK(witness.at("path").string_value() == "/data");
      CHECK(witness.at("access").string_value() == "read-write");
      // `decide -f --fs-path` judges it as the class says: written (and read) under the new file only.
      for (const char* access : {"read", "write"}) {
        CHECK(CtlOffline({"decide", "-f", new_file, "--fs-path", "/data", "--access", access}, &out, &err) == 0);
        CHECK(CtlOffline({"decide", "-f", old_file, "--fs-path", "/data", "--access", access}, &out, &err) == 1);
      }
      continue;
    }
    ++network;
    CHECK(DecideWitness(new_file, fields.at("witness").struct_value()) == 0);
    CHECK(DecideWitness(old_file, fields.at("witness").struct_value()) == 1);
  }
  CHECK(network == 1);
  CHECK(CtlOffline({"diff", old_file, old_file}, &out, &err) == 0);
  CHECK_THAT(out, Catch::Contains("0 added, 0 removed, 0 unknown"));
  CHECK(CtlOffline({"diff", old_file}, &out, &err) == 2);
  CHECK(CtlOffline({"diff", old_file, dir / "missing.yaml"}, &out, &err) == 2);

  // A scope's revisions, through the gateway: the same classes; the mutation's audit event counts them.
  REQUIRE(g.SetPolicy("default", Example("github.yaml")).ok());
  REQUIRE(Ctl(g, {"policy", "set", "default", "-f", new_file}, &out, &err) == 0);
  const auto events = g.AuditEvents();
  REQUIRE(!events.empty());
  const auto& set_event = events.back();
  CHECK(set_event.audit_context().at("change.from_revision") == "1");
  CHECK(set_event.audit_context().at("change.added") == "2");
  CHECK(set_event.audit_context().at("change.removed") == "0");
  CHECK(Ctl(g, {"diff", "--scope", "default", "--from-revision", "1", "--to-revision", "2"}, &out, &err) == 1);
  CHECK_THAT(out, Catch::Contains("connect to pypi.org:443 for /usr/bin/python3") && Catch::Contains("2 added, 0 removed"));
  CHECK(Ctl(g, {"diff", "--scope", "default", "--from-revision", "2", "--to-revision", "1"}, &out, &err) == 1);
  CHECK_THAT(out, Catch::Contains("0 added, 2 removed"));
  CHECK(Ctl(g, {"diff", "--scope", "default", "--from-revision", "9", "--to-revision", "1"}, &out, &err) == 2);

  // A sandbox's served policy against a candidate file.
  gw::AdmitSandboxResponse admitted;
  REQUIRE(g.Admit("sb-1", &admitted).ok());
  CHECK(Ctl(g, {"diff", "--sandbox", "sb-1", old_file}, &out, &err) == 1);
  CHECK_THAT(out, Catch::Contains("removed") && Catch::Contains("connect to pypi.org:443") &&
                      Catch::Contains("0 added, 2 removed"));
  CHECK(Ctl(g, {"diff", "--sandbox", "nope", old_file}, &out, &err) == 2);
  CHECK_THAT(err, Catch::Contains("NOT_FOUND"));

  // The RPC's refusals carry their reason codes.
  gw::ExplainChangeRequest request;
  (*request.mutable_from()->mutable_policy()->mutable_network_policies())["r"].add_endpoints()->set_host("*");
  *request.mutable_to()->mutable_policy() = Example("github.yaml");
  gw::ExplainChangeResponse response;
  auto status = g.admin().ExplainChange(GatewayFixture::Context().get(), request, &response);
  CHECK(status.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK_THAT(status.error_message(), Catch::StartsWith("invalid_policy: from: "));
  request.clear_from();
  status = g.admin().ExplainChange(GatewayFixture::Context().get(), request, &response);
  CHECK(status.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  gw::DeletePolicyRequest deletion;
  deletion.set_scope("default");
  gw::PolicyRevision deleted;
  REQUIRE(g.admin().DeletePolicy(GatewayFixture::Context().get(), deletion, &deleted).ok());
  request.mutable_from()->mutable_scope_revision()->set_scope("default");  // latest: the deletion
  status = g.admin().ExplainChange(GatewayFixture::Context().get(), request, &response);
  CHECK(status.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
  CHECK_THAT(status.error_message(), Catch::StartsWith("deleted_revision: from: "));
  CHECK(g.Stop() == 0);
}

TEST_CASE("explain: policy set and update --dry-run print the diff and the ceiling's verdict and change nothing",
          "[integration][explain]") {
  TempDir keys;
  GatewayFixture g(SigningGatewayArgs(keys));
  REQUIRE(g.SetPolicy("default", Example("github.yaml")).ok());
  const std::string new_file = keys / "widened.yaml";
  WriteFile(new_file, osh::policy::PolicyToYaml(Widened()));
  const std::string ops_file = keys / "add-pypi.ops.yaml";
  WriteFile(ops_file,
            "operations:\n"
            "  - add_rule:\n"
            "      rule_id: pypi\n"
            "      rule:\n"
            "        binaries: [{path: /usr/bin/python3}]\n"
            "        endpoints: [{host: pypi.org, port: 443}]\n");
  std::string out, err;

  auto unchanged = [&](size_t revisions, size_t audit_events) {
    CHECK(RevisionCount(g) == revisions);
    CHECK(g.AuditEvents().size() == audit_events);
    gw::GetPolicyRequest get;
    get.set_scope("default");
    gw::GetPolicyResponse current;
    REQUIRE(g.admin().GetPolicy(GatewayFixture::Context().get(), get, &current).ok());
    CHECK(current.revision().revision() == 1);
  };
  const size_t events_before = g.AuditEvents().size();

  // No ceiling in force: admitted (exit 0), nothing written.
  CHECK(Ctl(g, {"policy", "set", "default", "-f", new_file, "--dry-run"}, &out, &err) == 0);
  CHECK_THAT(out, Catch::Contains("connect to pypi.org:443 for /usr/bin/python3") &&
                      Catch::Contains("ceiling: no ceiling in force") && Catch::Contains("dry run: nothing was changed"));
  unchanged(1, events_before);
  CHECK(Ctl(g, {"policy", "update", "default", "--ops", ops_file, "--dry-run"}, &out, &err) == 0);
  CHECK_THAT(out, Catch::Contains("connect to pypi.org:443 for /usr/bin/python3") && Catch::Contains("1 added, 0 removed"));
  unchanged(1, events_before);

  // A ceiling of exactly github.yaml: the widening would be refused (exit 1), named; still nothing written.
  const std::string ceiling = SignCeiling(keys, kExamples + "github.yaml", 1, "c1.json");
  REQUIRE(Ctl(g, {"ceiling", "set", ceiling}, &out, &err) == 0);
  const size_t events_with_ceiling = g.AuditEvents().size();
  CHECK(Ctl(g, {"policy", "update", "default", "--ops", ops_file, "--dry-run"}, &out, &err) == 1);
  CHECK_THAT(out, Catch::Contains("ceiling: exceeds_ceiling: ") && Catch::Contains("pypi.org:443") &&
                      Catch::Contains("dry run: nothing was changed"));
  unchanged(1, events_with_ceiling);
  CHECK(Ctl(g, {"-o", "json", "policy", "set", "default", "-f", kExamples + "github.yaml", "--dry-run"}, &out, &err) == 0);
  const auto json = ParseJson(out);
  CHECK(json.fields().at("added").list_value().values_size() == 0);
  CHECK(json.fields().at("ceiling").struct_value().fields().at("admitted").bool_value());
  unchanged(1, events_with_ceiling);
  CHECK(g.Stop() == 0);
}
