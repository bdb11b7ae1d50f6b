// Writes seed corpora for the fuzzers: valid signed projections (bound, versioned, expiring, k-of-1
// with an extra signature) and trust stores in the plain and full forms.
// and, given a third folder, scripts for the gateway request fuzzer (see fuzz_gateway_requests.cc).
// Usage: make_seeds PROJECTION_DIR TRUST_STORE_DIR [REQUESTS_DIR]
#include <filesystem>
#include <fstream>
#include <iostream>

#include "fuzz/fuzz_key.h"
#include "openshell/policy/gateway/v1/gateway.pb.h"
#include "policy/body_codec.h"
#include "policy/digest.h"
#include "policy/policy_file.h"
#include "trust/encoding.h"
#include "trust/keys.h"

namespace {

void Write(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

namespace gw = openshell::policy::gateway::v1;

// A request fuzzer script: per call, the method's index in fuzz_gateway_requests.cc's kMethods, the
// length (two bytes, little-endian) and the serialized request.
class Script {
 public:
  enum Method { kSetPolicy = 0, kUpdatePolicy, kDeletePolicy, kGetPolicy, kListPolicyRevisions, kAdmitSandbox,
                kDeleteSandbox, kGetSandbox, kListSandboxes, kRefreshSandbox, kGetStatus, kListAuditEvents,
                kEvaluateEgress, kSetCeiling, kGetCeiling };
  Script& Call(Method method, const google::protobuf::Message& request) {
    const std::string bytes = request.SerializeAsString();
    bytes_ += static_cast<char>(method);
    bytes_ += static_cast<char>(bytes.size() & 0xff);
    bytes_ += static_cast<char>(bytes.size() >> 8);
    bytes_ += bytes;
    return *this;
  }
  const std::string& bytes() const { return bytes_; }

 private:
  std::string bytes_;
};

void WriteRequestSeeds(const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  gw::SetPolicyRequest set;
  set.set_scope("default");
  *set.mutable_policy() = osh::policy::RestrictiveDefaultPolicy();
  gw::AdmitSandboxRequest admit;
  admit.mutable_context()->set_sandbox_id("sb-1");
  admit.mutable_context()->set_user_subject("alice@example.com");
  (*admit.mutable_context()->mutable_attributes())["tenant_id"] = "acme";
  gw::GetSandboxRequest get;
  get.set_sandbox_id("sb-1");
  gw::DeleteSandboxRequest del;
  del.set_sandbox_id("sb-1");
  gw::RefreshSandboxRequest refresh;
  refresh.set_sandbox_id("sb-1");
  gw::ListSandboxesRequest list;
  list.set_page_size(10);
  gw::ListAuditEventsRequest audit;
  audit.set_limit(10);
  gw::GetPolicyRequest get_policy;
  get_policy.set_scope("default");
  gw::ListPolicyRevisionsRequest revisions;
  revisions.set_scope("default");
  gw::DeletePolicyRequest delete_policy;
  delete_policy.set_scope("default");
  gw::EvaluateEgressRequest egress;
  egress.set_sandbox_id("sb-1");
  egress.set_host("api.github.com");
  egress.set_port(443);
  egress.set_binary("/usr/bin/curl");

  Write(dir / "lifecycle", Script()
                               .Call(Script::kSetPolicy, set)
                               .Call(Script::kAdmitSandbox, admit)
                               .Call(Script::kGetSandbox, get)
                               .Call(Script::kRefreshSandbox, refresh)
                               .Call(Script::kEvaluateEgress, egress)
                               .Call(Script::kListSandboxes, list)
                               .Call(Script::kDeleteSandbox, del)
                               .Call(Script::kListAuditEvents, audit)
                               .bytes());
  gw::SetPolicyRequest scoped = set;
  scoped.set_scope("tenant:acme");
  Write(dir / "scopes", Script()
                            .Call(Script::kSetPolicy, set)
                            .Call(Script::kSetPolicy, scoped)
                            .Call(Script::kAdmitSandbox, admit)
                            .Call(Script::kGetPolicy, get_policy)
                            .Call(Script::kListPolicyRevisions, revisions)
                            .Call(Script::kDeletePolicy, delete_policy)
                            .Call(Script::kGetStatus, gw::GetStatusRequest())
                            .bytes());
  Write(dir / "ceiling", Script()
                             .Call(Script::kGetCeiling, gw::GetCeilingRequest())
                             .Call(Script::kSetCeiling, gw::SetCeilingRequest())
                             .Call(Script::kSetPolicy, set)
                             .bytes());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3 && argc != 4) {
    std::cerr << "usage: make_seeds PROJECTION_DIR TRUST_STORE_DIR [REQUESTS_DIR]\n";
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
  if (argc == 4) WriteRequestSeeds(argv[3]);
  return 0;
}
