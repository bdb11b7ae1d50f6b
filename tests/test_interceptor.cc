// The OpenShell gateway interceptor (issue 28; docs/openshell-interceptor.md). The tests play the
// OpenShell gateway from its contract (../shared/interceptor/README.md), not from our code: payloads are
// the README's ProtoJSON read into a google.protobuf.Struct (every number a double, int64 as strings),
// tokens are minted (and broken each way the README's checklist lists) with librhonabwy, patches are
// applied the way RFC 6902 says to the request JSON, and the patched request is decoded strictly into
// the upstream request type before its fields are checked. The gateway is the real binary on real sockets.
#include <rhonabwy.h>
#include <sqlite3.h>
#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <ctime>
#include <filesystem>
#include <future>
#include <initializer_list>
#include <set>
#include <thread>

#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/message_differencer.h>

#include <catch2/catch.hpp>
#include <grpcpp/grpcpp.h>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/str_replace.h"
#include "gateway/core/config.h"
#include "gateway/core/interceptor_governance.h"
#include "gateway/core/interceptor_merge.h"
#include "gateway/core/interceptor_token.h"
#include "gateway/core/provider_catalogue.h"
#include "policy/provider_profile.h"
#include "openshell/gateway_interceptor/v1/gateway_interceptor.grpc.pb.h"
#include "openshell/v1/openshell_v1_subset.grpc.pb.h"
#include "tests/gateway_fixture.h"
#include "tests/long_call_probe.h"
#include "tests/pg_cluster.h"
#include "tests/test_pki.h"
#include <httplib.h>
#include "trust/encoding.h"
#include "trust/keys.h"

namespace osh::test::interceptor_test {

namespace icv1 = openshell::gateway_interceptor::v1;
namespace os_v1 = openshell::v1;
using google::protobuf::Struct;
using google::protobuf::Value;

// RFC 8032 §7.1 TEST 1.
const char kSeedHex[] = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
const char kPublicHex[] = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
const char kVectorJwks[] =
    R"({"keys":[{"kty":"OKP","crv":"Ed25519","alg":"EdDSA","use":"sig","kid":"gw-kid-1","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]})";
const char kVectorToken[] =
    "eyJ0eXAiOiJvcGVuc2hlbGwtZXh0K2p3dCIsImFsZyI6IkVkRFNBIiwia2lkIjoiZ3cta2lkLTEifQ."
    "eyJpc3MiOiJvcGVuc2hlbGwtZ2F0ZXdheTpvcGVuc2hlbGwiLCJhdWQiOiJ1cm46b3BlbnNoZWxsOmV4dGVuc2lvbjppbnRlcmNlcHRvcjpwb2xp"
    "Y3ktZ2F0ZXdheSIsInN1YiI6Im9wZW5zaGVsbC1nYXRld2F5Om9wZW5zaGVsbCIsImlhdCI6MTc2NzIyNTYwMCwiZXhwIjoxNzY3MjI2NTAwLCJq"
    "dGkiOiIwMDAwMDAwMC0wMDAwLTQwMDAtODAwMC0wMDAwMDAwMDAwMDAiLCJjYWxsZXJfa2luZCI6ImdhdGV3YXkifQ."
    "4x0uzvdIikLaXO5wp7VzvorYrj_iwxy8Gk09BzJDn59F130X2FWp78O4N7AASh226NmhR_5qIeKLJeJy2MLVAQ";
const char kAudience[] = "urn:openshell:extension:interceptor:policy-gateway";
const char kIssuer[] = "openshell-gateway:openshell";

std::string B64Url(const std::string& bytes) { return absl::WebSafeBase64Escape(bytes); }

std::string Pem(const char* label, const std::string& der) {
  std::string body = absl::Base64Escape(der), out = absl::StrCat("-----BEGIN ", label, "-----\n");
  for (size_t i = 0; i < body.size(); i += 64) absl::StrAppend(&out, body.substr(i, 64), "\n");
  return absl::StrCat(out, "-----END ", label, "-----\n");
}
// The RFC key as SPKI and PKCS#8 PEM (fixed DER prefixes of RFC 8410).
std::string RfcPublicPem() { return Pem("PUBLIC KEY", FromHex("302a300506032b6570032100") + FromHex(kPublicHex)); }
std::string RfcPrivatePem() { return Pem("PRIVATE KEY", FromHex("302e020100300506032b657004220420") + FromHex(kSeedHex)); }

// A private key as librhonabwy holds it, for minting.
struct MintKey {
  jwk_t* jwk = nullptr;
  explicit MintKey(const std::string& private_pem) {
    REQUIRE(r_jwk_init(&jwk) == RHN_OK);
    REQUIRE(r_jwk_import_from_pem_der(jwk, R_X509_TYPE_PRIVKEY, R_FORMAT_PEM,
                                      reinterpret_cast<const unsigned char*>(private_pem.data()), private_pem.size()) == RHN_OK);
  }
  ~MintKey() { r_jwk_free(jwk); }
};

// An EdDSA JWS over `claims` (JSON text) with header typ and kid, signed by `key`.
std::string Mint(const MintKey& key, const std::string& claims, const std::string& typ = "openshell-ext+jwt",
                 const std::string& kid = "gw-kid-1") {
  jwt_t* jwt = nullptr;
  REQUIRE(r_jwt_init(&jwt) == RHN_OK);
  REQUIRE(r_jwt_set_full_claims_json_str(jwt, claims.c_str()) == RHN_OK);
  REQUIRE(r_jwt_set_header_str_value(jwt, "typ", typ.c_str()) == RHN_OK);
  REQUIRE(r_jwt_set_header_str_value(jwt, "kid", kid.c_str()) == RHN_OK);
  REQUIRE(r_jwt_set_sign_alg(jwt, R_JWA_ALG_EDDSA) == RHN_OK);
  char* token = r_jwt_serialize_signed(jwt, key.jwk, 0);
  REQUIRE(token != nullptr);
  std::string out(token);
  r_free(token);
  r_jwt_free(jwt);
  return out;
}

struct ClaimsSpec {
  std::string iss = kIssuer;
  std::string aud = absl::StrCat("\"", kAudience, "\"");  // JSON value
  std::string exp;                                         // JSON value; "" = now + 900
  std::string caller_kind = "\"gateway\"";                  // JSON value; "" = absent

  ClaimsSpec Iss(std::string v) const { ClaimsSpec c = *this; c.iss = std::move(v); return c; }
  ClaimsSpec Aud(std::string v) const { ClaimsSpec c = *this; c.aud = std::move(v); return c; }
  ClaimsSpec Exp(std::string v) const { ClaimsSpec c = *this; c.exp = std::move(v); return c; }
  ClaimsSpec CallerKind(std::string v) const { ClaimsSpec c = *this; c.caller_kind = std::move(v); return c; }
};

std::string Claims(const ClaimsSpec& spec, int64_t now) {
  std::string claims = absl::StrCat(R"({"iss":")", spec.iss, R"(","aud":)", spec.aud, R"(,"sub":")", spec.iss,
                                    R"(","iat":)", now, R"(,"exp":)", spec.exp.empty() ? absl::StrCat(now + 900) : spec.exp,
                                    R"(,"jti":"00000000-0000-4000-8000-000000000000")");
  if (!spec.caller_kind.empty()) absl::StrAppend(&claims, R"(,"caller_kind":)", spec.caller_kind);
  return claims + "}";
}

// Every way the README's checklist says a token is refused, each with the step that must refuse it.
std::vector<std::pair<std::string, std::string>> BrokenTokens(const MintKey& key, const MintKey& other, int64_t now) {
  const std::string good = Mint(key, Claims(ClaimsSpec(), now));
  const std::string header = good.substr(0, good.find('.'));
  const std::string claims = B64Url(Claims(ClaimsSpec(), now));
  const std::string signature = good.substr(good.rfind('.') + 1);
  // Claims changed after signing (valid JSON, the original signature), and claims that are not base64url JSON.
  const std::string tampered = header + "." + B64Url(Claims(ClaimsSpec().Exp(absl::StrCat(now + 86400)), now)) + "." + signature;
  std::string garbled = good;
  garbled[good.find('.') + 5] = garbled[good.find('.') + 5] == 'A' ? 'B' : 'A';
  return {
      {"", "authorization"},
      {"Basic dXNlcjpwYXNz", "authorization"},
      {"Bearer ", "token"},
      {"Bearer not.a-token", "token"},
      {"Bearer " + B64Url(R"({"alg":"none","typ":"openshell-ext+jwt","kid":"gw-kid-1"})") + "." + claims + ".", "token"},
      {"Bearer " + B64Url(R"({"alg":"HS256","typ":"openshell-ext+jwt","kid":"gw-kid-1"})") + "." + claims + "." +
           B64Url(std::string(32, 'k')),
       "alg"},
      {"Bearer " + Mint(key, Claims(ClaimsSpec(), now), "JWT"), "typ"},
      {"Bearer " + Mint(key, Claims(ClaimsSpec(), now), "openshell-ext+jwt", "gw-kid-2"), "kid"},
      {"Bearer " + Mint(other, Claims(ClaimsSpec(), now)), "signature"},
      {"Bearer " + tampered, "signature"},
      {"Bearer " + garbled, "token"},
      {"Bearer " + header + "." + claims + "." + signature.substr(0, signature.size() - 4) + "AAAA", "signature"},
      {"Bearer " + Mint(key, Claims(ClaimsSpec().Iss("openshell-gateway:other"), now)), "iss"},
      {"Bearer " + Mint(key, Claims(ClaimsSpec().Aud(R"("urn:openshell:extension:interceptor:other")"), now)), "aud"},
      {"Bearer " + Mint(key, Claims(ClaimsSpec().Aud(absl::StrCat(R"([")", kAudience, R"("])")), now)), "aud"},
      {"Bearer " + Mint(key, Claims(ClaimsSpec().Exp(absl::StrCat(now - 3600)), now)), "exp"},
      {"Bearer " + Mint(key, Claims(ClaimsSpec().Exp(absl::StrCat("\"", now + 900, "\"")), now)), "exp"},
      {"Bearer " + Mint(key, Claims(ClaimsSpec().CallerKind(""), now)), "caller_kind"},
      {"Bearer " + Mint(key, Claims(ClaimsSpec().CallerKind("\"sandbox\""), now)), "caller_kind"},
  };
}

Struct FromProtoJson(const std::string& json) {
  Struct out;
  const auto status = google::protobuf::util::JsonStringToMessage(json, &out);
  INFO(json);
  REQUIRE(status.ok());
  return out;
}

// RFC 6901 pointer tokens of `path` ("/a/b~1c" -> {"a", "b/c"}).
std::vector<std::string> PointerTokens(const std::string& path) {
  std::vector<std::string> tokens;
  REQUIRE(absl::StartsWith(path, "/"));
  for (absl::string_view token : absl::StrSplit(path.substr(1), '/')) {
    tokens.push_back(absl::StrReplaceAll(token, {{"~1", "/"}, {"~0", "~"}}));
  }
  return tokens;
}

// RFC 6902 add / remove / replace on objects (the operations this product's results use), atomically as
// the OpenShell gateway applies one result: a failing patch fails the test.
Struct ApplyPatches(const Struct& document, const google::protobuf::RepeatedPtrField<icv1::JsonPatch>& patches) {
  Value root;
  *root.mutable_struct_value() = document;
  for (const auto& patch : patches) {
    const auto tokens = PointerTokens(patch.path());
    Value* parent = &root;
    for (size_t i = 0; i + 1 < tokens.size(); ++i) {
      REQUIRE(parent->has_struct_value());
      auto* fields = parent->mutable_struct_value()->mutable_fields();
      REQUIRE(fields->count(tokens[i]) == 1);  // add needs the parent to exist
      parent = &(*fields)[tokens[i]];
    }
    REQUIRE(parent->has_struct_value());
    auto* fields = parent->mutable_struct_value()->mutable_fields();
    if (patch.op() == "add") {
      (*fields)[tokens.back()] = patch.value();  // add on an existing member replaces it
    } else if (patch.op() == "remove") {
      REQUIRE(fields->erase(tokens.back()) == 1);  // remove needs it present
    } else if (patch.op() == "replace") {
      REQUIRE(fields->count(tokens.back()) == 1);
      (*fields)[tokens.back()] = patch.value();
    } else {
      FAIL("unexpected op " << patch.op());
    }
  }
  return root.struct_value();
}

// Strict ProtoJSON decoding of a Struct into the upstream request type, as the OpenShell gateway does.
template <typename Message>
Message Decode(const Struct& payload) {
  std::string json;
  REQUIRE(google::protobuf::util::MessageToJsonString(payload, &json).ok());
  Message message;
  INFO(json);
  REQUIRE(google::protobuf::util::JsonStringToMessage(json, &message).ok());
  return message;
}

// The README §5 policy every example starts from (numbers with .0: doubles in the Struct).
const char kBasePolicyJson[] = R"({
  "version": 1.0,
  "filesystem": {"includeWorkdir": true, "readOnly": ["/usr", "/etc"], "readWrite": ["/sandbox"]},
  "landlock": {"compatibility": "best_effort"},
  "process": {"runAsUser": "sandbox", "runAsGroup": "sandbox"},
  "networkPolicies": {
    "api": {
      "name": "api",
      "endpoints": [
        {"host": "api.github.com", "port": 443.0, "protocol": "rest", "enforcement": "enforce", "access": "read-only"}
      ],
      "binaries": [{"path": "/usr/bin/curl"}]
    }
  }
})";

// kBasePolicyJson as the message.
openshell::sandbox::v1::SandboxPolicy BaseSandboxPolicy() {
  openshell::sandbox::v1::SandboxPolicy base;
  REQUIRE(google::protobuf::util::JsonStringToMessage(kBasePolicyJson, &base).ok());
  return base;
}

// The ceiling: the README's API rule, pypi for pip, and a read-only corporate mirror host for nobody.
const char kCeilingYaml[] = R"(version: 1
filesystem_policy:
  include_workdir: true
  read_only: [/usr, /lib, /etc, /app, /proc, /dev/urandom, /var/log]
  read_write: [/sandbox, /tmp, /dev/null]
landlock:
  compatibility: best_effort
process:
  run_as_user: sandbox
  run_as_group: sandbox
network_policies:
  api:
    name: api
    endpoints:
      - { host: api.github.com, port: 443, protocol: rest, enforcement: enforce, access: read-only }
    binaries: [{ path: /usr/bin/curl }]
  pypi:
    name: pypi
    endpoints: [{ host: pypi.org, port: 443 }]
    binaries: [{ path: /usr/bin/pip }]
)";

// A real gateway with the interceptor on its own socket, a JWKS holding the RFC key, and a signed ceiling;
// `extra_args` go to the gateway as well (a --database, say).
// How a test gateway signs provider profiles: not (a trust store, no signing key: `profile set` is refused),
// with builtin_signing_key (in the trust store), or without a trust store at all (no ceiling either;
// profiles are stored and served unsigned).
enum class ProfileSigning { kNone, kSigned, kNoTrustStore };

class InterceptorGateway {
 public:
  // Without `unix_socket` the gateway gets no interceptor_socket (extra_args give it interceptor_listen) and
  // the test connects with ConnectTls.
  // `before_start`, when given, runs once the keys exist (keys/authority.key signs what the trust store's
  // "authority" key verifies) and returns more arguments for the gateway (a driver it started, say).
  explicit InterceptorGateway(bool with_keys = true, bool with_ceiling = true, std::vector<std::string> extra_args = {},
                              ProfileSigning signing = ProfileSigning::kNone, bool unix_socket = true,
                              const std::function<std::vector<std::string>(const TempDir& keys)>& before_start = nullptr) {
    auto authority = osh::trust::PrivateKey::Generate("ed25519");
    REQUIRE(authority.ok());
    WriteFile(keys_ / "authority.key", authority->ToPem());
    std::vector<std::pair<std::string, std::string>> trusted = {{"authority", authority->PublicKeyPem()}};
    std::vector<std::string> args = {"--metrics-listen", "127.0.0.1:0"};
    if (unix_socket) args.insert(args.end(), {"--interceptor-socket", socket()});
    if (signing == ProfileSigning::kSigned) {
      auto gateway_key = osh::trust::PrivateKey::Generate("ed25519");
      REQUIRE(gateway_key.ok());
      WriteFile(keys_ / "gateway.key", gateway_key->ToPem());
      trusted.emplace_back("gateway-key", gateway_key->PublicKeyPem());
      signing_public_pem_ = gateway_key->PublicKeyPem();
      args.insert(args.end(), {"--builtin-signing-key", keys_ / "gateway.key", "--builtin-signing-key-id", "gateway-key"});
    }
    WriteFile(keys_ / "trust.json", TrustStoreJson(trusted));
    WriteFile(keys_ / "jwks.json", kVectorJwks);
    if (signing != ProfileSigning::kNoTrustStore) {
      args.insert(args.end(), {"--trust-store", keys_ / "trust.json"});
    } else {
      with_ceiling = false;  // a ceiling is verified against the trust store
    }
    if (with_keys) args.insert(args.end(), {"--interceptor-gateway-keys", keys_ / "jwks.json"});
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    if (before_start) {
      const std::vector<std::string> more = before_start(keys_);
      args.insert(args.end(), more.begin(), more.end());
    }
    gateway_ = std::make_unique<GatewayFixture>(args);
    if (unix_socket) REQUIRE(WaitForSocket(socket()));
    if (with_ceiling) {
      WriteFile(keys_ / "ceiling.yaml", kCeilingYaml);
      std::string out, err;
      REQUIRE(CtlOffline({"ceiling", "sign", "-f", keys_ / "ceiling.yaml", "--id", "corp-max", "--version", "1", "--key",
                          keys_ / "authority.key", "--key-id", "authority", "--out", keys_ / "ceiling.json"},
                         &out, &err) == 0);
      REQUIRE(Ctl(*gateway_, {"ceiling", "set", keys_ / "ceiling.json"}, &out, &err) == 0);
    }
    if (unix_socket) Connect();
    key_ = std::make_unique<MintKey>(RfcPrivatePem());
    token_ = "Bearer " + Mint(*key_, Claims(ClaimsSpec(), std::time(nullptr)));
  }

  // Stops the gateway (SIGTERM, a clean exit) and starts it again on the same state, then connects again
  // as the OpenShell gateway would.
  void Restart() {
    REQUIRE(gateway_->Stop() == 0);
    gateway_->Start();
    REQUIRE(WaitForSocket(socket()));
    Connect();
  }

  // As the OpenShell gateway's client connects: one connection, keepalive every 10 s also while idle, and
  // the authority it sends over a Unix socket.
  void Connect() {
    grpc::ChannelArguments channel_args = ClientArguments();
    channel_args.SetString(GRPC_ARG_DEFAULT_AUTHORITY, "[::]:50051");
    channel_ = grpc::CreateCustomChannel("unix:" + socket(), grpc::InsecureChannelCredentials(), channel_args);
    stub_ = icv1::GatewayInterceptor::NewStub(channel_);
    REQUIRE(channel_->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10)));
  }
  // The same client over TCP with TLS (interceptor_listen at `address`), trusting the CA in `ca_pem`.
  void ConnectTls(const std::string& address, const std::string& ca_pem) {
    grpc::SslCredentialsOptions tls;
    tls.pem_root_certs = ca_pem;
    channel_ = grpc::CreateCustomChannel(address, grpc::SslCredentials(tls), ClientArguments());
    stub_ = icv1::GatewayInterceptor::NewStub(channel_);
    REQUIRE(channel_->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10)));
  }
  // The OpenShell gateway client's keepalive (README §1): every 10 s, also while idle.
  static grpc::ChannelArguments ClientArguments() {
    grpc::ChannelArguments channel_args;
    channel_args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
    channel_args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20000);
    channel_args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    channel_args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);  // hyper pings on, whatever the data
    channel_args.SetInt(GRPC_ARG_HTTP2_MIN_SENT_PING_INTERVAL_WITHOUT_DATA_MS, 10000);
    return channel_args;
  }

  std::string socket() const { return sock_ / "interceptor.sock"; }
  // The Prometheus text the gateway serves at metrics_listen.
  std::string Metrics() {
    const std::string host_port = LoggedAfter([&] { return gateway_->log(); }, "metrics: serving http://");
    httplib::Client client(host_port);
    auto response = client.Get("/metrics");
    REQUIRE(response);
    REQUIRE(response->status == 200);
    return response->body;
  }
  GatewayFixture& gateway() { return *gateway_; }
  icv1::GatewayInterceptor::Stub& stub() { return *stub_; }
  grpc::Channel& channel() { return *channel_; }
  const std::shared_ptr<grpc::Channel>& shared_channel() const { return channel_; }
  const MintKey& key() const { return *key_; }
  std::string KeysFile() const { return keys_ / "jwks.json"; }  // interceptor_gateway_keys (the README's JWKS)
  // The public key (PEM) profiles are signed with (ProfileSigning::kSigned).
  const std::string& signing_public_pem() const { return signing_public_pem_; }
  const TempDir& keys() const { return keys_; }

  std::unique_ptr<grpc::ClientContext> Context(const std::string& authorization) const {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    if (!authorization.empty()) context->AddMetadata("authorization", authorization);
    return context;
  }

  // One Evaluate of openshell.v1.OpenShell/<method> in `phase` with the request `json`, by alice.
  icv1::InterceptorResult Evaluate(const std::string& method, bool validate, const std::string& json) {
    return Evaluate(method, validate, FromProtoJson(json));
  }
  // openshell.v1.OpenShell/<method> in `phase` with `payload`, as the OpenShell gateway sends it.
  static icv1::InterceptorEvaluation EvaluationOf(const std::string& method, bool validate, const Struct& payload,
                                                  const std::string& subject = "alice@example.com",
                                                  const std::string& kind = "user") {
    icv1::InterceptorEvaluation evaluation;
    evaluation.set_interceptor_name("policy-gateway");
    evaluation.set_binding_id("pg-test");
    evaluation.set_service("openshell.v1.OpenShell");
    evaluation.set_method(method);
    (*evaluation.mutable_principal())["kind"] = kind;
    (*evaluation.mutable_principal())["subject"] = subject;
    (*evaluation.mutable_principal())["provider"] = "oidc";
    if (validate) {
      *evaluation.mutable_validate()->mutable_proposed_operation() = payload;
    } else {
      *evaluation.mutable_modify_operation()->mutable_proposed_operation() = payload;
    }
    return evaluation;
  }
  icv1::InterceptorResult Evaluate(const std::string& method, bool validate, const Struct& payload,
                                   const std::string& subject = "alice@example.com", const std::string& kind = "user") {
    const icv1::InterceptorEvaluation evaluation = EvaluationOf(method, validate, payload, subject, kind);
    icv1::InterceptorResult result;
    const grpc::Status status = stub_->Evaluate(Context(token_).get(), evaluation, &result);
    INFO(status.error_message());
    REQUIRE(status.ok());
    ++evaluations_;
    // Every result carries its decision in the log annotations, and a deny never says OK.
    CHECK(result.log_annotations().at("policy-gateway/decision") == (result.allowed() ? "allow" : "deny"));
    CHECK(absl::StartsWith(result.log_annotations().at("policy-gateway/decision-id"), "d-"));
    if (!result.allowed()) {
      CHECK((result.status_code() == "PERMISSION_DENIED" || result.status_code() == "FAILED_PRECONDITION"));
      CHECK(absl::StartsWith(result.reason(), result.log_annotations().at("policy-gateway/reason-code") + ": "));
      CHECK(result.patches().empty());
    } else {
      CHECK(result.reason().empty());
      CHECK(result.log_annotations().count("policy-gateway/reason-code") == 0);
    }
    if (validate) CHECK(result.patches().empty());
    decision_ids_.push_back(result.log_annotations().at("policy-gateway/decision-id"));
    phases_.push_back(validate ? "validate" : "modify_operation");
    return result;
  }
  int evaluations() const { return evaluations_; }
  const std::vector<std::string>& decision_ids() const { return decision_ids_; }
  const std::vector<std::string>& phases() const { return phases_; }

 private:
  TempDir keys_, sock_;
  std::unique_ptr<GatewayFixture> gateway_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<icv1::GatewayInterceptor::Stub> stub_;
  std::unique_ptr<MintKey> key_;
  std::string token_;
  std::string signing_public_pem_;
  int evaluations_ = 0;
  std::vector<std::string> decision_ids_;
  std::vector<std::string> phases_;
};

std::string CreateSandboxJson(const std::string& name, const std::string& policy, const std::string& providers = "") {
  return absl::StrCat(R"({"spec": {"environment": {"LOG_LEVEL": "debug"}, "template": {"image": "ghcr.io/example/agent:1.4"},
                      "policy": )", policy, providers.empty() ? "" : absl::StrCat(R"(, "providers": )", providers),
                      R"(}, "name": ")", name, R"(", "labels": {"team": "platform"}})");
}

// The base policy with one more rule.
std::string BasePolicyWith(const std::string& rule_name, const std::string& rule) {
  std::string policy = kBasePolicyJson;
  const size_t at = policy.rfind("}\n  }\n}");
  REQUIRE(at != std::string::npos);
  return policy.substr(0, at + 1) + absl::StrCat(R"(, ")", rule_name, R"(": )", rule) + policy.substr(at + 1);
}

void CheckDeny(const icv1::InterceptorResult& result, const std::string& status_code, const std::string& reason_start) {
  INFO("expected " << reason_start << ", got " << result.reason());
  CHECK_FALSE(result.allowed());
  CHECK(result.status_code() == status_code);
  CHECK(absl::StartsWith(result.reason(), reason_start));
}


TEST_CASE("interceptor: the README's token vector verifies with a fixed clock, from the JWKS and from the PEM",
          "[interceptor]") {
  const osh::gateway::InterceptorTokenVerifier::Options options{"openshell", kAudience};
  auto jwks = osh::gateway::InterceptorTokenVerifier::FromText(kVectorJwks, "jwks.json", options);
  REQUIRE(jwks.ok());
  CHECK((*jwks)->issuer() == kIssuer);
  const int64_t iat = 1767225600, exp = 1767226500;
  CHECK((*jwks)->Verify(absl::StrCat("Bearer ", kVectorToken), iat + 100).ok());
  CHECK((*jwks)->Verify(absl::StrCat("Bearer ", kVectorToken), exp + 30).ok());  // within the skew
  const auto expired = (*jwks)->Verify(absl::StrCat("Bearer ", kVectorToken), exp + 3600);
  CHECK(expired.code() == absl::StatusCode::kUnauthenticated);
  CHECK(absl::StartsWith(expired.message(), "exp: "));
  // A PEM has no kid: its one key is tried whatever the token's kid.
  auto pem = osh::gateway::InterceptorTokenVerifier::FromText(RfcPublicPem(), "public.pem", options);
  REQUIRE(pem.ok());
  CHECK((*pem)->Verify(absl::StrCat("Bearer ", kVectorToken), iat + 100).ok());
  // Another gateway_id or audience refuses the vector.
  auto other = osh::gateway::InterceptorTokenVerifier::FromText(kVectorJwks, "jwks.json", {"other", kAudience});
  REQUIRE(other.ok());
  CHECK(absl::StartsWith((*other)->Verify(absl::StrCat("Bearer ", kVectorToken), iat + 100).message(), "iss: "));
  // Key files that are not an Ed25519 public key are refused at load, naming the file.
  for (const std::string& bad : {std::string("{}"), std::string(R"({"keys":[]})"), RfcPrivatePem(),
                                 std::string(R"({"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]})")}) {
    INFO(bad);
    auto refused = osh::gateway::InterceptorTokenVerifier::FromText(bad, "k.json", options);
    CHECK(refused.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(absl::StartsWith(refused.status().message(), "k.json: "));
  }
}

TEST_CASE("interceptor: a gateway key anyone can forge under is refused at load", "[interceptor]") {
  // The small-order points and a non-canonical y: under them a token signed by no one verifies. The trust
  // store and the log's note keys refuse them (trust::WeakEd25519Key); so do the interceptor's gateway keys.
  const osh::gateway::InterceptorTokenVerifier::Options options{"openshell", kAudience};
  const std::vector<std::pair<std::string, std::string>> weak = {
      {"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "small order"},  // the identity
      {"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "small order"},  // y = 0
      {"7P_______________________________________38", "small order"},  // y = p - 1
      {"7f_______________________________________38", "non-canonical"},  // y = p
  };
  for (const auto& [x, why] : weak) {
    INFO(x);
    const std::string jwks =
        absl::StrCat(R"({"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k","x":")", x, R"("}]})");
    auto refused = osh::gateway::InterceptorTokenVerifier::FromText(jwks, "k.json", options);
    CHECK(refused.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(absl::StrContains(refused.status().message(), "k.json: key 0 is refused: its x is"));
    CHECK(absl::StrContains(refused.status().message(), why));
    // The same key as a PEM (SubjectPublicKeyInfo).
    std::string raw;
    REQUIRE(absl::WebSafeBase64Unescape(x, &raw));
    std::string der = absl::StrCat(std::string("\x30\x2a\x30\x05\x06\x03\x2b\x65\x70\x03\x21\x00", 12), raw);
    const std::string pem = absl::StrCat("-----BEGIN PUBLIC KEY-----\n", absl::Base64Escape(der), "\n-----END PUBLIC KEY-----\n");
    auto refused_pem = osh::gateway::InterceptorTokenVerifier::FromText(pem, "k.pem", options);
    CHECK(refused_pem.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(absl::StrContains(refused_pem.status().message(), "k.pem: the Ed25519 public key is refused: its x is"));
  }
  // The vector's key, the same way, loads.
  CHECK(osh::gateway::InterceptorTokenVerifier::FromText(kVectorJwks, "jwks.json", options).ok());
}

TEST_CASE("interceptor: every broken token of the README's checklist is refused at its step", "[interceptor]") {
  const osh::gateway::InterceptorTokenVerifier::Options options{"openshell", kAudience};
  auto verifier = osh::gateway::InterceptorTokenVerifier::FromText(kVectorJwks, "jwks.json", options);
  REQUIRE(verifier.ok());
  const int64_t now = 1800000000;
  MintKey key(RfcPrivatePem());
  auto other_key = osh::trust::PrivateKey::Generate("ed25519");
  REQUIRE(other_key.ok());
  MintKey other(other_key->ToPem());
  // The good one, twice (the OpenShell gateway reuses its token: a repeated jti is fine).
  const std::string good = "Bearer " + Mint(key, Claims(ClaimsSpec(), now));
  CHECK((*verifier)->Verify(good, now).ok());
  CHECK((*verifier)->Verify(good, now + 1).ok());
  for (const auto& [authorization, step] : BrokenTokens(key, other, now)) {
    INFO(authorization);
    const auto refused = (*verifier)->Verify(authorization, now);
    CHECK(refused.code() == absl::StatusCode::kUnauthenticated);
    CHECK(absl::StartsWith(refused.message(), step + ": "));
  }
}

TEST_CASE("interceptor: the README's governance hash vectors reproduce", "[interceptor]") {
  using osh::gateway::GovernanceCanonicalJson;
  CHECK(*osh::gateway::GovernancePolicyHash({}) ==
        "sha256:v2:0d47b4d841685875cd91a2134bf16f16891d1d42799b4932ad784f9690c657a2");
  const std::string v2 =
      R"({"filesystem":{"includeWorkdir":true,"readOnly":["/usr","/lib","/proc","/dev/urandom","/app","/etc","/var/log"],"readWrite":["/sandbox","/tmp","/dev/null"]},"landlock":{"compatibility":"best_effort"},"networkPolicies":{"my_api":{"binaries":[{"path":"/usr/bin/curl"}],"endpoints":[{"access":"full","enforcement":"enforce","host":"api-1.example.com","port":443,"ports":[443],"protocol":"rest"}],"name":"my-api"}},"version":1})";
  openshell::sandbox::v1::SandboxPolicy policy;
  REQUIRE(google::protobuf::util::JsonStringToMessage(v2, &policy).ok());
  CHECK(*GovernanceCanonicalJson(policy) == v2);
  const std::string v2_hash = "sha256:v2:ba5bbcf293c2bd0ffcaa704fa468142bf409a196b2d09e00f84f678de229a3fc";
  CHECK(*osh::gateway::GovernancePolicyHash(policy) == v2_hash);
  os_v1::ProviderProfile github;
  CHECK(*osh::gateway::GovernanceProfileHash(github) ==
        "sha256:v2:2fd2266f2a6854f10090e3c3d1e0f1f3a490a322edb822c4e7cb345043865bfd");
  github.set_id("github");
  CHECK(*osh::gateway::GovernanceProfileHash(github) ==
        "sha256:v2:4feefcaebc33c685f69fa746e6cd3a6f1660f5a40888613b7df08bb81873bfd2");
  CHECK(*osh::gateway::GovernanceSnapshotHash({}) ==
        "sha256:v2:f9f6d81f640c64fdaeec69b6d89bdc4a65a8b58d6f879bcbb397638101e69f15");
  CHECK(*osh::gateway::GovernanceSnapshotHash({github}) ==
        "sha256:v2:7fd6466578488652f117e23a6a9bcad87efd731e862d047cac41ebc27defb72f");
  CHECK(osh::gateway::UpstreamSnapshotRevision({}) ==
        "sha256:ab8e0e78fc1d6bf43df784f4d73039cb8047cf739093ad2738589d5f9508c97e");
  CHECK(osh::gateway::UpstreamSnapshotRevision({github}) ==
        "sha256:1f23b26b8333cc87afc700ddd823146df5029a62c94fb380287806d81e3664e7");
  // The README §7 example profile, as the typed message its YAML file stands for.
  os_v1::ProviderProfile example;
  REQUIRE(google::protobuf::util::JsonStringToMessage(R"({
    "id": "github", "displayName": "GitHub", "description": "REST API access and git over HTTPS for gh and git",
    "category": "PROVIDER_PROFILE_CATEGORY_SOURCE_CONTROL",
    "credentials": [{"name": "api_token", "description": "a personal access or app installation token",
                     "envVars": ["GITHUB_TOKEN", "GH_TOKEN"], "required": true, "authStyle": "bearer",
                     "headerName": "authorization"}],
    "discovery": {"credentials": ["api_token"]},
    "endpoints": [
      {"host": "api.github.com", "port": 443, "protocol": "rest", "enforcement": "enforce", "access": "read-only"},
      {"host": "github.com", "port": 443, "protocol": "rest", "enforcement": "enforce",
       "rules": [{"allow": {"method": "GET", "path": "/**"}}, {"allow": {"method": "POST", "path": "/**/git-upload-pack"}}],
       "denyRules": [{"method": "POST", "path": "/**/git-receive-pack"}]}],
    "binaries": [{"path": "/usr/bin/gh"}, {"path": "/usr/bin/git"}]})", &example).ok());
  CHECK(*osh::gateway::GovernanceProfileHash(example) ==
        "sha256:v2:9ce2f666cf5747e12c4d4a00011fbd31766a9b2a1541e7823869a7c9f0a427a1");
  // Its signature annotations are not part of its hash.
  (*example.mutable_annotations())["openshell.nvidia.com/profile-hash"] = "x";
  CHECK(*osh::gateway::GovernanceProfileHash(example) ==
        "sha256:v2:9ce2f666cf5747e12c4d4a00011fbd31766a9b2a1541e7823869a7c9f0a427a1");
  // Escaping: only '"', '\' and control characters; '/' and non-ASCII stay raw.
  openshell::sandbox::v1::NetworkBinary binary;
  binary.set_path("/a\"b\\c\n\x01/é");
  CHECK(*GovernanceCanonicalJson(binary) == "{\"path\":\"/a\\\"b\\\\c\\n\\u0001/é\"}");

  // The README's policy signature carries the V2 hash, signed by the RFC 8032 key (verified with librhonabwy).
  const std::string signature =
      "eyJ0eXAiOiJKV1QiLCJhbGciOiJFZERTQSIsImtpZCI6IjA2ZTNmZDhmZGEyOWJiNjBhYjU5NTU3ZGU2MWVkYjBhIn0."
      "eyJzdWIiOiJwb2xpY3kueWFtbCIsImlzcyI6Im9wZW5zaGVsbC1nb3Zlcm5hbmNlLWludGVyY2VwdG9yIiwiYXVkIjoib3BlbnNoZWxsLWdvdmVybmFu"
      "Y2UtcG9saWN5IiwiaWF0IjoxNzY3MjI1NjAwLCJleHAiOjAsImhhc2hfYWxnb3JpdGhtIjoib3BlbnNoZWxsLWdvdmVybmFuY2UtcHJvdG9qc29uLXNo"
      "YTI1Ni12MiIsInBvbGljeV9zaGEyNTYiOiJzaGEyNTY6djI6YmE1YmJjZjI5M2MyYmQwZmZjYWE3MDRmYTQ2ODE0MmJmNDA5YTE5NmIyZDA5ZTAwZjg0"
      "ZjY3OGRlMjI5YTNmYyJ9.dPgGpat3U2Ptb4ig5ccYYsrGbv5R5Mal0toM0opFOhbkYW1eEvlPVXUTHja7nhUlCeObeKdlfBN-aM6DTcqeCw";
  jwt_t* jwt = nullptr;
  jwk_t* pub = nullptr;
  REQUIRE(r_jwt_init(&jwt) == RHN_OK);
  REQUIRE(r_jwk_init(&pub) == RHN_OK);
  const std::string public_pem = RfcPublicPem();
  REQUIRE(r_jwk_import_from_pem_der(pub, R_X509_TYPE_PUBKEY, R_FORMAT_PEM,
                                    reinterpret_cast<const unsigned char*>(public_pem.data()), public_pem.size()) == RHN_OK);
  REQUIRE(r_jwt_parse(jwt, signature.c_str(), 0) == RHN_OK);
  CHECK(r_jwt_verify_signature(jwt, pub, 0) == RHN_OK);
  CHECK(std::string(r_jwt_get_claim_str_value(jwt, "policy_sha256")) == v2_hash);
  CHECK(std::string(r_jwt_get_claim_str_value(jwt, "hash_algorithm")) == osh::gateway::kGovernanceHashAlgorithm);
  r_jwk_free(pub);
  r_jwt_free(jwt);
}

TEST_CASE("interceptor: mergeOperations map onto UpdatePolicy's, host-and-port targets must be unambiguous",
          "[interceptor]") {
  openshell::sandbox::v1::SandboxPolicy policy;
  REQUIRE(google::protobuf::util::JsonStringToMessage(kBasePolicyJson, &policy).ok());
  os_v1::UpdateConfigRequest request;
  REQUIRE(google::protobuf::util::JsonStringToMessage(R"({"name": "b", "mergeOperations": [
      {"addRule": {"ruleName": "pypi", "rule": {"endpoints": [{"host": "pypi.org", "port": 443}], "binaries": [{"path": "/usr/bin/pip"}]}}},
      {"addAllowRules": {"host": "API.github.com", "port": 443, "rules": [{"allow": {"method": "GET", "path": "/repos/**"}}]}},
      {"addDenyRules": {"host": "pypi.org", "port": 443, "denyRules": [{"method": "POST", "path": "/**"}]}},
      {"removeBinary": {"ruleName": "api", "binaryPath": "/usr/bin/curl"}}]})", &request).ok());
  auto merged = policy;
  REQUIRE(osh::gateway::ApplyUpstreamMergeOperations(request.merge_operations(), &merged).ok());
  CHECK(merged.network_policies().at("pypi").name() == "pypi");
  CHECK(merged.network_policies().at("pypi").endpoints(0).deny_rules(0).method() == "POST");
  // api's allow rule was added, then its last binary removed: the rule goes (as upstream's merge removes it).
  CHECK_FALSE(merged.network_policies().contains("api"));
  // Two rules with pypi.org:443: a host-and-port target is ambiguous and refused; nothing changes.
  os_v1::UpdateConfigRequest ambiguous;
  REQUIRE(google::protobuf::util::JsonStringToMessage(R"({"mergeOperations": [
      {"addRule": {"ruleName": "pypi2", "rule": {"endpoints": [{"host": "pypi.org", "port": 443}]}}},
      {"removeEndpoint": {"host": "pypi.org", "port": 443}}]})", &ambiguous).ok());
  auto unchanged = merged;
  const auto refused = osh::gateway::ApplyUpstreamMergeOperations(ambiguous.merge_operations(), &unchanged);
  CHECK(refused.code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(std::string(refused.message()),
             Catch::StartsWith("invalid_merge_operation: mergeOperations[1]: ambiguous: rules pypi, pypi2"));
  CHECK(google::protobuf::util::MessageDifferencer::Equals(unchanged, merged));
  // A target that does not exist is named.
  os_v1::UpdateConfigRequest missing;
  REQUIRE(google::protobuf::util::JsonStringToMessage(R"({"mergeOperations": [{"removeRule": {"ruleName": "nope"}}]})",
                                                      &missing).ok());
  CHECK_THAT(std::string(osh::gateway::ApplyUpstreamMergeOperations(missing.merge_operations(), &unchanged).message()),
             Catch::Contains("mergeOperations[0]") && Catch::Contains("nope"));
}

TEST_CASE("interceptor: config keys are validated with clear errors, admit mode's push keys with it",
          "[interceptor][config]") {
  using osh::gateway::ResolveConfig;
  auto ok = ResolveConfig({{"interceptor_socket", "/run/pg/i.sock"}}, {}, {});
  REQUIRE(ok.ok());
  CHECK(ok->interceptor_mode == "ceiling");
  CHECK(ok->interceptor_gateway_id == "openshell");
  CHECK(ok->interceptor_audience == kAudience);
  const std::vector<std::pair<osh::gateway::ConfigValues, std::string>> bad = {
      {{{"interceptor_socket", "/x/i.sock"}, {"interceptor_openshell_endpoint", "unix:///x/os.sock"}},
       "interceptor_openshell_endpoint: is set but interceptor_mode is not admit"},
      {{{"interceptor_socket", "/x/i.sock"}, {"interceptor_mode", "admit"}, {"interceptor_openshell_endpoint", "os:443"}},
       "interceptor_openshell_endpoint: expected unix:///<path> or https://<host>:<port>, got 'os:443'"},
      {{{"interceptor_socket", "/x/i.sock"}, {"interceptor_mode", "admit"}, {"interceptor_openshell_token_file", "/t"}},
       "interceptor_openshell_token_file: is set but interceptor_openshell_endpoint is not"},
      {{{"interceptor_socket", "/x/i.sock"}, {"interceptor_mode", "admit"},
        {"interceptor_openshell_endpoint", "https://os.example:7443"}, {"interceptor_openshell_client_cert", "/c.pem"}},
       "interceptor_openshell_client_key: the client certificate and its key are set together"},
      {{{"interceptor_socket", "/x/i.sock"}, {"interceptor_mode", "admit"},
        {"interceptor_openshell_endpoint", "unix:///x/os.sock"}, {"interceptor_openshell_ca", "/ca.pem"}},
       "interceptor_openshell_ca: is set but interceptor_openshell_endpoint is a Unix socket"},
      {{{"interceptor_mode", "admit"}},
       "interceptor_mode: is set but neither interceptor_socket nor interceptor_listen is"},
      {{{"interceptor_socket", "/x/i.sock"}, {"interceptor_mode", "allow-all"}},
       "interceptor_mode: expected ceiling or admit, got 'allow-all'"},
      {{{"interceptor_gateway_keys", "/x/jwks.json"}},
       "interceptor_gateway_keys: is set but neither interceptor_socket nor interceptor_listen is"},
      // interceptor_listen: tokens and TLS are required, the address must parse, the group is the socket's.
      {{{"interceptor_listen", "127.0.0.1:9443"}, {"tls_cert", "/x/c.pem"}, {"tls_key", "/x/k.pem"}},
       "interceptor_listen: the interceptor over TCP requires interceptor_gateway_keys"},
      {{{"interceptor_listen", "127.0.0.1:9443"}, {"interceptor_gateway_keys", "/x/jwks.json"}},
       "interceptor_listen: the interceptor over TCP requires TLS: set tls_cert and tls_key"},
      {{{"interceptor_listen", "127.0.0.1"}, {"interceptor_gateway_keys", "/x/jwks.json"}},
       "interceptor_listen: expected host:port"},
      {{{"interceptor_listen", "127.0.0.1:9443"}, {"interceptor_gateway_keys", "/x/jwks.json"},
        {"tls_cert", "/x/c.pem"}, {"tls_key", "/x/k.pem"}, {"interceptor_socket_group", "wheel"}},
       "interceptor_socket_group: is set but interceptor_socket is not"},
      {{{"interceptor_socket", "/x/i.sock"}, {"interceptor_audience", ""}}, "interceptor_audience: must not be empty"},
      {{{"interceptor_socket", "/s/admin.sock"}, {"state_dir", "/s"}}, "interceptor_socket: is /s/admin.sock"},
      {{{"interceptor_socket", "/s/i.sock"}, {"state_dir", "/s"}, {"interceptor_socket_group", "wheel"}},
       "interceptor_socket_group: needs interceptor_socket in a folder of its own"},
  };
  for (const auto& [flags, message] : bad) {
    auto refused = ResolveConfig(flags, {}, {});
    INFO(refused.status().message());
    CHECK(refused.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(absl::StartsWith(refused.status().message(), message));
  }
  // The documentation names every key.
  // TCP alone, with tokens and TLS (tls_cert then serves interceptor_listen only).
  auto tcp = ResolveConfig({{"interceptor_listen", "127.0.0.1:9443"}, {"interceptor_gateway_keys", "/x/jwks.json"},
                            {"tls_cert", "/x/c.pem"}, {"tls_key", "/x/k.pem"}},
                           {}, {});
  REQUIRE(tcp.ok());
  CHECK(tcp->interceptor_socket.empty());
  CHECK(tcp->interceptor_listen == "127.0.0.1:9443");
  CHECK(osh::gateway::EffectiveValues(*tcp).at("interceptor_listen") == "127.0.0.1:9443");
  const std::string doc = ReadFile(std::string(OSH_SOURCE_DIR) + "/docs/policy-gateway.md");
  auto admit = ResolveConfig({{"interceptor_socket", "/x/i.sock"}, {"interceptor_mode", "admit"},
                              {"interceptor_openshell_endpoint", "https://os.example:7443"},
                              {"interceptor_openshell_token_file", "/t"}},
                             {}, {});
  REQUIRE(admit.ok());
  CHECK(osh::gateway::EffectiveValues(*admit).at("interceptor_openshell_endpoint") == "https://os.example:7443");
  for (const char* key : {"interceptor_socket", "interceptor_listen", "interceptor_socket_group", "interceptor_mode",
                          "interceptor_gateway_keys", "interceptor_gateway_id", "interceptor_audience",
                          "interceptor_openshell_endpoint", "interceptor_openshell_token_file", "interceptor_openshell_ca",
                          "interceptor_openshell_client_cert", "interceptor_openshell_client_key"}) {
    CHECK_THAT(doc, Catch::Contains(absl::StrCat("| `", key, "` |")));
  }
}

TEST_CASE("interceptor: a real gateway refuses an unreadable push credential at start and says when callers are not "
          "authenticated",
          "[interceptor][integration]") {
  TempDir dir, sock;
  std::string out, err;
  const int code = RunCommand({OSH_GATEWAY_BINARY, "--state-dir", dir / "var", "--interceptor-socket",
                               sock / "i.sock", "--interceptor-mode", "admit", "--interceptor-openshell-endpoint",
                               "unix://" + std::string(sock / "os.sock"), "--interceptor-openshell-token-file",
                               dir / "missing-token"},
                              &out, &err);
  CHECK(code == 2);
  CHECK_THAT(out + err, Catch::Contains("interceptor_openshell_token_file: cannot read"));
  // Without keys: the socket serves, 0600, and the log says no token is asked.
  InterceptorGateway g(/*with_keys=*/false, /*with_ceiling=*/false);
  struct stat st {};
  REQUIRE(::stat(g.socket().c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(Eventually([&] { return absl::StrContains(g.gateway().log(), "interceptor_gateway_keys is unset: no caller token is asked"); }));
  icv1::InterceptorManifest manifest;
  CHECK(g.stub().Describe(g.Context("").get(), icv1::DescribeRequest(), &manifest).ok());
  CHECK(g.gateway().Stop() == 0);
}

TEST_CASE("interceptor: Describe's manifest binds each RPC once, fail closed, with the audience, tokens are checked "
          "on the socket",
          "[interceptor][integration]") {
  InterceptorGateway g;
  CHECK(Eventually([&] { return absl::StrContains(g.gateway().log(), "a JWKS of 1 Ed25519 key(s): gw-kid-1"); }));
  icv1::InterceptorManifest manifest;
  const std::string token = "Bearer " + Mint(g.key(), Claims(ClaimsSpec(), std::time(nullptr)));
  REQUIRE(g.stub().Describe(g.Context(token).get(), icv1::DescribeRequest(), &manifest).ok());
  CHECK(manifest.name() == "policy-gateway");
  CHECK(manifest.failure_policy() == "fail_closed");
  CHECK(manifest.expected_audience() == kAudience);
  CHECK_FALSE(manifest.provider_profiles());
  const std::vector<std::pair<std::string, bool>> expected = {
      {"CreateSandbox", true},          {"UpdateConfig", true},          {"AttachSandboxProvider", false},
      {"DetachSandboxProvider", false}, {"ApproveDraftChunk", false},    {"ApproveAllDraftChunks", false},
      {"EditDraftChunk", false},        {"UndoDraftChunk", false},       {"ImportProviderProfiles", false},
      {"UpdateProviderProfiles", false}, {"DeleteProviderProfile", false}};
  REQUIRE(manifest.bindings_size() == static_cast<int>(expected.size()));
  std::set<std::string> ids, rpcs;
  for (int i = 0; i < manifest.bindings_size(); ++i) {
    const auto& binding = manifest.bindings(i);
    INFO(binding.ShortDebugString());
    CHECK(ids.insert(binding.id()).second);
    CHECK(rpcs.insert(binding.selector().rpc()).second);
    CHECK(binding.selector().rpc() == "openshell.v1.OpenShell/" + expected[i].first);
    std::vector<int> phases(binding.phases().begin(), binding.phases().end());
    CHECK(phases == (expected[i].second ? std::vector<int>{2, 3} : std::vector<int>{3}));
    CHECK((binding.failure_policy() == "fail_closed" || binding.failure_policy().empty()));
  }
  // Every broken token is UNAUTHENTICATED on every method, which the OpenShell gateway treats as fail closed.
  auto other_key = osh::trust::PrivateKey::Generate("ed25519");
  REQUIRE(other_key.ok());
  MintKey other(other_key->ToPem());
  for (const auto& [authorization, step] : BrokenTokens(g.key(), other, std::time(nullptr))) {
    INFO(authorization);
    icv1::InterceptorManifest ignored;
    const auto refused = g.stub().Describe(g.Context(authorization).get(), icv1::DescribeRequest(), &ignored);
    CHECK(refused.error_code() == grpc::StatusCode::UNAUTHENTICATED);
    CHECK(absl::StartsWith(refused.error_message(), step + ": "));
  }
  icv1::InterceptorResult result;
  icv1::InterceptorEvaluation evaluation;
  *evaluation.mutable_validate()->mutable_proposed_operation() = FromProtoJson("{}");
  CHECK(g.stub().Evaluate(g.Context("").get(), evaluation, &result).error_code() == grpc::StatusCode::UNAUTHENTICATED);
  icv1::ProviderProfileSnapshot snapshot;
  CHECK(g.stub().SnapshotProviderProfiles(g.Context("").get(), {}, &snapshot).error_code() ==
        grpc::StatusCode::UNAUTHENTICATED);
  // An empty catalogue is not served (upstream refuses an empty list): the manifest says so, too.
  const auto empty = g.stub().SnapshotProviderProfiles(g.Context(token).get(), {}, &snapshot);
  CHECK(empty.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
  CHECK(absl::StartsWith(empty.error_message(), "provider_profiles_empty: "));
  // The first refusal is logged, naming why; the next 998 are counted, not logged (a caller without a valid
  // token cannot flood the log).
  CHECK_THAT(g.gateway().log(), Catch::Contains("refused (UNAUTHENTICATED): "));
  const std::string log = g.gateway().log();
  size_t lines = 0;
  for (size_t at = log.find("refused (UNAUTHENTICATED)"); at != std::string::npos; at = log.find("refused (UNAUTHENTICATED)", at + 1)) ++lines;
  CHECK(lines == 1);
  CHECK(g.gateway().Stop() == 0);
}

TEST_CASE("interceptor: ceiling mode decides CreateSandbox and every UpdateConfig path on the absolute candidate",
          "[interceptor][integration]") {
  InterceptorGateway g;
  const std::string base = kBasePolicyJson;

  SECTION("CreateSandbox: inside the ceiling is allowed in both phases; a widening or a provider is refused") {
    const std::string create = CreateSandboxJson("build-7", base);
    const Struct payload = FromProtoJson(create);
    // From ProtoJSON, every number is a double in the Struct.
    CHECK(payload.fields().at("spec").struct_value().fields().at("policy").struct_value().fields().at("version").number_value() == 1.0);
    auto modify = g.Evaluate("CreateSandbox", false, payload);
    CHECK(modify.allowed());
    CHECK(modify.patches().empty());  // ceiling mode: the request's own policy stays
    const std::string digest = modify.log_annotations().at("policy-gateway/candidate-digest");
    CHECK(digest.size() == 64);
    auto validate = g.Evaluate("CreateSandbox", true, payload);
    CHECK(validate.allowed());
    CHECK(validate.log_annotations().at("policy-gateway/candidate-digest") == digest);

    // The README's example names the provider github: with no profile of that id its layer cannot be checked.
    CheckDeny(g.Evaluate("CreateSandbox", false, CreateSandboxJson("build-8", base, R"(["github"])")),
              "FAILED_PRECONDITION", "unknown_provider: provider 'github'");
    // Bypass attempt: a host the ceiling does not allow, named in the reason as policyctl ceiling check does.
    const auto widened = g.Evaluate(
        "CreateSandbox", true,
        CreateSandboxJson("build-9", BasePolicyWith("exfil", R"({"name": "exfil", "endpoints": [{"host": "evil.example.com", "port": 443.0}],
                                                                  "binaries": [{"path": "/usr/bin/curl"}]})")));
    CheckDeny(widened, "PERMISSION_DENIED", "exceeds_ceiling: ");
    CHECK_THAT(widened.reason(), Catch::Contains("evil.example.com:443") && Catch::Contains("/usr/bin/curl"));
    CHECK(widened.log_annotations().at("policy-gateway/reason-code") == "exceeds_ceiling");
    CHECK(widened.log_annotations().count("policy-gateway/candidate-digest") == 1);
    // Widening the filesystem is just as refused (containment is on the whole policy).
    std::string writable = base;
    writable = absl::StrReplaceAll(writable, {{R"("readWrite": ["/sandbox"])", R"("readWrite": ["/sandbox", "/etc"])"}});
    CheckDeny(g.Evaluate("CreateSandbox", true, CreateSandboxJson("build-10", writable)), "PERMISSION_DENIED",
              "exceeds_ceiling: ");
    // Strict decoding: an unknown field, a non-integral port and a missing policy are refused, never half-checked.
    CheckDeny(g.Evaluate("CreateSandbox", true, R"({"spec": {"policy": {"version": 1.0}, "gpuDevice": "x"}})"),
              "PERMISSION_DENIED", "invalid_request: openshell.v1.CreateSandboxRequest");
    CheckDeny(g.Evaluate("CreateSandbox", true,
                         CreateSandboxJson("b", absl::StrReplaceAll(base, {{"443.0", "443.5"}}))),
              "PERMISSION_DENIED", "invalid_request: ");
    CheckDeny(g.Evaluate("CreateSandbox", true, R"({"name": "b", "spec": {"template": {"image": "x"}}})"),
              "PERMISSION_DENIED", "policy_required: ");
  }

  SECTION("UpdateConfig: full, merged and global policies; proposal auto-approval") {
    REQUIRE(g.Evaluate("CreateSandbox", true, CreateSandboxJson("build-7", base)).allowed());
    // The README's full policy (validate): pypi by ports, int64 as a string.
    const std::string full = absl::StrCat(
        R"({"name": "build-7", "policy": )",
        BasePolicyWith("pypi", R"({"name": "pypi", "endpoints": [{"host": "pypi.org", "ports": [443.0]}], "binaries": [{"path": "/usr/bin/pip"}]})"),
        R"(, "expectedResourceVersion": "7", "annotations": {"example.com/ticket": "SEC-1042"}})");
    CHECK(FromProtoJson(full).fields().at("expectedResourceVersion").string_value() == "7");
    CHECK(g.Evaluate("UpdateConfig", true, full).allowed());
    // Bypass attempt: pip may not reach the API.
    CheckDeny(g.Evaluate("UpdateConfig", true,
                         absl::StrCat(R"({"name": "build-7", "policy": )",
                                      BasePolicyWith("pip_api", R"({"endpoints": [{"host": "api.github.com", "port": 443.0}], "binaries": [{"path": "/usr/bin/pip"}]})"),
                                      "}")),
              "PERMISSION_DENIED", "exceeds_ceiling: ");
    // A sandbox-scoped write that names no sandbox (global unset) is refused, whatever it carries.
    for (const std::string& unnamed :
         {absl::StrCat(R"({"policy": )", base, "}"), absl::StrCat(R"({"name": "", "global": false, "policy": )", base, "}"),
          std::string(R"({"mergeOperations": [{"removeRule": {"ruleName": "api"}}]})"),
          std::string(R"({"settingKey": "proposal_approval_mode", "settingValue": {"stringValue": "manual"}})")}) {
      for (bool validate : {false, true}) {
        INFO(unnamed << (validate ? " (validate)" : " (modify)"));
        const auto refused = g.Evaluate("UpdateConfig", validate, unnamed);
        CheckDeny(refused, "PERMISSION_DENIED", "invalid_request: name: ");
      }
    }

    // Merge operations (modify): applied to the recorded policy (the full one just allowed) and replaced by
    // the absolute result, which is then validated and committed as is.
    const std::string merge = R"({"name": "build-7", "mergeOperations": [
        {"addRule": {"ruleName": "pypi2", "rule": {"endpoints": [{"host": "pypi.org", "port": 443.0}], "binaries": [{"path": "/usr/bin/pip"}]}}},
        {"removeBinary": {"ruleName": "api", "binaryPath": "/usr/bin/curl"}}]})";
    const Struct merge_payload = FromProtoJson(merge);
    const auto merged = g.Evaluate("UpdateConfig", false, merge_payload);
    REQUIRE(merged.allowed());
    REQUIRE(merged.patches_size() == 2);
    CHECK(merged.patches(0).op() == "remove");
    CHECK(merged.patches(0).path() == "/mergeOperations");
    CHECK(merged.patches(1).op() == "add");
    CHECK(merged.patches(1).path() == "/policy");
    CHECK(merged.patches(1).from().empty());
    const Struct patched = ApplyPatches(merge_payload, merged.patches());
    const auto request = Decode<os_v1::UpdateConfigRequest>(patched);
    CHECK(request.name() == "build-7");
    CHECK(request.merge_operations().empty());
    REQUIRE(request.has_policy());
    const auto& rules = request.policy().network_policies();
    // api's last binary removed: the rule goes, as upstream's merge removes it (an empty binary list would mean
    // every binary to upstream's merge rules and docs, and no process to its runtime).
    CHECK(rules.size() == 2);
    CHECK_FALSE(rules.contains("api"));
    CHECK(rules.at("pypi").endpoints(0).ports(0) == 443);
    CHECK(rules.at("pypi2").name() == "pypi2");
    CHECK(rules.at("pypi2").endpoints(0).host() == "pypi.org");
    CHECK(rules.at("pypi2").binaries(0).path() == "/usr/bin/pip");
    CHECK(request.policy().filesystem().read_write(0) == "/sandbox");
    CHECK(request.policy().process().run_as_user() == "sandbox");
    // The patch value is ProtoJSON too: the port is a double in the Value.
    CHECK(merged.patches(1).value().struct_value().fields().at("networkPolicies").struct_value().fields().at("pypi2")
              .struct_value().fields().at("endpoints").list_value().values(0).struct_value().fields().at("port")
              .number_value() == 443.0);
    auto validated = g.Evaluate("UpdateConfig", true, patched);
    CHECK(validated.allowed());
    CHECK(validated.log_annotations().at("policy-gateway/candidate-digest") ==
          merged.log_annotations().at("policy-gateway/candidate-digest"));
    // The next merge starts from the policy just validated: api is gone, so removing curl from it again fails.
    CheckDeny(g.Evaluate("UpdateConfig", false, merge), "FAILED_PRECONDITION", "invalid_merge_operation: mergeOperations[1]");

    // Bypass attempts on the merge path: a widening rule; an unknown sandbox; merges reaching validate.
    const auto widening = g.Evaluate("UpdateConfig", false, R"({"name": "build-7", "mergeOperations": [
        {"addRule": {"ruleName": "x", "rule": {"endpoints": [{"host": "evil.example.com", "port": 443.0}], "binaries": [{"path": "/usr/bin/pip"}]}}}]})");
    CheckDeny(widening, "PERMISSION_DENIED", "exceeds_ceiling: ");
    CHECK_THAT(widening.reason(), Catch::Contains("evil.example.com:443"));
    CheckDeny(g.Evaluate("UpdateConfig", false, R"({"name": "nobody", "mergeOperations": [{"removeRule": {"ruleName": "api"}}]})"),
              "FAILED_PRECONDITION", "unknown_sandbox: no policy is recorded here for sandbox 'nobody'");
    CheckDeny(g.Evaluate("UpdateConfig", true, merge), "PERMISSION_DENIED", "merge_unverifiable: ");

    // Global policy writes are checked like sandbox policies (upstream's example lets them bypass its baseline).
    const std::string global = R"({"policy": {"version": 1.0,
        "filesystem": {"includeWorkdir": true, "readOnly": ["/usr", "/etc"], "readWrite": ["/sandbox"]},
        "landlock": {"compatibility": "best_effort"}, "process": {"runAsUser": "sandbox", "runAsGroup": "sandbox"},
        "networkPolicies": {"mirror": {"name": "mirror", "endpoints": [{"host": "mirror.corp.example.com", "port": 443.0}],
                                       "binaries": [{"path": "/usr/bin/pip"}]}}}, "global": true})";
    const auto global_refused = g.Evaluate("UpdateConfig", true, global);
    CheckDeny(global_refused, "PERMISSION_DENIED", "exceeds_ceiling: ");
    CHECK_THAT(global_refused.reason(), Catch::Contains("mirror.corp.example.com:443"));
    CHECK(g.Evaluate("UpdateConfig", true,
                     absl::StrReplaceAll(global, {{"mirror.corp.example.com", "pypi.org"}})).allowed());

    // proposal_approval_mode = auto: the README's deny, field by field.
    const auto automatic = g.Evaluate("UpdateConfig", true,
                                      R"({"settingKey": "proposal_approval_mode", "settingValue": {"stringValue": "auto"}, "global": true})");
    CHECK_FALSE(automatic.allowed());
    CHECK(automatic.reason() ==
          "approval_unverifiable: auto-approval applies proposals never checked here; send UpdateConfig with the policy");
    CHECK(automatic.status_code() == "PERMISSION_DENIED");
    CHECK(automatic.log_annotations().at("policy-gateway/reason-code") == "approval_unverifiable");
    CHECK(g.Evaluate("UpdateConfig", true,
                     R"({"settingKey": "proposal_approval_mode", "settingValue": {"stringValue": "manual"}, "global": true})")
              .allowed());
  }
  CHECK(g.gateway().Stop() == 0);
}

TEST_CASE("interceptor: providers, draft chunks and profile writes, one audit event per Evaluate", "[interceptor][integration]") {
  InterceptorGateway g;
  REQUIRE(g.Evaluate("CreateSandbox", true, CreateSandboxJson("build-7", kBasePolicyJson)).allowed());
  // AttachSandboxProvider carries only names: with no profile of that id the provider's layer is unknown, refused.
  CheckDeny(g.Evaluate("AttachSandboxProvider", true, R"({"sandboxName": "build-7", "providerName": "pypi", "expectedResourceVersion": "3"})"),
            "FAILED_PRECONDITION", "unknown_provider: provider 'pypi'");
  // Detaching what was never attached: what remains is the recorded composition, checked; allowed (and audited).
  CHECK(g.Evaluate("DetachSandboxProvider", true, R"({"sandboxName": "build-7", "providerName": "pypi"})").allowed());
  // A sandbox with no record here: what remains is not known, refused (review finding: a sandbox created
  // without a name had no record, and its detach was allowed unchecked).
  CheckDeny(g.Evaluate("DetachSandboxProvider", true, R"({"sandboxName": "build-unknown", "providerName": "pypi"})"),
            "FAILED_PRECONDITION", "unknown_sandbox: ");
  // Draft-chunk approvals carry chunk ids only: refused, naming the way that works.
  const auto approve = g.Evaluate("ApproveDraftChunk", true, R"({"name": "build-7", "chunkId": "chunk-5c1e", "reviewToken": "rvt-8d2a"})");
  CheckDeny(approve, "PERMISSION_DENIED", "approval_unverifiable: ");
  CHECK_THAT(approve.reason(), Catch::Contains("send UpdateConfig with the policy"));
  CheckDeny(g.Evaluate("ApproveAllDraftChunks", true,
                       R"({"name": "build-7", "includeSecurityFlagged": true, "approvals": [{"chunkId": "c1", "reviewToken": "t"}]})"),
            "PERMISSION_DENIED", "approval_unverifiable: ");
  CHECK(g.Evaluate("EditDraftChunk", true,
                   R"({"name": "build-7", "chunkId": "c1", "proposedRule": {"endpoints": [{"host": "evil.example.com", "port": 443.0}]}})")
            .allowed());
  // Undoing a chunk removes a rule named by chunk id, not content: refused like approvals (review finding: it
  // made this gateway forget the sandbox, and an unchecked detach or an uncomposed policy followed). The
  // record stays: a merge still applies to it.
  const auto undo = g.Evaluate("UndoDraftChunk", true, R"({"name": "build-7", "chunkId": "c1"})");
  CheckDeny(undo, "PERMISSION_DENIED", "approval_unverifiable: ");
  CHECK_THAT(undo.reason(), Catch::Contains("send UpdateConfig with the policy without that rule"));
  CHECK(g.Evaluate("UpdateConfig", false, R"({"name": "build-7", "mergeOperations": [{"removeRule": {"ruleName": "api"}}]})").allowed());
  // Profile writes decode strictly (enum names, doubles) and are allowed while this gateway's catalogue is empty.
  CHECK(g.Evaluate("ImportProviderProfiles", true, R"({"profiles": [{"profile": {"id": "slack", "displayName": "Slack",
      "category": "PROVIDER_PROFILE_CATEGORY_MESSAGING", "credentials": [{"name": "bot_token", "envVars": ["SLACK_BOT_TOKEN"], "required": true}],
      "endpoints": [{"host": "slack.com", "port": 443.0, "protocol": "rest", "enforcement": "enforce", "access": "read-write"}],
      "binaries": [{"path": "/usr/bin/curl"}]}, "source": "slack.yaml"}]})").allowed());
  CHECK(g.Evaluate("DeleteProviderProfile", true, R"({"id": "slack"})").allowed());
  // An RPC this interceptor does not bind is refused.
  CheckDeny(g.Evaluate("DeleteSandbox", true, R"({"name": "build-7"})"), "PERMISSION_DENIED", "unbound_method: ");

  // One audit event per Evaluate, carrying the decision id the result's log annotations gave.
  std::vector<gw::AuditEvent> interceptions;
  const bool all_audited = Eventually([&] {
    interceptions.clear();
    for (const auto& event : g.gateway().AuditEvents()) {
      if (event.type() == "interception") interceptions.push_back(event);
    }
    return static_cast<int>(interceptions.size()) == g.evaluations();
  }, std::chrono::seconds(5));
  INFO("audited " << interceptions.size() << " of " << g.evaluations() << " evaluations");
  REQUIRE(all_audited);
  for (size_t i = 0; i < interceptions.size(); ++i) {
    const auto& event = interceptions[i];
    INFO(event.ShortDebugString());
    CHECK(event.audit_context().at("decision_id") == g.decision_ids()[i]);
    CHECK(event.audit_context().at("principal_kind") == "user");
    CHECK(event.audit_context().at("principal_subject") == "alice@example.com");
    CHECK(event.audit_context().at("phase") == g.phases()[i]);
    CHECK(event.actor() == "openshell:user:alice@example.com");
  }
  CHECK(interceptions[0].audit_context().at("rpc") == "openshell.v1.OpenShell/CreateSandbox");
  CHECK(interceptions[0].outcome() == "ok");
  CHECK(interceptions[0].sandbox_id() == "build-7");
  CHECK(interceptions[0].policy_digest().size() == 64);
  CHECK(interceptions[1].outcome() == "refused");
  CHECK_THAT(interceptions[1].reason(), Catch::StartsWith("unknown_provider: "));
  CHECK(interceptions[1].audit_context().at("decision") == "deny");
  // Metrics per intercepted RPC, phase and decision, with a latency histogram.
  const std::string metrics = g.Metrics();
  INFO(metrics);
  CHECK_THAT(metrics, Catch::Contains(
      "\npolicy_gateway_interceptor_calls_total{method=\"ApproveDraftChunk\",phase=\"validate\",decision=\"deny\"} 1\n"));
  CHECK_THAT(metrics, Catch::Contains(
      "\npolicy_gateway_interceptor_calls_total{method=\"CreateSandbox\",phase=\"validate\",decision=\"allow\"} 1\n"));
  CHECK_THAT(metrics, Catch::Contains(
      "\npolicy_gateway_interceptor_calls_total{method=\"other\",phase=\"validate\",decision=\"deny\"} 1\n"));
  CHECK_THAT(metrics, Catch::Contains(
      "\npolicy_gateway_interceptor_call_duration_seconds_count{method=\"UpdateConfig\",phase=\"modify_operation\"} 1\n"));
  // The chain still verifies with the new events in it.
  std::string out, err;
  REQUIRE(Ctl(g.gateway(), {"audit", "export", "--out", g.gateway().dir() / "audit.jsonl"}, &out, &err) == 0);
  CHECK(CtlOffline({"audit", "verify", g.gateway().dir() / "audit.jsonl"}, &out, &err) == 0);
  CHECK(g.gateway().Stop() == 0);
}

TEST_CASE("interceptor: the OpenShell gateway's idle keepalive pings keep its one connection (no GOAWAY too_many_pings)",
          "[interceptor][integration][keepalive]") {
  // A default gRPC server answers pings every 10 s without calls with GOAWAY after about 30 s; the next
  // call then races a reconnect and can fail closed (README §1). Idle for 45 s, the connection must stay.
  InterceptorGateway g(/*with_keys=*/true, /*with_ceiling=*/false);
  icv1::InterceptorManifest manifest;
  const std::string token = "Bearer " + Mint(g.key(), Claims(ClaimsSpec(), std::time(nullptr)));
  REQUIRE(g.stub().Describe(g.Context(token).get(), icv1::DescribeRequest(), &manifest).ok());
  REQUIRE(g.channel().GetState(false) == GRPC_CHANNEL_READY);
  for (int i = 0; i < 45; ++i) {
    std::this_thread::sleep_for(std::chrono::seconds(1));
    INFO("after " << i + 1 << " s idle");
    REQUIRE(g.channel().GetState(false) == GRPC_CHANNEL_READY);
  }
  CHECK(g.Evaluate("UpdateConfig", true, R"({"settingKey": "x", "settingValue": {"boolValue": true}, "global": true})").allowed());
  CHECK(g.channel().GetState(false) == GRPC_CHANNEL_READY);
  CHECK(g.gateway().Stop() == 0);
}

// A field of the JSON object policyctl printed, by its path, as text ("" when absent or an object).
std::string JsonPath(const std::string& json, std::initializer_list<const char*> path) {
  Struct doc;
  if (!google::protobuf::util::JsonStringToMessage(json, &doc).ok()) return "";
  const Struct* at = &doc;
  size_t depth = 0;
  for (const char* key : path) {
    auto it = at->fields().find(key);
    if (it == at->fields().end()) return "";
    const Value& value = it->second;
    if (++depth < path.size()) {
      if (!value.has_struct_value()) return "";
      at = &value.struct_value();
      continue;
    }
    if (value.has_string_value()) return value.string_value();
    if (value.has_bool_value()) return value.bool_value() ? "true" : "false";
    if (value.has_number_value()) return absl::StrCat(value.number_value());
  }
  return "";
}

TEST_CASE("interceptor: interceptor_listen serves over TLS with the token only, refuses plaintext, a taken port "
          "exits 2, and policyctl status shows listeners, mode and counts",
          "[interceptor][integration][tls]") {
  TempDir pki;
  const CertFiles ca = MakeCa(pki.path(), "ca");
  const CertFiles server = MakeLeaf(pki.path(), "server", ca);
  const std::vector<std::string> tls = {"--tls-cert", server.cert, "--tls-key", server.key};
  {
    // Refused at load, before anything starts: TCP without tokens, TCP without TLS.
    TempDir dir;
    std::string out, err;
    CHECK(RunCommand({OSH_GATEWAY_BINARY, "--state-dir", dir / "var", "--interceptor-listen", "127.0.0.1:0", "--tls-cert",
                      server.cert, "--tls-key", server.key}, &out, &err) == 2);
    CHECK_THAT(out + err, Catch::Contains("interceptor_listen: the interceptor over TCP requires interceptor_gateway_keys"));
    CHECK(RunCommand({OSH_GATEWAY_BINARY, "--state-dir", dir / "var", "--interceptor-listen", "127.0.0.1:0",
                      "--interceptor-gateway-keys", pki / "jwks.json"}, &out, &err) == 2);
    CHECK_THAT(out + err, Catch::Contains("interceptor_listen: the interceptor over TCP requires TLS"));
  }

  // TCP only: no interceptor_socket.
  std::vector<std::string> args = {"--interceptor-listen", "127.0.0.1:0"};
  args.insert(args.end(), tls.begin(), tls.end());
  InterceptorGateway g(/*with_keys=*/true, /*with_ceiling=*/true, args, ProfileSigning::kNone, /*unix_socket=*/false);
  const std::string address =
      LoggedAfter([&] { return g.gateway().log(); }, "GatewayInterceptor on ");
  INFO(address);
  REQUIRE(absl::StartsWith(address, "127.0.0.1:"));
  CHECK_FALSE(absl::EndsWith(address, ":0"));
  CHECK_THAT(g.gateway().log(), Catch::Contains("TLS (interceptor listener): certificate") &&
                                    Catch::Contains("with TLS (no client certificate asked: the token authenticates)"));
  CHECK_FALSE(std::filesystem::exists(g.socket()));
  g.ConnectTls(address, ReadFile(ca.cert));

  // Describe with the OpenShell gateway's token; without one, or with a broken one, UNAUTHENTICATED.
  const std::string token = "Bearer " + Mint(g.key(), Claims(ClaimsSpec(), std::time(nullptr)));
  icv1::InterceptorManifest manifest;
  REQUIRE(g.stub().Describe(g.Context(token).get(), icv1::DescribeRequest(), &manifest).ok());
  CHECK(manifest.name() == "policy-gateway");
  CHECK(manifest.expected_audience() == kAudience);
  CHECK(g.stub().Describe(g.Context("").get(), icv1::DescribeRequest(), &manifest).error_code() ==
        grpc::StatusCode::UNAUTHENTICATED);
  icv1::InterceptorEvaluation unsigned_call;
  unsigned_call.set_method("CreateSandbox");
  *unsigned_call.mutable_validate()->mutable_proposed_operation() = FromProtoJson(CreateSandboxJson("x", kBasePolicyJson));
  icv1::InterceptorResult refused;
  CHECK(g.stub().Evaluate(g.Context("").get(), unsigned_call, &refused).error_code() == grpc::StatusCode::UNAUTHENTICATED);
  auto other_key = osh::trust::PrivateKey::Generate("ed25519");
  REQUIRE(other_key.ok());
  const std::string forged = "Bearer " + Mint(MintKey(other_key->ToPem()), Claims(ClaimsSpec(), std::time(nullptr)));
  CHECK(g.stub().Evaluate(g.Context(forged).get(), unsigned_call, &refused).error_code() ==
        grpc::StatusCode::UNAUTHENTICATED);
  // Health and reflection ask no token (review 115, mended at stop 71): health's Check answers, but neither
  // health's Watch nor reflection's stream, which a peer without the token could hold open for as long as it
  // liked (gRPC's defaults served both here).
  CHECK(HealthWatchOutcome(g.shared_channel()) == grpc::StatusCode::UNIMPLEMENTED);
  CHECK(ReflectionOutcome(g.shared_channel()) == grpc::StatusCode::UNIMPLEMENTED);
  {
    grpc::health::v1::HealthCheckResponse health;
    REQUIRE(grpc::health::v1::Health::NewStub(g.shared_channel())
                ->Check(g.Context("").get(), grpc::health::v1::HealthCheckRequest(), &health)
                .ok());
    CHECK(health.status() == grpc::health::v1::HealthCheckResponse::SERVING);
  }

  // Evaluate over TLS: allowed, patched (mergeOperations replaced by the absolute policy), denied.
  const std::string base = kBasePolicyJson;
  CHECK(g.Evaluate("CreateSandbox", false, CreateSandboxJson("tcp-1", base)).allowed());
  CHECK(g.Evaluate("CreateSandbox", true, CreateSandboxJson("tcp-1", base)).allowed());
  const auto merged = g.Evaluate("UpdateConfig", false, R"({"name": "tcp-1", "mergeOperations": [
      {"addRule": {"ruleName": "pypi", "rule": {"endpoints": [{"host": "pypi.org", "port": 443.0}], "binaries": [{"path": "/usr/bin/pip"}]}}}]})");
  CHECK(merged.allowed());
  CHECK(merged.patches_size() == 2);
  CheckDeny(g.Evaluate("CreateSandbox", true,
                       CreateSandboxJson("tcp-2", BasePolicyWith("exfil", R"({"name": "exfil", "endpoints": [{"host": "evil.example.com", "port": 443.0}],
                                                                              "binaries": [{"path": "/usr/bin/curl"}]})"))),
            "PERMISSION_DENIED", "exceeds_ceiling: ");

  // A plaintext client gets no answer: the port speaks TLS only.
  {
    auto plain = icv1::GatewayInterceptor::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
    icv1::InterceptorManifest ignored;
    const grpc::Status status = plain->Describe(g.Context(token).get(), icv1::DescribeRequest(), &ignored);
    INFO(status.error_message());
    CHECK_FALSE(status.ok());
    CHECK((status.error_code() == grpc::StatusCode::UNAVAILABLE ||
           status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED));
  }

  // policyctl status: the listener, the mode and the counts, as text and as JSON.
  std::string out, err;
  REQUIRE(Ctl(g.gateway(), {"status"}, &out, &err) == 0);
  CHECK_THAT(out, Catch::Contains(absl::StrCat("interceptor:        ", address,
                                               " (TLS), mode ceiling, callers authenticated by token")));
  CHECK_THAT(out, Catch::Contains("interceptor calls:  Evaluate 2 allowed, 1 patched, 1 denied; 3 unauthenticated"));
  REQUIRE(Ctl(g.gateway(), {"-o", "json", "status"}, &out, &err) == 0);
  CHECK(JsonPath(out, {"interceptor", "listen"}) == address);
  CHECK(JsonPath(out, {"interceptor", "socket"}).empty());
  CHECK(JsonPath(out, {"interceptor", "mode"}) == "ceiling");
  CHECK(JsonPath(out, {"interceptor", "callers_authenticated"}) == "true");
  CHECK(JsonPath(out, {"interceptor", "evaluate_allowed"}) == "2");
  CHECK(JsonPath(out, {"interceptor", "evaluate_patched"}) == "1");
  CHECK(JsonPath(out, {"interceptor", "evaluate_denied"}) == "1");
  CHECK(JsonPath(out, {"interceptor", "unauthenticated"}) == "3");

  // A second gateway on the port this one serves: a configuration error (exit 2), and this one goes on.
  {
    TempDir second;
    std::vector<std::string> argv = {OSH_GATEWAY_BINARY, "--state-dir", second / "var", "--interceptor-listen", address,
                                     "--interceptor-gateway-keys", g.KeysFile()};
    argv.insert(argv.end(), tls.begin(), tls.end());
    Process taken(argv, second / "gateway.log");
    CHECK(taken.Wait(std::chrono::seconds(20)) == 2);
    CHECK_THAT(ReadAll(second / "gateway.log"), Catch::Contains("interceptor_listen: ") && Catch::Contains("in use"));
  }
  REQUIRE(g.stub().Describe(g.Context(token).get(), icv1::DescribeRequest(), &manifest).ok());
  // SIGHUP reloads its certificate with the other listeners'; the open connection goes on.
  g.gateway().Signal(SIGHUP);
  CHECK(Eventually([&] { return absl::StrContains(g.gateway().log(), "(interceptor listener), valid until"); }));
  CHECK(g.stub().Describe(g.Context(token).get(), icv1::DescribeRequest(), &manifest).ok());
  CHECK(g.gateway().Stop() == 0);
}

TEST_CASE("interceptor: policyctl status says the interceptor is off, or the socket and that no token is asked",
          "[interceptor][integration]") {
  {
    GatewayFixture off;
    std::string out, err;
    REQUIRE(Ctl(off, {"status"}, &out, &err) == 0);
    CHECK_THAT(out, Catch::Contains("interceptor:        off"));
    REQUIRE(Ctl(off, {"-o", "json", "status"}, &out, &err) == 0);
    CHECK_THAT(out, !Catch::Contains("\"interceptor\""));
  }
  InterceptorGateway g(/*with_keys=*/false, /*with_ceiling=*/false);
  CHECK(g.Evaluate("UpdateConfig", true, R"({"settingKey": "x", "settingValue": {"boolValue": true}, "global": true})").allowed());
  std::string out, err;
  REQUIRE(Ctl(g.gateway(), {"status"}, &out, &err) == 0);
  CHECK_THAT(out, Catch::Contains(absl::StrCat("interceptor:        ", std::filesystem::absolute(g.socket()).lexically_normal().string(),
                                               ", mode ceiling, no caller token asked")));
  CHECK_THAT(out, Catch::Contains("interceptor calls:  Evaluate 1 allowed, 0 patched, 0 denied; 0 unauthenticated"));
  REQUIRE(Ctl(g.gateway(), {"-o", "json", "status"}, &out, &err) == 0);
  CHECK(JsonPath(out, {"interceptor", "listen"}).empty());
  CHECK(JsonPath(out, {"interceptor", "callers_authenticated"}) == "false");
  CHECK(g.gateway().Stop() == 0);
}

TEST_CASE("interceptor: the recorded policies survive a restart: mergeOperations after it apply to them, "
          "an unrecorded sandbox stays unknown",
          "[interceptor][integration][interceptor_records]") {
  InterceptorGateway g;
  // build-7: created, then given a full policy with pypi (the record is that policy, not the created one).
  REQUIRE(g.Evaluate("CreateSandbox", true, CreateSandboxJson("build-7", kBasePolicyJson)).allowed());
  const std::string with_pypi = BasePolicyWith(
      "pypi", R"({"name": "pypi", "endpoints": [{"host": "pypi.org", "port": 443.0}], "binaries": [{"path": "/usr/bin/pip"}]})");
  REQUIRE(g.Evaluate("UpdateConfig", true, absl::StrCat(R"({"name": "build-7", "policy": )", with_pypi, "}")).allowed());
  // build-8: created without a name (upstream makes one up), so never recorded.
  REQUIRE(g.Evaluate("CreateSandbox", true, CreateSandboxJson("", kBasePolicyJson)).allowed());

  g.Restart();

  // The merge applies to the recorded full policy: removing pypi works (it would be rule-not-found on the
  // created policy, and unknown_sandbox with no record at all).
  const std::string merge = R"({"name": "build-7", "mergeOperations": [{"removeRule": {"ruleName": "pypi"}}]})";
  const Struct merge_payload = FromProtoJson(merge);
  const auto merged = g.Evaluate("UpdateConfig", false, merge_payload);
  INFO(merged.reason());
  REQUIRE(merged.allowed());
  REQUIRE(merged.patches_size() == 2);
  const auto request = Decode<os_v1::UpdateConfigRequest>(ApplyPatches(merge_payload, merged.patches()));
  REQUIRE(request.has_policy());
  CHECK(request.policy().network_policies().size() == 1);
  CHECK(request.policy().network_policies().count("api") == 1);
  // The ceiling is still checked on the merged result.
  CheckDeny(g.Evaluate("UpdateConfig", false, R"({"name": "build-7", "mergeOperations": [
      {"addRule": {"ruleName": "x", "rule": {"endpoints": [{"host": "evil.example.com", "port": 443.0}], "binaries": [{"path": "/usr/bin/pip"}]}}}]})"),
            "PERMISSION_DENIED", "exceeds_ceiling: ");
  // Unknown before the restart, unknown after it: merges, a full policy (whose providers are not known
  // here) and a detach are refused.
  CheckDeny(g.Evaluate("UpdateConfig", false, R"({"name": "build-8", "mergeOperations": [{"removeRule": {"ruleName": "api"}}]})"),
            "FAILED_PRECONDITION", "unknown_sandbox: ");
  CheckDeny(g.Evaluate("UpdateConfig", true, absl::StrCat(R"({"name": "build-8", "policy": )", kBasePolicyJson, "}")),
            "FAILED_PRECONDITION", "unknown_sandbox: ");
  CheckDeny(g.Evaluate("DetachSandboxProvider", true, R"({"sandboxName": "build-8", "providerName": "pypi"})"),
            "FAILED_PRECONDITION", "unknown_sandbox: ");
  CHECK(g.gateway().Stop() == 0);
}

TEST_CASE("interceptor: an allow whose audit event cannot be written is answered as a deny (fail closed)",
          "[interceptor][integration][postgres][errors]") {
  // Review 114: the record committed, the interception event was written apart and a failure only logged:
  // upstream was told `allowed` of a decision the audit log (the verifiable log) never held.
  const std::string url = PgCluster::Shared().CreateDatabase();
  InterceptorGateway g(/*with_keys=*/true, /*with_ceiling=*/true, {"--database", url});
  REQUIRE(PgCluster::Psql(url, "ALTER TABLE audit_events ADD CONSTRAINT osh_test_no_interception CHECK (type <> 'interception'); "
                               "ALTER TABLE audit_pending ADD CONSTRAINT osh_test_no_interception CHECK (type <> 'interception')") == 0);
  const std::string create = CreateSandboxJson("build-9", kBasePolicyJson);
  CheckDeny(g.Evaluate("CreateSandbox", true, create), "FAILED_PRECONDITION", "storage_error: ");
  CHECK_THAT(g.gateway().log(), Catch::Contains("osh_test_no_interception"));
  REQUIRE(PgCluster::Psql(url, "ALTER TABLE audit_events DROP CONSTRAINT osh_test_no_interception; "
                               "ALTER TABLE audit_pending DROP CONSTRAINT osh_test_no_interception") == 0);
  // Nor was the sandbox recorded (stop 70: the record committed in a transaction of its own, so a later
  // merge was composed from a create the audit log never held): it is unknown here.
  CheckDeny(g.Evaluate("UpdateConfig", false, R"({"name": "build-9", "mergeOperations": [{"removeRule": {"ruleName": "api"}}]})"),
            "FAILED_PRECONDITION", "unknown_sandbox: ");
  const auto allowed = g.Evaluate("CreateSandbox", true, create);
  INFO(allowed.reason());
  CHECK(allowed.allowed());
  // Recorded with its allow: the merge is composed from it now.
  const auto merged = g.Evaluate("UpdateConfig", false, R"({"name": "build-9", "mergeOperations": [{"removeRule": {"ruleName": "api"}}]})");
  INFO(merged.reason());
  CHECK(merged.allowed());
  // The same create again (its record stored already, so nothing of the record is written): its event still
  // must be, or the allow is a deny. (NOT VALID: the interception events written since stay.)
  REQUIRE(PgCluster::Psql(url, "ALTER TABLE audit_events ADD CONSTRAINT osh_test_no_interception CHECK (type <> 'interception') NOT VALID; "
                               "ALTER TABLE audit_pending ADD CONSTRAINT osh_test_no_interception CHECK (type <> 'interception') NOT VALID") == 0);
  CheckDeny(g.Evaluate("CreateSandbox", true, create), "FAILED_PRECONDITION", "storage_error: ");
}

TEST_CASE("interceptor: a sandbox's record is its workspace's: the same name in another workspace is another sandbox",
          "[interceptor][integration][interceptor_records]") {
  // Review finding: records were kept by name alone, so a sandbox of the same name in another workspace
  // replaced the record a merge or an attach is composed from — and a provider layer checked with the other
  // sandbox's deny rules was allowed onto this one.
  InterceptorGateway g;
  const std::string with_pypi = BasePolicyWith(
      "pypi", R"({"name": "pypi", "endpoints": [{"host": "pypi.org", "port": 443.0}], "binaries": [{"path": "/usr/bin/pip"}]})");
  REQUIRE(g.Evaluate("CreateSandbox", true, CreateSandboxJson("build-7", with_pypi)).allowed());
  std::string other = CreateSandboxJson("build-7", kBasePolicyJson);
  other.insert(other.rfind('}'), R"(, "workspace": "team-b")");
  REQUIRE(g.Evaluate("CreateSandbox", true, other).allowed());
  // The default workspace's build-7 still has pypi to remove; team-b's never had it.
  const std::string remove_pypi = R"({"name": "build-7", "mergeOperations": [{"removeRule": {"ruleName": "pypi"}}]})";
  const auto merged = g.Evaluate("UpdateConfig", false, remove_pypi);
  INFO(merged.reason());
  CHECK(merged.allowed());
  for (const std::string workspace : {"", "default"}) {
    CHECK(g.Evaluate("UpdateConfig", false,
                     absl::StrCat(R"({"name": "build-7", "workspace": ")", workspace,
                                  R"(", "mergeOperations": [{"removeRule": {"ruleName": "pypi"}}]})"))
              .allowed());
  }
  CheckDeny(g.Evaluate("UpdateConfig", false,
                       R"({"name": "build-7", "workspace": "team-b", "mergeOperations": [{"removeRule": {"ruleName": "pypi"}}]})"),
            "FAILED_PRECONDITION", "invalid_merge_operation: ");
  // A workspace nobody recorded build-7 in: unknown there, named with its workspace.
  CheckDeny(g.Evaluate("UpdateConfig", false,
                       R"({"name": "build-7", "workspace": "team-c", "mergeOperations": [{"removeRule": {"ruleName": "api"}}]})"),
            "FAILED_PRECONDITION", "unknown_sandbox: no policy is recorded here for sandbox 'build-7' (workspace 'team-c')");
  // A workspace holding a control character is refused before anything is read or recorded.
  CheckDeny(g.Evaluate("CreateSandbox", true,
                       absl::StrCat(CreateSandboxJson("build-9", kBasePolicyJson).substr(
                                        0, CreateSandboxJson("build-9", kBasePolicyJson).rfind('}')),
                                    R"(, "workspace": "teamb"})")),
            "PERMISSION_DENIED", "invalid_request: workspace: ");
  CHECK(g.gateway().Stop() == 0);
}

TEST_CASE("interceptor: two replicas on one PostgreSQL database share the records: recorded on A, merged on B",
          "[interceptor][integration][interceptor_records][postgres][replicas]") {
  const std::string url = PgCluster::Shared().CreateDatabase();
  // No ceiling (each replica has a trust store of its own): every well-formed candidate is allowed, so what
  // is checked here is which base a merge is applied to.
  InterceptorGateway a(/*with_keys=*/true, /*with_ceiling=*/false, {"--database", url});
  InterceptorGateway b(/*with_keys=*/true, /*with_ceiling=*/false, {"--database", url});
  const std::string with_pypi = BasePolicyWith(
      "pypi", R"({"name": "pypi", "endpoints": [{"host": "pypi.org", "port": 443.0}], "binaries": [{"path": "/usr/bin/pip"}]})");
  REQUIRE(a.Evaluate("CreateSandbox", true, CreateSandboxJson("build-7", with_pypi)).allowed());

  // B applies the merge to A's record, and validates (records) the result.
  const std::string remove_pypi = R"({"name": "build-7", "mergeOperations": [{"removeRule": {"ruleName": "pypi"}}]})";
  const Struct remove_pypi_payload = FromProtoJson(remove_pypi);
  const auto on_b = b.Evaluate("UpdateConfig", false, remove_pypi_payload);
  INFO(on_b.reason());
  REQUIRE(on_b.allowed());
  const Struct patched = ApplyPatches(remove_pypi_payload, on_b.patches());
  const auto request = Decode<os_v1::UpdateConfigRequest>(patched);
  CHECK(request.policy().network_policies().size() == 1);
  REQUIRE(b.Evaluate("UpdateConfig", true, patched).allowed());

  // A sees B's newer record at once (no stale copy): pypi is gone, so removing it again fails there.
  CheckDeny(a.Evaluate("UpdateConfig", false, remove_pypi), "FAILED_PRECONDITION", "invalid_merge_operation: ");
  const auto on_a = a.Evaluate("UpdateConfig", false, R"({"name": "build-7", "mergeOperations": [{"removeRule": {"ruleName": "api"}}]})");
  INFO(on_a.reason());
  CHECK(on_a.allowed());
  // A sandbox neither replica recorded is unknown on both.
  for (InterceptorGateway* g : {&a, &b}) {
    CheckDeny(g->Evaluate("UpdateConfig", false, R"({"name": "nobody", "mergeOperations": [{"removeRule": {"ruleName": "api"}}]})"),
              "FAILED_PRECONDITION", "unknown_sandbox: ");
  }
  CHECK(a.gateway().Stop() == 0);
  CHECK(b.gateway().Stop() == 0);
}


// --- Provider profiles (issue 28 phase 2) ------------------------------------------------------------

// README §7's example profile file, verbatim.
const char kGithubProfileYaml[] = R"(id: github
display_name: GitHub
description: REST API access and git over HTTPS for gh and git
category: source_control
credentials:
  - name: api_token
    description: a personal access or app installation token
    env_vars: [GITHUB_TOKEN, GH_TOKEN]
    required: true
    auth_style: bearer
    header_name: authorization
discovery:
  credentials: [api_token]
endpoints:
  - host: api.github.com
    port: 443
    protocol: rest
    enforcement: enforce
    access: read-only
  - host: github.com
    port: 443
    protocol: rest
    enforcement: enforce
    rules:
      - allow: { method: GET, path: "/**" }
      - allow: { method: POST, path: "/**/git-upload-pack" }
    deny_rules:
      - { method: POST, path: "/**/git-receive-pack" }
binaries: [/usr/bin/gh, /usr/bin/git]
)";
const char kGithubProfileHash[] = "sha256:v2:9ce2f666cf5747e12c4d4a00011fbd31766a9b2a1541e7823869a7c9f0a427a1";
const char kGithubSnapshotRevision[] = "sha256:v2:1909f6d2e95b70a25b7b8813b297dd5fc5a525e05834355ca3e0c443475e232c";

// A profile inside the test ceiling (its `pypi` rule): pip to pypi.org:443, no credentials.
const char kPypiProfileYaml[] = R"(id: pypi
display_name: PyPI
category: DATA
endpoints:
  - host: pypi.org
    port: 443
binaries: [/usr/bin/pip]
)";

TEST_CASE("provider profiles: upstream's file form parses to the profile of the README's hash and revision vectors",
          "[interceptor][provider_profiles]") {
  auto github = osh::policy::ParseProviderProfileText(kGithubProfileYaml, "github.yaml");
  INFO(github.status().ToString());
  REQUIRE(github.ok());
  CHECK(github->category() == os_v1::PROVIDER_PROFILE_CATEGORY_SOURCE_CONTROL);
  REQUIRE(github->binaries_size() == 2);
  CHECK(github->binaries(1).path() == "/usr/bin/git");
  CHECK(github->endpoints(0).ports().empty());  // `port` stays port
  CHECK(*osh::gateway::GovernanceProfileHash(*github) == kGithubProfileHash);
  CHECK(*osh::gateway::GovernanceSnapshotHash({*github}) == kGithubSnapshotRevision);
  // The shorthands: `tool: X` is params {name: X}, a bare glob is a query matcher, categories and
  // strategies by their short names (any case, '-' for '_'), {path, harness} binaries; category defaults to other.
  auto mcp = osh::policy::ParseProviderProfileText(R"(id: mcp-tools
display_name: MCP tools
credentials:
  - name: key
    refresh: { strategy: OAuth2-Client-Credentials }
endpoints:
  - host: mcp.example.com
    port: 443
    protocol: mcp
    rules:
      - allow: { method: tools/call, tool: search_* }
  - host: api.example.com
    port: 443
    protocol: rest
    rules:
      - allow: { method: GET, path: /q, query: { q: "a*" } }
binaries: [{ path: /usr/bin/agent, harness: true }]
)", "mcp.yaml");
  INFO(mcp.status().ToString());
  REQUIRE(mcp.ok());
  CHECK(mcp->category() == os_v1::PROVIDER_PROFILE_CATEGORY_OTHER);
  CHECK(mcp->credentials(0).refresh().strategy() == os_v1::PROVIDER_CREDENTIAL_REFRESH_STRATEGY_OAUTH2_CLIENT_CREDENTIALS);
  CHECK(mcp->endpoints(0).rules(0).allow().params().at("name").glob() == "search_*");
  CHECK(mcp->endpoints(1).rules(0).allow().query().at("q").glob() == "a*");
  CHECK(mcp->binaries(0).harness());
}

TEST_CASE("provider profiles: a bad profile file is refused naming the file, the line and the field",
          "[interceptor][provider_profiles]") {
  const std::vector<std::tuple<std::string, std::string, std::string>> cases = {
      // text, expected message start (after "bad.yaml:"), what it is
      {"id: x\ndisplay_name: X\nendpoints:\n  - host: a.example.com\n    hosts: b\n", "5: endpoints[0].hosts: unknown key 'hosts'",
       "an unknown key"},
      {"id: x\ndisplay_name: X\nendpoints:\n  - host: a.example.com\n    port: 443\n    rules: []\n",
       "6: endpoints[0].rules: an empty list is refused", "rules: []"},
      {"id: x\ndisplay_name: X\nendpoints:\n  - host: a.example.com\n    deny_rules: []\n",
       "5: endpoints[0].deny_rules: an empty list is refused", "deny_rules: []"},
      {"id: x\ndisplay_name: X\nendpoints:\n  - host: a.example.com\n    port: 443\n    provider_credentialed: true\n",
       "6: endpoints[0].provider_credentialed: unknown key", "a composition marker"},
      {"id: x\ndisplay_name: X\nendpoints:\n  - host: a.example.com\n    credential_binding: {}\n",
       "5: endpoints[0].credential_binding: unknown key", "credential_binding"},
      {"id: x\ndisplay_name: X\ncategory: bogus\n", "3: category: unknown value 'bogus'", "an unknown category"},
      {"id: x\ndescription: no display name\n", " invalid_profile: display_name: required", "a missing display_name"},
      {"display_name: X\n", " invalid_profile: id: required", "a missing id"},
      {"id: has space\ndisplay_name: X\n", "1: invalid_profile: id: 'has space'", "a bad id"},
      {"id: x\ndisplay_name: X\nannotations:\n  openshell.nvidia.com/profile-hash: forged\n",
       "4: invalid_profile: annotations.openshell.nvidia.com/profile-hash: a signature is openshell.nvidia.com/profile-signature, openshell.nvidia.com/profile-hash and openshell.nvidia.com/profile-signature-kid together", "a signature annotation alone"},
      {"id: x\ndisplay_name: X\ndiscovery: { credentials: [nope] }\n",
       "3: invalid_profile: discovery.credentials[0]: 'nope' is not one of the profile's credentials", "discovery"},
      {"id: x\ndisplay_name: X\nendpoints:\n  - host: a.example.com\n    port: 99999\n",
       "5: invalid_profile: endpoints[0].port: must be from 1 to 65535", "a port out of range"},
      {"id: x\ndisplay_name: X\nendpoints:\n  - port: 443\n", "4: invalid_profile: endpoints[0].", "an endpoint without a host"},
      {"id: x\ndisplay_name: [unclosed\n", "3: syntax error", "a YAML syntax error"},
      {"id: x\ndisplay_name: X\nresource_version: 3\n", "3: invalid_profile: resource_version: set by the OpenShell gateway",
       "resource_version"},
  };
  for (const auto& [text, expected, what] : cases) {
    INFO(what << "\n" << text);
    auto parsed = osh::policy::ParseProviderProfileText(text, "bad.yaml");
    REQUIRE_FALSE(parsed.ok());
    CHECK(parsed.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(parsed.status().message()), Catch::StartsWith("bad.yaml:" + expected));
  }
}

TEST_CASE("provider profiles: a profile the OpenShell gateway would refuse is refused here, not served to fail its "
          "whole catalogue",
          "[interceptor][provider_profiles]") {
  // Review finding (helper 71): upstream validates the catalogue it is served as a set, and one profile it
  // refuses fails every request that needs the catalogue (creates, attaches, the supervisors' poll).
  const std::string head = "id: x\ndisplay_name: X\n";
  const auto credential = [&](const std::string& fields) {
    return absl::StrCat(head, "credentials:\n  - name: token\n", fields);
  };
  const std::vector<std::pair<std::string, std::string>> refused = {
      {"id: My-Api\ndisplay_name: X\n", "id: 'My-Api': lowercase kebab-case"},
      {"id: my_api\ndisplay_name: X\n", "id: 'my_api': lowercase kebab-case"},
      {"id: x.y\ndisplay_name: X\n", "id: 'x.y': lowercase kebab-case"},
      {"id: a--b\ndisplay_name: X\n", "id: 'a--b': lowercase kebab-case"},
      {"id: -a\ndisplay_name: X\n", "id: '-a': lowercase kebab-case"},
      // Review 96: upstream composes github's profile for a provider of type gh (its alias), never gh's.
      {"id: gh\ndisplay_name: X\n", "id: 'gh': the OpenShell gateway reads a provider of type 'gh' as 'github'"},
      {"id: glab\ndisplay_name: X\n", "id: 'glab': the OpenShell gateway reads a provider of type 'glab' as 'gitlab'"},
      {credential("    auth_style: bearer\n"), "credentials[0].header_name: required for bearer auth"},
      {credential("    auth_style: Header\n    header_name: ''\n"), "credentials[0].header_name: required for header auth"},
      {credential("    auth_style: cookie\n"), "credentials[0].auth_style: 'cookie': one of basic, bearer"},
      {credential("    auth_style: path\n"), "credentials[0].path_template: required for path auth"},
      {credential("    auth_style: path\n    path_template: /v1/{credential}/{credential}\n"),
       "credentials[0].path_template: must contain {credential} exactly once (2 times)"},
      {credential("    auth_style: query\n"), "credentials[0].query_param: required for query auth"},
      {credential("    refresh: { refresh_before_seconds: 5 }\n"), "credentials[0].refresh.strategy: required"},
      {credential("    refresh: { strategy: static, max_lifetime_seconds: -1 }\n"),
       "credentials[0].refresh.max_lifetime_seconds: must be >= 0"},
      {credential("    refresh: { strategy: static, material: [{ name: a }, { name: a }] }\n"),
       "credentials[0].refresh.material[1].name: 'a' appears twice"},
      {credential("    env_vars: [TOKEN]\n  - name: other\n    env_vars: [TOKEN]\n"),
       "credentials[1].env_vars[0]: 'TOKEN' appears twice in the profile"},
      {credential("    env_vars: [v2_TOKEN]\n"), "credentials[0].env_vars[0]: 'v2_TOKEN' uses the OpenShell placeholder"},
      {credential("    env_vars: ['']\n"), "credentials[0].env_vars[0]: must not be empty"},
      {credential("discovery: { credentials: [token, token] }\n"), "discovery.credentials[1]: 'token' appears twice"},
      {credential("    token_grant: { token_endpoint: 'http://auth.example.com/token' }\n"),
       "credentials[0].token_grant.token_endpoint: must use https, except http for loopback"},
      {credential("    token_grant: { token_endpoint: 'not a url' }\n"),
       "credentials[0].token_grant.token_endpoint: must be an absolute URL"},
      {credential("    token_grant: { token_endpoint: 'http://localhost./token' }\n"),
       "credentials[0].token_grant.token_endpoint: must use https, except http for loopback"},
      {credential("    env_vars: [\"TOKEN\\u00a0\"]\n"), "credentials[0].env_vars[0]: white space or a non-ASCII"},
      {absl::StrCat(head, "credentials:\n  - name: \" token\"\n"), "credentials[0].name: white space or a non-ASCII"},
      {credential("    auth_style: \"bearer \"\n    header_name: X\n"), "credentials[0].auth_style: white space"},
      {credential("    auth_style: query\n    query_param: key\n    token_grant: { token_endpoint: 'https://a.example.com/t' }\n"),
       "credentials[0].auth_style: a token_grant credential uses bearer or header auth"},
      {credential("    auth_style: header\n    header_name: Host\n    token_grant: { token_endpoint: 'https://a.example.com/t' }\n"),
       "credentials[0].header_name: may not override HTTP framing"},
      {credential("    auth_style: bearer\n    header_name: 'X Token'\n    token_grant: { token_endpoint: 'https://a.example.com/t' }\n"),
       "credentials[0].header_name: not a valid HTTP header name"},
  };
  for (const auto& [text, expected] : refused) {
    INFO(text);
    auto parsed = osh::policy::ParseProviderProfileText(text, "bad.yaml");
    REQUIRE_FALSE(parsed.ok());
    CHECK(parsed.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(parsed.status().message()), Catch::Contains("invalid_profile: " + expected));
  }
  // What upstream takes is taken.
  for (const std::string& text : {
           absl::StrCat("id: my-api-2\ndisplay_name: X\n"),
           credential("    auth_style: bearer\n    header_name: Authorization\n    env_vars: [V2_TOKEN, TOKEN_v2]\n"),
           credential("    auth_style: path\n    path_template: /bot{credential}/\n"),
           credential("    auth_style: Basic\n    refresh: { strategy: oauth2_refresh_token, material: [{ name: a }] }\n"),
           credential("    token_grant: { token_endpoint: 'http://127.0.0.1:8080/token' }\n"),
           credential("    token_grant: { token_endpoint: 'http://[::1]/token' }\n"),
           credential("    token_grant: { token_endpoint: 'http://sts.auth.svc.cluster.local/token' }\n"),
           credential("    auth_style: header\n    header_name: X-Api-Key\n    token_grant: { token_endpoint: 'https://a.example.com/t' }\n"),
       }) {
    INFO(text);
    auto parsed = osh::policy::ParseProviderProfileText(text, "good.yaml");
    CHECK(parsed.ok());
    if (!parsed.ok()) UNSCOPED_INFO(parsed.status().message());
  }
}

TEST_CASE("provider profiles: the governance JWT reproduces the README's policy signature vector", "[interceptor][provider_profiles]") {
  auto key = osh::trust::PrivateKey::FromPem(RfcPrivatePem());
  REQUIRE(key.ok());
  auto public_key = osh::trust::PublicKey::FromPem(RfcPublicPem());
  REQUIRE(public_key.ok());
  CHECK(osh::gateway::GovernanceKid(*public_key) == "06e3fd8fda29bb60ab59557de61edb0a");
  const std::string claims = absl::StrCat(
      R"({"sub":"policy.yaml","iss":"openshell-governance-interceptor","aud":"openshell-governance-policy","iat":1767225600,"exp":0,"hash_algorithm":")",
      osh::gateway::kGovernanceHashAlgorithm,
      R"(","policy_sha256":"sha256:v2:ba5bbcf293c2bd0ffcaa704fa468142bf409a196b2d09e00f84f678de229a3fc"})");
  auto token = osh::gateway::GovernanceJwt(*key, "06e3fd8fda29bb60ab59557de61edb0a", claims);
  REQUIRE(token.ok());
  CHECK(*token ==
        "eyJ0eXAiOiJKV1QiLCJhbGciOiJFZERTQSIsImtpZCI6IjA2ZTNmZDhmZGEyOWJiNjBhYjU5NTU3ZGU2MWVkYjBhIn0."
        "eyJzdWIiOiJwb2xpY3kueWFtbCIsImlzcyI6Im9wZW5zaGVsbC1nb3Zlcm5hbmNlLWludGVyY2VwdG9yIiwiYXVkIjoib3BlbnNoZWxsLWdvdmVybmFu"
        "Y2UtcG9saWN5IiwiaWF0IjoxNzY3MjI1NjAwLCJleHAiOjAsImhhc2hfYWxnb3JpdGhtIjoib3BlbnNoZWxsLWdvdmVybmFuY2UtcHJvdG9qc29uLXNo"
        "YTI1Ni12MiIsInBvbGljeV9zaGEyNTYiOiJzaGEyNTY6djI6YmE1YmJjZjI5M2MyYmQwZmZjYWE3MDRmYTQ2ODE0MmJmNDA5YTE5NmIyZDA5ZTAwZjg0"
        "ZjY3OGRlMjI5YTNmYyJ9.dPgGpat3U2Ptb4ig5ccYYsrGbv5R5Mal0toM0opFOhbkYW1eEvlPVXUTHja7nhUlCeObeKdlfBN-aM6DTcqeCw");
}

TEST_CASE("provider profiles: without a trust store, the README's example is served with the README's revision",
          "[interceptor][integration][provider_profiles]") {
  InterceptorGateway g(true, false, {}, ProfileSigning::kNoTrustStore);
  WriteFile(g.keys() / "github.yaml", kGithubProfileYaml);
  std::string out, err;
  INFO(out << err);
  REQUIRE(Ctl(g.gateway(), {"profile", "set", "-f", g.keys() / "github.yaml"}, &out, &err) == 0);
  CHECK_THAT(out, Catch::Contains("signed:    no"));
  icv1::ProviderProfileSnapshot snapshot;
  const std::string token = "Bearer " + Mint(g.key(), Claims(ClaimsSpec(), std::time(nullptr)));
  REQUIRE(g.stub().SnapshotProviderProfiles(g.Context(token).get(), {}, &snapshot).ok());
  CHECK(snapshot.revision() == kGithubSnapshotRevision);
  REQUIRE(snapshot.profiles_size() == 1);
  CHECK(*osh::gateway::GovernanceProfileHash(snapshot.profiles(0)) == kGithubProfileHash);
  CHECK(g.gateway().Stop() == 0);
}

TEST_CASE("provider profiles: policyctl profile set|get|list|delete against a real gateway, signed, audited, served",
          "[interceptor][integration][provider_profiles]") {
  InterceptorGateway g(true, true, {}, ProfileSigning::kSigned);
  const std::string token = "Bearer " + Mint(g.key(), Claims(ClaimsSpec(), std::time(nullptr)));
  WriteFile(g.keys() / "github.yaml", kGithubProfileYaml);
  WriteFile(g.keys() / "pypi.yaml", kPypiProfileYaml);
  std::string out, err;
  icv1::InterceptorManifest manifest;
  REQUIRE(g.stub().Describe(g.Context(token).get(), {}, &manifest).ok());
  CHECK_FALSE(manifest.provider_profiles());

  REQUIRE(Ctl(g.gateway(), {"profile", "set", "-f", g.keys() / "github.yaml"}, &out, &err) == 0);
  auto public_key = osh::trust::PublicKey::FromPem(g.signing_public_pem());
  REQUIRE(public_key.ok());
  const std::string kid = osh::gateway::GovernanceKid(*public_key);
  CHECK_THAT(out, Catch::Contains("profile github (GitHub)") && Catch::Contains(kGithubProfileHash) &&
                      Catch::Contains("signed:    kid " + kid));
  REQUIRE(Ctl(g.gateway(), {"profile", "set", "-f", g.keys() / "pypi.yaml"}, &out, &err) == 0);

  // get: YAML that sets again as it is, or JSON with the hash.
  REQUIRE(Ctl(g.gateway(), {"profile", "get", "github"}, &out, &err) == 0);
  CHECK_THAT(out, Catch::StartsWith("# hash " + std::string(kGithubProfileHash) + ", signed by kid " + kid));
  CHECK_THAT(out, Catch::Contains("openshell.nvidia.com/profile-signature"));
  REQUIRE(Ctl(g.gateway(), {"profile", "get", "github", "-o", "json"}, &out, &err) == 0);
  gw::ProviderProfileInfo info;
  REQUIRE(google::protobuf::util::JsonStringToMessage(out, &info).ok());
  CHECK(info.profile_hash() == kGithubProfileHash);
  CHECK(info.signature_kid() == kid);
  CHECK(info.profile().display_name() == "GitHub");
  CHECK(Ctl(g.gateway(), {"profile", "get", "nosuch"}, &out, &err) == 1);
  CHECK_THAT(err, Catch::Contains("NOT_FOUND"));

  // list, and the snapshot the interceptor serves: the same profiles and revision.
  REQUIRE(Ctl(g.gateway(), {"profile", "list", "-o", "json"}, &out, &err) == 0);
  gw::ListProviderProfilesResponse listed;
  REQUIRE(google::protobuf::util::JsonStringToMessage(out, &listed).ok());
  REQUIRE(listed.profiles_size() == 2);
  CHECK(listed.profiles(0).profile().id() == "github");
  CHECK(listed.profiles(1).profile().id() == "pypi");
  REQUIRE(Ctl(g.gateway(), {"profile", "list"}, &out, &err) == 0);
  CHECK_THAT(out, Catch::Contains("github") && Catch::Contains("PyPI") && Catch::Contains("revision " + listed.revision()));

  icv1::ProviderProfileSnapshot snapshot;
  REQUIRE(g.stub().SnapshotProviderProfiles(g.Context(token).get(), {}, &snapshot).ok());
  REQUIRE(snapshot.profiles_size() == 2);
  std::vector<os_v1::ProviderProfile> served(snapshot.profiles().begin(), snapshot.profiles().end());
  // This product's revision: the governance snapshot hash of the profiles exactly as served.
  CHECK(snapshot.revision() == *osh::gateway::GovernanceSnapshotHash(served));
  CHECK(snapshot.revision() == listed.revision());
  CHECK(snapshot.revision() != kGithubSnapshotRevision);  // the signature annotations are part of it
  const os_v1::ProviderProfile& github = snapshot.profiles(0);
  // The profile hash is the README vector's: the signature's annotations are left out of it.
  CHECK(*osh::gateway::GovernanceProfileHash(github) == kGithubProfileHash);
  CHECK(github.annotations().at("openshell.nvidia.com/profile-hash") == kGithubProfileHash);
  CHECK(github.annotations().at("openshell.nvidia.com/profile-signature-kid") == kid);
  // The signature is the governance format's, verified here with librhonabwy and the gateway's public key.
  const std::string jws = github.annotations().at("openshell.nvidia.com/profile-signature");
  jwt_t* jwt = nullptr;
  jwk_t* pub = nullptr;
  REQUIRE(r_jwt_init(&jwt) == RHN_OK);
  REQUIRE(r_jwk_init(&pub) == RHN_OK);
  REQUIRE(r_jwk_import_from_pem_der(pub, R_X509_TYPE_PUBKEY, R_FORMAT_PEM,
                                    reinterpret_cast<const unsigned char*>(g.signing_public_pem().data()),
                                    g.signing_public_pem().size()) == RHN_OK);
  REQUIRE(r_jwt_parse(jwt, jws.c_str(), 0) == RHN_OK);
  CHECK(r_jwt_verify_signature(jwt, pub, 0) == RHN_OK);
  CHECK(std::string(r_jwt_get_header_str_value(jwt, "kid")) == kid);
  CHECK(std::string(r_jwt_get_claim_str_value(jwt, "sub")) == "provider-profile:github");
  CHECK(std::string(r_jwt_get_claim_str_value(jwt, "aud")) == "openshell-governance-profile");
  CHECK(std::string(r_jwt_get_claim_str_value(jwt, "profile_id")) == "github");
  CHECK(std::string(r_jwt_get_claim_str_value(jwt, "profile_sha256")) == kGithubProfileHash);
  r_jwk_free(pub);
  r_jwt_free(jwt);

  REQUIRE(g.stub().Describe(g.Context(token).get(), {}, &manifest).ok());
  CHECK(manifest.provider_profiles());

  // The gateway validates what it is sent, whatever the client (a profile with signature annotations of its own).
  gw::SetProviderProfileRequest forged;
  forged.mutable_profile()->set_id("forged");
  forged.mutable_profile()->set_display_name("Forged");
  (*forged.mutable_profile()->mutable_annotations())["openshell.nvidia.com/profile-signature"] = "x.y.z";
  gw::ProviderProfileInfo ignored;
  const auto refused = g.gateway().admin().SetProviderProfile(GatewayFixture::Context().get(), forged, &ignored);
  CHECK(refused.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK_THAT(refused.error_message(), Catch::StartsWith("invalid_profile: annotations.openshell.nvidia.com/profile-signature: "));

  // delete, and again (NOT_FOUND); the catalogue follows at once.
  REQUIRE(Ctl(g.gateway(), {"profile", "delete", "pypi"}, &out, &err) == 0);
  CHECK(Ctl(g.gateway(), {"profile", "delete", "pypi"}, &out, &err) == 1);
  REQUIRE(g.stub().SnapshotProviderProfiles(g.Context(token).get(), {}, &snapshot).ok());
  CHECK(snapshot.profiles_size() == 1);

  // One audit event (mutation) per change, naming the profile; the refused ones wrote none.
  std::vector<gw::AuditEvent> changes;
  for (const auto& event : g.gateway().AuditEvents()) {
    if (event.type() == "mutation" && event.audit_context().count("provider_profile") == 1) changes.push_back(event);
  }
  REQUIRE(changes.size() == 3);
  CHECK(changes[0].audit_context().at("provider_profile") == "github");
  CHECK(changes[0].audit_context().at("change") == "set");
  CHECK(changes[0].audit_context().at("profile_hash") == kGithubProfileHash);
  CHECK(changes[0].audit_context().at("profile_signature_kid") == kid);
  CHECK(changes[2].audit_context().at("provider_profile") == "pypi");
  CHECK(changes[2].audit_context().at("change") == "delete");
  CHECK(changes[2].outcome() == "ok");

  // Served from the store: the same after a restart.
  g.Restart();
  REQUIRE(g.stub().SnapshotProviderProfiles(g.Context(token).get(), {}, &snapshot).ok());
  CHECK(snapshot.profiles_size() == 1);
  CHECK(snapshot.profiles(0).id() == "github");
  CHECK(g.gateway().Stop() == 0);
}

TEST_CASE("provider profiles: a bad file changes nothing, and without a signing key a trust store refuses profiles",
          "[interceptor][integration][provider_profiles]") {
  InterceptorGateway g;  // a trust store, no signing key
  std::string out, err;
  WriteFile(g.keys() / "bad.yaml", "id: x\ndisplay_name: X\nendpoints:\n  - host: a.example.com\n    hosts: b\n");
  CHECK(Ctl(g.gateway(), {"profile", "set", "-f", g.keys() / "bad.yaml"}, &out, &err) == 2);
  CHECK_THAT(err, Catch::Contains(g.keys() / "bad.yaml" + ":5: endpoints[0].hosts: unknown key 'hosts'"));
  WriteFile(g.keys() / "pypi.yaml", kPypiProfileYaml);
  CHECK(Ctl(g.gateway(), {"profile", "set", "-f", g.keys() / "pypi.yaml"}, &out, &err) == 1);
  CHECK_THAT(err, Catch::Contains("profile_unsigned: "));
  REQUIRE(Ctl(g.gateway(), {"profile", "list", "-o", "json"}, &out, &err) == 0);
  gw::ListProviderProfilesResponse listed;
  REQUIRE(google::protobuf::util::JsonStringToMessage(out, &listed).ok());
  CHECK(listed.profiles_size() == 0);
  for (const auto& event : g.gateway().AuditEvents()) CHECK(event.audit_context().count("provider_profile") == 0);
  CHECK(g.gateway().Stop() == 0);
}

// The pypi profile with one more host (upload.pypi.org), outside the test's ceiling.
std::string PypiWideProfileYaml() {
  return absl::StrReplaceAll(kPypiProfileYaml, {{"  - host: pypi.org\n    port: 443\n",
                                                 "  - host: pypi.org\n    port: 443\n  - host: upload.pypi.org\n    port: 443\n"}});
}

// Signs and sets version 2 of the test's ceiling, without its pypi rule.
void SetCeilingWithoutPypi(InterceptorGateway& g) {
  std::string out, err;
  const std::string ceiling_yaml = kCeilingYaml;
  WriteFile(g.keys() / "ceiling-2.yaml", ceiling_yaml.substr(0, ceiling_yaml.find("  pypi:")));
  REQUIRE(CtlOffline({"ceiling", "sign", "-f", g.keys() / "ceiling-2.yaml", "--id", "corp-max", "--version", "2",
                      "--key", g.keys() / "authority.key", "--key-id", "authority", "--out", g.keys() / "ceiling-2.json"},
                     &out, &err) == 0);
  REQUIRE(Ctl(g.gateway(), {"ceiling", "set", g.keys() / "ceiling-2.json"}, &out, &err) == 0);
}

// The catalogue is kept verified (ProviderProfileCatalogue), and a candidate's ceiling verdict is kept
// (CeilingGuard): neither is ever served stale. Each read below follows a read that filled what is kept.
TEST_CASE("provider profiles: a profile set or deleted, a new ceiling and a trust-store reload that revokes the "
          "signing key are seen by the very next Snapshot and Evaluate",
          "[interceptor][integration][provider_profiles][cache]") {
  InterceptorGateway g(true, true, {}, ProfileSigning::kSigned);
  const std::string token = "Bearer " + Mint(g.key(), Claims(ClaimsSpec(), std::time(nullptr)));
  WriteFile(g.keys() / "github.yaml", kGithubProfileYaml);
  WriteFile(g.keys() / "pypi.yaml", kPypiProfileYaml);
  std::string out, err;
  INFO(out << err);
  auto snapshot = [&](icv1::ProviderProfileSnapshot* into) {
    return g.stub().SnapshotProviderProfiles(g.Context(token).get(), {}, into);
  };
  const std::string with_pypi = CreateSandboxJson("build-1", kBasePolicyJson, R"(["pypi"])");
  const std::string with_github = CreateSandboxJson("build-2", kBasePolicyJson, R"(["github"])");
  REQUIRE(Ctl(g.gateway(), {"profile", "set", "-f", g.keys() / "pypi.yaml"}, &out, &err) == 0);
  icv1::ProviderProfileSnapshot first, second;
  REQUIRE(snapshot(&first).ok());
  REQUIRE(first.profiles_size() == 1);
  // with_pypi is decided at the modify phase throughout: a validate would record build-1 with pypi, and then
  // the wide pypi below would be refused at its set (the next test).
  for (int i = 0; i < 2; ++i) CHECK(g.Evaluate("CreateSandbox", false, with_pypi).allowed());  // kept, then served kept
  CheckDeny(g.Evaluate("CreateSandbox", true, with_github), "FAILED_PRECONDITION", "unknown_provider: ");

  // A profile set: in the next snapshot (a new revision) and composed by the next Evaluate.
  REQUIRE(Ctl(g.gateway(), {"profile", "set", "-f", g.keys() / "github.yaml"}, &out, &err) == 0);
  REQUIRE(snapshot(&second).ok());
  CHECK(second.profiles_size() == 2);
  CHECK(second.revision() != first.revision());
  CheckDeny(g.Evaluate("CreateSandbox", true, with_github), "PERMISSION_DENIED", "exceeds_ceiling: ");

  // A profile replaced (pypi now also reaches a host outside the ceiling): the same request, with a verdict
  // kept for its old composed candidate, is decided on the new one.
  WriteFile(g.keys() / "pypi-wide.yaml", PypiWideProfileYaml());
  REQUIRE(Ctl(g.gateway(), {"profile", "set", "-f", g.keys() / "pypi-wide.yaml"}, &out, &err) == 0);
  const auto widened = g.Evaluate("CreateSandbox", false, with_pypi);
  CheckDeny(widened, "PERMISSION_DENIED", "exceeds_ceiling: ");
  CHECK_THAT(widened.reason(), Catch::Contains("upload.pypi.org"));
  REQUIRE(Ctl(g.gateway(), {"profile", "set", "-f", g.keys() / "pypi.yaml"}, &out, &err) == 0);
  CHECK(g.Evaluate("CreateSandbox", false, with_pypi).allowed());

  // A profile deleted: gone from the next snapshot, unknown to the next Evaluate.
  REQUIRE(Ctl(g.gateway(), {"profile", "delete", "github"}, &out, &err) == 0);
  REQUIRE(snapshot(&second).ok());
  CHECK(second.profiles_size() == 1);
  CheckDeny(g.Evaluate("CreateSandbox", true, with_github), "FAILED_PRECONDITION", "unknown_provider: ");

  // A new ceiling without the pypi rule: the candidate allowed (and kept) under version 1 is refused.
  SetCeilingWithoutPypi(g);
  const auto narrowed = g.Evaluate("CreateSandbox", false, with_pypi);
  CheckDeny(narrowed, "PERMISSION_DENIED", "exceeds_ceiling: ");
  CHECK_THAT(narrowed.reason(), Catch::Contains("pypi.org"));

  // The key that signed the profiles revoked by a trust-store reload: what was verified under the old trust
  // store is not served, nor composed.
  REQUIRE(snapshot(&second).ok());
  std::string trust = ReadFile(g.keys() / "trust.json");
  trust.insert(trust.rfind('}'), R"(, "revoked_key_ids": ["gateway-key"])");
  WriteFile(g.keys() / "trust.json", trust);
  REQUIRE(Ctl(g.gateway(), {"trust", "reload"}, &out, &err) == 0);
  const grpc::Status revoked = snapshot(&second);
  CHECK(revoked.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
  CHECK_THAT(revoked.error_message(), Catch::StartsWith("profile_unverified: provider profile 'pypi'"));
  CheckDeny(g.Evaluate("CreateSandbox", false, with_pypi), "FAILED_PRECONDITION", "profile_unverified: ");
  CHECK(g.gateway().Stop() == 0);
}

TEST_CASE("provider profiles: a profile set that would widen a recorded sandbox beyond the ceiling is refused, "
          "audited, and changes nothing",
          "[interceptor][integration][provider_profiles]") {
  // Review finding: the OpenShell gateway composes a changed profile into every sandbox of that provider on
  // its next snapshot refresh, through no request the interceptor sees; the set itself was not checked, so
  // an operator's profile could widen sandboxes the signed ceiling bounds.
  InterceptorGateway g(true, true, {}, ProfileSigning::kSigned);
  const std::string token = "Bearer " + Mint(g.key(), Claims(ClaimsSpec(), std::time(nullptr)));
  WriteFile(g.keys() / "pypi.yaml", kPypiProfileYaml);
  WriteFile(g.keys() / "pypi-wide.yaml", PypiWideProfileYaml());
  WriteFile(g.keys() / "github.yaml", kGithubProfileYaml);
  std::string out, err;
  REQUIRE(Ctl(g.gateway(), {"profile", "set", "-f", g.keys() / "pypi.yaml"}, &out, &err) == 0);
  REQUIRE(g.Evaluate("CreateSandbox", true, CreateSandboxJson("build-1", kBasePolicyJson, R"(["pypi"])")).allowed());
  REQUIRE(g.Evaluate("CreateSandbox", true, CreateSandboxJson("build-2", kBasePolicyJson)).allowed());
  icv1::ProviderProfileSnapshot before, after;
  REQUIRE(g.stub().SnapshotProviderProfiles(g.Context(token).get(), {}, &before).ok());

  // pypi is build-1's provider: the wider pypi would reach upload.pypi.org from it, outside the ceiling.
  CHECK(Ctl(g.gateway(), {"profile", "set", "-f", g.keys() / "pypi-wide.yaml"}, &out, &err) != 0);
  CHECK_THAT(err, Catch::Contains("FAILED_PRECONDITION") && Catch::Contains("exceeds_ceiling: profile 'pypi'") &&
                      Catch::Contains("sandbox 'build-1'") && Catch::Contains("upload.pypi.org"));
  // Nothing changed: the same catalogue is served, and the refusal is one audit event.
  REQUIRE(g.stub().SnapshotProviderProfiles(g.Context(token).get(), {}, &after).ok());
  CHECK(after.revision() == before.revision());
  int refused = 0;
  for (const auto& event : g.gateway().AuditEvents()) {
    if (event.type() != "mutation" || event.outcome() != "refused") continue;
    ++refused;
    CHECK(event.audit_context().at("provider_profile") == "pypi");
    CHECK_THAT(event.reason(), Catch::StartsWith("exceeds_ceiling: profile 'pypi'"));
  }
  CHECK(refused == 1);
  // A profile no recorded sandbox uses is not held back (its layer is checked where it is attached).
  CHECK(Ctl(g.gateway(), {"profile", "set", "-f", g.keys() / "github.yaml"}, &out, &err) == 0);

  // Once build-1 no longer has the provider, nothing recorded holds the wider pypi back; an attach of it is
  // then decided on the wider layer.
  REQUIRE(g.Evaluate("DetachSandboxProvider", true, R"({"sandboxName": "build-1", "providerName": "pypi"})").allowed());
  CHECK(Ctl(g.gateway(), {"profile", "set", "-f", g.keys() / "pypi-wide.yaml"}, &out, &err) == 0);
  CheckDeny(g.Evaluate("AttachSandboxProvider", true, R"({"sandboxName": "build-2", "providerName": "pypi"})"),
            "PERMISSION_DENIED", "exceeds_ceiling: ");
  // Across a restart too: the records are the store's. A sandbox of several providers composes them all.
  REQUIRE(Ctl(g.gateway(), {"profile", "set", "-f", g.keys() / "pypi.yaml"}, &out, &err) == 0);
  for (const char* id : {"pypi2", "pypi3"}) {
    WriteFile(g.keys() / absl::StrCat(id, ".yaml"), absl::StrReplaceAll(kPypiProfileYaml, {{"id: pypi\n", absl::StrCat("id: ", id, "\n")}}));
    REQUIRE(Ctl(g.gateway(), {"profile", "set", "-f", g.keys() / absl::StrCat(id, ".yaml")}, &out, &err) == 0);
  }
  REQUIRE(g.Evaluate("AttachSandboxProvider", true, R"({"sandboxName": "build-2", "providerName": "pypi2"})").allowed());
  REQUIRE(g.Evaluate("AttachSandboxProvider", true, R"({"sandboxName": "build-2", "providerName": "pypi3"})").allowed());
  REQUIRE(g.Evaluate("AttachSandboxProvider", true, R"({"sandboxName": "build-2", "providerName": "pypi"})").allowed());
  REQUIRE(g.gateway().Stop() == 0);
  g.gateway().Start();
  CHECK(Ctl(g.gateway(), {"profile", "set", "-f", g.keys() / "pypi-wide.yaml"}, &out, &err) != 0);
  CHECK_THAT(err, Catch::Contains("sandbox 'build-2'"));

  // A ceiling narrowed since (no pypi rule): build-2 is outside already. A change that only narrows what it
  // gets is not held back; one that widens it further is.
  SetCeilingWithoutPypi(g);
  CHECK(Ctl(g.gateway(), {"profile", "set", "-f", g.keys() / "pypi.yaml"}, &out, &err) == 0);  // the same layer
  WriteFile(g.keys() / "pypi-none.yaml", absl::StrReplaceAll(kPypiProfileYaml, {{"  - host: pypi.org\n    port: 443\n", ""},
                                                                                 {"endpoints:\n", ""}}));
  CHECK(Ctl(g.gateway(), {"profile", "set", "-f", g.keys() / "pypi-none.yaml"}, &out, &err) == 0);  // narrower
  CHECK(Ctl(g.gateway(), {"profile", "set", "-f", g.keys() / "pypi-wide.yaml"}, &out, &err) != 0);
  CHECK_THAT(err, Catch::Contains("exceeds_ceiling: profile 'pypi' set would widen sandbox 'build-2'"));

  // The operator's view of what is recorded, and forgetting the record of a sandbox deleted on the
  // OpenShell gateway (its DeleteSandbox is not bound): then nothing holds the change back.
  REQUIRE(Ctl(g.gateway(), {"interceptor", "records", "-o", "json"}, &out, &err) == 0);
  gw::ListInterceptorRecordsResponse records;
  REQUIRE(google::protobuf::util::JsonStringToMessage(out, &records).ok());
  REQUIRE(records.records_size() == 2);
  CHECK(records.records(0).sandbox() == "build-1");
  CHECK(records.records(1).sandbox() == "build-2");
  CHECK(records.records(1).workspace().empty());
  CHECK(std::vector<std::string>(records.records(1).providers().begin(), records.records(1).providers().end()) ==
        std::vector<std::string>{"pypi2", "pypi3", "pypi"});
  CHECK(records.records(1).policy_digest().size() == 64);
  REQUIRE(Ctl(g.gateway(), {"interceptor", "records"}, &out, &err) == 0);
  CHECK_THAT(out, Catch::Contains("build-2") && Catch::Contains("pypi2,pypi3,pypi") && Catch::Contains("2 record(s)"));
  {  // In pages: one record each, the second after the first.
    gw::ListInterceptorRecordsRequest page_request;
    page_request.set_limit(1);
    gw::ListInterceptorRecordsResponse page;
    REQUIRE(g.gateway().admin().ListInterceptorRecords(GatewayFixture::Context().get(), page_request, &page).ok());
    REQUIRE(page.records_size() == 1);
    CHECK(page.records(0).sandbox() == "build-1");
    CHECK(page.more());
    page_request.set_after_sandbox(page.records(0).sandbox());
    REQUIRE(g.gateway().admin().ListInterceptorRecords(GatewayFixture::Context().get(), page_request, &page).ok());
    REQUIRE(page.records_size() == 1);
    CHECK(page.records(0).sandbox() == "build-2");
    CHECK_FALSE(page.more());
    // A cursor no record's key could be (a NUL, a megabyte) is refused naming its field before it reaches
    // the database (stop 70's read-through: SQLite paged after it, PostgreSQL's client refused the NUL
    // without a reason code).
    page_request.set_after_sandbox(std::string("build\0-1", 8));
    grpc::Status refused = g.gateway().admin().ListInterceptorRecords(GatewayFixture::Context().get(), page_request, &page);
    CHECK(refused.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
    CHECK_THAT(refused.error_message(), Catch::StartsWith("invalid_request: after_sandbox: "));
    page_request.set_after_sandbox("build-1");
    page_request.set_after_workspace(std::string(1 << 20, 'w'));
    refused = g.gateway().admin().ListInterceptorRecords(GatewayFixture::Context().get(), page_request, &page);
    CHECK(refused.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
    CHECK_THAT(refused.error_message(), Catch::StartsWith("invalid_request: after_workspace: "));
  }
  CHECK(Ctl(g.gateway(), {"interceptor", "forget", "build-2"}, &out, &err) == 0);
  CHECK(Ctl(g.gateway(), {"interceptor", "forget", "build-2"}, &out, &err) == 1);
  CHECK_THAT(err, Catch::Contains("NOT_FOUND") && Catch::Contains("build-2"));
  CHECK(Ctl(g.gateway(), {"interceptor", "forget", "build-1", "--workspace", "team-b"}, &out, &err) == 1);
  bool audited = false;
  for (const auto& event : g.gateway().AuditEvents()) {
    audited = audited || (event.type() == "mutation" && event.outcome() == "ok" &&
                          event.reason() == "interceptor record of sandbox 'build-2' forgotten" &&
                          event.audit_context().at("change") == "forget");
  }
  CHECK(audited);
  // A name a record could not have been kept under is refused, not looked up.
  CHECK(Ctl(g.gateway(), {"interceptor", "forget", "bad\x1f" "name"}, &out, &err) == 1);
  CHECK_THAT(err, Catch::Contains("INVALID_ARGUMENT") && Catch::Contains("invalid_request: sandbox: "));
  // A record that does not decode (a row rewritten in the database) fails the profile check closed, is
  // listed as such, and can be forgotten.
  {
    sqlite3* db = nullptr;
    const std::string db_path = g.gateway().state_dir() + "/gateway.db";
    REQUIRE(sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) == SQLITE_OK);
    REQUIRE(sqlite3_exec(db, "INSERT INTO interceptor_records (sandbox, record, updated_at) VALUES ('broken', x'ff00ff', 0)",
                         nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);
  }
  CHECK(Ctl(g.gateway(), {"profile", "set", "-f", g.keys() / "pypi-wide.yaml"}, &out, &err) == 1);
  CHECK_THAT(err, Catch::Contains("interceptor_record_invalid: the interceptor's record of sandbox 'broken' does not "
                                  "decode") && Catch::Contains("policyctl interceptor forget"));
  REQUIRE(Ctl(g.gateway(), {"interceptor", "records"}, &out, &err) == 0);
  CHECK_THAT(out, Catch::Contains("broken") && Catch::Contains("does not decode"));
  CHECK(Ctl(g.gateway(), {"interceptor", "forget", "broken"}, &out, &err) == 0);
  CHECK(Ctl(g.gateway(), {"profile", "set", "-f", g.keys() / "pypi-wide.yaml"}, &out, &err) == 0);
  // Deleting a profile that is not there is NOT_FOUND, whatever the records say.
  CHECK(Ctl(g.gateway(), {"profile", "delete", "nosuch"}, &out, &err) == 1);
  CHECK_THAT(err, Catch::Contains("NOT_FOUND"));
  CHECK(g.gateway().Stop() == 0);
}

std::string AdmitDriverPolicy(const std::string& extra_read_only);  // below, with admit mode's tests

TEST_CASE("interceptor: an operator seeds the record of a sandbox from before the interceptor, checked like a validate, "
          "never over an existing record",
          "[interceptor][integration][interceptor_records]") {
  InterceptorGateway g(true, true, {}, ProfileSigning::kSigned);
  WriteFile(g.keys() / "pypi.yaml", kPypiProfileYaml);
  WriteFile(g.keys() / "pypi-wide.yaml", PypiWideProfileYaml());
  std::string out, err;
  REQUIRE(Ctl(g.gateway(), {"profile", "set", "-f", g.keys() / "pypi.yaml"}, &out, &err) == 0);
  // The policy the OpenShell gateway holds for "old-1" (created before the interceptor was bound).
  WriteFile(g.keys() / "old.yaml", AdmitDriverPolicy(""));
  WriteFile(g.keys() / "wide.yaml", ReadFile(g.keys() / "old.yaml") + R"(  evil:
    name: evil
    endpoints: [{ host: evil.example.com, port: 443 }]
    binaries: [{ path: /usr/bin/curl }]
)");
  const std::string merge = R"({"name": "old-1", "mergeOperations": [
      {"addRule": {"ruleName": "pypi2", "rule": {"endpoints": [{"host": "pypi.org", "port": 443.0}], "binaries": [{"path": "/usr/bin/pip"}]}}}]})";
  // Before: no record, so a merge is refused.
  CheckDeny(g.Evaluate("UpdateConfig", false, merge), "FAILED_PRECONDITION", "unknown_sandbox: ");

  // Refused, nothing stored: a policy outside the ceiling; an unknown provider; a policy file that is no policy.
  CHECK(Ctl(g.gateway(), {"interceptor", "seed", "old-1", "-f", g.keys() / "wide.yaml"}, &out, &err) == 1);
  CHECK_THAT(err, Catch::Contains("FAILED_PRECONDITION") && Catch::Contains("exceeds_ceiling: ") &&
                      Catch::Contains("evil.example.com"));
  CHECK(Ctl(g.gateway(), {"interceptor", "seed", "old-1", "-f", g.keys() / "old.yaml", "--provider", "nosuch"}, &out,
            &err) == 1);
  CHECK_THAT(err, Catch::Contains("unknown_provider: provider 'nosuch'"));
  CHECK(Ctl(g.gateway(), {"interceptor", "seed", "old-1", "-f", g.keys() / "old.yaml", "--provider", "pypi", "--provider",
                          "pypi"}, &out, &err) == 1);
  CHECK_THAT(err, Catch::Contains("invalid_request: providers[1]: 'pypi' is providers[0] already"));
  {  // More providers than a record may name: refused before anything is composed or written.
    std::vector<std::string> many = {"interceptor", "seed", "old-1", "-f", g.keys() / "old.yaml"};
    for (int i = 0; i < 65; ++i) many.insert(many.end(), {"--provider", absl::StrCat("p", i)});
    CHECK(Ctl(g.gateway(), many, &out, &err) == 1);
    CHECK_THAT(err, Catch::Contains("invalid_request: providers: 65, at most 64"));
  }
  // The refusals of what was stated are audited as refused mutations.
  int refused_seeds = 0;
  for (const auto& event : g.gateway().AuditEvents()) {
    if (event.type() == "mutation" && event.outcome() == "refused" && event.audit_context().count("change") &&
        event.audit_context().at("change") == "seed") {
      ++refused_seeds;
    }
  }
  CHECK(refused_seeds == 2);  // exceeds_ceiling, unknown_provider (a malformed request is not a statement)
  WriteFile(g.keys() / "bad.yaml", "version: 1\nnetwork_policies: [1, 2]\n");
  CHECK(Ctl(g.gateway(), {"interceptor", "seed", "old-1", "-f", g.keys() / "bad.yaml"}, &out, &err) == 2);
  CHECK_THAT(err, Catch::Contains("bad.yaml"));
  REQUIRE(Ctl(g.gateway(), {"interceptor", "records"}, &out, &err) == 0);
  CHECK_THAT(out, Catch::Contains("0 record(s)"));

  // Seeded with its provider: listed, audited, and its merges are composed from it from now on.
  REQUIRE(Ctl(g.gateway(), {"interceptor", "seed", "old-1", "-f", g.keys() / "old.yaml", "--provider", "pypi", "-o",
                            "json"},
              &out, &err) == 0);
  gw::SeedInterceptorRecordResponse seeded;
  REQUIRE(google::protobuf::util::JsonStringToMessage(out, &seeded).ok());
  CHECK(seeded.record().sandbox() == "old-1");
  CHECK(seeded.record().network_rules() == 1);
  CHECK(seeded.candidate_digest().size() == 64);
  bool audited = false;
  for (const auto& event : g.gateway().AuditEvents()) {
    audited = audited || (event.type() == "mutation" && event.outcome() == "ok" &&
                          event.audit_context().count("change") && event.audit_context().at("change") == "seed" &&
                          event.audit_context().at("candidate_digest") == seeded.candidate_digest());
  }
  CHECK(audited);
  // The seed is the store's: after a restart the merge is composed from it.
  REQUIRE(g.gateway().Stop() == 0);
  g.gateway().Start();
  REQUIRE(WaitForSocket(g.socket()));  // the interceptor's socket, not only the admin one Start waits for
  const auto merged = g.Evaluate("UpdateConfig", false, merge);
  REQUIRE(merged.allowed());
  const auto request = Decode<os_v1::UpdateConfigRequest>(ApplyPatches(FromProtoJson(merge), merged.patches()));
  CHECK(request.policy().network_policies().size() == 2);
  CHECK(request.policy().network_policies().at("api").endpoints(0).host() == "api.github.com");
  // Its provider is known too: the profile check sees it (a wider pypi would widen old-1).
  CHECK(Ctl(g.gateway(), {"profile", "set", "-f", g.keys() / "pypi-wide.yaml"}, &out, &err) != 0);
  CHECK_THAT(err, Catch::Contains("sandbox 'old-1'"));

  // Never over an existing record (the merge's validate would have written one; the seed's is there).
  CHECK(Ctl(g.gateway(), {"interceptor", "seed", "old-1", "-f", g.keys() / "old.yaml"}, &out, &err) == 1);
  CHECK_THAT(err, Catch::Contains("ALREADY_EXISTS") && Catch::Contains("record_exists: ") &&
                      Catch::Contains("policyctl interceptor forget"));
  // Another workspace is another sandbox; a name no record could be kept under is refused.
  CHECK(Ctl(g.gateway(), {"interceptor", "seed", "old-1", "-f", g.keys() / "old.yaml", "--workspace", "team-b"}, &out,
            &err) == 0);
  CHECK(Ctl(g.gateway(), {"interceptor", "seed", "bad\x1f" "name", "-f", g.keys() / "old.yaml"}, &out, &err) == 1);
  CHECK_THAT(err, Catch::Contains("INVALID_ARGUMENT") && Catch::Contains("invalid_request: sandbox: "));
  REQUIRE(Ctl(g.gateway(), {"interceptor", "records"}, &out, &err) == 0);
  CHECK_THAT(out, Catch::Contains("2 record(s)") && Catch::Contains("team-b"));
  CHECK(g.gateway().Stop() == 0);
}

TEST_CASE("provider profiles: two replicas on one PostgreSQL database: a change on A is served by B's next snapshot",
          "[interceptor][integration][provider_profiles][cache][postgres][replicas]") {
  const std::string url = PgCluster::Shared().CreateDatabase();
  // Unsigned profiles (no trust store): each replica would otherwise trust only its own signing key.
  InterceptorGateway a(true, false, {"--database", url}, ProfileSigning::kNoTrustStore);
  InterceptorGateway b(true, false, {"--database", url}, ProfileSigning::kNoTrustStore);
  const std::string token = "Bearer " + Mint(b.key(), Claims(ClaimsSpec(), std::time(nullptr)));
  auto ids_on_b = [&] {
    icv1::ProviderProfileSnapshot snapshot;
    const grpc::Status status = b.stub().SnapshotProviderProfiles(b.Context(token).get(), {}, &snapshot);
    std::vector<std::string> ids;
    if (!status.ok()) ids.push_back(status.error_message());
    for (const auto& profile : snapshot.profiles()) ids.push_back(profile.id());
    return ids;
  };
  WriteFile(a.keys() / "github.yaml", kGithubProfileYaml);
  WriteFile(a.keys() / "pypi.yaml", kPypiProfileYaml);
  std::string out, err;
  INFO(out << err);
  REQUIRE(Ctl(a.gateway(), {"profile", "set", "-f", a.keys() / "pypi.yaml"}, &out, &err) == 0);
  CHECK(ids_on_b() == std::vector<std::string>{"pypi"});
  CHECK(ids_on_b() == std::vector<std::string>{"pypi"});  // now served from what B keeps
  const std::string with_github = CreateSandboxJson("build-1", kBasePolicyJson, R"(["github"])");
  CheckDeny(b.Evaluate("CreateSandbox", true, with_github), "FAILED_PRECONDITION", "unknown_provider: ");

  REQUIRE(Ctl(a.gateway(), {"profile", "set", "-f", a.keys() / "github.yaml"}, &out, &err) == 0);
  CHECK(ids_on_b() == std::vector<std::string>{"github", "pypi"});
  CHECK(b.Evaluate("CreateSandbox", true, with_github).allowed());  // no ceiling: known is enough

  REQUIRE(Ctl(a.gateway(), {"profile", "delete", "github"}, &out, &err) == 0);
  CHECK(ids_on_b() == std::vector<std::string>{"pypi"});
  CheckDeny(b.Evaluate("CreateSandbox", true, with_github), "FAILED_PRECONDITION", "unknown_provider: ");
  CHECK(a.gateway().Stop() == 0);
  CHECK(b.gateway().Stop() == 0);
}

TEST_CASE("provider profiles: two replicas on one PostgreSQL database: a sandbox recorded through B holds back a "
          "widening profile change on A, and on B",
          "[interceptor][integration][provider_profiles][postgres][replicas]") {
  const std::string url = PgCluster::Shared().CreateDatabase();
  // One authority and one profile-signing key for both (B takes A's keys before it starts); A sets the
  // signed ceiling, which B loads from the database.
  InterceptorGateway a(true, true, {"--database", url}, ProfileSigning::kSigned);
  InterceptorGateway b(true, false, {"--database", url}, ProfileSigning::kSigned, true, [&](const TempDir& keys) {
    for (const char* file : {"authority.key", "gateway.key", "trust.json"}) {
      std::filesystem::copy_file(a.keys() / file, keys / file, std::filesystem::copy_options::overwrite_existing);
    }
    return std::vector<std::string>{};
  });
  WriteFile(a.keys() / "pypi.yaml", kPypiProfileYaml);
  WriteFile(a.keys() / "pypi-wide.yaml", PypiWideProfileYaml());
  std::string out, err;
  INFO(out << err);
  REQUIRE(Ctl(a.gateway(), {"profile", "set", "-f", a.keys() / "pypi.yaml"}, &out, &err) == 0);
  // Recorded through B: its ceiling (A's, from the database) and A's profile compose and fit.
  const auto recorded = b.Evaluate("CreateSandbox", true, CreateSandboxJson("build-1", kBasePolicyJson, R"(["pypi"])"));
  INFO(recorded.reason());
  REQUIRE(recorded.allowed());
  // The wider pypi would reach upload.pypi.org from build-1: refused on A (B's record) and on B.
  for (InterceptorGateway* g : {&a, &b}) {
    CHECK(Ctl(g->gateway(), {"profile", "set", "-f", a.keys() / "pypi-wide.yaml"}, &out, &err) != 0);
    CHECK_THAT(err, Catch::Contains("exceeds_ceiling: profile 'pypi'") && Catch::Contains("sandbox 'build-1'"));
  }
  // Detached through A, nothing holds it back any more, and B's next validate composes the wider layer.
  REQUIRE(a.Evaluate("DetachSandboxProvider", true, R"({"sandboxName": "build-1", "providerName": "pypi"})").allowed());
  CHECK(Ctl(b.gateway(), {"profile", "set", "-f", a.keys() / "pypi-wide.yaml"}, &out, &err) == 0);
  CheckDeny(b.Evaluate("CreateSandbox", true, CreateSandboxJson("build-2", kBasePolicyJson, R"(["pypi"])")),
            "PERMISSION_DENIED", "exceeds_ceiling: ");
  CHECK(a.gateway().Stop() == 0);
  CHECK(b.gateway().Stop() == 0);
}

TEST_CASE("provider profiles: every provider path is checked on the composed candidate, and profile writes are refused",
          "[interceptor][integration][provider_profiles]") {
  InterceptorGateway g(true, true, {}, ProfileSigning::kSigned);
  WriteFile(g.keys() / "github.yaml", kGithubProfileYaml);
  WriteFile(g.keys() / "pypi.yaml", kPypiProfileYaml);
  std::string out, err;
  REQUIRE(Ctl(g.gateway(), {"profile", "set", "-f", g.keys() / "github.yaml"}, &out, &err) == 0);
  REQUIRE(Ctl(g.gateway(), {"profile", "set", "-f", g.keys() / "pypi.yaml"}, &out, &err) == 0);
  REQUIRE(g.Evaluate("CreateSandbox", true, CreateSandboxJson("build-7", kBasePolicyJson)).allowed());

  // A provider whose layer stays inside the ceiling: allowed, and composed into what follows.
  const auto inside = g.Evaluate("AttachSandboxProvider", true, R"({"sandboxName": "build-7", "providerName": "pypi"})");
  CHECK(inside.allowed());
  // The ceiling bypass: github's layer (gh and git to github.com) is outside the ceiling, though the
  // request names no host at all: refused on the composed candidate, naming the first widening.
  const auto wide = g.Evaluate("AttachSandboxProvider", true, R"({"sandboxName": "build-7", "providerName": "github"})");
  CheckDeny(wide, "PERMISSION_DENIED", "exceeds_ceiling: ");
  CHECK_THAT(wide.reason(), Catch::Contains("github.com") && Catch::Contains("/usr/bin/g"));
  CheckDeny(g.Evaluate("AttachSandboxProvider", true, R"({"sandboxName": "build-7", "providerName": "nosuch"})"),
            "FAILED_PRECONDITION", "unknown_provider: provider 'nosuch'");
  CheckDeny(g.Evaluate("AttachSandboxProvider", true, R"({"sandboxName": "never-seen", "providerName": "pypi"})"),
            "FAILED_PRECONDITION", "unknown_sandbox: ");

  // CreateSandbox with providers composes them too.
  CHECK(g.Evaluate("CreateSandbox", false, CreateSandboxJson("build-8", kBasePolicyJson, R"(["pypi"])")).allowed());
  CheckDeny(g.Evaluate("CreateSandbox", true, CreateSandboxJson("build-9", kBasePolicyJson, R"(["pypi", "github"])")),
            "PERMISSION_DENIED", "exceeds_ceiling: ");
  // The candidate digest is the composed candidate's, not the sandbox's own policy's.
  const auto own = g.Evaluate("CreateSandbox", false, CreateSandboxJson("build-10", kBasePolicyJson));
  const auto composed = g.Evaluate("CreateSandbox", false, CreateSandboxJson("build-10", kBasePolicyJson, R"(["pypi"])"));
  CHECK(own.log_annotations().at("policy-gateway/candidate-digest") !=
        composed.log_annotations().at("policy-gateway/candidate-digest"));

  // A full policy for build-7 is composed with the pypi layer it recorded at the attach: still inside.
  CHECK(g.Evaluate("UpdateConfig", true, absl::StrCat(R"({"name": "build-7", "policy": )", kBasePolicyJson, "}")).allowed());

  // Profile writes through upstream: this gateway's catalogue is authoritative.
  const auto import = g.Evaluate("ImportProviderProfiles", true, R"({"profiles": [{"profile": {"id": "github", "displayName": "GitHub",
      "endpoints": [{"host": "evil.example.com", "port": 443.0}], "binaries": [{"path": "/usr/bin/gh"}]}, "source": "gh.yaml"}]})");
  CheckDeny(import, "PERMISSION_DENIED", "profile_catalogue_managed: ");
  CHECK_THAT(import.reason(), Catch::Contains("policyctl profile"));
  CheckDeny(g.Evaluate("UpdateProviderProfiles", true, R"({"id": "github", "profile": {"profile": {"id": "github", "displayName": "GitHub"}}})"),
            "PERMISSION_DENIED", "profile_catalogue_managed: ");
  CheckDeny(g.Evaluate("DeleteProviderProfile", true, R"({"id": "github"})"), "PERMISSION_DENIED",
            "profile_catalogue_managed: ");
  CHECK(g.gateway().Stop() == 0);
}

// A ceiling (version 2 of the test's) that lets git fetch from and post to github.com but never push, and
// two profiles on that host for git: one that pushes, one whose deny rule takes pushes away again, whichever
// rule allowed them (the README's github profile does the same).
const char kCeilingWithGitYaml[] = R"(
  git:
    name: git
    endpoints:
      - { host: github.com, port: 443, protocol: rest, enforcement: enforce,
          rules: [{ allow: { method: GET, path: "/**" } }, { allow: { method: POST, path: "/**" } }],
          deny_rules: [{ method: POST, path: "/**/git-receive-pack" }] }
    binaries: [{ path: /usr/bin/git }]
)";
// A profile `id` for git on github.com with `rules` (flow YAML: "rules: [...], deny_rules: [...]").
std::string GitProfileYaml(const std::string& id, const std::string& rules) {
  return absl::StrCat("id: ", id, "\ndisplay_name: ", id,
                      "\nendpoints:\n  - { host: github.com, port: 443, protocol: rest, enforcement: enforce, ", rules,
                      " }\nbinaries: [/usr/bin/git]\n");
}
const std::string kGitPushProfileYaml =
    GitProfileYaml("gitpush", R"(rules: [{ allow: { method: GET, path: "/**" } }, { allow: { method: POST, path: "/**" } }])");
const std::string kGitNoPushProfileYaml = GitProfileYaml(
    "gitnopush", R"(rules: [{ allow: { method: GET, path: "/**" } }], deny_rules: [{ method: POST, path: "/**/git-receive-pack" }])");
// The README's base policy with a rule of its own that lets git push to github.com.
std::string BasePolicyThatPushes() {
  std::string policy = kBasePolicyJson;
  const size_t api = policy.find(R"("api": {)");
  policy.insert(api, R"("git": {"name": "git", "endpoints": [{"host": "github.com", "port": 443.0, "protocol": "rest",
      "enforcement": "enforce", "rules": [{"allow": {"method": "GET", "path": "/**"}}, {"allow": {"method": "POST", "path": "/**"}}]}],
      "binaries": [{"path": "/usr/bin/git"}]},
    )");
  return policy;
}

// Signs version 2 of the test's ceiling with kCeilingWithGitYaml added and sets it on `g`.
void SetCeilingWithGit(InterceptorGateway& g) {
  std::string out, err;
  WriteFile(g.keys() / "ceiling-2.yaml", std::string(kCeilingYaml) + kCeilingWithGitYaml);
  REQUIRE(CtlOffline({"ceiling", "sign", "-f", g.keys() / "ceiling-2.yaml", "--id", "corp-max", "--version", "2", "--key",
                      g.keys() / "authority.key", "--key-id", "authority", "--out", g.keys() / "ceiling-2.json"},
                     &out, &err) == 0);
  REQUIRE(Ctl(g.gateway(), {"ceiling", "set", g.keys() / "ceiling-2.json"}, &out, &err) == 0);
}

TEST_CASE("provider profiles: a layer's deny rules never hide what the sandbox's own policy or another layer allows "
          "beyond the ceiling",
          "[interceptor][integration][provider_profiles]") {
  // Review finding: a deny rule of any layer blocks a request whichever rule allowed it, so a composed
  // candidate could fit the ceiling while its policy alone (what an OpenShell gateway without providers v2
  // enforces) or its policy with the layer detached did not.
  InterceptorGateway g(true, true, {}, ProfileSigning::kSigned);
  std::string out, err;
  SetCeilingWithGit(g);
  WriteFile(g.keys() / "gitpush.yaml", kGitPushProfileYaml);
  WriteFile(g.keys() / "gitnopush.yaml", kGitNoPushProfileYaml);
  REQUIRE(Ctl(g.gateway(), {"profile", "set", "-f", g.keys() / "gitpush.yaml"}, &out, &err) == 0);
  REQUIRE(Ctl(g.gateway(), {"profile", "set", "-f", g.keys() / "gitnopush.yaml"}, &out, &err) == 0);
  const std::string pushes = BasePolicyThatPushes();
  CheckDeny(g.Evaluate("CreateSandbox", true, CreateSandboxJson("build-h", pushes)), "PERMISSION_DENIED", "");
  // The sandbox's own policy pushes; the layer's deny rule hides it in the composition (which fits).
  const auto hidden = g.Evaluate("CreateSandbox", true, CreateSandboxJson("build-h", pushes, R"(["gitnopush"])"));
  CheckDeny(hidden, "PERMISSION_DENIED", "");
  CHECK_THAT(hidden.reason(), Catch::Contains("the sandbox's own policy, without its providers' layers"));
  // A layer that pushes, hidden by another's deny rule: allowed together; detaching the one that hides is
  // checked on what remains, and refused.
  REQUIRE(g.Evaluate("CreateSandbox", true, CreateSandboxJson("build-d", kBasePolicyJson, R"(["gitpush", "gitnopush"])"))
              .allowed());
  const auto detach = g.Evaluate("DetachSandboxProvider", true, R"({"sandboxName": "build-d", "providerName": "gitnopush"})");
  CheckDeny(detach, "PERMISSION_DENIED", "");
  CHECK_THAT(detach.reason(), Catch::Contains("github.com"));
  // The same through the catalogue, with no request the interceptor sees: deleting the profile that hides
  // the push, or setting it without its deny rule, takes the deny away from build-d. Refused.
  CHECK(Ctl(g.gateway(), {"profile", "delete", "gitnopush"}, &out, &err) != 0);
  CHECK_THAT(err, Catch::Contains("profile 'gitnopush' deleted would widen sandbox 'build-d'") &&
                      Catch::Contains("github.com"));
  WriteFile(g.keys() / "gitnopush-open.yaml",
            GitProfileYaml("gitnopush", R"(rules: [{ allow: { method: GET, path: "/**" } }])"));
  CHECK(Ctl(g.gateway(), {"profile", "set", "-f", g.keys() / "gitnopush-open.yaml"}, &out, &err) != 0);
  CHECK_THAT(err, Catch::Contains("profile 'gitnopush' set would widen sandbox 'build-d'"));
  // Detaching the one that pushes narrows: allowed.
  CHECK(g.Evaluate("DetachSandboxProvider", true, R"({"sandboxName": "build-d", "providerName": "gitpush"})").allowed());
  // And then nothing recorded holds the hiding profile back.
  CHECK(Ctl(g.gateway(), {"profile", "delete", "gitnopush"}, &out, &err) == 0);
  CHECK(g.gateway().Stop() == 0);
}

// The README's base policy with `entries` (JSON members, comma-led) added to its networkPolicies.
std::string BasePolicyWith(const std::string& entries) {
  std::string policy = kBasePolicyJson;
  const size_t end = policy.rfind("}\n  }");
  REQUIRE(end != std::string::npos);
  policy.insert(end + 1, entries);
  return policy;
}

TEST_CASE("interceptor: a policy is checked as upstream keeps it: `_provider_` entries are refused from users, "
          "dropped from a sandbox's own sync, never recorded",
          "[interceptor][integration][provider_profiles]") {
  // Review finding (helper 71): upstream drops every `_provider_*` entry of a sandbox's own sync before it keeps
  // the policy, and refuses such an entry from anyone else; the check here saw them, so a sync could hide its
  // own widening behind an entry's deny rules that upstream then dropped, and the record kept the entries.
  InterceptorGateway g(true, true, {}, ProfileSigning::kSigned);
  std::string out, err;
  SetCeilingWithGit(g);
  REQUIRE(g.Evaluate("CreateSandbox", true, CreateSandboxJson("build-s", kBasePolicyJson)).allowed());
  // A rule of the sandbox's own that pushes, and a "provider" entry whose deny rule takes pushes away again.
  const std::string hiding = R"(, "_provider_zz": {"name": "_provider_zz", "endpoints": [{"host": "github.com",
      "port": 443.0, "protocol": "rest", "enforcement": "enforce", "rules": [{"allow": {"method": "GET", "path": "/**"}}],
      "denyRules": [{"method": "POST", "path": "/**/git-receive-pack"}]}], "binaries": [{"path": "/usr/bin/git"}]})";
  const std::string pushes = R"(, "git": {"name": "git", "endpoints": [{"host": "github.com", "port": 443.0,
      "protocol": "rest", "enforcement": "enforce", "rules": [{"allow": {"method": "GET", "path": "/**"}},
      {"allow": {"method": "POST", "path": "/**"}}]}], "binaries": [{"path": "/usr/bin/git"}]})";
  const auto sync = [&](const std::string& policy, const std::string& kind) {
    return g.Evaluate("UpdateConfig", true, FromProtoJson(absl::StrCat(R"({"name": "build-s", "policy": )", policy, "}")),
                      kind == "sandbox" ? "sbx-build-s" : "alice@example.com", kind);
  };
  // From the sandbox: checked without the entry upstream drops, so the push is seen and refused.
  const auto hidden = sync(BasePolicyWith(pushes + hiding), "sandbox");
  CheckDeny(hidden, "PERMISSION_DENIED", "exceeds_ceiling: ");
  CHECK_THAT(hidden.reason(), Catch::Contains("github.com"));
  // From a user: refused as upstream refuses it, whatever else the policy holds.
  CheckDeny(sync(BasePolicyWith(hiding), "user"), "PERMISSION_DENIED",
            "invalid_request: policy.networkPolicies._provider_zz: the '_provider_' prefix is reserved");
  CheckDeny(g.Evaluate("CreateSandbox", true, CreateSandboxJson("build-t", BasePolicyWith(hiding))), "PERMISSION_DENIED",
            "invalid_request: spec.policy.networkPolicies._provider_zz: the '_provider_' prefix is reserved");
  CheckDeny(g.Evaluate("UpdateConfig", false,
                       R"({"name": "build-s", "mergeOperations": [{"addRule": {"ruleName": "_provider_x", "rule": {
                           "name": "_provider_x", "endpoints": [{"host": "pypi.org", "port": 443.0}],
                           "binaries": [{"path": "/usr/bin/pip"}]}}}]})"),
            "PERMISSION_DENIED", "invalid_request: mergeOperations.networkPolicies._provider_x: ");
  // A sandbox's real sync (its providers' entries in it) is allowed, and recorded without them: a user's merge
  // afterwards sends upstream a whole policy with no reserved entry (upstream would refuse one).
  REQUIRE(sync(BasePolicyWith(hiding), "sandbox").allowed());
  const auto merged = g.Evaluate("UpdateConfig", false, R"({"name": "build-s", "mergeOperations": [{"addRule": {
      "ruleName": "pip", "rule": {"name": "pip", "endpoints": [{"host": "pypi.org", "port": 443.0}],
      "binaries": [{"path": "/usr/bin/pip"}]}}}]})");
  REQUIRE(merged.allowed());
  REQUIRE(merged.patches_size() == 2);
  const auto& policies = merged.patches(1).value().struct_value().fields().at("networkPolicies").struct_value().fields();
  CHECK(policies.contains("pip"));
  CHECK(policies.contains("api"));
  CHECK_FALSE(policies.contains("_provider_zz"));
  // Seeding states what upstream holds: never a reserved entry.
  WriteFile(g.keys() / "seed.yaml", R"(version: 1
filesystem_policy: { include_workdir: true, read_only: [/usr, /etc], read_write: [/sandbox] }
landlock: { compatibility: best_effort }
process: { run_as_user: sandbox, run_as_group: sandbox }
network_policies:
  _provider_pypi: { name: _provider_pypi, endpoints: [{ host: pypi.org, port: 443 }], binaries: [{ path: /usr/bin/pip }] }
)");
  CHECK(Ctl(g.gateway(), {"interceptor", "seed", "build-u", "-f", g.keys() / "seed.yaml"}, &out, &err) != 0);
  CHECK_THAT(err, Catch::Contains("network_policies._provider_pypi: the '_provider_' prefix is reserved"));
  CHECK(g.gateway().Stop() == 0);
}

TEST_CASE("interceptor: a setting key upstream would trim is refused, so auto-approval cannot pass as another "
          "setting",
          "[interceptor][integration]") {
  // Review finding (helper 71): upstream trims settingKey (Rust's str::trim, Unicode white space) before it
  // names a setting; the auto-approval deny compared the key untrimmed.
  InterceptorGateway g;
  REQUIRE(g.Evaluate("CreateSandbox", true, CreateSandboxJson("build-k", kBasePolicyJson)).allowed());
  for (const std::string key : {" proposal_approval_mode", "proposal_approval_mode\\t", "\u00a0proposal_approval_mode",
                                "proposal_approval_mode\u3000", "\\nproposal_approval_mode"}) {
    for (const std::string scope : {R"("global": true)", R"("name": "build-k")"}) {
      INFO(key << " " << scope);
      CheckDeny(g.Evaluate("UpdateConfig", true,
                           absl::StrCat(R"({"settingKey": ")", key, R"(", "settingValue": {"stringValue": "auto"}, )",
                                        scope, "}")),
                "PERMISSION_DENIED", "invalid_request: settingKey: white space or a non-ASCII character at either end");
    }
  }
  // The key itself, and other settings, as before.
  CheckDeny(g.Evaluate("UpdateConfig", true,
                       R"({"settingKey": "proposal_approval_mode", "settingValue": {"stringValue": "auto"}, "global": true})"),
            "PERMISSION_DENIED", "approval_unverifiable: ");
  CHECK(g.Evaluate("UpdateConfig", true,
                   R"({"settingKey": "proposal_approval_mode", "settingValue": {"stringValue": "manual"}, "name": "build-k"})")
            .allowed());
  CHECK(g.gateway().Stop() == 0);
}

TEST_CASE("interceptor: auto-approval is refused beside a policy too, and a request of too many mergeOperations",
          "[interceptor][integration]") {
  InterceptorGateway g;
  REQUIRE(g.Evaluate("CreateSandbox", true, CreateSandboxJson("build-a", kBasePolicyJson)).allowed());
  // Review finding: the check sat after the policy branch, so a policy beside the setting skipped it.
  CheckDeny(g.Evaluate("UpdateConfig", true,
                       absl::StrCat(R"({"name": "build-a", "settingKey": "proposal_approval_mode", )",
                                    R"("settingValue": {"stringValue": "auto"}, "policy": )", kBasePolicyJson, "}")),
            "PERMISSION_DENIED", "approval_unverifiable: ");
  // Review 99: upstream refuses a policy beside another setting (or merge operations beside either, or none of
  // them) as mutually exclusive: allowed here, the policy would be recorded while upstream keeps the old one.
  for (const std::string& refused :
       {absl::StrCat(R"({"name": "build-a", "settingKey": "log_level", "settingValue": {"stringValue": "debug"}, "policy": )",
                     kBasePolicyJson, "}"),
        absl::StrCat(R"({"global": true, "deleteSetting": true, "policy": )", kBasePolicyJson, "}"),
        std::string(R"({"name": "build-a", "settingKey": "log_level", "settingValue": {"stringValue": "debug"},
                        "mergeOperations": [{"removeRule": {"ruleName": "api"}}]})"),
        std::string(R"({"name": "build-a"})")}) {
    for (bool validate : {false, true}) {
      INFO(refused << (validate ? " (validate)" : " (modify)"));
      CheckDeny(g.Evaluate("UpdateConfig", validate, refused), "PERMISSION_DENIED", "invalid_request: ");
    }
  }
  // A sandbox's policy with deleteSetting: upstream keeps the policy (the flag is read in its global branch only).
  CHECK(g.Evaluate("UpdateConfig", true, absl::StrCat(R"({"name": "build-a", "deleteSetting": true, "policy": )",
                                                      kBasePolicyJson, "}"))
            .allowed());
  // Each merge operation is applied to a copy of the policy the ones before made: their number is bounded.
  std::string ops;
  for (int i = 0; i < 257; ++i) {
    absl::StrAppend(&ops, i == 0 ? "" : ", ",
                    R"({"removeEndpoint": {"ruleName": "api", "host": "h)", i, R"(.example", "port": 443.0}})");
  }
  const auto many = g.Evaluate("UpdateConfig", false, absl::StrCat(R"({"name": "build-a", "mergeOperations": [)", ops, "]}"));
  CheckDeny(many, "FAILED_PRECONDITION", "invalid_merge_operation: ");
  CHECK_THAT(many.reason(), Catch::Contains("more than the 256"));
  CHECK(g.gateway().Stop() == 0);
}

TEST_CASE("interceptor: an Evaluate that reaches a worker after its deadline is not decided: nothing recorded or "
          "audited",
          "[interceptor][integration]") {
  // Review finding: calls queued for the pool without bound, and each was decided whenever a worker took it,
  // long after the OpenShell gateway had given up (500 ms) and applied its failure policy: records, admissions
  // and audit events nobody heard.
  InterceptorGateway g;
  REQUIRE(g.Evaluate("CreateSandbox", true, CreateSandboxJson("warm", kBasePolicyJson)).allowed());
  const std::string token = "Bearer " + Mint(g.key(), Claims(ClaimsSpec(), std::time(nullptr)));
  // The database's write lock, held from here: each Evaluate's record and audit event wait for it (the store
  // waits up to 5 s), so the pool's 4 workers are taken by the first 4 calls and the rest queue.
  sqlite3* db = nullptr;
  const std::string db_path = g.gateway().state_dir() + "/gateway.db";
  REQUIRE(sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_exec(db, "BEGIN EXCLUSIVE", nullptr, nullptr, nullptr) == SQLITE_OK);
  constexpr int kCalls = 8;
  // The requests are built here: FromProtoJson asserts, and Catch's assertions are not thread-safe (built
  // in the callers' threads, they corrupted the runner now and then: a SIGSEGV or bad_array_new_length).
  std::vector<Struct> operations;
  for (int i = 0; i < kCalls; ++i) operations.push_back(FromProtoJson(CreateSandboxJson(absl::StrCat("late-", i), kBasePolicyJson)));
  std::vector<std::thread> callers;
  std::vector<grpc::StatusCode> codes(kCalls);
  for (int i = 0; i < kCalls; ++i) {
    callers.emplace_back([&, i] {
      // Half set a deadline; half set none and cancel at the same moment, as the OpenShell gateway's own
      // 500 ms timer does (it sends no deadline).
      icv1::InterceptorEvaluation evaluation;
      evaluation.set_service("openshell.v1.OpenShell");
      evaluation.set_method("CreateSandbox");
      (*evaluation.mutable_principal())["kind"] = "user";
      (*evaluation.mutable_principal())["subject"] = "alice@example.com";
      *evaluation.mutable_validate()->mutable_proposed_operation() = operations[i];
      grpc::ClientContext context;
      std::thread canceller;
      if (i % 2 == 0) {
        context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(1500));
      } else {
        canceller = std::thread([&context] {
          std::this_thread::sleep_for(std::chrono::milliseconds(1500));
          context.TryCancel();
        });
      }
      context.AddMetadata("authorization", token);
      icv1::InterceptorResult result;
      codes[i] = g.stub().Evaluate(&context, evaluation, &result).error_code();
      if (canceller.joinable()) canceller.join();
    });
  }
  std::this_thread::sleep_for(std::chrono::seconds(3));
  REQUIRE(sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr) == SQLITE_OK);
  sqlite3_close(db);
  for (auto& caller : callers) caller.join();
  for (int i = 0; i < kCalls; ++i) {  // all waited 3 s
    CHECK(codes[i] == (i % 2 == 0 ? grpc::StatusCode::DEADLINE_EXCEEDED : grpc::StatusCode::CANCELLED));
  }
  // The 4 calls the workers held when the lock was taken are decided once it is released; none queued behind
  // them is, once its deadline has passed.
  const std::string not_decided = "(deadline or cancel) and was not decided";
  for (int i = 0; i < 100 && absl::StrContains(g.gateway().log(), not_decided) == false; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::set<std::string> decided;
  for (const auto& event : g.gateway().AuditEvents()) {
    if (event.type() == "interception" && absl::StartsWith(event.sandbox_id(), "late-")) decided.insert(event.sandbox_id());
  }
  CHECK(decided.size() == 4);
  // Four calls not decided, a cancelled one as well as one past its deadline: each counted, the first
  // logged (the rest sampled, one line per 1000: a flood must not flood the log).
  const std::string log = g.gateway().log();
  size_t lines = 0;
  for (size_t at = log.find(not_decided); at != std::string::npos; at = log.find(not_decided, at + 1)) ++lines;
  CHECK(lines == 1);
  const std::string expired =
      "\npolicy_gateway_interceptor_calls_total{method=\"CreateSandbox\",phase=\"validate\",decision=\"expired\"} 4\n";
  CHECK(Eventually([&] { return absl::StrContains(g.Metrics(), expired); }));  // the last worker may still be at it
  // What was not decided was not recorded either: a merge for it finds no record.
  for (int i = 0; i < kCalls; ++i) {
    const std::string name = absl::StrCat("late-", i);
    if (decided.count(name) != 0) continue;
    CheckDeny(g.Evaluate("UpdateConfig", false,
                         absl::StrCat(R"({"name": ")", name, R"(", "mergeOperations": [{"removeEndpoint": {"ruleName": "api", "host": "h.example", "port": 443.0}}]})")),
              "FAILED_PRECONDITION", "unknown_sandbox: ");
  }
  CHECK(g.gateway().Stop() == 0);
}

// Whether a process running as `uid` with only the group `gid` can connect to the Unix socket `path`:
// 0 connected, 1 refused (EACCES), 2 another error. Forks; the caller must be root.
int ConnectAs(const std::string& path, uid_t uid, gid_t gid) {
  const pid_t child = ::fork();
  if (child == 0) {
    const gid_t groups[] = {gid};
    if (::setgroups(1, groups) != 0 || ::setgid(gid) != 0 || ::setuid(uid) != 0) ::_exit(3);
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    if (fd < 0 || path.size() >= sizeof(address.sun_path)) ::_exit(2);
    std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) == 0) ::_exit(0);
    ::_exit(errno == EACCES ? 1 : 2);
  }
  int status = 0;
  if (child < 0 || ::waitpid(child, &status, 0) != child || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

TEST_CASE("interceptor: interceptor_socket_group lets that group's members in, and nobody else",
          "[interceptor][integration]") {
  if (::geteuid() != 0) {
    WARN("not root: the group's effect on other users cannot be tried (needs setuid)");
    return;
  }
  // getgrnam's result is overwritten by the next call: keep the ids.
  const group* found = ::getgrnam("nogroup");
  REQUIRE(found != nullptr);
  const gid_t nogroup = found->gr_gid;
  found = ::getgrnam("daemon");
  REQUIRE(found != nullptr);
  const gid_t daemon_gid = found->gr_gid;
  TempDir dir;
  // The temp folder is the test's: others may pass through it, as they would /run.
  REQUIRE(::chmod(dir.path().c_str(), 0711) == 0);
  const std::string folder = dir / "interceptor";
  const std::string socket = folder + "/interceptor.sock";
  GatewayFixture gateway({"--interceptor-socket", socket, "--interceptor-socket-group", "nogroup"});
  REQUIRE(WaitForSocket(socket));
  struct stat st {};
  REQUIRE(::stat(socket.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0660);
  CHECK(st.st_gid == nogroup);
  REQUIRE(::stat(folder.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0710);
  CHECK(st.st_gid == nogroup);
  // A member of the group (the OpenShell gateway's user) connects; another unprivileged user does not.
  constexpr uid_t kNobody = 65534;
  CHECK(ConnectAs(socket, kNobody, nogroup) == 0);
  CHECK(ConnectAs(socket, kNobody, daemon_gid) == 1);
  CHECK_THAT(gateway.log(), Catch::Contains("0660 for group nogroup"));
  CHECK(gateway.Stop() == 0);
}

// ---------------------------------------------------------------------------------------------------
// Admit mode
// ---------------------------------------------------------------------------------------------------

// The example signing driver's policy for every subject: inside the ceiling. `extra_read_only` widens the
// filesystem additively (as upstream accepts on a live sandbox).
std::string AdmitDriverPolicy(const std::string& extra_read_only = "") {
  return absl::StrCat(R"(version: 1
filesystem_policy:
  include_workdir: true
  read_only: [/usr, /etc)", extra_read_only.empty() ? "" : ", " + extra_read_only, R"(]
  read_write: [/sandbox]
landlock:
  compatibility: best_effort
process:
  run_as_user: sandbox
  run_as_group: sandbox
network_policies:
  api:
    name: api
    endpoints:
      - { host: api.github.com, port: 443, protocol: rest, enforcement: enforce, access: read-only }
    binaries: [{ path: /usr/bin/curl }]
)");
}

// An OpenShell gateway as its contract describes it, for admit mode's push: it serves
// openshell.v1.OpenShell/UpdateConfig on a Unix socket and, for each call, runs this product's interceptor
// (modify, then validate, over the interceptor socket with the extension token) before it "commits" the
// policy, or answers with the interceptor's deny. With `refuse_live_change` it refuses every UpdateConfig as
// upstream refuses a non-additive change on a live sandbox (INVALID_ARGUMENT). No Catch macro runs on its
// threads: what it saw is read by the test through its accessors.
class FakeOpenShellGateway final : public os_v1::OpenShell::CallbackService {
 public:
  FakeOpenShellGateway(std::string socket, std::string interceptor_socket, std::string token)
      : socket_(std::move(socket)), token_(std::move(token)) {
    interceptor_ = icv1::GatewayInterceptor::NewStub(
        grpc::CreateChannel("unix:" + interceptor_socket, grpc::InsecureChannelCredentials()));
    grpc::ServerBuilder builder;
    builder.AddListeningPort("unix:" + socket_, grpc::InsecureServerCredentials());
    builder.RegisterService(this);
    server_ = builder.BuildAndStart();
  }
  ~FakeOpenShellGateway() override {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
    server_->Wait();
    for (auto& worker : workers_) worker.join();
  }
  bool serving() const { return server_ != nullptr; }
  void RefuseLiveChanges(bool refuse) {
    absl::MutexLock lock(&mu_);
    refuse_ = refuse;
  }
  // While held, an UpdateConfig runs the interceptor's phases and then waits (upstream has not committed
  // yet): what a crash of policy-gateway in that window leaves behind. Released: it goes on.
  void Hold(bool hold) {
    absl::MutexLock lock(&mu_);
    hold_ = hold;
  }
  int held() const {
    absl::MutexLock lock(&mu_);
    return held_;
  }

  struct Seen {
    std::string authorization;
    os_v1::UpdateConfigRequest request;
    bool committed = false;
    std::string outcome;  // "committed", or the status it answered
  };
  std::vector<Seen> seen() const {
    absl::MutexLock lock(&mu_);
    return seen_;
  }
  // The policy committed last for `name` (nullopt: none).
  std::optional<openshell::sandbox::v1::SandboxPolicy> committed(const std::string& name) const {
    absl::MutexLock lock(&mu_);
    auto it = policies_.find(name);
    if (it == policies_.end()) return std::nullopt;
    return it->second;
  }

  grpc::ServerUnaryReactor* UpdateConfig(grpc::CallbackServerContext* context, const os_v1::UpdateConfigRequest* request,
                                         os_v1::UpdateConfigResponse* /*response*/) override {
    auto* reactor = context->DefaultReactor();
    std::string authorization;
    if (auto it = context->client_metadata().find("authorization"); it != context->client_metadata().end()) {
      authorization.assign(it->second.data(), it->second.size());
    }
    absl::MutexLock lock(&mu_);
    // The interceptor calls block: they run on a thread of their own, as the contract allows no thread to
    // be held by a reactor.
    workers_.emplace_back([this, reactor, request, authorization] {
      Seen seen;
      seen.authorization = authorization;
      seen.request = *request;
      const grpc::Status status = Handle(*request);
      seen.committed = status.ok();
      seen.outcome = status.ok() ? "committed" : absl::StrCat(status.error_code(), " ", status.error_message());
      {
        absl::MutexLock lock(&mu_);
        if (status.ok()) policies_[request->name()] = request->policy();
        seen_.push_back(std::move(seen));
      }
      reactor->Finish(status);
    });
    return reactor;
  }

 private:
  grpc::Status Handle(const os_v1::UpdateConfigRequest& request) {
    std::string json;
    google::protobuf::util::JsonPrintOptions print;
    if (!google::protobuf::util::MessageToJsonString(request, &json, print).ok()) {
      return grpc::Status(grpc::StatusCode::INTERNAL, "cannot print the request");
    }
    Struct payload;
    if (!google::protobuf::util::JsonStringToMessage(json, &payload).ok()) {
      return grpc::Status(grpc::StatusCode::INTERNAL, "cannot read the request as a Struct");
    }
    for (const bool validate : {false, true}) {
      icv1::InterceptorEvaluation evaluation;
      evaluation.set_interceptor_name("policy-gateway");
      evaluation.set_binding_id(validate ? "pg-update-config" : "pg-update-config");
      evaluation.set_service("openshell.v1.OpenShell");
      evaluation.set_method("UpdateConfig");
      (*evaluation.mutable_principal())["kind"] = "user";
      (*evaluation.mutable_principal())["subject"] = "policy-gateway-push";
      auto* phase = validate ? evaluation.mutable_validate()->mutable_proposed_operation()
                             : evaluation.mutable_modify_operation()->mutable_proposed_operation();
      *phase = payload;
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
      context.AddMetadata("authorization", token_);
      icv1::InterceptorResult result;
      const grpc::Status called = interceptor_->Evaluate(&context, evaluation, &result);
      if (!called.ok()) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "interceptor: " + called.error_message());
      if (!result.allowed()) return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, result.reason());
      if (result.patches_size() > 0) return grpc::Status(grpc::StatusCode::INTERNAL, "unexpected patches");
    }
    absl::MutexLock lock(&mu_);
    if (hold_) {
      ++held_;
      mu_.Await(absl::Condition(+[](bool* hold) { return !*hold; }, &hold_));
      --held_;
      return grpc::Status(grpc::StatusCode::ABORTED, "held, then dropped");
    }
    if (refuse_) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "landlock and process cannot change on a live sandbox; filesystem changes must be additive");
    }
    return grpc::Status::OK;
  }

  const std::string socket_;
  const std::string token_;
  std::unique_ptr<icv1::GatewayInterceptor::Stub> interceptor_;
  std::unique_ptr<grpc::Server> server_;
  mutable absl::Mutex mu_;
  bool refuse_ ABSL_GUARDED_BY(mu_) = false;
  bool hold_ ABSL_GUARDED_BY(mu_) = false;
  int held_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<Seen> seen_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, openshell::sandbox::v1::SandboxPolicy> policies_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> workers_ ABSL_GUARDED_BY(mu_);
};

openshell::sandbox::v1::SandboxPolicy PolicyOfJson(const Value& value) {
  std::string json;
  REQUIRE(google::protobuf::util::MessageToJsonString(value, &json).ok());
  openshell::sandbox::v1::SandboxPolicy policy;
  INFO(json);
  REQUIRE(google::protobuf::util::JsonStringToMessage(json, &policy).ok());
  return policy;
}

TEST_CASE("interceptor: admit mode admits CreateSandbox through the Policy subsystem, holds validate to the admitted "
          "body, refuses other writes, and pushes a changed projection",
          "[interceptor][integration][admit]") {
  TempDir driver_dir, os_dir;
  const std::string os_socket = os_dir / "openshell.sock";
  WriteFile(driver_dir / "default.yaml", AdmitDriverPolicy());
  WriteFile(os_dir / "push-token", "push-token-123\n");
  std::unique_ptr<DriverProcess> driver;
  InterceptorGateway g(/*with_keys=*/true, /*with_ceiling=*/true, {}, ProfileSigning::kNone, /*unix_socket=*/true,
                       [&](const TempDir& keys) {
                         driver = std::make_unique<DriverProcess>(
                             driver_dir, "example",
                             std::vector<std::string>{OSH_EXAMPLE_DRIVER_BINARY, "--policies", driver_dir.path().string(),
                                                      "--key", keys / "authority.key", "--key-id", "authority"});
                         driver->Start();
                         return std::vector<std::string>{
                             "--driver-socket", driver->socket(), "--interceptor-mode", "admit",
                             "--interceptor-openshell-endpoint", "unix://" + os_socket,
                             "--interceptor-openshell-token-file", os_dir / "push-token"};
                       });
  FakeOpenShellGateway openshell(os_socket, g.socket(),
                                 "Bearer " + Mint(g.key(), Claims(ClaimsSpec(), std::time(nullptr))));
  REQUIRE(openshell.serving());
  CHECK_THAT(g.gateway().log(), Catch::Contains("changed projections are pushed to the OpenShell gateway at unix://"));

  // The request asks for a wide policy of its own: admit mode replaces it with what the driver gives.
  const std::string wide = BasePolicyWith("anything", R"({"name": "anything", "endpoints": [{"host": "*.example.com", "port": 443.0}], "binaries": [{"path": "/usr/bin/curl"}]})");
  const Struct create = FromProtoJson(CreateSandboxJson("build-7", wide));
  const auto modified = g.Evaluate("CreateSandbox", false, create);
  REQUIRE(modified.allowed());
  REQUIRE(modified.patches_size() == 2);
  CHECK(modified.patches(0).op() == "replace");
  CHECK(modified.patches(0).path() == "/spec/policy");
  CHECK(modified.patches(1).op() == "add");
  CHECK(modified.patches(1).path() == "/annotations");

  // The admitted sandbox, as the admin API shows it: the annotations tie the OpenShell sandbox to it.
  gw::GetSandboxRequest get;
  get.set_sandbox_id("build-7");
  get.set_include_policy(true);
  gw::SandboxInfo info;
  REQUIRE(g.gateway().admin().GetSandbox(GatewayFixture::Context().get(), get, &info).ok());
  CHECK(info.context().user_subject() == "alice@example.com");
  CHECK(info.context().attributes().at("team") == "platform");
  CHECK(info.signing_key_ids(0) == "authority");
  CHECK(google::protobuf::util::MessageDifferencer::Equals(PolicyOfJson(modified.patches(0).value()), info.policy()));
  const auto& annotations = modified.patches(1).value().struct_value().fields();
  CHECK(annotations.at("policy-gateway/policy-digest").string_value() == info.policy_digest());
  CHECK(annotations.at("policy-gateway/policy-version").string_value() == absl::StrCat(info.policy_version()));
  CHECK(annotations.at("policy-gateway/key-ids").string_value() == "authority");
  CHECK(annotations.at("policy-gateway/decision-id").string_value() ==
        modified.log_annotations().at("policy-gateway/decision-id"));
  // The admission is audited as AdmitSandbox's is, naming the principal's subject.
  bool admitted_event = false;
  for (const auto& event : g.gateway().AuditEvents()) {
    if (event.type() == "admission" && event.sandbox_id() == "build-7" && event.outcome() == "ok") admitted_event = true;
  }
  CHECK(admitted_event);
  // The allowed modify phase is one interception event, committed with the admission (same decision id).
  int modify_events = 0;
  for (const auto& event : g.gateway().AuditEvents()) {
    if (event.type() == "interception" && event.sandbox_id() == "build-7" &&
        event.audit_context().at("decision_id") == modified.log_annotations().at("policy-gateway/decision-id")) {
      CHECK(event.outcome() == "ok");
      CHECK(event.audit_context().at("phase") == "modify_operation");
      ++modify_events;
    }
  }
  CHECK(modify_events == 1);

  // Validate: the patched request passes; a later change of the body or of an annotation does not.
  const Struct patched = ApplyPatches(create, modified.patches());
  CHECK(g.Evaluate("CreateSandbox", true, patched).allowed());
  {
    Struct changed = patched;
    (*(*changed.mutable_fields())["spec"].mutable_struct_value()->mutable_fields())["policy"] =
        FromProtoJson(CreateSandboxJson("x", wide)).fields().at("spec").struct_value().fields().at("policy");
    CheckDeny(g.Evaluate("CreateSandbox", true, changed), "PERMISSION_DENIED", "policy_not_admitted: spec.policy");
    Struct relabelled = patched;
    (*(*relabelled.mutable_fields())["annotations"].mutable_struct_value()->mutable_fields())
        ["policy-gateway/policy-digest"].set_string_value(std::string(64, '0'));
    CheckDeny(g.Evaluate("CreateSandbox", true, relabelled), "PERMISSION_DENIED",
              "policy_not_admitted: annotation policy-gateway/policy-digest");
    CheckDeny(g.Evaluate("CreateSandbox", true, FromProtoJson(CreateSandboxJson("never-admitted", kBasePolicyJson))),
              "FAILED_PRECONDITION", "unknown_sandbox: ");
  }
  // A retried create with the same context reuses the admission; another context is another sandbox.
  const auto retried = g.Evaluate("CreateSandbox", false, create);
  REQUIRE(retried.allowed());
  CHECK(retried.patches(1).value().struct_value().fields().at("policy-gateway/policy-digest").string_value() ==
        info.policy_digest());
  CheckDeny(g.Evaluate("CreateSandbox", false, create, "mallory@example.com"), "FAILED_PRECONDITION",
            "already_admitted: ");
  CheckDeny(g.Evaluate("CreateSandbox", false, FromProtoJson(R"({"spec": {"policy": {"version": 1.0}}})")),
            "PERMISSION_DENIED", "invalid_request: admit mode admits the sandbox under its name");
  // Only a user with a subject creates an admitted sandbox, in the default workspace; validate holds the
  // request to the admitted context.
  CheckDeny(g.Evaluate("CreateSandbox", false, create, "build-7", "sandbox"), "PERMISSION_DENIED",
            "invalid_request: admit mode admits a sandbox a user creates; the principal is of kind 'sandbox'");
  CheckDeny(g.Evaluate("CreateSandbox", false, create, ""), "PERMISSION_DENIED",
            "invalid_request: admit mode admits the sandbox for its user: the principal names no subject");
  {
    Struct elsewhere = create;
    (*elsewhere.mutable_fields())["workspace"].set_string_value("team-b");
    CheckDeny(g.Evaluate("CreateSandbox", false, elsewhere), "PERMISSION_DENIED",
              "invalid_request: admit mode serves the default workspace only");
    CheckDeny(g.Evaluate("CreateSandbox", true, patched, "mallory@example.com"), "PERMISSION_DENIED",
              "policy_not_admitted: sandbox 'build-7' was admitted for another user subject or other labels");
  }
  // A request with annotations of its own gets one add per key (RFC 6901 escaping of the '/').
  {
    const Struct annotated = FromProtoJson(absl::StrCat(R"({"spec": {"policy": )", kBasePolicyJson,
                                                        R"(}, "name": "build-8", "annotations": {"owner": "ci"}})"));
    const auto added = g.Evaluate("CreateSandbox", false, annotated);
    REQUIRE(added.allowed());
    REQUIRE(added.patches_size() == 5);
    CHECK(added.patches(1).op() == "add");
    CHECK(added.patches(1).path() == "/annotations/policy-gateway~1policy-digest");
    const Struct applied = ApplyPatches(annotated, added.patches());
    const auto& kept = applied.fields().at("annotations").struct_value().fields();
    CHECK(kept.at("owner").string_value() == "ci");
    CHECK(kept.count("policy-gateway/decision-id") == 1);
    CHECK(g.Evaluate("CreateSandbox", true, applied).allowed());
  }

  // The driver does not permit mutation: every policy write but the admitted body itself is refused.
  const std::string admitted_json = [&] {
    std::string json;
    REQUIRE(google::protobuf::util::MessageToJsonString(info.policy(), &json).ok());
    return json;
  }();
  for (const bool validate : {false, true}) {
    // (inside the ceiling, but not what the driver gives)
    const std::string other = BasePolicyWith("pypi", R"({"name": "pypi", "endpoints": [{"host": "pypi.org", "port": 443.0}], "binaries": [{"path": "/usr/bin/pip"}]})");
    CheckDeny(g.Evaluate("UpdateConfig", validate, absl::StrCat(R"({"name": "build-7", "policy": )", other, "}")),
              "PERMISSION_DENIED", "mutation_not_permitted: the policy of sandbox 'build-7'");
    CheckDeny(g.Evaluate("UpdateConfig", validate,
                         absl::StrCat(R"({"global": true, "policy": )", admitted_json, "}")),
              "PERMISSION_DENIED", "mutation_not_permitted: the global policy");
    CHECK(g.Evaluate("UpdateConfig", validate, absl::StrCat(R"({"name": "build-7", "policy": )", admitted_json, "}"))
              .allowed());
  }
  CheckDeny(g.Evaluate("UpdateConfig", false,
                       R"({"name": "build-7", "mergeOperations": [{"removeRule": {"ruleName": "api"}}]})"),
            "PERMISSION_DENIED", "mutation_not_permitted: ");
  CheckDeny(g.Evaluate("UndoDraftChunk", true, R"({"name": "build-7", "chunkId": "c-1"})"), "PERMISSION_DENIED",
            "mutation_not_permitted: ");
  // Only this gateway writes the policy-gateway/* annotations: the admitted body with a forged digest is refused.
  CheckDeny(g.Evaluate("UpdateConfig", true,
                       absl::StrCat(R"({"name": "build-7", "policy": )", admitted_json,
                                    R"(, "annotations": {"policy-gateway/policy-digest": "00"}})")),
            "PERMISSION_DENIED", "policy_not_admitted: annotation policy-gateway/policy-digest = '00'");
  // Settings are not policy writes.
  CHECK(g.Evaluate("UpdateConfig", true, R"({"name": "build-7", "settingKey": "log_level", "settingValue": {"stringValue": "debug"}})")
            .allowed());

  // The driver's policy changes (additively); a refresh moves the projection, and the push carries the new
  // body to the OpenShell gateway, which runs our own interceptor on it before it commits.
  WriteFile(driver_dir / "default.yaml", AdmitDriverPolicy("/lib"));
  gw::RefreshSandboxRequest refresh;
  refresh.set_sandbox_id("build-7");
  gw::RefreshSandboxResponse refreshed;
  REQUIRE(g.gateway().admin().RefreshSandbox(GatewayFixture::Context().get(), refresh, &refreshed).ok());
  gw::SandboxInfo after;
  REQUIRE(g.gateway().admin().GetSandbox(GatewayFixture::Context().get(), get, &after).ok());
  REQUIRE(after.policy_digest() != info.policy_digest());
  REQUIRE(Eventually([&] { return openshell.committed("build-7").has_value(); }));
  {
    const auto seen = openshell.seen();
    REQUIRE(seen.size() == 1);
    CHECK(seen[0].authorization == "Bearer push-token-123");
    CHECK(seen[0].request.name() == "build-7");
    CHECK(seen[0].request.annotations().at("policy-gateway/policy-digest") == after.policy_digest());
    CHECK(seen[0].request.annotations().at("policy-gateway/policy-version") == absl::StrCat(after.policy_version()));
    CHECK(google::protobuf::util::MessageDifferencer::Equals(*openshell.committed("build-7"), after.policy()));
  }
  // The push's validate recorded the new body: a merge would now start from it, and nothing is pushed again.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  CHECK(openshell.seen().size() == 1);
  {
    std::string out, err;
    REQUIRE(Ctl(g.gateway(), {"status"}, &out, &err) == 0);
    CHECK_THAT(out, Catch::Contains("mode admit") &&
                        Catch::Contains(absl::StrCat("interceptor push:   unix://", os_socket,
                                                     ": 1 accepted, 0 refused, 0 retried, 0 in flight")));
    REQUIRE(Ctl(g.gateway(), {"-o", "json", "status"}, &out, &err) == 0);
    CHECK(JsonPath(out, {"interceptor", "pushes_accepted"}) == "1");
    // A seed changes what merges are composed from: behind the mutation gate (this driver permits none).
    WriteFile(driver_dir / "seed.yaml", AdmitDriverPolicy());
    CHECK(Ctl(g.gateway(), {"interceptor", "seed", "old-1", "-f", driver_dir / "seed.yaml"}, &out, &err) == 1);
    CHECK_THAT(err, Catch::Contains("mutation_not_permitted: "));
    CHECK_THAT(g.Metrics(), Catch::Contains("policy_gateway_interceptor_pushes_total{outcome=\"accepted\"} 1"));
  }

  // Upstream refuses a live change: the refusal is the sandbox's refresh error (drift refresh_failed).
  openshell.RefuseLiveChanges(true);
  WriteFile(driver_dir / "default.yaml", AdmitDriverPolicy("/lib, /app"));
  REQUIRE(g.gateway().admin().RefreshSandbox(GatewayFixture::Context().get(), refresh, &refreshed).ok());
  gw::SandboxInfo refused;
  REQUIRE(Eventually([&] {
    refused.Clear();
    return g.gateway().admin().GetSandbox(GatewayFixture::Context().get(), get, &refused).ok() &&
           !refused.last_refresh_error().empty();
  }));
  CHECK_THAT(refused.last_refresh_error(),
             Catch::StartsWith("openshell_push_refused: UpdateConfig: INVALID_ARGUMENT") &&
                 Catch::Contains("additive"));
  CHECK(refused.drift_state() == "refresh_failed");
  CHECK(openshell.seen().size() == 2);

  // A restart catches up: the sandbox whose last push was refused is pushed again, and goes through now.
  openshell.RefuseLiveChanges(false);
  g.Restart();
  REQUIRE(Eventually([&] { return openshell.seen().size() == 3 && openshell.seen()[2].committed; }));
  gw::SandboxInfo caught_up;
  REQUIRE(g.gateway().admin().GetSandbox(GatewayFixture::Context().get(), get, &caught_up).ok());
  CHECK(google::protobuf::util::MessageDifferencer::Equals(*openshell.committed("build-7"), caught_up.policy()));
  CHECK(g.gateway().Stop() == 0);
  CHECK(driver->Stop() == 0);
}

TEST_CASE("interceptor: admit mode checks the composed candidate (a refused one withdraws the admission), and a "
          "re-projection of the builtin driver is pushed",
          "[interceptor][integration][admit]") {
  TempDir os_dir;
  const std::string os_socket = os_dir / "openshell.sock";
  InterceptorGateway g(/*with_keys=*/true, /*with_ceiling=*/true,
                       {"--interceptor-mode", "admit", "--interceptor-openshell-endpoint", "unix://" + os_socket},
                       ProfileSigning::kSigned);
  FakeOpenShellGateway openshell(os_socket, g.socket(),
                                 "Bearer " + Mint(g.key(), Claims(ClaimsSpec(), std::time(nullptr))));
  REQUIRE(openshell.serving());
  const openshell::sandbox::v1::SandboxPolicy base = BaseSandboxPolicy();
  REQUIRE(g.gateway().SetPolicy("default", base).ok());
  WriteFile(g.keys() / "github.yaml", kGithubProfileYaml);
  WriteFile(g.keys() / "pypi.yaml", kPypiProfileYaml);
  std::string out, err;
  REQUIRE(Ctl(g.gateway(), {"profile", "set", "-f", g.keys() / "github.yaml"}, &out, &err) == 0);
  REQUIRE(Ctl(g.gateway(), {"profile", "set", "-f", g.keys() / "pypi.yaml"}, &out, &err) == 0);
  // Admit mode seeds nothing (its records are what it admitted), even with a driver that permits mutation.
  WriteFile(g.keys() / "seed.yaml", AdmitDriverPolicy());
  CHECK(Ctl(g.gateway(), {"interceptor", "seed", "old-1", "-f", g.keys() / "seed.yaml"}, &out, &err) == 1);
  CHECK_THAT(err, Catch::Contains("interceptor_mode_admit: "));
  auto admitted = [&](const std::string& id) {
    gw::GetSandboxRequest get;
    get.set_sandbox_id(id);
    gw::SandboxInfo info;
    return g.gateway().admin().GetSandbox(GatewayFixture::Context().get(), get, &info).ok();
  };

  // github's layer is outside the ceiling: the admission it composes with is refused before it commits.
  CheckDeny(g.Evaluate("CreateSandbox", false, CreateSandboxJson("b1", kBasePolicyJson, R"(["github"])")),
            "PERMISSION_DENIED", "exceeds_ceiling: ");
  CHECK_FALSE(admitted("b1"));
  // An unknown provider is refused before anything is admitted.
  CheckDeny(g.Evaluate("CreateSandbox", false, CreateSandboxJson("b2", kBasePolicyJson, R"(["nosuch"])")),
            "FAILED_PRECONDITION", "unknown_provider: provider 'nosuch'");
  CHECK_FALSE(admitted("b2"));
  int refused_admissions = 0, interceptions = 0;
  for (const auto& event : g.gateway().AuditEvents()) {
    if (event.type() == "refusal" && event.sandbox_id() == "b1") {
      CHECK(event.outcome() == "refused");
      CHECK_THAT(event.reason(), Catch::StartsWith("exceeds_ceiling: "));
      ++refused_admissions;
    }
    if (event.type() == "interception" && event.sandbox_id() == "b1") ++interceptions;
    CHECK_FALSE((event.sandbox_id() == "b1" && event.type() == "deletion"));
    CHECK_FALSE((event.sandbox_id() == "b2" && event.type() == "admission"));
  }
  CHECK(refused_admissions == 1);
  CHECK(interceptions == 1);

  // pypi's layer is inside: admitted, validated, recorded with its provider; attaching github is refused on
  // the composed candidate of the admitted body.
  const Struct create = FromProtoJson(CreateSandboxJson("b3", kBasePolicyJson, R"(["pypi"])"));
  const auto modified = g.Evaluate("CreateSandbox", false, create);
  REQUIRE(modified.allowed());
  CHECK(admitted("b3"));
  const Struct patched = ApplyPatches(create, modified.patches());
  REQUIRE(g.Evaluate("CreateSandbox", true, patched).allowed());
  CheckDeny(g.Evaluate("AttachSandboxProvider", true, R"({"sandboxName": "b3", "providerName": "github"})"),
            "PERMISSION_DENIED", "exceeds_ceiling: ");

  // The builtin policy changes: the re-projection is pushed, and upstream commits it after our validate
  // checked it composed with the recorded pypi layer.
  openshell::sandbox::v1::SandboxPolicy wider = base;
  wider.mutable_filesystem()->add_read_only("/lib");
  REQUIRE(g.gateway().SetPolicy("default", wider).ok());
  REQUIRE(Eventually([&] { return openshell.committed("b3").has_value(); }));
  CHECK(google::protobuf::util::MessageDifferencer::Equals(*openshell.committed("b3"), wider));
  CHECK(openshell.seen().size() == 1);

  // kill -9 while a push is pending upstream (our validate allowed it, upstream has not committed): the
  // push is not lost; the restarted gateway pushes it again.
  openshell.Hold(true);
  openshell::sandbox::v1::SandboxPolicy widest = wider;
  widest.mutable_filesystem()->add_read_only("/app");
  REQUIRE(g.gateway().SetPolicy("default", widest).ok());
  REQUIRE(Eventually([&] { return openshell.held() == 1; }));
  g.gateway().Kill9();
  openshell.Hold(false);  // the held call is dropped: upstream never committed it
  REQUIRE(Eventually([&] { return openshell.held() == 0; }));
  CHECK(google::protobuf::util::MessageDifferencer::Equals(*openshell.committed("b3"), wider));
  g.gateway().Start();
  REQUIRE(WaitForSocket(g.socket()));
  REQUIRE(Eventually([&] {
    auto committed = openshell.committed("b3");
    return committed.has_value() && google::protobuf::util::MessageDifferencer::Equals(*committed, widest);
  }));

  // The builtin driver permits mutation: a policy write is checked as in ceiling mode.
  CHECK(g.Evaluate("UpdateConfig", true, absl::StrCat(R"({"name": "b3", "policy": )", kBasePolicyJson, "}")).allowed());
  const std::string wide = BasePolicyWith("anything", R"({"name": "anything", "endpoints": [{"host": "*.example.com", "port": 443.0}], "binaries": [{"path": "/usr/bin/curl"}]})");
  CheckDeny(g.Evaluate("UpdateConfig", true, absl::StrCat(R"({"name": "b3", "policy": )", wide, "}")),
            "PERMISSION_DENIED", "exceeds_ceiling: ");
  CHECK(g.gateway().Stop() == 0);
}


// Hostile sandbox names and contexts (issue 28's limits): a name a record would be kept under, or that admit
// mode would admit, is refused as the request's error before anything is read, admitted or recorded; the
// reason and the audit event are bounded and escaped, never the name verbatim.
TEST_CASE("interceptor: NUL, control characters, huge names, subjects and labels are refused as invalid_request in "
          "both modes, and change nothing",
          "[interceptor][integration][admit][limits]") {
  const std::string huge(1 << 20, 'n');
  const std::vector<std::pair<std::string, std::string>> names = {
      {std::string("sb\0x", 4), "name: control characters are not allowed"},
      {"sb\nINFO forged log line", "name: control characters are not allowed"},
      // A right-to-left override: shown escaped, it would look like the six-character name "sb\u202e".
      {"sb\xe2\x80\xae", "name: C1 controls and bidirectional formatting characters are not allowed"},
      {huge, "name: 1048576 bytes, at most 256"},
      {std::string(257, 'a'), "name: 257 bytes, at most 256"},
  };
  auto create_payload = [](const std::string& name, const std::string& policy) {
    Struct payload = FromProtoJson(CreateSandboxJson("placeholder", policy));
    (*payload.mutable_fields())["name"].set_string_value(name);  // any bytes a JSON string can carry
    return payload;
  };
  auto check_bounded = [](const icv1::InterceptorResult& result) {
    CHECK(result.reason().size() < 1024);
    CHECK(result.reason().find('\0') == std::string::npos);
    CHECK(result.reason().find('\n') == std::string::npos);
  };

  SECTION("ceiling mode: CreateSandbox, UpdateConfig, providers and undo; no record is kept under such a name") {
    InterceptorGateway g(/*with_keys=*/true, /*with_ceiling=*/true);
    for (const auto& [name, reason] : names) {
      INFO("name of " << name.size() << " bytes");
      for (const bool validate : {false, true}) {
        const auto created = g.Evaluate("CreateSandbox", validate, create_payload(name, kBasePolicyJson));
        CheckDeny(created, "PERMISSION_DENIED", "invalid_request: " + reason);
        check_bounded(created);
      }
      Struct update = FromProtoJson(absl::StrCat(R"({"name": "x", "policy": )", kBasePolicyJson, "}"));
      (*update.mutable_fields())["name"].set_string_value(name);
      CheckDeny(g.Evaluate("UpdateConfig", true, update), "PERMISSION_DENIED", "invalid_request: " + reason);
      Struct attach = FromProtoJson(R"({"sandboxName": "x", "providerName": "github"})");
      (*attach.mutable_fields())["sandboxName"].set_string_value(name);
      const std::string attach_reason = "invalid_request: sandboxName" + reason.substr(4);
      CheckDeny(g.Evaluate("AttachSandboxProvider", true, attach), "PERMISSION_DENIED", attach_reason);
      CheckDeny(g.Evaluate("DetachSandboxProvider", true, attach), "PERMISSION_DENIED", attach_reason);
      Struct undo = FromProtoJson(R"({"name": "x", "chunkId": "c1"})");
      (*undo.mutable_fields())["name"].set_string_value(name);
      CheckDeny(g.Evaluate("UndoDraftChunk", true, undo), "PERMISSION_DENIED", "invalid_request: " + reason);
    }
    // A good name next to them is still decided as before, and recorded; the same request again is decoded
    // from the memo (the metric counts it).
    REQUIRE(g.Evaluate("CreateSandbox", true, FromProtoJson(CreateSandboxJson("build-7", kBasePolicyJson))).allowed());
    REQUIRE(g.Evaluate("CreateSandbox", true, FromProtoJson(CreateSandboxJson("build-7", kBasePolicyJson))).allowed());
    const std::string metrics = g.Metrics();
    // The composition and the record's encoding too: made the first time, kept the second.
    for (const char* memo : {"decoded", "composed", "record_encoded"}) {
      INFO(memo);
      const std::string hit_line = absl::StrCat("\npolicy_gateway_interceptor_memo_total{memo=\"", memo, "\",result=\"hit\"} ");
      const size_t at = metrics.find(hit_line);
      REQUIRE(at != std::string::npos);
      CHECK(std::stoull(metrics.substr(at + hit_line.size())) >= 1);
    }
    // The audit log holds one bounded, escaped event per Evaluate: no NUL, no line break, no megabyte.
    size_t interceptions = 0;
    for (const auto& event : g.gateway().AuditEvents()) {
      if (event.type() != "interception") continue;
      ++interceptions;
      CHECK(event.sandbox_id().size() <= 300);
      CHECK(event.sandbox_id().find('\0') == std::string::npos);
      CHECK(event.sandbox_id().find('\n') == std::string::npos);
      CHECK(event.reason().size() < 9000);
    }
    CHECK(interceptions == names.size() * 6 + 2);
    CHECK(g.gateway().Stop() == 0);
  }

  SECTION("admit mode: nothing is admitted under a bad name, subject or label") {
    InterceptorGateway g(/*with_keys=*/true, /*with_ceiling=*/true, {"--interceptor-mode", "admit"}, ProfileSigning::kSigned);
    const openshell::sandbox::v1::SandboxPolicy base = BaseSandboxPolicy();
    REQUIRE(g.gateway().SetPolicy("default", base).ok());
    for (const auto& [name, reason] : names) {
      INFO("name of " << name.size() << " bytes");
      const auto refused = g.Evaluate("CreateSandbox", false, create_payload(name, kBasePolicyJson));
      CheckDeny(refused, "PERMISSION_DENIED", "invalid_request: " + reason);
      check_bounded(refused);
    }
    const Struct good = FromProtoJson(CreateSandboxJson("build-7", kBasePolicyJson));
    CheckDeny(g.Evaluate("CreateSandbox", false, good, std::string("alice\0@example.com", 18)), "PERMISSION_DENIED",
              "invalid_request: the principal's subject: control characters are not allowed");
    CheckDeny(g.Evaluate("CreateSandbox", false, good, std::string(2000, 's')), "PERMISSION_DENIED",
              "invalid_request: the principal's subject: 2000 bytes, at most 1024");
    {
      Struct labelled = good;
      (*(*labelled.mutable_fields())["labels"].mutable_struct_value()->mutable_fields())["team"].set_string_value(
          "platform\n");
      CheckDeny(g.Evaluate("CreateSandbox", false, labelled), "PERMISSION_DENIED",
                "invalid_request: labels[\"team\"]: control characters are not allowed");
      Struct many = good;
      auto& labels = *(*many.mutable_fields())["labels"].mutable_struct_value()->mutable_fields();
      for (int i = 0; i < 65; ++i) labels[absl::StrCat("k", i)].set_string_value("v");
      CheckDeny(g.Evaluate("CreateSandbox", false, many), "PERMISSION_DENIED",
                "invalid_request: labels: 66 entries, at most 64");
      // Review finding (helper 81): a label tenant_id became the context's tenant, and chose the builtin
      // driver's tenant:<id> scope — another tenant's policy, signed for this sandbox.
      Struct tenant = good;
      (*(*tenant.mutable_fields())["labels"].mutable_struct_value()->mutable_fields())["tenant_id"].set_string_value("b");
      CheckDeny(g.Evaluate("CreateSandbox", false, tenant), "PERMISSION_DENIED",
                "invalid_request: labels[\"tenant_id\"]: reserved");
    }
    // Nothing was admitted, and none of it was logged as an error (the caller's input, not the gateway's fault).
    gw::ListSandboxesResponse listed;
    REQUIRE(g.gateway().admin().ListSandboxes(GatewayFixture::Context().get(), gw::ListSandboxesRequest(), &listed).ok());
    CHECK(listed.sandboxes_size() == 0);
    CHECK_THAT(g.gateway().log(), !Catch::Contains("admission failed"));
    // The good request is admitted.
    const auto admitted = g.Evaluate("CreateSandbox", false, good);
    INFO(admitted.reason());
    CHECK(admitted.allowed());
    CHECK(g.gateway().Stop() == 0);
  }
}


namespace {

// A CreateSandbox modify phase of `name` (the base policy) by alice, sent on a thread of its own with a 20 s
// deadline. The request is built here: FromProtoJson asserts, and Catch's assertions are not thread-safe
// (made on the other thread, they corrupted the heap now and then).
std::future<std::pair<grpc::Status, icv1::InterceptorResult>> CreateInBackground(InterceptorGateway& g,
                                                                                const std::string& authorization,
                                                                                const std::string& name) {
  icv1::InterceptorEvaluation evaluation = InterceptorGateway::EvaluationOf(
      "CreateSandbox", /*validate=*/false, FromProtoJson(CreateSandboxJson(name, kBasePolicyJson)));
  return std::async(std::launch::async, [&g, authorization, evaluation = std::move(evaluation)] {
    icv1::InterceptorResult result;
    auto context = g.Context(authorization);
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    const grpc::Status status = g.stub().Evaluate(context.get(), evaluation, &result);
    return std::make_pair(status, result);
  });
}

}  // namespace

TEST_CASE("interceptor: admit mode's admissions hold no worker while they wait on the driver: 12 creates wait at "
          "once",
          "[interceptor][integration][admit][limits]") {
  // A driver that answers GetProjection only once 12 calls wait at once (else, after 8 s, UNAVAILABLE). The
  // interceptor has 4 workers: a gateway that held one per create while its admission waited could never
  // get there. Its projection: the base policy, signed by the trust store's authority.
  TempDir driver_dir;
  std::unique_ptr<DriverProcess> driver;
  InterceptorGateway g(/*with_keys=*/true, /*with_ceiling=*/true, {}, ProfileSigning::kNone, /*unix_socket=*/true,
                       [&](const TempDir& keys) {
                         openshell::policy::driver::v1::GetProjectionResponse response;
                         auto* p = response.mutable_projection();
                         const openshell::sandbox::v1::SandboxPolicy base = BaseSandboxPolicy();
                         p->set_surface_id("openshell.sandbox.v1");
                         p->set_body(osh::policy::SerializeDeterministic(base));
                         p->set_policy_digest(osh::policy::Sha256Hex(p->body()));
                         p->set_policy_version(1);
                         auto authority = osh::trust::PrivateKey::FromPem(ReadFile(keys / "authority.key"));
                         REQUIRE(authority.ok());
                         auto signature = authority->Sign(osh::trust::SignedBytes(*p));
                         REQUIRE(signature.ok());
                         p->set_signature(*signature);
                         p->set_signing_key_id("authority");
                         std::string json;
                         REQUIRE(google::protobuf::util::MessageToJsonString(response, &json).ok());
                         WriteFile(driver_dir / "response.json", json);
                         driver = std::make_unique<DriverProcess>(
                             driver_dir, "fake",
                             std::vector<std::string>{OSH_FAKE_DRIVER_BINARY, "--response-file",
                                                      driver_dir / "response.json", "--gather", "12",
                                                      "--gather-timeout-ms", "8000"});
                         driver->Start();
                         return std::vector<std::string>{"--driver-socket", driver->socket(), "--interceptor-mode",
                                                         "admit"};
                       });
  const std::string authorization = "Bearer " + Mint(g.key(), Claims(ClaimsSpec(), std::time(nullptr)));
  std::vector<std::future<std::pair<grpc::Status, icv1::InterceptorResult>>> creates;
  auto create = [&](int i) { creates.push_back(CreateInBackground(g, authorization, absl::StrCat("w-", i))); };
  for (int i = 0; i < 11; ++i) create(i);
  REQUIRE(Eventually([&] { return absl::StrContains(driver->log(), "gather: 11 of 12 waiting"); }));
  // While 11 admissions wait, the workers are free: more validates than there are workers are answered.
  for (int i = 0; i < 6; ++i) {
    CheckDeny(g.Evaluate("CreateSandbox", true, CreateSandboxJson(absl::StrCat("other-", i), kBasePolicyJson)),
              "FAILED_PRECONDITION", "unknown_sandbox: sandbox 'other-");
  }
  create(11);
  int allowed = 0;
  for (auto& create : creates) {
    const auto [status, result] = create.get();
    INFO(status.error_message() << " " << result.reason());
    CHECK(status.ok());
    CHECK(result.allowed());
    CHECK(result.patches_size() == 2);
    allowed += status.ok() && result.allowed() ? 1 : 0;
  }
  CHECK(allowed == 12);
  // Each one admitted, and its modify phase audited once, with its admission.
  gw::ListSandboxesResponse listed;
  REQUIRE(g.gateway().admin().ListSandboxes(GatewayFixture::Context().get(), gw::ListSandboxesRequest(), &listed).ok());
  CHECK(listed.sandboxes_size() == 12);
  int interceptions = 0;
  for (const auto& event : g.gateway().AuditEvents()) {
    if (event.type() == "interception" && absl::StartsWith(event.sandbox_id(), "w-")) {
      CHECK(event.outcome() == "ok");
      ++interceptions;
    }
  }
  CHECK(interceptions == 12);
}

TEST_CASE("interceptor: admit mode's admissions waiting on a slow driver take at most max_interceptor_admissions "
          "places: one more create is refused at once, other calls are still decided",
          "[interceptor][integration][admit][limits]") {
  // Review finding (helper 86): one bound (2048) counted every Evaluate under way, so creates waiting on a
  // slow driver could take every place and validates were refused. A driver that answers GetProjection only
  // once 10 calls wait (never here: the gateway's 5 s driver deadline ends each first); at most 3 admissions at
  // once.
  TempDir driver_dir;
  std::unique_ptr<DriverProcess> driver;
  InterceptorGateway g(/*with_keys=*/true, /*with_ceiling=*/true, {}, ProfileSigning::kNone, /*unix_socket=*/true,
                       [&](const TempDir&) {
                         WriteFile(driver_dir / "response.json", "{}");
                         driver = std::make_unique<DriverProcess>(
                             driver_dir, "fake",
                             std::vector<std::string>{OSH_FAKE_DRIVER_BINARY, "--response-file",
                                                      driver_dir / "response.json", "--gather", "10",
                                                      "--gather-timeout-ms", "8000"});
                         driver->Start();
                         return std::vector<std::string>{"--driver-socket", driver->socket(), "--interceptor-mode",
                                                         "admit", "--max-interceptor-admissions", "3"};
                       });
  const std::string authorization = "Bearer " + Mint(g.key(), Claims(ClaimsSpec(), std::time(nullptr)));
  std::vector<std::future<std::pair<grpc::Status, icv1::InterceptorResult>>> creates;
  for (int i = 0; i < 3; ++i) creates.push_back(CreateInBackground(g, authorization, absl::StrCat("slow-", i)));
  REQUIRE(Eventually([&] { return absl::StrContains(driver->log(), "gather: 3 of 10 waiting"); }));
  // A fourth create: refused at once, nothing sent to the driver.
  const icv1::InterceptorEvaluation fourth = InterceptorGateway::EvaluationOf(
      "CreateSandbox", /*validate=*/false, FromProtoJson(CreateSandboxJson("slow-3", kBasePolicyJson)));
  icv1::InterceptorResult refused;
  const grpc::Status overloaded = g.stub().Evaluate(g.Context(authorization).get(), fourth, &refused);
  CHECK(overloaded.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
  CHECK_THAT(overloaded.error_message(),
             Catch::Contains("interceptor_overloaded: 3 creates are being decided or admitted already"));
  // Other calls are still decided meanwhile.
  CheckDeny(g.Evaluate("CreateSandbox", true, CreateSandboxJson("other", kBasePolicyJson)), "FAILED_PRECONDITION",
            "unknown_sandbox: sandbox 'other");
  CHECK_FALSE(absl::StrContains(driver->log(), "gather: 4 of 10"));
  // The three are answered when the driver gives up on them (denied: it is unavailable), and their places
  // come back: a create afterwards reaches the driver again.
  for (auto& create : creates) {
    const auto [status, result] = create.get();
    INFO(status.error_message() << " " << result.reason());
    CHECK(status.ok());
    CHECK_FALSE(result.allowed());
  }
  icv1::InterceptorResult later;
  auto context = g.Context(authorization);
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  const grpc::Status again = g.stub().Evaluate(context.get(), fourth, &later);
  INFO(again.error_message() << " " << later.reason());
  CHECK(again.ok());
  CHECK_FALSE(later.allowed());  // it reached the driver, which never answered it
  const std::string driver_log = driver->log();
  size_t reached = 0;
  for (size_t at = driver_log.find(" of 10 waiting"); at != std::string::npos;
       at = driver_log.find(" of 10 waiting", at + 1)) {
    ++reached;
  }
  CHECK(reached == 4);  // the three, then this one: its place came back
  const std::string metrics = g.Metrics();
  INFO(metrics);
  CHECK_THAT(metrics, Catch::Contains("\npolicy_gateway_interceptor_calls_total{method=\"CreateSandbox\",phase=\"modify_operation\","
                                      "decision=\"admissions_full\"} 1\n"));
  // policyctl status counts it apart.
  std::string out, err;
  REQUIRE(Ctl(g.gateway(), {"status"}, &out, &err) == 0);
  CHECK_THAT(out, Catch::Contains("not decided: 0 overloaded, 1 with max_interceptor_admissions reached, 0 expired"));
}

TEST_CASE("interceptor: admit mode's push over a Unix socket reaches no process of another user, nor its token",
          "[interceptor][integration][admit][hostile]") {
  if (::geteuid() != 0) {
    WARN("skipped: running an impostor as another user needs root");
    return;
  }
  // The OpenShell gateway's socket folder lets another user (nobody) bind the path, and a process of that
  // user does. Before the fix the push's channel connected to it and sent the bearer token (the impostor, a
  // gRPC server of another service, answered UNIMPLEMENTED, logged as a refusal).
  TempDir os_dir;
  REQUIRE(::chmod(os_dir.path().c_str(), 0777) == 0);
  const std::string os_socket = os_dir / "openshell.sock";
  WriteFile(os_dir / "push-token", "push-token-123\n");
  WriteFile(os_dir / "response.json", "{}");
  REQUIRE(::chmod((os_dir / "response.json").c_str(), 0644) == 0);
  Process impostor({"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", OSH_FAKE_DRIVER_BINARY,
                    "--socket", os_socket, "--response-file", os_dir / "response.json"},
                   os_dir / "impostor.log");
  REQUIRE(Eventually([&] { return absl::StrContains(ReadFile(os_dir / "impostor.log"), "serving on"); }));
  InterceptorGateway g(/*with_keys=*/true, /*with_ceiling=*/true,
                       {"--interceptor-mode", "admit", "--interceptor-openshell-endpoint", "unix://" + os_socket,
                        "--interceptor-openshell-token-file", os_dir / "push-token"},
                       ProfileSigning::kSigned);
  const openshell::sandbox::v1::SandboxPolicy base = BaseSandboxPolicy();
  REQUIRE(g.gateway().SetPolicy("default", base).ok());
  // A sandbox created through the interceptor (its record written at validate), then its policy changed:
  // a push is due.
  const Struct create = FromProtoJson(CreateSandboxJson("p1", kBasePolicyJson));
  const auto modified = g.Evaluate("CreateSandbox", false, create);
  REQUIRE(modified.allowed());
  REQUIRE(g.Evaluate("CreateSandbox", true, ApplyPatches(create, modified.patches())).allowed());
  openshell::sandbox::v1::SandboxPolicy changed = base;
  changed.mutable_filesystem()->add_read_only("/lib");
  REQUIRE(g.gateway().SetPolicy("default", changed).ok());
  CHECK(Eventually([&] {
    const std::string log = g.gateway().log();
    return absl::StrContains(log, "interceptor push: sandbox p1: UpdateConfig: UNAVAILABLE the OpenShell gateway's "
                                  "socket") &&
           absl::StrContains(log, "as uid 65534, neither root");
  }));
  CHECK_FALSE(absl::StrContains(g.gateway().log(), "UNIMPLEMENTED"));  // nothing was ever called on it
}

// Admit mode beside a second replica (issue 28's limits): an admission made on A reaches B through the
// replica feed, so a validate or a retried create that reaches B (the OpenShell gateway reconnected to
// another replica between its phases) is decided on A's admission, never admitted twice.
TEST_CASE("interceptor: admit mode on two replicas of one PostgreSQL database: admitted on A, validated and reused "
          "on B",
          "[interceptor][integration][admit][postgres][replicas]") {
  const std::string url = PgCluster::Shared().CreateDatabase();
  const std::vector<std::string> args = {"--database", url, "--interceptor-mode", "admit"};
  InterceptorGateway a(/*with_keys=*/true, /*with_ceiling=*/false, args, ProfileSigning::kNoTrustStore);
  InterceptorGateway b(/*with_keys=*/true, /*with_ceiling=*/false, args, ProfileSigning::kNoTrustStore);
  const openshell::sandbox::v1::SandboxPolicy base = BaseSandboxPolicy();
  REQUIRE(a.gateway().SetPolicy("default", base).ok());

  const Struct create = FromProtoJson(CreateSandboxJson("build-7", kBasePolicyJson));
  const auto modified = a.Evaluate("CreateSandbox", false, create);
  INFO(modified.reason());
  REQUIRE(modified.allowed());
  REQUIRE(modified.patches_size() == 2);
  const std::string digest =
      modified.patches(1).value().struct_value().fields().at("policy-gateway/policy-digest").string_value();
  const Struct patched = ApplyPatches(create, modified.patches());

  // B holds A's admission as soon as its feed has applied it; until then a validate there is refused
  // (unknown_sandbox: fail closed, never allowed on a guess).
  icv1::InterceptorResult on_b;
  CHECK(Eventually([&] {
    on_b = b.Evaluate("CreateSandbox", true, patched);
    if (!on_b.allowed()) CHECK(absl::StartsWith(on_b.reason(), "unknown_sandbox: "));
    return on_b.allowed();
  }));
  // A create retried through B reuses A's admission: same body, same digest, one admission in the log.
  const auto retried = b.Evaluate("CreateSandbox", false, create);
  INFO(retried.reason());
  REQUIRE(retried.allowed());
  CHECK(retried.patches(1).value().struct_value().fields().at("policy-gateway/policy-digest").string_value() == digest);
  CHECK(PolicyOfJson(retried.patches(0).value()).SerializeAsString() ==
        PolicyOfJson(modified.patches(0).value()).SerializeAsString());
  CheckDeny(b.Evaluate("CreateSandbox", false, create, "mallory@example.com"), "FAILED_PRECONDITION",
            "already_admitted: ");
  int admissions = 0;
  for (const auto& event : b.gateway().AuditEvents()) {
    if (event.type() == "admission" && event.sandbox_id() == "build-7" && event.outcome() == "ok") ++admissions;
  }
  CHECK(admissions == 1);
  // The admitted body written back through B (as the push does) is allowed there; another body is not.
  // (The patched request is kept: a reference into a temporary dangled here, so the write-back carried no
  // policy at all and was allowed as a request without one — review 99's mend, which refuses such a request,
  // showed it.)
  const Struct written = ApplyPatches(create, modified.patches());
  const Value& body = written.fields().at("spec").struct_value().fields().at("policy");
  REQUIRE(body.has_struct_value());
  Struct update;
  (*update.mutable_fields())["name"].set_string_value("build-7");
  (*update.mutable_fields())["policy"] = body;
  const auto written_back = b.Evaluate("UpdateConfig", true, update);
  INFO(written_back.reason());
  CHECK(written_back.allowed());
  CHECK(a.gateway().Stop() == 0);
  CHECK(b.gateway().Stop() == 0);
}


TEST_CASE("interceptor: admit mode on two replicas: a create retried on B before B's feed brought A's admission is "
          "refused with try again, then reused",
          "[interceptor][integration][admit][postgres][replicas]") {
  const std::string url = PgCluster::Shared().CreateDatabase();
  const std::vector<std::string> args = {"--database", url, "--interceptor-mode", "admit"};
  InterceptorGateway a(/*with_keys=*/true, /*with_ceiling=*/false, args, ProfileSigning::kNoTrustStore);
  const openshell::sandbox::v1::SandboxPolicy base = BaseSandboxPolicy();
  REQUIRE(a.gateway().SetPolicy("default", base).ok());  // before B starts: B loads it, no feed needed
  InterceptorGateway b(/*with_keys=*/true, /*with_ceiling=*/false, args, ProfileSigning::kNoTrustStore);
  // B's feed stalls: each of its rounds first records its position in B's row, held here, then reads.
  const std::string b_id = b.gateway().Status().replica_id();
  HeldRows held(url, absl::StrCat("SELECT id FROM replicas WHERE id = '", b_id, "' FOR UPDATE"));
  // Until B's feed is seen waiting there: it reads nothing more while held. The stall holds B's feed
  // connection only, never B's writes (a write holds off the feed while it commits, not the reverse).
  CHECK(Eventually([&] { return WaitingOnLock(url, "UPDATE replicas SET feed_seq") == 1; }));

  const Struct create = FromProtoJson(CreateSandboxJson("build-7", kBasePolicyJson));
  const auto modified = a.Evaluate("CreateSandbox", false, create);
  INFO(modified.reason());
  REQUIRE(modified.allowed());
  const std::string digest =
      modified.patches(1).value().struct_value().fields().at("policy-gateway/policy-digest").string_value();
  // B's store refuses a second admission, and B's view does not hold the first yet: fail closed, say why.
  const auto early = b.Evaluate("CreateSandbox", false, create);
  CheckDeny(early, "FAILED_PRECONDITION", "already_admitted: ");
  CHECK_THAT(early.reason(), Catch::Contains("by another replica of this gateway, and not yet seen here; try again"));

  held.Release();
  icv1::InterceptorResult retried;
  CHECK(Eventually([&] {
    retried = b.Evaluate("CreateSandbox", false, create);
    return retried.allowed();
  }));
  INFO(retried.reason());
  REQUIRE(retried.allowed());
  CHECK(retried.patches(1).value().struct_value().fields().at("policy-gateway/policy-digest").string_value() == digest);
  int admissions = 0;
  for (const auto& event : b.gateway().AuditEvents()) {
    if (event.type() == "admission" && event.sandbox_id() == "build-7" && event.outcome() == "ok") ++admissions;
  }
  CHECK(admissions == 1);
  CHECK(a.gateway().Stop() == 0);
  CHECK(b.gateway().Stop() == 0);
}

// Profiles signed elsewhere (issue 28's limits): an authority signs a profile offline with `policyctl
// profile sign`; a gateway with a trust store and no signing key of its own (a third-party driver) sets it
// as it is, serves it and composes it; a changed, partly signed or foreign-signed file is refused.
TEST_CASE("provider profiles: a profile an authority signed offline is set, kept as signed, served and composed, and a "
          "changed or foreign-signed one is refused",
          "[interceptor][integration][provider_profiles]") {
  InterceptorGateway g;  // a trust store holding the authority's key, a ceiling, no signing key of its own
  const std::string token = "Bearer " + Mint(g.key(), Claims(ClaimsSpec(), std::time(nullptr)));
  WriteFile(g.keys() / "pypi.yaml", kPypiProfileYaml);
  std::string out, err;
  // Offline, with the authority's key.
  REQUIRE(CtlOffline({"profile", "sign", "-f", g.keys() / "pypi.yaml", "--key", g.keys() / "authority.key", "--out",
                      g.keys() / "pypi.signed.yaml"},
                     &out, &err) == 0);
  auto authority = osh::trust::PrivateKey::FromPem(ReadFile(g.keys() / "authority.key"));
  REQUIRE(authority.ok());
  auto authority_public = osh::trust::PublicKey::FromPem(authority->PublicKeyPem());
  REQUIRE(authority_public.ok());
  const std::string kid = osh::gateway::GovernanceKid(*authority_public);
  CHECK_THAT(out, Catch::Contains("signed with kid " + kid));
  CHECK(CtlOffline({"profile", "sign", "-f", g.keys() / "pypi.signed.yaml", "--key", g.keys() / "authority.key",
                    "--out", g.keys() / "twice.yaml"},
                   &out, &err) == 2);
  CHECK_THAT(err, Catch::Contains("signed already"));

  // Set as it is: the authority's signature is kept, audited as imported, and served.
  REQUIRE(Ctl(g.gateway(), {"profile", "set", "-f", g.keys() / "pypi.signed.yaml", "-o", "json"}, &out, &err) == 0);
  gw::ProviderProfileInfo info;
  REQUIRE(google::protobuf::util::JsonStringToMessage(out, &info).ok());
  CHECK(info.signature_kid() == kid);
  icv1::ProviderProfileSnapshot snapshot;
  REQUIRE(g.stub().SnapshotProviderProfiles(g.Context(token).get(), {}, &snapshot).ok());
  REQUIRE(snapshot.profiles_size() == 1);
  CHECK(snapshot.profiles(0).annotations().at("openshell.nvidia.com/profile-signature-kid") == kid);
  CHECK(*osh::gateway::GovernanceProfileHash(snapshot.profiles(0)) ==
        snapshot.profiles(0).annotations().at("openshell.nvidia.com/profile-hash"));
  bool imported = false;
  for (const auto& event : g.gateway().AuditEvents()) {
    if (event.audit_context().count("provider_profile") && event.audit_context().at("provider_profile") == "pypi") {
      imported = event.audit_context().count("profile_signed") && event.audit_context().at("profile_signed") == "imported";
    }
  }
  CHECK(imported);
  // Composed into a candidate, inside the ceiling.
  const auto composed = g.Evaluate("CreateSandbox", true, CreateSandboxJson("build-9", kBasePolicyJson, R"(["pypi"])"));
  INFO(composed.reason());
  CHECK(composed.allowed());

  // Changed after signing: the signed hash no longer matches.
  std::string signed_text = ReadFile(g.keys() / "pypi.signed.yaml");
  std::string changed = signed_text;
  changed.replace(changed.find("host: pypi.org"), 14, "host: evil.example.com");
  WriteFile(g.keys() / "changed.yaml", changed);
  CHECK(Ctl(g.gateway(), {"profile", "set", "-f", g.keys() / "changed.yaml"}, &out, &err) != 0);
  CHECK_THAT(err, Catch::Contains("invalid_profile: annotations.openshell.nvidia.com/profile-hash: the signed hash is"));
  // A stated hash of 200 KB: refused, and not echoed back whole.
  {
    std::string huge;
    for (const auto& line : absl::StrSplit(signed_text, '\n')) {
      if (absl::StrContains(line, "profile-hash:")) {
        const absl::string_view l(line);
        absl::StrAppend(&huge, l.substr(0, l.find("profile-hash:") + 13), " \"", std::string(200000, 'A'), "\"\n");
      } else {
        absl::StrAppend(&huge, line, "\n");
      }
    }
    WriteFile(g.keys() / "huge-hash.yaml", huge);
    CHECK(Ctl(g.gateway(), {"profile", "set", "-f", g.keys() / "huge-hash.yaml"}, &out, &err) != 0);
    CHECK_THAT(err, Catch::Contains("the signed hash is"));
    CHECK(err.size() < 2048);
  }
  // Part of a signature: refused locally, naming the line.
  std::string partial;
  for (const auto& line : absl::StrSplit(signed_text, '\n')) {
    if (!absl::StrContains(line, "profile-signature-kid")) absl::StrAppend(&partial, line, "\n");
  }
  WriteFile(g.keys() / "partial.yaml", partial);
  CHECK(Ctl(g.gateway(), {"profile", "set", "-f", g.keys() / "partial.yaml"}, &out, &err) == 2);
  CHECK_THAT(err, Catch::Contains("partial.yaml:") && Catch::Contains("invalid_profile: annotations.openshell.nvidia.com/profile-") &&
                      Catch::Contains("together"));
  // Signed by a key the trust store does not hold.
  auto stranger = osh::trust::PrivateKey::Generate("ed25519");
  REQUIRE(stranger.ok());
  WriteFile(g.keys() / "stranger.key", stranger->ToPem());
  REQUIRE(CtlOffline({"profile", "sign", "-f", g.keys() / "pypi.yaml", "--key", g.keys() / "stranger.key", "--out",
                      g.keys() / "foreign.yaml"},
                     &out, &err) == 0);
  CHECK(Ctl(g.gateway(), {"profile", "set", "-f", g.keys() / "foreign.yaml"}, &out, &err) == 1);
  CHECK_THAT(err, Catch::Contains("profile_signature_untrusted: "));
  // What is stored is still the authority's profile.
  REQUIRE(Ctl(g.gateway(), {"profile", "get", "pypi", "-o", "json"}, &out, &err) == 0);
  REQUIRE(google::protobuf::util::JsonStringToMessage(out, &info).ok());
  CHECK(info.signature_kid() == kid);
  CHECK(info.profile().endpoints(0).host() == "pypi.org");
  // What `profile get` prints sets again as it is, signature and all.
  REQUIRE(Ctl(g.gateway(), {"profile", "get", "pypi"}, &out, &err) == 0);
  WriteFile(g.keys() / "got.yaml", out);
  REQUIRE(Ctl(g.gateway(), {"profile", "set", "-f", g.keys() / "got.yaml", "-o", "json"}, &out, &err) == 0);
  REQUIRE(google::protobuf::util::JsonStringToMessage(out, &info).ok());
  CHECK(info.signature_kid() == kid);
  CHECK(g.gateway().Stop() == 0);

  // Without a trust store a handed-in signature cannot be verified: it is not kept (nor served).
  InterceptorGateway bare(true, false, {}, ProfileSigning::kNoTrustStore);
  REQUIRE(CtlOffline({"profile", "sign", "-f", g.keys() / "pypi.yaml", "--key", g.keys() / "stranger.key", "--out",
                      g.keys() / "foreign-json.yaml", "-o", "json"},
                     &out, &err) == 0);
  google::protobuf::Struct summary;
  REQUIRE(google::protobuf::util::JsonStringToMessage(out, &summary).ok());
  CHECK(summary.fields().at("id").string_value() == "pypi");
  REQUIRE(Ctl(bare.gateway(), {"profile", "set", "-f", g.keys() / "foreign-json.yaml", "-o", "json"}, &out, &err) == 0);
  REQUIRE(google::protobuf::util::JsonStringToMessage(out, &info).ok());
  CHECK(info.signature_kid().empty());
  CHECK(info.profile().annotations().count("openshell.nvidia.com/profile-signature") == 0);
  CHECK(bare.gateway().Stop() == 0);
}

}  // namespace osh::test::interceptor_test
