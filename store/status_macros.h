// Early return on an error status, for the stores' statement sequences.
#pragma once

#include "absl/status/status.h"

#define OSH_RETURN_IF_ERROR(expr)                        \
  do {                                                   \
    if (absl::Status _s = (expr); !_s.ok()) return _s;   \
  } while (0)
