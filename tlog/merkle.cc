#include "tlog/merkle.h"

#include <openssl/evp.h>

#include <bit>
#include <cstring>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace osh::tlog {

namespace merkle_internal {

// One SHA-256 context per thread, the algorithm fetched once.
class Sha256 {
 public:
  Sha256() : md_(EVP_MD_fetch(nullptr, "SHA256", nullptr)), ctx_(EVP_MD_CTX_new()) {}
  ~Sha256() {
    EVP_MD_CTX_free(ctx_);
    EVP_MD_free(md_);
  }
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  Hash Of(uint8_t prefix, absl::string_view a, absl::string_view b = {}) {
    Hash out{};
    unsigned int len = 0;
    // With a valid context and fetched digest these calls do not fail; a failure leaves zeroes, which
    // match no real hash and so fail every check downstream rather than pass one.
    if (EVP_DigestInit_ex2(ctx_, md_, nullptr) == 1 && EVP_DigestUpdate(ctx_, &prefix, 1) == 1 &&
        EVP_DigestUpdate(ctx_, a.data(), a.size()) == 1 && (b.empty() || EVP_DigestUpdate(ctx_, b.data(), b.size()) == 1)) {
      EVP_DigestFinal_ex(ctx_, out.data(), &len);
    }
    return out;
  }

 private:
  EVP_MD* md_;
  EVP_MD_CTX* ctx_;
};

Sha256& ThreadSha256() {
  thread_local Sha256 sha;
  return sha;
}

// The largest power of two strictly below n (n >= 2), and its log2.
std::pair<int64_t, int> MaxPow2(int64_t n) {
  if (n < 2) return {1, 0};
  const uint64_t p = std::bit_floor(static_cast<uint64_t>(n - 1));  // no shift past the type's width
  return {static_cast<int64_t>(p), std::countr_zero(p)};
}

absl::Status ProofFailed() { return absl::PermissionDeniedError("invalid transparency proof"); }

absl::Status CountMismatch(size_t want, size_t got) {
  return absl::DataLossError(absl::StrCat("tlog: ReadHashes(", want, " indexes) = ", got, " hashes"));
}

// The stored-hash indexes of the complete subtrees covering [lo, hi), left to right.
void SubTreeIndex(int64_t lo, int64_t hi, std::vector<int64_t>& need) {
  while (lo < hi) {
    const auto [k, level] = MaxPow2(hi - lo + 1);
    need.push_back(StoredHashIndex(level, lo >> level));
    lo += k;
  }
}

// Folds the hashes SubTreeIndex(lo, hi) asked for (starting at `pos`) into the hash of [lo, hi).
Hash SubTreeHash(int64_t lo, int64_t hi, const std::vector<Hash>& hashes, size_t& pos) {
  size_t count = 0;
  while (lo < hi) {
    lo += MaxPow2(hi - lo + 1).first;
    ++count;
  }
  Hash h = hashes[pos + count - 1];
  for (size_t i = count - 1; i-- > 0;) h = NodeHash(hashes[pos + i], h);
  pos += count;
  return h;
}

// Runs the first `len` hashes of the proof over [lo, hi); the last of them is the top sibling.
absl::StatusOr<Hash> RunRecordProof(const Proof& p, size_t len, int64_t lo, int64_t hi, int64_t n, const Hash& leaf) {
  if (lo + 1 == hi) {
    if (len != 0) return ProofFailed();
    return leaf;
  }
  if (len == 0) return ProofFailed();
  const int64_t k = MaxPow2(hi - lo).first;
  if (n < lo + k) {
    absl::StatusOr<Hash> th = RunRecordProof(p, len - 1, lo, lo + k, n, leaf);
    if (!th.ok()) return th;
    return NodeHash(*th, p[len - 1]);
  }
  absl::StatusOr<Hash> th = RunRecordProof(p, len - 1, lo + k, hi, n, leaf);
  if (!th.ok()) return th;
  return NodeHash(p[len - 1], *th);
}

enum class ProofKind { kInclusion, kConsistency };

// RFC 9162's proof recursion over [lo, hi) for leaf n (inclusion, §2.1.3) or the first n leaves
// (consistency, §2.1.4): calls visit.Subtree(lo, hi) for each subtree whose hash the proof carries, in
// the order their stored hashes are read, and visit.Sibling(value) with what Subtree returned, deepest
// first (the proof's order).
template <typename Visit>
void WalkProof(ProofKind kind, int64_t lo, int64_t hi, int64_t n, Visit& visit) {
  const bool inclusion = kind == ProofKind::kInclusion;
  if (inclusion ? lo + 1 == hi : n == hi) {
    if (!inclusion && lo != 0) visit.Sibling(visit.Subtree(lo, hi));
    return;
  }
  const int64_t k = MaxPow2(hi - lo).first;
  if (inclusion ? n < lo + k : n <= lo + k) {
    WalkProof(kind, lo, lo + k, n, visit);
    visit.Sibling(visit.Subtree(lo + k, hi));
  } else {
    auto left = visit.Subtree(lo, lo + k);
    WalkProof(kind, lo + k, hi, n, visit);
    visit.Sibling(left);
  }
}

// First pass: the stored hashes a proof needs.
struct ProofIndexes {
  std::vector<int64_t> need;
  bool Subtree(int64_t lo, int64_t hi) {
    SubTreeIndex(lo, hi, need);
    return true;
  }
  void Sibling(bool) {}
};

// Second pass: the proof from those hashes.
struct ProofBuilder {
  explicit ProofBuilder(const std::vector<Hash>& read) : hashes(read) {}
  const std::vector<Hash>& hashes;
  size_t pos = 0;
  Proof proof;
  Hash Subtree(int64_t lo, int64_t hi) { return SubTreeHash(lo, hi, hashes, pos); }
  void Sibling(const Hash& h) { proof.push_back(h); }
};

// {hash of the old tree, hash of the new tree} as the proof implies them.
absl::StatusOr<std::pair<Hash, Hash>> RunTreeProof(const Proof& p, size_t len, int64_t lo, int64_t hi, int64_t n,
                                                   const Hash& old) {
  if (n == hi) {
    if (lo == 0) {
      if (len != 0) return ProofFailed();
      return std::make_pair(old, old);
    }
    if (len != 1) return ProofFailed();
    return std::make_pair(p[0], p[0]);
  }
  if (len == 0) return ProofFailed();
  const int64_t k = MaxPow2(hi - lo).first;
  const Hash& sibling = p[len - 1];
  if (n <= lo + k) {
    auto r = RunTreeProof(p, len - 1, lo, lo + k, n, old);
    if (!r.ok()) return r;
    return std::make_pair(r->first, NodeHash(r->second, sibling));
  }
  auto r = RunTreeProof(p, len - 1, lo + k, hi, n, old);
  if (!r.ok()) return r;
  return std::make_pair(NodeHash(sibling, r->first), NodeHash(sibling, r->second));
}

absl::StatusOr<std::vector<Hash>> ReadExactly(const HashReader& reader, const std::vector<int64_t>& indexes) {
  absl::StatusOr<std::vector<Hash>> hashes = reader.ReadHashes(indexes);
  if (hashes.ok() && hashes->size() != indexes.size()) return CountMismatch(indexes.size(), hashes->size());
  return hashes;
}

// The proof of `kind` for (t, n), reading what it needs from `reader`.
absl::StatusOr<Proof> Prove(ProofKind kind, int64_t t, int64_t n, const HashReader& reader) {
  ProofIndexes indexes;
  WalkProof(kind, 0, t, n, indexes);
  if (indexes.need.empty()) return Proof{};
  absl::StatusOr<std::vector<Hash>> hashes = ReadExactly(reader, indexes.need);
  if (!hashes.ok()) return hashes.status();
  ProofBuilder builder(*hashes);
  WalkProof(kind, 0, t, n, builder);
  return std::move(builder.proof);
}

}  // namespace merkle_internal

using namespace merkle_internal;

Hash RecordHash(absl::string_view entry) { return ThreadSha256().Of(0x00, entry); }

Hash NodeHash(const Hash& left, const Hash& right) { return ThreadSha256().Of(0x01, HashBytes(left), HashBytes(right)); }

Hash EmptyTreeHash() {
  Hash out{};
  unsigned int len = 0;
  EVP_Digest("", 0, out.data(), &len, EVP_sha256(), nullptr);
  return out;
}

std::string HashToBase64(const Hash& hash) { return absl::Base64Escape(HashBytes(hash)); }

absl::StatusOr<Hash> HashFromBase64(absl::string_view text) {
  std::string raw;
  // absl's unescape accepts missing padding and whitespace: only the canonical encoding is a hash.
  if (!absl::Base64Unescape(text, &raw) || raw.size() != kHashSize || absl::Base64Escape(raw) != text) {
    return absl::InvalidArgumentError("malformed hash (want the standard base64 of 32 bytes)");
  }
  return HashFromBytes(raw);
}

std::string HashToHex(const Hash& hash) { return absl::BytesToHexString(HashBytes(hash)); }

absl::StatusOr<Hash> HashFromBytes(absl::string_view bytes) {
  if (bytes.size() != kHashSize) return absl::InvalidArgumentError("a hash is 32 bytes");
  Hash h;
  std::memcpy(h.data(), bytes.data(), kHashSize);
  return h;
}

int64_t StoredHashIndex(int level, int64_t n) {
  for (int l = level; l > 0; --l) n = 2 * n + 1;
  int64_t i = 0;
  for (; n > 0; n >>= 1) i += n;
  return i + level;
}

std::pair<int, int64_t> SplitStoredHashIndex(int64_t index) {
  int64_t n = index / 2;
  int64_t index_n = StoredHashIndex(0, n);
  while (true) {
    const int64_t x = index_n + 1 + std::countr_zero(static_cast<uint64_t>(n + 1));
    if (x > index) break;
    ++n;
    index_n = x;
  }
  const int level = static_cast<int>(index - index_n);
  return {level, n >> level};
}

int64_t StoredHashCount(int64_t n) {
  if (n <= 0) return 0;
  int64_t count = StoredHashIndex(0, n - 1) + 1;
  for (uint64_t i = static_cast<uint64_t>(n - 1); (i & 1) != 0; i >>= 1) ++count;
  return count;
}

absl::StatusOr<std::vector<Hash>> StoredHashes(int64_t n, absl::string_view entry, const HashReader& reader) {
  return StoredHashesForRecordHash(n, RecordHash(entry), reader);
}

absl::StatusOr<std::vector<Hash>> StoredHashesForRecordHash(int64_t n, const Hash& record_hash,
                                                            const HashReader& reader) {
  if (n < 0) return absl::InvalidArgumentError("tlog: negative entry index");
  std::vector<Hash> out{record_hash};
  const int m = std::countr_zero(static_cast<uint64_t>(n + 1));
  if (m == 0) return out;
  std::vector<int64_t> indexes(m);
  for (int i = 0; i < m; ++i) indexes[m - 1 - i] = StoredHashIndex(i, (n >> i) - 1);
  absl::StatusOr<std::vector<Hash>> old = ReadExactly(reader, indexes);
  if (!old.ok()) return old.status();
  Hash h = record_hash;
  for (int i = 0; i < m; ++i) {
    h = NodeHash((*old)[m - 1 - i], h);
    out.push_back(h);
  }
  return out;
}

absl::StatusOr<Hash> TreeHash(int64_t n, const HashReader& reader) {
  if (n < 0) return absl::InvalidArgumentError("tlog: negative tree size");
  if (n == 0) return EmptyTreeHash();
  std::vector<int64_t> indexes;
  SubTreeIndex(0, n, indexes);
  absl::StatusOr<std::vector<Hash>> hashes = ReadExactly(reader, indexes);
  if (!hashes.ok()) return hashes.status();
  size_t pos = 0;
  return SubTreeHash(0, n, *hashes, pos);
}

absl::StatusOr<Proof> ProveRecord(int64_t t, int64_t n, const HashReader& reader) {
  if (t < 0 || n < 0 || n >= t) return absl::InvalidArgumentError("tlog: ProveRecord wants 0 <= index < size");
  return Prove(ProofKind::kInclusion, t, n, reader);
}

absl::Status CheckRecord(const Proof& proof, int64_t t, const Hash& th, int64_t n, const Hash& h) {
  if (t < 0 || n < 0 || n >= t) return absl::InvalidArgumentError("tlog: CheckRecord wants 0 <= index < size");
  absl::StatusOr<Hash> root = RunRecordProof(proof, proof.size(), 0, t, n, h);
  if (!root.ok()) return root.status();
  return *root == th ? absl::OkStatus() : ProofFailed();
}

absl::StatusOr<Proof> ProveTree(int64_t t, int64_t n, const HashReader& reader) {
  if (t < 1 || n < 1 || n > t) return absl::InvalidArgumentError("tlog: ProveTree wants 1 <= old size <= size");
  return Prove(ProofKind::kConsistency, t, n, reader);
}

absl::Status CheckTree(const Proof& proof, int64_t t, const Hash& th, int64_t n, const Hash& h) {
  if (t < 1 || n < 1 || n > t) return absl::InvalidArgumentError("tlog: CheckTree wants 1 <= old size <= size");
  auto roots = RunTreeProof(proof, proof.size(), 0, t, n, h);
  if (!roots.ok()) return roots.status();
  return roots->first == h && roots->second == th ? absl::OkStatus() : ProofFailed();
}

int64_t MemoryHashStore::Append(absl::string_view entry) { return AppendRecordHash(RecordHash(entry)); }

int64_t MemoryHashStore::AppendRecordHash(const Hash& record_hash) {
  absl::MutexLock lock(&mu_);
  // The reader reads hashes_ directly: the lock is held, and every index it is asked for is stored.
  absl::StatusOr<std::vector<Hash>> added = StoredHashesForRecordHash(size_, record_hash, VectorHashReader(hashes_));
  if (!added.ok()) return -1;  // unreachable: every hash an append reads is stored
  hashes_.insert(hashes_.end(), added->begin(), added->end());
  return size_++;
}

int64_t MemoryHashStore::size() const {
  absl::MutexLock lock(&mu_);
  return size_;
}

absl::StatusOr<std::vector<Hash>> MemoryHashStore::ReadHashes(absl::Span<const int64_t> indexes) const {
  absl::ReaderMutexLock lock(&mu_);
  return VectorHashReader(hashes_).ReadHashes(indexes);
}

absl::StatusOr<std::vector<Hash>> VectorHashReader::ReadHashes(absl::Span<const int64_t> indexes) const {
  std::vector<Hash> out;
  out.reserve(indexes.size());
  for (int64_t i : indexes) {
    if (i < 0 || i >= static_cast<int64_t>(hashes_.size())) {
      return absl::NotFoundError(absl::StrCat("tlog: no stored hash ", i, " (", hashes_.size(), " stored)"));
    }
    out.push_back(hashes_[i]);
  }
  return out;
}

}  // namespace osh::tlog
