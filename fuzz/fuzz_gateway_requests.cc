// libFuzzer target: the gateway's request handling, in process. An input is a script of admin calls,
// each one byte choosing the PolicyGateway method, two bytes of length (little-endian) and that many
// bytes of serialized request; every call goes through AdminService::Dispatch (mutation gate, request
// decoding, handler) into the real core, with the builtin driver and SQLite on a scratch folder. State
// carries over between inputs and is reset every kResetEvery inputs, so scripts build on each other (and
// the audit events and revisions that List calls read stay short).
// Invariants (abort on violation): no crash; no INTERNAL/UNKNOWN/DATA_LOSS and no error without a
// message; a sandbox whose admission succeeded is there, one whose delete succeeded is gone; the audit
// chain links and hashes correctly, event by event, across every input.
#include <sqlite3.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "google/protobuf/stubs/logging.h"
#include "builtin_driver/builtin_driver.h"
#include "gateway/core/change_explainer.h"
#include "gateway/server/admin_service.h"
#include "gateway/core/egress_decisions.h"
#include "gateway/core/gateway_core.h"
#include "gateway/core/log.h"
#include "gateway/core/worker_pool.h"
#include "store/sqlite_store.h"
#include "trust/audit_chain.h"

namespace {

namespace v1 = openshell::policy::gateway::v1;

constexpr int kResetEvery = 100;  // the state (audit events, revisions) grows per input; listing it is what costs
constexpr const char* kMethods[] = {
    "SetPolicy",     "UpdatePolicy",  "DeletePolicy",        "GetPolicy",       "ListPolicyRevisions",
    "AdmitSandbox",  "DeleteSandbox", "GetSandbox",          "ListSandboxes",   "RefreshSandbox",
    "GetStatus",     "ListAuditEvents", "EvaluateEgress",    "SetCeiling",      "GetCeiling",
    "ReloadTrustStore", "NoSuchMethod"};
constexpr size_t kMethodCount = sizeof(kMethods) / sizeof(kMethods[0]);

void Check(bool condition) {
  if (!condition) std::abort();
}

// One gateway core in a scratch folder, wired as the daemon wires it (without sockets).
struct Gateway {
  std::string dir;
  std::unique_ptr<osh::store::SqliteStore> store;
  std::unique_ptr<osh::builtin_driver::BuiltinDriver> driver;
  osh::gateway::SandboxRegistry registry;
  osh::gateway::Config config;
  std::unique_ptr<osh::gateway::GatewayCore> core;
  std::unique_ptr<osh::gateway::EgressDecisions> decisions;
  std::unique_ptr<osh::gateway::ChangeExplainer> explainer;
  osh::gateway::WorkerPool pool{1};
  std::unique_ptr<osh::gateway::AdminService> admin;
  osh::trust::ChainSealer::Mark checked;  // the audit chain is verified up to here

  Gateway() {
    // On tmpfs when there is one: the store's fsyncs cost nothing there, so inputs run at CPU speed.
    char shm_path[] = "/dev/shm/fuzz-gateway-XXXXXX";
    char tmp_path[] = "/tmp/fuzz-gateway-XXXXXX";
    char* path = mkdtemp(shm_path);
    if (path == nullptr) path = mkdtemp(tmp_path);
    Check(path != nullptr);
    dir = path;
    auto opened = osh::store::SqliteStore::Open(dir + "/gateway.db");
    Check(opened.ok());
    store = *std::move(opened);
    auto created = osh::builtin_driver::BuiltinDriver::Create(store.get(), std::nullopt, true);
    Check(created.ok());
    driver = *std::move(created);
    core = std::make_unique<osh::gateway::GatewayCore>(config, store.get(), driver.get(), &registry, nullptr);
    decisions = std::make_unique<osh::gateway::EgressDecisions>(&registry, &core->clock());
    explainer = std::make_unique<osh::gateway::ChangeExplainer>(
        &registry, &core->clock(), [core = core.get()](const auto& r) { return core->GetPolicy(r); });
    admin = std::make_unique<osh::gateway::AdminService>(core.get(), &pool, &pool, decisions.get(), explainer.get());
  }
  ~Gateway() {
    admin.reset();
    pool.Shutdown();
    core.reset();
    driver.reset();
    store.reset();
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
  }

  // The events appended since the last check link to it and hash correctly.
  void CheckChain() {
    while (true) {
      auto events = store->ListAuditEvents(checked.seq, 500);
      Check(events.ok());
      if (events->empty()) return;
      for (const auto& event : *events) {
        Check(event.seq == checked.seq + 1);
        Check(event.prev_hash == checked.hash);
        Check(osh::trust::ChainHash(event.prev_hash, event) == event.hash);
        checked = {event.seq, event.hash};
      }
    }
  }

  bool Has(const std::string& sandbox_id) { return core->GetSandbox(sandbox_id).ok(); }
};

std::unique_ptr<Gateway> gateway;
int inputs = 0;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);  // invalid UTF-8 in a fuzzed string field is expected
  // SQLite's memory accounting asks the allocator each block's size, which is slow under ASan.
  sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
  osh::gateway::SetMinimumLogLevel(osh::gateway::LogLevel::kError);  // refusals are expected; keep the output to libFuzzer's
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (!gateway || ++inputs % kResetEvery == 0) {
    gateway.reset();
    gateway = std::make_unique<Gateway>();
  }
  size_t at = 0;
  while (at + 3 <= size) {
    const std::string method = std::string("/openshell.policy.gateway.v1.PolicyGateway/") + kMethods[data[at] % kMethodCount];
    const size_t length = std::min<size_t>(data[at + 1] | (data[at + 2] << 8), size - at - 3);
    const std::string request(reinterpret_cast<const char*>(data + at + 3), length);
    at += 3 + length;

    std::string response;
    const absl::Status status = gateway->admin->Dispatch(method, request, &response);
    Check(status.code() != absl::StatusCode::kInternal && status.code() != absl::StatusCode::kUnknown &&
          status.code() != absl::StatusCode::kDataLoss);
    Check(status.ok() || !status.message().empty());
    if (!status.ok()) continue;
    if (method.ends_with("/AdmitSandbox")) {
      v1::AdmitSandboxResponse admitted;
      Check(admitted.ParseFromString(response));
      Check(gateway->Has(admitted.sandbox_id()));
      Check(admitted.policy_digest().size() == 64);
    } else if (method.ends_with("/DeleteSandbox")) {
      v1::DeleteSandboxRequest deleted;
      Check(deleted.ParseFromString(request));
      Check(!gateway->Has(deleted.sandbox_id()));
    }
  }
  gateway->CheckChain();
  return 0;
}
