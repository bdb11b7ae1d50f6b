// The core in process when one step of an admission throws (bad_alloc, a bug in a check): the step's
// guard (GatewayCore::Step) answers the caller once with INTERNAL, commits nothing, frees the sandbox id
// for a retry, and the core goes on admitting.
#include <stdexcept>

#include <catch2/catch.hpp>

#include "gateway/core/gateway_core.h"
#include "policy/policy_file.h"
#include "tests/in_process_core.h"
#include "tests/test_support.h"

namespace gw = openshell::policy::gateway::v1;

using osh::test::InProcessCore;

TEST_CASE("core in process: an admission step that throws is answered INTERNAL, commits nothing and frees the id",
          "[core][faults]") {
  InProcessCore t;
  gw::SetPolicyRequest set;
  set.set_scope("default");
  *set.mutable_policy() = osh::policy::RestrictiveDefaultPolicy();
  REQUIRE(t.core->SetPolicy(set).ok());
  auto events_before = t.store->ListAuditEvents(0, 1000);
  REQUIRE(events_before.ok());

  // The interceptor's admit-mode check runs inside the step that checks the driver's answer: after the
  // driver handle is acquired, before anything is committed.
  int asked = 0;
  auto throwing = [&](const openshell::sandbox::v1::SandboxPolicy&, std::vector<osh::store::AuditEvent>*)
      -> osh::trust::CheckResult {
    ++asked;
    throw std::runtime_error("injected fault");
  };
  auto failed = t.core->Admit(osh::test::ContextFor("sb-throw"), throwing);
  REQUIRE_FALSE(failed.ok());
  CHECK(absl::IsInternal(failed.status()));
  CHECK(failed.status().message() == "AdmitSandbox: injected fault");
  CHECK(asked == 1);
  CHECK_FALSE(t.registry.Contains("sb-throw"));
  CHECK_FALSE(t.core->GetSandbox("sb-throw").ok());
  auto events = t.store->ListAuditEvents(0, 1000);
  REQUIRE(events.ok());
  CHECK(events->size() == events_before->size());  // no admission recorded (the builtin driver keeps no handle)

  // The id is free again (no "admission in progress"), and the same context is admitted.
  auto retried = t.core->Admit(osh::test::ContextFor("sb-throw"));
  REQUIRE(retried.ok());
  CHECK(t.registry.Contains("sb-throw"));
  // And the core goes on admitting others with a check that answers.
  auto allowing = [](const openshell::sandbox::v1::SandboxPolicy&, std::vector<osh::store::AuditEvent>*) {
    return osh::trust::CheckResult{};
  };
  REQUIRE(t.core->Admit(osh::test::ContextFor("sb-next"), allowing).ok());
  events = t.store->ListAuditEvents(0, 1000);
  REQUIRE(events.ok());
  int admissions = 0;
  for (const auto& e : *events) admissions += e.type == osh::trust::audit::Type::kAdmission ? 1 : 0;
  CHECK(admissions == 2);
}
