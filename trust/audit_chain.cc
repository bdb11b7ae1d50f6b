#include "trust/audit_chain.h"

#include "policy/digest.h"

namespace osh::trust {
namespace {

void PutU32(std::string* out, uint32_t n) {
  for (int shift = 24; shift >= 0; shift -= 8) out->push_back(static_cast<char>((n >> shift) & 0xff));
}
void PutU64(std::string* out, uint64_t n) {
  for (int shift = 56; shift >= 0; shift -= 8) out->push_back(static_cast<char>((n >> shift) & 0xff));
}
void PutField(std::string* out, const std::string& x) {
  PutU32(out, static_cast<uint32_t>(x.size()));
  out->append(x);
}

std::string FromHex(const std::string& hex) {
  std::string out;
  out.reserve(hex.size() / 2);
  auto nibble = [](char c) { return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10; };
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out.push_back(static_cast<char>(nibble(hex[i]) << 4 | nibble(hex[i + 1])));
  return out;
}

}  // namespace

std::string CanonicalAuditBytes(const AuditEvent& e) {
  std::string out;
  PutField(&out, "openshell.policy.audit.v1");
  PutU64(&out, e.seq);
  PutU64(&out, static_cast<uint64_t>(e.time_unix_ms));
  PutField(&out, e.type);
  PutField(&out, e.sandbox_id);
  PutField(&out, e.surface_id);
  PutField(&out, e.policy_digest);
  PutU64(&out, e.policy_version);
  PutU32(&out, static_cast<uint32_t>(e.key_ids.size()));
  for (const auto& id : e.key_ids) PutField(&out, id);
  PutField(&out, e.outcome);
  PutField(&out, e.reason);
  PutU32(&out, static_cast<uint32_t>(e.audit_context.size()));
  for (const auto& [k, v] : e.audit_context) {  // std::map<std::string> orders bytewise
    PutField(&out, k);
    PutField(&out, v);
  }
  return out;
}

std::string ChainHash(const std::string& prev_hash_hex, const AuditEvent& event) {
  return policy::Sha256Hex(FromHex(prev_hash_hex) + CanonicalAuditBytes(event));
}

}  // namespace osh::trust
