#include "trust/encoding.h"

#include <algorithm>
#include <cstdint>
#include "absl/strings/string_view.h"
#include <utility>
#include <vector>

#include "policy/digest.h"

namespace osh::trust {
void PutU32(std::string* out, uint32_t n) {
  for (int shift = 24; shift >= 0; shift -= 8) out->push_back(static_cast<char>((n >> shift) & 0xff));
}
void PutU64(std::string* out, uint64_t n) {
  for (int shift = 56; shift >= 0; shift -= 8) out->push_back(static_cast<char>((n >> shift) & 0xff));
}
void PutField(std::string* out, absl::string_view x) {
  PutU32(out, static_cast<uint32_t>(x.size()));
  out->append(x.data(), x.size());
}

namespace {

// U32(n) || F(k1) || F(v1) || ... with keys sorted bytewise.
void PutSortedMap(std::string* out, const google::protobuf::Map<std::string, std::string>& map) {
  std::vector<std::pair<absl::string_view, absl::string_view>> entries(map.begin(), map.end());
  std::sort(entries.begin(), entries.end());  // absl::string_view compares bytewise (char_traits<char>)
  PutU32(out, static_cast<uint32_t>(entries.size()));
  for (const auto& [k, v] : entries) {
    PutField(out, k);
    PutField(out, v);
  }
}

}  // namespace

std::string SignedBytes(const openshell::policy::driver::v1::Projection& p) {
  std::string out;
  out.reserve(256);
  PutField(&out, "openshell.policy.projection.v1");
  PutField(&out, p.surface_id());
  PutField(&out, p.policy_digest());
  PutU64(&out, p.policy_version());
  PutField(&out, p.context_digest());
  PutU64(&out, static_cast<uint64_t>(p.issued_at_unix()));
  PutU64(&out, static_cast<uint64_t>(p.expires_at_unix()));
  PutSortedMap(&out, p.audit_context());
  return out;
}

std::string ContextDigest(const openshell::policy::driver::v1::RuntimeContext& context) {
  std::string out;
  PutField(&out, "openshell.policy.context.v1");
  PutField(&out, context.sandbox_id());
  PutField(&out, context.user_subject());
  PutSortedMap(&out, context.attributes());
  return policy::Sha256Hex(out);
}

}  // namespace osh::trust
