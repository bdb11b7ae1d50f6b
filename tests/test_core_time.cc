// The core in process on simulated time (a FakeClock injected into the store, the builtin driver and
// the core): record times come from the one clock, expiry refuses serving exactly when the clock passes
// it, and refresh scheduling is due exactly at its interval — no sleeping.
#include <catch2/catch.hpp>

#include "gateway/core/gateway_core.h"
#include "gateway/core/refresh_scheduler.h"
#include "policy/policy_file.h"
#include "tests/in_process_core.h"
#include "tests/test_support.h"

namespace gw = openshell::policy::gateway::v1;
namespace drv = openshell::policy::driver::v1;

using osh::test::InProcessCore;

namespace {

constexpr int64_t kStart = InProcessCore::kStart;

}  // namespace

TEST_CASE("core on simulated time: revisions, admissions and audit events carry the injected clock's time",
          "[core][time]") {
  InProcessCore t;
  gw::SetPolicyRequest set;
  set.set_scope("default");
  *set.mutable_policy() = osh::policy::RestrictiveDefaultPolicy();
  auto revision = t.core->SetPolicy(set);
  REQUIRE(revision.ok());
  CHECK(revision->created_at_unix() == kStart);

  t.clock.AdvanceSeconds(90);
  auto admitted = t.core->Admit(osh::test::ContextFor("sb-1"));
  REQUIRE(admitted.ok());
  auto info = t.core->GetSandbox("sb-1");
  REQUIRE(info.ok());
  CHECK(info->admitted_at_unix() == kStart + 90);

  t.clock.AdvanceSeconds(10);
  gw::ReportPolicyStatusRequest report;
  report.set_policy_digest(admitted->policy_digest());
  report.set_status(gw::LOADED);
  REQUIRE(t.core->Report("sb-1", report).ok());
  CHECK(t.core->GetSandbox("sb-1")->reported_at_unix() == kStart + 100);

  auto events = t.store->ListAuditEvents(0, 100);
  REQUIRE(events.ok());
  REQUIRE(events->size() == 3);  // mutation, admission, report
  CHECK((*events)[0].time_unix_ms == kStart * 1000);
  CHECK((*events)[1].time_unix_ms == (kStart + 90) * 1000);
  CHECK((*events)[2].time_unix_ms == (kStart + 100) * 1000);
}

TEST_CASE("core on simulated time: refresh is due exactly at its interval and ahead of expiry", "[core][time]") {
  InProcessCore t;
  gw::SetPolicyRequest set;
  set.set_scope("default");
  *set.mutable_policy() = osh::policy::RestrictiveDefaultPolicy();
  REQUIRE(t.core->SetPolicy(set).ok());
  REQUIRE(t.core->Admit(osh::test::ContextFor("sb-1")).ok());  // updated at kStart
  const int64_t interval = 300;
  auto due = [&](int64_t at) { return t.registry.TakeDueForRefresh(at, interval, &osh::gateway::RefreshLeadSeconds); };
  CHECK(due(kStart + interval - 1).empty());
  CHECK(due(kStart + interval) == std::vector<std::string>{"sb-1"});
  CHECK(due(kStart + interval).empty());  // attempted now: not again in the same second
  CHECK(due(kStart + 2 * interval) == std::vector<std::string>{"sb-1"});
  // With refresh off and nothing that expires, nothing is ever due (and nothing is walked).
  CHECK(t.registry.TakeDueForRefresh(kStart + 10 * interval, 0, &osh::gateway::RefreshLeadSeconds).empty());
  // A quarter of a projection's lifetime ahead of its expiry, at most 5 minutes.
  CHECK(osh::gateway::RefreshLeadSeconds(kStart, kStart + 400) == 100);
  CHECK(osh::gateway::RefreshLeadSeconds(kStart, kStart + 3600) == 300);
  CHECK(osh::gateway::RefreshLeadSeconds(0, kStart) == 30);  // no issue time: 30 s
}

TEST_CASE("core in process: a scope's change moves exactly the sandboxes it applies to, with one audit event",
          "[core][reprojection]") {
  InProcessCore t;
  gw::SetPolicyRequest set;
  set.set_scope("default");
  *set.mutable_policy() = osh::policy::RestrictiveDefaultPolicy();
  REQUIRE(t.core->SetPolicy(set).ok());
  auto in_tenant = osh::test::ContextFor("sb-t");
  (*in_tenant.mutable_attributes())["tenant_id"] = "acme";
  for (const auto& context : {osh::test::ContextFor("sb-1"), osh::test::ContextFor("sb-2"), in_tenant}) {
    REQUIRE(t.core->Admit(context).ok());
  }
  auto events_before = t.store->ListAuditEvents(0, 1000)->size();

  // A tenant policy: only the tenant's sandbox moves.
  set.set_scope("tenant:acme");
  set.mutable_policy()->mutable_filesystem()->add_read_only("/opt/acme");
  auto tenant = t.core->SetPolicy(set);
  REQUIRE(tenant.ok());
  CHECK(tenant->sandboxes_updated() == 1);
  CHECK(t.core->GetSandbox("sb-t")->policy_digest() == tenant->policy_digest());
  const std::string default_digest = t.core->GetSandbox("sb-1")->policy_digest();
  CHECK(default_digest != tenant->policy_digest());

  // The default changes: the two default sandboxes move; the tenant one keeps its more specific policy
  // but is re-projected too (policy_version counts every scope it reads).
  set.set_scope("default");
  set.mutable_policy()->mutable_filesystem()->add_read_only("/opt/new-default");
  auto changed = t.core->SetPolicy(set);
  REQUIRE(changed.ok());
  CHECK(changed->sandboxes_updated() == 3);
  CHECK(t.core->GetSandbox("sb-1")->policy_digest() == changed->policy_digest());
  CHECK(t.core->GetSandbox("sb-2")->policy_digest() == changed->policy_digest());
  CHECK(t.core->GetSandbox("sb-t")->policy_digest() == tenant->policy_digest());
  CHECK(t.core->GetSandbox("sb-t")->policy_version() == t.core->GetSandbox("sb-1")->policy_version());

  // Each change wrote its mutation event and one re-projection summary, not one event per sandbox.
  auto events = t.store->ListAuditEvents(0, 1000);
  REQUIRE(events->size() == events_before + 4);
  CHECK((*events)[events_before + 1].type == osh::trust::audit::Type::kReprojection);
  CHECK((*events)[events_before + 3].type == osh::trust::audit::Type::kReprojection);
  CHECK_THAT((*events)[events_before + 3].reason, Catch::Contains("scope default: "));
}

TEST_CASE("core: a report sent under an admission's handle never lands on a later admission of the same id",
          "[core][report]") {
  // Review 104: a report was authenticated, queued with the sandbox id alone, and recorded on whatever
  // admission held the id when it ran — after a delete and re-admission, the new one, in sync before its
  // own supervisor said anything.
  InProcessCore t;
  gw::SetPolicyRequest set;
  set.set_scope("default");
  *set.mutable_policy() = osh::policy::RestrictiveDefaultPolicy();
  REQUIRE(t.core->SetPolicy(set).ok());
  auto first = t.core->Admit(osh::test::ContextFor("sb-1"));
  REQUIRE(first.ok());
  const auto old_admission = t.registry.Authenticate(first->sandbox_handle());
  REQUIRE(old_admission != nullptr);

  REQUIRE(t.core->Delete("sb-1").ok());
  auto second = t.core->Admit(osh::test::ContextFor("sb-1"));
  REQUIRE(second.ok());
  REQUIRE(second->policy_digest() == first->policy_digest());

  gw::ReportPolicyStatusRequest report;
  report.set_policy_digest(first->policy_digest());
  report.set_status(gw::LOADED);
  CHECK(absl::IsUnauthenticated(t.core->Report("sb-1", report, &old_admission->handle_sha256)));
  CHECK(t.core->GetSandbox("sb-1")->load_status() != gw::LOADED);
  // The new admission's own report is recorded.
  const auto new_admission = t.registry.Authenticate(second->sandbox_handle());
  REQUIRE(new_admission != nullptr);
  CHECK(t.core->Report("sb-1", report, &new_admission->handle_sha256).ok());
  CHECK(t.core->GetSandbox("sb-1")->load_status() == gw::LOADED);
}
