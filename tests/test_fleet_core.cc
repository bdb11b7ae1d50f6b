// The reshaped core end to end: a scope's re-projection is all or none across kill -9, and a restart
// serves only envelopes re-verified since the process started (lazily on first use).
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <random>
#include <set>
#include <thread>

#include <catch2/catch.hpp>

#include "policy/body_codec.h"
#include "policy/digest.h"
#include "policy/policy_file.h"
#include "store/sqlite_db.h"
#include "tests/gateway_fixture.h"
#include "trust/keys.h"

using namespace osh::test;

namespace {

// A new Ed25519 key, its private PEM written 0600 at `path` (the builtin driver's signing key).
osh::trust::PrivateKey WriteGatewayKey(const std::string& path) {
  auto key = osh::trust::PrivateKey::Generate("ed25519");
  REQUIRE(key.ok());
  WriteFile(path, key->ToPem());
  ::chmod(path.c_str(), 0600);
  return *std::move(key);
}

// Whether the audit chain records a failed re-verification of the sandbox, with a reason that starts so.
bool ReverificationFailureAudited(GatewayFixture& g, const std::string& sandbox_id, const std::string& reason_prefix) {
  gw::ListAuditEventsRequest list;
  list.set_limit(1000);
  gw::ListAuditEventsResponse events;
  if (!g.admin().ListAuditEvents(GatewayFixture::Context().get(), list, &events).ok()) return false;
  for (const auto& e : events.events()) {
    if (e.type() == "reverification_failed" && e.sandbox_id() == sandbox_id && e.reason().rfind(reason_prefix, 0) == 0) {
      return true;
    }
  }
  return false;
}

openshell::sandbox::v1::SandboxPolicy Variant(int n) {
  auto policy = osh::policy::RestrictiveDefaultPolicy();
  policy.mutable_filesystem()->add_read_only("/opt/variant-" + std::to_string(n));
  return policy;
}

// Every admitted sandbox's digest, through the paged ListSandboxes.
std::map<std::string, std::string> Digests(GatewayFixture& g) {
  std::map<std::string, std::string> out;
  gw::ListSandboxesRequest request;
  request.set_page_size(1000);
  for (;;) {
    gw::ListSandboxesResponse page;
    REQUIRE(g.admin().ListSandboxes(GatewayFixture::Context().get(), request, &page).ok());
    for (const auto& s : page.sandboxes()) out[s.context().sandbox_id()] = s.policy_digest();
    if (page.next_page_token().empty()) return out;
    request.set_page_token(page.next_page_token());
  }
}

}  // namespace

TEST_CASE("fan-out: a scope's change moves every sandbox at once, all or none across kill -9", "[integration][fleet]") {
  GatewayFixture g;
  gw::PolicyRevision first;
  REQUIRE(g.SetPolicy("default", Variant(0), &first).ok());
  constexpr int kSandboxes = 1200;
  {
    std::vector<std::thread> clients;
    std::atomic<int> admitted{0};
    for (int t = 0; t < 4; ++t) {
      clients.emplace_back([&, t] {
        auto stub = gw::PolicyGateway::NewStub(GatewayFixture::Channel(g.admin_socket()));
        for (int i = t; i < kSandboxes; i += 4) {
          gw::AdmitSandboxRequest request;
          request.mutable_context()->set_sandbox_id("sb-" + std::to_string(i));
          request.mutable_context()->set_user_subject("alice@example.com");
          gw::AdmitSandboxResponse response;
          if (stub->AdmitSandbox(GatewayFixture::Context().get(), request, &response).ok()) ++admitted;
        }
      });
    }
    for (auto& c : clients) c.join();
    REQUIRE(admitted == kSandboxes);
  }
  std::set<std::string> known_digests = {first.policy_digest()};
  std::mt19937 random(20261127);
  for (int round = 1; round <= 4; ++round) {
    INFO("round " << round);
    gw::SetPolicyRequest request;
    request.set_scope("default");
    *request.mutable_policy() = Variant(round);
    const std::string new_digest = osh::policy::Sha256Hex(osh::policy::SerializeDeterministic(request.policy()));
    grpc::Status status(grpc::StatusCode::UNKNOWN, "not run");
    gw::PolicyRevision revision;
    std::thread mutation([&] {
      auto stub = gw::PolicyGateway::NewStub(GatewayFixture::Channel(g.admin_socket()));
      status = stub->SetPolicy(GatewayFixture::Context().get(), request, &revision);
    });
    // Kill somewhere in the change: before, during or after its one transaction.
    std::this_thread::sleep_for(std::chrono::microseconds(std::uniform_int_distribution<int>(0, 60000)(random)));
    g.Kill9();
    mutation.join();
    g.Start();
    const auto digests = Digests(g);
    REQUIRE(digests.size() == kSandboxes);
    std::set<std::string> seen;
    for (const auto& [id, digest] : digests) seen.insert(digest);
    CHECK(seen.size() == 1);  // all moved, or none
    if (status.ok()) {
      CHECK(revision.sandboxes_updated() == kSandboxes);
      CHECK(*seen.begin() == new_digest);  // acknowledged: durable
    } else {
      CHECK((*seen.begin() == new_digest || known_digests.count(*seen.begin()) == 1));
    }
    known_digests.insert(new_digest);
    // Killed after the revision committed but before its re-projection did: the sandboxes were left on
    // the withdrawn policy; the start catches them up. Either way all end on the current revision.
    gw::GetPolicyRequest current_request;
    current_request.set_scope("default");
    gw::GetPolicyResponse current;
    REQUIRE(g.admin().GetPolicy(GatewayFixture::Context().get(), current_request, &current).ok());
    CHECK(Eventually([&] {
      for (const auto& [id, digest] : Digests(g)) {
        if (digest != current.revision().policy_digest()) return false;
      }
      return true;
    }));
  }
  CHECK(g.Stop() == 0);
}

TEST_CASE("restart: sandboxes admitted without a trust store are not served by the gateway restarted with one, unless they verify under it", "[integration][fleet]") {
  TempDir keys;
  const osh::trust::PrivateKey key = WriteGatewayKey(keys / "gateway.key");
  auto other = osh::trust::PrivateKey::Generate("ed25519");
  REQUIRE(other.ok());
  WriteFile(keys / "trust.json", TrustStoreJson({{"gateway-key", key.PublicKeyPem()}}));
  // No trust store (development): sb-unsigned is admitted unsigned, sb-signed signed by the builtin key.
  GatewayFixture g;
  REQUIRE(g.SetPolicy("default", Variant(0)).ok());
  gw::AdmitSandboxResponse unsigned_sb, signed_sb;
  REQUIRE(g.Admit("sb-unsigned", &unsigned_sb).ok());
  REQUIRE(g.Stop() == 0);
  g.SetExtraArgs({"--builtin-signing-key", keys / "gateway.key", "--builtin-signing-key-id", "gateway-key"});
  g.Start();
  REQUIRE(g.Admit("sb-signed", &signed_sb).ok());  // signed by the builtin key now; sb-unsigned stays unsigned
  drv::Projection fetched;
  REQUIRE(g.Fetch(unsigned_sb.sandbox_handle(), &fetched).ok());
  CHECK(fetched.signature().empty());
  REQUIRE(g.Fetch(signed_sb.sandbox_handle(), &fetched).ok());
  CHECK_FALSE(fetched.signature().empty());
  REQUIRE(g.Stop() == 0);
  // Restarted with a trust store: the unsigned envelope is not served (audited `unsigned`); the signed one
  // verifies under the store and is served.
  g.SetExtraArgs({"--trust-store", keys / "trust.json", "--builtin-signing-key", keys / "gateway.key",
                  "--builtin-signing-key-id", "gateway-key"});
  g.Start();
  // Refused with the check's reason, not as an unknown handle (review 104: that ended supervisors for good).
  const grpc::Status refused = g.Fetch(unsigned_sb.sandbox_handle(), &fetched);
  CHECK(refused.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
  CHECK_THAT(refused.error_message(), Catch::StartsWith("unsigned: "));
  REQUIRE(g.Fetch(signed_sb.sandbox_handle(), &fetched).ok());
  CHECK(fetched.policy_digest() == signed_sb.policy_digest());
  CHECK(ReverificationFailureAudited(g, "sb-unsigned", "unsigned: "));
  // A trust store naming another key: the signed one no longer verifies either.
  REQUIRE(g.Stop() == 0);
  WriteFile(keys / "trust.json", TrustStoreJson({{"other-key", other->PublicKeyPem()}}));
  g.SetExtraArgs({"--trust-store", keys / "trust.json"});
  g.Start();
  CHECK(g.Fetch(signed_sb.sandbox_handle(), &fetched).error_code() == grpc::StatusCode::FAILED_PRECONDITION);
  CHECK(g.Stop() == 0);
}

TEST_CASE("restart: a rewritten envelope is never served, and the others are re-verified and served", "[integration][fleet]") {
  TempDir keys;
  const osh::trust::PrivateKey key = WriteGatewayKey(keys / "gateway.key");
  WriteFile(keys / "trust.json", TrustStoreJson({{"gateway-key", key.PublicKeyPem()}}));
  GatewayFixture g({"--trust-store", keys / "trust.json", "--builtin-signing-key", keys / "gateway.key",
                    "--builtin-signing-key-id", "gateway-key"});
  REQUIRE(g.SetPolicy("default", Variant(0)).ok());
  gw::AdmitSandboxResponse a, b;
  REQUIRE(g.Admit("sb-a", &a).ok());
  REQUIRE(g.Admit("sb-b", &b).ok());
  CHECK_THAT(g.log(), Catch::Contains("admitted sandbox sb-b digest " + b.policy_digest() + " version " +
                                      std::to_string(b.policy_version()) + " verification verified\n"));
  REQUIRE(g.Stop() == 0);

  {  // Rewrite sb-a's stored envelope: a higher policy_version, the old signature kept.
    auto db = osh::store::Db::Open(g.state_dir() + "/gateway.db");
    REQUIRE(db.ok());
    auto read = db->Prepare(
        "SELECT e.id, e.header FROM envelopes e JOIN sandboxes s ON s.envelope_id = e.id WHERE s.sandbox_id = 'sb-a'");
    REQUIRE(read.ok());
    REQUIRE(*read->Step());
    const std::string id = read->Blob(0);
    drv::Projection header;
    REQUIRE(header.ParseFromString(read->Blob(1)));
    header.set_policy_version(header.policy_version() + 100);
    auto write = db->Prepare("UPDATE envelopes SET header = ? WHERE id = ?");
    REQUIRE(write.ok());
    write->BindBlob(1, osh::policy::SerializeDeterministic(header)).BindBlob(2, id);
    REQUIRE(write->Run().ok());
  }
  g.Start();
  drv::Projection fetched;
  const grpc::Status refused = g.Fetch(a.sandbox_handle(), &fetched);
  CHECK(refused.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
  CHECK_THAT(refused.error_message(), Catch::StartsWith("bad_signature: "));
  REQUIRE(g.Fetch(b.sandbox_handle(), &fetched).ok());
  CHECK(fetched.policy_digest() == b.policy_digest());
  // Still listed, and drift says why it is not served (review 104: it vanished from get, list and wait).
  gw::GetSandboxRequest get;
  get.set_sandbox_id("sb-a");
  gw::SandboxInfo info;
  REQUIRE(g.admin().GetSandbox(GatewayFixture::Context().get(), get, &info).ok());
  CHECK(info.drift() == gw::DRIFT_REFRESH_FAILED);
  CHECK_THAT(info.drift_reason(), Catch::StartsWith("not served: bad_signature: "));
  // The refusal is audited with its reason code.
  CHECK(ReverificationFailureAudited(g, "sb-a", "bad_signature: "));
  CHECK(g.Stop() == 0);
}
