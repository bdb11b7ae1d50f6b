// Projection check throughput with Ed25519 on a 4 KiB body: the whole §3.3 check (digest recomputed,
// signature under the trust store, context binding, expiry, rollback, strict body parse and schema
// validation) against the raw OpenSSL EVP Ed25519 verify of the same signed bytes. Single thread,
// alternating rounds, medians; prints each rate and its ratio to the raw verify.
//   cold: every check parses and validates the body (a body never seen before);
//   warm: the gateway's configuration, with its ValidatedBodyCache holding this body (every sandbox
//         after the first that shares a policy, and every unchanged refresh).
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include <CLI/CLI.hpp>

#include "bench/bench_support.h"
#include "policy/digest.h"
#include "trust/encoding.h"
#include "trust/keys.h"
#include "trust/projection_check.h"
#include "trust/trust_store.h"
#include "trust/validated_body_cache.h"

namespace {

namespace drv = openshell::policy::driver::v1;

// Calls `op` repeatedly for `seconds`; returns calls per second. `op` returns false on a wrong answer.
double Rate(double seconds, const std::function<bool()>& op, bool* all_ok) {
  uint64_t calls = 0;
  const auto start = std::chrono::steady_clock::now();
  const auto end = start + std::chrono::duration<double>(seconds);
  std::chrono::steady_clock::time_point now;
  do {
    for (int i = 0; i < 64; ++i) *all_ok &= op();
    calls += 64;
    now = std::chrono::steady_clock::now();
  } while (now < end);
  return static_cast<double>(calls) / std::chrono::duration<double>(now - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Projection check (Ed25519, 4 KiB body) vs raw OpenSSL EVP verify"};
  double seconds = 1.0;
  int rounds = 5;
  size_t body_bytes = 4096;
  app.add_option("--seconds", seconds, "length of each measured round")->capture_default_str();
  app.add_option("--rounds", rounds, "rounds of each (alternating); the median is reported")->capture_default_str();
  app.add_option("--body-bytes", body_bytes, "minimum body size")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  auto key = osh::trust::PrivateKey::Generate("ed25519");
  if (!key.ok()) return 1;
  drv::RuntimeContext context;
  context.set_sandbox_id("sb-bench");
  context.set_user_subject("bench@example.com");
  drv::Projection p;
  p.set_surface_id("openshell.sandbox.v1");
  p.set_body(osh::policy::SerializeDeterministic(osh::bench::PolicyOfSize(body_bytes)));
  p.set_policy_digest(osh::policy::Sha256Hex(p.body()));
  p.set_policy_version(3);
  p.set_context_digest(osh::trust::ContextDigest(context));
  p.set_issued_at_unix(1'800'000'000);
  p.set_expires_at_unix(1'900'000'000);
  p.set_signing_key_id("bench");
  const std::string signed_bytes = osh::trust::SignedBytes(p);
  p.set_signature(*key->Sign(signed_bytes));

  auto store = osh::trust::TrustStore::Parse(osh::bench::TrustStoreJsonFor("bench", key->PublicKeyPem()));
  if (!store.ok()) return 1;
  const std::vector<std::string> surfaces = {"openshell.sandbox.v1"};
  osh::trust::CheckInput input;
  input.context = &context;
  input.accepted_surfaces = &surfaces;
  input.trust_store = &*store;
  input.now_unix = 1'850'000'000;
  input.admitted_version = 2;

  // The baseline: one EVP_DigestVerify per call on a prepared key, as bare as OpenSSL allows.
  const std::string pem = key->PublicKeyPem();
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  EVP_PKEY* raw_key = PEM_read_bio_PUBKEY(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  if (raw_key == nullptr) return 1;
  EVP_MD_CTX* md = EVP_MD_CTX_new();
  const auto* sig = reinterpret_cast<const unsigned char*>(p.signature().data());
  const auto* msg = reinterpret_cast<const unsigned char*>(signed_bytes.data());
  auto raw_verify = [&] {
    EVP_MD_CTX_reset(md);
    return EVP_DigestVerifyInit(md, nullptr, nullptr, nullptr, raw_key) == 1 &&
           EVP_DigestVerify(md, sig, p.signature().size(), msg, signed_bytes.size()) == 1;
  };
  auto cold_check = [&] { return osh::trust::CheckProjection(p, input).ok(); };
  osh::trust::ValidatedBodyCache cache;
  osh::trust::CheckInput cached_input = input;
  cached_input.body_cache = &cache;
  auto warm_check = [&] { return osh::trust::CheckProjection(p, cached_input).ok(); };

  bool all_ok = true;
  std::vector<double> raw_rates, cold_rates, warm_rates;
  for (int r = 0; r < rounds; ++r) {
    raw_rates.push_back(Rate(seconds, raw_verify, &all_ok));
    cold_rates.push_back(Rate(seconds, cold_check, &all_ok));
    warm_rates.push_back(Rate(seconds, warm_check, &all_ok));
  }
  EVP_MD_CTX_free(md);
  EVP_PKEY_free(raw_key);
  if (!all_ok) {
    std::fprintf(stderr, "a verification failed: the benchmark is not measuring what it claims\n");
    return 1;
  }
  const double raw = osh::bench::Median(raw_rates), cold = osh::bench::Median(cold_rates), warm = osh::bench::Median(warm_rates);
  std::printf("body %zu bytes, signed bytes %zu, %d rounds of %.2fs, single thread\n", p.body().size(),
              signed_bytes.size(), rounds, seconds);
  std::printf("raw EVP Ed25519 verify:  %10.0f verifications/s\n", raw);
  std::printf("check, cold body:        %10.0f checks/s   ratio to raw %.3f\n", cold, cold / raw);
  std::printf("check, warm body cache:  %10.0f checks/s   ratio to raw %.3f\n", warm, warm / raw);
  return 0;
}
