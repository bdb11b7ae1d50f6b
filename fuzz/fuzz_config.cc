// libFuzzer target: the gateway's TOML configuration file (SPEC §6) on arbitrary text.
// Invariants (abort on violation): never crashes; a refusal is INVALID_ARGUMENT naming the file and a
// line; only known keys come out of a file that parses; resolving those values either gives a config or
// an INVALID_ARGUMENT / UNIMPLEMENTED (a database kind this build lacks) with a message.
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>

#include "absl/strings/match.h"
#include "gateway/core/config.h"

namespace {
void Check(bool condition) {
  if (!condition) std::abort();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto values = osh::gateway::ParseConfigText(text, "fuzz.toml");
  if (!values.ok()) {
    Check(absl::IsInvalidArgument(values.status()));
    Check(absl::StartsWith(values.status().message(), "fuzz.toml:"));
    return 0;
  }
  static const std::set<std::string> known = [] {
    std::set<std::string> names;
    for (const auto& key : osh::gateway::ConfigKeys()) names.insert(key.name);
    return names;
  }();
  for (const auto& [key, value] : *values) Check(known.count(key) == 1);
  auto config = osh::gateway::ResolveConfig({}, {}, *values);
  if (!config.ok()) {
    Check(absl::IsInvalidArgument(config.status()) || absl::IsUnimplemented(config.status()));
    Check(!config.status().message().empty());
  }
  return 0;
}
