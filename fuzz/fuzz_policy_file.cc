// libFuzzer target: policy files (YAML or JSON, SCHEMA.md's file format) on arbitrary text.
// Invariants (abort on violation): never crashes; a refusal is INVALID_ARGUMENT with a message; a policy
// that loads is valid, and written back as YAML (policy get) it loads again to the same canonical bytes.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "policy/body_codec.h"
#include "policy/policy_file.h"
#include "policy/validation.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto policy = osh::policy::ParsePolicyText(text, "fuzz.yaml");
  if (!policy.ok()) {
    if (!absl::IsInvalidArgument(policy.status()) || policy.status().message().empty()) std::abort();
    return 0;
  }
  if (!osh::policy::ValidatePolicy(*policy).ok()) std::abort();
  auto again = osh::policy::ParsePolicyText(osh::policy::PolicyToYaml(*policy), "round-trip.yaml");
  if (!again.ok()) std::abort();
  if (osh::policy::SerializeDeterministic(*again) != osh::policy::SerializeDeterministic(*policy)) std::abort();
  return 0;
}
