#include "gateway/core/governance_signature.h"

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "gateway/core/interceptor_governance.h"
#include "policy/provider_profile.h"

namespace osh::gateway {

namespace {

std::string GovernanceBase64Url(absl::string_view bytes) {
  std::string out;
  absl::WebSafeBase64Escape(bytes, &out);  // unpadded
  return out;
}

}  // namespace

std::string GovernanceSigningInput(const std::string& kid, const std::string& claims_json) {
  return absl::StrCat(GovernanceBase64Url(absl::StrCat(R"({"typ":"JWT","alg":"EdDSA","kid":")", kid, R"("})")), ".",
                      GovernanceBase64Url(claims_json));
}

std::string GovernanceKid(const trust::PublicKey& key) { return key.fingerprint().substr(0, 32); }

std::string GovernanceProfileClaims(const std::string& profile_id, const std::string& profile_hash) {
  // The id is [a-z0-9-] (policy::ValidateProviderProfile) and the hash "sha256:v2:<hex>": nothing
  // to escape.
  return absl::StrCat(R"({"sub":"provider-profile:)", profile_id,
                      R"(","iss":"openshell-governance-interceptor","aud":"openshell-governance-profile",)",
                      R"("iat":0,"exp":0,"hash_algorithm":")", kGovernanceHashAlgorithm, R"(","profile_id":")",
                      profile_id, R"(","profile_sha256":")", profile_hash, R"("})");
}

absl::StatusOr<std::string> GovernanceJwt(const trust::PrivateKey& key, const std::string& kid,
                                          const std::string& claims_json) {
  if (key.algorithm() != trust::kEd25519) {
    return absl::InvalidArgumentError(
        absl::StrCat("the governance format signs with Ed25519 only (the key is ", key.algorithm(), ")"));
  }
  const std::string input = GovernanceSigningInput(kid, claims_json);
  auto signature = key.Sign(input);
  if (!signature.ok()) return signature.status();
  return absl::StrCat(input, ".", GovernanceBase64Url(*signature));
}

absl::StatusOr<std::string> SignProviderProfile(const trust::PrivateKey& key, openshell::v1::ProviderProfile* profile) {
  auto hash = GovernanceProfileHash(*profile);  // taken without the profile-* annotations
  if (!hash.ok()) return hash.status();
  auto public_key = trust::PublicKey::FromPem(key.PublicKeyPem());
  if (!public_key.ok()) return public_key.status();
  std::string kid = GovernanceKid(*public_key);
  auto token = GovernanceJwt(key, kid, GovernanceProfileClaims(profile->id(), *hash));
  if (!token.ok()) return token.status();
  auto& annotations = *profile->mutable_annotations();
  annotations[policy::kProfileSignatureAnnotation] = *token;
  annotations[policy::kProfileHashAnnotation] = *hash;
  annotations[policy::kProfileSignatureKidAnnotation] = kid;
  return kid;
}

}  // namespace osh::gateway
