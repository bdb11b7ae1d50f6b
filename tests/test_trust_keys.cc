// Fresh keys of both algorithms, signed and checked through the same path the gateway uses.
#include <catch2/catch.hpp>

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

#include "policy/body_codec.h"
#include "policy/digest.h"
#include "policy/policy_file.h"
#include "tests/test_support.h"
#include "trust/encoding.h"
#include "trust/keys.h"
#include "trust/projection_check.h"
#include "trust/trust_store.h"
#include "trust/validated_body_cache.h"
#include "trust/verified_signatures.h"

namespace {

using openshell::policy::driver::v1::Projection;
using openshell::policy::driver::v1::RuntimeContext;

Projection Unsigned(const RuntimeContext& context) {
  Projection p;
  p.set_surface_id("openshell.sandbox.v1");
  p.set_body(osh::policy::SerializeDeterministic(osh::policy::RestrictiveDefaultPolicy()));
  p.set_policy_digest(osh::policy::Sha256Hex(p.body()));
  p.set_policy_version(7);
  p.set_context_digest(osh::trust::ContextDigest(context));
  p.set_issued_at_unix(1'800'000'000);
  return p;
}

const std::vector<std::string> kSurfaces = {"openshell.sandbox.v1"};

// A check of `context`'s projection under `store` at the tests' "now" (1,800,000,100); both must outlive it.
osh::trust::CheckInput InputFor(const RuntimeContext& context, const osh::trust::TrustStore& store) {
  osh::trust::CheckInput input;
  input.context = &context;
  input.accepted_surfaces = &kSurfaces;
  input.trust_store = &store;
  input.now_unix = 1'800'000'100;
  return input;
}

// `text` as a JSON string, quoted and escaped by protobuf's JSON printer.
std::string JsonString(const std::string& text) {
  google::protobuf::Value value;
  value.set_string_value(text);
  std::string json;
  REQUIRE(google::protobuf::util::MessageToJsonString(value, &json).ok());
  return json;
}

}  // namespace

TEST_CASE("fresh keys: sign and verify round trip for both algorithms", "[trust][keys]") {
  const std::string algorithm = GENERATE(std::string("ed25519"), std::string("ecdsa-p256"));
  INFO(algorithm);
  auto key = osh::trust::PrivateKey::Generate(algorithm);
  REQUIRE(key.ok());
  // The private key survives a PEM round trip and keeps its algorithm.
  auto reloaded = osh::trust::PrivateKey::FromPem(key->ToPem());
  REQUIRE(reloaded.ok());
  CHECK(reloaded->algorithm() == key->algorithm());

  RuntimeContext context;
  context.set_sandbox_id("sb-fresh");
  context.set_user_subject("alice@example.com");
  (*context.mutable_attributes())["tenant_id"] = "acme";
  Projection p = Unsigned(context);
  auto signature = reloaded->Sign(osh::trust::SignedBytes(p));
  REQUIRE(signature.ok());
  p.set_signature(*signature);
  p.set_signing_key_id("fresh");

  auto store = osh::trust::TrustStore::Parse(osh::test::TrustStoreJson({{"fresh", key->PublicKeyPem()}}));
  REQUIRE(store.ok());
  osh::trust::CheckInput input = InputFor(context, *store);
  auto result = osh::trust::CheckProjection(p, input);
  INFO(result.Message());
  REQUIRE(result.ok());
  CHECK(result.verified_key_ids == std::vector<std::string>{"fresh"});

  SECTION("any changed signed field breaks the signature") {
    Projection tampered = p;
    tampered.set_policy_version(8);
    CHECK(osh::trust::CheckProjection(tampered, input).reason == "bad_signature");
    tampered = p;
    (*tampered.mutable_audit_context())["who"] = "mallory";
    CHECK(osh::trust::CheckProjection(tampered, input).reason == "bad_signature");
    tampered = p;
    tampered.set_expires_at_unix(1'900'000'000);
    CHECK(osh::trust::CheckProjection(tampered, input).reason == "bad_signature");
  }
  SECTION("another sandbox's context is refused") {
    RuntimeContext other = context;
    other.set_sandbox_id("sb-other");
    input.context = &other;
    CHECK(osh::trust::CheckProjection(p, input).reason == "context_mismatch");
  }
  SECTION("a second key of the other algorithm counts towards a threshold of two") {
    auto second = osh::trust::PrivateKey::Generate(algorithm == "ed25519" ? "ecdsa-p256" : "ed25519");
    REQUIRE(second.ok());
    auto two = osh::trust::TrustStore::Parse(
        osh::test::TrustStoreJson({{"fresh", key->PublicKeyPem()}, {"second", second->PublicKeyPem()}}, 2));
    REQUIRE(two.ok());
    input.trust_store = &*two;
    CHECK(osh::trust::CheckProjection(p, input).reason == "threshold_not_met");
    auto* extra = p.add_additional_signatures();
    extra->set_key_id("second");
    extra->set_signature(*second->Sign(osh::trust::SignedBytes(p)));
    auto both = osh::trust::CheckProjection(p, input);
    INFO(both.Message());
    CHECK(both.ok());
    CHECK(both.verified_key_ids.size() == 2);
  }
  SECTION("bounded work: many copies of a signature are tried once, a few signatures per key at most") {
    // Review finding (helper 77): every entry of additional_signatures was verified, duplicates included.
    // Exact repeats are not looked at again, and a key id gets four tries: a good signature among its
    // first four counts (SPEC §3.3: a key that carries a valid signature), one after them does not.
    auto second = osh::trust::PrivateKey::Generate(algorithm == "ed25519" ? "ecdsa-p256" : "ed25519");
    REQUIRE(second.ok());
    auto two = osh::trust::TrustStore::Parse(
        osh::test::TrustStoreJson({{"fresh", key->PublicKeyPem()}, {"second", second->PublicKeyPem()}}, 2));
    REQUIRE(two.ok());
    input.trust_store = &*two;
    const std::string good = *second->Sign(osh::trust::SignedBytes(p));
    std::string bad = good;
    bad[bad.size() / 2] ^= 0x01;
    auto add = [](Projection* q, const std::string& signature) {
      auto* extra = q->add_additional_signatures();
      extra->set_key_id("second");
      extra->set_signature(signature);
    };
    Projection repeats = p;
    for (int i = 0; i < 1000; ++i) add(&repeats, bad);  // one try
    add(&repeats, good);
    CHECK(osh::trust::CheckProjection(repeats, input).ok());
    Projection many = p;
    for (int i = 0; i < 4; ++i) {
      std::string other = bad;
      other[0] ^= static_cast<char>(i + 1);
      add(&many, other);
    }
    add(&many, good);  // the fifth try of 'second'
    const auto result = osh::trust::CheckProjection(many, input);
    INFO(result.Message());
    CHECK(result.reason == "threshold_not_met");
  }
}

TEST_CASE("validated body cache: reuses only bodies that passed, and never skips the digest", "[trust][cache]") {
  RuntimeContext context;
  context.set_sandbox_id("sb-cache");
  context.set_user_subject("alice@example.com");
  const std::vector<std::string> surfaces = {"openshell.sandbox.v1"};
  osh::trust::ValidatedBodyCache cache(2);
  osh::trust::CheckInput input;
  input.context = &context;
  input.accepted_surfaces = &surfaces;
  input.body_cache = &cache;

  Projection good = Unsigned(context);
  REQUIRE(osh::trust::CheckProjection(good, input).ok());
  CHECK(cache.size() == 1);
  auto again = osh::trust::CheckProjection(good, input);
  REQUIRE(again.ok());
  CHECK(again.policy->version() == 1);

  // Other bytes under the cached digest: the recomputed digest refuses them before the cache is asked.
  Projection swapped = good;
  swapped.set_body(swapped.body() + "x");
  CHECK(osh::trust::CheckProjection(swapped, input).reason == "digest_mismatch");

  // A body that fails validation is refused every time and never cached.
  auto invalid = osh::policy::RestrictiveDefaultPolicy();
  invalid.mutable_filesystem()->add_read_write("/");
  Projection bad = good;
  bad.set_body(osh::policy::SerializeDeterministic(invalid));
  bad.set_policy_digest(osh::policy::Sha256Hex(bad.body()));
  CHECK(osh::trust::CheckProjection(bad, input).reason == "invalid_policy");
  CHECK(osh::trust::CheckProjection(bad, input).reason == "invalid_policy");
  CHECK(cache.size() == 1);

  // Bounded: the oldest entry goes first.
  for (int i = 0; i < 3; ++i) {
    auto policy = osh::policy::RestrictiveDefaultPolicy();
    policy.mutable_filesystem()->add_read_only("/opt/" + std::to_string(i));
    Projection p = good;
    p.set_body(osh::policy::SerializeDeterministic(policy));
    p.set_policy_digest(osh::policy::Sha256Hex(p.body()));
    REQUIRE(osh::trust::CheckProjection(p, input).ok());
  }
  CHECK(cache.size() == 2);
  CHECK(cache.Find(good.policy_digest()) == nullptr);
}

TEST_CASE("verified signatures: a signature that verified is not verified again, and the key's trust is asked every "
          "time",
          "[trust][cache]") {
  const std::string algorithm = GENERATE(std::string("ed25519"), std::string("ecdsa-p256"));
  INFO(algorithm);
  auto key = osh::trust::PrivateKey::Generate(algorithm);
  REQUIRE(key.ok());
  const RuntimeContext context = osh::test::ContextFor("sb-remembered");
  Projection p = Unsigned(context);
  p.set_policy_version(70 + (algorithm == "ed25519" ? 0 : 1));  // bytes no other test case verifies
  p.set_signature(*key->Sign(osh::trust::SignedBytes(p)));
  p.set_signing_key_id("authority");
  auto store = osh::trust::TrustStore::Parse(osh::test::TrustStoreJson({{"authority", key->PublicKeyPem()}}));
  REQUIRE(store.ok());
  osh::trust::CheckInput input = InputFor(context, *store);
  auto& shared = osh::trust::VerifiedSignatures::Shared();
  const auto before = shared.counts();
  REQUIRE(osh::trust::CheckProjection(p, input).ok());
  const auto once = shared.counts();
  CHECK(once.verified == before.verified + 1);
  REQUIRE(osh::trust::CheckProjection(p, input).ok());  // the same bytes again: remembered
  const auto twice = shared.counts();
  CHECK(twice.verified == once.verified);
  CHECK(twice.remembered == once.remembered + 1);

  SECTION("a revoked key, or one outside its window, is refused though its signature is remembered") {
    const std::string pem = key->PublicKeyPem();
    auto revoked = osh::trust::TrustStore::Parse(absl::StrCat(
        R"({"keys": [{"key_id": "authority", "public_key_pem": )", JsonString(pem),
        R"(}], "revoked_key_ids": ["authority"]})"));
    REQUIRE(revoked.ok());
    input.trust_store = &*revoked;
    CHECK(osh::trust::CheckProjection(p, input).reason == "key_revoked");
    auto expired = osh::trust::TrustStore::Parse(absl::StrCat(
        R"({"keys": [{"key_id": "authority", "public_key_pem": )", JsonString(pem),
        R"(, "not_after": "2020-01-01T00:00:00Z"}]})"));
    REQUIRE(expired.ok());
    input.trust_store = &*expired;
    CHECK(osh::trust::CheckProjection(p, input).reason == "key_not_valid_now");
  }
  SECTION("another key under the same id, a changed byte or another signature is verified, and fails") {
    auto other = osh::trust::PrivateKey::Generate(algorithm);
    REQUIRE(other.ok());
    auto swapped = osh::trust::TrustStore::Parse(osh::test::TrustStoreJson({{"authority", other->PublicKeyPem()}}));
    REQUIRE(swapped.ok());
    input.trust_store = &*swapped;
    CHECK(osh::trust::CheckProjection(p, input).reason == "bad_signature");
    input.trust_store = &*store;
    Projection tampered = p;
    tampered.set_issued_at_unix(p.issued_at_unix() + 1);
    CHECK(osh::trust::CheckProjection(tampered, input).reason == "bad_signature");
    tampered = p;
    std::string signature = p.signature();
    signature[signature.size() / 2] ^= 0x01;
    tampered.set_signature(signature);
    const auto failing = shared.counts();
    CHECK(osh::trust::CheckProjection(tampered, input).reason == "bad_signature");
    CHECK(osh::trust::CheckProjection(tampered, input).reason == "bad_signature");
    CHECK(shared.counts().verified == failing.verified + 2);  // a failure is never remembered
  }
}

TEST_CASE("verified signatures: the memory is bounded, and a remembered triple in use stays", "[trust][cache]") {
  auto key = osh::trust::PrivateKey::Generate("ed25519");
  REQUIRE(key.ok());
  auto public_key = osh::trust::PublicKey::FromPem(key->PublicKeyPem());
  REQUIRE(public_key.ok());
  osh::trust::VerifiedSignatures memory(/*generation=*/4);
  std::vector<std::pair<std::string, std::string>> signed_messages;
  for (int i = 0; i < 20; ++i) {
    const std::string message = absl::StrCat("message ", i);
    signed_messages.emplace_back(message, *key->Sign(message));
  }
  const auto& [kept, kept_signature] = signed_messages[0];
  for (const auto& [message, signature] : signed_messages) {
    CHECK(memory.Verify(*public_key, message, signature));
    CHECK(memory.Verify(*public_key, kept, kept_signature));  // used all along: never dropped
    CHECK(memory.size() <= 8);
  }
  CHECK(memory.counts().verified == 20);
  CHECK(memory.counts().remembered == 20);
  CHECK(memory.Verify(*public_key, signed_messages[1].first, signed_messages[1].second));  // long dropped
  CHECK(memory.counts().verified == 21);
  CHECK_FALSE(memory.Verify(*public_key, "message 0 ", kept_signature));
  // Signed bytes past any projection's are verified every time, neither copied nor hashed for a lookup.
  const std::string big(osh::trust::VerifiedSignatures::kMaxMessageBytes + 1, 'x');
  const std::string big_signature = *key->Sign(big);
  const size_t held = memory.size();
  const auto counted = memory.counts();
  CHECK(memory.Verify(*public_key, big, big_signature));
  CHECK(memory.Verify(*public_key, big, big_signature));
  CHECK(memory.size() == held);
  CHECK(memory.counts().remembered == counted.remembered);
}

TEST_CASE("public keys: points anyone can forge signatures under, and second encodings of a key, are refused",
          "[trust][keys]") {
  // Review 106: the identity, the other small-order points and non-canonical encodings of Ed25519, and
  // P-256's point at infinity loaded as trust-store keys (a signature R = identity, S = 0 verified under the
  // identity for every message; a non-canonical encoding listed beside the canonical one counted twice).
  auto ed25519_pem = [](std::string raw) {
    const std::string der = std::string("\x30\x2a\x30\x05\x06\x03\x2b\x65\x70\x03\x21\x00", 12) + raw;
    return "-----BEGIN PUBLIC KEY-----\n" + absl::Base64Escape(der) + "\n-----END PUBLIC KEY-----\n";
  };
  auto bytes = [](const char* hex) { return absl::HexStringToBytes(hex); };
  const std::string p_minus_1 = bytes("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f");
  std::vector<std::string> weak = {
      std::string(32, '\0'), std::string("\x01") + std::string(31, '\0'),
      bytes("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
      bytes("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"), p_minus_1,
      bytes("edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),   // p: 0 again
      bytes("eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),   // p + 1: the identity again
      bytes("ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f")};  // 2^255 - 1: y = 18 again
  for (size_t i = 0, n = weak.size(); i < n; ++i) {  // the sign bit set too
    std::string signed_x = weak[i];
    signed_x[31] = static_cast<char>(signed_x[31] | 0x80);
    weak.push_back(signed_x);
  }
  for (const std::string& raw : weak) {
    INFO(absl::BytesToHexString(raw));
    auto key = osh::trust::PublicKey::FromPem(ed25519_pem(raw));
    REQUIRE_FALSE(key.ok());
    CHECK_THAT(std::string(key.status().message()), Catch::StartsWith("an Ed25519 public key that is "));
  }
  // A real key loads, with either sign bit as its own.
  auto fresh = osh::trust::PrivateKey::Generate("ed25519");
  REQUIRE(fresh.ok());
  CHECK(osh::trust::PublicKey::FromPem(fresh->PublicKeyPem()).ok());
  // P-256's point at infinity.
  auto infinity = osh::trust::PublicKey::FromPem("-----BEGIN PUBLIC KEY-----\nMBkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDAgAA\n-----END PUBLIC KEY-----\n");
  REQUIRE_FALSE(infinity.ok());
  auto p256 = osh::trust::PrivateKey::Generate("ecdsa-p256");
  REQUIRE(p256.ok());
  CHECK(osh::trust::PublicKey::FromPem(p256->PublicKeyPem()).ok());
}
