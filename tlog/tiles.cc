#include "tlog/tiles.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace osh::tlog {

namespace tiles_internal {

// The hash of a run of 2^k hashes of one tile (the tile's inner levels).
Hash TileDataHash(absl::string_view data) {
  if (data.size() == kHashSize) return *HashFromBytes(data);
  const size_t half = data.size() / 2;
  return NodeHash(TileDataHash(data.substr(0, half)), TileDataHash(data.substr(half)));
}

// Go's tileParent: the tile k levels of tiles above `t` holding it, clipped to a tree of `size` entries;
// nullopt-like (width 0) when that tile does not exist in the tree.
Tile TileParent(Tile t, int k, int64_t size) {
  t.level += k;
  t.n >>= k * kTileHeight;
  t.width = kTileWidth;
  const int64_t max = size >> (t.level * kTileHeight);
  if ((t.n << kTileHeight) + t.width >= max) {
    if ((t.n << kTileHeight) >= max) return Tile{0, 0, 0};
    t.width = static_cast<int>(max - (t.n << kTileHeight));
  }
  return t;
}

bool ValidHashTile(const Tile& t) { return t.level >= 0 && t.level < 64 && t.width >= 1 && t.width <= kTileWidth; }

absl::Status ErrnoError(absl::string_view what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    // Only a file that is not there is NOT_FOUND (a monitor reads that as the log's fault); a file it may
    // not read is this side's.
    const int error = errno;
    if (error == ENOENT || error == ENOTDIR) return absl::NotFoundError(absl::StrCat("no file ", path));
    return absl::UnavailableError(absl::StrCat("cannot open ", path, ": ", std::strerror(error)));
  }
  std::ostringstream buf;
  buf << in.rdbuf();
  if (in.bad()) return absl::InternalError(absl::StrCat("cannot read ", path));
  return std::move(buf).str();
}

absl::Status SyncDirectory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoError("cannot open", dir);
  const int rc = ::fsync(fd);
  ::close(fd);
  return rc == 0 ? absl::OkStatus() : ErrnoError("cannot fsync", dir);
}

// Writes an immutable tile or bundle: absent -> written; present with the same bytes -> left alone;
// present with other bytes -> FAILED_PRECONDITION, unless `replaceable` (no published checkpoint covers it).
absl::Status PublishImmutable(const std::string& path, absl::string_view data, bool sync, bool replaceable,
                              TileWriteStats& stats) {
  std::error_code ec;
  if (std::filesystem::exists(path, ec)) {
    absl::StatusOr<std::string> existing = ReadWholeFile(path);
    if (!existing.ok()) return existing.status();
    if (*existing == data) return absl::OkStatus();
    if (!replaceable) {
      return absl::FailedPreconditionError(absl::StrCat(path, " exists with other contents: the log would fork"));
    }
    ++stats.unpublished_replaced;
  }
  if (absl::Status s = WriteFileAtomically(path, data, sync); !s.ok()) return s;
  ++stats.files_written;
  stats.bytes_written += static_cast<int64_t>(data.size());
  return absl::OkStatus();
}

}  // namespace tiles_internal

using namespace tiles_internal;

std::string TileIndexPath(int64_t n) {
  std::string out = absl::StrFormat("%03d", n % 1000);
  while (n >= 1000) {
    n /= 1000;
    out = absl::StrFormat("x%03d/%s", n % 1000, out);
  }
  return out;
}

std::string TilePath(const Tile& tile) {
  std::string out = absl::StrCat("tile/", tile.level == kEntriesLevel ? "entries" : absl::StrCat(tile.level), "/",
                                 TileIndexPath(tile.n));
  if (!tile.full()) absl::StrAppend(&out, ".p/", tile.width);
  return out;
}

absl::StatusOr<Tile> ParseTilePath(absl::string_view path) {
  const auto bad = [&] { return absl::InvalidArgumentError(absl::StrCat("malformed tile path \"", path, "\"")); };
  std::vector<absl::string_view> parts = absl::StrSplit(path, '/');
  if (parts.size() < 3 || parts[0] != "tile") return bad();
  Tile tile;
  if (parts[1] == "entries") {
    tile.level = kEntriesLevel;
  } else if (!absl::SimpleAtoi(parts[1], &tile.level) || tile.level < 0 || tile.level > 63) {
    return bad();
  }
  if (parts.size() >= 4 && absl::EndsWith(parts[parts.size() - 2], ".p")) {
    if (!absl::SimpleAtoi(parts.back(), &tile.width) || tile.width < 1 || tile.width >= kTileWidth) return bad();
    parts.pop_back();
    parts.back().remove_suffix(2);
  }
  for (size_t i = 2; i < parts.size(); ++i) {
    absl::string_view digits = parts[i];
    if (i + 1 < parts.size() && !absl::ConsumePrefix(&digits, "x")) return bad();
    int group = 0;
    if (digits.size() != 3 || !absl::SimpleAtoi(digits, &group) || group < 0) return bad();
    if (tile.n > (INT64_MAX - group) / 1000) return bad();
    tile.n = tile.n * 1000 + group;
  }
  if (TilePath(tile) != path) return bad();  // only the canonical spelling
  return tile;
}

Tile TileForStoredHash(int64_t index, size_t* offset) {
  auto [level, n] = SplitStoredHashIndex(index);
  Tile t;
  t.level = level / kTileHeight;
  level -= t.level * kTileHeight;  // the level within the tile
  t.n = (n << level) >> kTileHeight;
  n -= (t.n << kTileHeight) >> level;  // the hash's position among the tile's hashes of its level
  t.width = static_cast<int>((n + 1) << level);
  if (offset != nullptr) *offset = static_cast<size_t>(n << level) * kHashSize;
  return t;
}

std::vector<Tile> TilesForSize(int64_t size) { return NewTiles(0, size); }

int64_t TreeSizeOf(const Tile& tile) {
  const int level = tile.level == kEntriesLevel ? 0 : tile.level;
  int64_t size = 0;
  if (__builtin_mul_overflow(tile.n, int64_t{kTileWidth}, &size) || __builtin_add_overflow(size, int64_t{tile.width}, &size)) {
    return INT64_MAX;
  }
  for (int i = 0; i < level; ++i) {
    if (__builtin_mul_overflow(size, int64_t{kTileWidth}, &size)) return INT64_MAX;
  }
  return size;
}

std::vector<Tile> NewTiles(int64_t old_size, int64_t new_size) {
  std::vector<Tile> tiles;
  for (int level = 0; level < 64 && (new_size >> (kTileHeight * level)) > 0; ++level) {
    const int64_t old_n = old_size >> (kTileHeight * level);
    const int64_t new_n = new_size >> (kTileHeight * level);
    for (int64_t n = old_n >> kTileHeight; n < (new_n >> kTileHeight); ++n) tiles.push_back(Tile{level, n, kTileWidth});
    const int64_t n = new_n >> kTileHeight;
    const int width = static_cast<int>(new_n - (n << kTileHeight));
    if (width > 0 && new_n > old_n) tiles.push_back(Tile{level, n, width});
  }
  return tiles;
}

absl::StatusOr<std::string> ReadTileData(const Tile& tile, const HashReader& reader) {
  if (!ValidHashTile(tile)) return absl::InvalidArgumentError(absl::StrCat("not a hash tile: ", TilePath(tile)));
  std::vector<int64_t> indexes(tile.width);
  const int64_t start = tile.n << kTileHeight;
  for (int i = 0; i < tile.width; ++i) indexes[i] = StoredHashIndex(kTileHeight * tile.level, start + i);
  absl::StatusOr<std::vector<Hash>> hashes = reader.ReadHashes(indexes);
  if (!hashes.ok()) return hashes.status();
  if (hashes->size() != indexes.size()) return absl::DataLossError("tlog: the reader answered the wrong count");
  std::string data;
  data.reserve(indexes.size() * kHashSize);
  for (const Hash& h : *hashes) data.append(reinterpret_cast<const char*>(h.data()), kHashSize);
  return data;
}

absl::StatusOr<Hash> HashFromTile(const Tile& tile, absl::string_view data, int64_t index) {
  if (!ValidHashTile(tile)) return absl::InvalidArgumentError(absl::StrCat("not a hash tile: ", TilePath(tile)));
  if (data.size() < static_cast<size_t>(tile.width) * kHashSize) {
    return absl::InvalidArgumentError(absl::StrCat("data of ", data.size(), " bytes too short for ", TilePath(tile)));
  }
  size_t start = 0;
  const Tile holder = TileForStoredHash(index, &start);
  if (holder.level != tile.level || holder.n != tile.n || holder.width > tile.width) {
    return absl::InvalidArgumentError(absl::StrCat("stored hash ", index, " is in ", TilePath(holder), " not ", TilePath(tile)));
  }
  const size_t end = static_cast<size_t>(holder.width) * kHashSize;
  return TileDataHash(data.substr(start, end - start));
}

absl::StatusOr<std::string> EncodeEntryBundle(absl::Span<const std::string> entries) {
  std::string out;
  for (const std::string& entry : entries) {
    if (entry.size() > kMaxEntrySize) {
      return absl::InvalidArgumentError(absl::StrCat("entry of ", entry.size(), " bytes: a bundle frames at most 65535"));
    }
    out.push_back(static_cast<char>(entry.size() >> 8));
    out.push_back(static_cast<char>(entry.size() & 0xFF));
    out.append(entry);
  }
  return out;
}

absl::StatusOr<std::vector<std::string>> DecodeEntryBundle(absl::string_view data) {
  std::vector<std::string> entries;
  while (!data.empty()) {
    if (data.size() < 2) return absl::InvalidArgumentError("entry bundle: truncated length");
    const size_t len = (static_cast<size_t>(static_cast<uint8_t>(data[0])) << 8) | static_cast<uint8_t>(data[1]);
    data.remove_prefix(2);
    if (data.size() < len) return absl::InvalidArgumentError("entry bundle: truncated entry");
    entries.emplace_back(data.substr(0, len));
    data.remove_prefix(len);
  }
  return entries;
}

absl::StatusOr<std::string> DirTileFetcher::Fetch(const std::string& path) const {
  return ReadWholeFile(absl::StrCat(dir_, "/", path));
}

absl::StatusOr<std::vector<std::string>> PathTileFetcher::ReadTiles(absl::Span<const Tile> tiles) const {
  std::vector<std::string> out;
  out.reserve(tiles.size());
  for (const Tile& tile : tiles) {
    absl::StatusOr<std::string> data = Fetch(TilePath(tile));
    if (absl::IsNotFound(data.status()) && !tile.full()) {
      data = Fetch(TilePath(Tile{tile.level, tile.n, kTileWidth}));
      if (data.ok() && tile.level != kEntriesLevel && data->size() == static_cast<size_t>(kTileWidth) * kHashSize) {
        data->resize(static_cast<size_t>(tile.width) * kHashSize);
      } else if (data.ok() && tile.level == kEntriesLevel) {
        absl::StatusOr<std::vector<std::string>> entries = DecodeEntryBundle(*data);
        if (!entries.ok()) return entries.status();
        entries->resize(std::min<size_t>(entries->size(), static_cast<size_t>(tile.width)));
        data = EncodeEntryBundle(*entries);
      }
    }
    if (!data.ok()) return data.status();
    out.push_back(*std::move(data));
  }
  return out;
}

absl::StatusOr<std::vector<Hash>> TileHashReader::ReadHashes(absl::Span<const int64_t> indexes) const {
  if (size_ <= 0) return absl::InvalidArgumentError("tlog: an empty tree has no hashes");
  absl::flat_hash_map<Tile, size_t> tile_order;  // tile -> position in `tiles`
  std::vector<Tile> tiles;
  // The tiles holding the hashes of the complete subtrees along the tree's right edge: they must hash to
  // the root.
  std::vector<int64_t> stx;
  for (int64_t lo = 0, hi = size_; lo < hi;) {
    int l = 0;
    while (l < 62 && (int64_t{1} << (l + 1)) <= hi - lo) ++l;
    stx.push_back(StoredHashIndex(l, lo >> l));
    lo += int64_t{1} << l;
  }
  std::vector<size_t> stx_tile(stx.size());
  for (size_t i = 0; i < stx.size(); ++i) {
    const Tile tile = TileParent(TileForStoredHash(stx[i]), 0, size_);
    auto [it, inserted] = tile_order.try_emplace(tile, tiles.size());
    if (inserted) tiles.push_back(tile);
    stx_tile[i] = it->second;
  }
  const size_t edge_tiles = tiles.size();
  // Each requested hash's tile, with the full tiles between it and a tile already chosen.
  std::vector<size_t> index_tile(indexes.size());
  for (size_t i = 0; i < indexes.size(); ++i) {
    const int64_t x = indexes[i];
    if (x < 0 || x >= StoredHashIndex(0, size_)) return absl::InvalidArgumentError("tlog: indexes not in tree");
    const Tile tile = TileForStoredHash(x);
    int k = 0;
    for (;; ++k) {
      if (k > 64) return absl::InternalError("tlog: no parent tile found");
      const Tile parent = TileParent(tile, k, size_);
      if (auto it = tile_order.find(parent); parent.width != 0 && it != tile_order.end()) {
        if (k == 0) index_tile[i] = it->second;
        break;
      }
    }
    for (--k; k >= 0; --k) {
      const Tile parent = TileParent(tile, k, size_);
      if (!parent.full()) return absl::InternalError("tlog: bad math in TileHashReader");
      tile_order[parent] = tiles.size();
      if (k == 0) index_tile[i] = tiles.size();
      tiles.push_back(parent);
    }
  }
  absl::StatusOr<std::vector<std::string>> data = fetcher_.ReadTiles(tiles);
  if (!data.ok()) return data.status();
  if (data->size() != tiles.size()) return absl::DataLossError("tlog: the tile fetcher answered the wrong count");
  for (size_t i = 0; i < tiles.size(); ++i) {
    if ((*data)[i].size() != static_cast<size_t>(tiles[i].width) * kHashSize) {
      return absl::DataLossError(absl::StrCat("tile ", TilePath(tiles[i]), " has ", (*data)[i].size(), " bytes, want ",
                                              tiles[i].width * kHashSize));
    }
  }
  // The right edge against the root.
  absl::StatusOr<Hash> th = HashFromTile(tiles[stx_tile.back()], (*data)[stx_tile.back()], stx.back());
  if (!th.ok()) return th.status();
  for (size_t i = stx.size() - 1; i-- > 0;) {
    absl::StatusOr<Hash> h = HashFromTile(tiles[stx_tile[i]], (*data)[stx_tile[i]], stx[i]);
    if (!h.ok()) return h.status();
    *th = NodeHash(*h, *th);
  }
  if (*th != root_) return absl::DataLossError("downloaded inconsistent tile: the tiles do not hash to the root");
  // Every other tile against its hash in the tile above (which precedes it in `tiles`, so is checked).
  for (size_t i = edge_tiles; i < tiles.size(); ++i) {
    const Tile parent = TileParent(tiles[i], 1, size_);
    auto it = tile_order.find(parent);
    if (it == tile_order.end()) return absl::InternalError("tlog: lost the parent of a tile");
    absl::StatusOr<Hash> h =
        HashFromTile(parent, (*data)[it->second], StoredHashIndex(parent.level * kTileHeight, tiles[i].n));
    if (!h.ok()) return h.status();
    if (*h != TileDataHash((*data)[i])) {
      return absl::DataLossError(absl::StrCat("downloaded inconsistent tile ", TilePath(tiles[i])));
    }
  }
  std::vector<Hash> hashes;
  hashes.reserve(indexes.size());
  for (size_t i = 0; i < indexes.size(); ++i) {
    absl::StatusOr<Hash> h = HashFromTile(tiles[index_tile[i]], (*data)[index_tile[i]], indexes[i]);
    if (!h.ok()) return h.status();
    hashes.push_back(*h);
  }
  return hashes;
}

absl::Status WriteFileAtomically(const std::string& path, absl::string_view data, bool sync) {
  const std::filesystem::path target(path);
  std::error_code ec;
  // The folders this call makes (tile/0/001.p/ every 256 entries, tile/0/x001/ …): each one's entry in its
  // parent is fsynced too, or a crash could keep the checkpoint that names a tile and lose the tile's folder.
  std::vector<std::filesystem::path> made;
  for (std::filesystem::path p = target.parent_path(); !p.empty() && !std::filesystem::exists(p, ec) && !ec;
       p = p.parent_path()) {
    made.push_back(p);
  }
  std::filesystem::create_directories(target.parent_path(), ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", target.parent_path().string(), ": ", ec.message()));
  // A name of its own (mkostemp): a leftover of a crashed process that had the same pid never blocks it.
  std::string temp = absl::StrCat(path, ".tmp.XXXXXX");
  const int fd = ::mkostemp(temp.data(), O_CLOEXEC);
  if (fd < 0) return ErrnoError("cannot create", temp);
  if (::fchmod(fd, 0644) != 0) {  // served read-only to anyone (mkostemp makes it 0600)
    absl::Status s = ErrnoError("cannot set the mode of", temp);
    ::close(fd);
    ::unlink(temp.c_str());
    return s;
  }
  for (size_t done = 0; done < data.size();) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      absl::Status s = ErrnoError("cannot write", temp);
      ::close(fd);
      ::unlink(temp.c_str());
      return s;
    }
    done += static_cast<size_t>(n);
  }
  if ((sync && ::fsync(fd) != 0) || ::close(fd) != 0) {
    absl::Status s = ErrnoError("cannot flush", temp);
    ::unlink(temp.c_str());
    return s;
  }
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    absl::Status s = ErrnoError("cannot rename into", path);
    ::unlink(temp.c_str());
    return s;
  }
  if (!sync) return absl::OkStatus();
  if (absl::Status s = SyncDirectory(target.parent_path().string()); !s.ok()) return s;
  for (const std::filesystem::path& dir : made) {  // deepest first
    const std::filesystem::path parent = dir.has_parent_path() ? dir.parent_path() : std::filesystem::path(".");
    if (absl::Status s = SyncDirectory(parent.empty() ? "." : parent.string()); !s.ok()) return s;
  }
  return absl::OkStatus();
}

namespace {

// Writes `tiles` (hash tiles) and, for level 0, their entry bundles, as WriteTiles describes.
absl::StatusOr<TileWriteStats> WriteTileList(const std::string& dir, const std::vector<Tile>& tiles,
                                             const HashReader& hashes, const EntryReader& entries,
                                             const TileWriteOptions& options) {
  TileWriteStats stats;
  for (const Tile& tile : tiles) {
    absl::StatusOr<std::string> data = ReadTileData(tile, hashes);
    if (!data.ok()) return data.status();
    std::vector<std::pair<Tile, std::string>> files;
    files.emplace_back(tile, *std::move(data));
    if (tile.level == 0) {
      const int64_t begin = tile.n * kTileWidth;
      absl::StatusOr<std::vector<std::string>> batch = entries.ReadEntries(begin, begin + tile.width);
      if (!batch.ok()) return batch.status();
      if (batch->size() != static_cast<size_t>(tile.width)) return absl::DataLossError("tlog: entry reader answered the wrong count");
      // The bundle's entries must be the ones the tile's leaf hashes commit to.
      for (int i = 0; i < tile.width; ++i) {
        if (HashBytes(RecordHash((*batch)[i])) != absl::string_view(files[0].second).substr(i * kHashSize, kHashSize)) {
          return absl::DataLossError(absl::StrCat("tlog: entry ", begin + i, " does not match its stored hash"));
        }
      }
      absl::StatusOr<std::string> bundle = EncodeEntryBundle(*batch);
      if (!bundle.ok()) return bundle.status();
      files.emplace_back(BundleOf(tile), *std::move(bundle));
    }
    for (const auto& [file_tile, bytes] : files) {
      const std::string path = absl::StrCat(dir, "/", TilePath(file_tile));
      const bool replaceable = options.published_size >= 0 && TreeSizeOf(file_tile) > options.published_size;
      if (absl::Status s = PublishImmutable(path, bytes, options.sync, replaceable, stats); !s.ok()) return s;
      if (file_tile.full() && options.delete_superseded_partials) {
        std::error_code ec;
        const auto removed = std::filesystem::remove_all(path + ".p", ec);
        if (!ec && removed != static_cast<std::uintmax_t>(-1)) {
          stats.partials_deleted += static_cast<int64_t>(removed > 0 ? removed - 1 : 0);  // minus the directory
        }
      }
    }
  }
  return stats;
}

}  // namespace

absl::StatusOr<TileWriteStats> WriteTiles(const std::string& dir, int64_t old_size, int64_t new_size,
                                          const HashReader& hashes, const EntryReader& entries,
                                          const TileWriteOptions& options) {
  if (old_size < 0 || new_size < old_size) return absl::InvalidArgumentError("tlog: WriteTiles wants 0 <= old <= new");
  return WriteTileList(dir, NewTiles(old_size, new_size), hashes, entries, options);
}

std::vector<Tile> EdgeTiles(int64_t size) {
  std::vector<Tile> edge;
  for (const Tile& tile : TilesForSize(size)) {  // level by level, left to right: the last of each level wins
    if (!edge.empty() && edge.back().level == tile.level) edge.back() = tile;
    else edge.push_back(tile);
  }
  return edge;
}

absl::StatusOr<TileWriteStats> WriteEdgeTiles(const std::string& dir, int64_t size, const HashReader& hashes,
                                              const EntryReader& entries, const TileWriteOptions& options) {
  if (size < 0) return absl::InvalidArgumentError("tlog: WriteEdgeTiles wants size >= 0");
  return WriteTileList(dir, EdgeTiles(size), hashes, entries, options);
}

int64_t DeleteSupersededPartials(const std::string& dir, int64_t old_size, int64_t new_size) {
  int64_t deleted = 0;
  for (const Tile& tile : NewTiles(old_size, new_size)) {
    if (!tile.full()) continue;
    for (const Tile& t : {tile, BundleOf(tile)}) {
      if (t.level == kEntriesLevel && tile.level != 0) continue;
      std::error_code ec;
      const auto removed = std::filesystem::remove_all(absl::StrCat(dir, "/", TilePath(t), ".p"), ec);
      if (!ec && removed != static_cast<std::uintmax_t>(-1) && removed > 0) deleted += static_cast<int64_t>(removed - 1);
    }
  }
  return deleted;
}

}  // namespace osh::tlog
