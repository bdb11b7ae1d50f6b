#include "trust/projection_check.h"

#include <algorithm>
#include <set>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/errors.h"
#include "policy/body_codec.h"
#include "policy/digest.h"
#include "policy/validation.h"
#include "trust/encoding.h"
#include "trust/verified_signatures.h"

namespace osh::trust {
namespace {

using openshell::policy::driver::v1::Projection;

CheckResult Refuse(std::string reason, std::string detail) {
  CheckResult result;
  result.reason = std::move(reason);
  result.detail = std::move(detail);
  return result;
}

}  // namespace

CheckResult CheckSignatures(const Projection& p, const TrustStore& store, int64_t now, int64_t skew) {
  std::vector<SignatureRef> signatures;
  if (!p.signature().empty() || !p.signing_key_id().empty()) signatures.push_back({p.signing_key_id(), p.signature()});
  for (const auto& extra : p.additional_signatures()) signatures.push_back({extra.key_id(), extra.signature()});
  if (signatures.empty()) return Refuse(reason::kUnsigned, "the projection carries no signature");
  return CheckSignaturesOver(SignedBytes(p), signatures, store, now, skew);
}

CheckResult CheckSignaturesOver(const std::string& signed_bytes, const std::vector<SignatureRef>& signatures,
                                const TrustStore& store, int64_t now, int64_t skew) {
  if (signatures.empty()) return Refuse(reason::kUnsigned, "no signature");
  std::set<std::string> counted_fingerprints;
  CheckResult result;
  std::string first_reason, first_detail;
  auto note = [&](const char* reason, std::string detail) {
    if (first_reason.empty()) {
      first_reason = reason;
      first_detail = std::move(detail);
    }
  };
  // Bounded work however many entries a projection carries (a driver's 50,000 copies of one bad signature
  // were 50,000 verifications): a key already counted is not verified again, an exact repeat of a
  // (key id, signature) pair is not looked at, and each key id gets at most kMaxAttemptsPerKey
  // verifications.
  constexpr int kMaxAttemptsPerKey = 4;
  // Views into `signatures` (which outlives the loop); nothing is allocated for the usual single signature.
  absl::flat_hash_set<std::pair<absl::string_view, absl::string_view>> seen;
  absl::flat_hash_map<absl::string_view, int> attempts;
  const bool many = signatures.size() > 1;
  for (const auto& sig : signatures) {
    if (many && !seen.emplace(sig.key_id, sig.signature).second) continue;
    const TrustedKey* key = store.Find(sig.key_id);
    if (key != nullptr && counted_fingerprints.contains(key->public_key.fingerprint())) continue;
    if (key != nullptr && many && ++attempts[sig.key_id] > kMaxAttemptsPerKey) {
      note(reason::kBadSignature, absl::StrCat("more than ", kMaxAttemptsPerKey, " signatures by '", sig.key_id,
                                               "' to try: the rest are not verified"));
      continue;
    }
    if (key == nullptr) {
      note(reason::kUnknownKey, absl::StrCat("no trusted key '", sig.key_id, "'"));
      continue;
    }
    if (key->revoked) {
      note(reason::kKeyRevoked, absl::StrCat("key '", sig.key_id, "' is revoked"));
      continue;
    }
    if (!VerifiedSignatures::Shared().Verify(key->public_key, signed_bytes, sig.signature)) {
      note(reason::kBadSignature, absl::StrCat("signature by '", sig.key_id, "' (", key->public_key.algorithm(),
                                               ") does not verify"));
      continue;
    }
    if ((key->not_before_unix && now + skew < *key->not_before_unix) ||
        (key->not_after_unix && now - skew > *key->not_after_unix)) {
      note(reason::kKeyNotValidNow, absl::StrCat("key '", sig.key_id, "' is outside its validity window"));
      continue;
    }
    if (counted_fingerprints.insert(key->public_key.fingerprint()).second) result.verified_key_ids.push_back(sig.key_id);
  }
  if (counted_fingerprints.size() >= store.threshold()) return result;
  // No key counted: the first signature's own failure says most. Some counted: too few.
  if (counted_fingerprints.empty()) return Refuse(first_reason, first_detail);
  return Refuse(reason::kThresholdNotMet,
                absl::StrCat(counted_fingerprints.size(), " of ", store.threshold(), " required distinct keys signed",
                             first_reason.empty() ? "" : absl::StrCat(" (", first_reason, ": ", first_detail, ")")));
}

std::string CheckResult::Message() const { return absl::StrCat(reason, ": ", detail); }

absl::Status CheckResult::ToStatus() const {
  return ok() ? absl::OkStatus() : common::Refused(absl::StatusCode::kFailedPrecondition, reason, detail);
}

CheckResult CheckProjection(const Projection& p, const CheckInput& input) {
  // 1. Surface.
  const auto& accepted = *input.accepted_surfaces;
  if (std::find(accepted.begin(), accepted.end(), p.surface_id()) == accepted.end()) {
    return Refuse(reason::kSurfaceNotAccepted, absl::StrCat("surface '", p.surface_id(), "' is not among the accepted [",
                                                            absl::StrJoin(accepted, ", "), "]"));
  }
  // 2. Digest, recomputed from the body.
  if (!policy::IsLowercaseHexDigest(p.policy_digest())) {
    return Refuse(reason::kDigestMismatch, "policy_digest must be 64 lowercase hex characters");
  }
  if (const std::string actual = policy::Sha256Hex(p.body()); actual != p.policy_digest()) {
    return Refuse(reason::kDigestMismatch,
                  absl::StrCat("policy_digest ", p.policy_digest(), " but SHA-256 of the body is ", actual));
  }
  // 3. Trust.
  CheckResult result;
  if (input.trust_store != nullptr) {
    result = CheckSignatures(p, *input.trust_store, input.now_unix, input.clock_skew_s);
    if (!result.ok()) return result;
  }
  // 4. Context binding.
  if (!p.context_digest().empty()) {
    if (input.context != nullptr && p.context_digest() != ContextDigest(*input.context)) {
      return Refuse(reason::kContextMismatch,
                    absl::StrCat("projection is bound to another runtime context than sandbox '",
                                 input.context->sandbox_id(), "'"));
    }
  } else if (input.trust_store != nullptr && input.trust_store->require_context_binding()) {
    return Refuse(reason::kContextMismatch, "the trust store requires context binding and context_digest is empty");
  }
  // 5. Expiry.
  if (p.expires_at_unix() != 0 && p.expires_at_unix() <= input.now_unix - input.clock_skew_s) {
    return Refuse(reason::kExpired, absl::StrCat("expired at ", p.expires_at_unix(), " (now ", input.now_unix,
                                                 ", skew ", input.clock_skew_s, "s)"));
  }
  // 6. Rollback.
  if (input.admitted_version && p.policy_version() < *input.admitted_version) {
    return Refuse(reason::kRollback, absl::StrCat("policy_version ", p.policy_version(),
                                                  " is older than the admitted ", *input.admitted_version));
  }
  // 7. Body: complete and valid (or the very same bytes were found so before).
  if (input.body_cache != nullptr) {
    if (auto cached = input.body_cache->Find(p.policy_digest())) {
      result.policy = std::move(cached);
      return result;
    }
  }
  auto policy = policy::ParseBodyStrict(p.body());
  if (!policy.ok()) {
    std::string message(policy.status().message());
    const std::string prefix = absl::StrCat(reason::kIncompleteProjection, ": ");
    if (message.rfind(prefix, 0) == 0) message.erase(0, prefix.size());
    return Refuse(reason::kIncompleteProjection, message);
  }
  if (auto violation = policy::FindViolation(*policy)) {
    return Refuse(reason::kInvalidPolicy, absl::StrCat(violation->path, ": ", violation->message));
  }
  result.policy = std::make_shared<const openshell::sandbox::v1::SandboxPolicy>(*std::move(policy));
  if (input.body_cache != nullptr) input.body_cache->Insert(p.policy_digest(), result.policy);
  return result;
}

}  // namespace osh::trust
