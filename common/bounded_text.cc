#include "common/bounded_text.h"

#include <algorithm>

#include <google/protobuf/stubs/common.h>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace osh::common {

std::string BoundedText(absl::string_view text, size_t max_bytes) {
  const bool utf8 = google::protobuf::internal::IsStructurallyValidUTF8(text.data(), static_cast<int>(text.size()));
  std::string out;
  out.reserve(std::min(text.size(), max_bytes));
  size_t i = 0;
  while (i < text.size()) {
    const auto u = static_cast<unsigned char>(text[i]);
    std::string piece;
    if (u < 0x20 || u == 0x7f || (!utf8 && u >= 0x80)) {
      piece = absl::CEscape(text.substr(i, 1));
      i += 1;
    } else {
      const size_t length = u < 0x80 ? 1 : u >= 0xf0 ? 4 : u >= 0xe0 ? 3 : 2;  // a whole character
      piece = std::string(text.substr(i, length));
      i += length;
    }
    if (out.size() + piece.size() > max_bytes) {
      return absl::StrCat(out, " …[truncated, ", text.size(), " bytes]");
    }
    out += piece;
  }
  return out;
}

}  // namespace osh::common
