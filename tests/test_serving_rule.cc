// The serving rule (issue 26, step 1): one answer to "may this sandbox be served?", asked by fetches,
// watches and egress decisions alike. An egress decision about a sandbox whose projection is unverified
// (a rewritten row found after a restart), revoked (key revoked + trust-store reload), expired or
// quarantined is refused with the same reason a fetch of it gets — it was answered before.
#include <catch2/catch.hpp>

#include <memory>

#include "gateway/core/egress_decisions.h"
#include "gateway/core/sandbox_registry.h"
#include "store/open_store.h"
#include "policy/body_codec.h"
#include "policy/digest.h"
#include "policy/policy_file.h"
#include "tests/in_process_core.h"
#include "tests/test_support.h"
#include "trust/encoding.h"
#include "trust/keys.h"

namespace gw = openshell::policy::gateway::v1;
namespace drv = openshell::policy::driver::v1;

using osh::test::InProcessCore;

namespace {

constexpr int64_t kServingStart = InProcessCore::kStart;

gw::EvaluateEgressRequest AskAbout(const std::string& sandbox_id) {
  gw::EvaluateEgressRequest request;
  request.set_sandbox_id(sandbox_id);
  request.set_host("api.example.com");
  request.set_port(443);
  request.set_binary("/usr/bin/curl");
  return request;
}

// Commits `sandbox_id` with `projection` and `handle` straight to the store (the registry follows it), as
// an admission would after its checks: the rule is then judged on what is served.
void Commit(InProcessCore& t, const std::string& sandbox_id, const drv::Projection& projection,
            const std::string& handle) {
  osh::store::SandboxRecord record;
  record.context = osh::test::ContextFor(sandbox_id);
  record.handle_sha256 = osh::policy::Sha256(handle);
  record.driver_handle = "driver-" + sandbox_id;
  record.envelope = t.store->envelopes().Intern(projection);
  record.verification = osh::store::Verification::kNone;
  record.admitted_at_unix = record.updated_at_unix = t.clock.NowUnix();
  osh::store::ChangeBatch batch;
  batch.changes.push_back(osh::store::change::AdmitSandbox{record});
  REQUIRE(t.store->Commit(std::move(batch)).ok());
}

drv::Projection ProjectionOf(const openshell::sandbox::v1::SandboxPolicy& policy) {
  drv::Projection p;
  p.set_surface_id("openshell.sandbox.v1");
  p.set_body(osh::policy::SerializeDeterministic(policy));
  p.set_policy_digest(osh::policy::Sha256Hex(p.body()));
  p.set_policy_version(1);
  p.set_issued_at_unix(kServingStart);
  return p;
}

// A core whose builtin driver signs with "gateway-key", which the trust store at `trust_path` trusts, and
// the default scope's policy set (RestrictiveDefaultPolicy): admissions are verified.
struct SigningCore {
  osh::test::TempDir keys;
  osh::trust::PrivateKey key = *osh::trust::PrivateKey::Generate("ed25519");
  std::string trust_path = keys / "trust.json";
  std::unique_ptr<InProcessCore> core;

  SigningCore() {
    osh::test::WriteFile(trust_path, TrustJson(/*revoked=*/false));
    core = std::make_unique<InProcessCore>([this](osh::gateway::Config& config) { config.trust_store = trust_path; },
                                           osh::builtin_driver::SigningKey{key, "gateway-key"});
    gw::SetPolicyRequest set;
    set.set_scope("default");
    *set.mutable_policy() = osh::policy::RestrictiveDefaultPolicy();
    REQUIRE(core->core->SetPolicy(set).ok());
  }
  // The trust store's text: the key trusted, or listed as revoked.
  std::string TrustJson(bool revoked) const {
    std::string json = osh::test::TrustStoreJson({{"gateway-key", key.PublicKeyPem()}});
    if (revoked) json.insert(json.rfind('}'), ", \"revoked_key_ids\": [\"gateway-key\"]");
    return json;
  }
};

}  // namespace

TEST_CASE("serving rule: an expired projection is refused to egress decisions as to fetches", "[core][serving]") {
  InProcessCore t;
  drv::Projection p = ProjectionOf(osh::policy::RestrictiveDefaultPolicy());
  p.set_expires_at_unix(kServingStart + 600);
  Commit(t, "sb-exp", p, "osh_sb_handle-exp");
  osh::gateway::EgressDecisions decisions(&t.registry, &t.clock);
  REQUIRE(decisions.Evaluate(AskAbout("sb-exp")).ok());  // served: answered
  REQUIRE(t.registry.Serve("osh_sb_handle-exp", t.clock.NowUnix()).ok());

  t.clock.AdvanceSeconds(600 + t.config.clock_skew_s);
  const auto fetched = t.registry.Serve("osh_sb_handle-exp", t.clock.NowUnix());
  const auto decided = decisions.Evaluate(AskAbout("sb-exp"));
  REQUIRE_FALSE(fetched.ok());
  REQUIRE_FALSE(decided.ok());
  CHECK(absl::IsFailedPrecondition(decided.status()));
  CHECK_THAT(std::string(decided.status().message()), Catch::StartsWith("expired: "));
  CHECK(decided.status() == fetched.status());
}

TEST_CASE("serving rule: an unverified sandbox whose stored envelope fails re-verification is never answered for",
          "[core][serving]") {
  InProcessCore t;
  // A stored envelope whose body is not the one its digest names (a rewritten row).
  drv::Projection p = ProjectionOf(osh::policy::RestrictiveDefaultPolicy());
  p.set_policy_digest(std::string(64, 'a'));
  Commit(t, "sb-bad", p, "osh_sb_handle-bad");
  drv::Projection good = ProjectionOf(osh::policy::RestrictiveDefaultPolicy());
  Commit(t, "sb-good", good, "osh_sb_handle-good");
  // As after a restart: everything loaded from the store, unverified until checked.
  REQUIRE(t.core->LoadAdmitted().ok());
  osh::gateway::EgressDecisions decisions(&t.registry, &t.clock);

  // Refused with the check's reason, to fetches and egress decisions alike, and still listed: operators
  // see it and why (review 104: it was dropped from the registry, so list, drift and wait lost it, and its
  // handle was refused UNAUTHENTICATED, which ends a supervisor's watch for good).
  auto refused_alike = [&](const absl::Status& first, const absl::Status& second) {
    CHECK(absl::IsFailedPrecondition(first));
    CHECK_THAT(std::string(first.message()), Catch::StartsWith("digest_mismatch: "));
    CHECK(first == second);
  };
  SECTION("asked by egress first") {
    const auto decided = decisions.Evaluate(AskAbout("sb-bad"));
    REQUIRE_FALSE(decided.ok());
    refused_alike(decided.status(), t.registry.Serve("osh_sb_handle-bad", t.clock.NowUnix()).status());
  }
  SECTION("fetched first") {
    const auto fetched = t.registry.Serve("osh_sb_handle-bad", t.clock.NowUnix());
    REQUIRE_FALSE(fetched.ok());
    refused_alike(fetched.status(), decisions.Evaluate(AskAbout("sb-bad")).status());
  }
  SECTION("verified by the background pass first") {
    t.core->VerifyLoaded();
    const auto fetched = t.registry.Serve("osh_sb_handle-bad", t.clock.NowUnix());
    REQUIRE_FALSE(fetched.ok());
    refused_alike(fetched.status(), decisions.Evaluate(AskAbout("sb-bad")).status());
  }
  auto listed = t.core->GetSandbox("sb-bad", false);
  REQUIRE(listed.ok());
  CHECK(listed->drift_state() == "refresh_failed");
  CHECK_THAT(listed->drift_reason(), Catch::StartsWith("not served: digest_mismatch: "));
  // The re-verification failure is audited with its reason code; the good one is verified and served.
  auto events = t.store->ListAuditEvents(0, 100);
  REQUIRE(events.ok());
  bool audited = false;
  int audited_count = 0;
  for (const auto& e : *events) {
    const bool this_one = e.type == osh::trust::audit::Type::kReverificationFailed && e.sandbox_id == "sb-bad" &&
                          absl::StartsWith(e.reason, "digest_mismatch: ");
    audited = audited || this_one;
    audited_count += this_one ? 1 : 0;
  }
  CHECK(audited);
  CHECK(audited_count == 1);  // once: a marked envelope is not checked (nor audited) again at each ask
  CHECK(decisions.Evaluate(AskAbout("sb-good")).ok());
  CHECK(t.registry.Serve("osh_sb_handle-good", t.clock.NowUnix()).ok());
}

TEST_CASE("serving rule: a projection whose key was revoked by a trust-store reload is refused to egress decisions",
          "[core][serving]") {
  SigningCore signing;
  InProcessCore& t = *signing.core;
  auto admitted = t.core->Admit(osh::test::ContextFor("sb-1"));
  REQUIRE(admitted.ok());
  CHECK(admitted->verification() == "verified");
  osh::gateway::EgressDecisions decisions(&t.registry, &t.clock);
  REQUIRE(decisions.Evaluate(AskAbout("sb-1")).ok());

  // The key is revoked: the builtin driver still signs with it, so the refresh cannot replace the projection.
  osh::test::WriteFile(signing.trust_path, signing.TrustJson(/*revoked=*/true));
  auto reloaded = t.core->ReloadTrustStore();
  REQUIRE(reloaded.ok());
  CHECK(reloaded->sandboxes_refused() == 1);

  const auto fetched = t.registry.Serve(admitted->sandbox_handle(), t.clock.NowUnix());
  const auto decided = decisions.Evaluate(AskAbout("sb-1"));
  REQUIRE_FALSE(fetched.ok());
  REQUIRE_FALSE(decided.ok());
  CHECK_THAT(std::string(decided.status().message()), Catch::StartsWith("key_revoked: "));
  CHECK(decided.status() == fetched.status());
}

TEST_CASE("serving rule: an admission checked before a trust-store reload and committed after it is checked again "
          "under the reloaded store",
          "[core][serving][trust]") {
  SigningCore signing;
  InProcessCore& t = *signing.core;

  // The key is revoked, and the trust store reloaded, after the admission's projection was checked and
  // before it commits (the admission's own extra check runs in between): the reload's recheck cannot see
  // the sandbox yet, and the builtin driver still signs with the revoked key, so no refresh can save it.
  uint64_t refused_by_reload = 99;
  auto reload_meanwhile = [&](const openshell::sandbox::v1::SandboxPolicy&, std::vector<osh::store::AuditEvent>*) {
    osh::test::WriteFile(signing.trust_path, signing.TrustJson(/*revoked=*/true));
    auto reloaded = t.core->ReloadTrustStore();
    REQUIRE(reloaded.ok());
    refused_by_reload = reloaded->sandboxes_refused();
    return osh::trust::CheckResult{};
  };
  auto admitted = t.core->Admit(osh::test::ContextFor("sb-race"), reload_meanwhile);
  REQUIRE(admitted.ok());
  CHECK(refused_by_reload == 0);  // the reload's recheck ran before the sandbox was there

  // Not served: as any sandbox whose key a reload revoked.
  const auto fetched = t.registry.Serve(admitted->sandbox_handle(), t.clock.NowUnix());
  REQUIRE_FALSE(fetched.ok());
  CHECK_THAT(std::string(fetched.status().message()), Catch::StartsWith("key_revoked: "));
  osh::gateway::EgressDecisions decisions(&t.registry, &t.clock);
  CHECK(decisions.Evaluate(AskAbout("sb-race")).status() == fetched.status());
  CHECK(t.core->gate().revoked_sandboxes() == 1);
  // And recorded: the refresh refused with key_revoked, in the audit chain.
  auto events = t.store->ListAuditEvents(0, 100);
  REQUIRE(events.ok());
  bool audited = false;
  for (const auto& e : *events) {
    audited = audited || (e.type == osh::trust::audit::Type::kRefresh && e.sandbox_id == "sb-race" &&
                          e.outcome == osh::trust::audit::Outcome::kRefused && absl::StartsWith(e.reason, "key_revoked: "));
  }
  CHECK(audited);

  // A later reload that trusts the key again serves it (the set is the reload's again).
  osh::test::WriteFile(signing.trust_path, signing.TrustJson(/*revoked=*/false));
  auto trusted_again = t.core->ReloadTrustStore();
  REQUIRE(trusted_again.ok());
  CHECK(trusted_again->sandboxes_refused() == 0);
  CHECK(t.registry.Serve(admitted->sandbox_handle(), t.clock.NowUnix()).ok());
}

TEST_CASE("serving rule: the gate judges expiry exactly at expires_at plus the clock skew", "[core][serving][time]") {
  InProcessCore t;
  drv::Projection p;
  p.set_surface_id("openshell.sandbox.v1");
  p.set_body("b");
  p.set_issued_at_unix(kServingStart);
  p.set_expires_at_unix(kServingStart + 600);
  const auto envelope = t.store->envelopes().Intern(p);
  const int64_t last_served = kServingStart + 600 + t.config.clock_skew_s - 1;
  CHECK(t.core->gate().ServingError(*envelope, last_served).ok());
  const absl::Status expired = t.core->gate().ServingError(*envelope, last_served + 1);
  CHECK(absl::IsFailedPrecondition(expired));
  CHECK_THAT(std::string(expired.message()), Catch::StartsWith("expired: "));
}

namespace {
// Serving checks that, while a loaded sandbox is re-verified, let the store change under the fetch (the
// race of a deletion and re-admission during a lazy re-verification), then verify.
class ChangingWhileVerified final : public osh::gateway::ServingChecks {
 public:
  std::function<void()> meanwhile;
  int verified = 0;
  absl::Status VerifyLoaded(const std::string&, const std::string&, const osh::store::Envelope&,
                            osh::store::Verification, int64_t) override {
    ++verified;
    if (meanwhile) std::exchange(meanwhile, nullptr)();
    return absl::OkStatus();
  }
  absl::Status ServingError(const osh::store::Envelope&, int64_t) const override { return absl::OkStatus(); }
};

osh::store::SandboxRecord Loaded(osh::store::Database& store, const std::string& id, const std::string& handle) {
  osh::store::SandboxRecord r;
  r.context = osh::test::ContextFor(id);
  r.handle_sha256 = osh::policy::Sha256(handle);
  r.driver_handle = "driver-" + handle;
  openshell::sandbox::v1::SandboxPolicy policy;
  policy.set_version(1);
  r.envelope = store.sandboxes().envelopes().Intern(ProjectionOf(policy));  // equal bodies: one interned envelope
  r.admitted_at_unix = r.updated_at_unix = kServingStart;
  return r;
}
}  // namespace

TEST_CASE("serving rule: a sandbox re-admitted while its loaded copy is re-verified is not served to the old handle",
          "[core][serving]") {
  osh::test::TempDir dir;
  auto opened = osh::store::OpenStore("sqlite:" + (dir / "gateway.db"));
  REQUIRE(opened.ok());
  osh::store::Database& store = **opened;
  REQUIRE(store.sandboxes().InsertSandbox(Loaded(store, "sb-1", "old-handle"), osh::test::StoredEvent("admission")).ok());

  osh::gateway::SandboxRegistry registry;  // as after a restart: loaded, unverified
  registry.Reset(*store.sandboxes().LoadSandboxes());
  store.sandboxes().SetChangeListener(&registry);
  ChangingWhileVerified checks;
  registry.SetServingChecks(&checks);

  SECTION("by the old handle: refused, nothing of the new admission handed out") {
    checks.meanwhile = [&] {
      REQUIRE(*store.sandboxes().DeleteSandbox("sb-1", osh::test::StoredEvent("deletion")));
      REQUIRE(store.sandboxes().InsertSandbox(Loaded(store, "sb-1", "new-handle"), osh::test::StoredEvent("admission")).ok());
    };
    auto served = registry.Serve("old-handle", kServingStart);
    CHECK(checks.verified == 1);
    CHECK(absl::IsUnauthenticated(served.status()));
    auto now = registry.Serve("new-handle", kServingStart);
    REQUIRE(now.ok());
    CHECK((*now)->driver_handle == "driver-new-handle");
  }
  SECTION("by id: what is admitted now is served, not the copy that was verified") {
    checks.meanwhile = [&] {
      REQUIRE(*store.sandboxes().DeleteSandbox("sb-1", osh::test::StoredEvent("deletion")));
      REQUIRE(store.sandboxes().InsertSandbox(Loaded(store, "sb-1", "new-handle"), osh::test::StoredEvent("admission")).ok());
    };
    auto served = registry.Lookup("sb-1", kServingStart);
    REQUIRE(served.ok());
    CHECK((*served)->driver_handle == "driver-new-handle");
    CHECK((*served)->verified);
  }
  SECTION("deleted meanwhile: refused by handle and by id") {
    checks.meanwhile = [&] { REQUIRE(*store.sandboxes().DeleteSandbox("sb-1", osh::test::StoredEvent("deletion"))); };
    CHECK(absl::IsUnauthenticated(registry.Serve("old-handle", kServingStart).status()));
    CHECK(absl::IsNotFound(registry.Lookup("sb-1", kServingStart).status()));
  }
  SECTION("nothing changed: verified once, then served as it is") {
    auto served = registry.Serve("old-handle", kServingStart);
    REQUIRE(served.ok());
    CHECK((*served)->verified);
    CHECK(registry.Serve("old-handle", kServingStart).value() == *served);  // published verified: not again
    CHECK(checks.verified == 1);
  }
  store.sandboxes().SetChangeListener(nullptr);
}

namespace {

class RecordingWatcher final : public osh::gateway::ProjectionWatcher {
 public:
  void OnProjection(osh::gateway::ProjectionPtr projection) override { received.push_back(std::move(projection)); }
  void OnClosed(bool) override { closed = true; }
  void OnRefused(const absl::Status& why) override { refused = why; }
  std::vector<osh::gateway::ProjectionPtr> received;
  bool closed = false;
  absl::Status refused;
};

}  // namespace

TEST_CASE("serving rule: another replica's record this one verifies only later reaches its watchers then",
          "[core][serving]") {
  // Review 105: a record published unverified (this replica's trust store behind) never reached the
  // watchers once verified. (A watch opening meanwhile is refused UNAVAILABLE rather than handed it
  // unchecked: a race between Serve and the registration, not reproduced here.)
  osh::test::TempDir dir;
  auto opened = osh::store::OpenStore("sqlite:" + (dir / "gateway.db"));
  REQUIRE(opened.ok());
  osh::store::Database& store = **opened;
  REQUIRE(store.sandboxes().InsertSandbox(Loaded(store, "sb-1", "handle-1"), osh::test::StoredEvent("admission")).ok());
  osh::gateway::SandboxRegistry registry;
  registry.Reset(*store.sandboxes().LoadSandboxes());
  ChangingWhileVerified checks;
  registry.SetServingChecks(&checks);
  RecordingWatcher watcher;
  REQUIRE(registry.Watch("handle-1", &watcher, kServingStart).ok());

  // Another replica moved sb-1 to a projection this one cannot verify yet.
  osh::store::SandboxRecord moved = Loaded(store, "sb-1", "handle-1");
  openshell::sandbox::v1::SandboxPolicy tighter;
  tighter.set_version(1);
  tighter.mutable_filesystem()->add_read_only("/usr");
  moved.envelope = store.sandboxes().envelopes().Intern(ProjectionOf(tighter));
  const osh::store::EnvelopePtr next = moved.envelope;
  registry.ApplyRemote({moved}, {false}, {});
  CHECK(watcher.received.empty());  // not streamed unchecked

  // Verified now (the background pass after a reload; a fetch does the same through Serve): sent to it.
  CHECK(registry.MarkVerified("sb-1", next));
  REQUIRE(watcher.received.size() == 1);
  CHECK(watcher.received[0]->policy_digest() == next->policy_digest());
  CHECK(registry.MarkVerified("sb-1", next));  // once: verified already, nothing sent again
  CHECK(watcher.received.size() == 1);
  registry.Unwatch("sb-1", &watcher);
}

TEST_CASE("serving rule: a trust-store reload verifies another replica's record this one could not, and its watchers "
          "get it",
          "[core][serving][trust]") {
  // Review 115: a record another replica published under a key this replica learns only with a reload
  // waited for a fetch or a restart to be verified: its watchers stayed on the older policy.
  SigningCore signing;
  InProcessCore& t = *signing.core;
  auto admitted = t.core->Admit(osh::test::ContextFor("sb-1"));
  REQUIRE(admitted.ok());
  RecordingWatcher watcher;
  REQUIRE(t.registry.Watch(admitted->sandbox_handle(), &watcher, t.clock.NowUnix()).ok());

  osh::trust::PrivateKey other = *osh::trust::PrivateKey::Generate("ed25519");
  openshell::sandbox::v1::SandboxPolicy tighter = osh::policy::RestrictiveDefaultPolicy();
  tighter.mutable_filesystem()->add_read_only("/opt/tighter");
  drv::Projection p = ProjectionOf(tighter);
  p.set_policy_version(2);
  p.set_signing_key_id("other-key");
  auto signature = other.Sign(osh::trust::SignedBytes(p));
  REQUIRE(signature.ok());
  p.set_signature(*signature);
  auto snapshot = t.registry.Get("sb-1");
  REQUIRE(snapshot.has_value());
  osh::store::SandboxRecord moved = snapshot->record;
  moved.envelope = t.store->envelopes().Intern(p);
  moved.verification = osh::store::Verification::kVerified;
  moved.updated_at_unix = t.clock.NowUnix();
  t.registry.ApplyRemote({moved}, {false}, {});
  CHECK(watcher.received.empty());  // not streamed unchecked

  std::string json = osh::test::TrustStoreJson({{"gateway-key", signing.key.PublicKeyPem()}, {"other-key", other.PublicKeyPem()}});
  osh::test::WriteFile(signing.trust_path, json);
  REQUIRE(t.core->ReloadTrustStore().ok());
  REQUIRE(watcher.received.size() == 1);
  CHECK(watcher.received[0]->policy_digest() == p.policy_digest());
  t.registry.Unwatch("sb-1", &watcher);
}
