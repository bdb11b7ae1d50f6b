// Policy scopes of the builtin driver: "default", "tenant:<id>", "sandbox:<id>".
#pragma once

#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/status.h"
#include "openshell/policy/driver/v1/driver.pb.h"

namespace osh::policy {

inline constexpr absl::string_view kDefaultScope = "default";
inline constexpr absl::string_view kTenantAttribute = "tenant_id";
// The longest id of a tenant:<id> or sandbox:<id> scope: the largest attribute value (a tenant) or sandbox
// id a gateway may be configured to take (max_attribute_value_bytes, max_sandbox_id_bytes).
inline constexpr size_t kMaxScopeIdBytes = 65536;

// OK for a well-formed scope; INVALID_ARGUMENT naming the scope otherwise.
absl::Status ValidateScope(absl::string_view scope);

// The scopes that apply to a runtime context, most specific first:
// sandbox:<sandbox_id>, tenant:<attributes.tenant_id> (when set), default.
std::vector<std::string> ScopesFor(const openshell::policy::driver::v1::RuntimeContext& context);

}  // namespace osh::policy
