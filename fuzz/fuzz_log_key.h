// The fixed keys of the verifiable-log fuzzers and their seeds (test material only): the log signs as
// kLogOrigin with fuzz_key.h's Ed25519 key, the witness cosigns as kWitnessName with the same key.
#pragma once

#include <memory>

#include "fuzz/fuzz_key.h"
#include "tlog/cosignature.h"
#include "tlog/note.h"

namespace osh::fuzz {

inline constexpr char kLogOrigin[] = "fuzz.test/log";
inline constexpr char kWitnessName[] = "fuzz.test/witness";

inline tlog::Ed25519PrivateKey FuzzLogKey() { return *tlog::Ed25519PrivateKey::FromPem(kPrivateKeyPem); }
inline std::unique_ptr<tlog::Ed25519NoteVerifier> FuzzLogVerifier() {
  return *tlog::Ed25519NoteVerifier::Create(kLogOrigin, FuzzLogKey().public_key());
}

}  // namespace osh::fuzz
