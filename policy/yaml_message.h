// Schema-driven conversion between YAML/JSON documents and protobuf messages, using the message's
// descriptor. JSON is read by the YAML 1.2 parser, so both formats report line numbers.
//
// Strict: unknown keys, duplicate keys, wrong types and out-of-range numbers are errors that name the
// source, the line and the field path ("policy.yaml:7: network_policies.gh.endpoints[0].port: ...").
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <utility>
#include <string>
#include "absl/strings/string_view.h"

#include <google/protobuf/message.h>

#include "absl/status/status.h"

namespace osh::policy {

struct YamlReadOptions {
  // Top-level key spellings that differ from the proto field name: file key -> field name.
  std::map<std::string, std::string> top_level_aliases;

  // Shorthands of upstream's provider-profile files (../shared/interceptor/README.md §7); all off for
  // policy files. A scalar where a message of this full name is expected sets this one string field of
  // it ("openshell.sandbox.v1.NetworkBinary" -> "path" reads `- /usr/bin/gh`).
  std::map<std::string, std::string> scalar_as_field;
  // A key that sets one entry of a map field: "<message full name>.<key>" -> {map field, entry key}
  // ({"openshell.sandbox.v1.L7Allow.tool", {"params", "name"}} reads `tool: X` as `params: {name: X}`).
  std::map<std::string, std::pair<std::string, std::string>> map_entry_keys;
  // Fields (full names) refused like unknown keys.
  std::set<std::string> refused_fields;
  // Repeated fields (full names) refused when given as an empty list.
  std::set<std::string> non_empty_lists;
  // Enum values are also accepted by the last words of their name, case-insensitively and with '-' for
  // '_' ("source-control" for PROVIDER_PROFILE_CATEGORY_SOURCE_CONTROL); never the UNSPECIFIED value.
  bool short_enum_names = false;
};

// Where each field came from: field path -> 1-based line.
using LineMap = std::map<std::string, int>;

// Bounds on what ReadYamlMessage reads: the text's size, and the nodes the document expands to with
// its aliases (a 475-byte alias bomb would otherwise expand to billions).
inline constexpr size_t kMaxYamlBytes = 16 << 20;
inline constexpr uint64_t kMaxYamlNodes = 1'000'000;

// Parses `text` (YAML or JSON) into `out` (cleared first). `source` names the input in errors.
// Errors are INVALID_ARGUMENT. On error `out` is left unspecified.
absl::Status ReadYamlMessage(absl::string_view text, absl::string_view source, const YamlReadOptions& options,
                             google::protobuf::Message* out, LineMap* lines);

// Writes `message` as YAML with proto field names (top-level names renamed through `top_level_aliases`
// reversed), omitting default values. Map keys are emitted in sorted order.
std::string WriteYamlMessage(const google::protobuf::Message& message,
                             const std::map<std::string, std::string>& top_level_aliases);

// The line of `path` or of its nearest recorded ancestor; 0 when unknown.
int LineOf(const LineMap& lines, absl::string_view path);

}  // namespace osh::policy
