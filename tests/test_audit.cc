// The audit chain through the real daemon and policyctl (SPEC §8): every kind of event lands in the
// chain, `audit export` matches ListAuditEvents, `audit verify` passes the export and names the first
// broken seq after a line is edited or deleted, or a database row is edited behind the gateway's back.
#include <unistd.h>

#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/message_differencer.h>

#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "tests/gateway_fixture.h"
#include "trust/audit_chain.h"

using namespace osh::test;

namespace {


std::vector<std::string> Lines(const std::string& text) {
  return absl::StrSplit(text, '\n', absl::SkipEmpty());
}

std::string Field(const std::string& json, const std::string& name) {
  const std::string key = "\"" + name + "\":\"";
  const auto start = json.find(key);
  if (start == std::string::npos) return "";
  const auto from = start + key.size();
  return json.substr(from, json.find('"', from) - from);
}


}  // namespace

TEST_CASE("audit: every operation is chained, export matches the RPC, verify names the first broken seq",
          "[integration][audit]") {
  GatewayFixture g;
  std::string out, err;
  CHECK(Ctl(g, {"admit", "--sandbox", "sb-0", "--subject", "alice"}, &out, &err) == 1);  // refusal
  REQUIRE(Ctl(g, {"policy", "set", "default", "-f", kExamples + "github.yaml"}, &out, &err) == 0);
  REQUIRE(Ctl(g, {"-o", "json", "admit", "--sandbox", "sb-1", "--subject", "alice"}, &out, &err) == 0);
  const std::string handle = Field(out, "sandbox_handle");
  const std::string digest = Field(out, "policy_digest");
  REQUIRE(Ctl(g, {"report", "--handle-file", HandleFile(handle), "--digest", digest, "--loaded"}, &out, &err) == 0);
  REQUIRE(Ctl(g, {"policy", "update", "default", "--remove-rule", "github_api"}, &out, &err) == 0);
  REQUIRE(Ctl(g, {"refresh", "--sandbox", "sb-1"}, &out, &err) == 0);
  REQUIRE(Ctl(g, {"delete", "--sandbox", "sb-1"}, &out, &err) == 0);

  // ListAuditEvents: paged, seq 1.., linked.
  const auto events = g.AuditEvents();
  REQUIRE(events.size() >= 6);
  std::set<std::string> types;
  for (size_t i = 0; i < events.size(); ++i) {
    CHECK(events[i].seq() == i + 1);
    types.insert(events[i].type());
  }
  // The policy update moved sb-1 in a re-projection (one summary event); the refresh after it was unchanged.
  for (const char* type : {"refusal", "mutation", "admission", "report", "reprojection", "deletion"}) {
    INFO(type);
    CHECK(types.count(type) == 1);
  }
  CHECK_THAT(events[0].reason(), Catch::StartsWith("no_verified_policy: "));
  CHECK(events[0].outcome() == "refused");

  // audit head: the newest event.
  REQUIRE(Ctl(g, {"-o", "json", "audit", "head"}, &out, &err) == 0);
  const std::string head_hash = Field(out, "head_hash");
  CHECK(head_hash == events.back().hash());

  // export: one line per event, the same events as the RPC, written 0600.
  const std::string exported = g.dir() / "audit.jsonl";
  REQUIRE(Ctl(g, {"audit", "export", "--out", exported}, &out, &err) == 0);
  CHECK_THAT(err, Catch::Contains("exported " + std::to_string(events.size()) + " events"));
  struct stat st;
  REQUIRE(::stat(exported.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  const auto lines = Lines(ReadAll(exported));
  REQUIRE(lines.size() == events.size());
  for (size_t i = 0; i < lines.size(); ++i) {
    gw::AuditEvent parsed;
    REQUIRE(google::protobuf::util::JsonStringToMessage(lines[i], &parsed).ok());
    CHECK(google::protobuf::util::MessageDifferencer::Equals(parsed, events[i]));
  }
  REQUIRE(Ctl(g, {"audit", "export"}, &out, &err) == 0);  // to standard output: the same lines
  CHECK(Lines(out).size() == lines.size());

  // verify: whole.
  CHECK(Ctl(g, {"audit", "verify", exported}, &out, &err) == 0);
  CHECK_THAT(out, Catch::Contains("audit chain whole: " + std::to_string(events.size()) + " events"));
  CHECK(Ctl(g, {"audit", "verify", exported, "--anchor", head_hash}, &out, &err) == 0);
  CHECK(Ctl(g, {"-o", "json", "audit", "verify", exported}, &out, &err) == 0);
  CHECK_THAT(out, Catch::Contains("\"whole\":true"));

  auto verify_lines = [&](const std::vector<std::string>& edited, std::vector<std::string> extra = {}) {
    const std::string path = g.dir() / "edited.jsonl";
    WriteFile(path, absl::StrJoin(edited, "\n") + "\n");
    std::vector<std::string> args = {"audit", "verify", path};
    args.insert(args.end(), extra.begin(), extra.end());
    return Ctl(g, args, &out, &err);
  };
  SECTION("an exported line edited") {
    auto edited = lines;
    edited[2] = absl::StrReplaceAll(edited[2], {{"\"sb-1\"", "\"sb-9\""}});
    REQUIRE(edited[2] != lines[2]);
    CHECK(verify_lines(edited) == 1);
    CHECK_THAT(out, Catch::Contains("BROKEN at seq 3") && Catch::Contains("does not match its contents"));
  }
  SECTION("an exported line deleted") {
    auto cut = lines;
    cut.erase(cut.begin() + 1);
    CHECK(verify_lines(cut) == 1);
    CHECK_THAT(out, Catch::Contains("BROKEN at seq 2") && Catch::Contains("seq 2 missing"));
  }
  SECTION("the last line deleted: only an anchor shows it") {
    const std::vector<std::string> cut(lines.begin(), lines.end() - 1);
    CHECK(verify_lines(cut) == 0);
    CHECK(verify_lines(cut, {"--anchor", head_hash}) == 1);
    CHECK_THAT(out, Catch::Contains("BROKEN at seq " + std::to_string(events.size())));
  }
  SECTION("a database row edited behind the gateway's back, and the gateway carries on") {
    EditDatabase(g.state_dir() + "/gateway.db", "UPDATE audit_events SET outcome = 'ok', reason = '' WHERE seq = 1");
    REQUIRE(Ctl(g, {"admit", "--sandbox", "sb-2", "--subject", "alice"}, &out, &err) == 0);  // appends after the edit
    REQUIRE(Ctl(g, {"audit", "export", "--out", exported}, &out, &err) == 0);
    CHECK(Lines(ReadAll(exported)).size() == events.size() + 1);
    CHECK(Ctl(g, {"audit", "verify", exported}, &out, &err) == 1);
    CHECK_THAT(out, Catch::Contains("BROKEN at seq 1") && Catch::Contains("the event was altered"));
  }
  SECTION("a database row edited with its hash recomputed breaks the next link") {
    const auto& e = events[1];
    osh::trust::AuditEvent forged = osh::trust::FromProto(e);
    forged.reason = "forged";
    forged.hash = osh::trust::ChainHash(forged.prev_hash, forged);
    EditDatabase(g.state_dir() + "/gateway.db", "UPDATE audit_events SET reason = 'forged', hash = '" + forged.hash +
                                                    "' WHERE seq = 2");
    REQUIRE(Ctl(g, {"audit", "export", "--out", exported}, &out, &err) == 0);
    CHECK(Ctl(g, {"audit", "verify", exported}, &out, &err) == 1);
    CHECK_THAT(out, Catch::Contains("BROKEN at seq 3") && Catch::Contains("does not link to seq 2's hash"));
  }
  SECTION("usage and I/O errors exit 2") {
    CHECK(Ctl(g, {"audit", "verify", g.dir() / "missing.jsonl"}, &out, &err) == 2);
    CHECK_THAT(err, Catch::Contains("missing.jsonl"));
    CHECK(Ctl(g, {"audit", "export", "--out", g.dir() / "no/such/dir/a.jsonl"}, &out, &err) == 2);
    CHECK(Ctl(g, {"audit"}, &out, &err) == 2);
  }
}

TEST_CASE("audit: a third-party driver's audit_context and verifying keys are recorded verbatim",
          "[integration][audit][remote]") {
  TempDir dir;
  std::string out, err;
  REQUIRE(RunCommand({OSH_POLICYCTL_BINARY, "keygen", "--out-private", dir / "authority.key", "--out-public",
                      dir / "authority.pub"}, &out) == 0);
  std::filesystem::create_directory(dir / "policies");
  std::filesystem::copy_file(kExamples + "github.yaml", dir / "policies/default.yaml");
  WriteFile(dir / "trust.json", TrustStoreJson({{"authority", ReadFile(dir / "authority.pub")}}, 1, true));
  DriverProcess driver(dir, "example", {OSH_EXAMPLE_DRIVER_BINARY, "--policies", dir / "policies", "--key",
                                        dir / "authority.key", "--key-id", "authority"});
  driver.Start();
  GatewayFixture g({"--driver-socket", driver.socket(), "--trust-store", dir / "trust.json"});
  gw::AdmitSandboxResponse admitted;
  REQUIRE(g.Admit("sb-1", &admitted).ok());

  const auto events = g.AuditEvents();
  const gw::AuditEvent* admission = nullptr;
  for (const auto& e : events) {
    if (e.type() == "admission") admission = &e;
  }
  REQUIRE(admission != nullptr);
  CHECK(admission->sandbox_id() == "sb-1");
  CHECK(admission->policy_digest() == admitted.policy_digest());
  CHECK(admission->surface_id() == "openshell.sandbox.v1");
  CHECK(std::vector<std::string>(admission->key_ids().begin(), admission->key_ids().end()) ==
        std::vector<std::string>{"authority"});
  drv::Projection fetched;
  REQUIRE(g.Fetch(admitted.sandbox_handle(), &fetched).ok());
  CHECK(std::map<std::string, std::string>(admission->audit_context().begin(), admission->audit_context().end()) ==
        std::map<std::string, std::string>(fetched.audit_context().begin(), fetched.audit_context().end()));
  CHECK(admission->audit_context().at("policy_file") == "default.yaml");

  const std::string exported = g.dir() / "audit.jsonl";
  REQUIRE(Ctl(g, {"audit", "export", "--out", exported}, &out, &err) == 0);
  CHECK_THAT(ReadAll(exported), Catch::Contains("\"policy_file\":\"default.yaml\""));
  CHECK(Ctl(g, {"audit", "verify", exported}, &out, &err) == 0);
}

TEST_CASE("audit: each admin call's events name who made it (the peer's uid on the admin socket)",
          "[integration][audit]") {
  GatewayFixture g;
  std::string out, err;
  REQUIRE(Ctl(g, {"policy", "set", "default", "-f", kExamples + "github.yaml"}, &out, &err) == 0);
  REQUIRE(Ctl(g, {"admit", "--sandbox", "sb-1", "--subject", "alice"}, &out, &err) == 0);
  const std::string me = "uid:" + std::to_string(::geteuid());
  int by_me = 0;
  for (const auto& event : g.AuditEvents()) {
    INFO(event.type() << " " << event.actor());
    if (event.type() == "mutation" || event.type() == "admission") {
      CHECK(event.actor() == me);
      ++by_me;
    }
  }
  CHECK(by_me == 2);
  const std::string exported = g.dir() / "audit.jsonl";
  REQUIRE(Ctl(g, {"audit", "export", "--out", exported}, &out, &err) == 0);
  CHECK_THAT(ReadAll(exported), Catch::Contains("\"actor\":\"" + me + "\""));
  CHECK(Ctl(g, {"audit", "verify", exported}, &out, &err) == 0);
}
