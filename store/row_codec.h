// How the stores write list- and map-valued fields into one column, the same for every backend (so a
// migration between backends copies column values as they are).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace osh::store {

// Signing key ids: comma-separated.
std::string JoinIds(const std::vector<std::string>& ids);
std::vector<std::string> SplitIds(const std::string& text);
// An audit context map: a Projection with only audit_context set, serialized deterministically.
std::string EncodeContextMap(const std::map<std::string, std::string>& map);
std::map<std::string, std::string> DecodeContextMap(const std::string& bytes);
// Sandbox ids as one JSON array (protobuf's JSON writer), for one statement whatever the count.
absl::StatusOr<std::string> JsonIdList(const std::vector<std::string>& ids);
absl::StatusOr<std::vector<std::string>> ParseJsonIdList(const std::string& json);

}  // namespace osh::store
