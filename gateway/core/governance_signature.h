// The governance signature of a provider profile (../shared/interceptor/README.md §8): an EdDSA JWT over
// the profile's claims, carried in its openshell.nvidia.com/profile-signature, -hash and -signature-kid
// annotations. The one format the gateway's catalogue signs with (its builtin_signing_key) and verifies
// against the trust store, and that `policyctl profile sign` writes offline with an authority's key, so a
// profile signed elsewhere is set as it is. Pure functions, thread-safe.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "openshell/v1/openshell_v1_subset.pb.h"
#include "trust/keys.h"

namespace osh::gateway {

// The JWT the governance format carries: base64url(header) "." base64url(claims) "." base64url(signature),
// the header {"typ":"JWT","alg":"EdDSA","kid":<kid>}, `claims_json` verbatim. INVALID_ARGUMENT unless `key`
// is Ed25519.
absl::StatusOr<std::string> GovernanceJwt(const trust::PrivateKey& key, const std::string& kid,
                                          const std::string& claims_json);
// base64url(header) "." base64url(claims): what a governance JWT's signature covers.
std::string GovernanceSigningInput(const std::string& kid, const std::string& claims_json);
// The governance kid of a public key: hex of the first 16 bytes of SHA-256 of its SPKI DER.
std::string GovernanceKid(const trust::PublicKey& key);
// The claims of a profile's signature, in the README's order, without whitespace.
std::string GovernanceProfileClaims(const std::string& profile_id, const std::string& profile_hash);

// Signs `profile` with `key` (Ed25519 only): sets its three openshell.nvidia.com/profile-* annotations
// (replacing any) over its governance hash, taken without them. Returns the kid. INVALID_ARGUMENT for
// another algorithm.
absl::StatusOr<std::string> SignProviderProfile(const trust::PrivateKey& key, openshell::v1::ProviderProfile* profile);

}  // namespace osh::gateway
