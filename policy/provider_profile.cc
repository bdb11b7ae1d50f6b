#include "policy/provider_profile.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>

#include <algorithm>
#include <memory>
#include <set>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "policy/audience_overrides.h"
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

constexpr char kProviderLayerPrefix[] = "_provider_";

constexpr char kLooseEnds[] = "white space or a non-ASCII character at either end (upstream trims it before it "
                               "compares names: write the name itself)";

// Upstream's profile id: lowercase kebab-case ("a-z0-9" runs joined by single '-').
bool UpstreamProfileId(absl::string_view id) {
  if (id.empty() || id.front() == '-' || id.back() == '-' || absl::StrContains(id, "--")) return false;
  return std::all_of(id.begin(), id.end(), [](char c) { return (c >= 'a' && c <= 'z') || absl::ascii_isdigit(c) || c == '-'; });
}

// Upstream's reserved env-var namespace for placeholder revisions: "v<digits>_<[A-Za-z0-9_]+>".
bool ReservedPlaceholderRevision(absl::string_view name) {
  if (!absl::ConsumePrefix(&name, "v")) return false;
  const size_t underscore = name.find('_');
  if (underscore == absl::string_view::npos || underscore == 0) return false;
  const absl::string_view revision = name.substr(0, underscore);
  const absl::string_view key = name.substr(underscore + 1);
  return std::all_of(revision.begin(), revision.end(), [](char c) { return absl::ascii_isdigit(c); }) && !key.empty() &&
         std::all_of(key.begin(), key.end(), [](char c) { return absl::ascii_isalnum(c) || c == '_'; });
}

// An HTTP header name (RFC 9110 token) that does not override framing or the connection.
std::optional<std::string> HeaderNameProblem(absl::string_view name) {
  for (const char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && !absl::StrContains("!#$%&'*+-.^_`|~", c)) {
      return "not a valid HTTP header name";
    }
  }
  const std::string lower = absl::AsciiStrToLower(name);
  if (lower == "host" || lower == "content-length" || lower == "transfer-encoding" || lower == "connection") {
    return "may not override HTTP framing or connection headers";
  }
  return std::nullopt;
}

// A loopback IP literal (127.0.0.0/8, ::1, or IPv4-mapped 127.0.0.0/8), as inet_pton reads it.
bool IsLoopbackLiteral(const std::string& host) {
  in_addr v4{};
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (inet_pton(AF_INET6, host.c_str(), &v6) != 1) return false;
  if (IN6_IS_ADDR_LOOPBACK(&v6)) return true;
  return IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127;
}

// A token endpoint upstream calls: an absolute URL (parsed by libcurl's URL parser), https, or http to a
// loopback host or an in-cluster service name (<svc>.<ns>.svc or <svc>.<ns>.svc.cluster.local).
std::optional<std::string> TokenEndpointProblem(const std::string& endpoint) {
  std::unique_ptr<CURLU, decltype(&curl_url_cleanup)> url(curl_url(), &curl_url_cleanup);
  char* scheme_raw = nullptr;
  char* host_raw = nullptr;
  if (url == nullptr || curl_url_set(url.get(), CURLUPART_URL, endpoint.c_str(), CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK ||
      curl_url_get(url.get(), CURLUPART_SCHEME, &scheme_raw, 0) != CURLUE_OK ||
      curl_url_get(url.get(), CURLUPART_HOST, &host_raw, 0) != CURLUE_OK) {
    curl_free(scheme_raw);
    return "must be an absolute URL";
  }
  const std::string scheme = absl::AsciiStrToLower(scheme_raw);
  std::string host = absl::AsciiStrToLower(host_raw);
  curl_free(scheme_raw);
  curl_free(host_raw);
  if (scheme == "https") return std::nullopt;
  if (scheme == "http") {
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    if (host == "localhost" || IsLoopbackLiteral(host)) return std::nullopt;
    while (!host.empty() && host.back() == '.') host.pop_back();  // a service name may end in a dot
    const std::vector<absl::string_view> labels = absl::StrSplit(host, '.');
    const bool all_labels = std::all_of(labels.begin(), labels.end(), [](absl::string_view l) { return !l.empty(); });
    const bool service = all_labels && ((labels.size() == 3 && labels[2] == "svc") ||
                                        (labels.size() == 5 && labels[2] == "svc" && labels[3] == "cluster" &&
                                         labels[4] == "local"));
    if (service) return std::nullopt;
  }
  return "must use https, except http for loopback or in-cluster service hosts";
}

// A credential's own rules, as upstream's profile validation holds them; `env_vars` collects the names
// across the profile's credentials (each once).
std::optional<Violation> FindCredentialViolation(const os_v1::ProviderProfileCredential& credential,
                                                 const std::string& path, std::set<std::string>* env_vars) {
  for (const auto& [field, value] :
       {std::pair<const char*, const std::string*>{"auth_style", &credential.auth_style()},
        {"header_name", &credential.header_name()}, {"query_param", &credential.query_param()},
        {"path_template", &credential.path_template()}}) {
    if (UpstreamTrimMayChange(*value)) return Violation{absl::StrCat(path, ".", field), kLooseEnds};
  }
  for (int j = 0; j < credential.env_vars_size(); ++j) {
    const std::string& name = credential.env_vars(j);
    const std::string where = absl::StrCat(path, ".env_vars[", j, "]");
    if (UpstreamTrimMayChange(name)) return Violation{where, kLooseEnds};
    if (name.empty()) return Violation{where, "must not be empty"};
    if (ReservedPlaceholderRevision(name)) {
      return Violation{where, absl::StrCat("'", name, "' uses the OpenShell placeholder revision namespace (v<n>_...)")};
    }
    if (!env_vars->insert(name).second) return Violation{where, absl::StrCat("'", name, "' appears twice in the profile")};
  }
  // Names with loose ends were refused above: what remains is compared as upstream compares it, trimmed.
  const std::string style = absl::AsciiStrToLower(credential.auth_style());
  if (style == "bearer" || style == "header") {
    if (credential.header_name().empty()) {
      return Violation{path + ".header_name", absl::StrCat("required for ", style, " auth")};
    }
  } else if (style == "path") {
    const absl::string_view tmpl = credential.path_template();
    if (tmpl.empty()) return Violation{path + ".path_template", "required for path auth"};
    size_t count = 0;
    for (size_t at = tmpl.find("{credential}"); at != absl::string_view::npos; at = tmpl.find("{credential}", at + 1)) {
      ++count;
    }
    if (count != 1) {
      return Violation{path + ".path_template", absl::StrCat("must contain {credential} exactly once (", count, " times)")};
    }
  } else if (style == "query") {
    if (credential.query_param().empty()) {
      return Violation{path + ".query_param", "required for query auth"};
    }
  } else if (!style.empty() && style != "basic") {
    return Violation{path + ".auth_style",
                     absl::StrCat("'", credential.auth_style(), "': one of basic, bearer, header, path, query (or none)")};
  }
  if (credential.has_refresh()) {
    const os_v1::ProviderCredentialRefresh& refresh = credential.refresh();
    if (refresh.strategy() == os_v1::PROVIDER_CREDENTIAL_REFRESH_STRATEGY_UNSPECIFIED) {
      return Violation{path + ".refresh.strategy", "required"};
    }
    if (refresh.refresh_before_seconds() < 0) return Violation{path + ".refresh.refresh_before_seconds", "must be >= 0"};
    if (refresh.max_lifetime_seconds() < 0) return Violation{path + ".refresh.max_lifetime_seconds", "must be >= 0"};
    std::set<std::string> materials;
    for (int j = 0; j < refresh.material_size(); ++j) {
      const std::string& name = refresh.material(j).name();
      const std::string where = absl::StrCat(path, ".refresh.material[", j, "].name");
      if (UpstreamTrimMayChange(name)) return Violation{where, kLooseEnds};
      if (name.empty()) return Violation{where, "required"};
      if (!materials.insert(name).second) return Violation{where, absl::StrCat("'", name, "' appears twice")};
    }
  }
  if (credential.has_token_grant()) {
    if (auto problem = TokenEndpointProblem(credential.token_grant().token_endpoint())) {
      return Violation{path + ".token_grant.token_endpoint", *problem};
    }
    if (!style.empty() && style != "bearer" && style != "header") {
      return Violation{path + ".auth_style", "a token_grant credential uses bearer or header auth"};
    }
    const absl::string_view header = credential.header_name();
    if (auto problem = HeaderNameProblem(header.empty() && style != "header" ? "Authorization" : header)) {
      return Violation{path + ".header_name", *problem};
    }
  }
  return std::nullopt;
}

// The first broken rule as (field path, what), or nothing.
std::optional<Violation> FindProfileViolation(const os_v1::ProviderProfile& profile) {
  if (profile.id().empty()) return Violation{"id", "required"};
  if (profile.id().size() > kMaxProfileIdBytes) {
    return Violation{"id", absl::StrCat("at most ", kMaxProfileIdBytes, " characters")};
  }
  // Upstream's rule (an id it would not take fails its whole catalogue, every sandbox's with it).
  if (!UpstreamProfileId(profile.id())) {
    return Violation{"id", absl::StrCat("'", profile.id(),
                                        "': lowercase kebab-case, only a-z, 0-9 and '-' (as the OpenShell gateway "
                                        "requires)")};
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
  std::set<std::string> env_vars;
  for (int i = 0; i < profile.credentials_size(); ++i) {
    const os_v1::ProviderProfileCredential& credential = profile.credentials(i);
    const std::string& name = credential.name();
    const std::string path = absl::StrCat("credentials[", i, "]");
    if (UpstreamTrimMayChange(name)) return Violation{path + ".name", kLooseEnds};
    if (name.empty()) return Violation{path + ".name", "required"};
    if (!credentials.insert(name).second) return Violation{path + ".name", absl::StrCat("'", name, "' appears twice")};
    if (auto violation = FindCredentialViolation(credential, path, &env_vars)) return violation;
  }
  std::set<std::string> discovered;
  for (int i = 0; i < profile.discovery().credentials_size(); ++i) {
    const std::string& name = profile.discovery().credentials(i);
    const std::string path = absl::StrCat("discovery.credentials[", i, "]");
    if (UpstreamTrimMayChange(name)) return Violation{path, kLooseEnds};
    if (name.empty()) return Violation{path, "required"};
    if (!discovered.insert(name).second) return Violation{path, absl::StrCat("'", name, "' appears twice")};
    if (!credentials.contains(name)) {
      return Violation{path, absl::StrCat("'", name, "' is not one of the profile's credentials")};
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
  // Token-grant audience overrides, over the endpoints just checked: upstream refuses two that bind one
  // endpoint equally well.
  for (int i = 0; i < profile.credentials_size(); ++i) {
    const os_v1::ProviderProfileCredential& credential = profile.credentials(i);
    const std::string path = absl::StrCat("credentials[", i, "].token_grant.audience_overrides");
    for (int j = 0; j < credential.token_grant().audience_overrides_size(); ++j) {
      const auto& override_config = credential.token_grant().audience_overrides(j);
      if (UpstreamTrimMayChange(override_config.host())) return Violation{absl::StrCat(path, "[", j, "].host"), kLooseEnds};
      if (UpstreamTrimMayChange(override_config.path())) return Violation{absl::StrCat(path, "[", j, "].path"), kLooseEnds};
    }
    if (auto ambiguity = FindAmbiguousAudienceOverrides(credential, profile.endpoints())) {
      return Violation{path, *std::move(ambiguity)};
    }
  }
  return std::nullopt;
}

}  // namespace

bool ProviderProfileSigned(const os_v1::ProviderProfile& profile) {
  const auto& annotations = profile.annotations();
  return annotations.contains(kProfileSignatureAnnotation) && annotations.contains(kProfileHashAnnotation) &&
         annotations.contains(kProfileSignatureKidAnnotation);
}

std::optional<absl::string_view> UpstreamProviderTypeAlias(absl::string_view name) {
  // openshell-providers normalize_provider_type (after trimming and lower-casing, which our ids need not).
  if (name == "gh") return absl::string_view("github");
  if (name == "glab") return absl::string_view("gitlab");
  return std::nullopt;
}

std::string AliasRefusal(absl::string_view alias, absl::string_view canonical) {
  return absl::StrCat("'", alias, "': the OpenShell gateway reads a provider of type '", alias, "' as '", canonical,
                      "' and composes that profile, never one named '", alias, "': name it '", canonical, "'");
}

std::optional<std::string> ProviderAliasRefusal(absl::string_view provider) {
  const std::optional<absl::string_view> canonical = UpstreamProviderTypeAlias(provider);
  if (!canonical) return std::nullopt;
  return absl::StrCat("provider '", provider, "': the OpenShell gateway reads the provider type '", provider, "' as '",
                      *canonical, "' and composes that profile: name the provider '", *canonical, "'");
}

absl::Status ValidateNewProviderProfile(const os_v1::ProviderProfile& profile) {
  if (auto canonical = UpstreamProviderTypeAlias(profile.id())) {
    return InvalidProfile("id", AliasRefusal(profile.id(), *canonical));
  }
  return ValidateProviderProfile(profile);
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
  std::optional<Violation> violation = FindProfileViolation(profile);
  if (auto canonical = UpstreamProviderTypeAlias(profile.id()); canonical && !violation) {
    violation = Violation{"id", AliasRefusal(profile.id(), *canonical)};
  }
  if (violation) {
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
  if (first == std::string::npos) return absl::StrCat(kProviderLayerPrefix, "unnamed");
  const size_t last = key.find_last_not_of('_');
  return absl::StrCat(kProviderLayerPrefix, key.substr(first, last - first + 1));
}

bool UpstreamTrimMayChange(absl::string_view text) {
  if (text.empty()) return false;
  auto loose = [](unsigned char c) { return c >= 0x80 || absl::ascii_isspace(c); };
  return loose(static_cast<unsigned char>(text.front())) || loose(static_cast<unsigned char>(text.back()));
}

std::vector<std::string> ReservedProviderKeys(const SandboxPolicy& policy) {
  std::vector<std::string> keys;
  for (const auto& [key, rule] : policy.network_policies()) {
    if (absl::StartsWith(key, kProviderLayerPrefix)) keys.push_back(key);
  }
  std::sort(keys.begin(), keys.end());
  return keys;
}

void DropReservedProviderKeys(SandboxPolicy* policy) {
  for (const std::string& key : ReservedProviderKeys(*policy)) policy->mutable_network_policies()->erase(key);
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
