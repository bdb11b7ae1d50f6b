#include "trust/ceiling.h"

#include <google/protobuf/util/json_util.h>

#include "absl/strings/str_cat.h"
#include "policy/body_codec.h"
#include "policy/digest.h"
#include "policy/validation.h"
#include "trust/encoding.h"

namespace osh::trust {

std::string CeilingSignedBytes(const CeilingMessage& c) {
  std::string out;
  PutField(&out, kCeilingDomain);
  PutField(&out, c.ceiling_id());
  PutU64(&out, c.version());
  PutField(&out, c.policy_digest());
  PutU64(&out, static_cast<uint64_t>(c.issued_at_unix()));  // I64: two's complement, big-endian
  PutField(&out, c.audit_label());
  return out;
}

CeilingMessage MakeCeiling(const openshell::sandbox::v1::SandboxPolicy& policy, const std::string& ceiling_id,
                           uint64_t version, const std::string& audit_label, int64_t issued_at_unix) {
  CeilingMessage c;
  c.set_ceiling_id(ceiling_id);
  c.set_version(version);
  c.set_audit_label(audit_label);
  c.set_body(policy::SerializeDeterministic(policy));
  c.set_policy_digest(policy::Sha256Hex(c.body()));
  c.set_issued_at_unix(issued_at_unix);
  return c;
}

absl::Status SignCeiling(CeilingMessage* ceiling, const PrivateKey& key, const std::string& key_id) {
  if (!IsValidKeyId(key_id)) return absl::InvalidArgumentError(absl::StrCat("key id '", key_id, "' is not valid"));
  auto signature = key.Sign(CeilingSignedBytes(*ceiling));
  if (!signature.ok()) return signature.status();
  auto* added = ceiling->add_signatures();
  added->set_key_id(key_id);
  added->set_signature(*signature);
  return absl::OkStatus();
}

namespace {

CheckResult Refuse(const char* reason, std::string detail) {
  CheckResult result;
  result.reason = reason;
  result.detail = std::move(detail);
  return result;
}

}  // namespace

CheckResult CheckCeiling(const CeilingMessage& c, const CeilingCheckInput& input) {
  if (!IsValidKeyId(c.ceiling_id())) {
    return Refuse(reason::kInvalidCeiling, absl::StrCat("ceiling_id '", c.ceiling_id(), "' must be 1..128 of [A-Za-z0-9._:-]"));
  }
  if (!input.expected_ceiling_id.empty() && c.ceiling_id() != input.expected_ceiling_id) {
    // Authority keys that sign ceilings for several fleets: another fleet's ceiling, however well signed,
    // is not this one's.
    return Refuse(reason::kInvalidCeiling, absl::StrCat("ceiling_id '", c.ceiling_id(), "' is not the one this gateway enforces ('",
                                                        input.expected_ceiling_id, "', its ceiling_id setting)"));
  }
  if (c.version() == 0) return Refuse(reason::kInvalidCeiling, "version must be at least 1");
  if (input.trust_store == nullptr) {
    return Refuse(reason::kUnsigned, "no trust store is configured, so no ceiling can be verified");
  }
  const std::string digest = policy::Sha256Hex(c.body());
  if (digest != c.policy_digest()) {
    return Refuse(reason::kDigestMismatch, absl::StrCat("the body's SHA-256 is ", digest, ", the ceiling says ",
                                                        c.policy_digest().empty() ? "(none)" : c.policy_digest()));
  }
  auto parsed = policy::ParseBodyStrict(c.body());
  if (!parsed.ok()) return Refuse(reason::kIncompleteProjection, std::string(parsed.status().message()));
  if (auto violation = policy::FindViolation(*parsed)) {
    return Refuse(reason::kInvalidPolicy, absl::StrCat(violation->path, ": ", violation->message));
  }
  std::vector<SignatureRef> signatures;
  for (const auto& s : c.signatures()) signatures.push_back({s.key_id(), s.signature()});
  if (signatures.empty()) return Refuse(reason::kUnsigned, "the ceiling carries no signature");
  CheckResult result = CheckSignaturesOver(CeilingSignedBytes(c), signatures, *input.trust_store, input.now_unix,
                                           input.clock_skew_s);
  if (!result.ok()) return result;
  if (input.in_force_version && c.version() <= *input.in_force_version) {
    return Refuse(reason::kRollback, absl::StrCat("ceiling version ", c.version(), " is not above the version in force (",
                                                  *input.in_force_version, ")"));
  }
  result.policy = std::make_shared<const openshell::sandbox::v1::SandboxPolicy>(*std::move(parsed));
  return result;
}

absl::StatusOr<CeilingMessage> ParseCeilingJson(const std::string& text, const std::string& source) {
  CeilingMessage c;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  auto status = google::protobuf::util::JsonStringToMessage(text, &c, options);
  if (!status.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not a ceiling file (JSON of openshell.policy.ceiling.v1.Ceiling): ",
                                                   std::string(status.message())));
  }
  return c;
}

std::string CeilingToJson(const CeilingMessage& c) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(c, &out, options);
  return out;
}

}  // namespace osh::trust
