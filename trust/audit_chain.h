// The audit hash chain (SPEC §8): canonical event bytes and hash = SHA-256(prev_hash || canonical bytes).
// Pure functions shared by the store (which writes the chain) and `policyctl audit verify` (offline).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace osh::trust {

struct AuditEvent {
  uint64_t seq = 0;          // 1, 2, 3, ... assigned by the store
  int64_t time_unix_ms = 0;
  std::string type;          // "admission", "refusal", "refresh", "release", "deletion", "mutation", ...
  std::string sandbox_id;
  std::string surface_id;
  std::string policy_digest;
  uint64_t policy_version = 0;
  std::vector<std::string> key_ids;  // verified key ids
  std::string outcome;       // "ok", "refused", "kept_last_good", "loaded", "failed", ...
  std::string reason;        // reason code and detail, or a note
  std::map<std::string, std::string> audit_context;  // the projection's audit_context, verbatim
  std::string prev_hash;     // lowercase hex, 64 zeros for the first event
  std::string hash;          // lowercase hex
};

inline const std::string kGenesisHash(64, '0');

// F("openshell.policy.audit.v1") || U64(seq) || I64(time_unix_ms) || F(type) || F(sandbox_id)
// || F(surface_id) || F(policy_digest) || U64(policy_version) || U32(n) || F(key_id)...
// || F(outcome) || F(reason) || U32(m) || F(k) || F(v)... (audit_context keys sorted bytewise);
// F, U32, U64, I64 as in SPEC §3.4.
std::string CanonicalAuditBytes(const AuditEvent& event);

// Lowercase hex SHA-256(raw prev_hash || canonical bytes).
std::string ChainHash(const std::string& prev_hash_hex, const AuditEvent& event);

}  // namespace osh::trust
