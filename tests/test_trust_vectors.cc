// Every case of the golden vectors (tests/data/projection-vectors.json, a copy of
// ../shared/vectors/projection-vectors.json from an independent implementation).
#include <catch2/catch.hpp>
#include <google/protobuf/util/json_util.h>
#include <yaml-cpp/yaml.h>

#include "policy/digest.h"
#include "tests/test_support.h"
#include "tests/vectors.h"
#include "trust/encoding.h"
#include "trust/keys.h"
#include "trust/projection_check.h"
#include "trust/trust_store.h"

using namespace osh::test::vectors;
using osh::test::FromHex;

TEST_CASE("vectors: context digests match byte for byte", "[trust][vectors]") {
  const auto& cases = Vectors().fields().at("context_digests").list_value().values();
  REQUIRE(cases.size() >= 3);
  for (const auto& c : cases) {
    const Struct& s = c.struct_value();
    INFO(Str(s, "name"));
    CHECK(osh::trust::ContextDigest(ContextFrom(s)) == Str(s, "expect"));
  }
}

TEST_CASE("vectors: signed bytes and the Ed25519 signature match byte for byte", "[trust][vectors]") {
  const auto& keys = Vectors().fields().at("keys").struct_value();
  auto key_a = osh::trust::PrivateKey::FromPem(Str(keys.fields().at("authority-a").struct_value(), "private_key_pem"));
  REQUIRE(key_a.ok());
  const auto& cases = Vectors().fields().at("signed_bytes").list_value().values();
  REQUIRE(cases.size() >= 3);
  for (int i = 0; i < cases.size(); ++i) {
    const Struct& s = cases[i].struct_value();
    INFO(Str(s, "name"));
    const Projection p = EnvelopeFrom(s, ExactVectors()["signed_bytes"][i]);
    const std::string bytes = osh::trust::SignedBytes(p);
    CHECK(osh::policy::ToHex(bytes) == Str(s, "expect_signed_bytes"));
    auto signature = key_a->Sign(bytes);
    REQUIRE(signature.ok());
    CHECK(osh::policy::ToHex(*signature) == Str(s, "expect_ed25519_signature_authority_a"));
  }
}

TEST_CASE("vectors: every verification case has its exact outcome", "[trust][vectors]") {
  const auto& cases = Vectors().fields().at("verification").list_value().values();
  REQUIRE(cases.size() >= 23);
  for (int i = 0; i < cases.size(); ++i) {
    const Struct& s = cases[i].struct_value();
    INFO(Str(s, "name") << ": " << Str(s, "why"));
    auto store = osh::trust::TrustStore::Parse(ToJson(s.fields().at("trust_store")));
    REQUIRE(store.ok());
    const RuntimeContext context = ContextFrom(s.fields().at("runtime_context").struct_value());
    std::vector<std::string> accepted;
    for (const auto& a : s.fields().at("accepted_surfaces").list_value().values()) accepted.push_back(a.string_value());
    osh::trust::CheckInput input;
    input.context = &context;
    input.accepted_surfaces = &accepted;
    input.trust_store = &*store;
    input.now_unix = std::stoll(ExactVectors()["verification"][i]["now_unix"].Scalar());
    input.clock_skew_s = 60;
    const auto result = osh::trust::CheckProjection(
        EnvelopeFrom(s.fields().at("projection").struct_value(), ExactVectors()["verification"][i]["projection"]), input);
    INFO(result.Message());
    CHECK((result.ok() ? std::string("ok") : result.reason) == Str(s, "expect"));
  }
}

TEST_CASE("vectors: every bad trust store is refused with its own error", "[trust][vectors]") {
  const auto& cases = Vectors().fields().at("trust_stores_that_must_not_load").list_value().values();
  REQUIRE(cases.size() >= 14);
  std::set<std::string> messages;
  for (const auto& c : cases) {
    const Struct& s = c.struct_value();
    INFO(Str(s, "name"));
    auto store = osh::trust::TrustStore::Parse(Str(s, "text"));
    REQUIRE_FALSE(store.ok());
    CHECK(store.status().code() == absl::StatusCode::kInvalidArgument);
    messages.insert(std::string(store.status().message()));
  }
  CHECK(messages.size() == static_cast<size_t>(cases.size()));  // each malformed shape has a distinct error
}
