// The verifiable log's library (tlog/): Merkle proofs against a naive RFC 6962 implementation written
// here from the RFC's definitions, the Certificate Transparency test vectors, C2SP tile paths and
// partial tiles, tiles on disk read back through the verifying TileHashReader, signed notes (Go's
// sumdb/note vectors), checkpoints and cosignatures, and their failure cases.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "tlog/checkpoint.h"
#include "tlog/cosignature.h"
#include "tlog/merkle.h"
#include "tlog/note.h"
#include "tlog/tiles.h"

namespace osh::tlog {
namespace tlog_test {

// RFC 6962 §2.1, literally: MTH, PATH and PROOF over a list of entries.
Hash NaiveMth(const std::vector<std::string>& d, size_t lo, size_t hi) {
  if (hi - lo == 1) return RecordHash(d[lo]);
  size_t k = 1;
  while (k * 2 < hi - lo) k *= 2;
  return NodeHash(NaiveMth(d, lo, lo + k), NaiveMth(d, lo + k, hi));
}

Proof NaivePath(const std::vector<std::string>& d, size_t m, size_t lo, size_t hi) {
  if (hi - lo == 1) return {};
  size_t k = 1;
  while (k * 2 < hi - lo) k *= 2;
  Proof p;
  if (m < k) {
    p = NaivePath(d, m, lo, lo + k);
    p.push_back(NaiveMth(d, lo + k, hi));
  } else {
    p = NaivePath(d, m - k, lo + k, hi);
    p.push_back(NaiveMth(d, lo, lo + k));
  }
  return p;
}

Proof NaiveSubproof(const std::vector<std::string>& d, size_t m, size_t lo, size_t hi, bool b) {
  if (m == hi - lo) return b ? Proof{} : Proof{NaiveMth(d, lo, hi)};
  size_t k = 1;
  while (k * 2 < hi - lo) k *= 2;
  Proof p;
  if (m <= k) {
    p = NaiveSubproof(d, m, lo, lo + k, b);
    p.push_back(NaiveMth(d, lo + k, hi));
  } else {
    p = NaiveSubproof(d, m - k, lo + k, hi, false);
    p.push_back(NaiveMth(d, lo, lo + k));
  }
  return p;
}

std::string TlogTestEntry(int i) { return absl::StrCat("entry ", i, std::string(static_cast<size_t>(i % 7), 'x')); }

Hash FromHex(absl::string_view hex) { return *HashFromBytes(absl::HexStringToBytes(hex)); }

// A scratch directory removed at the end of the test.
struct TlogScratch {
  std::filesystem::path dir;
  TlogScratch() {
    std::string templ = (std::filesystem::temp_directory_path() / "tlog-test-XXXXXX").string();
    dir = ::mkdtemp(templ.data());
  }
  ~TlogScratch() { std::filesystem::remove_all(dir); }
};

class VectorEntries final : public EntryReader {
 public:
  explicit VectorEntries(const std::vector<std::string>& entries) : entries_(entries) {}
  absl::StatusOr<std::vector<std::string>> ReadEntries(int64_t begin, int64_t end) const override {
    if (begin < 0 || end > static_cast<int64_t>(entries_.size()) || begin > end) return absl::OutOfRangeError("range");
    return std::vector<std::string>(entries_.begin() + begin, entries_.begin() + end);
  }

 private:
  const std::vector<std::string>& entries_;
};

std::string Slurp(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace tlog_test

using namespace tlog_test;

TEST_CASE("tlog: tree hashes match the Certificate Transparency vectors, size 0 is SHA-256 of nothing", "[tlog]") {
  const std::vector<std::string> leaves = {"", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                           "606162636465666768696a6b6c6d6e6f"};
  const std::vector<std::string> roots = {
      "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
      "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
      "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
      "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
      "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
      "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
      "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
      "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"};
  MemoryHashStore store;
  CHECK(HashToHex(*TreeHash(0, store)) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  for (size_t i = 0; i < leaves.size(); ++i) {
    store.Append(absl::HexStringToBytes(leaves[i]));
    CHECK(HashToHex(*TreeHash(static_cast<int64_t>(i + 1), store)) == roots[i]);
  }
  const Proof path = *ProveRecord(8, 0, store);
  REQUIRE(path.size() == 3);
  CHECK(HashToHex(path[0]) == "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7");
  CHECK(HashToHex(path[1]) == "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e");
  CHECK(HashToHex(path[2]) == "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4");
  CHECK(CheckRecord(path, 8, FromHex(roots[7]), 0, RecordHash("")).ok());
}

TEST_CASE("tlog: every inclusion and consistency proof up to 70 entries equals RFC 6962's and verifies", "[tlog]") {
  std::vector<std::string> entries;
  MemoryHashStore store;
  for (int size = 1; size <= 70; ++size) {
    entries.push_back(TlogTestEntry(size - 1));
    CHECK(store.Append(entries.back()) == size - 1);
    const size_t t = static_cast<size_t>(size);
    const Hash root = NaiveMth(entries, 0, t);
    REQUIRE(*TreeHash(size, store) == root);
    for (int n = 0; n < size; ++n) {
      INFO("inclusion of " << n << " in " << size);
      const Proof proof = *ProveRecord(size, n, store);
      REQUIRE(proof == NaivePath(entries, static_cast<size_t>(n), 0, t));
      const Hash leaf = RecordHash(entries[n]);
      REQUIRE(CheckRecord(proof, size, root, n, leaf).ok());
      CHECK(!CheckRecord(proof, size, root, n, RecordHash("other")).ok());
      if (size > 1) {
        CHECK(!CheckRecord(proof, size, root, (n + 1) % size, leaf).ok());
        Proof shorter(proof.begin(), proof.end() - 1);
        CHECK(absl::IsPermissionDenied(CheckRecord(shorter, size, root, n, leaf)));
        for (size_t i = 0; i < proof.size(); ++i) {
          Proof tampered = proof;
          tampered[i][i % kHashSize] ^= 0x01;
          CHECK(absl::IsPermissionDenied(CheckRecord(tampered, size, root, n, leaf)));
        }
      }
      Proof longer = proof;
      longer.push_back(root);
      CHECK(absl::IsPermissionDenied(CheckRecord(longer, size, root, n, leaf)));
    }
    for (int m = 1; m <= size; ++m) {
      INFO("consistency of " << m << " with " << size);
      const Proof proof = *ProveTree(size, m, store);
      REQUIRE(proof == NaiveSubproof(entries, static_cast<size_t>(m), 0, t, true));
      const Hash old_root = NaiveMth(entries, 0, static_cast<size_t>(m));
      REQUIRE(CheckTree(proof, size, root, m, old_root).ok());
      CHECK(!CheckTree(proof, size, root, m, RecordHash("forked")).ok());
      CHECK(!CheckTree(proof, size, old_root, m, root).ok() == (m != size || root != old_root));
      for (size_t i = 0; i < proof.size(); ++i) {
        Proof tampered = proof;
        tampered[i][0] ^= 0x80;
        CHECK(!CheckTree(tampered, size, root, m, old_root).ok());
      }
      if (m < size) CHECK(!CheckTree(proof, size, root, m + 1, old_root).ok());
    }
  }
}

TEST_CASE("tlog: edge sizes and indexes are refused as values", "[tlog]") {
  MemoryHashStore store;
  CHECK(absl::IsInvalidArgument(ProveRecord(0, 0, store).status()));
  CHECK(absl::IsInvalidArgument(CheckRecord({}, 0, EmptyTreeHash(), 0, RecordHash(""))));
  CHECK(absl::IsInvalidArgument(ProveTree(1, 0, store).status()));
  CHECK(absl::IsInvalidArgument(CheckTree({}, 0, EmptyTreeHash(), 0, EmptyTreeHash())));
  CHECK(absl::IsNotFound(TreeHash(1, store).status()));  // nothing stored yet
  store.Append("only");
  CHECK(ProveRecord(1, 0, store)->empty());
  CHECK(CheckRecord({}, 1, RecordHash("only"), 0, RecordHash("only")).ok());
  CHECK(absl::IsPermissionDenied(CheckRecord({RecordHash("x")}, 1, RecordHash("only"), 0, RecordHash("only"))));
  CHECK(absl::IsInvalidArgument(ProveRecord(1, 1, store).status()));
  CHECK(absl::IsInvalidArgument(ProveRecord(1, -1, store).status()));
  CHECK(ProveTree(1, 1, store)->empty());
  CHECK(absl::IsInvalidArgument(ProveTree(1, 2, store).status()));
  CHECK(absl::IsNotFound(ProveRecord(5, 3, store).status()));  // beyond what is stored
}

TEST_CASE("tlog: stored hash numbering round-trips and counts as Go's tlog does", "[tlog]") {
  CHECK(StoredHashIndex(0, 0) == 0);
  CHECK(StoredHashIndex(0, 1) == 1);
  CHECK(StoredHashIndex(1, 0) == 2);
  CHECK(StoredHashIndex(0, 2) == 3);
  CHECK(StoredHashCount(0) == 0);
  CHECK(StoredHashCount(1) == 1);
  CHECK(StoredHashCount(2) == 3);
  CHECK(StoredHashCount(4) == 7);
  MemoryHashStore store;
  for (int64_t n = 0; n < 300; ++n) {
    store.Append(TlogTestEntry(static_cast<int>(n)));
    const int64_t count = StoredHashCount(n + 1);  // exactly the hashes the store holds
    CHECK(store.ReadHashes({count - 1}).ok());
    CHECK(absl::IsNotFound(store.ReadHashes({count}).status()));
  }
  for (int64_t index = 0; index < 2000; ++index) {
    const auto [level, n] = SplitStoredHashIndex(index);
    REQUIRE(StoredHashIndex(level, n) == index);
  }
}

TEST_CASE("tlog: tile paths are C2SP's, and only the canonical spelling parses", "[tlog]") {
  CHECK(TileIndexPath(0) == "000");
  CHECK(TileIndexPath(1234067) == "x001/x234/067");
  CHECK(TileIndexPath(1000) == "x001/000");
  CHECK(TilePath(Tile{0, 1234067, 256}) == "tile/0/x001/x234/067");
  CHECK(TilePath(Tile{1, 5, 17}) == "tile/1/005.p/17");
  CHECK(TilePath(Tile{kEntriesLevel, 1234067, 8}) == "tile/entries/x001/x234/067.p/8");
  for (const Tile& t : {Tile{0, 1234067, 256}, Tile{63, 0, 1}, Tile{kEntriesLevel, 999, 255}, Tile{2, 1000000, 3}}) {
    REQUIRE(ParseTilePath(TilePath(t)).ok());
    CHECK(*ParseTilePath(TilePath(t)) == t);
  }
  for (const char* bad : {"tile/0/1234067", "tile/0/001.p/256", "tile/0/001.p/0", "tile/0/001.p/08", "tile/64/000",
                          "tile/00/000", "tile/0/x000/001", "tile/0/001/002", "tile/entries", "tiles/0/000",
                          "tile/0/00a", "tile/-1/000", "tile/0/x001", "tile/8/0/000"}) {
    INFO(bad);
    CHECK(absl::IsInvalidArgument(ParseTilePath(bad).status()));
  }
}

TEST_CASE("tlog: the tiles of a tree are C2SP's example (70,000 entries, and 256)", "[tlog]") {
  const std::vector<Tile> tiles = TilesForSize(70000);
  int full0 = 0, full1 = 0;
  std::vector<Tile> partial;
  for (const Tile& t : tiles) {
    if (t.full()) (t.level == 0 ? full0 : full1)++;
    else partial.push_back(t);
  }
  CHECK(full0 == 273);
  CHECK(full1 == 1);
  REQUIRE(partial.size() == 3);
  CHECK(partial[0] == Tile{0, 273, 112});
  CHECK(partial[1] == Tile{1, 1, 17});
  CHECK(partial[2] == Tile{2, 0, 1});
  CHECK(TilesForSize(256) == std::vector<Tile>{Tile{0, 0, 256}, Tile{1, 0, 1}});
  CHECK(TilesForSize(0).empty());
  // Growing 300 -> 600: the partial at 300 (tile/0/001.p/44) is superseded by the full tile 001, and
  // the new partials appear; nothing that existed at 300 is listed again.
  CHECK(NewTiles(300, 600) == std::vector<Tile>{Tile{0, 1, 256}, Tile{0, 2, 88}, Tile{1, 0, 2}});
  CHECK(NewTiles(600, 600).empty());
  CHECK(NewTiles(600, 601) == std::vector<Tile>{Tile{0, 2, 89}});
}

TEST_CASE("tlog: entry bundles frame entries with a big-endian uint16 length, strictly", "[tlog]") {
  const std::vector<std::string> entries = {"", "a", std::string(300, 'z'), std::string(65535, 'm')};
  const std::string bundle = *EncodeEntryBundle(entries);
  CHECK(bundle.substr(0, 5) == std::string("\x00\x00\x00\x01" "a", 5));
  CHECK(bundle.substr(5, 2) == "\x01\x2c");
  CHECK(*DecodeEntryBundle(bundle) == entries);
  CHECK(absl::IsInvalidArgument(EncodeEntryBundle({std::string(65536, 'x')}).status()));
  CHECK(absl::IsInvalidArgument(DecodeEntryBundle(bundle.substr(0, bundle.size() - 1)).status()));
  CHECK(absl::IsInvalidArgument(DecodeEntryBundle(std::string("\x00", 1)).status()));
}

TEST_CASE("tlog: tiles written to a directory in steps verify through TileHashReader, and corruption is caught", "[tlog]") {
  TlogScratch scratch;
  const std::string dir = scratch.dir.string();
  std::vector<std::string> entries;
  MemoryHashStore store;
  VectorEntries reader(entries);
  // Off unless asked: a full tile is available only once a checkpoint covering it is published (review 102).
  CHECK_FALSE(TileWriteOptions{}.delete_superseded_partials);
  TileWriteOptions options;
  options.sync = false;
  options.delete_superseded_partials = true;  // here each step is published as it is written
  int64_t published = 0;
  for (int64_t size : {1, 255, 256, 300, 600, 601, 65536 + 700}) {
    while (static_cast<int64_t>(entries.size()) < size) {
      entries.push_back(TlogTestEntry(static_cast<int>(entries.size())));
      store.Append(entries.back());
    }
    options.sync = size <= 601;  // the fsync path too, where it is cheap
    REQUIRE(WriteTiles(dir, published, size, store, reader, options).ok());
    published = size;
    if (size == 601) {
      // Two checkpoints' partials of a tile that is still partial: both stay served.
      CHECK(std::filesystem::exists(scratch.dir / "tile/0/002.p/88"));
      CHECK(std::filesystem::exists(scratch.dir / "tile/0/002.p/89"));
      CHECK(std::filesystem::exists(scratch.dir / "tile/entries/002.p/88"));
      // Publishing the same step again (a retry after a crash) writes nothing and succeeds.
      absl::StatusOr<TileWriteStats> again = WriteTiles(dir, 600, 601, store, reader, options);
      REQUIRE(again.ok());
      CHECK(again->files_written == 0);
    }
    const Hash root = *TreeHash(size, store);
    DirTileFetcher fetcher(dir);
    TileHashReader tiles(size, root, fetcher);
    CHECK(*TreeHash(size, tiles) == root);
    for (int64_t n : {int64_t{0}, size / 2, size - 1}) {
      CHECK(*ProveRecord(size, n, tiles) == *ProveRecord(size, n, store));
      CHECK(*ProveTree(size, n + 1, tiles) == *ProveTree(size, n + 1, store));
    }
  }
  const int64_t size = published;
  // Superseded partials are gone; the partials of the current size are there; bundles decode to entries.
  CHECK(!std::filesystem::exists(scratch.dir / "tile/0/001.p"));
  CHECK(!std::filesystem::exists(scratch.dir / "tile/0/002.p"));  // tile 002 is full now
  CHECK(std::filesystem::exists(scratch.dir / "tile/0/258.p/188"));
  CHECK(std::filesystem::exists(scratch.dir / "tile/entries/258.p/188"));
  CHECK(std::filesystem::exists(scratch.dir / "tile/2/000.p/1"));
  CHECK(std::filesystem::file_size(scratch.dir / "tile/0/000") == 8192);
  const std::vector<std::string> bundle = *DecodeEntryBundle(Slurp(scratch.dir / "tile/entries/001"));
  CHECK(bundle == std::vector<std::string>(entries.begin() + 256, entries.begin() + 512));
  // A partial read where only the full tile remains (an old checkpoint's size) falls back to the full tile.
  DirTileFetcher fetcher(dir);
  CHECK(fetcher.ReadTiles({Tile{0, 1, 44}})->front().size() == 44 * kHashSize);
  // Rewriting a published full tile with other bytes is refused.
  {
    std::vector<std::string> forked = entries;
    forked[3] = "rewritten";
    MemoryHashStore forked_store;
    for (const auto& e : forked) forked_store.Append(e);
    VectorEntries forked_reader(forked);
    CHECK(absl::IsFailedPrecondition(WriteTiles(dir, 0, size, forked_store, forked_reader, options).status()));
  }
  // One flipped byte in a level-0 tile: any read that needs it fails with DATA_LOSS.
  const Hash root = *TreeHash(size, store);
  const auto tile_path = scratch.dir / "tile/0/005";
  std::string bytes = Slurp(tile_path);
  bytes[100] ^= 0x01;
  std::ofstream(tile_path, std::ios::binary | std::ios::trunc) << bytes;
  TileHashReader tiles(size, root, fetcher);
  CHECK(absl::IsDataLoss(ProveRecord(size, 5 * 256 + 3, tiles).status()));
  CHECK(ProveRecord(size, 7 * 256, tiles).ok());  // a tile not touched still verifies
  // The wrong root: nothing verifies.
  TileHashReader wrong(size, RecordHash("not the root"), fetcher);
  CHECK(absl::IsDataLoss(TreeHash(size, wrong).status()));
}

TEST_CASE("tlog: tiles past the published size, left by a crash over entries since rolled back, are replaced, published ones never",
          "[tlog]") {
  // The tree a tile first belongs to.
  CHECK(TreeSizeOf(Tile{0, 0, 5}) == 5);
  CHECK(TreeSizeOf(Tile{0, 2, 256}) == 768);
  CHECK(TreeSizeOf(Tile{kEntriesLevel, 2, 88}) == 600);
  CHECK(TreeSizeOf(Tile{1, 0, 2}) == 512);
  CHECK(TreeSizeOf(Tile{2, 1, 1}) == 257 * 65536);
  CHECK(TreeSizeOf(Tile{63, 5, 256}) == INT64_MAX);
  TlogScratch scratch;
  const std::string dir = scratch.dir.string();
  auto grow = [](std::vector<std::string>& entries, MemoryHashStore& store, int64_t size, const std::string& tag) {
    while (static_cast<int64_t>(entries.size()) < size) {
      entries.push_back(absl::StrCat(tag, entries.size()));
      store.Append(entries.back());
    }
  };
  std::vector<std::string> entries;
  MemoryHashStore store;
  VectorEntries reader(entries);
  grow(entries, store, 300, "e");
  TileWriteOptions options;
  options.sync = false;
  REQUIRE(WriteTiles(dir, 0, 300, store, reader, options).ok());  // checkpoint of 300 published
  // Tiles for 600 written, then a crash before their checkpoint; the database went back to 300 entries
  // and other events followed.
  grow(entries, store, 600, "lost");
  REQUIRE(WriteTiles(dir, 300, 600, store, reader, options).ok());
  std::vector<std::string> after(entries.begin(), entries.begin() + 300);
  MemoryHashStore after_store;
  for (const auto& e : after) after_store.Append(e);
  VectorEntries after_reader(after);
  grow(after, after_store, 600, "new");
  // Without the published size every existing file is immutable: the log could never move again.
  CHECK(absl::IsFailedPrecondition(WriteTiles(dir, 300, 600, after_store, after_reader, options).status()));
  options.published_size = 300;
  absl::StatusOr<TileWriteStats> replaced = WriteTiles(dir, 300, 600, after_store, after_reader, options);
  REQUIRE(replaced.ok());
  CHECK(replaced->unpublished_replaced >= 2);  // tile/0/001 and its bundle, 002.p/88 and its bundle
  DirTileFetcher fetcher(dir);
  TileHashReader tiles(600, *TreeHash(600, after_store), fetcher);
  CHECK(*TreeHash(600, tiles) == *TreeHash(600, after_store));
  CHECK(*DecodeEntryBundle(Slurp(scratch.dir / "tile/entries/001")) ==
        std::vector<std::string>(after.begin() + 256, after.begin() + 512));
  // A file under the published size stays immutable whatever the published size says.
  std::vector<std::string> forked = after;
  forked[10] = "rewritten";
  MemoryHashStore forked_store;
  for (const auto& e : forked) forked_store.Append(e);
  VectorEntries forked_reader(forked);
  options.published_size = 600;
  CHECK(absl::IsFailedPrecondition(WriteTiles(dir, 0, 600, forked_store, forked_reader, options).status()));
}

TEST_CASE("tlog: the right edge of a tree, and partials deleted only when asked (after the checkpoint)", "[tlog]") {
  auto paths = [](int64_t size) {
    std::vector<std::string> out;
    for (const Tile& t : EdgeTiles(size)) out.push_back(TilePath(t));
    return out;
  };
  CHECK(paths(300) == std::vector<std::string>{"tile/0/001.p/44", "tile/1/000.p/1"});
  CHECK(paths(512) == std::vector<std::string>{"tile/0/001", "tile/1/000.p/2"});
  CHECK(paths(65000) == std::vector<std::string>{"tile/0/253.p/232", "tile/1/000.p/253"});
  CHECK(paths(65536) == std::vector<std::string>{"tile/0/255", "tile/1/000", "tile/2/000.p/1"});
  CHECK(paths(1) == std::vector<std::string>{"tile/0/000.p/1"});
  TlogScratch scratch;
  const std::string dir = scratch.dir.string();
  std::vector<std::string> entries;
  MemoryHashStore store;
  VectorEntries reader(entries);
  for (int i = 0; i < 600; ++i) {
    entries.push_back(TlogTestEntry(i));
    store.Append(entries.back());
  }
  TileWriteOptions options;
  options.sync = false;
  options.delete_superseded_partials = false;
  REQUIRE(WriteTiles(dir, 0, 300, store, reader, options).ok());
  REQUIRE(WriteTiles(dir, 300, 600, store, reader, options).ok());
  // The checkpoint of 300 is still the one served: its partials stay until that of 600 is out.
  CHECK(std::filesystem::exists(scratch.dir / "tile/0/001.p/44"));
  CHECK(std::filesystem::exists(scratch.dir / "tile/entries/001.p/44"));
  CHECK(DeleteSupersededPartials(dir, 300, 600) == 2);  // 0/001.p/44 and entries/001.p/44 (level 1 is still partial)
  CHECK_FALSE(std::filesystem::exists(scratch.dir / "tile/0/001.p"));
  CHECK_FALSE(std::filesystem::exists(scratch.dir / "tile/entries/001.p"));
  CHECK(std::filesystem::exists(scratch.dir / "tile/0/002.p/88"));  // still partial: kept
  // Edge tiles removed are written again, byte for byte; present ones are compared.
  const std::string edge0 = Slurp(scratch.dir / "tile/0/002.p/88");
  std::filesystem::remove_all(scratch.dir / "tile/0/002.p");
  std::filesystem::remove_all(scratch.dir / "tile/1");
  auto repaired = WriteEdgeTiles(dir, 600, store, reader, options);
  REQUIRE(repaired.ok());
  CHECK(repaired->files_written == 2);
  CHECK(Slurp(scratch.dir / "tile/0/002.p/88") == edge0);
  CHECK(std::filesystem::exists(scratch.dir / "tile/1/000.p/2"));
}

TEST_CASE("tlog: signed notes open and sign exactly as Go's sumdb/note (its test vectors)", "[tlog]") {
  const std::string skey = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
  const std::string vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
  const std::string text =
      "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
  const std::string signed_note = text +
      "\n\xE2\x80\x94 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
  auto signer = Ed25519NoteSigner::FromSignerKey(skey);
  REQUIRE(signer.ok());
  CHECK((*signer)->VerifierKey() == vkey);
  CHECK((*signer)->SignerKey() == skey);
  const NoteSigner* signers[] = {signer->get()};
  CHECK(*SignNote(text, signers) == signed_note);  // Ed25519 is deterministic
  auto verifier = ParseVerifierKey(vkey);
  REQUIRE(verifier.ok());
  const NoteVerifier* known[] = {verifier->get()};
  absl::StatusOr<Note> note = OpenNote(signed_note, known);
  REQUIRE(note.ok());
  CHECK(note->text == text);
  REQUIRE(note->verified.size() == 1);
  CHECK(note->verified[0].key_id == 0xc74f20a3);
  // Key texts that must not parse.
  for (const char* bad : {"PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  // wrong ID
                          "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T",   // bad base64
                          "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  // space
                          "PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "PeterNeumann"}) {
    INFO(bad);
    CHECK(absl::IsInvalidArgument(ParseVerifierKey(bad).status()));
  }
  CHECK(absl::IsInvalidArgument(Ed25519NoteSigner::FromSignerKey("PRIVATE+KEY+PeterNeumann+c74f20a4+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz").status()));
}

TEST_CASE("tlog: notes are parsed strictly, unknown signatures are ignored, a bad known one rejects", "[tlog]") {
  auto key = Ed25519PrivateKey::Generate();
  auto signer = *Ed25519NoteSigner::Create("log.example/a", *key);
  auto other = *Ed25519NoteSigner::Create("other.example/b", *Ed25519PrivateKey::Generate());
  auto verifier = *ParseVerifierKey(signer->VerifierKey());
  const NoteVerifier* known[] = {verifier.get()};
  const NoteSigner* both[] = {other.get(), signer.get()};
  const std::string text = "hello\n\nworld\n";  // a note text may hold empty lines
  const std::string msg = *SignNote(text, both);
  absl::StatusOr<Note> note = OpenNote(msg, known);
  REQUIRE(note.ok());
  CHECK(note->text == text);
  CHECK(note->verified.size() == 1);
  CHECK(note->unverified.size() == 1);
  CHECK(note->unverified[0].name == "other.example/b");
  // Only the unknown key: not verified.
  const NoteSigner* only_other[] = {other.get()};
  CHECK(absl::IsUnauthenticated(OpenNote(*SignNote(text, only_other), known).status()));
  // Same name, other key ID: ignored, not a failure.
  auto impostor = *Ed25519NoteSigner::Create("log.example/a", *Ed25519PrivateKey::Generate());
  const NoteSigner* with_impostor[] = {impostor.get(), signer.get()};
  CHECK(OpenNote(*SignNote(text, with_impostor), known).ok());
  // A known key's bad signature rejects the whole note.
  std::string tampered = msg;
  tampered[0] = 'j';
  CHECK(absl::IsPermissionDenied(OpenNote(tampered, known).status()));
  // Malformed notes.
  const std::string sig_lines = msg.substr(text.size() + 1);
  for (const std::string& bad : {
           msg.substr(0, msg.size() - 1),                             // no final newline
           text + sig_lines,                                          // no blank line... (text's own blank line then splits wrongly)
           std::string("hello\n\n"),                                  // no signature
           text + "\n- log.example/a AAAA\n",                         // not an em dash
           text + "\n\xE2\x80\x94 log.example/a !!!!\n",              // bad base64
           text + "\n\xE2\x80\x94 log.example/a AAAAAA==\n",          // 4 bytes: no signature
           text + "\n\xE2\x80\x94 log.example/a\n",                   // no signature field
           "hel\x01lo\n\n" + sig_lines,                               // control character
           "hel\xC3lo\n\n" + sig_lines,                               // invalid UTF-8
       }) {
    INFO(bad);
    CHECK(!OpenNote(bad, known).ok());
  }
  CHECK(absl::IsInvalidArgument(OpenNote(text + "\n\xE2\x80\x94 log.example/a !!!!\n", known).status()));
  // Too many signatures.
  std::string many = msg;
  for (int i = 0; i < 101; ++i) absl::StrAppend(&many, "\xE2\x80\x94 w", i, ".example ", absl::Base64Escape("12345"), "\n");
  CHECK(absl::IsInvalidArgument(OpenNote(many, known).status()));
  // Sixteen unknown signatures beside the known one are accepted (the spec's floor).
  std::string sixteen = msg;
  for (int i = 0; i < 16; ++i) absl::StrAppend(&sixteen, "\xE2\x80\x94 w", i, ".example ", absl::Base64Escape("12345"), "\n");
  CHECK(OpenNote(sixteen, known).ok());
  // Base64 as Go reads it (review 102): the unused low bits of the last character before the padding are
  // ignored — in a known key's signature (68 bytes: "xxx=", 2 bits) and in an unknown key's line.
  {
    std::string loose = msg;
    const size_t line = loose.find("\xE2\x80\x94 log.example/a ");
    REQUIRE(line != std::string::npos);
    const size_t pad = loose.find("=\n", line);
    REQUIRE(pad != std::string::npos);
    static constexpr absl::string_view kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char& last = loose[pad - 1];
    last = kAlphabet[kAlphabet.find(last) | 0x03];
    if (loose != msg) {
      absl::StatusOr<Note> opened = OpenNote(loose, known);
      INFO(opened.status());
      CHECK(opened.ok());
    }
    absl::StatusOr<Note> stranger = OpenNote(msg + "\xE2\x80\x94 other.example/w AAAAAAB=\n", known);
    INFO(stranger.status());
    REQUIRE(stranger.ok());
    CHECK(stranger->unverified.size() == 2);
    CHECK(!OpenNote(msg + "\xE2\x80\x94 other.example/w AAAAAAB\n", known).ok());  // padding still required
  }
  // Signing needs a text ending in a newline.
  const NoteSigner* one[] = {signer.get()};
  CHECK(absl::IsInvalidArgument(SignNote("no newline", one).status()));
  // Key names.
  CHECK(IsValidKeyName("example.com/log"));
  CHECK(!IsValidKeyName(""));
  CHECK(!IsValidKeyName("a+b"));
  CHECK(!IsValidKeyName("a b"));
  CHECK(!IsValidKeyName("a\xE2\x80\x83" "b"));  // U+2003 em space
  CHECK(!IsValidKeyName("a\xC2\xA0" "b"));       // U+00A0
}

TEST_CASE("tlog: the verifier key of a PEM log key is the note signer's", "[tlog]") {
  auto key = *Ed25519PrivateKey::Generate();
  const std::string pem = key.ToPem();
  auto signer = Ed25519NoteSigner::FromPem("gw.example/policy-gateway", pem);
  REQUIRE(signer.ok());
  CHECK(*VerifierKeyFromPem("gw.example/policy-gateway", pem) == (*signer)->VerifierKey());
  CHECK((*signer)->VerifierKey().rfind("gw.example/policy-gateway+", 0) == 0);
  CHECK(absl::IsInvalidArgument(VerifierKeyFromPem("gw.example/policy-gateway", "not a pem").status()));
  CHECK(absl::IsInvalidArgument(Ed25519NoteSigner::FromPem("bad name", pem).status()));
}

TEST_CASE("tlog: checkpoints format and parse strictly, and open only with the log's signature", "[tlog]") {
  Checkpoint cp{"example.com/behind-the-sofa", 20852163, *HashFromBase64("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="), {}};
  const std::string text = *FormatCheckpoint(cp);
  CHECK(text == "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n");
  CHECK(*ParseCheckpoint(text) == cp);
  cp.extensions = {"ext one"};
  CHECK(*ParseCheckpoint(*FormatCheckpoint(cp)) == cp);
  CHECK(ParseCheckpoint("o\n0\n" + HashToBase64(EmptyTreeHash()) + "\n")->size == 0);
  CHECK(ParseCheckpoint("o\n4611686018427387904\n" + HashToBase64(EmptyTreeHash()) + "\n")->size == kMaxTreeSize);
  {  // the largest size allowed: a proof against it is judged, not computed forever
    std::vector<Hash> one_hash(1);
    CHECK_FALSE(CheckRecord(one_hash, kMaxTreeSize, EmptyTreeHash(), 0, EmptyTreeHash()).ok());
    CHECK_FALSE(CheckTree(one_hash, kMaxTreeSize, EmptyTreeHash(), kMaxTreeSize - 1, EmptyTreeHash()).ok());
  }
  CHECK(ParseCheckpoint("a log+not a URL\n1\n" + HashToBase64(EmptyTreeHash()) + "\n")->origin == "a log+not a URL");
  for (const std::string& bad : {
           std::string("example.com/log\n5\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="),        // no newline
           std::string("example.com/log\n05\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"),     // leading zero
           std::string("example.com/log\n-5\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"),
           std::string("example.com/log\n+5\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"),
           std::string("example.com/log\n99999999999999999999\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"),
           // above 2^62: the proof arithmetic of such a tree would overflow (it looped forever before)
           std::string("example.com/log\n4611686018427387905\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"),
           std::string("example.com/log\n9223372036854775807\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"),
           std::string("example.com/log\n5\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I\n"),      // no padding
           std::string("example.com/log\n5\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2=\n"),      // 31 bytes
           std::string("example.com/log\n5\n"),                                                     // two lines
           std::string("\n5\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"),                     // empty origin
           std::string("example.com/log\n5\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n"),   // empty extension
       }) {
    INFO(bad);
    CHECK(absl::IsInvalidArgument(ParseCheckpoint(bad).status()));
  }
  auto log = *Ed25519NoteSigner::Create("example.com/behind-the-sofa", *Ed25519PrivateKey::Generate());
  auto log_verifier = *ParseVerifierKey(log->VerifierKey());
  auto stranger = *Ed25519NoteSigner::Create("stranger.example", *Ed25519PrivateKey::Generate());
  auto stranger_verifier = *ParseVerifierKey(stranger->VerifierKey());
  const NoteSigner* by_log[] = {log.get()};
  const std::string signed_cp = *SignCheckpoint(cp, by_log);
  absl::StatusOr<OpenedCheckpoint> opened = OpenCheckpoint(signed_cp, "example.com/behind-the-sofa", *log_verifier);
  REQUIRE(opened.ok());
  CHECK(opened->checkpoint == cp);
  CHECK(absl::IsPermissionDenied(OpenCheckpoint(signed_cp, "example.com/other", *log_verifier).status()));
  // Signed by a key the caller gave as a cosigner only: not the log's signature.
  const NoteSigner* by_stranger[] = {stranger.get()};
  const NoteVerifier* stranger_only[] = {stranger_verifier.get()};
  CHECK(absl::IsPermissionDenied(
      OpenCheckpoint(*SignCheckpoint(cp, by_stranger), "", *log_verifier, stranger_only).status()));
  CHECK(absl::IsUnauthenticated(OpenCheckpoint(*SignCheckpoint(cp, by_stranger), "", *log_verifier).status()));
}

TEST_CASE("tlog: cosignature/v1 signs the timestamped message, uses key type 0x04, and catches tampering", "[tlog]") {
  auto witness_key = *Ed25519PrivateKey::Generate();
  uint64_t now = 1679315147;
  auto witness = *CosignatureV1Signer::Create("witness.example.com/w1", witness_key, [&] { return now; });
  CHECK(witness->key_id() == KeyId("witness.example.com/w1", 0x04, witness_key.public_key().raw()));
  CHECK(witness->key_id() != KeyId("witness.example.com/w1", 0x01, witness_key.public_key().raw()));
  CHECK(CosignatureV1Message("o\n1\nh\n", 1679315147) == "cosignature/v1\ntime 1679315147\no\n1\nh\n");
  auto witness_verifier = ParseVerifierKey(witness->VerifierKey());
  REQUIRE(witness_verifier.ok());
  {
    const std::string vkey = witness->VerifierKey();
    std::string typed;
    REQUIRE(absl::Base64Unescape(vkey.substr(vkey.find('+', vkey.find('+') + 1) + 1), &typed));
    CHECK(typed == std::string(1, '\x04') + witness_key.public_key().raw());
  }
  // The signature is u64 timestamp || Ed25519 over the message: checked with the raw key here.
  const std::string text = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
  const std::string sig = *witness->Sign(text);
  REQUIRE(sig.size() == 72);
  CHECK(sig.substr(0, 8) == std::string("\x00\x00\x00\x00\x64\x18\x50\xcb", 8));
  CHECK(witness_key.public_key().Verify(CosignatureV1Message(text, now), sig.substr(8)));
  CHECK((*witness_verifier)->Verify(text, sig));
  std::string later = sig;
  later[7] ^= 1;  // another timestamp
  CHECK(!(*witness_verifier)->Verify(text, later));
  CHECK(!(*witness_verifier)->Verify(text + "ext\n", sig));
  CHECK(!(*witness_verifier)->Verify(text, sig.substr(0, 71)));
  std::string huge = sig;
  huge[0] = '\x80';  // timestamp >= 2^63
  CHECK(!(*witness_verifier)->Verify(text, huge));
  // A clock stepped back does not step the timestamps back: a later cosignature never reads as an earlier view.
  now = 1679315000;
  const std::string after_step = *witness->Sign(text);
  CHECK(after_step.substr(0, 8) == sig.substr(0, 8));
  CHECK((*witness_verifier)->Verify(text, after_step));
  now = 1679315200;
  CHECK(witness->Sign(text)->substr(0, 8) == std::string("\x00\x00\x00\x00\x64\x18\x51\x00", 8));
  // A plain Ed25519 note signature by the same key is not a cosignature (and vice versa).
  auto plain = *Ed25519NoteSigner::Create("witness.example.com/w1", witness_key);
  CHECK(!(*witness_verifier)->Verify(text, *plain->Sign(text)));
  // The spec's example cosignature line: key ID, then the timestamp of its example message, then 64 bytes.
  const NoteSignature spec_line{"witness.example.com/w1", 0x8d66cf3f,
                                "jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA=="};
  CHECK(*CosignatureV1Timestamp(spec_line) == 1679315147);
  CHECK(SignatureBytes(spec_line)->size() == kCosignatureV1Size);
  // In a checkpoint: log + cosigner, quorum counted, the timestamp read back.
  auto log = *Ed25519NoteSigner::Create("example.com/behind-the-sofa", *Ed25519PrivateKey::Generate());
  auto log_verifier = *ParseVerifierKey(log->VerifierKey());
  const Checkpoint cp = *ParseCheckpoint(text);
  const NoteSigner* log_only[] = {log.get()};
  const std::string by_log = *SignCheckpoint(cp, log_only);
  const NoteVerifier* cosigners[] = {witness_verifier->get()};
  CHECK(absl::IsPermissionDenied(OpenCheckpoint(by_log, "", *log_verifier, cosigners, 1).status()));
  // The witness adds its line to the log's note (keeping the log's signature).
  const Note log_note = *OpenNote(by_log, std::vector<const NoteVerifier*>{log_verifier.get()});
  const NoteSigner* witness_only[] = {witness.get()};
  const std::string cosigned = *SignNote(log_note.text, witness_only, log_note.verified);
  absl::StatusOr<OpenedCheckpoint> opened = OpenCheckpoint(cosigned, "", *log_verifier, cosigners, 1);
  REQUIRE(opened.ok());
  CHECK(opened->cosignatures == 1);
  const NoteSignature& cosig = opened->note.verified.back();
  CHECK(*CosignatureV1Timestamp(cosig) == now);
  // A cosignature over another tree head fails the whole note.
  const std::string other_text = "example.com/behind-the-sofa\n20852164\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
  const uint32_t id = witness->key_id();
  const std::string id_bytes = {static_cast<char>(id >> 24), static_cast<char>(id >> 16), static_cast<char>(id >> 8),
                                static_cast<char>(id)};
  const std::string other_sig = absl::Base64Escape(id_bytes + *witness->Sign(other_text));
  const std::string spliced = by_log + "\xE2\x80\x94 witness.example.com/w1 " + other_sig + "\n";
  CHECK(absl::IsPermissionDenied(OpenCheckpoint(spliced, "", *log_verifier, cosigners, 1).status()));
}

TEST_CASE("tlog: every single-bit change to a cosigned checkpoint is refused, but for bits Go's base64 ignores", "[tlog]") {
  auto log = *Ed25519NoteSigner::Create("example.com/log", *Ed25519PrivateKey::Generate());
  auto witness = *CosignatureV1Signer::Create("witness.example/w", *Ed25519PrivateKey::Generate(), [] { return uint64_t{1700000000}; });
  auto log_verifier = *ParseVerifierKey(log->VerifierKey());
  auto witness_verifier = *ParseVerifierKey(witness->VerifierKey());
  const NoteVerifier* cosigners[] = {witness_verifier.get()};
  const NoteSigner* signers[] = {log.get(), witness.get()};
  const std::string note = *SignCheckpoint(Checkpoint{"example.com/log", 1234, RecordHash("x"), {"ext"}}, signers);
  REQUIRE(OpenCheckpoint(note, "example.com/log", *log_verifier, cosigners, 1).ok());
  int refused = 0;
  for (size_t i = 0; i < note.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string changed = note;
      changed[i] = static_cast<char>(changed[i] ^ (1 << bit));
      INFO("byte " << i << " bit " << bit);
      if (OpenCheckpoint(changed, "example.com/log", *log_verifier, cosigners, 1).ok()) {
        // Only a change to the unused low bits of a signature's last base64 character, which Go's decoder
        // ignores too (review 102): the same signature bytes, the same signed text.
        CHECK(i + 1 < note.size());
        CHECK(note[i + 1] == '=');
        continue;
      }
      ++refused;
    }
  }
  // Two signature lines, each with at most 4 unused bits (6 bit flips of an ASCII letter can land on one).
  CHECK(refused >= static_cast<int>(note.size()) * 8 - 2 * 8);
}

}  // namespace osh::tlog

namespace osh::tlog {

TEST_CASE("tlog: witness keys are cosignature/v1 keys, none of them one public key twice, none the log's own", "[tlog]") {
  const Ed25519PrivateKey one = *Ed25519PrivateKey::Generate(), two = *Ed25519PrivateKey::Generate();
  auto cosigner = [](const std::string& name, const Ed25519PrivateKey& key) {
    return *ParseVerifierKey((*CosignatureV1Signer::Create(name, key))->VerifierKey());
  };
  const auto w1 = cosigner("witness.test/w1", one), w2 = cosigner("witness.test/w2", two);
  const auto w1_renamed = cosigner("witness.test/w1-again", one);
  const auto note_key = *ParseVerifierKey((*Ed25519NoteSigner::Create("witness.test/w1", one))->VerifierKey());
  CHECK(CheckCosigners(std::vector<const NoteVerifier*>{w1.get(), w2.get()}).ok());
  CHECK(CheckCosigners(std::vector<const NoteVerifier*>{}).ok());
  const absl::Status twice = CheckCosigners(std::vector<const NoteVerifier*>{w1.get(), w2.get(), w1_renamed.get()});
  CHECK(absl::IsInvalidArgument(twice));
  CHECK_THAT(std::string(twice.message()), Catch::Contains("one public key"));
  const absl::Status typed = CheckCosigners(std::vector<const NoteVerifier*>{w2.get(), note_key.get()});
  CHECK(absl::IsInvalidArgument(typed));
  CHECK_THAT(std::string(typed.message()), Catch::Contains("not a cosignature/v1 key"));
  // A witness key that is the log's own public key (the log's note key w1, as a cosignature key): its
  // holder would meet the quorum alone.
  const auto log_key = *ParseVerifierKey((*Ed25519NoteSigner::Create("log.test/log", one))->VerifierKey());
  CHECK(CheckCosigners(std::vector<const NoteVerifier*>{w2.get()}, log_key.get()).ok());
  const absl::Status own = CheckCosigners(std::vector<const NoteVerifier*>{w2.get(), w1.get()}, log_key.get());
  CHECK(absl::IsInvalidArgument(own));
  CHECK_THAT(std::string(own.message()), Catch::Contains("witness key 'witness.test/w1' is the public key of the log"));
}

}  // namespace osh::tlog

namespace osh::tlog {

TEST_CASE("tlog: a log or witness verifier key anyone can forge under is refused", "[tlog]") {
  // Review 107: the note keys took any 32 bytes; a small-order witness key in a client's witness_keys made
  // its quorum something anyone could meet.
  const std::string identity = std::string("\x01") + std::string(31, '\0');
  for (const uint8_t type : {kSignatureTypeEd25519, kSignatureTypeCosignatureV1}) {
    auto weak = ParseVerifierKey(FormatVerifierKey("witness.example/w", type, identity));
    REQUIRE_FALSE(weak.ok());
    CHECK_THAT(std::string(weak.status().message()), Catch::Contains("point of small order"));
  }
  auto key = Ed25519PrivateKey::Generate();
  REQUIRE(key.ok());
  CHECK(ParseVerifierKey(FormatVerifierKey("witness.example/w", kSignatureTypeCosignatureV1, key->public_key().raw())).ok());
}

}  // namespace osh::tlog
