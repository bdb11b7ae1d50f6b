// The exact byte layouts of SPEC §3.4 (signed bytes) and §3.5 (context digest). Pure functions.
#pragma once

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

#include "openshell/policy/driver/v1/driver.pb.h"

namespace osh::trust {

// The framing primitives of SPEC §3.4, appended to `out`: U32/U64 big-endian, F(x) = U32(len) || x.
void PutU32(std::string* out, uint32_t n);
void PutU64(std::string* out, uint64_t n);
void PutField(std::string* out, absl::string_view x);

// signed_bytes of SPEC §3.4 for the envelope fields of `projection` (body, signatures and
// signing_key_id are not part of it).
std::string SignedBytes(const openshell::policy::driver::v1::Projection& projection);

// Lowercase hex context digest of SPEC §3.5.
std::string ContextDigest(const openshell::policy::driver::v1::RuntimeContext& context);

}  // namespace osh::trust
