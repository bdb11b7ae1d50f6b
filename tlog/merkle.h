// RFC 6962 / RFC 9162 Merkle trees over SHA-256, in the "stored hash" numbering of Go's
// golang.org/x/mod/sumdb/tlog (the algorithms are ported from there; the code is ours):
//   leaf hash  = SHA-256(0x00 || entry)          (RecordHash)
//   node hash  = SHA-256(0x01 || left || right)  (NodeHash)
// A log of n entries keeps StoredHashCount(n) hashes: every leaf hash and the hash of every complete
// subtree, numbered so that appending entry n only appends hashes (StoredHashes). Proofs and tree hashes
// are computed by reading stored hashes through a HashReader, which a store, a cache of tiles or an
// in-memory vector can back.
//
// Everything here is a pure function of its inputs and the reader's answers; no global state. Errors are
// values: INVALID_ARGUMENT for indexes and sizes out of range, whatever the reader returns as its own
// error, DATA_LOSS when a reader answers with the wrong number of hashes, and for Check* a proof that does
// not verify is PERMISSION_DENIED ("invalid transparency proof").
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"

namespace osh::tlog {

inline constexpr size_t kHashSize = 32;
using Hash = std::array<uint8_t, kHashSize>;

// The hash of an entry (a leaf): SHA-256(0x00 || entry).
Hash RecordHash(absl::string_view entry);
// The hash of an interior node: SHA-256(0x01 || left || right).
Hash NodeHash(const Hash& left, const Hash& right);
// RFC 6962's hash of the empty tree, SHA-256 of no bytes (Go's tlog answers all zeroes for size 0; a
// checkpoint of size 0 carries this one).
Hash EmptyTreeHash();

// Standard base64 of the 32 bytes (the checkpoint's root hash line) and its strict inverse.
std::string HashToBase64(const Hash& hash);
absl::StatusOr<Hash> HashFromBase64(absl::string_view text);
std::string HashToHex(const Hash& hash);
// The raw 32 bytes as a string (to hash or frame); HashFromBytes wants exactly 32 bytes.
inline absl::string_view HashBytes(const Hash& hash) {
  return absl::string_view(reinterpret_cast<const char*>(hash.data()), hash.size());
}
absl::StatusOr<Hash> HashFromBytes(absl::string_view bytes);

// The stored-hash index of the hash of the subtree at `level` (0 = leaves) whose leftmost leaf is
// n << level, i.e. the n-th complete subtree of height `level`.
int64_t StoredHashIndex(int level, int64_t n);
// The inverse of StoredHashIndex: {level, n}.
std::pair<int, int64_t> SplitStoredHashIndex(int64_t index);
// How many hashes a log of n entries stores (StoredHashIndex(0, n) for n > 0 plus the subtrees that
// entry n-1 completes).
int64_t StoredHashCount(int64_t n);

// Where hashes come from. ReadHashes answers hashes[i] for indexes[i], in order, or an error; it must not
// answer a hash it does not have. Implementations say their own thread safety.
class HashReader {
 public:
  virtual ~HashReader() = default;
  virtual absl::StatusOr<std::vector<Hash>> ReadHashes(absl::Span<const int64_t> indexes) const = 0;
};

// The hashes to append to the store when entry n (0-based; the log holds n entries) is added: its record
// hash first, then one per subtree it completes. Reads at most log2(n) already-stored hashes. Appending the
// result at StoredHashIndex(0, n) keeps the numbering.
absl::StatusOr<std::vector<Hash>> StoredHashes(int64_t n, absl::string_view entry, const HashReader& reader);
absl::StatusOr<std::vector<Hash>> StoredHashesForRecordHash(int64_t n, const Hash& record_hash,
                                                            const HashReader& reader);

// The root hash of the tree of the first n entries (EmptyTreeHash() for n == 0).
absl::StatusOr<Hash> TreeHash(int64_t n, const HashReader& reader);

// A proof is the list of sibling hashes, as RFC 9162 orders them (the leaf's side first).
using Proof = std::vector<Hash>;

// Inclusion proof that entry n is in the tree of size t (0 <= n < t).
absl::StatusOr<Proof> ProveRecord(int64_t t, int64_t n, const HashReader& reader);
// OK iff `proof` proves that the entry with record hash `h` is entry n of the tree of size t and root `th`.
absl::Status CheckRecord(const Proof& proof, int64_t t, const Hash& th, int64_t n, const Hash& h);

// Consistency proof that the tree of size n is a prefix of the tree of size t (1 <= n <= t).
absl::StatusOr<Proof> ProveTree(int64_t t, int64_t n, const HashReader& reader);
// OK iff `proof` proves that the tree of size n with root `h` is a prefix of the tree of size t, root `th`.
absl::Status CheckTree(const Proof& proof, int64_t t, const Hash& th, int64_t n, const Hash& h);

// Reads stored hashes from a vector the caller owns and keeps alive and unchanged while it reads.
// NOT_FOUND for an index beyond the vector.
class VectorHashReader final : public HashReader {
 public:
  explicit VectorHashReader(const std::vector<Hash>& hashes) : hashes_(hashes) {}
  absl::StatusOr<std::vector<Hash>> ReadHashes(absl::Span<const int64_t> indexes) const override;

 private:
  const std::vector<Hash>& hashes_;
};

// An in-memory log: the stored hashes of every entry appended (not the entries). For tests, benchmarks,
// and as the warm cache a sequencer keeps. Thread safety: Append and ReadHashes may be called from any
// threads (a reader/writer lock); a proof computed while appends run sees some prefix of the log.
class MemoryHashStore final : public HashReader {
 public:
  // Appends the entry, returning its index (never fails: every hash an append reads is in the store).
  int64_t Append(absl::string_view entry);
  int64_t AppendRecordHash(const Hash& record_hash);
  int64_t size() const;  // entries appended
  absl::StatusOr<std::vector<Hash>> ReadHashes(absl::Span<const int64_t> indexes) const override;

 private:
  mutable absl::Mutex mu_;
  int64_t size_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<Hash> hashes_ ABSL_GUARDED_BY(mu_);
};

}  // namespace osh::tlog
