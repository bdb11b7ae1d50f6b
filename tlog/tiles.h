// C2SP tlog-tiles (https://c2sp.org/tlog-tiles): the Merkle tree served as static tiles of height 8
// (256 hashes, 8,192 bytes when full) and the entries as bundles.
//   tile/<L>/<N>[.p/<W>]        hash tile: level L (0..63), index N, width W (1..255) if partial
//   tile/entries/<N>[.p/<W>]    entry bundle: entries [N*256, N*256+W), each a big-endian uint16 length
//                               then the entry's bytes
// N is written in zero-padded 3-digit path elements, all but the last prefixed with "x" (1234067 is
// "x001/x234/067"). Tile k at level L holds MTH(D[(k*256+i)*256^L : (k*256+i+1)*256^L]), i < W; in stored
// hash terms these are StoredHashIndex(8*L, k*256+i).
//
// Pure functions here, except the writer (WriteTiles, WriteFileAtomically) and DirTileFetcher, which touch
// only the directory they are given. Errors are values: INVALID_ARGUMENT for malformed paths, bundles and
// tiles, NOT_FOUND for a missing file, DATA_LOSS for tiles that do not hash to the trusted tree (a tile
// server lying or a file corrupted), FAILED_PRECONDITION when an existing immutable file differs from what
// would be written (the log forked), INTERNAL for I/O failures.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "tlog/merkle.h"

namespace osh::tlog {

inline constexpr int kTileHeight = 8;
inline constexpr int kTileWidth = 1 << kTileHeight;  // 256
inline constexpr int kEntriesLevel = -1;             // the "level" of an entry bundle
inline constexpr size_t kMaxEntrySize = 0xFFFF;      // a bundle frames each entry with a uint16 length

struct Tile {
  int level = 0;           // 0..63, or kEntriesLevel for an entry bundle
  int64_t n = 0;           // index within the level
  int width = kTileWidth;  // 1..256; 256 is a full tile

  bool full() const { return width == kTileWidth; }
  bool operator==(const Tile&) const = default;
  template <typename H>
  friend H AbslHashValue(H h, const Tile& t) {
    return H::combine(std::move(h), t.level, t.n, t.width);
  }
};

// "x001/x234/067" for 1234067, "000" for 0.
std::string TileIndexPath(int64_t n);
// The C2SP path of a tile or bundle, relative to the log's prefix (no leading slash).
std::string TilePath(const Tile& tile);
// Strict inverse of TilePath: only the canonical spelling parses.
absl::StatusOr<Tile> ParseTilePath(absl::string_view path);

// The smallest tile holding stored hash `index` (its width reaches just that hash), and the hash's byte
// offset in the tile's data.
Tile TileForStoredHash(int64_t index, size_t* offset = nullptr);
// The hash tiles a tree of `size` entries consists of: every full tile, and at each level the partial
// tile of width floor(size / 256^L) mod 256 when that is not 0. Level by level, left to right.
std::vector<Tile> TilesForSize(int64_t size);
// The hash tiles to publish when the log grows from a published `old_size` to `new_size`: the full tiles
// completed in between and, per level, the partial tile of the new size when it is not one that existed
// already. Entry bundles follow level 0: BundleOf(tile) for each level-0 tile.
std::vector<Tile> NewTiles(int64_t old_size, int64_t new_size);
inline Tile BundleOf(const Tile& level0) { return Tile{kEntriesLevel, level0.n, level0.width}; }
// The smallest tree `tile` is part of: (n * 256 + width) * 256^level entries (an entry bundle as level 0),
// saturating at INT64_MAX. A checkpoint of size S is served only the tiles with TreeSizeOf(tile) <= S.
int64_t TreeSizeOf(const Tile& tile);

// The bytes of a hash tile, read from stored hashes (width * 32 bytes).
absl::StatusOr<std::string> ReadTileData(const Tile& tile, const HashReader& reader);
// The stored hash `index` as the data of `tile` implies it (hashing inside the tile for levels between
// tile levels). INVALID_ARGUMENT if the index is not in the tile or the data is too short.
absl::StatusOr<Hash> HashFromTile(const Tile& tile, absl::string_view data, int64_t index);

// Entry bundle framing. INVALID_ARGUMENT for an entry over 65,535 bytes, or a bundle that does not parse
// exactly (truncated length or entry, trailing bytes).
absl::StatusOr<std::string> EncodeEntryBundle(absl::Span<const std::string> entries);
absl::StatusOr<std::vector<std::string>> DecodeEntryBundle(absl::string_view data);

// Where tiles come from (a directory, an HTTP client, a cache). ReadTiles answers data[i] for tiles[i].
class TileFetcher {
 public:
  virtual ~TileFetcher() = default;
  virtual absl::StatusOr<std::vector<std::string>> ReadTiles(absl::Span<const Tile> tiles) const = 0;
};

// Reads tiles by their C2SP path below the log's prefix, from wherever Fetch reads files (a directory,
// an HTTP server: see policyctl's log commands). A partial tile that is gone (Fetch answers NOT_FOUND) is
// read from the full tile when that exists (the spec lets logs delete partials once the full tile is
// there). Thread safety: as Fetch's.
class PathTileFetcher : public TileFetcher {
 public:
  // The bytes of the file at `path` (relative, no leading slash: "checkpoint", "tile/0/000"), NOT_FOUND
  // when there is none, another error when it cannot be read.
  virtual absl::StatusOr<std::string> Fetch(const std::string& path) const = 0;
  absl::StatusOr<std::vector<std::string>> ReadTiles(absl::Span<const Tile> tiles) const final;
};

// Reads a log from a directory laid out as C2SP says (the log's prefix). Stateless apart from the path;
// safe from any thread.
class DirTileFetcher final : public PathTileFetcher {
 public:
  explicit DirTileFetcher(std::string dir) : dir_(std::move(dir)) {}
  absl::StatusOr<std::string> Fetch(const std::string& path) const override;

 private:
  std::string dir_;
};

// Reads stored hashes of the tree of `size` entries with root `root` from tiles, and answers only after
// checking every tile it used against that root: the tiles covering the tree's right edge must hash to
// the root, and every other tile to its hash in the (already checked) tile above. A port of Go's
// tlog.TileHashReader, except that every tile beyond the right edge is checked (the x/mod in Debian 12
// starts that loop at the count of edge subtrees, not of edge tiles, and skips some). The fetcher must outlive the reader. Thread safety: as the fetcher's.
class TileHashReader final : public HashReader {
 public:
  TileHashReader(int64_t size, const Hash& root, const TileFetcher& fetcher)
      : size_(size), root_(root), fetcher_(fetcher) {}
  absl::StatusOr<std::vector<Hash>> ReadHashes(absl::Span<const int64_t> indexes) const override;

 private:
  int64_t size_;
  Hash root_;
  const TileFetcher& fetcher_;
};

// Where the writer reads entries from, for the bundles: entries [begin, end), in order.
class EntryReader {
 public:
  virtual ~EntryReader() = default;
  virtual absl::StatusOr<std::vector<std::string>> ReadEntries(int64_t begin, int64_t end) const = 0;
};

struct TileWriteOptions {
  // fsync each file and its directory before the rename is relied on (off only for benchmarks and tests).
  bool sync = true;
  // Once a full tile or bundle is written, delete its partial versions (C2SP: "MAY delete any partial tile
  // once the corresponding full tile is available"). Partials of a tile that is still partial are kept:
  // each belongs to a tree size a checkpoint was produced for, and MUST stay served. Off by default: the
  // full tile is "available" only once a checkpoint covering it is published, and until then readers of
  // the current checkpoint need the partial (review 102) — publish, then DeleteSupersededPartials.
  bool delete_superseded_partials = false;
  // The size of the checkpoint published last (-1: unknown). A file whose tile belongs only to larger trees
  // (TreeSizeOf > published_size) was never under a published checkpoint — a run that crashed before its
  // checkpoint, over entries since rolled back, left it — and is replaced when its bytes differ. Files under
  // the published checkpoint are immutable whatever this says.
  int64_t published_size = -1;
};

struct TileWriteStats {
  int64_t files_written = 0;
  int64_t bytes_written = 0;
  int64_t partials_deleted = 0;
  int64_t unpublished_replaced = 0;  // files no checkpoint covered, found with other bytes and replaced
};

// Publishes what growing from `old_size` to `new_size` adds under `dir`: the hash tiles of NewTiles and
// the matching entry bundles, each written to a temporary file and renamed into place. An immutable file
// that already exists with the same bytes is left alone (a retry after a crash); with other bytes it is
// FAILED_PRECONDITION and nothing else is written (unless no checkpoint covered it: options.published_size).
// Write the checkpoint for new_size only after this succeeds. Not safe to run concurrently on one directory
// (one sequencer writes a log).
absl::StatusOr<TileWriteStats> WriteTiles(const std::string& dir, int64_t old_size, int64_t new_size,
                                          const HashReader& hashes, const EntryReader& entries,
                                          const TileWriteOptions& options = {});

// The right edge of the tree of `size` entries: at each level its last tile (partial or full), left to
// right by level. The files a log wrote last for that size, in the folders it made last.
std::vector<Tile> EdgeTiles(int64_t size);
// Writes EdgeTiles(size) and the level-0 tile's bundle as WriteTiles does: a missing file written, an
// existing one compared (other bytes: FAILED_PRECONDITION unless options.published_size allows it).
absl::StatusOr<TileWriteStats> WriteEdgeTiles(const std::string& dir, int64_t size, const HashReader& hashes,
                                              const EntryReader& entries, const TileWriteOptions& options = {});
// Deletes the partial versions (hash tiles and bundles) of the tiles that growing from `old_size` to
// `new_size` made full. Call it only once the checkpoint of `new_size` is published: until then a reader
// of the older checkpoint needs a partial the full tile would not be served for. Returns the files deleted.
int64_t DeleteSupersededPartials(const std::string& dir, int64_t old_size, int64_t new_size);

// Writes `data` to `path` through a temporary file in the same directory and a rename, creating the
// directories on the way (files 0644: tiles are public). With `sync`, the file, its directory and the parent
// of every directory this call created are fsynced: after a crash the file is there with its folders.
absl::Status WriteFileAtomically(const std::string& path, absl::string_view data, bool sync);

}  // namespace osh::tlog
