// The exact byte layouts of SPEC §3.4 (signed bytes) and §3.5 (context digest). Pure functions.
#pragma once

#include <string>

#include "openshell/policy/driver/v1/driver.pb.h"

namespace osh::trust {

// signed_bytes of SPEC §3.4 for the envelope fields of `projection` (body, signatures and
// signing_key_id are not part of it).
std::string SignedBytes(const openshell::policy::driver::v1::Projection& projection);

// Lowercase hex context digest of SPEC §3.5.
std::string ContextDigest(const openshell::policy::driver::v1::RuntimeContext& context);

}  // namespace osh::trust
