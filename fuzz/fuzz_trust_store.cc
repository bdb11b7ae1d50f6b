// libFuzzer target: the trust-store parser on arbitrary text.
// Invariants (abort on violation): never crashes; a store that parses has 1 ≤ threshold ≤ keys, and
// unique, non-empty key ids; a refusal is INVALID_ARGUMENT with a message.
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>

#include "trust/trust_store.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto store = osh::trust::TrustStore::Parse(text);
  if (!store.ok()) {
    if (!absl::IsInvalidArgument(store.status()) || store.status().message().empty()) std::abort();
    return 0;
  }
  if (store->threshold() < 1 || store->threshold() > store->keys().size()) std::abort();
  std::set<std::string> ids;
  for (const auto& key : store->keys()) {
    if (key.key_id.empty() || !ids.insert(key.key_id).second) std::abort();
    if (store->Find(key.key_id) != &key) std::abort();
  }
  return 0;
}
