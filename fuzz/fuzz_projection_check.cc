// libFuzzer target: the whole §3.3 projection check on arbitrary bytes.
// The input is a serialized Projection; anything that does not parse as one is used as a body instead
// (with a correct digest), so the body parser and validator are reached either way.
// Invariants (abort on violation): the check never crashes; a refusal names a SPEC reason code and a
// detail; an admitted projection's digest is the SHA-256 of its body, its body passes validation, and
// with a trust store it names a verified key.
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>
#include <vector>

#include "fuzz/fuzz_key.h"
#include "policy/digest.h"
#include "policy/validation.h"
#include "trust/projection_check.h"
#include "trust/trust_store.h"

namespace {

const osh::trust::TrustStore& Store() {
  static const osh::trust::TrustStore store = *osh::trust::TrustStore::Parse(osh::fuzz::kTrustStoreJson);
  return store;
}

void Check(const openshell::policy::driver::v1::Projection& projection, const osh::trust::TrustStore* store,
           std::optional<uint64_t> admitted_version) {
  static const std::vector<std::string> surfaces = {"openshell.sandbox.v1"};
  openshell::policy::driver::v1::RuntimeContext context;
  context.set_sandbox_id(osh::fuzz::kSandboxId);
  context.set_user_subject(osh::fuzz::kSubject);
  osh::trust::CheckInput input;
  input.context = &context;
  input.accepted_surfaces = &surfaces;
  input.trust_store = store;
  input.now_unix = osh::fuzz::kNowUnix;
  input.admitted_version = admitted_version;
  const auto result = osh::trust::CheckProjection(projection, input);
  if (!result.ok()) {
    // Every refusal carries one of the SPEC's reason codes, and says why.
    namespace r = osh::trust::reason;
    static const std::set<std::string> kReasons = {
        r::kSurfaceNotAccepted, r::kDigestMismatch, r::kUnsigned, r::kUnknownKey, r::kBadSignature,
        r::kKeyRevoked, r::kKeyNotValidNow, r::kThresholdNotMet, r::kContextMismatch, r::kExpired,
        r::kRollback, r::kIncompleteProjection, r::kInvalidPolicy};
    if (kReasons.count(result.reason) == 0 || result.detail.empty()) std::abort();
    return;
  }
  if (osh::policy::Sha256Hex(projection.body()) != projection.policy_digest()) std::abort();
  if (!osh::policy::ValidatePolicy(*result.policy).ok()) std::abort();
  if (store != nullptr && result.verified_key_ids.empty()) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  openshell::policy::driver::v1::Projection projection;
  if (!projection.ParseFromString(bytes)) {
    projection.Clear();
    projection.set_surface_id("openshell.sandbox.v1");
    projection.set_body(bytes);
    projection.set_policy_digest(osh::policy::Sha256Hex(bytes));
  }
  Check(projection, &Store(), std::nullopt);
  Check(projection, nullptr, uint64_t{5});
  return 0;
}
