// The OpenShell gateway's extension token (an EdDSA JWT, typ "openshell-ext+jwt") as the interceptor
// verifies it on every call (docs/openshell-interceptor.md; ../shared/interceptor/README.md §6). JOSE is
// parsed and verified by librhonabwy (JWS, JWK, JWKS; its own JSON parser, jansson), never by hand.
//
// The checklist, in order; anything else is UNAUTHENTICATED with the first failed step named:
//   metadata "Bearer <token>", a compact JWS; header alg exactly "EdDSA" and typ exactly
//   "openshell-ext+jwt"; the kid names a key of the JWKS (a PEM has no kid: its one key is tried whatever
//   the kid says) and the Ed25519 signature verifies; iss = openshell-gateway:<gateway_id>; aud a string
//   equal to the audience (an array is refused); exp a positive integer not before now - skew;
//   caller_kind = "gateway". A repeated jti is never refused (the OpenShell gateway reuses its token).
//
// Accepted tokens are kept (at most kAcceptedTokens, each with its exp): every step but exp is a pure
// function of the token's bytes and of the keys and options, which are immutable after Load, so a token
// that passed them once passes them again, and only its exp is checked again against now. The OpenShell
// gateway reuses one token for every call (README §2 "Reuse"), so a call costs a lookup, not a JWS parse and
// a signature verification. A refused token is never kept. Verify is thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace osh::gateway {

inline constexpr char kExtensionTokenType[] = "openshell-ext+jwt";
inline constexpr int64_t kExtensionTokenSkewSeconds = 60;

class InterceptorTokenVerifier {
 public:
  struct Options {
    std::string gateway_id = "openshell";  // iss = openshell-gateway:<gateway_id>
    std::string audience;                  // the one aud accepted
  };

  // Reads `keys_path`: a JWKS ({"keys":[...]}, every key an Ed25519 OKP public key with a kid) or a PEM
  // Ed25519 public key (SPKI). INVALID_ARGUMENT naming the file and what is wrong with it.
  static absl::StatusOr<std::unique_ptr<InterceptorTokenVerifier>> Load(const std::string& keys_path, Options options);
  // The same from text already read; `name` stands for the file in messages.
  static absl::StatusOr<std::unique_ptr<InterceptorTokenVerifier>> FromText(const std::string& text,
                                                                            const std::string& name, Options options);
  ~InterceptorTokenVerifier();

  // OK, or UNAUTHENTICATED "<step>: <detail>" (never the token itself). `authorization` is the metadata
  // value ("Bearer <token>"); `now_unix` the verifier's clock.
  absl::Status Verify(absl::string_view authorization, int64_t now_unix) const;

  // The expected iss.
  std::string issuer() const { return "openshell-gateway:" + options_.gateway_id; }
  // "JWKS with N key(s): kid1, kid2" or "PEM Ed25519 key": for the start-up log.
  const std::string& summary() const { return summary_; }

 private:
  struct Keys;  // librhonabwy's key set (a jwks_t), owned
  InterceptorTokenVerifier(std::unique_ptr<Keys> keys, bool pem, Options options, std::string summary);

  // Every step of the checklist on `token`; OK with its exp in `exp`.
  absl::Status VerifyToken(const std::string& token, int64_t now_unix, int64_t* exp) const;

  std::unique_ptr<Keys> keys_;
  const bool pem_;  // one key, no kid
  const Options options_;
  const std::string summary_;
  static constexpr size_t kAcceptedTokens = 64;
  mutable absl::Mutex accepted_mu_;
  mutable absl::flat_hash_map<std::string, int64_t> accepted_ ABSL_GUARDED_BY(accepted_mu_);  // token -> exp
};

}  // namespace osh::gateway
