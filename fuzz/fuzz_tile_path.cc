// libFuzzer target: C2SP tlog-tiles paths and entry bundles (tlog/tiles.h) on arbitrary bytes.
// Invariants (abort on violation): never crashes; only canonical paths parse (TilePath gives the input
// back) and they name a valid tile; a bundle that decodes re-encodes to the same bytes; refusals are
// INVALID_ARGUMENT.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "fuzz/fuzz_check.h"

#include "tlog/tiles.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace osh::tlog;
  const std::string input(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<Tile> tile = ParseTilePath(input);
  if (tile.ok()) {
    osh::fuzz::FuzzCheck(TilePath(*tile) == input);
    osh::fuzz::FuzzCheck(tile->level >= kEntriesLevel && tile->level < 64 && tile->n >= 0 && tile->width >= 1 &&
                  tile->width <= kTileWidth);
  } else {
    osh::fuzz::FuzzCheck(absl::IsInvalidArgument(tile.status()));
  }
  absl::StatusOr<std::vector<std::string>> entries = DecodeEntryBundle(input);
  if (entries.ok()) {
    absl::StatusOr<std::string> again = EncodeEntryBundle(*entries);
    osh::fuzz::FuzzCheck(again.ok() && *again == input);
  } else {
    osh::fuzz::FuzzCheck(absl::IsInvalidArgument(entries.status()));
  }
  return 0;
}
