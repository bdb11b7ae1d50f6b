// The real daemon on real Unix sockets with a real SQLite file, driven through gRPC and policyctl.
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include <catch2/catch.hpp>
#include <google/protobuf/util/message_differencer.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <httplib.h>
#include <sstream>
#include <thread>

#include <google/protobuf/descriptor.pb.h>

#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "tests/long_call_probe.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "policy/body_codec.h"
#include "policy/digest.h"
#include "policy/policy_file.h"
#include "absl/strings/str_join.h"
#include "tests/gateway_fixture.h"

using namespace osh::test;

TEST_CASE("integration: set policy, admit, fetch, update with a watcher, report, delete", "[integration]") {
  GatewayFixture g;
  REQUIRE(g.SetPolicy("default", Example("github.yaml")).ok());

  gw::AdmitSandboxResponse admitted;
  REQUIRE(g.Admit("sb-1", &admitted).ok());
  CHECK(admitted.sandbox_id() == "sb-1");
  CHECK(admitted.verification() == "none");
  CHECK(admitted.sandbox_handle().size() >= 40);  // 256 bits, base64url, prefixed

  drv::Projection fetched;
  REQUIRE(g.Fetch(admitted.sandbox_handle(), &fetched).ok());
  CHECK(fetched.policy_digest() == admitted.policy_digest());
  CHECK(osh::policy::Sha256Hex(fetched.body()) == fetched.policy_digest());
  // The body is the stored canonical bytes of the policy that was set, byte for byte.
  CHECK(fetched.body() == osh::policy::SerializeDeterministic(Example("github.yaml")));
  drv::Projection again;
  REQUIRE(g.Fetch(admitted.sandbox_handle(), &again).ok());
  CHECK(osh::policy::SerializeDeterministic(again) == osh::policy::SerializeDeterministic(fetched));

  // A watcher sees the current projection, then the one a policy update re-projects.
  auto watch_ctx = GatewayFixture::Context(admitted.sandbox_handle());
  auto reader = g.sandbox().WatchProjection(watch_ctx.get(), gw::WatchProjectionRequest());
  drv::Projection first, second;
  REQUIRE(reader->Read(&first));
  CHECK(first.policy_digest() == admitted.policy_digest());

  gw::UpdatePolicyRequest update;
  update.set_scope("default");
  auto* op = update.add_operations()->mutable_remove_binary();
  op->set_rule_id("github_api");
  op->set_path("/usr/bin/curl");
  gw::PolicyRevision revision;
  REQUIRE(g.admin().UpdatePolicy(GatewayFixture::Context().get(), update, &revision).ok());
  CHECK(revision.revision() == 2);
  CHECK(revision.sandboxes_updated() == 1);
  REQUIRE(reader->Read(&second));
  CHECK(second.policy_digest() == revision.policy_digest());
  CHECK(second.policy_version() > first.policy_version());
  auto parsed = osh::policy::ParseBodyStrict(second.body());
  REQUIRE(parsed.ok());
  CHECK(parsed->network_policies().at("github_api").binaries_size() == 1);

  // Report loaded: visible on the admin side.
  gw::ReportPolicyStatusRequest report;
  report.set_policy_digest(second.policy_digest());
  report.set_status(gw::LOADED);
  gw::ReportPolicyStatusResponse report_response;
  REQUIRE(g.sandbox().ReportPolicyStatus(GatewayFixture::Context(admitted.sandbox_handle()).get(), report, &report_response).ok());
  gw::GetSandboxRequest get;
  get.set_sandbox_id("sb-1");
  gw::SandboxInfo info;
  REQUIRE(g.admin().GetSandbox(GatewayFixture::Context().get(), get, &info).ok());
  CHECK(info.load_status() == gw::LOADED);
  CHECK(info.reported_digest() == second.policy_digest());
  CHECK_FALSE(info.reported_behind());

  // A sandbox still on the previous digest during a change is behind, not wrong: recorded as such.
  report.set_policy_digest(first.policy_digest());
  REQUIRE(g.sandbox().ReportPolicyStatus(GatewayFixture::Context(admitted.sandbox_handle()).get(), report, &report_response).ok());
  REQUIRE(g.admin().GetSandbox(GatewayFixture::Context().get(), get, &info).ok());
  CHECK(info.reported_digest() == first.policy_digest());
  CHECK(info.reported_behind());
  // A digest it was never given (64 zeros) is refused, audited, and changes nothing.
  report.set_policy_digest(std::string(64, '0'));
  auto never = g.sandbox().ReportPolicyStatus(GatewayFixture::Context(admitted.sandbox_handle()).get(), report, &report_response);
  CHECK(never.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK_THAT(never.error_message(), Catch::Contains("never given"));
  REQUIRE(g.admin().GetSandbox(GatewayFixture::Context().get(), get, &info).ok());
  CHECK(info.reported_digest() == first.policy_digest());
  gw::ListAuditEventsRequest list;
  gw::ListAuditEventsResponse events;
  REQUIRE(g.admin().ListAuditEvents(GatewayFixture::Context().get(), list, &events).ok());
  CHECK(events.events(events.events_size() - 1).type() == "report");
  CHECK(events.events(events.events_size() - 1).outcome() == "refused");
  // Back on the admitted digest.
  report.set_policy_digest(second.policy_digest());
  REQUIRE(g.sandbox().ReportPolicyStatus(GatewayFixture::Context(admitted.sandbox_handle()).get(), report, &report_response).ok());
  CHECK(info.policy_digest() == second.policy_digest());

  // Delete: the handle is refused, and the open watch ends UNAUTHENTICATED.
  gw::DeleteSandboxRequest del;
  del.set_sandbox_id("sb-1");
  gw::DeleteSandboxResponse deleted;
  REQUIRE(g.admin().DeleteSandbox(GatewayFixture::Context().get(), del, &deleted).ok());
  CHECK(deleted.deleted());
  drv::Projection none;
  CHECK(reader->Read(&none) == false);
  CHECK(reader->Finish().error_code() == grpc::StatusCode::UNAUTHENTICATED);
  CHECK(g.Fetch(admitted.sandbox_handle(), &none).error_code() == grpc::StatusCode::UNAUTHENTICATED);
  REQUIRE(g.admin().DeleteSandbox(GatewayFixture::Context().get(), del, &deleted).ok());  // idempotent
  CHECK_FALSE(deleted.deleted());
  CHECK(g.Stop() == 0);
}

TEST_CASE("integration: wrong, missing and malformed handles are UNAUTHENTICATED alike", "[integration]") {
  GatewayFixture g;
  REQUIRE(g.SetPolicy("default", Example("restrictive-default.yaml")).ok());
  gw::AdmitSandboxResponse admitted;
  REQUIRE(g.Admit("sb-1", &admitted).ok());
  drv::Projection out;
  for (const std::string& handle : {std::string("sbh_wrong"), std::string(""), admitted.sandbox_handle() + "x",
                                    admitted.sandbox_handle().substr(0, 20)}) {
    const auto status = g.Fetch(handle, &out);
    CHECK(status.error_code() == grpc::StatusCode::UNAUTHENTICATED);
    CHECK(status.error_message() == "a valid sandbox handle is required");
  }
  gw::ReportPolicyStatusResponse r;
  CHECK(g.sandbox().ReportPolicyStatus(GatewayFixture::Context("nope").get(), gw::ReportPolicyStatusRequest(), &r).error_code() ==
        grpc::StatusCode::UNAUTHENTICATED);
  auto ctx = GatewayFixture::Context("nope");
  auto reader = g.sandbox().WatchProjection(ctx.get(), gw::WatchProjectionRequest());
  CHECK_FALSE(reader->Read(&out));
  CHECK(reader->Finish().error_code() == grpc::StatusCode::UNAUTHENTICATED);
}

TEST_CASE("integration: refusals carry reason codes and persist nothing", "[integration]") {
  GatewayFixture g;
  gw::AdmitSandboxResponse admitted;
  auto status = g.Admit("sb-1", &admitted);
  CHECK(status.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
  CHECK_THAT(status.error_message(), Catch::StartsWith("no_verified_policy: "));
  gw::ListSandboxesResponse list;
  REQUIRE(g.admin().ListSandboxes(GatewayFixture::Context().get(), gw::ListSandboxesRequest(), &list).ok());
  CHECK(list.sandboxes_size() == 0);

  // Bad policy: INVALID_ARGUMENT with the field path; nothing stored.
  auto bad = Example("github.yaml");
  bad.mutable_network_policies()->at("github_api").mutable_endpoints(0)->set_host("*");
  status = g.SetPolicy("default", bad);
  CHECK(status.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK_THAT(status.error_message(), Catch::StartsWith("invalid_policy: network_policies.github_api.endpoints[0].host"));
  gw::ListPolicyRevisionsResponse revisions;
  REQUIRE(g.admin().ListPolicyRevisions(GatewayFixture::Context().get(), gw::ListPolicyRevisionsRequest(), &revisions).ok());
  CHECK(revisions.revisions_size() == 0);

  // Expected revision conflicts are ABORTED; a bad scope is INVALID_ARGUMENT.
  gw::SetPolicyRequest set;
  set.set_scope("default");
  *set.mutable_policy() = Example("restrictive-default.yaml");
  set.set_expected_revision(3);
  gw::PolicyRevision rev;
  CHECK(g.admin().SetPolicy(GatewayFixture::Context().get(), set, &rev).error_code() == grpc::StatusCode::ABORTED);
  set.set_expected_revision(0);
  REQUIRE(g.admin().SetPolicy(GatewayFixture::Context().get(), set, &rev).ok());
  set.set_scope("team:x");
  CHECK(g.admin().SetPolicy(GatewayFixture::Context().get(), set, &rev).error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  // Each refused mutation is audited with its reason (review 117: only a ceiling's refusal was).
  std::vector<std::string> refused;
  for (const auto& e : g.AuditEvents()) {
    if (e.type() == "mutation" && e.outcome() == "refused") refused.push_back(e.reason());
  }
  REQUIRE(refused.size() == 3);  // the invalid policy, the stale expected revision, the bad scope
  CHECK_THAT(refused[0], Catch::StartsWith("invalid_policy: network_policies.github_api.endpoints[0].host"));
  CHECK_THAT(refused[2], Catch::Contains("team:x"));

  REQUIRE(g.Admit("sb-1", &admitted).ok());
  CHECK(g.Admit("sb-1", &admitted).error_code() == grpc::StatusCode::ALREADY_EXISTS);
  gw::AdmitSandboxRequest empty;
  CHECK(g.admin().AdmitSandbox(GatewayFixture::Context().get(), empty, &admitted).error_code() ==
        grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_CASE("integration: the most specific scope wins and mutations re-project only affected sandboxes", "[integration]") {
  GatewayFixture g;
  REQUIRE(g.SetPolicy("default", Example("restrictive-default.yaml")).ok());
  REQUIRE(g.SetPolicy("tenant:acme", Example("github.yaml")).ok());
  gw::AdmitSandboxResponse plain, acme;
  REQUIRE(g.Admit("sb-plain", &plain).ok());
  REQUIRE(g.Admit("sb-acme", &acme, {{"tenant_id", "acme"}}).ok());
  CHECK(plain.policy_digest() == osh::policy::Sha256Hex(osh::policy::SerializeDeterministic(Example("restrictive-default.yaml"))));
  CHECK(acme.policy_digest() == osh::policy::Sha256Hex(osh::policy::SerializeDeterministic(Example("github.yaml"))));

  auto own = Example("restrictive-default.yaml");
  own.mutable_filesystem()->add_read_write("/sandbox");
  gw::PolicyRevision revision;
  REQUIRE(g.SetPolicy("sandbox:sb-acme", own, &revision).ok());
  CHECK(revision.sandboxes_updated() == 1);
  drv::Projection p;
  REQUIRE(g.Fetch(acme.sandbox_handle(), &p).ok());
  CHECK(p.policy_digest() == revision.policy_digest());
  REQUIRE(g.Fetch(plain.sandbox_handle(), &p).ok());
  CHECK(p.policy_digest() == plain.policy_digest());

  // Deleting the sandbox scope falls back to the tenant policy with a higher version (no rollback).
  gw::DeletePolicyRequest del;
  del.set_scope("sandbox:sb-acme");
  REQUIRE(g.admin().DeletePolicy(GatewayFixture::Context().get(), del, &revision).ok());
  CHECK(revision.deleted());
  REQUIRE(g.Fetch(acme.sandbox_handle(), &p).ok());
  CHECK(p.policy_digest() == acme.policy_digest());
  CHECK(p.policy_version() > acme.policy_version());
}

TEST_CASE("integration: setting a scope's live policy again re-signs nothing and says unchanged", "[integration][cli]") {
  GatewayFixture g;
  REQUIRE(g.SetPolicy("default", Example("restrictive-default.yaml")).ok());
  gw::AdmitSandboxResponse admitted;
  REQUIRE(g.Admit("sb-same", &admitted).ok());
  drv::Projection before;
  REQUIRE(g.Fetch(admitted.sandbox_handle(), &before).ok());
  // The same file applied again (GitOps): the live revision, no re-projection, the sandbox where it was.
  gw::PolicyRevision revision;
  REQUIRE(g.SetPolicy("default", Example("restrictive-default.yaml"), &revision).ok());
  CHECK(revision.unchanged());
  CHECK(revision.revision() == 1);
  CHECK(revision.sandboxes_updated() == 0);
  drv::Projection p;
  REQUIRE(g.Fetch(admitted.sandbox_handle(), &p).ok());
  CHECK(p.policy_version() == admitted.policy_version());
  CHECK(google::protobuf::util::MessageDifferencer::Equals(p, before));  // not re-signed
  std::string out, err;
  REQUIRE(Ctl(g, {"policy", "set", "default", "-f", kExamples + "restrictive-default.yaml"}, &out, &err) == 0);
  CHECK_THAT(out, Catch::StartsWith("default unchanged at revision 1 digest "));
  CHECK_THAT(out, Catch::Contains("; 0 sandbox(es) re-projected"));
  REQUIRE(Ctl(g, {"-o", "json", "policy", "set", "default", "-f", kExamples + "restrictive-default.yaml"}, &out, &err) == 0);
  CHECK_THAT(out, Catch::Contains("\"unchanged\":true"));
  // A stale expected revision is refused all the same; a real change is a new revision and moves the sandbox.
  CHECK(Ctl(g, {"policy", "set", "default", "-f", kExamples + "restrictive-default.yaml", "--expected-revision", "7"},
            &out, &err) != 0);
  REQUIRE(g.SetPolicy("default", Example("github.yaml"), &revision).ok());
  CHECK_FALSE(revision.unchanged());
  CHECK(revision.revision() == 2);
  CHECK(revision.sandboxes_updated() == 1);
  // Each attempt is in the audit log, the unchanged ones said so.
  REQUIRE(Ctl(g, {"audit", "export"}, &out, &err) == 0);
  CHECK_THAT(out, Catch::Contains("set default (unchanged: revision 1 kept)"));
}

TEST_CASE("integration: setting the live policy again moves the sandboxes that kept their last good onto it",
          "[integration][trust]") {
  // Review 83: the unchanged set re-projected nothing, so a narrowing a sandbox could not take (its
  // projection refused) stayed unapplied after the cause was mended, until a restart.
  TempDir keys;
  GatewayFixture g(SigningGatewayArgs(keys));
  auto wide = Example("github.yaml");
  auto narrow = Example("restrictive-default.yaml");
  REQUIRE(g.SetPolicy("default", wide).ok());
  gw::AdmitSandboxResponse admitted;
  REQUIRE(g.Admit("sb-kept", &admitted).ok());
  // The builtin driver now signs with a key the trust store does not hold: the narrowing is refused.
  REQUIRE(g.Stop() == 0);
  WriteKey(keys, "next");
  g.SetExtraArgs({"--trust-store", keys / "trust.json", "--builtin-signing-key", keys / "next.key",
                  "--builtin-signing-key-id", "next-key"});
  g.Start();
  gw::PolicyRevision revision;
  REQUIRE(g.SetPolicy("default", narrow, &revision).ok());
  CHECK(revision.sandboxes_updated() == 0);
  CHECK(revision.sandboxes_kept_last_good() == 1);
  {
    // The summary event names who kept the last good and why (review 117: a count alone).
    std::string out, err;
    REQUIRE(Ctl(g, {"audit", "export"}, &out, &err) == 0);
    CHECK_THAT(out, Catch::Contains("1 kept the last good: unknown_key") && Catch::Contains("(1: sb-kept)"));
  }
  // The key is trusted now; the reload moves nothing (the kept envelope still verifies).
  WriteFile(keys / "trust.json", TrustStoreJson({{"authority", ReadFile(keys / "authority.pub")},
                                                 {"gateway-key", ReadFile(keys / "gateway.pub")},
                                                 {"next-key", ReadFile(keys / "next.pub")}}));
  gw::ReloadTrustStoreResponse reloaded;
  REQUIRE(g.admin().ReloadTrustStore(GatewayFixture::Context().get(), gw::ReloadTrustStoreRequest(), &reloaded).ok());
  drv::Projection p;
  REQUIRE(g.Fetch(admitted.sandbox_handle(), &p).ok());
  CHECK(p.policy_digest() == admitted.policy_digest());
  // The same narrowing applied again: unchanged, and the sandbox behind it moves onto it.
  REQUIRE(g.SetPolicy("default", narrow, &revision).ok());
  CHECK(revision.unchanged());
  CHECK(revision.sandboxes_updated() == 1);
  CHECK(revision.sandboxes_kept_last_good() == 0);
  REQUIRE(g.Fetch(admitted.sandbox_handle(), &p).ok());
  CHECK(p.policy_digest() == revision.policy_digest());
  CHECK(p.signing_key_id() == "next-key");
}

TEST_CASE("integration: policy revisions are listed in pages, and policyctl gathers every page", "[integration][cli]") {
  GatewayFixture g;
  auto policy = Example("restrictive-default.yaml");
  for (int i = 0; i < 5; ++i) {
    policy.mutable_filesystem()->add_read_only(absl::StrCat("/opt/r", i));
    REQUIRE(g.SetPolicy(i % 2 == 0 ? "default" : "tenant:acme", policy).ok());
  }
  std::vector<uint64_t> revisions;
  gw::ListPolicyRevisionsRequest request;
  request.set_page_size(2);
  int pages = 0;
  do {
    gw::ListPolicyRevisionsResponse page;
    REQUIRE(g.admin().ListPolicyRevisions(GatewayFixture::Context().get(), request, &page).ok());
    CHECK(page.revisions_size() <= 2);
    for (const auto& r : page.revisions()) revisions.push_back(r.revision());
    request.set_page_token(page.next_page_token());
    ++pages;
  } while (!request.page_token().empty());
  CHECK(pages == 3);
  CHECK(revisions == std::vector<uint64_t>{1, 1, 2, 2, 3});  // the order they were appended in
  // One scope's pages; a token the gateway did not give is refused.
  request.set_scope("tenant:acme");
  request.set_page_token("");
  gw::ListPolicyRevisionsResponse page;
  REQUIRE(g.admin().ListPolicyRevisions(GatewayFixture::Context().get(), request, &page).ok());
  CHECK(page.revisions_size() == 2);
  CHECK(page.next_page_token().empty());
  request.set_page_token("not-a-token");
  CHECK(g.admin().ListPolicyRevisions(GatewayFixture::Context().get(), request, &page).error_code() ==
        grpc::StatusCode::INVALID_ARGUMENT);
  std::string out, err;
  REQUIRE(Ctl(g, {"-o", "json", "policy", "list"}, &out, &err) == 0);
  gw::ListPolicyRevisionsResponse listed;
  REQUIRE(google::protobuf::util::JsonStringToMessage(out, &listed).ok());
  CHECK(listed.revisions_size() == 5);
  CHECK(listed.next_page_token().empty());
}

TEST_CASE("integration: after a restart the builtin driver serves every scope's own policy", "[integration][durability]") {
  // Regression (issue 25.1): on restart every stored revision was filed under the scope "" (the key was read
  // after the record was moved), so admissions failed with no_verified_policy and the first mutation moved
  // sandboxes off their own scope onto the mutated one.
  GatewayFixture g;
  const auto restrictive = Example("restrictive-default.yaml");
  const auto github = Example("github.yaml");
  auto own = restrictive;
  own.mutable_filesystem()->add_read_write("/sandbox");
  const auto digest = [](const openshell::sandbox::v1::SandboxPolicy& p) {
    return osh::policy::Sha256Hex(osh::policy::SerializeDeterministic(p));
  };
  REQUIRE(g.SetPolicy("default", github).ok());
  REQUIRE(g.SetPolicy("tenant:acme", restrictive).ok());
  REQUIRE(g.SetPolicy("sandbox:sb-own", own).ok());
  gw::AdmitSandboxResponse own_before, acme_before;
  REQUIRE(g.Admit("sb-own", &own_before).ok());
  REQUIRE(g.Admit("sb-acme", &acme_before, {{"tenant_id", "acme"}}).ok());
  CHECK(own_before.policy_digest() == digest(own));
  CHECK(acme_before.policy_digest() == digest(restrictive));
  REQUIRE(g.Stop() == 0);

  g.Start();
  gw::AdmitSandboxResponse plain, acme2, own2;
  REQUIRE(g.Admit("sb-plain", &plain).ok());
  CHECK(plain.policy_digest() == digest(github));
  REQUIRE(g.Admit("sb-acme-2", &acme2, {{"tenant_id", "acme"}}).ok());
  CHECK(acme2.policy_digest() == digest(restrictive));

  // A mutation of `default` after the restart moves only the sandboxes that `default` serves.
  auto narrower = github;
  narrower.mutable_network_policies()->clear();
  gw::PolicyRevision revision;
  REQUIRE(g.SetPolicy("default", narrower, &revision).ok());
  const std::vector<std::pair<std::string, std::string>> expected = {
      {own_before.sandbox_handle(), digest(own)},
      {acme_before.sandbox_handle(), digest(restrictive)},
      {acme2.sandbox_handle(), digest(restrictive)},
      {plain.sandbox_handle(), digest(narrower)}};
  for (const auto& [handle, want] : expected) {
    drv::Projection p;
    REQUIRE(g.Fetch(handle, &p).ok());
    CHECK(p.policy_digest() == want);
    CHECK(p.audit_context().at("builtin_scope") != "");
  }
  CHECK(g.Stop() == 0);
}

TEST_CASE("integration: kill -9 and restart loses nothing acknowledged", "[integration][durability]") {
  GatewayFixture g;
  REQUIRE(g.SetPolicy("default", Example("github.yaml")).ok());
  std::vector<gw::AdmitSandboxResponse> admitted(20);
  std::vector<std::string> bytes;
  for (size_t i = 0; i < admitted.size(); ++i) {
    REQUIRE(g.Admit("sb-" + std::to_string(i), &admitted[i]).ok());
    drv::Projection p;
    REQUIRE(g.Fetch(admitted[i].sandbox_handle(), &p).ok());
    bytes.push_back(osh::policy::SerializeDeterministic(p));
  }
  gw::ReportPolicyStatusRequest report;
  report.set_policy_digest(admitted[0].policy_digest());
  report.set_status(gw::FAILED);
  report.set_error("landlock unavailable");
  gw::ReportPolicyStatusResponse ignored;
  REQUIRE(g.sandbox().ReportPolicyStatus(GatewayFixture::Context(admitted[0].sandbox_handle()).get(), report, &ignored).ok());
  g.Kill9();

  g.Start();
  for (size_t i = 0; i < admitted.size(); ++i) {
    drv::Projection p;
    REQUIRE(g.Fetch(admitted[i].sandbox_handle(), &p).ok());
    CHECK(osh::policy::SerializeDeterministic(p) == bytes[i]);  // every field identical after the crash
  }
  gw::GetSandboxRequest get;
  get.set_sandbox_id("sb-0");
  gw::SandboxInfo info;
  REQUIRE(g.admin().GetSandbox(GatewayFixture::Context().get(), get, &info).ok());
  CHECK(info.load_status() == gw::FAILED);
  CHECK(info.load_error() == "landlock unavailable");
  gw::GetPolicyRequest get_policy;
  get_policy.set_scope("default");
  gw::GetPolicyResponse policy;
  REQUIRE(g.admin().GetPolicy(GatewayFixture::Context().get(), get_policy, &policy).ok());
  CHECK(policy.revision().revision() == 1);
  CHECK(g.Stop() == 0);
}

TEST_CASE("integration: kill -9 during concurrent admissions leaves every acknowledged one whole", "[integration][durability]") {
  GatewayFixture g;
  REQUIRE(g.SetPolicy("default", Example("restrictive-default.yaml")).ok());
  std::mutex mu;
  std::vector<gw::AdmitSandboxResponse> acknowledged;
  std::atomic<bool> stop{false};
  std::vector<std::thread> clients;
  for (int t = 0; t < 4; ++t) {
    clients.emplace_back([&, t] {
      for (int i = 0; !stop && i < 10000; ++i) {
        gw::AdmitSandboxResponse r;
        if (g.Admit("sb-" + std::to_string(t) + "-" + std::to_string(i), &r).ok()) {
          std::lock_guard<std::mutex> lock(mu);
          acknowledged.push_back(r);
        }
      }
    });
  }
  while (true) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    std::lock_guard<std::mutex> lock(mu);
    if (acknowledged.size() >= 30) break;
  }
  g.Kill9();
  stop = true;
  for (auto& c : clients) c.join();

  g.Start();
  for (const auto& a : acknowledged) {
    drv::Projection p;
    INFO(a.sandbox_id());
    REQUIRE(g.Fetch(a.sandbox_handle(), &p).ok());
    CHECK(p.policy_digest() == a.policy_digest());
  }
  // Nothing half-present: every listed sandbox is fetchable through its record and has a body.
  gw::ListSandboxesRequest list_request;
  list_request.set_page_size(1000);
  gw::ListSandboxesResponse list;
  REQUIRE(g.admin().ListSandboxes(GatewayFixture::Context().get(), list_request, &list).ok());
  CHECK(static_cast<size_t>(list.sandboxes_size()) >= acknowledged.size());
  for (const auto& s : list.sandboxes()) CHECK(s.policy_digest().size() == 64);
}

TEST_CASE("integration: a second gateway on the same SQLite database refuses before touching it", "[integration]") {
  GatewayFixture g;
  REQUIRE(g.SetPolicy("default", Example("restrictive-default.yaml")).ok());
  gw::AdmitSandboxResponse first;
  REQUIRE(g.Admit("sb-1", &first).ok());
  std::string head_before, out, err;
  REQUIRE(Ctl(g, {"audit", "head"}, &head_before, &err) == 0);

  // Its own folder and sockets, the first one's database: refused at once, naming the holder.
  const std::string other = (g.dir().path() / "other").string();
  Process second({OSH_GATEWAY_BINARY, "--state-dir", other, "--database", "sqlite:" + g.state_dir() + "/gateway.db"},
                 (g.dir().path() / "second.log").string());
  CHECK(Eventually([&] { return !second.running(); }, std::chrono::seconds(10)));
  if (second.running()) second.Signal(SIGKILL);  // it started: the bug this guards against
  CHECK(second.Wait() == 1);
  const std::string log = ReadAll((g.dir().path() / "second.log").string());
  CHECK_THAT(log, Catch::Contains("in use by another gateway") && Catch::Contains("gateway.db.lock"));
  CHECK_THAT(log, Catch::Contains("pid " + ReadAll(g.state_dir() + "/gateway.db.lock").substr(0, 2)));

  // The first one did not notice: its chain is untouched and it goes on admitting and serving.
  std::string head_after;
  REQUIRE(Ctl(g, {"audit", "head"}, &head_after, &err) == 0);
  CHECK(head_after == head_before);
  gw::AdmitSandboxResponse next;
  REQUIRE(g.Admit("sb-2", &next).ok());
  drv::Projection fetched;
  CHECK(g.Fetch(first.sandbox_handle(), &fetched).ok());
  REQUIRE(Ctl(g, {"audit", "export", "--out", g.dir() / "audit.jsonl"}, &out, &err) == 0);
  CHECK(Ctl(g, {"audit", "verify", g.dir() / "audit.jsonl"}, &out, &err) == 0);
  // The lock goes with the process, even on kill -9: a restart finds the state free.
  g.Kill9();
  g.Start();
  CHECK(g.Fetch(next.sandbox_handle(), &fetched).ok());
  CHECK(g.Stop() == 0);
}

TEST_CASE("integration: policyctl exit codes and JSON output", "[integration][cli]") {
  GatewayFixture g;
  std::string out, err;
  CHECK(Ctl(g, {"admit", "--sandbox", "sb-1", "--subject", "alice"}, &out, &err) == 1);
  CHECK_THAT(err, Catch::Contains("no_verified_policy"));
  CHECK(Ctl(g, {"policy", "set", "default", "-f", kExamples + "github.yaml"}, &out, &err) == 0);
  CHECK(Ctl(g, {"-o", "json", "admit", "--sandbox", "sb-1", "--subject", "alice", "--attr", "tenant_id=acme"}, &out, &err) == 0);
  for (const char* field : {"\"sandbox_id\"", "\"sandbox_handle\"", "\"policy_digest\"", "\"policy_version\"",
                            "\"verification\"", "\"signing_key_ids\""}) {
    CHECK_THAT(out, Catch::Contains(field));
  }
  const auto start = out.find("sbh_");
  REQUIRE(start != std::string::npos);
  const std::string handle = out.substr(start, out.find('"', start) - start);
  const auto digest_at = out.find("\"policy_digest\":\"");
  REQUIRE(digest_at != std::string::npos);
  const std::string digest = out.substr(digest_at + 17, 64);
  const std::string fetched = (g.dir().path() / "p.json").string();
  CHECK(Ctl(g, {"fetch", "--handle-file", HandleFile(handle), "--out", fetched}, &out, &err) == 0);
  CHECK_THAT(ReadAll(fetched), Catch::Contains("\"policy_digest\"") && Catch::Contains("\"body\""));
  CHECK(Ctl(g, {"fetch", "--handle-file", HandleFile("wrong")}, &out, &err) == 1);
  CHECK_THAT(err, Catch::Contains("UNAUTHENTICATED"));
  // Never on the command line, where other local users read it (issue 12; review 104).
  CHECK(Ctl(g, {"fetch", "--handle", handle}, &out, &err) == 2);
  CHECK(Ctl(g, {"report", "--handle-file", HandleFile(handle), "--digest", digest, "--loaded"}, &out, &err) == 0);
  CHECK(Ctl(g, {"report", "--handle-file", HandleFile(handle), "--digest", std::string(64, 'a'), "--loaded"}, &out, &err) == 1);  // never given
  CHECK_THAT(err, Catch::Contains("INVALID_ARGUMENT") && Catch::Contains("never given"));
  CHECK(Ctl(g, {"report", "--handle-file", HandleFile(handle), "--digest", "short", "--loaded"}, &out, &err) == 1);
  CHECK(Ctl(g, {"report", "--handle-file", HandleFile(handle), "--digest", std::string(64, 'a')}, &out, &err) == 2);
  CHECK(Ctl(g, {"-o", "json", "list"}, &out, &err) == 0);
  CHECK_THAT(out, Catch::Contains("sb-1"));
  CHECK(Ctl(g, {"get", "--sandbox", "nope"}, &out, &err) == 1);
  CHECK(Ctl(g, {"status"}, &out, &err) == 0);
  CHECK_THAT(out, Catch::Contains("builtin"));
  CHECK(Ctl(g, {"policy", "get", "default"}, &out, &err) == 0);
  CHECK_THAT(out, Catch::Contains("filesystem_policy:"));
  CHECK(Ctl(g, {"policy", "update", "default", "--remove-rule", "github_api"}, &out, &err) == 0);
  CHECK_THAT(out, Catch::Contains("1 sandbox(es) re-projected"));
  CHECK(Ctl(g, {"policy", "list"}, &out, &err) == 0);
  CHECK(Ctl(g, {"refresh", "--sandbox", "sb-1"}, &out, &err) == 0);
  CHECK_THAT(out, Catch::Contains("unchanged"));
  CHECK(Ctl(g, {"delete", "--sandbox", "sb-1"}, &out, &err) == 0);

  // Usage and I/O errors: 2, with a message naming what and where.
  CHECK(Ctl(g, {"admit", "--sandbox", "x"}, &out, &err) == 2);
  CHECK(Ctl(g, {"no-such-command"}, &out, &err) == 2);
  const std::string bad_file = (g.dir().path() / "bad.yaml").string();
  WriteFile(bad_file, "version: 1\nprocess:\n  run_as_user: root\n");
  CHECK(Ctl(g, {"policy", "set", "default", "-f", bad_file}, &out, &err) == 2);
  CHECK_THAT(err, Catch::Contains(bad_file + ":3: invalid_policy: process.run_as_user"));
  CHECK(Ctl(g, {"policy", "set", "default", "-f", "/nonexistent.yaml"}, &out, &err) == 2);
  std::vector<std::string> no_gateway = {OSH_POLICYCTL_BINARY, "--admin-socket", "/nonexistent/admin.sock", "--timeout", "1", "status"};
  CHECK(RunCommand(no_gateway, &out, &err) == 2);
  CHECK_THAT(err, Catch::Contains("no socket at /nonexistent/admin.sock"));
}

TEST_CASE("integration: health, socket modes, a second instance and bad config", "[integration]") {
  GatewayFixture g;
  struct stat st;
  REQUIRE(stat(g.state_dir().c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0700);
  for (const auto& path : {g.admin_socket(), g.sandbox_socket(), g.state_dir() + "/gateway.db"}) {
    REQUIRE(stat(path.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
  }
  // The audit head anchor, written within a second of an event, is as private (it was 0644).
  REQUIRE(g.SetPolicy("default", osh::policy::RestrictiveDefaultPolicy()).ok());
  const std::string anchor = g.state_dir() + "/gateway.db.head";
  REQUIRE(Eventually([&] { return stat(anchor.c_str(), &st) == 0; }));
  CHECK((st.st_mode & 0777) == 0600);
  for (const auto& socket : {g.admin_socket(), g.sandbox_socket()}) {
    auto health = grpc::health::v1::Health::NewStub(GatewayFixture::Channel(socket));
    for (const char* service : {"", "openshell.policy.gateway.v1.Admission"}) {
      INFO(socket << " " << service);
      grpc::health::v1::HealthCheckRequest request;
      request.set_service(service);
      grpc::health::v1::HealthCheckResponse response;
      REQUIRE(health->Check(GatewayFixture::Context().get(), request, &response).ok());
      CHECK(response.status() == grpc::health::v1::HealthCheckResponse::SERVING);
    }
  }

  // A second gateway on the same state refuses to start (its database is locked, see below); one with its
  // own database but the same sockets refuses too (nothing replaced while someone listens).
  Process second({OSH_GATEWAY_BINARY, "--state-dir", g.state_dir()}, (g.dir().path() / "second.log").string());
  CHECK(second.Wait() == 1);
  CHECK_THAT(ReadAll((g.dir().path() / "second.log").string()), Catch::Contains("in use by another gateway"));
  Process third({OSH_GATEWAY_BINARY, "--state-dir", g.state_dir(), "--database", "sqlite:" + (g.dir() / "third.db")},
                (g.dir().path() / "third.log").string());
  CHECK(third.Wait() == 1);
  CHECK_THAT(ReadAll((g.dir().path() / "third.log").string()), Catch::Contains("another process is listening"));

  const std::string config = (g.dir().path() / "bad.toml").string();
  WriteFile(config, "[openshell.gateway]\nstate_dir = \"x\"\nsurprise = 1\n");
  std::string out, err;
  CHECK(RunCommand({OSH_GATEWAY_BINARY, "--config", config}, &out, &err) == 2);
  CHECK_THAT(err, Catch::Contains(config + ":3: unknown key 'openshell.gateway.surprise'"));
  CHECK(g.Stop() == 0);
}

TEST_CASE("integration: --check-config prints each value with its source and starts nothing", "[integration][config]") {
  TempDir dir;
  const std::string config = dir / "gateway.toml";
  const std::string state = dir / "var";
  WriteFile(config, "[openshell.gateway]\nstate_dir = \"" + state + "\"\n\n[openshell.gateway.limits]\nmax_watchers = 50\n");
  std::string out, err;
  REQUIRE(RunCommand({OSH_GATEWAY_BINARY, "--config", config, "--clock-skew-s", "7", "--check-config"}, &out, &err, "",
                     {"POLICY_GATEWAY_REPORT_BURST=9"}) == 0);
  // One row per key: KEY  VALUE  SOURCE, columns separated by spaces (checked line by line: a regex over
  // the whole output recurses once per character in std::regex and overflows the stack under ASan).
  auto has_row = [&out](const std::string& key, const std::string& value, const std::string& source) {
    for (absl::string_view line : absl::StrSplit(out, '\n')) {
      const std::vector<absl::string_view> columns = absl::StrSplit(line, ' ', absl::SkipEmpty());
      if (columns.size() >= 3 && columns[0] == key && columns[1] == value &&
          absl::StrJoin(columns.begin() + 2, columns.end(), " ") == source) {
        return true;
      }
    }
    return false;
  };
  CHECK(has_row("max_watchers", "50", config + ":5"));
  CHECK(has_row("clock_skew_s", "7", "flag --clock-skew-s"));
  CHECK(has_row("report_burst", "9", "environment POLICY_GATEWAY_REPORT_BURST"));
  CHECK(has_row("database", "sqlite:" + state + "/gateway.db", "default"));
  CHECK_THAT(out, Catch::EndsWith("config ok\n"));
  CHECK_FALSE(std::filesystem::exists(state));  // nothing created, nothing started
  REQUIRE(RunCommand({OSH_GATEWAY_BINARY, "--config", config, "--check-config", "-o", "json"}, &out, &err) == 0);
  // Keys in the documented order, values typed as in TOML (numbers, true/false, lists).
  CHECK_THAT(out, Catch::StartsWith("{\"state_dir\":{\"value\":"));
  CHECK_THAT(out, Catch::Contains("\"max_watchers\":{\"value\":50,\"source\":\"" + config + ":5\""));
  CHECK_THAT(out, Catch::Contains("\"audit_syslog\":{\"value\":false,"));
  CHECK_THAT(out, Catch::Contains("\"accepted_surfaces\":{\"value\":[\"openshell.sandbox.v1\"],"));
  // A bad value keeps its file:line; a misspelt variable is named; both exit 2 and create nothing.
  WriteFile(config, "[openshell.gateway.limits]\nwatch_backlog = 0\n");
  CHECK(RunCommand({OSH_GATEWAY_BINARY, "--config", config, "--check-config"}, &out, &err) == 2);
  CHECK_THAT(err, Catch::Contains(config + ":2: watch_backlog: expected a whole number from 1 to 64, got '0'"));
  CHECK(RunCommand({OSH_GATEWAY_BINARY, "--state-dir", state, "--check-config"}, &out, &err, "",
                   {"POLICY_GATEWAY_STATEDIR=x"}) == 2);
  CHECK_THAT(err, Catch::Contains("POLICY_GATEWAY_STATEDIR: not a setting"));
  CHECK_FALSE(std::filesystem::exists(state));
}

TEST_CASE("integration: policyctl health says serving, not serving or unreachable, by exit status", "[integration][cli]") {
  TempDir dir;
  // A driver that is not there: the gateway starts degraded, admission NOT_SERVING, the socket serving.
  GatewayFixture g({"--driver-socket", dir / "absent.sock", "--driver-connect-timeout-ms", "0"});
  std::string out, err;
  CHECK(Ctl(g, {"health"}, &out, &err) == 0);
  CHECK(out == "SERVING\n");
  CHECK(Ctl(g, {"health", "--sandbox"}, &out, &err) == 0);
  CHECK(Ctl(g, {"health", "--service", "openshell.policy.gateway.v1.Admission"}, &out, &err) == 1);
  CHECK(out == "NOT_SERVING\n");
  CHECK(Ctl(g, {"-o", "json", "health", "--service", "openshell.policy.gateway.v1.Admission"}, &out, &err) == 1);
  CHECK_THAT(out, Catch::Contains("\"status\":\"NOT_SERVING\""));
  CHECK(Ctl(g, {"health", "--service", "no.such.Service"}, &out, &err) == 2);
  CHECK_THAT(err, Catch::Contains("unknown service 'no.such.Service'"));
  // Unreachable: a path with no socket, and a socket file nobody listens on, both fail at once.
  CHECK(CtlOffline({"health", "--admin-socket", dir / "missing.sock"}, &out, &err) == 2);
  CHECK_THAT(err, Catch::Contains("no socket at " + (dir / "missing.sock")));
  const std::string dead = dir / "dead.sock";
  {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, dead.c_str(), sizeof(address.sun_path) - 1);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0);
    ::close(fd);  // bound, never listened: what a crashed server leaves behind
  }
  CHECK(CtlOffline({"health", "--admin-socket", dead}, &out, &err) == 2);
  CHECK_THAT(err, Catch::Contains("nobody is listening on " + dead));
}

TEST_CASE("integration: the gateway tells systemd it is ready, reloading and stopping (sd_notify)", "[integration]") {
  TempDir dir;
  const std::string notify = dir / "notify.sock";
  DatagramListener listener(notify);
  auto next = [&] { return listener.Next(); };
  GatewayFixture g({}, {"NOTIFY_SOCKET=" + notify});
  const std::string ready = next();
  CHECK_THAT(ready, Catch::StartsWith("READY=1\nSTATUS=serving: driver builtin"));
  // Ready means serving: the admin socket answers now.
  gw::GetStatusResponse status;
  CHECK(g.admin().GetStatus(GatewayFixture::Context().get(), gw::GetStatusRequest(), &status).ok());
  g.Signal(SIGHUP);
  CHECK_THAT(next(), Catch::StartsWith("RELOADING=1"));
  CHECK_THAT(next(), Catch::StartsWith("READY=1"));
  g.Signal(SIGTERM);
  CHECK_THAT(next(), Catch::StartsWith("STOPPING=1"));
}

TEST_CASE("integration: Prometheus metrics at metrics_listen count admissions, refusals, fetches and driver calls",
          "[integration][metrics]") {
  TempDir dir;
  DriverProcess driver(dir, "null", {OSH_NULL_DRIVER_BINARY, "--policy", kExamples + "github.yaml"});
  driver.Start();
  GatewayFixture g({"--driver-socket", driver.socket(), "--metrics-listen", "127.0.0.1:0"});
  std::string url;
  REQUIRE(Eventually([&] {
    const std::string log = g.log();
    const size_t at = log.find("metrics: serving http://");
    if (at == std::string::npos) return false;
    url = log.substr(at + std::strlen("metrics: serving "));
    url = url.substr(0, url.find('\n'));
    return true;
  }));
  gw::AdmitSandboxResponse admitted;
  REQUIRE(g.Admit("sb-1", &admitted).ok());
  CHECK(g.Admit("sb-1", &admitted).error_code() == grpc::StatusCode::ALREADY_EXISTS);
  drv::Projection fetched;
  REQUIRE(g.Fetch(admitted.sandbox_handle(), &fetched).ok());
  CHECK(g.Fetch("sbh_wrong", &fetched).error_code() == grpc::StatusCode::UNAUTHENTICATED);

  // (The second admission is refused before the driver is asked: one call of each.)
  // Scraped with an HTTP client (cpp-httplib), as Prometheus would.
  const std::string host_port = url.substr(std::strlen("http://"), url.find("/metrics") - std::strlen("http://"));
  httplib::Client client(host_port);
  auto response = client.Get("/metrics");
  REQUIRE(response);
  CHECK(response->status == 200);
  CHECK_THAT(response->get_header_value("Content-Type"), Catch::StartsWith("text/plain; version=0.0.4"));
  const std::string& text = response->body;
  INFO(text);
  CHECK_THAT(text, Catch::Contains("\npolicy_gateway_admissions_total{outcome=\"admitted\",reason=\"\"} 1\n"));
  CHECK_THAT(text, Catch::Contains("\npolicy_gateway_admissions_total{outcome=\"refused\",reason=\"already_exists\"} 1\n"));
  CHECK_THAT(text, Catch::Contains("\npolicy_gateway_sandbox_calls_total{call=\"GetProjection\",code=\"OK\"} 1\n"));
  CHECK_THAT(text, Catch::Contains("\npolicy_gateway_sandbox_calls_total{call=\"GetProjection\",code=\"UNAUTHENTICATED\"} 1\n"));
  CHECK_THAT(text, Catch::Contains("\npolicy_gateway_driver_calls_total{method=\"AcquireHandle\",code=\"OK\"} 1\n"));
  CHECK_THAT(text, Catch::Contains("\npolicy_gateway_driver_call_duration_seconds_count{method=\"GetProjection\"} 1\n"));
  // Every store commit is timed (the admission's, the refusal's audit event, ...).
  CHECK_THAT(text, Catch::Contains("\npolicy_gateway_store_commit_duration_seconds_bucket{le=\"+Inf\"} "));
  CHECK_THAT(text, !Catch::Contains("\npolicy_gateway_store_commit_duration_seconds_count 0\n"));
  CHECK_THAT(text, Catch::Contains("\npolicy_gateway_admitted_sandboxes 1\n"));
  CHECK_THAT(text, Catch::Contains("\npolicy_gateway_driver_up 1\n"));
  CHECK_THAT(text, Catch::Contains("\npolicy_gateway_database_reachable 1\n"));
  CHECK_THAT(text, Catch::Contains("\npolicy_gateway_live_replicas 1\n"));
  CHECK_THAT(text, Catch::Contains("\npolicy_gateway_feed_changes_behind 0\n"));
  CHECK_THAT(text, Catch::Contains("\npolicy_gateway_feed_read_age_seconds 0\n"));
  CHECK_THAT(text, Catch::Contains("# TYPE policy_gateway_admin_call_duration_seconds histogram\n"));
  CHECK_THAT(text, Catch::Contains("\npolicy_gateway_admin_call_duration_seconds_bucket{method=\"AdmitSandbox\",le=\"+Inf\"} 2\n"));
  CHECK_THAT(text, Catch::Contains("\nprocess_open_fds "));
  CHECK(client.Get("/other")->status == 404);
  // A port already taken: the gateway does not start, and says why.
  std::string out, err;
  CHECK(RunCommand({OSH_GATEWAY_BINARY, "--state-dir", dir / "second", "--metrics-listen", host_port}, &out, &err) == 2);
  CHECK_THAT(out + err, Catch::Contains("metrics_listen: cannot listen on " + host_port));
  // A malformed metrics_allow entry: the same, naming it — and --check-config says so too (review 95: it
  // passed, and only the start refused it).
  CHECK(RunCommand({OSH_GATEWAY_BINARY, "--state-dir", dir / "third", "--metrics-listen", "127.0.0.1:0", "--metrics-allow",
                    "127.0.0.1/8,10.0.0.0/33"},
                   &out, &err) == 2);
  CHECK_THAT(out + err, Catch::Contains("metrics_allow: '10.0.0.0/33' has a bad prefix length"));
  CHECK(RunCommand({OSH_GATEWAY_BINARY, "--state-dir", dir / "third", "--metrics-listen", "127.0.0.1:0", "--metrics-allow",
                    "127.0.0.1/8, not-a-cidr", "--check-config"},
                   &out, &err) == 2);
  CHECK_THAT(out + err, Catch::Contains("metrics_allow: 'not-a-cidr' is not an address or CIDR"));
  // A POST is refused (405, Allow: GET) without its body being waited for.
  const auto posted = client.Post("/metrics", std::string(1000, 'x'), "text/plain");
  REQUIRE(posted);
  CHECK(posted->status == 405);
  CHECK(posted->get_header_value("Allow") == "GET");
}

TEST_CASE("integration: what policy get -o json prints, policy set -f takes back", "[integration][cli]") {
  GatewayFixture g;
  std::string out, err;
  REQUIRE(Ctl(g, {"policy", "set", "default", "-f", kExamples + "github.yaml"}, &out, &err) == 0);
  REQUIRE(Ctl(g, {"-o", "json", "policy", "get", "default"}, &out, &err) == 0);
  const std::string got = g.dir() / "got.json";
  WriteFile(got, out);
  REQUIRE(Ctl(g, {"policy", "set", "tenant:acme", "-f", got}, &out, &err) == 0);
  std::string default_yaml, tenant_yaml;
  REQUIRE(Ctl(g, {"policy", "get", "default"}, &default_yaml, &err) == 0);
  REQUIRE(Ctl(g, {"policy", "get", "tenant:acme"}, &tenant_yaml, &err) == 0);
  // Same digest: the same policy, byte for byte.
  CHECK(default_yaml.substr(default_yaml.find(" digest ")) == tenant_yaml.substr(tenant_yaml.find(" digest ")));
  // A deleted revision has no policy to set; a tampered document is checked as a policy file is.
  REQUIRE(Ctl(g, {"policy", "delete", "tenant:acme"}, &out, &err) == 0);
  REQUIRE(Ctl(g, {"-o", "json", "policy", "get", "tenant:acme"}, &out, &err) == 0);
  WriteFile(got, out);
  CHECK(Ctl(g, {"policy", "set", "tenant:other", "-f", got}, &out, &err) == 2);
  CHECK_THAT(err, Catch::Contains("is a deletion; there is no policy to set"));
  REQUIRE(Ctl(g, {"-o", "json", "policy", "get", "default"}, &out, &err) == 0);
  const size_t user = out.find("\"run_as_user\"");
  REQUIRE(user != std::string::npos);
  const size_t value = out.find('"', out.find(':', user) + 1);
  out.replace(value + 1, out.find('"', value + 1) - value - 1, "root");
  WriteFile(got, out);
  CHECK(Ctl(g, {"policy", "set", "tenant:other", "-f", got}, &out, &err) == 2);
  CHECK_THAT(err, Catch::Contains("invalid_policy: process.run_as_user"));
}

TEST_CASE("integration: log_format json writes one JSON object a line, and log_level drops what is below it",
          "[integration][config]") {
  GatewayFixture g({"--log-format", "json", "--log-level", "warning"});
  REQUIRE(g.SetPolicy("default", osh::policy::RestrictiveDefaultPolicy()).ok());
  gw::AdmitSandboxResponse admitted;
  REQUIRE(g.Admit("sb-1", &admitted).ok());  // logged at info: dropped
  CHECK(g.Stop() == 0);
  const std::string log = g.log();
  size_t lines = 0;
  std::istringstream in(log);
  for (std::string line; std::getline(in, line);) {
    INFO(line);
    google::protobuf::Struct parsed;
    REQUIRE(google::protobuf::util::JsonStringToMessage(line, &parsed).ok());
    const auto& fields = parsed.fields();
    REQUIRE(fields.count("level") == 1);
    CHECK((fields.at("level").string_value() == "warning" || fields.at("level").string_value() == "error"));
    CHECK(fields.at("logger").string_value() == "policy-gateway");
    CHECK(fields.at("message").string_value().size() > 0);
    CHECK_THAT(fields.at("time").string_value(), Catch::Matches(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)"));
    ++lines;
  }
  CHECK(lines >= 1);  // "no trust store configured" is a warning
  CHECK_THAT(log, !Catch::Contains("\"level\":\"info\""));
  CHECK_THAT(log, Catch::Contains("no trust store configured"));
}

TEST_CASE("integration: JSON log lines carry each event's fields and the admin caller", "[integration][config]") {
  GatewayFixture g({"--log-format", "json"});
  REQUIRE(g.SetPolicy("default", osh::policy::RestrictiveDefaultPolicy()).ok());
  gw::AdmitSandboxResponse admitted;
  REQUIRE(g.Admit("sb-1", &admitted).ok());
  CHECK(g.Stop() == 0);
  std::map<std::string, google::protobuf::Struct> by_event;
  std::istringstream in(g.log());
  for (std::string line; std::getline(in, line);) {
    google::protobuf::Struct parsed;
    REQUIRE(google::protobuf::util::JsonStringToMessage(line, &parsed).ok());
    if (parsed.fields().count("event")) by_event[parsed.fields().at("event").string_value()] = parsed;
  }
  REQUIRE(by_event.count("admission") == 1);
  const auto& admission = by_event["admission"].fields();
  CHECK(admission.at("sandbox_id").string_value() == "sb-1");
  CHECK(admission.at("digest").string_value() == admitted.policy_digest());
  CHECK(admission.at("version").string_value() == std::to_string(admitted.policy_version()));
  CHECK(admission.at("actor").string_value() == "uid:" + std::to_string(::geteuid()));
  REQUIRE(by_event.count("mutation") == 1);
  CHECK(by_event["mutation"].fields().at("scope").string_value() == "default");
}

TEST_CASE("integration: policyctl show --sandbox prints the enforced policy as YAML with its provenance", "[integration][cli]") {
  GatewayFixture g;
  REQUIRE(g.SetPolicy("default", Example("github.yaml")).ok());
  gw::AdmitSandboxResponse admitted;
  REQUIRE(g.Admit("sb-1", &admitted).ok());
  std::string out, err;
  REQUIRE(Ctl(g, {"show", "--sandbox", "sb-1"}, &out, &err) == 0);
  CHECK_THAT(out, Catch::Contains("# digest " + admitted.policy_digest()));
  CHECK_THAT(out, Catch::Contains("# verification none"));
  // The YAML is a policy file: it parses back to the policy set.
  auto parsed = osh::policy::ParsePolicyText(out, "show output");
  REQUIRE(parsed.ok());
  CHECK(parsed->SerializeAsString() == Example("github.yaml").SerializeAsString());
  REQUIRE(Ctl(g, {"-o", "json", "show", "--sandbox", "sb-1"}, &out, &err) == 0);
  CHECK_THAT(out, Catch::Contains("\"policy\":{"));
  CHECK(Ctl(g, {"show", "--sandbox", "sb-404"}, &out, &err) == 1);
  CHECK_THAT(err, Catch::Contains("NOT_FOUND"));
}

TEST_CASE("integration: on the sandbox socket health answers Check only and reflection is not served: a peer without "
          "a handle holds no call open",
          "[integration][reflection][limits]") {
  // Regression (review 115, mended at stop 71): gRPC's default health Watch and server reflection answered any
  // peer of the sandbox listener with a stream held open for as long as it liked, so its connections never
  // went idle (connection_idle_timeout_s) and held their share of the listener's cap.
  GatewayFixture g({"--connection-idle-timeout-s", "1"});
  auto sandbox = GatewayFixture::Channel(g.sandbox_socket());
  CHECK(HealthWatchOutcome(sandbox) == grpc::StatusCode::UNIMPLEMENTED);
  CHECK(ReflectionOutcome(sandbox) == grpc::StatusCode::UNIMPLEMENTED);
  auto health = grpc::health::v1::Health::NewStub(sandbox);
  for (const char* service : {"", "openshell.policy.gateway.v1.Admission", "openshell.policy.gateway.v1.Liveness"}) {
    INFO(service);
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    grpc::health::v1::HealthCheckResponse response;
    REQUIRE(health->Check(GatewayFixture::Context().get(), request, &response).ok());
    CHECK(response.status() == grpc::health::v1::HealthCheckResponse::SERVING);
  }
  grpc::health::v1::HealthCheckRequest unknown;
  unknown.set_service("no.such.Service");
  grpc::health::v1::HealthCheckResponse response;
  CHECK(health->Check(GatewayFixture::Context().get(), unknown, &response).error_code() == grpc::StatusCode::NOT_FOUND);
  // Nothing is left open on the connection: the server lets it go once idle (the channel falls back to IDLE).
  CHECK(Eventually([&] { return sandbox->GetState(false) == GRPC_CHANNEL_IDLE; }, std::chrono::seconds(20)));
  // The admin socket (private to the gateway's user) keeps reflection; its health is the same Check-only service.
  auto admin = GatewayFixture::Channel(g.admin_socket());
  CHECK(ReflectionOutcome(admin) == grpc::StatusCode::OK);
  CHECK(HealthWatchOutcome(admin) == grpc::StatusCode::UNIMPLEMENTED);
}

TEST_CASE("integration: server reflection on the admin socket describes PolicyGateway", "[integration][reflection]") {
  namespace rf = grpc::reflection::v1alpha;
  GatewayFixture g;
  auto stub = rf::ServerReflection::NewStub(GatewayFixture::Channel(g.admin_socket()));
  auto context = GatewayFixture::Context();
  auto stream = stub->ServerReflectionInfo(context.get());
  rf::ServerReflectionRequest request;
  rf::ServerReflectionResponse response;
  request.set_list_services("");
  REQUIRE(stream->Write(request));
  REQUIRE(stream->Read(&response));
  std::set<std::string> services;
  for (const auto& service : response.list_services_response().service()) services.insert(service.name());
  CHECK(services.count("grpc.health.v1.Health") == 1);
  CHECK(services.count("grpc.reflection.v1alpha.ServerReflection") == 1);

  request.set_file_containing_symbol("openshell.policy.gateway.v1.PolicyGateway");
  REQUIRE(stream->Write(request));
  REQUIRE(stream->Read(&response));
  REQUIRE(response.has_file_descriptor_response());
  bool described = false;
  for (const auto& bytes : response.file_descriptor_response().file_descriptor_proto()) {
    google::protobuf::FileDescriptorProto file;
    REQUIRE(file.ParseFromString(bytes));
    if (file.name() != "openshell/policy/gateway/v1/gateway.proto") continue;
    for (const auto& service : file.service()) {
      if (service.name() != "PolicyGateway") continue;
      for (const auto& method : service.method()) described |= method.name() == "AdmitSandbox";
    }
  }
  CHECK(described);
  stream->WritesDone();
  CHECK(stream->Finish().ok());
}

TEST_CASE("integration: list and get do not say loaded for a sandbox that loaded an earlier digest", "[integration][cli]") {
  // Regression (issue 25.18): `list`/`get` said `loaded` for a sandbox whose last report was about an older
  // digest than the one it is served (reported_behind was only in JSON).
  GatewayFixture g;
  REQUIRE(g.SetPolicy("default", Example("github.yaml")).ok());
  gw::AdmitSandboxResponse admitted;
  REQUIRE(g.Admit("sb-1", &admitted).ok());
  gw::ReportPolicyStatusRequest report;
  report.set_policy_digest(admitted.policy_digest());
  report.set_status(gw::LOADED);
  gw::ReportPolicyStatusResponse ignored;
  REQUIRE(g.sandbox().ReportPolicyStatus(GatewayFixture::Context(admitted.sandbox_handle()).get(), report, &ignored).ok());
  std::string out, err;
  REQUIRE(Ctl(g, {"list"}, &out, &err) == 0);
  CHECK_THAT(out, Catch::Contains("loaded") && !Catch::Contains("behind"));
  REQUIRE(g.SetPolicy("default", Example("restrictive-default.yaml")).ok());  // served a new digest now
  REQUIRE(Ctl(g, {"list"}, &out, &err) == 0);
  CHECK_THAT(out, Catch::Contains("loaded (behind)"));
  REQUIRE(Ctl(g, {"get", "--sandbox", "sb-1"}, &out, &err) == 0);
  CHECK_THAT(out, Catch::Contains("load status:    loaded (an earlier digest; not yet the current one)"));
  CHECK(g.Stop() == 0);
}
