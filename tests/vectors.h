// The golden vectors (tests/data/projection-vectors.json, a copy of ../shared/vectors/) and helpers
// that turn their objects into messages. Shared by the unit and integration tests.
#pragma once

#include <catch2/catch.hpp>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <yaml-cpp/yaml.h>

#include "openshell/policy/driver/v1/driver.pb.h"
#include "policy/policy_file.h"
#include "tests/test_support.h"

namespace osh::test::vectors {

using google::protobuf::Struct;
using google::protobuf::Value;
using openshell::policy::driver::v1::Projection;
using openshell::policy::driver::v1::RuntimeContext;
using osh::test::FromHex;

inline const Struct& Vectors() {
  static const Struct vectors = osh::test::LoadJson(osh::test::DataDir() / "projection-vectors.json");
  return vectors;
}

inline std::string Str(const Struct& s, const std::string& field) { return s.fields().at(field).string_value(); }

inline std::string ToJson(const Value& value) {
  std::string out;
  REQUIRE(google::protobuf::util::MessageToJsonString(value, &out).ok());
  return out;
}

inline RuntimeContext ContextFrom(const Struct& s) {
  RuntimeContext context;
  context.set_sandbox_id(Str(s, "sandbox_id"));
  context.set_user_subject(Str(s, "user_subject"));
  for (const auto& [k, v] : s.fields().at("attributes").struct_value().fields()) (*context.mutable_attributes())[k] = v.string_value();
  return context;
}

// The same file read by the YAML 1.2 parser, which keeps number literals as text: Struct holds numbers
// as doubles and would round 2^64-1.
inline const YAML::Node& ExactVectors() {
  static const YAML::Node vectors = YAML::LoadFile((osh::test::DataDir() / "projection-vectors.json").string());
  return vectors;
}

// Envelope fields from a vector object; `exact` is the same object read for exact integers.
inline Projection EnvelopeFrom(const Struct& s, const YAML::Node& exact) {
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

// The policy a case of containment-vectors.json gives as `field` ("ceiling", "candidate"), through the
// policy-file parser (so it is validated as a file would be).
inline openshell::sandbox::v1::SandboxPolicy PolicyOfCase(const Struct& c, const std::string& field) {
  std::string json;
  REQUIRE(google::protobuf::util::MessageToJsonString(c.fields().at(field), &json).ok());
  const std::string where = Str(c, "name") + "." + field;
  auto policy = osh::policy::ParsePolicyText(json, where);
  INFO((policy.ok() ? "" : std::string(policy.status().message())));
  REQUIRE(policy.ok());
  return *policy;
}

}  // namespace osh::test::vectors
