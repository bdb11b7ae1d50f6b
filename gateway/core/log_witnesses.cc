#include "gateway/core/log_witnesses.h"

#include <thread>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/bounded_text.h"
#include "common/http_client.h"
#include "tlog/checkpoint.h"
#include "tlog/cosignature.h"
#include "witness/witness.h"

namespace osh::gateway {
namespace {

// A witness answers with signature lines only; anything longer than this is not one.
constexpr size_t kMaxWitnessAnswer = 16 * 1024;

struct SplitUrl {
  std::string origin;  // scheme://host[:port]
  std::string prefix;  // the path before /add-checkpoint, without a trailing '/'
};

absl::StatusOr<SplitUrl> SplitWitnessUrl(const std::string& url) {
  const bool http = absl::StartsWith(url, "http://"), https = absl::StartsWith(url, "https://");
  if (!http && !https) return absl::InvalidArgumentError(absl::StrCat("'", url, "' is not an http:// or https:// URL"));
  const size_t host_begin = url.find("://") + 3;
  const size_t path_begin = url.find('/', host_begin);
  SplitUrl split;
  split.origin = url.substr(0, path_begin);
  if (split.origin.size() == host_begin) return absl::InvalidArgumentError(absl::StrCat("'", url, "' names no host"));
  if (path_begin != std::string::npos) split.prefix = std::string(absl::StripSuffix(url.substr(path_begin), "/"));
  for (char c : url) {
    if (static_cast<unsigned char>(c) <= ' ' || c == '?' || c == '#') {
      return absl::InvalidArgumentError(absl::StrCat("'", url, "': no spaces, queries or fragments in a witness URL"));
    }
  }
  return split;
}

}  // namespace

struct LogWitnesses::Witness {
  LogWitnessConfig config;
  std::string origin;  // scheme://host[:port] of config.url
  std::string prefix;  // its path before /add-checkpoint
  std::unique_ptr<tlog::NoteVerifier> verifier;
  // Guarded by the owner's status_mu_ (read by Status, written by Collect's round).
  int64_t cosigned_size = -1;
  std::string last_error;
  absl::Time retry_at = absl::InfinitePast();
};

absl::StatusOr<LogWitnessConfig> ParseLogWitness(const std::string& item) {
  const std::vector<std::string> fields = absl::StrSplit(item, ' ', absl::SkipEmpty());
  if (fields.size() != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", item, "': expected '<url> <verifier key>' (the witness's add-checkpoint prefix and its "
                                "cosignature verifier key, as policy-log-witness prints it)"));
  }
  if (auto url = SplitWitnessUrl(fields[0]); !url.ok()) return url.status();
  auto verifier = tlog::ParseVerifierKey(fields[1]);
  if (!verifier.ok()) return absl::InvalidArgumentError(absl::StrCat("'", fields[1], "': ", verifier.status().message()));
  if (dynamic_cast<const tlog::CosignatureV1Verifier*>(verifier->get()) == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("'", fields[1], "' is not a cosignature/v1 key (type 0x04): a "
                                                   "witness cosigns with one"));
  }
  return LogWitnessConfig{fields[0], fields[1]};
}

absl::StatusOr<std::unique_ptr<LogWitnesses>> LogWitnesses::Create(const std::vector<LogWitnessConfig>& witnesses,
                                                                   Options options) {
  std::vector<std::unique_ptr<Witness>> built;
  std::vector<const tlog::NoteVerifier*> cosigners;
  for (const LogWitnessConfig& config : witnesses) {
    auto parsed = ParseLogWitness(absl::StrCat(config.url, " ", config.verifier_key));
    if (!parsed.ok()) return parsed.status();
    auto witness = std::make_unique<Witness>();
    witness->config = config;
    const SplitUrl split = *SplitWitnessUrl(config.url);
    witness->origin = split.origin;
    witness->prefix = split.prefix;
    witness->verifier = *tlog::ParseVerifierKey(config.verifier_key);
    cosigners.push_back(witness->verifier.get());
    built.push_back(std::move(witness));
  }
  if (absl::Status distinct = tlog::CheckCosigners(cosigners); !distinct.ok()) return distinct;
  return std::unique_ptr<LogWitnesses>(new LogWitnesses(std::move(built), options));
}

LogWitnesses::LogWitnesses(std::vector<std::unique_ptr<Witness>> witnesses, Options options)
    : options_(options), witnesses_(std::move(witnesses)) {}

LogWitnesses::~LogWitnesses() = default;

std::vector<const tlog::NoteVerifier*> LogWitnesses::verifiers() const {
  std::vector<const tlog::NoteVerifier*> verifiers;
  for (const auto& witness : witnesses_) verifiers.push_back(witness->verifier.get());
  return verifiers;
}

namespace {

struct Answer {
  int status = 0;       // 0: no HTTP answer
  std::string body;
  std::string error;    // transport error, or why the answer is not one
};

Answer PostAddCheckpoint(const SplitUrl& url, const std::string& body, absl::Duration timeout) {
  // Bounded whole (common/http_client.h): a witness, or anything on the path to it, trickling bytes or
  // sending endless headers holds the round, and the checkpoint's publication, for `timeout` at most.
  common::HttpLimits limits;
  limits.timeout = timeout;
  limits.max_header_bytes = kMaxWitnessAnswer;
  limits.max_body_bytes = kMaxWitnessAnswer;
  auto answered = common::HttpPost(url.origin + url.prefix + witness::kAddCheckpointPath, body,
                                   "text/plain; charset=utf-8", limits);
  Answer answer;
  if (!answered.ok()) {
    answer.error = common::BoundedText(answered.status().message(), 512);
    return answer;
  }
  answer.status = answered->status;
  answer.body = std::move(answered->body);
  return answer;
}

}  // namespace

std::vector<tlog::NoteSignature> LogWitnesses::Collect(const std::string& note, int64_t size, const Prover& prove) {
  absl::MutexLock round(&collect_mu_);
  const absl::Time now = absl::Now();
  struct Outcome {
    bool asked = false;
    std::optional<tlog::NoteSignature> cosignature;
    int64_t cosigned_size = -1;
    std::string error;
  };
  std::vector<Outcome> outcomes(witnesses_.size());
  std::vector<int64_t> start_sizes(witnesses_.size());
  {
    absl::MutexLock lock(&status_mu_);
    for (size_t i = 0; i < witnesses_.size(); ++i) {
      outcomes[i].asked = witnesses_[i]->retry_at <= now;
      start_sizes[i] = std::max<int64_t>(witnesses_[i]->cosigned_size, 0);
    }
  }
  auto ask = [&](size_t i) {
    Witness& witness = *witnesses_[i];
    Outcome& outcome = outcomes[i];
    int64_t old_size = start_sizes[i];
    for (int attempt = 0; attempt < 2; ++attempt) {
      if (old_size > size) {
        outcome.error = absl::StrCat("it holds a checkpoint of ", old_size, " entries, more than this log's ", size,
                                     " here: another replica on this database is ahead (this one catches up by "
                                     "itself), or the witness saw another log under this origin (a fork, or this "
                                     "log rolled back)");
        return;
      }
      tlog::Proof proof;
      if (old_size > 0 && old_size < size) {
        auto proven = prove(old_size, size);
        if (!proven.ok()) {
          outcome.error = absl::StrCat("consistency proof from ", old_size, ": ", proven.status().message());
          return;
        }
        proof = *std::move(proven);
      }
      const Answer answer = PostAddCheckpoint(SplitUrl{witness.origin, witness.prefix},
                                              witness::FormatAddCheckpointRequest(old_size, proof, note),
                                              options_.timeout);
      if (answer.status == 0) {
        outcome.error = answer.error;
        return;
      }
      if (answer.status == 409) {
        // The witness holds another size: its body says which (C2SP: text/x.tlog.size). Once more from there.
        int64_t held = 0;
        if (!absl::SimpleAtoi(absl::StripSuffix(answer.body, "\n"), &held) || held < 0) {
          // C2SP tlog-witness: a 409 at the size it holds, with another root, carries no size.
          outcome.error = old_size == size
                              ? absl::StrCat("409 at size ", size, ": it holds another tree of that size (a fork): ",
                                             common::BoundedText(absl::StripSuffix(answer.body, "\n"), 200))
                              : "409 without the size it holds";
          return;
        }
        if (held == old_size) {  // same size, another root: it cosigned a fork of this log
          outcome.error = absl::StrCat("409 at size ", held, ": it holds another tree of that size (a fork)");
          return;
        }
        if (attempt > 0) break;  // it moved again between two answers
        old_size = held;
        continue;
      }
      if (answer.status != 200) {
        outcome.error = absl::StrCat("HTTP ", answer.status, ": ", common::BoundedText(absl::StripSuffix(answer.body, "\n"), 200));
        return;
      }
      // Its lines must be signature lines only (OpenNote refuses any other line after the note's), with a
      // cosignature by its own key over exactly this checkpoint's text: an answer that starts with a blank
      // line makes the note's text another (the checkpoint with the log's signature line), over which its
      // line would verify — and every client that knows the witness would refuse the checkpoint published
      // with it.
      const std::string text = note.substr(0, note.find("\n\n") + 1);
      const tlog::NoteVerifier* known[] = {witness.verifier.get()};
      auto opened = tlog::OpenNote(note + answer.body, known);
      if (opened.ok() && opened->text != text) {
        outcome.error = "answered 200 with a cosignature over other text than the checkpoint";
        return;
      }
      if (!opened.ok() || opened->verified.empty()) {
        outcome.error = absl::StrCat("answered 200 without a cosignature that verifies with its key",
                                     opened.ok() ? "" : absl::StrCat(" (", opened.status().message(), ")"));
        return;
      }
      outcome.cosignature = opened->verified.front();
      outcome.cosigned_size = size;
      return;
    }
    outcome.error = "409 twice";
  };
  std::vector<std::thread> threads;
  for (size_t i = 0; i < witnesses_.size(); ++i) {
    if (outcomes[i].asked) threads.emplace_back(ask, i);
  }
  for (auto& thread : threads) thread.join();

  std::vector<tlog::NoteSignature> cosignatures;
  std::vector<std::string> changes;
  {
    absl::MutexLock lock(&status_mu_);
    for (size_t i = 0; i < witnesses_.size(); ++i) {
      Witness& witness = *witnesses_[i];
      const Outcome& outcome = outcomes[i];
      if (!outcome.asked) continue;
      const std::string who = absl::StrCat("witness ", witness.verifier->name(), " (", witness.config.url, "): ");
      if (outcome.cosignature) {
        if (!witness.last_error.empty()) changes.push_back(absl::StrCat(who, "cosigning again at size ", size));
        witness.cosigned_size = outcome.cosigned_size;
        witness.last_error.clear();
        witness.retry_at = absl::InfinitePast();
        cosignatures.push_back(*outcome.cosignature);
      } else {
        if (witness.last_error != outcome.error) {
          changes.push_back(absl::StrCat(who, outcome.error, "; checkpoints are published without its cosignature"));
        }
        witness.last_error = outcome.error;
        witness.retry_at = now + options_.retry_after;
      }
    }
  }
  if (on_change_) {
    for (const auto& change : changes) on_change_(change);
  }
  return cosignatures;
}

std::vector<LogWitnesses::WitnessStatus> LogWitnesses::Status() const {
  absl::MutexLock lock(&status_mu_);
  std::vector<WitnessStatus> out;
  for (const auto& witness : witnesses_) {
    out.push_back({witness->config.url, witness->verifier->name(), witness->cosigned_size, witness->last_error});
  }
  return out;
}

}  // namespace osh::gateway
