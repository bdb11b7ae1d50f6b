#include "tests/log_fixture.h"

#include <stdexcept>

#include "absl/strings/str_cat.h"
#include "trust/audit_chain.h"

namespace osh::test {
namespace {

template <typename T>
T TestLogValue(absl::StatusOr<T> v, absl::string_view what) {
  if (!v.ok()) throw std::runtime_error(absl::StrCat("test log: ", what, ": ", v.status().ToString()));
  return *std::move(v);
}

}  // namespace

TestLog::TestLog(std::string dir, std::string origin, std::string variant)
    : dir_(std::move(dir)),
      origin_(std::move(origin)),
      variant_(std::move(variant)),
      key_(TestLogValue(tlog::Ed25519PrivateKey::Generate(), "key")),
      signer_(TestLogValue(tlog::Ed25519NoteSigner::Create(origin_, key_), "signer")) {}

std::string TestLog::EntryText(int64_t i) const {
  // As the gateway's log holds them: audit event i + 1's canonical bytes (policyctl log monitor checks that).
  trust::AuditEvent event;
  event.seq = static_cast<uint64_t>(i) + (event_left_out_at >= 0 && i >= event_left_out_at ? 2 : 1);
  event.time_unix_ms = 1'000'000 + i;
  event.type = trust::audit::Type::kReport;
  event.outcome = trust::audit::Outcome::kOk;
  event.sandbox_id = absl::StrCat("sb-", i % 7);
  event.reason = absl::StrCat("test entry ", i, variant_, " ", std::string(static_cast<size_t>(i % 40), 'x'));
  return trust::CanonicalAuditBytes(event);
}

absl::StatusOr<std::vector<std::string>> TestLog::ReadEntries(int64_t begin, int64_t end) const {
  std::vector<std::string> out;
  for (int64_t i = begin; i < end; ++i) out.push_back(EntryText(i));
  return out;
}

std::string TestLog::Grow(int64_t size) {
  while (store_.size() < size) store_.Append(EntryText(store_.size()));
  const std::string note = CheckpointAt(size);
  if (!dir_.empty()) {
    tlog::TileWriteOptions options;
    options.sync = false;
    TestLogValue(tlog::WriteTiles(dir_, published_, size, store_, *this, options), "write tiles");
    published_ = size;
    if (absl::Status s = tlog::WriteFileAtomically(dir_ + "/checkpoint", note, false); !s.ok()) {
      throw std::runtime_error(s.ToString());
    }
  }
  return note;
}

std::string TestLog::Sign(int64_t size, const tlog::Hash& root) const {
  const tlog::NoteSigner* signers[] = {signer_.get()};
  return TestLogValue(tlog::SignCheckpoint(tlog::Checkpoint{origin_, size, root, {}}, signers), "sign");
}

std::string TestLog::CheckpointAt(int64_t size) const { return Sign(size, Root(size)); }

tlog::Hash TestLog::Root(int64_t size) const { return TestLogValue(tlog::TreeHash(size, store_), "tree hash"); }

tlog::Proof TestLog::Consistency(int64_t old_size, int64_t size) const {
  if (old_size == 0) return {};
  return TestLogValue(tlog::ProveTree(size, old_size, store_), "consistency proof");
}

tlog::Proof TestLog::Inclusion(int64_t index, int64_t size) const {
  return TestLogValue(tlog::ProveRecord(size, index, store_), "inclusion proof");
}

std::string TestLog::VerifierKey() const { return signer_->VerifierKey(); }

}  // namespace osh::test
