// Every case of the golden vectors (tests/data/projection-vectors.json, a copy of
// ../shared/vectors/projection-vectors.json from an independent implementation).
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <catch2/catch.hpp>
#include <google/protobuf/util/json_util.h>
#include <yaml-cpp/yaml.h>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
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

TEST_CASE("docs/driver-contract.md: the worked examples of signed bytes and context digest hold", "[trust][docs]") {
  openshell::policy::driver::v1::RuntimeContext context;
  context.set_sandbox_id("sb-1");
  context.set_user_subject("alice@example.com");
  (*context.mutable_attributes())["tenant_id"] = "acme";
  const std::string context_digest = osh::trust::ContextDigest(context);
  CHECK(context_digest == "ac5e901c3cf160e6a2b66c6357949e588faf8c9fd75af3aab2c3367e80e22fb5");

  openshell::policy::driver::v1::Projection p;
  p.set_surface_id("openshell.sandbox.v1");
  p.set_policy_digest("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");  // SHA-256 of ""
  p.set_policy_version(3);
  p.set_context_digest(context_digest);
  p.set_issued_at_unix(1700000000);
  p.set_expires_at_unix(1700003600);
  (*p.mutable_audit_context())["ticket"] = "CHG-42";
  p.set_signature("not signed bytes");  // neither the signature nor the key id is covered
  p.set_signing_key_id("any");
  const std::string bytes = osh::trust::SignedBytes(p);
  CHECK(bytes.size() == 242);
  CHECK(absl::BytesToHexString(bytes) ==
        "0000001e6f70656e7368656c6c2e706f6c6963792e70726f6a656374696f6e2e7631000000146f70656e7368656c6c2e7361"
        "6e64626f782e7631000000406533623063343432393866633163313439616662663463383939366662393234323761653431"
        "6534363439623933346361343935393931623738353262383535000000000000000300000040616335653930316333636631"
        "3630653661326236366336333537393439653538386661663863396664373561663361616232633333363765383065323266"
        "6235000000006553f100000000006553ff1000000001000000067469636b6574000000064348472d3432");
}

namespace {

// The public key of `key` as PEM, its point in `form` ("compressed"/"uncompressed") and its curve as
// `encoding` ("named_curve"/"explicit"). OpenSSL keeps the form a key was read in when it writes it out.
std::string P256PublicPem(EVP_PKEY* key, const char* form, const char* encoding) {
  EVP_PKEY* copy = EVP_PKEY_dup(key);
  REQUIRE(copy != nullptr);
  REQUIRE(EVP_PKEY_set_utf8_string_param(copy, OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, form) == 1);
  REQUIRE(EVP_PKEY_set_utf8_string_param(copy, OSSL_PKEY_PARAM_EC_ENCODING, encoding) == 1);
  BIO* bio = BIO_new(BIO_s_mem());
  REQUIRE(PEM_write_bio_PUBKEY(bio, copy) == 1);
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio, &data);
  std::string pem(data, static_cast<size_t>(len));
  BIO_free(bio);
  EVP_PKEY_free(copy);
  return pem;
}

}  // namespace

TEST_CASE("keys: one P-256 key has one fingerprint however its PEM encodes it, and explicit curve parameters are refused",
          "[trust][keys]") {
  // Review finding: the fingerprint was SHA-256 of the DER as read, so the same key listed uncompressed
  // under one id and compressed under another passed the "same public key" check and met a threshold of
  // two with one signature.
  EVP_PKEY* key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
  REQUIRE(key != nullptr);
  const std::string uncompressed = P256PublicPem(key, "uncompressed", "named_curve");
  const std::string compressed = P256PublicPem(key, "compressed", "named_curve");
  const std::string explicit_curve = P256PublicPem(key, "uncompressed", "explicit");
  EVP_PKEY_free(key);
  REQUIRE(uncompressed != compressed);
  auto a = osh::trust::PublicKey::FromPem(uncompressed);
  auto b = osh::trust::PublicKey::FromPem(compressed);
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(a->fingerprint() == b->fingerprint());
  CHECK(a->ToPem() == b->ToPem());
  auto c = osh::trust::PublicKey::FromPem(explicit_curve);
  REQUIRE_FALSE(c.ok());
  CHECK_THAT(std::string(c.status().message()), Catch::Contains("explicit curve parameters"));

  // A trust store listing the key twice, once per encoding, is refused as listing one key twice.
  const auto json_pem = [](const std::string& pem) { return absl::StrReplaceAll(pem, {{"\n", "\\n"}}); };
  const std::string store = absl::StrCat(R"({"threshold": 2, "keys": [{"key_id": "authority-a", "public_key_pem": ")",
                                         json_pem(uncompressed), R"("}, {"key_id": "authority-b", "public_key_pem": ")",
                                         json_pem(compressed), R"("}]})");
  auto parsed = osh::trust::TrustStore::Parse(store);
  REQUIRE_FALSE(parsed.ok());
  CHECK_THAT(std::string(parsed.status().message()), Catch::Contains("the same public key is already listed as 'authority-a'"));
}

TEST_CASE("trust store: a malformed revoked key id is refused, not silently matching no key", "[trust]") {
  // Review 106: "k1 " named no key, so k1 stayed trusted.
  auto key = osh::trust::PrivateKey::Generate("ed25519");
  REQUIRE(key.ok());
  std::string json = osh::test::TrustStoreJson({{"k1", key->PublicKeyPem()}});
  json.insert(json.rfind('}'), ", \"revoked_key_ids\": [\"k1 \"]");
  auto store = osh::trust::TrustStore::Parse(json);
  REQUIRE_FALSE(store.ok());
  CHECK_THAT(std::string(store.status().message()), Catch::Contains("revoked_key_ids: invalid key id 'k1 '"));
}
