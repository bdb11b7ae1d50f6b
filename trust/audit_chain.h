// The audit hash chain (SPEC §8): canonical event bytes, hash = SHA-256(prev_hash || canonical bytes),
// the event's wire/JSON form, and the offline check of an export. Pure functions, thread-safe; shared by
// the store (which writes the chain), the gateway (which lists it) and `policyctl audit` (offline).
#pragma once

#include <cstdint>
#include <istream>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "openshell/policy/gateway/v1/gateway.pb.h"
#include "trust/audit_vocabulary.h"

namespace osh::trust {

struct AuditEvent {
  uint64_t seq = 0;          // 1, 2, 3, ... assigned by the store
  int64_t time_unix_ms = 0;
  audit::TypeWord type;      // audit::Type::kAdmission, ... (hashed and stored as its name)
  std::string sandbox_id;
  std::string surface_id;
  std::string policy_digest;
  uint64_t policy_version = 0;
  std::vector<std::string> key_ids;  // verified key ids
  audit::OutcomeWord outcome;  // audit::Outcome::kOk, ... (hashed and stored as its name)
  std::string reason;        // reason code and detail, or a note
  std::map<std::string, std::string> audit_context;  // the projection's audit_context, verbatim
  std::string actor;         // who caused it: "uid:<n>" (admin socket), "x509:<subject>; issuer <issuer>; serial <hex>"
                             // (admin TLS), "" (the gateway)
  std::string prev_hash;     // lowercase hex, 64 zeros for the first event
  std::string hash;          // lowercase hex
};

inline const std::string kGenesisHash(64, '0');

// F("openshell.policy.audit.v1") || U64(seq) || I64(time_unix_ms) || F(type) || F(sandbox_id)
// || F(surface_id) || F(policy_digest) || U64(policy_version) || U32(n) || F(key_id)...
// || F(outcome) || F(reason) || U32(m) || F(k) || F(v)... (audit_context keys sorted bytewise)
// [ || F("actor") || F(actor) ]  — only when actor is not empty, so events without one (all events
// written before actors were recorded) hash as they always did; the encoding stays prefix-free.
// F, U32, U64, I64 as in SPEC §3.4.
std::string CanonicalAuditBytes(const AuditEvent& event);
// The event whose canonical bytes `bytes` are (a log entry read back): INVALID_ARGUMENT naming what is
// wrong unless they decode whole and encode again to exactly `bytes`.
absl::StatusOr<AuditEvent> ParseCanonicalAuditBytes(absl::string_view bytes);

// Lowercase hex SHA-256(raw prev_hash || canonical bytes).
std::string ChainHash(const std::string& prev_hash_hex, const AuditEvent& event);

// Text fields that are not valid UTF-8 (a driver's error message, say) are replaced by their C escape,
// so every event has a JSON form. The store applies this before hashing.
void MakeTextUtf8(AuditEvent* event);

// The largest canonical form an event may have: a verifiable-log entry (C2SP tlog-tiles entry bundles
// frame an entry with two length bytes).
inline constexpr size_t kMaxCanonicalAuditBytes = 65535;
// Cuts the longest free-text fields (the reason, audit_context values; at a UTF-8 character boundary,
// with a marker saying so; a context of thousands of small values is replaced by one entry saying so) until
// CanonicalAuditBytes(*event) fits kMaxCanonicalAuditBytes. The store applies
// this with MakeTextUtf8, before hashing: one event never stops the log.
void FitCanonicalSize(AuditEvent* event);

// The chain's head as a store advances it inside its transaction: Seal gives an event its seq, its time
// (when unset), prev_hash and hash, and moves the head on; Rewind takes it back to a Mark when the
// transaction (or a savepoint inside it) rolls back. Any backend shares this logic. Not thread-safe: the
// store calls it under its write lock.
class ChainSealer {
 public:
  struct Mark {
    uint64_t seq = 0;
    std::string hash = kGenesisHash;
  };
  void Reset(Mark head) { head_ = std::move(head); }
  void Seal(AuditEvent* event, int64_t now_unix_ms);
  const Mark& head() const { return head_; }
  void Rewind(Mark mark) { head_ = std::move(mark); }

 private:
  Mark head_;
};

// The wire form (openshell.policy.gateway.v1.AuditEvent) and back; lossless.
openshell::policy::gateway::v1::AuditEvent ToProto(const AuditEvent& event);
AuditEvent FromProto(const openshell::policy::gateway::v1::AuditEvent& event);

// One line of `policyctl audit export`: the protobuf JSON mapping of the wire form, proto field names,
// every field printed, no newline.
std::string ToJsonLine(const AuditEvent& event);

// The verdict of an offline chain check.
struct ChainVerdict {
  bool whole = true;
  uint64_t events = 0;              // events read and found linked
  uint64_t head_seq = 0;            // the last good event (0: none)
  std::string head_hash = kGenesisHash;
  // When not whole: the first seq whose link is broken, the 1-based line where it shows, and why.
  uint64_t first_broken_seq = 0;
  uint64_t line = 0;
  std::string detail;
};

// Recomputes the chain of an export (JSON lines, from seq 1): each line must parse (no unknown fields),
// carry the next seq, link to the previous hash and hash to its own `hash`. Stops at the first break.
// `anchor_hash`, when non-empty, is a head hash recorded earlier: some event must carry it (catches a
// truncated tail, which the chain alone cannot show).
ChainVerdict VerifyExport(std::istream& lines, const std::string& anchor_hash = "");

}  // namespace osh::trust
