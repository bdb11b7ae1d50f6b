#include "gateway/core/interceptor_token.h"

#include <rhonabwy.h>

#include <fstream>
#include <mutex>
#include <sstream>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "trust/keys.h"
#include "trust/secure_path.h"

namespace osh::gateway {

struct InterceptorTokenVerifier::Keys {
  jwks_t* jwks = nullptr;
  ~Keys() { r_jwks_free(jwks); }
};

namespace {

void InterceptorTokenGlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] { r_global_init(); });
}

// A jwk_t owned for one scope.
struct InterceptorJwk {
  jwk_t* jwk = nullptr;
  ~InterceptorJwk() { r_jwk_free(jwk); }
};
struct InterceptorJwt {
  jwt_t* jwt = nullptr;
  ~InterceptorJwt() { r_jwt_free(jwt); }
};

// An Ed25519 public key: OKP, crv Ed25519, no private part.
bool InterceptorIsEd25519PublicKey(jwk_t* jwk) {
  unsigned int bits = 0;
  const int type = r_jwk_key_type(jwk, &bits, 0);
  const char* crv = r_jwk_get_property_str(jwk, "crv");
  return (type & R_KEY_TYPE_EDDSA) && (type & R_KEY_TYPE_PUBLIC) && crv != nullptr && std::string(crv) == "Ed25519";
}

// Why the key's raw 32 bytes ("x", base64url without padding, in its one encoding) cannot be trusted, or ""
// when they can: a small-order point or a non-canonical y lets anyone forge a token (trust::WeakEd25519Key,
// the check the trust store and the log's note keys make).
std::string InterceptorWeakKey(jwk_t* jwk) {
  const char* x = r_jwk_get_property_str(jwk, "x");
  std::string raw;
  if (x == nullptr || !absl::WebSafeBase64Unescape(x, &raw) || raw.size() != 32 || absl::WebSafeBase64Escape(raw) != x) {
    return "its x is not 32 bytes in base64url without padding";
  }
  const std::string weak = trust::WeakEd25519Key(reinterpret_cast<const unsigned char*>(raw.data()));
  return weak.empty() ? "" : absl::StrCat("its x is ", weak);
}

absl::Status InterceptorUnauthenticated(absl::string_view step, absl::string_view detail) {
  return absl::UnauthenticatedError(absl::StrCat(step, ": ", detail));
}

}  // namespace

InterceptorTokenVerifier::InterceptorTokenVerifier(std::unique_ptr<Keys> keys, bool pem, Options options,
                                                   std::string summary)
    : keys_(std::move(keys)), pem_(pem), options_(std::move(options)), summary_(std::move(summary)) {}

InterceptorTokenVerifier::~InterceptorTokenVerifier() = default;

absl::StatusOr<std::unique_ptr<InterceptorTokenVerifier>> InterceptorTokenVerifier::Load(const std::string& keys_path,
                                                                                         Options options) {
  // The keys decide whose tokens are accepted: no one else may replace the file (review 106).
  auto text = trust::ReadFileNoOneElseCanWrite(keys_path, "interceptor_gateway_keys");
  if (!text.ok()) return absl::InvalidArgumentError(std::string(text.status().message()));
  return FromText(*text, keys_path, std::move(options));
}

absl::StatusOr<std::unique_ptr<InterceptorTokenVerifier>> InterceptorTokenVerifier::FromText(const std::string& text,
                                                                                             const std::string& name,
                                                                                             Options options) {
  InterceptorTokenGlobalInit();
  auto keys = std::make_unique<Keys>();
  if (r_jwks_init(&keys->jwks) != RHN_OK) return absl::InternalError("librhonabwy: cannot make a key set");
  const bool pem = absl::StrContains(text, "-----BEGIN");
  std::string summary;
  if (pem) {
    InterceptorJwk key;
    if (r_jwk_init(&key.jwk) != RHN_OK ||
        r_jwk_import_from_pem_der(key.jwk, R_X509_TYPE_PUBKEY, R_FORMAT_PEM,
                                  reinterpret_cast<const unsigned char*>(text.data()), text.size()) != RHN_OK) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": not a PEM public key (SPKI)"));
    }
    if (!InterceptorIsEd25519PublicKey(key.jwk)) return absl::InvalidArgumentError(absl::StrCat(name, ": not an Ed25519 public key"));
    if (std::string weak = InterceptorWeakKey(key.jwk); !weak.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": the Ed25519 public key is refused: ", weak));
    }
    if (r_jwks_append_jwk(keys->jwks, key.jwk) != RHN_OK) return absl::InternalError("librhonabwy: cannot keep the key");
    summary = "an Ed25519 public key (PEM: any kid)";
  } else {
    if (r_jwks_import_from_json_str(keys->jwks, text.c_str()) != RHN_OK) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": neither a PEM public key nor a JWKS ({\"keys\":[...]}) whose every key is valid"));
    }
    const size_t n = r_jwks_size(keys->jwks);
    if (n == 0) return absl::InvalidArgumentError(absl::StrCat(name, ": the JWKS holds no key"));
    std::vector<std::string> kids;
    for (size_t i = 0; i < n; ++i) {
      InterceptorJwk key{r_jwks_get_at(keys->jwks, i)};
      const char* kid = r_jwk_get_property_str(key.jwk, "kid");
      if (!InterceptorIsEd25519PublicKey(key.jwk)) {
        return absl::InvalidArgumentError(absl::StrCat(name, ": key ", i, " is not an Ed25519 public key (OKP, crv Ed25519)"));
      }
      if (std::string weak = InterceptorWeakKey(key.jwk); !weak.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(name, ": key ", i, " is refused: ", weak));
      }
      if (kid == nullptr || *kid == '\0') return absl::InvalidArgumentError(absl::StrCat(name, ": key ", i, " has no kid"));
      kids.emplace_back(kid);
    }
    summary = absl::StrCat("a JWKS of ", n, " Ed25519 key(s): ", absl::StrJoin(kids, ", "));
  }
  return std::unique_ptr<InterceptorTokenVerifier>(
      new InterceptorTokenVerifier(std::move(keys), pem, std::move(options), std::move(summary)));
}

absl::Status InterceptorTokenVerifier::Verify(absl::string_view authorization, int64_t now_unix) const {
  constexpr absl::string_view kScheme = "Bearer ";
  if (authorization.empty()) return InterceptorUnauthenticated("authorization", "no bearer token");
  if (!absl::StartsWithIgnoreCase(authorization, kScheme)) {
    return InterceptorUnauthenticated("authorization", "not a Bearer token");
  }
  const std::string token(authorization.substr(kScheme.size()));
  {
    absl::MutexLock lock(&accepted_mu_);
    if (auto it = accepted_.find(token); it != accepted_.end()) {
      if (it->second + kExtensionTokenSkewSeconds <= now_unix) return InterceptorUnauthenticated("exp", "expired");
      return absl::OkStatus();
    }
  }
  int64_t exp = 0;
  if (absl::Status verified = VerifyToken(token, now_unix, &exp); !verified.ok()) return verified;
  absl::MutexLock lock(&accepted_mu_);
  if (accepted_.size() >= kAcceptedTokens) {
    absl::erase_if(accepted_, [&](const auto& kept) { return kept.second + kExtensionTokenSkewSeconds <= now_unix; });
    if (accepted_.size() >= kAcceptedTokens) accepted_.clear();
  }
  accepted_.emplace(token, exp);
  return absl::OkStatus();
}

absl::Status InterceptorTokenVerifier::VerifyToken(const std::string& token, int64_t now_unix, int64_t* exp_out) const {
  InterceptorJwt jwt;
  if (r_jwt_init(&jwt.jwt) != RHN_OK) return absl::InternalError("librhonabwy: cannot make a token");
  // No key from the token itself (jwk, jku, x5c, x5u) and no unsigned token.
  if (r_jwt_advanced_parsen(jwt.jwt, token.data(), token.size(), R_PARSE_NONE, 0) != RHN_OK ||
      r_jwt_get_type(jwt.jwt) != R_JWT_TYPE_SIGN) {
    return InterceptorUnauthenticated("token", "not a signed compact JWT");
  }
  const char* alg = r_jwt_get_header_str_value(jwt.jwt, "alg");
  if (alg == nullptr || std::string(alg) != "EdDSA" || r_jwt_get_sign_alg(jwt.jwt) != R_JWA_ALG_EDDSA) {
    return InterceptorUnauthenticated("alg", "must be EdDSA");
  }
  const char* typ = r_jwt_get_header_str_value(jwt.jwt, "typ");
  if (typ == nullptr || std::string(typ) != kExtensionTokenType) {
    return InterceptorUnauthenticated("typ", absl::StrCat("must be ", kExtensionTokenType));
  }
  const char* kid = r_jwt_get_header_str_value(jwt.jwt, "kid");
  InterceptorJwk key;
  if (pem_) {
    key.jwk = r_jwks_get_at(keys_->jwks, 0);
  } else {
    if (kid == nullptr) return InterceptorUnauthenticated("kid", "missing");
    key.jwk = r_jwks_get_by_kid(keys_->jwks, kid);
    if (key.jwk == nullptr) return InterceptorUnauthenticated("kid", "names no known key");
  }
  if (key.jwk == nullptr || r_jwt_verify_signature(jwt.jwt, key.jwk, 0) != RHN_OK) {
    return InterceptorUnauthenticated("signature", "does not verify");
  }
  const char* iss = r_jwt_get_claim_str_value(jwt.jwt, "iss");
  if (iss == nullptr || std::string(iss) != issuer()) {
    return InterceptorUnauthenticated("iss", absl::StrCat("must be ", issuer()));
  }
  const char* aud = r_jwt_get_claim_str_value(jwt.jwt, "aud");  // null for an array or any non-string
  if (aud == nullptr || std::string(aud) != options_.audience) {
    return InterceptorUnauthenticated("aud", absl::StrCat("must be the string ", options_.audience));
  }
  const int64_t exp = r_jwt_get_claim_int_value(jwt.jwt, "exp");  // 0 when absent or not an integer
  if (exp <= 0) return InterceptorUnauthenticated("exp", "must be a positive integer");
  if (exp + kExtensionTokenSkewSeconds <= now_unix) return InterceptorUnauthenticated("exp", "expired");
  const char* caller_kind = r_jwt_get_claim_str_value(jwt.jwt, "caller_kind");
  if (caller_kind == nullptr || std::string(caller_kind) != "gateway") {
    return InterceptorUnauthenticated("caller_kind", "must be gateway");
  }
  *exp_out = exp;
  return absl::OkStatus();
}

}  // namespace osh::gateway
