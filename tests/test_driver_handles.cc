// The crash-safe driver-handle protocol in process (gateway/driver_handles): a real store, and an
// in-process driver that counts what it is asked and can be made unreachable on purpose.
#include <catch2/catch.hpp>

#include "gateway/core/driver_handles.h"
#include "store/audit_actor.h"
#include "store/sqlite_store.h"
#include "tests/test_support.h"

namespace drv = openshell::policy::driver::v1;

namespace {

// Hands out a new handle per AcquireHandle (as SPEC allows) and remembers which are live.
class CountingDriver final : public osh::drivers::PolicyDriver {
 public:
  std::string kind() const override { return "counting"; }
  absl::StatusOr<drv::Capabilities> GetCapabilities() override {
    drv::Capabilities caps;
    if (honour_keys) caps.add_features("idempotent_acquire");
    return caps;
  }
  absl::StatusOr<std::string> AcquireHandle(const drv::RuntimeContext& context, const std::string& key) override {
    if (!reachable) return absl::UnavailableError("driver down");
    if (honour_keys && !key.empty()) {
      if (auto it = by_key.find(key); it != by_key.end() && live.count(it->second)) return it->second;
    }
    if (per_context) {
      for (const auto& h : live) {
        if (h.ends_with(":" + context.sandbox_id())) return h;
      }
    }
    const std::string handle = "h" + std::to_string(++acquired) + ":" + context.sandbox_id();
    live.insert(handle);
    if (honour_keys && !key.empty()) by_key[key] = handle;
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
  bool honour_keys = true;
  bool per_context = false;  // one handle per context: acquiring again returns the live one
  int acquired = 0, released = 0;
  std::set<std::string> live;
  std::map<std::string, std::string> by_key;
};

struct Fixture {
  osh::test::TempDir dir;
  std::unique_ptr<osh::store::SqliteStore> store = *osh::store::SqliteStore::Open(dir / "gateway.db");
  CountingDriver driver;
  osh::gateway::SandboxRegistry registry;
  osh::gateway::AdmissionSlots slots;
  osh::gateway::DriverHandles handles{store.get(), &driver, &registry, &slots};

  // Stores `sandbox_id` as admitted with the handle `acquired` got (as the core does after its checks).
  void Admit(const std::string& sandbox_id, const osh::gateway::DriverHandles::Acquired& acquired) {
    osh::store::SandboxRecord record;
    record.context = osh::test::ContextFor(sandbox_id);
    record.handle_sha256 = std::string(32, 'a');
    record.driver_handle = acquired.handle;
    record.acquisition_id = acquired.intent;
    drv::Projection p;
    p.set_body("b");
    record.envelope = store->envelopes().Intern(p);
    osh::trust::AuditEvent event;
    event.type = osh::trust::audit::Type::kAdmission;
    REQUIRE(store->InsertSandbox(record, event).ok());
  }
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

TEST_CASE("driver handles: a queued release delivered on an admin's call is the gateway's, not that caller's",
          "[handles]") {
  // Review 114: a Delete delivered the whole queue on the caller's thread, and every release event — others'
  // queued earlier, crash recovery's — carried that caller's uid.
  Fixture f;
  auto acquired = f.handles.Acquire(osh::test::ContextFor("sb-1"));
  REQUIRE(acquired.ok());
  f.driver.reachable = false;
  {
    osh::store::AuditActorScope first("uid:1");
    f.handles.Release(*acquired);  // queued
  }
  REQUIRE(f.store->PendingReleases()->size() == 1);
  f.driver.reachable = true;
  {
    osh::store::AuditActorScope second("uid:2");
    f.handles.DeliverQueued(/*wait=*/true);
  }
  CHECK(f.store->PendingReleases()->empty());
  auto events = f.store->ListAuditEvents(0, 100);
  REQUIRE(events.ok());
  int releases = 0;
  for (const auto& event : *events) {
    if (event.type != osh::trust::audit::Type::kRelease) continue;
    ++releases;
    CHECK(event.actor.empty());
  }
  CHECK(releases == 1);
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
  f.Admit("sb-admitted", *live);
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

TEST_CASE("driver handles: a queued release of a named handle waits while the sandbox is being admitted again",
          "[handles]") {
  // Review 109: a sandbox deleted while the driver was down, admitted again as it came back. A driver with
  // one handle per context gave the new admission the same handle, and the queued release — checked only
  // against the admitted sandboxes — released it under the admission, which committed a dead handle.
  Fixture f;
  f.driver.per_context = true;
  f.store->SetChangeListener(&f.registry);
  auto old = f.handles.Acquire(osh::test::ContextFor("sb-1"));
  REQUIRE(old.ok());
  f.driver.reachable = false;
  f.handles.Release(*old);  // the deletion's release, queued with its handle
  REQUIRE(f.store->PendingReleases()->size() == 1);
  f.driver.reachable = true;
  {
    const auto admitting = f.slots.Take("sb-1");  // the new admission, under way
    REQUIRE(admitting.taken());
    auto again = f.handles.Acquire(osh::test::ContextFor("sb-1"));
    REQUIRE(again.ok());
    REQUIRE(again->handle == old->handle);  // the same handle, live again
    f.handles.DeliverQueued();
    CHECK(f.driver.live.count(again->handle) == 1);  // not released under the admission
    CHECK(f.store->PendingReleases()->size() == 1);  // waits for it to end
    f.Admit("sb-1", *again);
  }
  f.handles.DeliverQueued();  // the admission ended: the handle is the admitted sandbox's, the release dropped
  CHECK(f.driver.live.count(old->handle) == 1);
  CHECK(f.store->PendingReleases()->empty());
  f.store->SetChangeListener(nullptr);
}

TEST_CASE("driver handles: after a crash mid-admission, recovery releases exactly the handle the admission got",
          "[handles]") {
  // A driver that hands out a new handle on every AcquireHandle (as SPEC allows). The gateway "crashes"
  // after the driver answered and before the admission committed: its in-flight note becomes due when
  // the store is opened again.
  for (const bool honour : {true, false}) {
    DYNAMIC_SECTION((honour ? "a driver that honours idempotency keys" : "a driver that ignores them")) {
      osh::test::TempDir dir;
      CountingDriver driver;
      driver.honour_keys = honour;
      std::string crashed_handle;
      {
        auto store = *osh::store::SqliteStore::Open(dir / "gateway.db");
        osh::gateway::SandboxRegistry registry;
        osh::gateway::AdmissionSlots slots;
        osh::gateway::DriverHandles handles{store.get(), &driver, &registry, &slots};
        auto acquired = handles.Acquire(osh::test::ContextFor("sb-crash"));
        REQUIRE(acquired.ok());
        crashed_handle = acquired->handle;
      }  // crash: nothing settled the note
      auto store = *osh::store::SqliteStore::Open(dir / "gateway.db");
      auto due = store->PendingReleases();
      REQUIRE(due->size() == 1);
      CHECK((*due)[0].driver_handle.empty());
      CHECK_FALSE((*due)[0].idempotency_key.empty());
      osh::gateway::SandboxRegistry registry;
      osh::gateway::AdmissionSlots slots;
      osh::gateway::DriverHandles handles{store.get(), &driver, &registry, &slots};
      handles.DeliverQueued();
      CHECK(store->PendingReleases()->empty());
      if (honour) {
        CHECK(driver.live.empty());  // the very handle the crashed admission got was released
        CHECK(handles.possible_leaks() == 0);
      } else {
        CHECK(driver.live == std::set<std::string>{crashed_handle});  // unavoidable: counted and logged
        CHECK(handles.possible_leaks() == 1);
        auto events = store->ListAuditEvents(0, 0);
        REQUIRE_FALSE(events->empty());
        CHECK_THAT(events->back().reason, Catch::Contains("does not honour idempotency keys"));
      }
    }
  }
}

TEST_CASE("driver handles: every admission sends a fresh idempotency key", "[handles]") {
  std::set<std::string> keys;
  for (int i = 0; i < 1000; ++i) keys.insert(osh::gateway::NewIdempotencyKey());
  CHECK(keys.size() == 1000);
  CHECK(keys.begin()->size() == 36);  // "adm_" + 128 bits in hex
}

TEST_CASE("driver handles: a losing admission's handle that is the winner's stays live (issue 15 item 6)", "[handles]") {
  Fixture f;
  f.driver.per_context = true;  // as null-policy-driver without --handle-per-acquire
  f.store->SetChangeListener(&f.registry);
  auto winner = f.handles.Acquire(osh::test::ContextFor("sb-1"));
  REQUIRE(winner.ok());
  f.Admit("sb-1", *winner);

  // The loser of the race got the same handle (one per context) and is refused: releasing it would cut
  // the admitted sandbox off from its driver.
  auto loser = f.handles.Acquire(osh::test::ContextFor("sb-1"));
  REQUIRE(loser.ok());
  REQUIRE(loser->handle == winner->handle);
  f.handles.Release(*loser);
  CHECK(f.driver.released == 0);
  CHECK(f.driver.live.count(winner->handle) == 1);
  CHECK(f.store->PendingReleases()->empty());
  auto events = f.store->ListAuditEvents(0, 100);
  REQUIRE(events.ok());
  CHECK(events->back().reason == "driver handle of a refused admission kept: it is the admitted sandbox's");

  // The same when the release had to be queued (driver down at the time) and is delivered later.
  auto late = f.handles.Acquire(osh::test::ContextFor("sb-1"));
  REQUIRE(late.ok());
  f.driver.reachable = false;
  REQUIRE(f.store->QueueAcquiredRelease(late->intent, late->handle).ok());
  f.driver.reachable = true;
  f.handles.DeliverQueued();
  CHECK(f.driver.released == 0);
  CHECK(f.driver.live.count(winner->handle) == 1);
  CHECK(f.store->PendingReleases()->empty());
  f.store->SetChangeListener(nullptr);
}
