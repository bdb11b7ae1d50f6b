// Upstream OpenShell's rule for a token-grant credential's `audience_overrides`: two overrides that bind
// one of the profile's endpoints (host, port, path) equally well are ambiguous, and upstream refuses the
// profile — and with it the whole catalogue it is served (every create, attach and supervisor poll).
// Ported from upstream's profile validation (crates/openshell-providers, profiles.rs:
// validate_token_grant_audience_overrides and its helpers) so that such a profile is refused here, when
// it is set. Pure functions, thread-safe.
//
// Where this port cannot be exact it says "ambiguous" (the profile is refused here, which an operator
// sees and mends; upstream refusing it would fail a fleet): a path pattern or path with a non-ASCII byte
// is taken to overlap (upstream's glob matches by Unicode character).
#pragma once

#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "google/protobuf/repeated_ptr_field.h"
#include "openshell/sandbox/v1/sandbox.pb.h"
#include "openshell/v1/openshell_v1_subset.pb.h"

namespace osh::policy {

// The first ambiguity upstream reports for `credential`'s token grant over `endpoints`, in upstream's
// words ("ambiguous token_grant audience_overrides at indexes I and J for host:port path selectors 'A'
// and 'B'"); nothing when the credential has no token grant or no two overrides collide. The comparisons
// are bounded (50 million table cells per credential): past that the credential is refused, saying so.
std::optional<std::string> FindAmbiguousAudienceOverrides(
    const openshell::v1::ProviderProfileCredential& credential,
    const google::protobuf::RepeatedPtrField<openshell::sandbox::v1::NetworkEndpoint>& endpoints);

// Upstream's path-pattern match for a binding (the Rust `glob` crate's Pattern with default options:
// `?`, `*` and `[...]` may match '/', `**` is a whole component; a pattern the crate refuses matches
// nothing), after its `**`, `/**` and `<prefix>/**` shortcuts. Exposed for tests.
bool AudienceOverridePathMatches(absl::string_view pattern, absl::string_view path);

}  // namespace osh::policy
