// The crash-safe driver-handle protocol in process (gateway/driver_handles): a real store, and an
// in-process driver that counts what it is asked and can be made unreachable on purpose.
#include <catch2/catch.hpp>

#include "gateway/driver_handles.h"
#include "store/sqlite_store.h"
#include "tests/test_support.h"

namespace drv = openshell::policy::driver::v1;

namespace {

// Hands out a new handle per AcquireHandle (as SPEC allows) and remembers which are live.
class CountingDriver final : public osh::drivers::PolicyDriver {
 public:
  std::string kind() const override { return "counting"; }
  absl::StatusOr<drv::Capabilities> GetCapabilities() override { return drv::Capabilities(); }
  absl::StatusOr<std::string> AcquireHandle(const drv::RuntimeContext& context) override {
    if (!reachable) return absl::UnavailableError("driver down");
    const std::string handle = "h" + std::to_string(++acquired) + ":" + context.sandbox_id();
    live.insert(handle);
    return handle;
  }
  absl::StatusOr<drv::GetProjectionResponse> GetProjection(const std::string&, const std::string&) override {
    return absl::UnimplementedError("not used here");
  }
  absl::Status ReleaseHandle(const std::string& handle) override {
    if (!reachable) return absl::UnavailableError("driver down");
    ++released;
    live.erase(handle);
    return absl::OkStatus();
  }
  bool available() const override { return reachable; }

  bool reachable = true;
  int acquired = 0, released = 0;
  std::set<std::string> live;
};

struct Fixture {
  osh::test::TempDir dir;
  std::unique_ptr<osh::store::SqliteStore> store = *osh::store::SqliteStore::Open(dir / "gateway.db");
  CountingDriver driver;
  osh::gateway::SandboxRegistry registry;
  osh::gateway::AdmissionSlots slots;
  osh::gateway::DriverHandles handles{store.get(), &driver, &registry, &slots};
};

}  // namespace

TEST_CASE("driver handles: a refused admission's handle is released at once, or queued and delivered once",
          "[handles]") {
  Fixture f;
  auto acquired = f.handles.Acquire(osh::test::ContextFor("sb-1"));
  REQUIRE(acquired.ok());
  CHECK(acquired->intent != 0);
  f.handles.Release(*acquired);
  CHECK(f.driver.live.empty());
  CHECK(f.store->PendingReleases()->empty());

  acquired = f.handles.Acquire(osh::test::ContextFor("sb-2"));
  REQUIRE(acquired.ok());
  f.driver.reachable = false;
  f.handles.Release(*acquired);  // cannot be delivered now: queued with its handle
  REQUIRE(f.store->PendingReleases()->size() == 1);
  f.handles.DeliverQueued();     // still down: kept
  CHECK(f.store->PendingReleases()->size() == 1);
  f.driver.reachable = true;
  f.handles.DeliverQueued();
  f.handles.DeliverQueued();     // nothing left: delivered exactly once
  CHECK(f.driver.released == 2);
  CHECK(f.driver.live.empty());
  CHECK(f.store->PendingReleases()->empty());
}

TEST_CASE("driver handles: a driver unreachable at acquisition leaves a release by context, a refusal leaves none",
          "[handles]") {
  Fixture f;
  f.driver.reachable = false;
  auto lost = f.handles.Acquire(osh::test::ContextFor("sb-lost"));
  CHECK(absl::IsUnavailable(lost.status()));
  auto due = f.store->PendingReleases();
  REQUIRE(due->size() == 1);  // a handle may exist that we never heard of
  CHECK((*due)[0].driver_handle.empty());
  CHECK((*due)[0].context.sandbox_id() == "sb-lost");

  // Back: the release re-acquires by context and releases what comes back.
  f.driver.reachable = true;
  f.handles.DeliverQueued();
  CHECK(f.driver.acquired == 1);
  CHECK(f.driver.released == 1);
  CHECK(f.driver.live.empty());
  CHECK(f.store->PendingReleases()->empty());
}

TEST_CASE("driver handles: a release by context never touches a sandbox admitted since or being admitted",
          "[handles]") {
  Fixture f;
  f.driver.reachable = false;
  REQUIRE_FALSE(f.handles.Acquire(osh::test::ContextFor("sb-busy")).ok());
  REQUIRE_FALSE(f.handles.Acquire(osh::test::ContextFor("sb-admitted")).ok());
  f.driver.reachable = true;
  f.store->SetChangeListener(&f.registry);
  // sb-admitted was admitted since (its live handle must stay); sb-busy is being admitted right now.
  auto live = f.handles.Acquire(osh::test::ContextFor("sb-admitted"));
  REQUIRE(live.ok());
  osh::store::SandboxRecord record;
  record.context = osh::test::ContextFor("sb-admitted");
  record.handle_sha256 = std::string(32, 'a');
  record.driver_handle = live->handle;
  record.acquisition_id = live->intent;
  drv::Projection p;
  p.set_body("b");
  record.envelope = f.store->envelopes().Intern(p);
  osh::trust::AuditEvent event;
  event.type = "admission";
  REQUIRE(f.store->InsertSandbox(record, event).ok());
  {
    const auto busy = f.slots.Take("sb-busy");
    REQUIRE(busy.taken());
    CHECK_FALSE(f.slots.Take("sb-busy").taken());  // one at a time per id
    f.handles.DeliverQueued();
  }
  CHECK(f.driver.live.count(live->handle) == 1);  // the admitted sandbox's handle stays
  auto due = f.store->PendingReleases();
  REQUIRE(due->size() == 1);                      // sb-busy's waits for its admission to end
  CHECK((*due)[0].context.sandbox_id() == "sb-busy");
  f.handles.DeliverQueued();                      // slot free now: released by context
  CHECK(f.store->PendingReleases()->empty());
  CHECK(f.driver.live == std::set<std::string>{live->handle});
  f.store->SetChangeListener(nullptr);
}
