#include "tlog/checkpoint.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace osh::tlog {

absl::StatusOr<std::string> FormatCheckpoint(const Checkpoint& cp) {
  if (cp.origin.empty() || cp.origin.find('\n') != std::string::npos) {
    return absl::InvalidArgumentError("checkpoint origin: empty or more than one line");
  }
  if (cp.size < 0) return absl::InvalidArgumentError("checkpoint: negative tree size");
  std::string text = absl::StrCat(cp.origin, "\n", cp.size, "\n", HashToBase64(cp.root), "\n");
  for (const std::string& line : cp.extensions) {
    if (line.empty() || line.find('\n') != std::string::npos) {
      return absl::InvalidArgumentError("checkpoint extension lines are non-empty single lines");
    }
    absl::StrAppend(&text, line, "\n");
  }
  return text;
}

absl::StatusOr<Checkpoint> ParseCheckpoint(absl::string_view text) {
  const auto bad = [](absl::string_view why) { return absl::InvalidArgumentError(absl::StrCat("malformed checkpoint: ", why)); };
  if (text.empty() || text.back() != '\n') return bad("does not end in a newline");
  text.remove_suffix(1);
  std::vector<absl::string_view> lines = absl::StrSplit(text, '\n');
  if (lines.size() < 3) return bad("fewer than three lines");
  Checkpoint cp;
  cp.origin = std::string(lines[0]);
  if (cp.origin.empty()) return bad("empty origin");
  const absl::string_view size = lines[1];
  if (size.empty() || size.size() > 19 || size.find_first_not_of("0123456789") != absl::string_view::npos ||
      (size.size() > 1 && size[0] == '0') || !absl::SimpleAtoi(size, &cp.size) || cp.size < 0) {
    return bad("tree size is not a decimal without leading zeroes");
  }
  if (cp.size > kMaxTreeSize) return bad(absl::StrCat("tree size ", cp.size, " is above 2^62"));
  absl::StatusOr<Hash> root = HashFromBase64(lines[2]);
  if (!root.ok()) return bad("root hash is not the base64 of 32 bytes");
  cp.root = *root;
  for (size_t i = 3; i < lines.size(); ++i) {
    if (lines[i].empty()) return bad("empty extension line");
    cp.extensions.emplace_back(lines[i]);
  }
  return cp;
}

absl::StatusOr<std::string> SignCheckpoint(const Checkpoint& checkpoint, absl::Span<const NoteSigner* const> signers,
                                           absl::Span<const NoteSignature> keep) {
  absl::StatusOr<std::string> text = FormatCheckpoint(checkpoint);
  if (!text.ok()) return text.status();
  return SignNote(*text, signers, keep);
}

absl::StatusOr<OpenedCheckpoint> OpenCheckpoint(absl::string_view signed_note, absl::string_view origin,
                                                const NoteVerifier& log, absl::Span<const NoteVerifier* const> cosigners,
                                                size_t quorum) {
  std::vector<const NoteVerifier*> known{&log};
  known.insert(known.end(), cosigners.begin(), cosigners.end());
  absl::StatusOr<Note> note = OpenNote(signed_note, known);
  if (!note.ok()) return note.status();
  OpenedCheckpoint out;
  bool log_signed = false;
  for (const NoteSignature& sig : note->verified) {
    if (sig.name == log.name() && sig.key_id == log.key_id()) {
      log_signed = true;
    } else {
      ++out.cosignatures;
    }
  }
  if (!log_signed) return absl::PermissionDeniedError("checkpoint not signed by the log key");
  absl::StatusOr<Checkpoint> cp = ParseCheckpoint(note->text);
  if (!cp.ok()) return cp.status();
  if (!origin.empty() && cp->origin != origin) {
    return absl::PermissionDeniedError(absl::StrCat("checkpoint origin \"", cp->origin, "\", want \"", origin, "\""));
  }
  if (out.cosignatures < quorum) {
    return absl::PermissionDeniedError(absl::StrCat("checkpoint cosigned by ", out.cosignatures, " of the witnesses, want ", quorum));
  }
  out.checkpoint = *std::move(cp);
  out.note = *std::move(note);
  return out;
}

}  // namespace osh::tlog
