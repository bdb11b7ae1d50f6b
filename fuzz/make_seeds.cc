// Writes seed corpora for the fuzzers: valid signed projections (bound, versioned, expiring, k-of-1
// with an extra signature) and trust stores in the plain and full forms.
// Usage: make_seeds PROJECTION_DIR TRUST_STORE_DIR
#include <filesystem>
#include <fstream>
#include <iostream>

#include "fuzz/fuzz_key.h"
#include "policy/body_codec.h"
#include "policy/digest.h"
#include "policy/policy_file.h"
#include "trust/encoding.h"
#include "trust/keys.h"

namespace {

void Write(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: make_seeds PROJECTION_DIR TRUST_STORE_DIR\n";
    return 2;
  }
  const std::filesystem::path projections = argv[1], stores = argv[2];
  std::filesystem::create_directories(projections);
  std::filesystem::create_directories(stores);
  auto key = osh::trust::PrivateKey::FromPem(osh::fuzz::kPrivateKeyPem);
  if (!key.ok()) return 1;

  openshell::policy::driver::v1::RuntimeContext context;
  context.set_sandbox_id(osh::fuzz::kSandboxId);
  context.set_user_subject(osh::fuzz::kSubject);
  openshell::policy::driver::v1::Projection p;
  p.set_surface_id("openshell.sandbox.v1");
  p.set_body(osh::policy::SerializeDeterministic(osh::policy::RestrictiveDefaultPolicy()));
  p.set_policy_digest(osh::policy::Sha256Hex(p.body()));
  p.set_signing_key_id("fuzz");
  auto sign = [&] { p.set_signature(*key->Sign(osh::trust::SignedBytes(p))); };
  sign();
  Write(projections / "plain", p.SerializeAsString());
  p.set_policy_version(9);
  p.set_context_digest(osh::trust::ContextDigest(context));
  p.set_issued_at_unix(osh::fuzz::kNowUnix - 10);
  p.set_expires_at_unix(osh::fuzz::kNowUnix + 3600);
  (*p.mutable_audit_context())["ticket"] = "T-1";
  sign();
  Write(projections / "bound", p.SerializeAsString());
  Write(projections / "body", p.body());

  Write(stores / "full", osh::fuzz::kTrustStoreJson);
  Write(stores / "plain",
        "{\"keys\":[{\"key_id\":\"a\",\"public_key_pem\":\"-----BEGIN PUBLIC KEY-----\\n"
        "MCowBQYDK2VwAyEA0JdriwVl9q/bYYuZJ4NK/8DU2ERmwgN6wATdS9iiJII=\\n-----END PUBLIC KEY-----\\n\"}]}");
  return 0;
}
