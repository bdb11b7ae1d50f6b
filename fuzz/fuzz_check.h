// The invariant check of the verifiable log's fuzz targets: a violated invariant aborts (a crash the
// fuzzer reports with its input).
#pragma once

#include <cstdlib>

namespace osh::fuzz {

inline void FuzzCheck(bool condition) {
  if (!condition) std::abort();
}

}  // namespace osh::fuzz
