#include "common/bounded_text.h"

#include <algorithm>
#include <cstdint>

#include <google/protobuf/stubs/common.h>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace osh::common {
namespace {

// Code points that are valid UTF-8 and still rewrite what a person sees: the C1 controls (U+0080–U+009F;
// U+009B is CSI on terminals that take 8-bit controls), the bidirectional formatting characters that
// reorder a line's text as displayed ("Trojan Source": U+061C, U+200E–U+200F, U+202A–U+202E,
// U+2066–U+2069), the line and paragraph separators that start a new line in some viewers (U+2028,
// U+2029), and the byte-order mark (U+FEFF), which hides text in a terminal.
bool Disguises(uint32_t c) {
  return (c >= 0x80 && c <= 0x9f) || c == 0x061c || c == 0x200e || c == 0x200f || (c >= 0x202a && c <= 0x202e) ||
         (c >= 0x2066 && c <= 0x2069) || c == 0x2028 || c == 0x2029 || c == 0xfeff;
}

// The code point of the structurally valid UTF-8 character of `length` bytes at `s`.
uint32_t CodePoint(absl::string_view s, size_t length) {
  const auto byte = [&](size_t k) { return static_cast<uint32_t>(static_cast<unsigned char>(s[k])); };
  switch (length) {
    case 1: return byte(0);
    case 2: return ((byte(0) & 0x1f) << 6) | (byte(1) & 0x3f);
    case 3: return ((byte(0) & 0x0f) << 12) | ((byte(1) & 0x3f) << 6) | (byte(2) & 0x3f);
    default: return ((byte(0) & 0x07) << 18) | ((byte(1) & 0x3f) << 12) | ((byte(2) & 0x3f) << 6) | (byte(3) & 0x3f);
  }
}

}  // namespace

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
      const uint32_t c = CodePoint(text.substr(i, length), length);
      piece = Disguises(c) ? absl::StrFormat("\\u%04x", c) : std::string(text.substr(i, length));
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
