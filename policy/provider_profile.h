// OpenShell provider profiles (openshell.v1.ProviderProfile; ../shared/interceptor/README.md §7): the
// file form operators write (`policyctl profile set -f FILE.yaml`), the rules a profile of this gateway's
// catalogue must meet, and how upstream composes a sandbox's policy with its providers' layers. Pure
// functions, thread-safe.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "openshell/sandbox/v1/sandbox.pb.h"
#include "openshell/v1/openshell_v1_subset.pb.h"

namespace osh::policy {

// The annotations of a signed profile (README §8): this gateway sets them when it signs, `policyctl
// profile sign` when an authority signs offline; the profile hash is taken without them.
inline constexpr char kProfileAnnotationPrefix[] = "openshell.nvidia.com/profile-";
inline constexpr char kProfileSignatureAnnotation[] = "openshell.nvidia.com/profile-signature";
inline constexpr char kProfileHashAnnotation[] = "openshell.nvidia.com/profile-hash";
inline constexpr char kProfileSignatureKidAnnotation[] = "openshell.nvidia.com/profile-signature-kid";

// Parses and validates a profile file (YAML or JSON) in upstream's file form: the message's field names
// at every depth, `binaries` as plain paths (or {path, harness}), `category` and a refresh `strategy` by
// their short names (case-insensitive, '-' for '_'), an L7 rule's `tool: X` for `params: {name: X}`, a
// query matcher as a bare glob. Refused, with the line: unknown keys, credential_binding,
// advisor_proposed and provider_credentialed on an endpoint, `rules: []` and `deny_rules: []`. An
// absent category becomes `other`. Errors are INVALID_ARGUMENT "<source>:<line>: <field path>: <what>".
absl::StatusOr<openshell::v1::ProviderProfile> ParseProviderProfileText(absl::string_view text,
                                                                        absl::string_view source);
// Reads and parses a file; an unreadable file is NOT_FOUND / PERMISSION_DENIED naming the path.
absl::StatusOr<openshell::v1::ProviderProfile> LoadProviderProfileFile(const std::string& path);
// The profile in the file form (YAML; binaries as {path}), so `profile get` output can be set again.
std::string ProviderProfileToYaml(const openshell::v1::ProviderProfile& profile);

// The rules a profile of the catalogue meets: `id` of 1..128 characters from [A-Za-z0-9._-]; a
// `display_name`; `source`, `scope` empty and `resource_version` 0 (upstream sets them); no
// openshell.nvidia.com/profile-* annotation but a whole signature (all three of the keys above, as
// `policyctl profile sign` writes them; checked by whoever verifies it); credential names unique and
// non-empty, and discovery naming only them; endpoints and binaries valid as a policy's network entry
// (SCHEMA.md), without credential_binding, advisor_proposed or provider_credentialed. OK, or
// INVALID_ARGUMENT "invalid_profile: <field path>: <what>".
absl::Status ValidateProviderProfile(const openshell::v1::ProviderProfile& profile);
// The same for a profile being set (not one stored before): its id must also not be one of upstream's
// provider-type aliases (UpstreamProviderTypeAlias), which upstream never composes. ParseProviderProfileText
// holds a file to it as well.
absl::Status ValidateNewProviderProfile(const openshell::v1::ProviderProfile& profile);
// The profile id upstream composes for a provider of type `name` when `name` is one of its aliases
// (openshell-providers normalize_provider_type: "gh" is "github", "glab" is "gitlab"); nullopt otherwise.
std::optional<absl::string_view> UpstreamProviderTypeAlias(absl::string_view name);
// Why a provider named `provider` is refused in a composition ("provider 'gh': …", the detail of
// `unknown_provider`), when it is such an alias; nullopt otherwise.
std::optional<std::string> ProviderAliasRefusal(absl::string_view provider);

// Whether `profile` carries a whole signature: the three openshell.nvidia.com/profile-* annotations.
bool ProviderProfileSigned(const openshell::v1::ProviderProfile& profile);

// The key of a provider's layer in network_policies: "_provider_" + the name lower-cased, every
// character outside [a-z0-9_] replaced by '_', leading and trailing '_' trimmed ("unnamed" if nothing is
// left).
std::string ProviderLayerKey(absl::string_view provider_name);

// Whether Rust's str::trim (Unicode white space), which upstream applies to names before it compares them,
// could change `text`: white space, or any byte outside ASCII, at either end. Such a name is refused rather
// than trimmed, so what is checked here is what upstream names.
bool UpstreamTrimMayChange(absl::string_view text);

// Upstream's reserved namespace for provider layers: the network_policies keys of `policy` that begin with
// "_provider_", in key order. Upstream refuses a user-authored sandbox policy holding one (INVALID_ARGUMENT)
// and strips them from a supervisor's own sync before it keeps the policy, so an own policy is checked here
// only without them (refused, or stripped as upstream strips them): entries upstream drops could otherwise
// hide, with their deny rules, what the rest of the policy allows.
std::vector<std::string> ReservedProviderKeys(const openshell::sandbox::v1::SandboxPolicy& policy);
// Removes those entries from `policy` (as upstream does to a supervisor's own sync).
void DropReservedProviderKeys(openshell::sandbox::v1::SandboxPolicy* policy);

// Upstream's composition: `own` plus, for each provider in order, one network_policies entry (key
// ProviderLayerKey, `_2`, `_3`, ... on a collision; value {name: key, endpoints, binaries}; endpoints
// marked provider_credentialed when the profile has credentials or the endpoint credential_signing).
// Concatenated, never merged: no existing entry is changed.
openshell::sandbox::v1::SandboxPolicy ComposeProviderLayers(
    openshell::sandbox::v1::SandboxPolicy own,
    const std::vector<std::pair<std::string, const openshell::v1::ProviderProfile*>>& providers);

}  // namespace osh::policy
