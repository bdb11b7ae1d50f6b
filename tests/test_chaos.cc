// Chaos (ctest label `chaos`): kill -9 of the gateway at random points of an admission + delete storm,
// and kill -9 / restart flaps of the driver during a storm, with real processes: the policy-gateway
// daemon, null-policy-driver signing its projections and keeping its handles in a file (a new handle on
// every AcquireHandle, the hardest case SPEC §3.2 allows), and policyctl for the audit chain.
//
// After every gateway crash: every acknowledged admission fetchable with its digest, every acknowledged
// delete gone, nothing listed that was never asked for, the audit chain verifies, and the driver's live
// handles equal the admitted sandboxes exactly. After the driver flaps: no call stuck, no handle leaked.
// The random schedule's seed is printed; OSH_CHAOS_SEED replays one.
#include <catch2/catch.hpp>
#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "tests/gateway_fixture.h"

using namespace osh::test;

namespace {

const std::string kPolicy = std::string(OSH_SOURCE_DIR) + "/examples/policies/github.yaml";
constexpr auto kCallDeadline = std::chrono::seconds(10);

uint32_t Seed() {
  const char* fixed = std::getenv("OSH_CHAOS_SEED");
  return fixed ? static_cast<uint32_t>(std::strtoul(fixed, nullptr, 10)) : std::random_device{}();
}

// What the storm's clients were told. Guarded by `mu`; the client threads never call Catch.
struct Ledger {
  std::mutex mu;
  std::map<std::string, gw::AdmitSandboxResponse> admitted;  // acknowledged, not (acknowledged) deleted
  std::map<std::string, std::string> deleted;                // acknowledged deletes: id -> its old handle
  std::set<std::string> uncertain;  // an admission or delete that got no answer: either outcome is fine
  int stuck = 0;                    // calls that ran into their deadline
  int refused_other = 0;            // admissions refused for a reason other than an unavailable driver/gateway
  std::string first_unexpected;
};

// Admission and delete clients on their own channels, until stopped.
class Storm {
 public:
  Storm(const std::string& admin_socket, Ledger& ledger, std::string prefix, int admitters, uint32_t seed)
      : ledger_(ledger), prefix_(std::move(prefix)) {
    for (int t = 0; t < admitters; ++t) threads_.emplace_back([this, admin_socket, t] { Admit(admin_socket, t); });
    threads_.emplace_back([this, admin_socket, seed] { Delete(admin_socket, seed); });
  }
  ~Storm() { Stop(); }
  void Stop() {
    stop_ = true;
    for (auto& t : threads_) t.join();
    threads_.clear();
  }

 private:
  static std::unique_ptr<grpc::ClientContext> Context() {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(std::chrono::system_clock::now() + kCallDeadline);
    return ctx;
  }
  void Admit(const std::string& socket, int t) {
    auto stub = gw::PolicyGateway::NewStub(GatewayFixture::Channel(socket));
    for (int i = 0; !stop_; ++i) {
      gw::AdmitSandboxRequest request;
      const std::string id = prefix_ + std::to_string(t) + "-" + std::to_string(i);
      request.mutable_context()->set_sandbox_id(id);
      request.mutable_context()->set_user_subject("storm@example.com");
      gw::AdmitSandboxResponse response;
      const grpc::Status status = stub->AdmitSandbox(Context().get(), request, &response);
      std::lock_guard<std::mutex> lock(ledger_.mu);
      if (status.ok()) {
        ledger_.admitted[id] = response;
        continue;
      }
      ledger_.uncertain.insert(id);
      if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) ++ledger_.stuck;
      if (status.error_code() != grpc::StatusCode::UNAVAILABLE && status.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
        ++ledger_.refused_other;
        if (ledger_.first_unexpected.empty()) ledger_.first_unexpected = id + ": " + status.error_message();
      }
      if (status.error_code() == grpc::StatusCode::UNAVAILABLE && !absl::StrContains(status.error_message(), "driver")) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));  // the gateway is down: do not spin
      }
    }
  }
  void Delete(const std::string& socket, uint32_t seed) {
    auto stub = gw::PolicyGateway::NewStub(GatewayFixture::Channel(socket));
    std::mt19937 random(seed);
    while (!stop_) {
      std::string id, handle;
      {
        std::lock_guard<std::mutex> lock(ledger_.mu);
        if (ledger_.admitted.size() > 4) {
          auto it = ledger_.admitted.begin();
          std::advance(it, random() % ledger_.admitted.size());
          id = it->first;
          handle = it->second.sandbox_handle();
          ledger_.admitted.erase(it);
          ledger_.uncertain.insert(id);  // until the answer comes
        }
      }
      if (id.empty()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        continue;
      }
      gw::DeleteSandboxRequest request;
      request.set_sandbox_id(id);
      gw::DeleteSandboxResponse response;
      const grpc::Status status = stub->DeleteSandbox(Context().get(), request, &response);
      std::lock_guard<std::mutex> lock(ledger_.mu);
      if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) ++ledger_.stuck;
      if (status.ok() && response.deleted()) {
        ledger_.uncertain.erase(id);
        ledger_.deleted[id] = handle;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5 + random() % 25));
    }
  }

  Ledger& ledger_;
  const std::string prefix_;
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
};

std::multiset<std::string> ListedIds(GatewayFixture& g) {
  std::multiset<std::string> ids;
  gw::ListSandboxesRequest request;
  request.set_page_size(500);
  do {
    gw::ListSandboxesResponse listed;
    REQUIRE(g.admin().ListSandboxes(GatewayFixture::Context().get(), request, &listed).ok());
    for (const auto& s : listed.sandboxes()) ids.insert(s.context().sandbox_id());
    request.set_page_token(listed.next_page_token());
  } while (!request.page_token().empty());
  return ids;
}

// The sandbox ids of the driver's live handles, from its handles file (one per handle: a multiset).
std::multiset<std::string> DriverHandleIds(const std::string& handles_file) {
  std::multiset<std::string> ids;
  for (absl::string_view line : absl::StrSplit(ReadAll(handles_file), '\n', absl::SkipEmpty())) {
    const std::vector<absl::string_view> fields = absl::StrSplit(line, ' ');  // handle, sandbox id, context, key
    if (fields.size() >= 2) ids.insert(std::string(fields[1]));
  }
  return ids;
}

// Everything the chaos tests require of the state once the storm is over and the gateway serves.
void CheckConsistent(GatewayFixture& g, Ledger& ledger, const std::string& handles_file, const TempDir& dir) {
  std::lock_guard<std::mutex> lock(ledger.mu);
  for (const auto& [id, admitted] : ledger.admitted) {
    drv::Projection fetched;
    INFO("acknowledged admission " << id);
    const grpc::Status status = g.Fetch(admitted.sandbox_handle(), &fetched);
    REQUIRE(status.ok());
    CHECK(fetched.policy_digest() == admitted.policy_digest());
  }
  for (const auto& [id, handle] : ledger.deleted) {
    drv::Projection fetched;
    INFO("acknowledged delete " << id);
    CHECK(g.Fetch(handle, &fetched).error_code() == grpc::StatusCode::UNAUTHENTICATED);
  }
  const std::multiset<std::string> listed = ListedIds(g);
  for (const auto& [id, admitted] : ledger.admitted) CHECK(listed.count(id) == 1);
  for (const std::string& id : listed) {
    INFO("listed " << id);
    CHECK(ledger.deleted.count(id) == 0);
    CHECK((ledger.admitted.count(id) == 1 || ledger.uncertain.count(id) == 1));
  }
  // Once the unfinished admissions' and the deletes' handles are released, the driver holds exactly one
  // live handle per admitted sandbox.
  CHECK(Eventually([&] { return g.Status().pending_releases() == 0; }, std::chrono::seconds(30)));
  CHECK(Eventually([&] { return DriverHandleIds(handles_file) == listed; }));
  CHECK(DriverHandleIds(handles_file) == listed);
  CHECK(g.Status().possibly_leaked_handles() == 0);
  // The audit chain verifies from its first event.
  std::string out, err;
  const std::string exported = dir / "audit.jsonl";
  REQUIRE(Ctl(g, {"audit", "export", "--out", exported}, &out, &err) == 0);
  INFO(out << err);
  CHECK(Ctl(g, {"audit", "verify", exported}, &out, &err) == 0);
}

// A signing driver with a handles file, and a gateway verifying it; the random schedule's seed.
struct ChaosSetup {
  ChaosSetup() : seed(Seed()), random(seed), handles_file(dir / "handles.txt") {
    std::string out;
    REQUIRE(CtlOffline({"keygen", "--out-private", dir / "driver.key", "--out-public", dir / "driver.pub"}, &out) == 0);
    WriteFile(dir / "trust.json", TrustStoreJson({{"driver", ReadFile(dir / "driver.pub")}}, 1, true));
    driver = std::make_unique<DriverProcess>(
        dir, "null", std::vector<std::string>{OSH_NULL_DRIVER_BINARY, "--policy", kPolicy, "--key", dir / "driver.key",
                                              "--key-id", "driver", "--handles-file", handles_file, "--handle-per-acquire"});
    driver->Start();
    gateway = std::make_unique<GatewayFixture>(
        std::vector<std::string>{"--driver-socket", driver->socket(), "--trust-store", dir / "trust.json"});
  }
  const uint32_t seed;
  std::mt19937 random;
  TempDir dir;
  std::string handles_file;
  std::unique_ptr<DriverProcess> driver;
  std::unique_ptr<GatewayFixture> gateway;
  Ledger ledger;
};

}  // namespace

TEST_CASE("chaos: kill -9 of the gateway at random points of an admission + delete storm", "[chaos]") {
  ChaosSetup setup;
  INFO("OSH_CHAOS_SEED=" << setup.seed);
  std::mt19937& random = setup.random;
  GatewayFixture& g = *setup.gateway;
  Ledger& ledger = setup.ledger;
  constexpr int kRounds = 12;
  size_t acknowledged_before = 0;
  for (int round = 1; round <= kRounds; ++round) {
    INFO("round " << round);
    {
      Storm storm(g.admin_socket(), ledger, "r" + std::to_string(round) + "-", 4, random());
      std::this_thread::sleep_for(std::chrono::milliseconds(150 + random() % 1200));
      g.Kill9();
      storm.Stop();
    }
    g.Start();
    CheckConsistent(g, ledger, setup.handles_file, setup.dir);
    std::lock_guard<std::mutex> lock(ledger.mu);
    CHECK(ledger.stuck == 0);
    INFO(ledger.first_unexpected);
    CHECK(ledger.refused_other == 0);
    const size_t acknowledged = ledger.admitted.size() + ledger.deleted.size();
    CHECK(acknowledged > acknowledged_before);  // the storm made progress in this round
    acknowledged_before = acknowledged;
  }
  std::lock_guard<std::mutex> lock(ledger.mu);
  WARN("chaos: " << kRounds << " gateway kills, " << ledger.admitted.size() << " admitted, " << ledger.deleted.size()
                 << " deleted, " << ledger.uncertain.size() << " unanswered calls");
  CHECK(ledger.deleted.size() > 0);
}

TEST_CASE("chaos: 50 kill -9 / restart flaps of the driver during a storm", "[chaos]") {
  ChaosSetup setup;
  INFO("OSH_CHAOS_SEED=" << setup.seed);
  std::mt19937& random = setup.random;
  GatewayFixture& g = *setup.gateway;
  Ledger& ledger = setup.ledger;
  constexpr int kFlaps = 50;
  {
    Storm storm(g.admin_socket(), ledger, "f-", 4, random());
    for (int flap = 1; flap <= kFlaps; ++flap) {
      std::this_thread::sleep_for(std::chrono::milliseconds(40 + random() % 250));
      setup.driver->Kill9();
      std::this_thread::sleep_for(std::chrono::milliseconds(random() % 150));
      setup.driver->Start();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    storm.Stop();
  }
  REQUIRE(g.running());
  {
    std::lock_guard<std::mutex> lock(ledger.mu);
    CHECK(ledger.stuck == 0);  // no admission or delete hung until its deadline
    INFO(ledger.first_unexpected);
    CHECK(ledger.refused_other == 0);
    REQUIRE(ledger.admitted.size() + ledger.deleted.size() > 20);  // acknowledged admissions: the storm ran
  }
  CheckConsistent(g, ledger, setup.handles_file, setup.dir);
  // Admissions work at once with the driver back.
  gw::AdmitSandboxResponse after;
  CHECK(g.Admit("after-the-flaps", &after).ok());
  std::lock_guard<std::mutex> lock(ledger.mu);
  WARN("chaos: " << kFlaps << " driver flaps, " << ledger.admitted.size() << " admitted, " << ledger.deleted.size()
                 << " deleted, " << ledger.uncertain.size() << " unanswered calls");
  CHECK(g.Stop() == 0);
}
