#include "policy/scope.h"

#include "absl/strings/str_cat.h"
#include "common/bounded_text.h"

namespace osh::policy {

absl::Status ValidateScope(absl::string_view scope) {
  if (scope == kDefaultScope) return absl::OkStatus();
  for (absl::string_view prefix : {absl::string_view("tenant:"), absl::string_view("sandbox:")}) {
    if (scope.substr(0, prefix.size()) == prefix) {
      const absl::string_view id = scope.substr(prefix.size());
      // As long as the longest sandbox id or tenant a gateway may be configured to take (so that every
      // sandbox can have a scope of its own), and checked as their text is: a scope id shows (policy list,
      // audit events) as it is, and a sandbox or tenant id with what it refuses never reaches it.
      if (id.empty() || id.size() > kMaxScopeIdBytes) {
        return absl::InvalidArgumentError(absl::StrCat("scope '", common::BoundedText(std::string(scope), 300),
                                                       "': the id must be 1 to ", kMaxScopeIdBytes, " bytes"));
      }
      for (unsigned char c : id) {
        if (c < 0x20 || c == 0x7f) {
          return absl::InvalidArgumentError(absl::StrCat("scope '", common::BoundedText(std::string(scope), 300),
                                                         "': control characters are not allowed"));
        }
      }
      if (common::BoundedText(std::string(id), id.size() + 64) != id) {
        return absl::InvalidArgumentError(absl::StrCat("scope '", common::BoundedText(std::string(scope), 300),
                                                       "': invalid UTF-8, C1 controls and bidirectional formatting "
                                                       "characters are not allowed"));
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
