#include "policy/provider_profile.h"

#include <algorithm>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "policy/policy_file.h"
#include "policy/validation.h"
#include "policy/yaml_message.h"

namespace osh::policy {
namespace {

namespace os_v1 = openshell::v1;
using openshell::sandbox::v1::SandboxPolicy;

constexpr size_t kMaxProfileIdBytes = 128;
constexpr char kValidationLayerKey[] = "profile";

YamlReadOptions ProfileFileOptions() {
  YamlReadOptions options;
  options.scalar_as_field = {
      {"openshell.sandbox.v1.NetworkBinary", "path"},
      {"openshell.sandbox.v1.L7QueryMatcher", "glob"},
  };
  options.map_entry_keys = {
      {"openshell.sandbox.v1.L7Allow.tool", {"params", "name"}},
      {"openshell.sandbox.v1.L7DenyRule.tool", {"params", "name"}},
  };
  options.refused_fields = {
      "openshell.sandbox.v1.NetworkEndpoint.credential_binding",
      "openshell.sandbox.v1.NetworkEndpoint.advisor_proposed",
      "openshell.sandbox.v1.NetworkEndpoint.provider_credentialed",
  };
  options.non_empty_lists = {
      "openshell.sandbox.v1.NetworkEndpoint.rules",
      "openshell.sandbox.v1.NetworkEndpoint.deny_rules",
  };
  options.short_enum_names = true;
  return options;
}

absl::Status InvalidProfile(const std::string& path, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("invalid_profile: ", path, ": ", what));
}

// The first broken rule as (field path, what), or nothing.
std::optional<Violation> FindProfileViolation(const os_v1::ProviderProfile& profile) {
  if (profile.id().empty()) return Violation{"id", "required"};
  if (profile.id().size() > kMaxProfileIdBytes) {
    return Violation{"id", absl::StrCat("at most ", kMaxProfileIdBytes, " characters")};
  }
  for (const char c : profile.id()) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') {
      return Violation{"id", absl::StrCat("'", profile.id(), "': only letters, digits, '.', '_' and '-'")};
    }
  }
  if (profile.display_name().empty()) return Violation{"display_name", "required"};
  if (!profile.source().empty()) return Violation{"source", "set by the OpenShell gateway: leave it empty"};
  if (!profile.scope().empty()) return Violation{"scope", "set by the OpenShell gateway: leave it empty"};
  if (profile.resource_version() != 0) {
    return Violation{"resource_version", "set by the OpenShell gateway: leave it 0"};
  }
  // A signature made elsewhere (policyctl profile sign) is its three annotations together; any other
  // openshell.nvidia.com/profile-* key is this gateway's to set.
  const bool is_signed = ProviderProfileSigned(profile);
  for (const auto& [key, value] : profile.annotations()) {
    if (!absl::StartsWith(key, kProfileAnnotationPrefix)) continue;
    if (key == kProfileSignatureAnnotation || key == kProfileHashAnnotation || key == kProfileSignatureKidAnnotation) {
      if (is_signed) continue;
      return Violation{absl::StrCat("annotations.", key),
                       absl::StrCat("a signature is ", kProfileSignatureAnnotation, ", ", kProfileHashAnnotation,
                                    " and ", kProfileSignatureKidAnnotation,
                                    " together (policyctl profile sign writes them); leave all three out to have "
                                    "this gateway sign the profile")};
    }
    return Violation{absl::StrCat("annotations.", key), "not an annotation of a signed profile: leave it out"};
  }
  std::set<std::string> credentials;
  for (int i = 0; i < profile.credentials_size(); ++i) {
    const std::string& name = profile.credentials(i).name();
    const std::string path = absl::StrCat("credentials[", i, "].name");
    if (name.empty()) return Violation{path, "required"};
    if (!credentials.insert(name).second) return Violation{path, absl::StrCat("'", name, "' appears twice")};
  }
  for (int i = 0; i < profile.discovery().credentials_size(); ++i) {
    const std::string& name = profile.discovery().credentials(i);
    if (!credentials.contains(name)) {
      return Violation{absl::StrCat("discovery.credentials[", i, "]"),
                       absl::StrCat("'", name, "' is not one of the profile's credentials")};
    }
  }
  for (int i = 0; i < profile.endpoints_size(); ++i) {
    const auto& endpoint = profile.endpoints(i);
    const std::string path = absl::StrCat("endpoints[", i, "]");
    if (endpoint.has_credential_binding()) return Violation{path + ".credential_binding", "not allowed in a profile"};
    if (endpoint.advisor_proposed()) return Violation{path + ".advisor_proposed", "not allowed in a profile"};
    if (endpoint.provider_credentialed()) {
      return Violation{path + ".provider_credentialed", "set by composition: not allowed in a profile"};
    }
  }
  // Endpoints and binaries: the rules of a policy's network entry, as the layer they become.
  SandboxPolicy layer;
  layer.set_version(1);
  auto& rule = (*layer.mutable_network_policies())[kValidationLayerKey];
  rule.set_name(kValidationLayerKey);
  *rule.mutable_endpoints() = profile.endpoints();
  *rule.mutable_binaries() = profile.binaries();
  if (auto violation = FindViolation(layer)) {
    const std::string prefix = absl::StrCat("network_policies.", kValidationLayerKey, ".");
    if (absl::StartsWith(violation->path, prefix)) violation->path.erase(0, prefix.size());
    return violation;
  }
  return std::nullopt;
}

}  // namespace

bool ProviderProfileSigned(const os_v1::ProviderProfile& profile) {
  const auto& annotations = profile.annotations();
  return annotations.contains(kProfileSignatureAnnotation) && annotations.contains(kProfileHashAnnotation) &&
         annotations.contains(kProfileSignatureKidAnnotation);
}

absl::Status ValidateProviderProfile(const os_v1::ProviderProfile& profile) {
  if (auto violation = FindProfileViolation(profile)) return InvalidProfile(violation->path, violation->message);
  return absl::OkStatus();
}

absl::StatusOr<os_v1::ProviderProfile> ParseProviderProfileText(absl::string_view text, absl::string_view source) {
  os_v1::ProviderProfile profile;
  LineMap lines;
  if (absl::Status read = ReadYamlMessage(text, source, ProfileFileOptions(), &profile, &lines); !read.ok()) {
    return read;
  }
  if (profile.category() == os_v1::PROVIDER_PROFILE_CATEGORY_UNSPECIFIED) {
    profile.set_category(os_v1::PROVIDER_PROFILE_CATEGORY_OTHER);
  }
  if (auto violation = FindProfileViolation(profile)) {
    const int line = LineOf(lines, violation->path);
    return absl::InvalidArgumentError(absl::StrCat(source, line > 0 ? absl::StrCat(":", line) : "",
                                                   ": invalid_profile: ", violation->path, ": ", violation->message));
  }
  return profile;
}

absl::StatusOr<os_v1::ProviderProfile> LoadProviderProfileFile(const std::string& path) {
  auto text = ReadFileToString(path);
  if (!text.ok()) return text.status();
  return ParseProviderProfileText(*text, path);
}

std::string ProviderProfileToYaml(const os_v1::ProviderProfile& profile) { return WriteYamlMessage(profile, {}); }

std::string ProviderLayerKey(absl::string_view provider_name) {
  std::string key;
  for (const char c : provider_name) {
    const char lower = absl::ascii_tolower(static_cast<unsigned char>(c));
    key.push_back((absl::ascii_isdigit(static_cast<unsigned char>(lower)) || (lower >= 'a' && lower <= 'z') || lower == '_')
                      ? lower
                      : '_');
  }
  const size_t first = key.find_first_not_of('_');
  if (first == std::string::npos) return "_provider_unnamed";
  const size_t last = key.find_last_not_of('_');
  return absl::StrCat("_provider_", key.substr(first, last - first + 1));
}

std::vector<std::string> ReservedProviderKeys(const SandboxPolicy& policy) {
  std::vector<std::string> keys;
  for (const auto& [key, rule] : policy.network_policies()) {
    if (absl::StartsWith(key, "_provider_")) keys.push_back(key);
  }
  std::sort(keys.begin(), keys.end());
  return keys;
}

SandboxPolicy ComposeProviderLayers(
    SandboxPolicy own, const std::vector<std::pair<std::string, const os_v1::ProviderProfile*>>& providers) {
  auto& entries = *own.mutable_network_policies();
  for (const auto& [name, profile] : providers) {
    const std::string base = ProviderLayerKey(name);
    std::string key = base;
    for (int n = 2; entries.contains(key); ++n) key = absl::StrCat(base, "_", n);
    auto& rule = entries[key];
    rule.set_name(key);
    *rule.mutable_endpoints() = profile->endpoints();
    *rule.mutable_binaries() = profile->binaries();
    const bool credentialed = profile->credentials_size() > 0;
    for (auto& endpoint : *rule.mutable_endpoints()) {
      if (credentialed || !endpoint.credential_signing().empty()) endpoint.set_provider_credentialed(true);
    }
  }
  return own;
}

}  // namespace osh::policy
