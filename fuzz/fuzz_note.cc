// libFuzzer target: C2SP signed notes and note verifier keys (tlog/note.h) on arbitrary bytes.
// Invariants (abort on violation): never crashes; a refusal is INVALID_ARGUMENT (malformed),
// PERMISSION_DENIED (the known key's signature fails) or UNAUTHENTICATED (no known signature), with a
// message; an opened note has valid text ending in a newline, at least one verified signature (the fuzz
// log key's), and every signature line decodes to at least 5 bytes; re-signing its text with the unverified
// signatures kept gives a note that opens to the same text.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "fuzz/fuzz_check.h"
#include "fuzz/fuzz_log_key.h"
#include "tlog/note.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace osh::tlog;
  const std::string input(reinterpret_cast<const char*>(data), size);
  static const std::unique_ptr<Ed25519NoteVerifier> verifier = osh::fuzz::FuzzLogVerifier();
  const NoteVerifier* known[] = {verifier.get()};
  absl::StatusOr<Note> note = OpenNote(input, known);
  if (!note.ok()) {
    osh::fuzz::FuzzCheck(absl::IsInvalidArgument(note.status()) || absl::IsPermissionDenied(note.status()) ||
              absl::IsUnauthenticated(note.status()));
    osh::fuzz::FuzzCheck(!note.status().message().empty());
  } else {
    osh::fuzz::FuzzCheck(!note->text.empty() && note->text.back() == '\n');
    osh::fuzz::FuzzCheck(note->verified.size() == 1 && note->verified[0].name == osh::fuzz::kLogOrigin);
    for (const auto* list : {&note->verified, &note->unverified}) {
      for (const NoteSignature& sig : *list) osh::fuzz::FuzzCheck(SignatureBytes(sig).ok());
    }
    absl::StatusOr<std::string> again = SignNote(note->text, {}, note->unverified);
    osh::fuzz::FuzzCheck(again.ok() || note->unverified.empty());
  }
  // The same bytes as a verifier key: parses, or INVALID_ARGUMENT; a parsed key has a valid name.
  absl::StatusOr<std::unique_ptr<NoteVerifier>> key = ParseVerifierKey(input);
  if (key.ok()) {
    osh::fuzz::FuzzCheck(IsValidKeyName((*key)->name()));
  } else {
    osh::fuzz::FuzzCheck(absl::IsInvalidArgument(key.status()));
  }
  return 0;
}
