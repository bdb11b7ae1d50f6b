// C2SP tlog-checkpoint (https://c2sp.org/tlog-checkpoint): the note text of a signed tree head.
//   <origin>\n<tree size, decimal, no leading zeroes>\n<base64 root hash>\n[<extension line>\n...]
// The origin is non-empty (the spec recommends a schema-less URL without spaces or '+', which our logs use
// as their key name too, but a client MUST NOT assume it, so any non-empty line parses); extension lines
// are non-empty. The text is note text: tlog/note.h already refuses control characters and bad UTF-8. Parsing is strict: exactly this shape, canonical decimal and base64, nothing else.
// Errors: INVALID_ARGUMENT for a malformed body; OpenCheckpoint adds OpenNote's (tlog/note.h) and
// PERMISSION_DENIED for a wrong origin, a missing log signature or too few cosignatures.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "tlog/merkle.h"
#include "tlog/note.h"

namespace osh::tlog {

struct Checkpoint {
  std::string origin;
  int64_t size = 0;
  Hash root{};
  std::vector<std::string> extensions;

  bool operator==(const Checkpoint&) const = default;
};

absl::StatusOr<std::string> FormatCheckpoint(const Checkpoint& checkpoint);
absl::StatusOr<Checkpoint> ParseCheckpoint(absl::string_view text);
// The largest tree size a checkpoint may claim (2^62): far beyond any log, and small enough that every
// index and stored-hash number of such a tree fits in an int64 (a hostile size above it would overflow
// the proof arithmetic). ParseCheckpoint refuses a larger one.
inline constexpr int64_t kMaxTreeSize = int64_t{1} << 62;

// The signed note of `checkpoint` by the log (and any other signers, e.g. cosigners), keeping `keep`.
absl::StatusOr<std::string> SignCheckpoint(const Checkpoint& checkpoint, absl::Span<const NoteSigner* const> signers,
                                           absl::Span<const NoteSignature> keep = {});

struct OpenedCheckpoint {
  Checkpoint checkpoint;
  Note note;
  size_t cosignatures = 0;  // distinct cosigners among `cosigners` whose signature verified
};

// Opens a signed checkpoint: the log's signature must verify, the origin must equal `origin` (when not
// empty), and at least `quorum` of `cosigners` must have cosigned it (their signatures are verified if
// present; unknown signatures are ignored).
absl::StatusOr<OpenedCheckpoint> OpenCheckpoint(absl::string_view signed_note, absl::string_view origin,
                                                const NoteVerifier& log,
                                                absl::Span<const NoteVerifier* const> cosigners = {},
                                                size_t quorum = 0);

}  // namespace osh::tlog
