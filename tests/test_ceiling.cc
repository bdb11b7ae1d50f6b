// Signed ceilings, as the trust library checks them: the same keys, threshold, windows and revocation
// as projections, over bytes of their own (a projection's signature never verifies as a ceiling's).
#include <catch2/catch.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_replace.h"
#include "policy/policy_file.h"
#include "tests/test_support.h"
#include "trust/ceiling.h"
#include "trust/encoding.h"

using osh::trust::CeilingCheckInput;
using osh::trust::CheckCeiling;
using osh::trust::PrivateKey;
using osh::trust::TrustStore;

namespace {

PrivateKey Key(const char* algorithm = "ed25519") {
  auto key = PrivateKey::Generate(algorithm);
  REQUIRE(key.ok());
  return *std::move(key);
}

TrustStore TrustStoreOf(const std::string& json) {
  auto store = TrustStore::Parse(json);
  INFO(store.status().ToString());
  REQUIRE(store.ok());
  return *std::move(store);
}

}  // namespace

TEST_CASE("ceiling: signed, co-signed for k-of-n, and each refusal in order", "[trust][ceiling]") {
  const PrivateKey a = Key(), b = Key("ecdsa-p256"), stranger = Key();
  const auto policy = osh::policy::RestrictiveDefaultPolicy();
  auto ceiling = osh::trust::MakeCeiling(policy, "corp-max", 3, "review 42", 1'800'000'000);
  CHECK(ceiling.policy_digest().size() == 64);

  const TrustStore one = TrustStoreOf(osh::test::TrustStoreJson({{"a", a.PublicKeyPem()}, {"b", b.PublicKeyPem()}}));
  const TrustStore two = TrustStoreOf(osh::test::TrustStoreJson({{"a", a.PublicKeyPem()}, {"b", b.PublicKeyPem()}}, 2));
  CeilingCheckInput input;
  input.trust_store = &one;
  input.now_unix = 1'800'000'000;

  CHECK(CheckCeiling(ceiling, input).reason == "unsigned");
  REQUIRE(osh::trust::SignCeiling(&ceiling, a, "a").ok());
  auto ok = CheckCeiling(ceiling, input);
  REQUIRE(ok.ok());
  CHECK(ok.verified_key_ids == std::vector<std::string>{"a"});
  REQUIRE(ok.policy != nullptr);
  CHECK(ok.policy->SerializeAsString() == policy.SerializeAsString());

  // 2-of-n: one signature is not enough; a co-signature by another key is.
  input.trust_store = &two;
  CHECK(CheckCeiling(ceiling, input).reason == "threshold_not_met");
  REQUIRE(osh::trust::SignCeiling(&ceiling, b, "b").ok());
  CHECK(CheckCeiling(ceiling, input).ok());
  input.trust_store = &one;

  // Rollback: not above the version in force.
  input.in_force_version = 3;
  CHECK(CheckCeiling(ceiling, input).reason == "rollback");
  input.in_force_version = 2;
  CHECK(CheckCeiling(ceiling, input).ok());
  input.in_force_version.reset();

  // Every signed field is covered: a changed label or version no longer verifies.
  auto relabelled = ceiling;
  relabelled.set_audit_label("review 43");
  relabelled.mutable_signatures()->DeleteSubrange(1, 1);
  CHECK(CheckCeiling(relabelled, input).reason == "bad_signature");
  auto bumped = ceiling;
  bumped.set_version(4);
  bumped.mutable_signatures()->DeleteSubrange(1, 1);
  CHECK(CheckCeiling(bumped, input).reason == "bad_signature");
  // The body is covered through the digest, which is recomputed.
  auto tampered = ceiling;
  tampered.set_body(tampered.body() + "x");
  CHECK(CheckCeiling(tampered, input).reason == "digest_mismatch");
  // Unknown and revoked keys.
  auto by_stranger = osh::trust::MakeCeiling(policy, "corp-max", 3, "", 0);
  REQUIRE(osh::trust::SignCeiling(&by_stranger, stranger, "nobody").ok());
  CHECK(CheckCeiling(by_stranger, input).reason == "unknown_key");
  const TrustStore revoked = TrustStoreOf(R"({"keys":[{"key_id":"a","public_key_pem":")" +
                                   absl::StrReplaceAll(a.PublicKeyPem(), {{"\n", "\\n"}}) +
                                   R"("}],"revoked_key_ids":["a"]})");
  input.trust_store = &revoked;
  auto only_a = ceiling;
  only_a.mutable_signatures()->DeleteSubrange(1, 1);
  CHECK(CheckCeiling(only_a, input).reason == "key_revoked");
  input.trust_store = nullptr;
  CHECK(CheckCeiling(only_a, input).reason == "unsigned");  // no trust store: nothing can verify it
  // Malformed.
  auto no_id = only_a;
  no_id.set_ceiling_id("");
  CHECK(CheckCeiling(no_id, input).reason == "invalid_ceiling");
}

TEST_CASE("ceiling: with an expected ceiling_id, a well-signed ceiling of another id is refused", "[trust][ceiling]") {
  const PrivateKey a = Key();
  const TrustStore one = TrustStoreOf(osh::test::TrustStoreJson({{"a", a.PublicKeyPem()}}));
  auto fleet_a = osh::trust::MakeCeiling(osh::policy::RestrictiveDefaultPolicy(), "fleet-a", 1, "", 0);
  auto fleet_b = osh::trust::MakeCeiling(osh::policy::RestrictiveDefaultPolicy(), "fleet-b", 2, "", 0);
  REQUIRE(osh::trust::SignCeiling(&fleet_a, a, "a").ok());
  REQUIRE(osh::trust::SignCeiling(&fleet_b, a, "a").ok());
  CeilingCheckInput input;
  input.trust_store = &one;
  input.now_unix = 1'800'000'000;
  CHECK(CheckCeiling(fleet_b, input).ok());  // no id expected: any
  input.expected_ceiling_id = "fleet-a";
  CHECK(CheckCeiling(fleet_a, input).ok());
  const auto refused = CheckCeiling(fleet_b, input);
  CHECK(refused.reason == "invalid_ceiling");
  CHECK_THAT(refused.detail, Catch::Contains("ceiling_id 'fleet-b' is not the one this gateway enforces ('fleet-a'"));
  // Compared exactly: no case folding, no prefix.
  auto upper = osh::trust::MakeCeiling(osh::policy::RestrictiveDefaultPolicy(), "Fleet-a", 3, "", 0);
  REQUIRE(osh::trust::SignCeiling(&upper, a, "a").ok());
  CHECK(CheckCeiling(upper, input).reason == "invalid_ceiling");
  auto longer = osh::trust::MakeCeiling(osh::policy::RestrictiveDefaultPolicy(), "fleet-a2", 3, "", 0);
  REQUIRE(osh::trust::SignCeiling(&longer, a, "a").ok());
  CHECK(CheckCeiling(longer, input).reason == "invalid_ceiling");
}

TEST_CASE("ceiling: a projection signature over the same digest does not verify as a ceiling", "[trust][ceiling]") {
  const PrivateKey a = Key();
  const TrustStore store = TrustStoreOf(osh::test::TrustStoreJson({{"a", a.PublicKeyPem()}}));
  auto ceiling = osh::trust::MakeCeiling(osh::policy::RestrictiveDefaultPolicy(), "corp", 1, "", 100);
  openshell::policy::driver::v1::Projection projection;
  projection.set_surface_id("openshell.sandbox.v1");
  projection.set_policy_digest(ceiling.policy_digest());
  projection.set_policy_version(1);
  projection.set_issued_at_unix(100);
  auto* replayed = ceiling.add_signatures();
  replayed->set_key_id("a");
  replayed->set_signature(*a.Sign(osh::trust::SignedBytes(projection)));
  CeilingCheckInput input;
  input.trust_store = &store;
  input.now_unix = 100;
  CHECK(CheckCeiling(ceiling, input).reason == "bad_signature");
  CHECK(absl::StartsWith(osh::trust::CeilingSignedBytes(ceiling), std::string("\0\0\0\x1b", 4) + "openshell.policy.ceiling.v1"));
}

TEST_CASE("ceiling: the file form round-trips and refuses what is not a ceiling", "[trust][ceiling]") {
  auto ceiling = osh::trust::MakeCeiling(osh::policy::RestrictiveDefaultPolicy(), "corp", 1, "label", 100);
  auto parsed = osh::trust::ParseCeilingJson(osh::trust::CeilingToJson(ceiling), "c.json");
  REQUIRE(parsed.ok());
  CHECK(parsed->SerializeAsString() == ceiling.SerializeAsString());
  auto bad = osh::trust::ParseCeilingJson(R"({"ceiling_id":"x","surprise":1})", "c.json");
  REQUIRE_FALSE(bad.ok());
  CHECK(absl::StartsWith(bad.status().message(), "c.json: not a ceiling file"));
}
