// A fixed Ed25519 key pair for the fuzzers and their seeds (test material only, never a real authority).
#pragma once

namespace osh::fuzz {

inline constexpr char kPrivateKeyPem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VwBCIEIAb2tInplxR4qMUffH54VN/O1EuRpqCtAusxsR0r9Lm4\n"
    "-----END PRIVATE KEY-----\n";

inline constexpr char kTrustStoreJson[] =
    "{\"threshold\": 1, \"keys\": [{\"key_id\": \"fuzz\", \"public_key_pem\": "
    "\"-----BEGIN PUBLIC KEY-----\\nMCowBQYDK2VwAyEA0JdriwVl9q/bYYuZJ4NK/8DU2ERmwgN6wATdS9iiJII=\\n-----END PUBLIC KEY-----\\n\","
    " \"not_before\": \"2020-01-01T00:00:00Z\", \"not_after\": \"2040-01-01T00:00:00Z\"}],"
    " \"revoked_key_ids\": [\"old\"]}";

inline constexpr char kSandboxId[] = "sb-fuzz";
inline constexpr char kSubject[] = "fuzz@example.com";
inline constexpr long long kNowUnix = 1'900'000'000;

}  // namespace osh::fuzz
