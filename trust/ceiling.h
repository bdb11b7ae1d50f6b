// Signed ceilings (managed maxima): making, signing, checking, and the file form. A ceiling is checked
// against the trust store exactly as a projection's signatures are (same keys, threshold, validity
// windows and revocation) over its own signed bytes (see ceiling.proto for the layout). Pure; thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "openshell/policy/ceiling/v1/ceiling.pb.h"
#include "openshell/sandbox/v1/sandbox.pb.h"
#include "trust/keys.h"
#include "trust/projection_check.h"
#include "trust/trust_store.h"

namespace osh::trust {

using CeilingMessage = openshell::policy::ceiling::v1::Ceiling;

inline constexpr char kCeilingDomain[] = "openshell.policy.ceiling.v1";

namespace reason {
inline constexpr char kInvalidCeiling[] = "invalid_ceiling";
inline constexpr char kExceedsCeiling[] = "exceeds_ceiling";
inline constexpr char kContainmentUnknown[] = "containment_unknown";
// The database lost the ceiling the audit chain says is in force (row deleted or replaced): issue 25.17.
inline constexpr char kCeilingMissing[] = "ceiling_missing";
}  // namespace reason

// The exact bytes a ceiling's signatures cover.
std::string CeilingSignedBytes(const CeilingMessage& ceiling);

// An unsigned ceiling for `policy` (which must be valid): canonical body and its digest.
CeilingMessage MakeCeiling(const openshell::sandbox::v1::SandboxPolicy& policy, const std::string& ceiling_id,
                           uint64_t version, const std::string& audit_label, int64_t issued_at_unix);

// Appends a signature by `key` under `key_id` (a co-signer adds theirs to the same file).
absl::Status SignCeiling(CeilingMessage* ceiling, const PrivateKey& key, const std::string& key_id);

struct CeilingCheckInput {
  const TrustStore* trust_store = nullptr;  // required: an unverifiable ceiling is refused
  int64_t now_unix = 0;
  int64_t clock_skew_s = 60;
  std::optional<uint64_t> in_force_version;  // the ceiling in force: a new one must have a higher version
  std::string expected_ceiling_id;           // not empty: the only ceiling_id accepted (invalid_ceiling otherwise)
};

// In order: well-formed and, when the input names one, of the expected ceiling_id (invalid_ceiling), digest recomputed (digest_mismatch), body strict and valid
// (incomplete_projection / invalid_policy), signatures (unsigned, unknown_key, bad_signature,
// key_revoked, key_not_valid_now, threshold_not_met), version above the one in force (rollback).
// On success `policy` holds the parsed ceiling policy.
CheckResult CheckCeiling(const CeilingMessage& ceiling, const CeilingCheckInput& input);

// The file form: protobuf's JSON mapping of the message (bytes in base64). Errors name `source`.
absl::StatusOr<CeilingMessage> ParseCeilingJson(const std::string& text, const std::string& source);
std::string CeilingToJson(const CeilingMessage& ceiling);

}  // namespace osh::trust
