// Every case of the golden vectors (tests/data/projection-vectors.json, a copy of
// ../shared/vectors/projection-vectors.json from an independent implementation).
#include <catch2/catch.hpp>
#include <google/protobuf/util/json_util.h>
#include <yaml-cpp/yaml.h>

#include "policy/digest.h"
#include "tests/test_support.h"
#include "trust/encoding.h"
#include "trust/keys.h"
#include "trust/projection_check.h"
#include "trust/trust_store.h"

namespace {

using google::protobuf::Struct;
using google::protobuf::Value;
using openshell::policy::driver::v1::Projection;
using openshell::policy::driver::v1::RuntimeContext;
using osh::test::FromHex;

const Struct& Vectors() {
  static const Struct vectors = osh::test::LoadJson(osh::test::DataDir() / "projection-vectors.json");
  return vectors;
}

std::string Str(const Struct& s, const std::string& field) { return s.fields().at(field).string_value(); }

std::string ToJson(const Value& value) {
  std::string out;
  REQUIRE(google::protobuf::util::MessageToJsonString(value, &out).ok());
  return out;
}

RuntimeContext ContextFrom(const Struct& s) {
  RuntimeContext context;
  context.set_sandbox_id(Str(s, "sandbox_id"));
  context.set_user_subject(Str(s, "user_subject"));
  for (const auto& [k, v] : s.fields().at("attributes").struct_value().fields()) (*context.mutable_attributes())[k] = v.string_value();
  return context;
}

// The same file read by the YAML 1.2 parser, which keeps number literals as text: Struct holds numbers
// as doubles and would round 2^64-1.
const YAML::Node& ExactVectors() {
  static const YAML::Node vectors = YAML::LoadFile((osh::test::DataDir() / "projection-vectors.json").string());
  return vectors;
}

// Envelope fields from a vector object; `exact` is the same object read for exact integers.
Projection EnvelopeFrom(const Struct& s, const YAML::Node& exact) {
  Projection p;
  p.set_surface_id(Str(s, "surface_id"));
  p.set_policy_digest(Str(s, "policy_digest"));
  p.set_policy_version(std::stoull(exact["policy_version"].Scalar()));
  p.set_context_digest(Str(s, "context_digest"));
  p.set_issued_at_unix(std::stoll(exact["issued_at_unix"].Scalar()));
  p.set_expires_at_unix(std::stoll(exact["expires_at_unix"].Scalar()));
  for (const auto& [k, v] : s.fields().at("audit_context").struct_value().fields()) (*p.mutable_audit_context())[k] = v.string_value();
  if (s.fields().contains("body")) p.set_body(FromHex(Str(s, "body")));
  if (s.fields().contains("signature")) p.set_signature(FromHex(Str(s, "signature")));
  if (s.fields().contains("signing_key_id")) p.set_signing_key_id(Str(s, "signing_key_id"));
  if (s.fields().contains("additional_signatures")) {
    for (const auto& sig : s.fields().at("additional_signatures").list_value().values()) {
      auto* out = p.add_additional_signatures();
      out->set_key_id(Str(sig.struct_value(), "key_id"));
      out->set_signature(FromHex(Str(sig.struct_value(), "signature")));
    }
  }
  return p;
}

}  // namespace

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
