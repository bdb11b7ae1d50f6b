#include "witness/witness.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include <toml++/toml.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "policy/policy_file.h"

namespace osh::witness {
namespace {

// The note's text (through the newline before the blank line that ends it); INVALID_ARGUMENT if none.
absl::StatusOr<absl::string_view> WitnessNoteText(absl::string_view note) {
  const size_t blank = note.find("\n\n");
  if (blank == absl::string_view::npos) return absl::InvalidArgumentError("malformed checkpoint note: no blank line before the signatures");
  return note.substr(0, blank + 1);
}

WitnessResponse WitnessAnswer(int status, std::string body, std::string log_message) {
  WitnessResponse r;
  r.status = status;
  r.body = std::move(body);
  if (!r.body.empty() && r.body.back() != '\n') r.body += '\n';
  r.log_message = std::move(log_message);
  return r;
}

absl::Status WitnessSyncFolder(const std::string& file) {
  std::string dir = std::filesystem::path(file).parent_path().string();
  if (dir.empty()) dir = ".";
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return absl::InternalError(absl::StrCat(dir, ": cannot open to fsync: ", std::strerror(errno)));
  const int rc = ::fsync(fd);
  const int error = errno;
  ::close(fd);
  if (rc != 0) return absl::InternalError(absl::StrCat(dir, ": fsync: ", std::strerror(error)));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<AddCheckpointRequest> ParseAddCheckpointRequest(absl::string_view body) {
  const auto bad = [](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("malformed add-checkpoint request: ", why));
  };
  if (body.size() > kMaxRequestBytes) return bad(absl::StrCat("body over ", kMaxRequestBytes, " bytes"));
  AddCheckpointRequest request;
  size_t end = body.find('\n');
  if (end == absl::string_view::npos) return bad("no old size line");
  absl::string_view line = body.substr(0, end);
  body.remove_prefix(end + 1);
  if (line.substr(0, 4) != "old ") return bad("the first line is not \"old <size>\"");
  const absl::string_view size = line.substr(4);
  if (size.empty() || size.size() > 19 || size.find_first_not_of("0123456789") != absl::string_view::npos ||
      (size.size() > 1 && size[0] == '0') || !absl::SimpleAtoi(size, &request.old_size) || request.old_size < 0) {
    return bad("the old size is not a decimal without leading zeroes");
  }
  for (;;) {
    end = body.find('\n');
    if (end == absl::string_view::npos) return bad("no empty line before the checkpoint");
    line = body.substr(0, end);
    body.remove_prefix(end + 1);
    if (line.empty()) break;
    if (request.proof.size() == kMaxProofLines) return bad(absl::StrCat("more than ", kMaxProofLines, " consistency proof lines"));
    absl::StatusOr<tlog::Hash> hash = tlog::HashFromBase64(line);
    if (!hash.ok()) return bad(absl::StrCat("consistency proof line ", request.proof.size() + 1, " is not the base64 of 32 bytes"));
    request.proof.push_back(*hash);
  }
  if (body.empty()) return bad("no checkpoint after the empty line");
  request.checkpoint = std::string(body);
  return request;
}

std::string FormatAddCheckpointRequest(int64_t old_size, const tlog::Proof& proof, absl::string_view checkpoint) {
  std::string out = absl::StrCat("old ", old_size, "\n");
  for (const tlog::Hash& h : proof) absl::StrAppend(&out, tlog::HashToBase64(h), "\n");
  absl::StrAppend(&out, "\n", checkpoint);
  return out;
}

absl::StatusOr<WitnessState> ReadWitnessState(const std::string& path) {
  std::map<std::string, HeldCheckpoint> state;
  uint64_t cosigned_until = 0;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (errno == ENOENT) {
      return absl::FailedPreconditionError(absl::StrCat(
          path, ": no state file. A new witness creates it first (`policy-log-witness init --config FILE`); a "
                "witness whose state was lost must be retired (a new key), never started from nothing: it would "
                "cosign any fork it is shown first"));
    }
    return absl::InternalError(absl::StrCat(path, ": cannot be read: ", std::strerror(errno)));
  }
  std::ostringstream text;
  text << in.rdbuf();
  const auto bad = [&path](const toml::node& node, absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(path, ":", node.source().begin.line, ": ", why));
  };
  try {
    const toml::table table = toml::parse(text.str(), path);
    bool marked = false;
    std::optional<int64_t> count;
    for (const auto& [key, node] : table) {
      if (key.str() == "cosigned_until") {
        const std::optional<int64_t> until = node.value<int64_t>();
        if (!until || *until < 0) return bad(node, "cosigned_until is not a POSIX time");
        cosigned_until = static_cast<uint64_t>(*until);
        continue;
      }
      if (key.str() == "logs") {
        count = node.value<int64_t>();
        if (!count) return bad(node, "logs is not a count");
        continue;
      }
      if (key.str() == "format") {
        if (node.value<std::string>() != std::string(kWitnessStateFormat)) {
          return bad(node, absl::StrCat("format is not \"", kWitnessStateFormat, "\" (a newer witness's state?)"));
        }
        marked = true;
        continue;
      }
      if (key.str() != "log" || !node.is_array_of_tables()) return bad(node, absl::StrCat("unexpected '", std::string(key.str()), "' (only format, logs, cosigned_until and [[log]] tables)"));
      for (const toml::node& item : *node.as_array()) {
        const toml::table& log = *item.as_table();
        const std::optional<std::string> origin = log["origin"].value<std::string>();
        const std::optional<int64_t> size = log["size"].value<int64_t>();
        const std::optional<std::string> root = log["root"].value<std::string>();
        const std::optional<std::string> note = log["note"].value<std::string>();
        if (!origin || !size || !root || !note || log.size() != 4) {
          return bad(item, "a [[log]] needs exactly origin, size, root (strings but size) and note");
        }
        HeldCheckpoint held{*size, {}, *note};
        absl::StatusOr<tlog::Hash> hash = tlog::HashFromBase64(*root);
        if (!hash.ok()) return bad(item, "root is not the base64 of 32 bytes");
        held.root = *hash;
        absl::StatusOr<absl::string_view> note_text = WitnessNoteText(*note);
        absl::StatusOr<tlog::Checkpoint> cp =
            note_text.ok() ? tlog::ParseCheckpoint(*note_text) : absl::StatusOr<tlog::Checkpoint>(note_text.status());
        if (!cp.ok()) return bad(item, cp.status().message());
        if (cp->origin != *origin || cp->size != held.size || cp->root != held.root) {
          return bad(item, absl::StrCat("the note of ", *origin, " does not carry the size and root recorded beside it"));
        }
        if (!state.emplace(*origin, std::move(held)).second) return bad(item, absl::StrCat("origin ", *origin, " twice"));
      }
    }
    // An empty file is not "nothing cosigned": a state truncated by a crash, a full disk or a mistaken
    // redirect would otherwise let the witness cosign any fork it is shown first (review 113). `init` and
    // every write put the format line in; a file of an earlier version with logs in it is still read.
    // And the count written beside it: a file cut at a table's end (some logs, or all of them, lost) reads
    // as valid TOML (review 116).
    if (marked && (!count || *count != static_cast<int64_t>(state.size()))) {
      return absl::FailedPreconditionError(absl::StrCat(
          path, ": holds ", state.size(), " [[log]] but says logs = ", count ? absl::StrCat(*count) : "(none)",
          ": truncated, read as lost state. Restore it, or retire the witness (a new key)"));
    }
    if (!marked && state.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          path, ": no format line and no [[log]]: read as lost state, not as \"nothing cosigned\". If this witness "
                "has truly never cosigned (a state `init` made before format lines), remove the file and run "
                "`policy-log-witness init` again; otherwise retire the witness (a new key)"));
    }
  } catch (const toml::parse_error& error) {
    return absl::InvalidArgumentError(absl::StrCat(path, ":", error.source().begin.line, ": ", std::string(error.description())));
  }
  return WitnessState{std::move(state), cosigned_until};
}

absl::Status InitWitnessState(const std::string& path) {
  return policy::CreateFileAtomically(
      path,
      absl::StrCat("# policy-log-witness state: the last checkpoint cosigned per log. Never delete or edit it.\n",
                   "format = \"", kWitnessStateFormat, "\"\nlogs = 0\n"),
      0600);
}

absl::Status WriteWitnessState(const std::string& path, const WitnessState& state) {
  toml::array logs;
  for (const auto& [origin, held] : state.logs) {
    logs.push_back(toml::table{{"origin", origin},
                               {"size", held.size},
                               {"root", tlog::HashToBase64(held.root)},
                               {"note", held.note}});
  }
  std::ostringstream out;
  out << "# policy-log-witness state: the last checkpoint cosigned per origin. Do not edit; never delete\n"
         "# (a witness that forgets what it cosigned can be made to cosign a fork).\n";
  const int64_t count = static_cast<int64_t>(logs.size());
  out << toml::table{{"format", kWitnessStateFormat},
                     {"logs", count},
                     {"cosigned_until", static_cast<int64_t>(std::min<uint64_t>(state.cosigned_until, INT64_MAX))},
                     {"log", std::move(logs)}}
      << "\n";
  if (absl::Status s = policy::WriteFileAtomically(path, out.str(), 0600); !s.ok()) return s;
  return WitnessSyncFolder(path);
}

absl::StatusOr<std::unique_ptr<Witness>> Witness::Create(std::unique_ptr<tlog::CosignatureV1Signer> cosigner,
                                                         const std::vector<WitnessedLog>& logs, std::string state_file) {
  if (cosigner == nullptr) return absl::InvalidArgumentError("the witness needs its key");
  std::map<std::string, KnownLog> known;
  for (const WitnessedLog& log : logs) {
    if (log.origin.empty()) return absl::InvalidArgumentError("a witnessed log needs an origin");
    absl::StatusOr<std::unique_ptr<tlog::NoteVerifier>> verifier = tlog::ParseVerifierKey(log.verifier_key);
    if (!verifier.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("log ", log.origin, ": verifier key: ", verifier.status().message()));
    }
    if (dynamic_cast<tlog::Ed25519NoteVerifier*>(verifier->get()) == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("log ", log.origin, ": the verifier key is not an Ed25519 note key (type 0x01)"));
    }
    if (!known.emplace(log.origin, KnownLog{log.origin, *std::move(verifier)}).second) {
      return absl::InvalidArgumentError(absl::StrCat("log ", log.origin, " is listed twice"));
    }
  }
  if (::access(state_file.c_str(), F_OK) != 0) {
    // Said as before (InitWitnessState makes it), and no lock file is left beside a state file that is not there.
    absl::StatusOr<WitnessState> missing = ReadWitnessState(state_file);
    if (!missing.ok()) return missing.status();
  }
  absl::StatusOr<common::StateLock> lock = common::StateLock::Acquire(
      state_file, "witness", "one witness process per state file (two could cosign two forks of one size); stop it first");
  if (!lock.ok()) return lock.status();
  absl::StatusOr<WitnessState> state = ReadWitnessState(state_file);
  if (!state.ok()) return state.status();
  return std::unique_ptr<Witness>(
      new Witness(std::move(cosigner), std::move(known), std::move(state_file), *std::move(lock), *std::move(state)));
}

std::optional<HeldCheckpoint> Witness::Held(const std::string& origin) const {
  absl::MutexLock lock(&mu_);
  auto it = state_.logs.find(origin);
  if (it == state_.logs.end()) return std::nullopt;
  return it->second;
}

WitnessResponse Witness::AddCheckpoint(absl::string_view body) {
  absl::StatusOr<AddCheckpointRequest> request = ParseAddCheckpointRequest(body);
  if (!request.ok()) return WitnessAnswer(400, std::string(request.status().message()), "");
  absl::StatusOr<absl::string_view> text = WitnessNoteText(request->checkpoint);
  absl::StatusOr<tlog::Checkpoint> parsed =
      text.ok() ? tlog::ParseCheckpoint(*text) : absl::StatusOr<tlog::Checkpoint>(text.status());
  if (!parsed.ok()) return WitnessAnswer(400, std::string(parsed.status().message()), "");
  const std::string& origin = parsed->origin;
  auto log = logs_.find(origin);
  if (log == logs_.end()) return WitnessAnswer(404, absl::StrCat("unknown log origin \"", origin, "\""), "");
  absl::StatusOr<tlog::OpenedCheckpoint> opened = tlog::OpenCheckpoint(request->checkpoint, origin, *log->second.verifier);
  if (!opened.ok()) {
    const bool malformed = absl::IsInvalidArgument(opened.status());
    return WitnessAnswer(malformed ? 400 : 403, std::string(opened.status().message()),
                         malformed ? "" : absl::StrCat("refused ", origin, ": ", opened.status().message()));
  }
  const tlog::Checkpoint& cp = opened->checkpoint;
  const std::string what = absl::StrCat(origin, " size ", cp.size);
  // What is kept (and logged as evidence): the checkpoint and the log's signature only. The other lines of
  // the note as received (anyone's, unverifiable) would let any client grow the state file, rewritten and
  // synced on every cosignature, and the log by up to a MiB a request.
  absl::StatusOr<std::string> kept = tlog::SignNote(opened->note.text, {}, opened->note.verified);
  if (!kept.ok()) return WitnessAnswer(500, "cannot keep the checkpoint", absl::StrCat("cannot keep ", what, ": ", kept.status().message()));
  if (request->old_size > cp.size) {
    return WitnessAnswer(400, absl::StrCat("old size ", request->old_size, " is larger than the checkpoint's size ", cp.size), "");
  }

  absl::MutexLock lock(&mu_);  // the check against the held state and its update are one step
  auto held_it = state_.logs.find(origin);
  const int64_t held_size = held_it == state_.logs.end() ? 0 : held_it->second.size;
  const tlog::Hash held_root = held_it == state_.logs.end() ? tlog::EmptyTreeHash() : held_it->second.root;
  if (request->old_size != held_size) {
    WitnessResponse r = WitnessAnswer(409, absl::StrCat(held_size), "");
    r.content_type = kSizeContentType;
    if (cp.size < held_size) {
      r.log_message = absl::StrCat("refused ", what, ": it is smaller than the checkpoint cosigned last (size ", held_size, ")");
    }
    return r;
  }
  if (cp.size == held_size) {
    if (cp.root != held_root) {
      WitnessResponse fork = WitnessAnswer(
          409,
          absl::StrCat("fork: a checkpoint of size ", cp.size, " with root ", tlog::HashToBase64(held_root),
                       " was cosigned; this one has root ", tlog::HashToBase64(cp.root)),
          absl::StrCat("refused ", what, ": FORK: root ", tlog::HashToBase64(cp.root), ", cosigned root ",
                       tlog::HashToBase64(held_root), " (evidence of log misbehaviour, the checkpoint and the log's signature):\n",
                       *kept));
      fork.evidence = true;  // two roots of one size, both signed by the log
      return fork;
    }
    if (!request->proof.empty()) return WitnessAnswer(422, "the consistency proof must be empty when the sizes are equal", "");
  } else if (held_size == 0) {
    if (!request->proof.empty()) return WitnessAnswer(422, "the consistency proof must be empty when the old size is 0", "");
  } else if (absl::Status s = tlog::CheckTree(request->proof, cp.size, cp.root, held_size, held_root); !s.ok()) {
    return WitnessAnswer(422,
                         absl::StrCat("the consistency proof from size ", held_size, " to ", cp.size, " does not verify"),
                         absl::StrCat("refused ", what, ": the consistency proof from the cosigned size ", held_size,
                                      " does not verify (a fork, or a bad proof; anyone can send a bad one)"));
  }

  // Cosign: the note's text signed by the witness alone; its signature line is what follows the text.
  const tlog::NoteSigner* signers[] = {cosigner_.get()};
  absl::StatusOr<std::string> signed_note = tlog::SignNote(*text, signers);
  if (!signed_note.ok()) {
    return WitnessAnswer(500, "cannot cosign", absl::StrCat("cannot cosign ", what, ": ", signed_note.status().message()));
  }
  // The timestamp just used is covered by cosigned_until on disk before it is answered: a restarted
  // witness whose clock is behind never signs with an earlier one (stop 71). Written ahead by a reserve,
  // so replays of one checkpoint write the state once a reserve at most.
  const uint64_t used = cosigner_->last_timestamp();
  const bool reserve = used > state_.cosigned_until;
  // The same size and root as held: already on disk, nothing else to write. Rewritten and synced, every
  // replay of the log's public checkpoint by anyone cost three fsyncs under the one lock (review 113).
  const bool again = held_it != state_.logs.end() && cp.size == held_size && cp.root == held_root;
  if (again && !reserve) {
    WitnessResponse answer = WitnessAnswer(200, signed_note->substr(text->size() + 1), "");
    answer.log_message = absl::StrCat("cosigned ", what, " root ", tlog::HashToBase64(cp.root), " (again)");
    return answer;
  }
  WitnessState next = state_;
  if (reserve) next.cosigned_until = used + kCosignedUntilReserveSeconds;
  if (!again) next.logs[origin] = HeldCheckpoint{cp.size, cp.root, *std::move(kept)};
  if (absl::Status s = WriteWitnessState(state_file_, next); !s.ok()) {
    return WitnessAnswer(500, "cannot persist the witness state; nothing was cosigned",
                         absl::StrCat("cannot persist the state for ", what, ": ", s.message()));
  }
  state_ = std::move(next);
  WitnessResponse ok = WitnessAnswer(200, signed_note->substr(text->size() + 1), "");
  ok.log_message = absl::StrCat("cosigned ", what, " root ", tlog::HashToBase64(cp.root),
                                held_size == cp.size ? " (again)" : absl::StrCat(" (from size ", held_size, ")"));
  return ok;
}

}  // namespace osh::witness
