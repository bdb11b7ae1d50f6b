// policyctl log keygen | checkpoint | consistency | verify-proof | monitor | prove: the verifiable log (issue 27)
// published as C2SP tlog-tiles static files, read from a directory or an http(s) URL (cli/log_source.h).
// Everything here is offline or reads the published files only, but `prove`, which asks the gateway's
// admin API for a sandbox's proof (and verifies it as the sandbox would). Exit status:
// 0 verified, 1 something does not verify (named), 2 usage or I/O. See docs/policyctl.md, "Verifiable log".
#include <sys/stat.h>

#include <filesystem>
#include <iostream>
#include <optional>
#include <tuple>
#include <thread>

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cli/commands.h"
#include "cli/log_source.h"
#include "common/bounded_text.h"
#include "policy/policy_file.h"
#include "tlog/checkpoint.h"
#include "tlog/cosignature.h"
#include "tlog/merkle.h"
#include "tlog/note.h"
#include "tlog/tiles.h"
#include "trust/audit_chain.h"

namespace osh::cli {
namespace {

namespace gw_v1 = openshell::policy::gateway::v1;
using google::protobuf::Struct;
using google::protobuf::Value;

// A failure with the exit code it ends the command with: 1 something does not verify, 2 usage or I/O.
struct LogFailure {
  int exit_code = kExitUsage;
  std::string message;
};
LogFailure LogBad(std::string message) { return {kExitRefused, std::move(message)}; }
LogFailure LogIo(const absl::Status& status) { return {kExitUsage, std::string(status.message())}; }

Value LogText(const std::string& s) {
  Value v;
  v.set_string_value(s);
  return v;
}
// 64-bit numbers as decimal strings, as protobuf's JSON mapping writes int64.
Value LogNumber(int64_t n) { return LogText(absl::StrCat(n)); }

int LogReport(const Options& options, const LogFailure& failure, Struct json = {}) {
  if (options.json()) {
    (*json.mutable_fields())["ok"].set_bool_value(false);
    (*json.mutable_fields())["error"] = LogText(failure.message);
    std::cout << ToJson(json) << "\n";
  } else {
    std::cerr << "error: " << failure.message << "\n";
  }
  return failure.exit_code;
}

// A verifier key given as its text or as a file holding it (first line).
absl::StatusOr<std::unique_ptr<tlog::NoteVerifier>> LogLoadVerifier(const std::string& key_or_file, const char* flag) {
  absl::StatusOr<std::unique_ptr<tlog::NoteVerifier>> verifier = tlog::ParseVerifierKey(key_or_file);
  if (verifier.ok() || !std::filesystem::exists(key_or_file)) {
    if (!verifier.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(flag, " ", key_or_file, ": neither a verifier key (", verifier.status().message(),
                                                     ") nor a file"));
    }
    return verifier;
  }
  absl::StatusOr<std::string> text = policy::ReadFileToString(key_or_file);
  if (!text.ok()) return text.status();
  const std::string first_line(absl::StripAsciiWhitespace(text->substr(0, text->find('\n'))));
  verifier = tlog::ParseVerifierKey(first_line);
  if (!verifier.ok()) return absl::InvalidArgumentError(absl::StrCat(flag, " ", key_or_file, ": ", verifier.status().message()));
  return verifier;
}

// A checkpoint's origin as a person sees it: note text may hold C1 controls and bidirectional formatting
// characters (valid UTF-8), which could rewrite the line on a terminal.
std::string Shown(const std::string& origin) { return common::BoundedText(origin, 256); }

// The flags that say which checkpoints to trust: the log's key, witnesses and their quorum, the origin.
struct LogTrustFlags {
  std::string key;
  std::vector<std::string> witness_keys;
  int quorum = -1;
  std::string origin;
  std::string where;  // --log, for the commands that read the published log

  void Add(CLI::App* cmd, bool witnesses = true, bool log = true) {
    if (log) cmd->add_option("--log", where, "the log: a directory or an http(s) URL prefix")->required();
    cmd->add_option("--key", key, "the log's verifier key (<name>+<hex8>+<base64>), or a file holding it")->required();
    cmd->add_option("--origin", origin, "the origin the checkpoint must carry (default: any)");
    if (!witnesses) return;
    cmd->add_option("--witness-key", witness_keys, "a witness's cosignature verifier key, or a file holding it (repeatable)");
    // At least 1: witness keys with a quorum of 0 would guard nothing (the client library refuses them too).
    cmd->add_option("--quorum", quorum, "how many of the --witness-key witnesses must have cosigned (default: all of them)")
        ->check(CLI::Range(1, 1000));
  }
};

struct LogTrust {
  std::unique_ptr<tlog::NoteVerifier> log;
  std::vector<std::unique_ptr<tlog::NoteVerifier>> witnesses;
  size_t quorum = 0;
  std::string origin;

  static absl::StatusOr<LogTrust> From(const LogTrustFlags& flags) {
    LogTrust trust;
    absl::StatusOr<std::unique_ptr<tlog::NoteVerifier>> log = LogLoadVerifier(flags.key, "--key");
    if (!log.ok()) return log.status();
    if (dynamic_cast<tlog::Ed25519NoteVerifier*>(log->get()) == nullptr) {
      return absl::InvalidArgumentError("--key: not an Ed25519 note key (type 0x01); a log signs with one");
    }
    trust.log = *std::move(log);
    for (const std::string& k : flags.witness_keys) {
      absl::StatusOr<std::unique_ptr<tlog::NoteVerifier>> w = LogLoadVerifier(k, "--witness-key");
      if (!w.ok()) return w.status();
      trust.witnesses.push_back(*std::move(w));
    }
    std::vector<const tlog::NoteVerifier*> cosigners;
    for (const auto& w : trust.witnesses) cosigners.push_back(w.get());
    if (absl::Status distinct = tlog::CheckCosigners(cosigners, trust.log.get()); !distinct.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--witness-key: ", distinct.message()));
    }
    if (flags.quorum >= 0 && trust.witnesses.empty()) {
      return absl::InvalidArgumentError("--quorum needs --witness-key: it counts the witnesses' cosignatures");
    }
    if (flags.quorum > static_cast<int>(trust.witnesses.size())) {
      return absl::InvalidArgumentError(absl::StrCat("--quorum ", flags.quorum, " exceeds the ", trust.witnesses.size(), " --witness-key given"));
    }
    trust.quorum = flags.quorum < 0 ? trust.witnesses.size() : static_cast<size_t>(flags.quorum);
    trust.origin = flags.origin;
    return trust;
  }

  absl::StatusOr<tlog::OpenedCheckpoint> Open(absl::string_view note) const {
    std::vector<const tlog::NoteVerifier*> cosigners;
    for (const auto& w : witnesses) cosigners.push_back(w.get());
    return tlog::OpenCheckpoint(note, origin, *log, cosigners, quorum);
  }
};

// The trust the flags give and the log --log names; kExitUsage failures for bad keys or a bad --log.
struct LogContext {
  LogTrust trust;
  std::unique_ptr<tlog::PathTileFetcher> source;

  std::optional<LogFailure> Open(const LogTrustFlags& flags, const Options& options) {
    absl::StatusOr<LogTrust> t = LogTrust::From(flags);
    if (!t.ok()) return LogIo(t.status());
    trust = *std::move(t);
    if (flags.where.empty()) return std::nullopt;
    absl::StatusOr<std::unique_ptr<tlog::PathTileFetcher>> s = OpenLogSource(flags.where, options.timeout_s);
    if (!s.ok()) return LogIo(s.status());
    source = *std::move(s);
    return std::nullopt;
  }
};

// "name (time)" of each verified cosignature (not the log's).
std::vector<std::pair<std::string, std::string>> LogCosigners(const tlog::OpenedCheckpoint& opened, const tlog::NoteVerifier& log) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const tlog::NoteSignature& sig : opened.note.verified) {
    if (sig.name == log.name() && sig.key_id == log.key_id()) continue;
    absl::StatusOr<uint64_t> t = tlog::CosignatureV1Timestamp(sig);
    out.emplace_back(sig.name, t.ok() ? absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixSeconds(static_cast<int64_t>(*t)),
                                                         absl::UTCTimeZone())
                                      : "");
  }
  return out;
}

Struct LogCheckpointJson(const tlog::OpenedCheckpoint& opened, const tlog::NoteVerifier& log) {
  Struct out;
  auto& f = *out.mutable_fields();
  f["origin"] = LogText(opened.checkpoint.origin);
  f["size"] = LogNumber(opened.checkpoint.size);
  f["root"] = LogText(tlog::HashToBase64(opened.checkpoint.root));
  f["log_key"] = LogText(log.name());
  auto* cosigners = f["cosigners"].mutable_list_value();
  for (const auto& [name, time] : LogCosigners(opened, log)) {
    Value v;
    (*v.mutable_struct_value()->mutable_fields())["name"] = LogText(name);
    (*v.mutable_struct_value()->mutable_fields())["time"] = LogText(time);
    *cosigners->add_values() = v;
  }
  return out;
}

std::string LogDescribe(const tlog::Checkpoint& cp) {
  return absl::StrCat("size ", cp.size, " root ", tlog::HashToBase64(cp.root));
}

absl::StatusOr<std::string> LogReadFile(const std::string& path) { return policy::ReadFileToString(path); }

// A tile read for `cp` failed: tiles that do not hash to its root, or that the log does not have, mean the
// checkpoint does not verify (1); anything else is I/O (2).
LogFailure LogTileFailure(const absl::Status& status, const std::string& name, const tlog::Checkpoint& cp) {
  if (absl::IsDataLoss(status)) {
    return LogBad(absl::StrCat("the log's tiles do not hash to ", name, " (", LogDescribe(cp), "): ", status.message()));
  }
  if (absl::IsNotFound(status)) {
    return LogBad(absl::StrCat("tiles of ", name, " (", LogDescribe(cp), ") are missing from the log: ", status.message()));
  }
  return LogIo(status);
}

// Checks that `next` extends `prev` with a consistency proof computed from the log's tiles (which are
// themselves checked against next's root). kExitRefused failures name the fork or the shrink.
std::optional<LogFailure> LogCheckExtends(const tlog::Checkpoint& prev, const tlog::Checkpoint& next,
                                          const tlog::TileFetcher& source, const std::string& prev_name,
                                          const std::string& next_name) {
  if (prev.origin != next.origin) {
    return LogBad(absl::StrCat(next_name, " is of origin \"", Shown(next.origin), "\", ", prev_name, " of \"", Shown(prev.origin), "\""));
  }
  if (next.size < prev.size) {
    return LogBad(absl::StrCat("SHRINK: ", next_name, " (", LogDescribe(next), ") is smaller than ", prev_name, " (",
                               LogDescribe(prev), "): the log is not append-only"));
  }
  if (next.size == prev.size) {
    if (next.root == prev.root) return std::nullopt;
    return LogBad(absl::StrCat("FORK: ", next_name, " (", LogDescribe(next), ") and ", prev_name, " (", LogDescribe(prev),
                               ") have the same size and different roots"));
  }
  if (prev.size == 0) return std::nullopt;
  tlog::TileHashReader reader(next.size, next.root, source);
  absl::StatusOr<tlog::Proof> proof = tlog::ProveTree(next.size, prev.size, reader);
  if (!proof.ok()) return LogTileFailure(proof.status(), next_name, next);
  if (!tlog::CheckTree(*proof, next.size, next.root, prev.size, prev.root).ok()) {
    return LogBad(absl::StrCat("FORK: ", next_name, " (", LogDescribe(next), ") does not extend ", prev_name, " (", LogDescribe(prev),
                               "): the consistency proof from the log's tiles does not verify"));
  }
  return std::nullopt;
}

void AddLogKeygen(CLI::App& log, const Options& options, int& exit_code) {
  auto* cmd = log.add_subcommand("keygen", "Write a new log key (Ed25519 PEM, 0600; never overwrites) and FILE.pub with its note verifier key");
  auto origin = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  cmd->add_option("--origin", *origin, "the log's origin, which names its key (e.g. gateway.example/policy-gateway)")->required();
  cmd->add_option("--out", *out, "the private key file to create (FILE.pem; the verifier key goes to FILE.pub)")->required();
  cmd->callback([&options, &exit_code, origin, out] {
    const std::string pub = absl::StrCat(absl::StripSuffix(*out, ".pem"), ".pub");
    absl::StatusOr<tlog::Ed25519PrivateKey> key = tlog::Ed25519PrivateKey::Generate();
    if (!key.ok()) { exit_code = LogReport(options, LogIo(key.status())); return; }
    absl::StatusOr<std::string> vkey = tlog::VerifierKeyFromPem(*origin, key->ToPem());
    if (!vkey.ok()) { exit_code = LogReport(options, LogIo(vkey.status())); return; }
    if (std::filesystem::exists(pub)) {
      exit_code = LogReport(options, LogIo(absl::AlreadyExistsError(absl::StrCat(pub, ": already exists (not replaced)"))));
      return;
    }
    for (const auto& [path, text, mode] : {std::tuple{*out, key->ToPem(), 0600u}, std::tuple{pub, *vkey + "\n", 0644u}}) {
      if (absl::Status s = policy::CreateFileAtomically(path, text, mode); !s.ok()) {
        exit_code = LogReport(options, LogIo(s));
        return;
      }
    }
    if (options.json()) {
      Struct json;
      auto& f = *json.mutable_fields();
      f["origin"] = LogText(*origin);
      f["private_key"] = LogText(*out);
      f["verifier_key_file"] = LogText(pub);
      f["verifier_key"] = LogText(*vkey);
      std::cout << ToJson(json) << "\n";
    } else {
      std::cerr << "log key written to " << *out << " (0600), its verifier key to " << pub << ":\n";
      std::cout << *vkey << "\n";
    }
    exit_code = kExitOk;
  });
}

void AddLogCheckpoint(CLI::App& log, const Options& options, int& exit_code) {
  auto* cmd = log.add_subcommand("checkpoint", "Fetch the log's checkpoint, verify its signature (and cosignatures), print it");
  auto flags = std::make_shared<LogTrustFlags>();
  flags->Add(cmd);
  cmd->callback([&options, &exit_code, flags] {
    LogContext ctx;
    if (std::optional<LogFailure> f = ctx.Open(*flags, options)) { exit_code = LogReport(options, *f); return; }
    const LogTrust* trust = &ctx.trust;
    absl::StatusOr<std::string> note = ctx.source->Fetch("checkpoint");
    if (!note.ok()) { exit_code = LogReport(options, LogIo(note.status())); return; }
    absl::StatusOr<tlog::OpenedCheckpoint> opened = trust->Open(*note);
    if (!opened.ok()) {
      exit_code = LogReport(options, LogBad(absl::StrCat("the checkpoint does not verify: ", opened.status().message())));
      return;
    }
    if (options.json()) {
      Struct json = LogCheckpointJson(*opened, *trust->log);
      (*json.mutable_fields())["ok"].set_bool_value(true);
      std::cout << ToJson(json) << "\n";
    } else {
      std::cout << "origin:      " << Shown(opened->checkpoint.origin) << "\nsize:        " << opened->checkpoint.size
                << "\nroot:        " << tlog::HashToBase64(opened->checkpoint.root) << "\nsigned by:   " << trust->log->name() << "\n";
      std::vector<std::string> names;
      for (const auto& [name, time] : LogCosigners(*opened, *trust->log)) names.push_back(time.empty() ? name : absl::StrCat(name, " at ", time));
      std::cout << "cosigned by: " << (names.empty() ? "no witness given" : absl::StrJoin(names, ", ")) << "\n";
    }
    exit_code = kExitOk;
  });
}

void AddLogConsistency(CLI::App& log, const Options& options, int& exit_code) {
  auto* cmd = log.add_subcommand("consistency",
                                 "Verify two checkpoint files and that NEW extends OLD (consistency proof from the log's tiles)");
  auto old_path = std::make_shared<std::string>();
  auto new_path = std::make_shared<std::string>();
  auto flags = std::make_shared<LogTrustFlags>();
  cmd->add_option("old", *old_path, "the older checkpoint (a signed note file)")->required();
  cmd->add_option("new", *new_path, "the newer checkpoint")->required();
  flags->Add(cmd, /*witnesses=*/false);
  cmd->callback([&options, &exit_code, old_path, new_path, flags] {
    LogContext ctx;
    if (std::optional<LogFailure> f = ctx.Open(*flags, options)) { exit_code = LogReport(options, *f); return; }
    const LogTrust* trust = &ctx.trust;
    std::vector<tlog::Checkpoint> cps;
    for (const std::string* path : {old_path.get(), new_path.get()}) {
      absl::StatusOr<std::string> note = LogReadFile(*path);
      if (!note.ok()) { exit_code = LogReport(options, LogIo(note.status())); return; }
      absl::StatusOr<tlog::OpenedCheckpoint> opened = trust->Open(*note);
      if (!opened.ok()) {
        exit_code = LogReport(options, LogBad(absl::StrCat(*path, ": the checkpoint does not verify: ", opened.status().message())));
        return;
      }
      cps.push_back(opened->checkpoint);
    }
    if (std::optional<LogFailure> f = LogCheckExtends(cps[0], cps[1], *ctx.source, "OLD " + *old_path, "NEW " + *new_path)) {
      exit_code = LogReport(options, *f);
      return;
    }
    if (options.json()) {
      Struct json;
      auto& f = *json.mutable_fields();
      f["ok"].set_bool_value(true);
      f["origin"] = LogText(cps[1].origin);
      f["old_size"] = LogNumber(cps[0].size);
      f["new_size"] = LogNumber(cps[1].size);
      f["old_root"] = LogText(tlog::HashToBase64(cps[0].root));
      f["new_root"] = LogText(tlog::HashToBase64(cps[1].root));
      std::cout << ToJson(json) << "\n";
    } else {
      std::cout << "OK: " << *new_path << " (" << LogDescribe(cps[1]) << ") extends " << *old_path << " (" << LogDescribe(cps[0])
                << ")\n";
    }
    exit_code = kExitOk;
  });
}

// The proof bundle (docs/policyctl.md): {"index": N, "entry": "<base64>", "inclusion_proof": ["<base64>",
// ...], "checkpoint": "<signed note>"}; index a JSON number or a decimal string (protobuf's int64 mapping).
struct LogProofBundle {
  int64_t index = 0;
  std::string entry;
  tlog::Proof proof;
  std::string checkpoint;
};

absl::StatusOr<LogProofBundle> LogParseProofBundle(const std::string& json, const std::string& path) {
  const auto bad = [&path](absl::string_view why) { return absl::InvalidArgumentError(absl::StrCat(path, ": ", why)); };
  Struct doc;
  if (auto s = google::protobuf::util::JsonStringToMessage(json, &doc); !s.ok()) {
    return bad(absl::StrCat("not a JSON object: ", std::string(s.message())));
  }
  LogProofBundle bundle;
  const auto& f = doc.fields();
  for (const auto& [name, value] : f) {
    if (name != "index" && name != "entry" && name != "inclusion_proof" && name != "checkpoint") {
      return bad(absl::StrCat("unknown field \"", name, "\" (a proof bundle has index, entry, inclusion_proof, checkpoint)"));
    }
  }
  for (const char* required : {"index", "entry", "inclusion_proof", "checkpoint"}) {
    if (!f.contains(required)) return bad(absl::StrCat("missing \"", required, "\""));
  }
  const Value& index = f.at("index");
  if (index.has_number_value()) {
    const double d = index.number_value();
    if (!(d >= 0 && d <= 9007199254740992.0) || static_cast<double>(static_cast<int64_t>(d)) != d) {
      return bad("\"index\" is not a whole number from 0 to 2^53 (give larger ones as a decimal string)");
    }
    bundle.index = static_cast<int64_t>(d);
  } else if (!index.has_string_value() || !absl::SimpleAtoi(index.string_value(), &bundle.index) || bundle.index < 0) {
    return bad("\"index\" is not a non-negative integer");
  }
  if (!f.at("entry").has_string_value() || !absl::Base64Unescape(f.at("entry").string_value(), &bundle.entry)) {
    return bad("\"entry\" is not base64");
  }
  if (!f.at("inclusion_proof").has_list_value()) return bad("\"inclusion_proof\" is not a list");
  for (const Value& v : f.at("inclusion_proof").list_value().values()) {
    absl::StatusOr<tlog::Hash> h = v.has_string_value() ? tlog::HashFromBase64(v.string_value())
                                                        : absl::InvalidArgumentError("not a string");
    if (!h.ok()) return bad(absl::StrCat("inclusion_proof[", bundle.proof.size(), "] is not the base64 of 32 bytes"));
    bundle.proof.push_back(*h);
  }
  if (!f.at("checkpoint").has_string_value()) return bad("\"checkpoint\" is not a string");
  bundle.checkpoint = f.at("checkpoint").string_value();
  return bundle;
}

// The entry as text when it is printable ASCII on one line, else base64: an entry is whatever the log
// holds, and a newline, an escape sequence or a C1 control in it could write lines of its own ("OK: …").
std::string LogShowEntry(const std::string& entry) {
  // The gateway's entries are audit events' canonical bytes: shown as the event (docs/audit.md's JSON).
  if (absl::StatusOr<trust::AuditEvent> event = trust::ParseCanonicalAuditBytes(entry); event.ok()) {
    return ToJson(trust::ToProto(*event), /*pretty=*/true);
  }
  for (const char c : entry) {
    const auto u = static_cast<unsigned char>(c);
    if ((u < 0x20 && c != '\t') || u >= 0x7f) return "base64:" + absl::Base64Escape(entry);
  }
  return entry;
}

void AddLogVerifyProof(CLI::App& log, const Options& options, int& exit_code) {
  auto* cmd = log.add_subcommand("verify-proof",
                                 "Verify a proof bundle offline: the checkpoint's signatures and the entry's inclusion proof");
  auto path = std::make_shared<std::string>();
  auto flags = std::make_shared<LogTrustFlags>();
  cmd->add_option("file", *path, "the proof bundle, JSON (docs/policyctl.md)")->required();
  flags->Add(cmd, /*witnesses=*/true, /*log=*/false);
  cmd->callback([&options, &exit_code, path, flags] {
    LogContext ctx;
    if (std::optional<LogFailure> f = ctx.Open(*flags, options)) { exit_code = LogReport(options, *f); return; }
    const LogTrust* trust = &ctx.trust;
    absl::StatusOr<std::string> json = LogReadFile(*path);
    if (!json.ok()) { exit_code = LogReport(options, LogIo(json.status())); return; }
    absl::StatusOr<LogProofBundle> bundle = LogParseProofBundle(*json, *path);
    if (!bundle.ok()) { exit_code = LogReport(options, LogIo(bundle.status())); return; }
    Struct out;
    (*out.mutable_fields())["index"] = LogNumber(bundle->index);
    absl::StatusOr<tlog::OpenedCheckpoint> opened = trust->Open(bundle->checkpoint);
    if (!opened.ok()) {
      exit_code = LogReport(options, LogBad(absl::StrCat("the checkpoint does not verify: ", opened.status().message())), out);
      return;
    }
    const tlog::Checkpoint& cp = opened->checkpoint;
    if (bundle->index >= cp.size) {
      exit_code = LogReport(options, LogBad(absl::StrCat("entry ", bundle->index, " is beyond the checkpoint (size ", cp.size, ")")), out);
      return;
    }
    if (!tlog::CheckRecord(bundle->proof, cp.size, cp.root, bundle->index, tlog::RecordHash(bundle->entry)).ok()) {
      exit_code = LogReport(options, LogBad(absl::StrCat("the inclusion proof does not verify: entry ", bundle->index,
                                                         " is not proven in the tree of ", LogDescribe(cp))), out);
      return;
    }
    if (options.json()) {
      out = LogCheckpointJson(*opened, *trust->log);
      auto& f = *out.mutable_fields();
      f["ok"].set_bool_value(true);
      f["index"] = LogNumber(bundle->index);
      f["entry"] = LogText(absl::Base64Escape(bundle->entry));
      std::cout << ToJson(out) << "\n";
    } else {
      std::cout << "OK: entry " << bundle->index << " is in " << Shown(cp.origin) << " at " << LogDescribe(cp) << "\n"
                << LogShowEntry(bundle->entry) << "\n";
    }
    exit_code = kExitOk;
  });
}

// One monitoring step: from `prev` (the last verified checkpoint; size 0 when none) to the log's current
// checkpoint. On success `*next_note` is the checkpoint to record.
struct LogMonitorStep {
  tlog::Checkpoint next;
  std::string next_note;
  int64_t entries_verified = 0;
};

std::optional<LogFailure> LogMonitorOnce(const LogTrust& trust, const tlog::PathTileFetcher& source,
                                         const std::optional<tlog::Checkpoint>& prev, bool progress, LogMonitorStep* step,
                                         int64_t* first_bad_entry) {
  absl::StatusOr<std::string> note = source.Fetch("checkpoint");
  if (!note.ok()) return LogIo(note.status());
  absl::StatusOr<tlog::OpenedCheckpoint> opened = trust.Open(*note);
  if (!opened.ok()) return LogBad(absl::StrCat("the log's checkpoint does not verify: ", opened.status().message()));
  const tlog::Checkpoint& next = opened->checkpoint;
  step->next = next;
  step->next_note = *note;
  const int64_t begin = prev ? prev->size : 0;
  if (prev) {
    if (std::optional<LogFailure> f = LogCheckExtends(*prev, next, source, "the last verified checkpoint", "the log's checkpoint")) return f;
  }
  if (next.size <= begin) return std::nullopt;
  tlog::TileHashReader reader(next.size, next.root, source);
  int64_t last_progress = begin;
  for (int64_t k = begin / tlog::kTileWidth; k * tlog::kTileWidth < next.size; ++k) {
    const int64_t first = k * tlog::kTileWidth;
    const int width = static_cast<int>(std::min<int64_t>(tlog::kTileWidth, next.size - first));
    const int64_t from = std::max(first, begin);
    absl::StatusOr<std::vector<std::string>> data = source.ReadTiles({tlog::Tile{tlog::kEntriesLevel, k, width}});
    if (!data.ok()) {
      // Missing, or not a log's file (larger than any bundle; a full bundle read for a missing partial that
      // does not parse): the log's fault. Anything else (a server not reached, a file not readable here) is I/O.
      const absl::Status& why = data.status();
      if (!absl::IsNotFound(why) && !absl::IsDataLoss(why) && !absl::IsInvalidArgument(why)) return LogIo(why);
      *first_bad_entry = from;
      return LogBad(absl::StrCat("entry ", from, ": its entry bundle ", absl::IsNotFound(why) ? "is missing" : "is not one",
                                 " (", why.message(), ")"));
    }
    absl::StatusOr<std::vector<std::string>> entries = tlog::DecodeEntryBundle((*data)[0]);
    if (!entries.ok()) {
      *first_bad_entry = from;
      return LogBad(absl::StrCat("entry ", from, ": the entry bundle ", tlog::TilePath(tlog::Tile{tlog::kEntriesLevel, k, width}),
                                 " does not parse (", entries.status().message(), ")"));
    }
    std::vector<int64_t> indexes;
    for (int64_t i = from; i < first + width; ++i) indexes.push_back(tlog::StoredHashIndex(0, i));
    absl::StatusOr<std::vector<tlog::Hash>> hashes = reader.ReadHashes(indexes);
    if (!hashes.ok()) {
      LogFailure failure = LogTileFailure(hashes.status(), "the log's checkpoint", next);
      if (failure.exit_code == kExitRefused) {
        *first_bad_entry = from;
        failure.message = absl::StrCat("entry ", from, ": ", failure.message);
      }
      return failure;
    }
    for (int64_t i = from; i < first + width; ++i) {
      const size_t in_bundle = static_cast<size_t>(i - first);
      if (in_bundle >= entries->size()) {
        *first_bad_entry = i;
        return LogBad(absl::StrCat("entry ", i, " is missing: its bundle holds ", entries->size(), " entries, the tree ", width));
      }
      if (tlog::RecordHash((*entries)[in_bundle]) != (*hashes)[static_cast<size_t>(i - from)]) {
        *first_bad_entry = i;
        return LogBad(absl::StrCat("entry ", i, " does not match the tree: its bytes in the entry bundle do not hash to leaf ", i,
                                   " of the checkpoint (", LogDescribe(next), ") — rewritten, or an entry before it in its bundle dropped"));
      }
      // In the tree, and signed for: still, entry i must be audit event i + 1 (a log key's holder could
      // sign a tree that leaves an event out, repeats one or holds other bytes).
      absl::StatusOr<trust::AuditEvent> event = trust::ParseCanonicalAuditBytes((*entries)[in_bundle]);
      if (!event.ok()) {
        *first_bad_entry = i;
        return LogBad(absl::StrCat("entry ", i, " is in the tree but is ", event.status().message()));
      }
      if (event->seq != static_cast<uint64_t>(i) + 1) {
        *first_bad_entry = i;
        return LogBad(absl::StrCat("entry ", i, " is audit event ", event->seq, ", not event ", i + 1,
                                   " — an event left out, repeated or moved by whoever signed the checkpoint"));
      }
    }
    if (entries->size() != static_cast<size_t>(width)) {  // more than the tree has: no entry of it is wrong
      return LogBad(absl::StrCat("the entry bundle ", tlog::TilePath(tlog::Tile{tlog::kEntriesLevel, k, width}), " holds ",
                                 entries->size(), " entries, the tree ", width, " there (entries ", first, "..",
                                 first + width - 1, " verified)"));
    }
    step->entries_verified += first + width - from;
    if (progress && first + width - last_progress >= 16384) {
      std::cerr << "  verified entries " << begin << ".." << first + width - 1 << " of " << next.size << "\n";
      last_progress = first + width;
    }
  }
  return std::nullopt;
}

void AddLogMonitor(CLI::App& log, const Options& options, int& exit_code) {
  auto* cmd = log.add_subcommand(
      "monitor",
      "Follow a log from the last verified checkpoint in --state: verify the new checkpoint, its consistency "
      "with the last one and every new entry; record it. Exit 1 naming the first bad entry or checkpoint");
  auto state = std::make_shared<std::string>();
  auto follow = std::make_shared<bool>(false);
  auto interval = std::make_shared<std::string>("10s");
  auto flags = std::make_shared<LogTrustFlags>();
  cmd->add_option("--state", *state, "the last verified checkpoint (a signed note file; none: start from size 0), replaced atomically")
      ->required();
  cmd->add_flag("--follow", *follow, "keep monitoring every --interval until something does not verify");
  cmd->add_option("--interval", *interval, "time between checks with --follow (e.g. 10s, 500ms, 1m)")->capture_default_str();
  flags->Add(cmd);
  cmd->callback([&options, &exit_code, state, follow, interval, flags] {
    absl::Duration every;
    if (!absl::ParseDuration(*interval, &every) || every < absl::Milliseconds(100)) {
      exit_code = LogReport(options, LogIo(absl::InvalidArgumentError(
                                         absl::StrCat("--interval ", *interval, ": not a duration of 100ms or more"))));
      return;
    }
    LogContext ctx;
    if (std::optional<LogFailure> f = ctx.Open(*flags, options)) { exit_code = LogReport(options, *f); return; }
    const LogTrust* trust = &ctx.trust;
    std::optional<tlog::Checkpoint> prev;
    std::error_code state_error;
    const bool state_exists = std::filesystem::exists(*state, state_error);
    if (state_error) {
      exit_code = LogReport(options, LogIo(absl::UnavailableError(absl::StrCat(*state, ": ", state_error.message()))));
      return;
    }
    if (state_exists) {
      absl::StatusOr<std::string> note = LogReadFile(*state);
      if (!note.ok()) { exit_code = LogReport(options, LogIo(note.status())); return; }
      absl::StatusOr<tlog::OpenedCheckpoint> opened = trust->Open(*note);
      if (!opened.ok()) {
        exit_code = LogReport(options, LogIo(absl::InvalidArgumentError(
                                           absl::StrCat(*state, ": the recorded checkpoint does not verify: ", opened.status().message()))));
        return;
      }
      prev = opened->checkpoint;
    }
    if (!options.json()) {
      std::cerr << "monitoring " << flags->where << " from " << (prev ? absl::StrCat(Shown(prev->origin), " ", LogDescribe(*prev)) : "size 0 (no state yet)")
                << "\n";
    }
    for (;;) {
      LogMonitorStep step;
      int64_t first_bad_entry = -1;
      const int64_t from = prev ? prev->size : 0;
      std::optional<LogFailure> failure = LogMonitorOnce(*trust, *ctx.source, prev, !options.json(), &step, &first_bad_entry);
      if (failure) {
        Struct json;
        auto& f = *json.mutable_fields();
        f["checkpoint_size"] = LogNumber(step.next.size);
        f["verified_size"] = LogNumber(from);
        if (first_bad_entry >= 0) f["first_bad_entry"] = LogNumber(first_bad_entry);
        exit_code = LogReport(options, *failure, json);
        return;
      }
      const bool grew = !prev || step.next.size != prev->size;
      if (grew || !prev) {
        if (absl::Status s = policy::WriteFileAtomically(*state, step.next_note, 0600); !s.ok()) {
          exit_code = LogReport(options, LogIo(s));
          return;
        }
      }
      if (options.json()) {
        Struct json;
        auto& f = *json.mutable_fields();
        f["ok"].set_bool_value(true);
        f["origin"] = LogText(step.next.origin);
        f["size"] = LogNumber(step.next.size);
        f["root"] = LogText(tlog::HashToBase64(step.next.root));
        f["previous_size"] = LogNumber(from);
        f["entries_verified"] = LogNumber(step.entries_verified);
        std::cout << ToJson(json) << std::endl;
      } else if (grew && step.next.size > from) {
        std::cout << absl::FormatTime("%Y-%m-%dT%H:%M:%SZ ", absl::Now(), absl::UTCTimeZone()) << Shown(step.next.origin) << " "
                  << LogDescribe(step.next) << ": consistent with size " << from << "; entries " << from << ".."
                  << step.next.size - 1 << " verified (" << step.entries_verified << " new); recorded in " << *state << std::endl;
      } else {
        std::cout << absl::FormatTime("%Y-%m-%dT%H:%M:%SZ ", absl::Now(), absl::UTCTimeZone()) << Shown(step.next.origin) << " "
                  << LogDescribe(step.next) << ": no new entries" << std::endl;
      }
      prev = step.next;
      if (!*follow) break;
      std::this_thread::sleep_for(absl::ToChronoMilliseconds(every));
    }
    exit_code = kExitOk;
  });
}

// policyctl log prove --sandbox ID: the one log command that asks the gateway (the admin API's
// ProveSandbox), then checks what it answered exactly as the sandbox's client library would: the
// checkpoint's signatures, the inclusion proof of the entry, and that the entry names this sandbox and the
// projection the gateway serves it now.
void AddLogProve(CLI::App& log, const Options& options, int& exit_code) {
  auto* cmd = log.add_subcommand("prove",
                                 "Ask the gateway for the log's proof of a sandbox's served projection and verify it "
                                 "(checkpoint signatures, inclusion, the entry names the sandbox and its digest)");
  auto sandbox = std::make_shared<std::string>();
  auto out_path = std::make_shared<std::string>();
  auto flags = std::make_shared<LogTrustFlags>();
  cmd->add_option("--sandbox", *sandbox, "the sandbox id")->required();
  cmd->add_option("--out", *out_path, "also write the proof bundle (JSON) for `log verify-proof` to FILE");
  flags->Add(cmd, /*witnesses=*/true, /*log=*/false);
  cmd->callback([&options, &exit_code, sandbox, out_path, flags] {
    LogContext ctx;
    if (std::optional<LogFailure> f = ctx.Open(*flags, options)) { exit_code = LogReport(options, *f); return; }
    auto stub = AdminStub(options);
    if (!stub) { exit_code = kExitUsage; return; }
    gw_v1::GetSandboxRequest get;
    get.set_sandbox_id(*sandbox);
    gw_v1::SandboxInfo info;
    if (grpc::Status s = stub->GetSandbox(MakeContext(options).get(), get, &info); !s.ok()) {
      exit_code = ReportRpcError(s);
      return;
    }
    gw_v1::ProveSandboxRequest request;
    request.set_sandbox_id(*sandbox);
    gw_v1::LogProof proof;
    if (grpc::Status s = stub->ProveSandbox(MakeContext(options).get(), request, &proof); !s.ok()) {
      exit_code = ReportRpcError(s);
      return;
    }
    const trust::AuditEvent entry_event = trust::FromProto(proof.entry());
    const std::string entry = trust::CanonicalAuditBytes(entry_event);
    tlog::Proof inclusion;
    for (const std::string& h : proof.inclusion_proof()) {
      absl::StatusOr<tlog::Hash> hash = tlog::HashFromBytes(h);
      if (!hash.ok()) { exit_code = LogReport(options, LogBad("the inclusion proof holds a hash that is not 32 bytes")); return; }
      inclusion.push_back(*hash);
    }
    Struct out;
    (*out.mutable_fields())["sandbox_id"] = LogText(*sandbox);
    (*out.mutable_fields())["index"] = LogNumber(static_cast<int64_t>(proof.index()));
    absl::StatusOr<tlog::OpenedCheckpoint> opened = ctx.trust.Open(proof.checkpoint());
    if (!opened.ok()) {
      exit_code = LogReport(options, LogBad(absl::StrCat("the checkpoint does not verify: ", opened.status().message())), out);
      return;
    }
    const tlog::Checkpoint& cp = opened->checkpoint;
    const int64_t index = static_cast<int64_t>(proof.index());
    std::optional<LogFailure> failure;
    if (proof.entry().seq() != proof.index() + 1) {
      failure = LogBad(absl::StrCat("the entry is audit event ", proof.entry().seq(), ", not event ", index + 1, " at index ", index));
    } else if (index >= cp.size) {
      failure = LogBad(absl::StrCat("entry ", index, " is beyond the checkpoint (size ", cp.size, ")"));
    } else if (!tlog::CheckRecord(inclusion, cp.size, cp.root, index, tlog::RecordHash(entry)).ok()) {
      failure = LogBad(absl::StrCat("the inclusion proof does not verify: entry ", index, " is not proven in the tree of ",
                                    LogDescribe(cp)));
    } else if (proof.entry().sandbox_id() != *sandbox) {
      failure = LogBad(absl::StrCat("entry ", index, " names sandbox '", proof.entry().sandbox_id(), "', not '", *sandbox, "'"));
    } else if (!trust::audit::PutInForce(entry_event.type, entry_event.outcome)) {
      failure = LogBad(absl::StrCat("entry ", index, " is a '", entry_event.type.name(), "' event with outcome '",
                                    entry_event.outcome.name(), "', not one that put a projection in force"));
    } else if (proof.entry().policy_digest() != info.policy_digest() ||
               proof.entry().policy_version() != info.policy_version()) {
      failure = LogBad(absl::StrCat("entry ", index, " names policy digest ", proof.entry().policy_digest(), " version ",
                                    proof.entry().policy_version(), " but the gateway serves the sandbox ",
                                    info.policy_digest(), " version ", info.policy_version()));
    }
    if (failure) { exit_code = LogReport(options, *failure, out); return; }
    if (!out_path->empty()) {
      Struct bundle;
      auto& b = *bundle.mutable_fields();
      b["index"] = LogNumber(index);
      b["entry"] = LogText(absl::Base64Escape(entry));
      for (const tlog::Hash& h : inclusion) *b["inclusion_proof"].mutable_list_value()->add_values() = LogText(tlog::HashToBase64(h));
      if (inclusion.empty()) b["inclusion_proof"].mutable_list_value();
      b["checkpoint"] = LogText(proof.checkpoint());
      if (absl::Status w = WriteFileAtomically(*out_path, ToJson(bundle, /*pretty=*/true) + "\n", 0644); !w.ok()) {
        exit_code = LogReport(options, LogIo(w));
        return;
      }
    }
    if (options.json()) {
      out = LogCheckpointJson(*opened, *ctx.trust.log);
      auto& f = *out.mutable_fields();
      f["ok"].set_bool_value(true);
      f["sandbox_id"] = LogText(*sandbox);
      f["index"] = LogNumber(index);
      f["type"] = LogText(proof.entry().type());
      f["policy_digest"] = LogText(proof.entry().policy_digest());
      f["policy_version"] = LogNumber(static_cast<int64_t>(proof.entry().policy_version()));
      std::cout << ToJson(out) << "\n";
    } else {
      std::cout << "OK: sandbox " << *sandbox << " is served " << proof.entry().policy_digest() << " (version "
                << proof.entry().policy_version() << "), logged as entry " << index << " (" << proof.entry().type()
                << ") of " << Shown(cp.origin) << " at " << LogDescribe(cp) << "\n";
      for (const auto& [name, time] : LogCosigners(*opened, *ctx.trust.log)) {
        std::cout << "  cosigned by " << name << (time.empty() ? "" : " at ") << time << "\n";
      }
    }
    exit_code = kExitOk;
  });
}

}  // namespace

void AddLogCommands(CLI::App& app, const Options& options, int& exit_code) {
  auto* log = app.add_subcommand("log", "The verifiable log, as published static files (a directory or an http(s) URL): "
                                        "keygen, checkpoint, consistency, verify-proof, monitor; and prove, which asks the gateway. Exit 1: does not verify");
  log->require_subcommand(1);
  AddLogKeygen(*log, options, exit_code);
  AddLogCheckpoint(*log, options, exit_code);
  AddLogConsistency(*log, options, exit_code);
  AddLogVerifyProof(*log, options, exit_code);
  AddLogMonitor(*log, options, exit_code);
  AddLogProve(*log, options, exit_code);
}

}  // namespace osh::cli
