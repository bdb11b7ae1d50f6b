// The process's open-descriptor limit raised to what it may be (the hard limit): a server holding many
// connections would otherwise stop accepting (EMFILE) near the usual soft limit of 1024, and then fail
// to open its own files. Not thread-safe against other setrlimit callers; call it once at start.
#pragma once

#include <cstddef>

namespace osh::common {

// Raises RLIMIT_NOFILE's soft limit to its hard limit when it can; returns the soft limit in force.
size_t RaiseDescriptorLimit();

}  // namespace osh::common
