// Free text that another party chose (a client, a driver, a gateway), made fit for a log line, an audit
// event or an error message shown to a person. Pure function, thread-safe.
#pragma once

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"

namespace osh::common {

// Control characters C-escaped (no forged lines, no terminal escapes), invalid UTF-8 escaped, characters
// that are valid UTF-8 but rewrite what a person sees written as `\uXXXX` (the C1 controls, the
// bidirectional formatting characters, U+2028/U+2029, the BOM), and cut to at most `max_bytes` on a
// character boundary with " …[truncated, N bytes]" appended saying how long it was.
std::string BoundedText(absl::string_view text, size_t max_bytes);

}  // namespace osh::common
