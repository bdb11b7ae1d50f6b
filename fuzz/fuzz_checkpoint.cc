// libFuzzer target: C2SP checkpoints (tlog/checkpoint.h) on arbitrary bytes, as a note's text and as a
// signed note. Invariants (abort on violation): never crashes; parsing is strict (a text that parses is
// the canonical formatting of what it parsed to) and refusals are INVALID_ARGUMENT; opening a signed
// checkpoint under the fuzz log key refuses with INVALID_ARGUMENT, PERMISSION_DENIED or UNAUTHENTICATED,
// and what it opens has the log's signature and parses.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "fuzz/fuzz_check.h"
#include "fuzz/fuzz_log_key.h"
#include "tlog/checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace osh::tlog;
  const std::string input(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<Checkpoint> cp = ParseCheckpoint(input);
  if (cp.ok()) {
    absl::StatusOr<std::string> text = FormatCheckpoint(*cp);
    osh::fuzz::FuzzCheck(text.ok() && *text == input);
    osh::fuzz::FuzzCheck(cp->size >= 0 && !cp->origin.empty());
  } else {
    osh::fuzz::FuzzCheck(absl::IsInvalidArgument(cp.status()));
  }
  static const std::unique_ptr<Ed25519NoteVerifier> log = osh::fuzz::FuzzLogVerifier();
  absl::StatusOr<OpenedCheckpoint> opened = OpenCheckpoint(input, osh::fuzz::kLogOrigin, *log);
  if (opened.ok()) {
    osh::fuzz::FuzzCheck(opened->checkpoint.origin == osh::fuzz::kLogOrigin);
    osh::fuzz::FuzzCheck(ParseCheckpoint(opened->note.text).ok());
  } else {
    const absl::Status& s = opened.status();
    osh::fuzz::FuzzCheck(absl::IsInvalidArgument(s) || absl::IsPermissionDenied(s) || absl::IsUnauthenticated(s));
  }
  return 0;
}
