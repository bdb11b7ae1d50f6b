// The whole projection check of SPEC §3.3, in its order, before anything is persisted.
// Pure: the same inputs give the same answer; thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "openshell/policy/driver/v1/driver.pb.h"
#include "openshell/sandbox/v1/sandbox.pb.h"
#include "trust/trust_store.h"
#include "trust/validated_body_cache.h"

namespace osh::trust {

// Stable reason codes (SPEC §3.3), the first word of every refusal.
namespace reason {
inline constexpr char kSurfaceNotAccepted[] = "surface_not_accepted";
inline constexpr char kDigestMismatch[] = "digest_mismatch";
inline constexpr char kUnsigned[] = "unsigned";
inline constexpr char kUnknownKey[] = "unknown_key";
inline constexpr char kBadSignature[] = "bad_signature";
inline constexpr char kKeyRevoked[] = "key_revoked";
inline constexpr char kKeyNotValidNow[] = "key_not_valid_now";
inline constexpr char kThresholdNotMet[] = "threshold_not_met";
inline constexpr char kContextMismatch[] = "context_mismatch";
inline constexpr char kExpired[] = "expired";
inline constexpr char kRollback[] = "rollback";
inline constexpr char kIncompleteProjection[] = "incomplete_projection";
inline constexpr char kInvalidPolicy[] = "invalid_policy";
inline constexpr char kNoVerifiedPolicy[] = "no_verified_policy";
}  // namespace reason

struct CheckInput {
  // The sandbox's runtime context; nullptr only for an offline check that has none (`policyctl verify`
  // without --sandbox): then a non-empty context_digest is not compared.
  const openshell::policy::driver::v1::RuntimeContext* context = nullptr;
  const std::vector<std::string>* accepted_surfaces = nullptr;              // required
  const TrustStore* trust_store = nullptr;  // nullptr: no verification (verification = none)
  int64_t now_unix = 0;
  int64_t clock_skew_s = 60;
  std::optional<uint64_t> admitted_version;  // set for an update of an admitted sandbox (rollback check)
  // Optional: reuses step 7's result for a body seen before (same recomputed digest). nullptr: always parse.
  ValidatedBodyCache* body_cache = nullptr;
};

struct CheckResult {
  std::string reason;  // "" when admitted
  std::string detail;
  std::vector<std::string> verified_key_ids;  // the counted keys, in signature order
  std::shared_ptr<const openshell::sandbox::v1::SandboxPolicy> policy;  // the parsed body when ok

  bool ok() const { return reason.empty(); }
  // "reason_code: detail"
  std::string Message() const;
  // FAILED_PRECONDITION with Message() and the reason as its payload (common::Refused), or OK.
  absl::Status ToStatus() const;
};

// Step 3 alone: at least the store's threshold of distinct trusted keys (by public key) carry a valid
// signature over the signed bytes, each unrevoked and inside its window (± skew_s).
CheckResult CheckSignatures(const openshell::policy::driver::v1::Projection& projection, const TrustStore& store,
                            int64_t now_unix, int64_t skew_s);

// The core of step 3 over any signed bytes (projections, ceilings): the same keys, threshold, windows
// and revocation.
struct SignatureRef {
  std::string key_id;
  absl::string_view signature;
};
CheckResult CheckSignaturesOver(const std::string& signed_bytes, const std::vector<SignatureRef>& signatures,
                                const TrustStore& store, int64_t now_unix, int64_t skew_s);

CheckResult CheckProjection(const openshell::policy::driver::v1::Projection& projection, const CheckInput& input);

}  // namespace osh::trust
