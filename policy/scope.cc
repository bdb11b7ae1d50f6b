#include "policy/scope.h"

#include "absl/strings/str_cat.h"

namespace osh::policy {

absl::Status ValidateScope(absl::string_view scope) {
  if (scope == kDefaultScope) return absl::OkStatus();
  for (absl::string_view prefix : {absl::string_view("tenant:"), absl::string_view("sandbox:")}) {
    if (scope.substr(0, prefix.size()) == prefix) {
      const absl::string_view id = scope.substr(prefix.size());
      if (id.empty() || id.size() > 256) {
        return absl::InvalidArgumentError(absl::StrCat("scope '", scope, "': the id must be 1 to 256 characters"));
      }
      for (unsigned char c : id) {
        if (c < 0x20 || c == 0x7f) {
          return absl::InvalidArgumentError(absl::StrCat("scope '", scope, "': control characters are not allowed"));
        }
      }
      return absl::OkStatus();
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("scope '", scope, "': must be 'default', 'tenant:<id>' or 'sandbox:<id>'"));
}

std::vector<std::string> ScopesFor(const openshell::policy::driver::v1::RuntimeContext& context) {
  std::vector<std::string> scopes;
  scopes.push_back(absl::StrCat("sandbox:", context.sandbox_id()));
  if (auto it = context.attributes().find(std::string(kTenantAttribute));
      it != context.attributes().end() && !it->second.empty()) {
    scopes.push_back(absl::StrCat("tenant:", it->second));
  }
  scopes.emplace_back(kDefaultScope);
  return scopes;
}

}  // namespace osh::policy
