#include "sandbox_client/log_proof.h"

#include <sys/stat.h>

#include <cerrno>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/bounded_text.h"
#include "common/errors.h"
#include "sandbox_client/private_file.h"
#include "tlog/checkpoint.h"
#include "tlog/cosignature.h"
#include "trust/audit_chain.h"

namespace osh::sandbox_client {
namespace {

constexpr char kLogStateHeader[] = "openshell.sandbox_client.log.v1";
constexpr char kInvalid[] = "log_proof_invalid";
constexpr char kForked[] = "log_forked";
constexpr char kForkHeader[] = "openshell.sandbox_client.log-fork.v1";

// `what` quotes what the gateway sent (a sandbox id, a digest, an event's type): bounded and escaped.
absl::Status Invalid(const std::string& what) {
  return common::Refused(absl::StatusCode::kFailedPrecondition, kInvalid, common::BoundedText(what, 4096));
}

absl::Status LogStateError(const std::string& path, const std::string& why) {
  return absl::FailedPreconditionError(
      absl::StrCat("log state file ", path, ": ", why,
                   " (it holds the newest log checkpoint verified, so that a forked or rolled-back log is caught; it is "
                   "never read as 'nothing seen': restore it, or remove it knowingly)"));
}

absl::StatusOr<tlog::Proof> HashesOf(const google::protobuf::RepeatedPtrField<std::string>& bytes, const char* what) {
  tlog::Proof proof;
  for (const auto& b : bytes) {
    auto hash = tlog::HashFromBytes(b);
    if (!hash.ok()) return Invalid(absl::StrCat(what, ": not a list of 32-byte hashes"));
    proof.push_back(*hash);
  }
  return proof;
}

}  // namespace

absl::StatusOr<std::unique_ptr<LogProofVerifier>> LogProofVerifier::Create(LogProofOptions options) {
  auto log = tlog::ParseVerifierKey(options.log_key);
  if (!log.ok()) return absl::InvalidArgumentError(absl::StrCat("log key: ", log.status().message()));
  std::vector<std::unique_ptr<tlog::NoteVerifier>> witnesses;
  for (const auto& key : options.witness_keys) {
    auto witness = tlog::ParseVerifierKey(key);
    if (!witness.ok()) return absl::InvalidArgumentError(absl::StrCat("witness key: ", witness.status().message()));
    witnesses.push_back(*std::move(witness));
  }
  if (dynamic_cast<const tlog::Ed25519NoteVerifier*>(log->get()) == nullptr) {
    return absl::InvalidArgumentError("log key: not an Ed25519 note key (type 0x01); a log signs with one");
  }
  std::vector<const tlog::NoteVerifier*> cosigners;
  for (const auto& w : witnesses) cosigners.push_back(w.get());
  if (absl::Status distinct = tlog::CheckCosigners(cosigners, log->get()); !distinct.ok()) return distinct;
  if (options.witness_quorum > witnesses.size()) {
    return absl::InvalidArgumentError(absl::StrCat("witness quorum ", options.witness_quorum, " is above the ",
                                                   witnesses.size(), " witness key(s) given"));
  }
  if (options.witness_quorum == 0 && !witnesses.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "witness quorum 0 with ", witnesses.size(), " witness key(s): no cosignature would be required, so the "
        "witnesses would guard nothing; give a quorum of 1 to ", witnesses.size(), ", or no witness key"));
  }
  std::unique_ptr<LogProofVerifier> verifier(
      new LogProofVerifier(std::move(options), *std::move(log), std::move(witnesses)));
  const std::string& path = verifier->options_.state_file;
  if (path.empty()) return verifier;
  auto read = ReadPrivateFile(path, 4096);
  if (!read.ok()) {
    if (absl::IsPermissionDenied(read.status())) {  // its folder: nothing to restore or remove
      return absl::FailedPreconditionError(absl::StrCat("log state file ", path, ": ", read.status().message()));
    }
    return LogStateError(path, std::string(read.status().message()));
  }
  if (!read->has_value()) return verifier;  // a first start: nothing seen yet
  const std::vector<absl::string_view> lines = absl::StrSplit(**read, '\n');
  uint64_t size = 0;
  absl::string_view size_text = lines.size() == 4 ? lines[1] : "";
  absl::string_view root_text = lines.size() == 4 ? lines[2] : "";
  if (lines.size() != 4 || lines[0] != kLogStateHeader || !lines[3].empty() ||
      !absl::ConsumePrefix(&size_text, "size ") || !absl::ConsumePrefix(&root_text, "root ")) {
    return LogStateError(path, absl::StrCat("corrupt: expected the lines '", kLogStateHeader, "', 'size N', 'root B64'"));
  }
  // Written only for a checkpoint that proved an entry: 1 to 2^62 entries, in decimal digits.
  if (size_text.empty() || size_text.find_first_not_of("0123456789") != absl::string_view::npos ||
      !absl::SimpleAtoi(size_text, &size) || size == 0 || size > static_cast<uint64_t>(tlog::kMaxTreeSize)) {
    return LogStateError(path, "corrupt: bad size line (1 to 2^62 entries, in decimal digits)");
  }
  auto root = tlog::HashFromBase64(root_text);
  if (!root.ok()) return LogStateError(path, "corrupt: bad root line");
  verifier->known_size_ = size;
  verifier->known_root_ = *root;
  return verifier;
}

absl::Status LogProofVerifier::Check(const openshell::policy::gateway::v1::LogProof& proof,
                                     const openshell::policy::driver::v1::Projection& projection,
                                     const std::string& sandbox_id) {
  std::vector<const tlog::NoteVerifier*> cosigners;
  for (const auto& w : witnesses_) cosigners.push_back(w.get());
  auto opened = tlog::OpenCheckpoint(proof.checkpoint(), log_->name(), *log_, cosigners, options_.witness_quorum);
  if (!opened.ok()) return Invalid(absl::StrCat("the checkpoint: ", opened.status().message()));
  const tlog::Checkpoint& checkpoint = opened->checkpoint;
  // The entry: this sandbox, exactly the projection offered, at the index it claims.
  const auto& entry = proof.entry();
  if (entry.sandbox_id() != sandbox_id) {
    return Invalid(absl::StrCat("the entry names sandbox '", entry.sandbox_id(), "', not this one ('", sandbox_id, "')"));
  }
  if (entry.policy_digest() != projection.policy_digest() || entry.policy_version() != projection.policy_version()) {
    return Invalid(absl::StrCat("the entry names policy ", entry.policy_digest(), " version ", entry.policy_version(),
                                ", not the projection offered (", projection.policy_digest(), " version ",
                                projection.policy_version(), ")"));
  }
  const trust::AuditEvent event = trust::FromProto(entry);
  if (!trust::audit::PutInForce(event.type, event.outcome)) {
    return Invalid(absl::StrCat("the entry is a '", event.type.name(), "' event with outcome '", event.outcome.name(),
                                "', not one that put a projection in force (an admission, a refresh or a "
                                "re-projection that succeeded)"));
  }
  if (entry.seq() == 0 || proof.index() != entry.seq() - 1) {
    return Invalid(absl::StrCat("the entry is event ", entry.seq(), " but claims index ", proof.index()));
  }
  auto inclusion = HashesOf(proof.inclusion_proof(), "inclusion proof");
  if (!inclusion.ok()) return inclusion.status();
  const tlog::Hash leaf = tlog::RecordHash(trust::CanonicalAuditBytes(event));
  if (static_cast<int64_t>(proof.index()) >= checkpoint.size ||
      !tlog::CheckRecord(*inclusion, checkpoint.size, checkpoint.root, static_cast<int64_t>(proof.index()), leaf).ok()) {
    return Invalid(absl::StrCat("entry ", proof.index(), " is not in the checkpoint's tree of ", checkpoint.size,
                                " entries"));
  }
  // The checkpoint extends every one seen before: never smaller, never another tree of the same size.
  const uint64_t size = static_cast<uint64_t>(checkpoint.size);
  if (size < known_size_) {
    return Invalid(absl::StrCat("the checkpoint covers ", size, " entries, fewer than the ", known_size_,
                                " of one verified before (a rolled-back or forked log)"));
  }
  if (size == known_size_ && checkpoint.root != known_root_) {
    // Two trees of one size, each signed with the log key (and cosigned by the quorum): the log is forked.
    // Never a stale message or a bad proof, so refused as such (the client does not ask again), and the
    // first such checkpoint is kept beside the state file for whoever investigates.
    std::string kept;
    if (!options_.state_file.empty()) {
      const std::string evidence = options_.state_file + ".fork";
      struct stat st {};
      if (::lstat(evidence.c_str(), &st) != 0 && errno == ENOENT) {  // the first fork seen is the one kept
        const std::string text = absl::StrCat(kForkHeader, "\nknown size ", known_size_, "\nknown root ",
                                              tlog::HashToBase64(known_root_), "\n", proof.checkpoint());
        if (WritePrivateFileAtomically(evidence, text, "log fork evidence").ok()) {
          kept = absl::StrCat("; the checkpoint is kept in ", evidence);
        }
      }
    }
    return common::Refused(
        absl::StatusCode::kFailedPrecondition, kForked,
        absl::StrCat("the checkpoint of ", size, " entries has root ", tlog::HashToBase64(checkpoint.root),
                     ", the one verified before root ", tlog::HashToBase64(known_root_),
                     ": the log key signed two trees of one size (a forked log)", kept));
  }
  if (size > known_size_ && known_size_ > 0) {
    auto consistency = HashesOf(proof.consistency_proof(), "consistency proof");
    if (!consistency.ok()) return consistency.status();
    if (!tlog::CheckTree(*consistency, checkpoint.size, checkpoint.root, static_cast<int64_t>(known_size_), known_root_)
             .ok()) {
      return Invalid(absl::StrCat("the checkpoint of ", size, " entries does not extend the one of ", known_size_,
                                  " verified before (a forked log)"));
    }
  }
  const bool moved = size != known_size_;
  // Verified and extending what was known: held from now on whether or not it reaches the disk (a failed
  // write may have replaced the file all the same; the file, if older, is extended by this one).
  known_size_ = size;
  known_root_ = checkpoint.root;
  if ((moved || unsaved_) && !options_.state_file.empty()) {
    const std::string text =
        absl::StrCat(kLogStateHeader, "\nsize ", size, "\nroot ", tlog::HashToBase64(checkpoint.root), "\n");
    absl::Status saved = WritePrivateFileAtomically(options_.state_file, text, "log state file");
    unsaved_ = !saved.ok();
    return saved;
  }
  return absl::OkStatus();
}

}  // namespace osh::sandbox_client
