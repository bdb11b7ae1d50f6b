#include "gateway/core/interceptor_governance.h"

#include <google/protobuf/struct.pb.h>

#include <algorithm>
#include <charconv>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gateway/core/interceptor_payload.h"
#include "policy/body_codec.h"
#include "policy/digest.h"

namespace osh::gateway {

namespace {

void GovernanceEmitString(const std::string& text, std::string* out) {
  out->push_back('"');
  for (const char c : text) {
    switch (c) {
      case '"': out->append("\\\""); break;
      case '\\': out->append("\\\\"); break;
      case '\b': out->append("\\b"); break;
      case '\f': out->append("\\f"); break;
      case '\n': out->append("\\n"); break;
      case '\r': out->append("\\r"); break;
      case '\t': out->append("\\t"); break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          absl::StrAppendFormat(out, "\\u%04x", static_cast<unsigned char>(c));
        } else {
          out->push_back(c);
        }
    }
  }
  out->push_back('"');
}

void GovernanceEmitNumber(double number, std::string* out) {
  if (std::isfinite(number) && number == std::trunc(number) && std::fabs(number) < 9007199254740992.0) {
    absl::StrAppend(out, static_cast<int64_t>(number));
    return;
  }
  char buffer[64];
  const auto result = std::to_chars(buffer, buffer + sizeof(buffer), number);
  out->append(buffer, result.ptr);
}

void GovernanceEmit(const google::protobuf::Value& value, std::string* out) {
  switch (value.kind_case()) {
    case google::protobuf::Value::kNullValue:
    case google::protobuf::Value::KIND_NOT_SET: out->append("null"); break;
    case google::protobuf::Value::kBoolValue: out->append(value.bool_value() ? "true" : "false"); break;
    case google::protobuf::Value::kNumberValue: GovernanceEmitNumber(value.number_value(), out); break;
    case google::protobuf::Value::kStringValue: GovernanceEmitString(value.string_value(), out); break;
    case google::protobuf::Value::kListValue: {
      out->push_back('[');
      bool first = true;
      for (const auto& item : value.list_value().values()) {
        if (!first) out->push_back(',');
        first = false;
        GovernanceEmit(item, out);
      }
      out->push_back(']');
      break;
    }
    case google::protobuf::Value::kStructValue: {
      std::vector<const std::string*> keys;
      for (const auto& [key, unused] : value.struct_value().fields()) keys.push_back(&key);
      std::sort(keys.begin(), keys.end(), [](const std::string* a, const std::string* b) { return *a < *b; });
      out->push_back('{');
      bool first = true;
      for (const std::string* key : keys) {
        if (!first) out->push_back(',');
        first = false;
        GovernanceEmitString(*key, out);
        out->push_back(':');
        GovernanceEmit(value.struct_value().fields().at(*key), out);
      }
      out->push_back('}');
      break;
    }
  }
}

std::string GovernanceFrame(const std::string& bytes) {
  std::string out(8, '\0');
  uint64_t n = bytes.size();
  for (int i = 7; i >= 0; --i, n >>= 8) out[i] = static_cast<char>(n & 0xff);
  return out + bytes;
}

std::string GovernanceDigest(const std::string& preimage) {
  return absl::StrCat("sha256:v2:", policy::Sha256Hex(preimage));
}

void GovernanceSortById(std::vector<openshell::v1::ProviderProfile>* profiles) {
  std::sort(profiles->begin(), profiles->end(),
            [](const auto& a, const auto& b) { return a.id() < b.id(); });
}

}  // namespace

absl::StatusOr<std::string> GovernanceCanonicalJson(const google::protobuf::Message& message) {
  auto value = MessageToInterceptorValue(message);
  if (!value.ok()) return value.status();
  std::string out;
  GovernanceEmit(**value, &out);
  return out;
}

absl::StatusOr<std::string> GovernancePolicyHash(const openshell::sandbox::v1::SandboxPolicy& policy) {
  auto canonical = GovernanceCanonicalJson(policy);
  if (!canonical.ok()) return canonical.status();
  return GovernanceDigest(absl::StrCat(kGovernanceHashAlgorithm, GovernanceFrame("openshell-governance-policy"),
                                       GovernanceFrame("openshell.sandbox.v1.SandboxPolicy"), GovernanceFrame(*canonical)));
}

absl::StatusOr<std::string> GovernanceProfileHash(const openshell::v1::ProviderProfile& profile) {
  openshell::v1::ProviderProfile unsigned_profile = profile;
  for (const char* key : {"openshell.nvidia.com/profile-signature", "openshell.nvidia.com/profile-hash",
                          "openshell.nvidia.com/profile-signature-kid"}) {
    unsigned_profile.mutable_annotations()->erase(key);
  }
  auto canonical = GovernanceCanonicalJson(unsigned_profile);
  if (!canonical.ok()) return canonical.status();
  return GovernanceDigest(absl::StrCat(kGovernanceHashAlgorithm, GovernanceFrame("openshell-governance-provider-profile"),
                                       GovernanceFrame("openshell.v1.ProviderProfile"), GovernanceFrame(*canonical)));
}

absl::StatusOr<std::string> GovernanceSnapshotHash(std::vector<openshell::v1::ProviderProfile> profiles) {
  GovernanceSortById(&profiles);
  std::string count(8, '\0');
  uint64_t n = profiles.size();
  for (int i = 7; i >= 0; --i, n >>= 8) count[i] = static_cast<char>(n & 0xff);
  std::string preimage = absl::StrCat(kGovernanceHashAlgorithm, GovernanceFrame("openshell-governance-provider-profile-snapshot"),
                                      GovernanceFrame("openshell.v1.ProviderProfile"), GovernanceFrame(count));
  for (const auto& profile : profiles) {
    auto canonical = GovernanceCanonicalJson(profile);
    if (!canonical.ok()) return canonical.status();
    absl::StrAppend(&preimage, GovernanceFrame(profile.id()), GovernanceFrame(*canonical));
  }
  return GovernanceDigest(preimage);
}

std::string UpstreamSnapshotRevision(std::vector<openshell::v1::ProviderProfile> profiles) {
  GovernanceSortById(&profiles);
  std::string preimage = "openshell-provider-profile-snapshot-v1";
  for (const auto& profile : profiles) preimage += policy::SerializeDeterministic(profile);
  return absl::StrCat("sha256:", policy::Sha256Hex(preimage));
}

}  // namespace osh::gateway
