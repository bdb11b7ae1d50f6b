#include "policy/route_path.h"

#include <algorithm>
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace osh::policy {
namespace {

// The characters of a string as code points (a Rust `str` is a sequence of chars). Policy and request
// text reaching here is valid UTF-8 (protobuf strings); a stray byte stands for itself.
std::vector<char32_t> Chars(absl::string_view text) {
  std::vector<char32_t> out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const auto lead = static_cast<unsigned char>(text[i]);
    size_t length = lead < 0x80 ? 1 : (lead >> 5) == 0x6 ? 2 : (lead >> 4) == 0xE ? 3 : (lead >> 3) == 0x1E ? 4 : 0;
    if (length == 0 || i + length > text.size()) {
      out.push_back(lead);
      ++i;
      continue;
    }
    char32_t c = length == 1 ? lead : lead & (0xFF >> (length + 1));
    bool valid = true;
    for (size_t k = 1; k < length; ++k) {
      const auto next = static_cast<unsigned char>(text[i + k]);
      valid = valid && (next & 0xC0) == 0x80;
      c = (c << 6) | (next & 0x3F);
    }
    if (!valid) {
      out.push_back(lead);
      ++i;
      continue;
    }
    out.push_back(c);
    i += length;
  }
  return out;
}

using Ranges = std::vector<std::pair<char32_t, char32_t>>;  // inclusive

// A class's specifiers as the crate (and the loader) read them: `a-z` is a range, anything else itself.
Ranges Specifiers(const std::vector<char32_t>& text, size_t begin, size_t end) {
  Ranges out;
  for (size_t i = begin; i < end;) {
    if (i + 2 < end && text[i + 1] == '-') {
      out.emplace_back(text[i], text[i + 2]);
      i += 3;
    } else {
      out.emplace_back(text[i], text[i]);
      ++i;
    }
  }
  return out;
}

bool InRanges(const Ranges& ranges, char32_t c) {
  for (const auto& [low, high] : ranges) {
    if (low <= c && c <= high) return true;
  }
  return false;
}

// --- The glob crate's Pattern (glob 0.3, `Pattern::new` and `matches_from`, default MatchOptions) ---

struct CrateToken {
  enum Kind { kChar, kAnyChar, kAnySequence, kAnyRecursive, kWithin, kExcept } kind;
  char32_t c = 0;
  Ranges ranges{};
};

std::optional<std::vector<CrateToken>> ParseCratePattern(const std::vector<char32_t>& p) {
  std::vector<CrateToken> tokens;
  size_t i = 0;
  while (i < p.size()) {
    if (p[i] == '?') {
      tokens.push_back({CrateToken::kAnyChar});
      ++i;
    } else if (p[i] == '*') {
      const size_t old = i;
      while (i < p.size() && p[i] == '*') ++i;
      const size_t count = i - old;
      if (count > 2) return std::nullopt;  // "wildcards are either regular `*` or recursive `**`"
      if (count == 1) {
        tokens.push_back({CrateToken::kAnySequence});
        continue;
      }
      // `**` must be a whole component: at the start or after '/', and before '/' (eaten) or the end.
      if (!(i == 2 || p[old - 1] == '/')) return std::nullopt;
      if (i < p.size() && p[i] == '/') {
        ++i;
      } else if (i != p.size()) {
        return std::nullopt;
      }
      if (!(tokens.size() > 1 && tokens.back().kind == CrateToken::kAnyRecursive)) {
        tokens.push_back({CrateToken::kAnyRecursive});
      }
    } else if (p[i] == '[') {
      // `[!...]` needs its ']' from the fourth character on, `[...]` from the third (so `[]]` is a class).
      const bool negated = i + 4 <= p.size() && p[i + 1] == '!';
      if (!negated && !(i + 3 <= p.size() && p[i + 1] != '!')) return std::nullopt;  // "invalid range pattern"
      size_t close = i + (negated ? 3 : 2);
      while (close < p.size() && p[close] != ']') ++close;
      if (close >= p.size()) return std::nullopt;
      tokens.push_back({negated ? CrateToken::kExcept : CrateToken::kWithin, 0, Specifiers(p, i + (negated ? 2 : 1), close)});
      i = close + 1;
    } else {
      tokens.push_back({CrateToken::kChar, p[i]});
      ++i;
    }
  }
  return tokens;
}

// A set-of-states simulation of the crate's backtracking matcher: `at[t]` = the pattern before token t
// has matched the text so far; `inside[t]` = a `**` at t has eaten characters since its last '/' (it may
// hand over only right after a '/'). One more rule of the crate's loop: a `**` that eats the text to its
// end falls through to the tokens after it, so when only stars follow it (`/api/**/`: the '/' after `**`
// is part of it) it takes any rest of the text, '/' or not.
bool CrateMatches(const std::vector<CrateToken>& tokens, const std::vector<char32_t>& text) {
  const size_t m = tokens.size();
  std::vector<uint8_t> stars_after(m + 1, 1);  // every token after t is a star
  for (size_t t = m; t-- > 0;) {
    const bool star = t + 1 < m && (tokens[t + 1].kind == CrateToken::kAnySequence || tokens[t + 1].kind == CrateToken::kAnyRecursive);
    stars_after[t] = t + 1 == m || (star && stars_after[t + 1]);
  }
  std::vector<uint8_t> at(m + 1, 0), inside(m, 0), next_at(m + 1, 0), next_inside(m, 0);
  auto close = [&](std::vector<uint8_t>& states) {
    for (size_t t = 0; t < m; ++t) {
      const auto kind = tokens[t].kind;
      if (states[t] && (kind == CrateToken::kAnySequence || kind == CrateToken::kAnyRecursive)) states[t + 1] = 1;
    }
  };
  at[0] = 1;
  close(at);
  for (const char32_t c : text) {
    std::fill(next_at.begin(), next_at.end(), 0);
    std::fill(next_inside.begin(), next_inside.end(), 0);
    bool any = false;
    for (size_t t = 0; t < m; ++t) {
      const CrateToken& token = tokens[t];
      if (token.kind == CrateToken::kAnyRecursive && (at[t] || inside[t])) {
        next_inside[t] = 1;
        if (c == '/') next_at[t + 1] = 1;
        any = true;
        continue;
      }
      if (!at[t]) continue;
      bool step = false;
      switch (token.kind) {
        case CrateToken::kChar: step = c == token.c; break;
        case CrateToken::kAnyChar: step = true; break;
        case CrateToken::kWithin: step = InRanges(token.ranges, c); break;
        case CrateToken::kExcept: step = !InRanges(token.ranges, c); break;
        case CrateToken::kAnySequence: next_at[t] = 1; any = true; break;
        case CrateToken::kAnyRecursive: break;
      }
      if (step) next_at[t + 1] = 1, any = true;
    }
    if (!any) return false;
    close(next_at);
    at.swap(next_at);
    inside.swap(next_inside);
  }
  if (at[m]) return true;
  for (size_t t = 0; t < m; ++t) {
    if (tokens[t].kind == CrateToken::kAnyRecursive && inside[t] && stars_after[t]) return true;
  }
  return false;
}

// --- Upstream's loader (crates/openshell-policy/src/ambiguity.rs `tokenize_runtime_path_glob`,
// `token_languages_overlap`) ---

struct LoaderToken {
  enum Kind { kLiteral, kAnyChar, kClass, kStar } kind;
  char32_t c = 0;
  Ranges ranges{};
  bool negated = false;
  bool crosses = true;  // a star that may read the delimiter ('.' in hosts; in paths every star may)
};

std::optional<std::vector<LoaderToken>> ParseLoaderPattern(const std::vector<char32_t>& p) {
  std::vector<LoaderToken> tokens;
  size_t i = 0;
  while (i < p.size()) {
    if (p[i] == '?') {
      tokens.push_back({LoaderToken::kAnyChar});
      ++i;
    } else if (p[i] == '*') {
      const size_t start = i;
      while (i < p.size() && p[i] == '*') ++i;
      const size_t count = i - start;
      if (count > 2) return std::nullopt;
      if (count == 2) {
        const bool starts_component = start == 0 || p[start - 1] == '/';
        const bool ends_component = i == p.size() || p[i] == '/';
        if (!starts_component || !ends_component) return std::nullopt;
        if (i < p.size() && p[i] == '/') ++i;
      }
      tokens.push_back({LoaderToken::kStar});
    } else if (p[i] == '[') {
      const bool negated = i + 1 < p.size() && p[i + 1] == '!';
      const size_t content = i + (negated ? 2 : 1);
      size_t close = content;
      while (close < p.size() && p[close] != ']') ++close;
      if (close >= p.size() || close == content) return std::nullopt;
      tokens.push_back({LoaderToken::kClass, 0, Specifiers(p, content, close), negated});
      i = close + 1;
    } else {
      tokens.push_back({LoaderToken::kLiteral, p[i]});
      ++i;
    }
  }
  return tokens;
}

constexpr char32_t kMaxScalar = 0x10FFFF;

// Ranges cut down to Unicode scalar values (surrogates excluded), sorted.
Ranges Scalars(Ranges in) {
  Ranges out;
  for (auto [low, high] : in) {
    if (low > high) continue;
    if (low < 0xD800) out.emplace_back(low, std::min<char32_t>(high, 0xD7FF));
    if (high > 0xDFFF) out.emplace_back(std::max<char32_t>(low, 0xE000), std::min(high, kMaxScalar));
  }
  std::sort(out.begin(), out.end());
  return out;
}

// The characters a loader token can stand for.
Ranges CharactersOf(const LoaderToken& token) {
  switch (token.kind) {
    case LoaderToken::kLiteral: return {{token.c, token.c}};
    case LoaderToken::kAnyChar: return Scalars({{0, kMaxScalar}});
    case LoaderToken::kStar:
      if (token.crosses) return Scalars({{0, kMaxScalar}});
      return Scalars({{0, '.' - 1}, {'.' + 1, kMaxScalar}});
    case LoaderToken::kClass: {
      const Ranges own = Scalars(token.ranges);
      if (!token.negated) return own;
      Ranges complement;
      char32_t cursor = 0;
      for (const auto& [low, high] : own) {
        if (low > cursor) complement.emplace_back(cursor, low - 1);
        cursor = std::max<char32_t>(cursor, high + 1);
      }
      if (cursor <= kMaxScalar) complement.emplace_back(cursor, kMaxScalar);
      return Scalars(complement);
    }
  }
  return {};
}

bool Share(const Ranges& left, const Ranges& right) {
  for (const auto& l : left) {
    for (const auto& r : right) {
      if (l.first <= r.second && r.first <= l.second) return true;
    }
  }
  return false;
}

// Whether the two token languages intersect: reachability over (i, j) = "a[..i] and b[..j] can read the
// same text". Every step moves forward (a star reading a character stays put only on its own side), so
// one pass in row order with two rows decides it.
bool LanguagesOverlap(const std::vector<LoaderToken>& a, const std::vector<LoaderToken>& b) {
  std::vector<Ranges> a_chars, b_chars;
  for (const auto& t : a) a_chars.push_back(CharactersOf(t));
  for (const auto& t : b) b_chars.push_back(CharactersOf(t));
  const size_t n = a.size(), m = b.size();
  std::vector<uint8_t> row(m + 1, 0), next(m + 1, 0);
  row[0] = 1;
  for (size_t i = 0; i <= n; ++i) {
    std::fill(next.begin(), next.end(), 0);
    const bool a_star = i < n && a[i].kind == LoaderToken::kStar;
    for (size_t j = 0; j <= m; ++j) {
      if (!row[j]) continue;
      if (i == n && j == m) return true;
      const bool b_star = j < m && b[j].kind == LoaderToken::kStar;
      if (a_star) next[j] = 1;
      if (b_star) row[j + 1] = 1;
      if (i < n && j < m && Share(a_chars[i], b_chars[j])) {
        if (!a_star && !b_star) next[j + 1] = 1;
        if (!a_star && b_star) next[j] = 1;
        if (a_star && !b_star) row[j + 1] = 1;
      }
    }
    row.swap(next);
  }
  return false;
}

// ambiguity.rs `tokenize_delimited_glob` (hosts): a run of one `*` reads no '.', a longer run reads any
// character; everything else — `?` included — is itself.
std::vector<LoaderToken> ParseLoaderHost(const std::vector<char32_t>& p) {
  std::vector<LoaderToken> tokens;
  for (size_t i = 0; i < p.size();) {
    if (p[i] != '*') {
      tokens.push_back({LoaderToken::kLiteral, p[i]});
      ++i;
      continue;
    }
    const size_t start = i;
    while (i < p.size() && p[i] == '*') ++i;
    LoaderToken star{LoaderToken::kStar};
    star.crosses = i - start >= 2;
    tokens.push_back(star);
  }
  return tokens;
}

// Rust's `char::is_whitespace`: the Unicode White_Space property.
bool RustWhitespace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
         c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

}  // namespace

std::optional<std::string> SelectorHostPatternError(absl::string_view pattern) {
  if (pattern.empty()) return "host pattern must not be empty";
  const std::vector<char32_t> chars = Chars(pattern);
  for (const char32_t c : chars) {
    if (RustWhitespace(c)) return "host pattern must not contain whitespace";
  }
  for (const char32_t c : chars) {
    if (c == '{' || c == '}') return "host pattern must not contain brace alternates; list each host pattern separately";
  }
  const std::string lower = absl::AsciiStrToLower(pattern);
  for (const absl::string_view label : absl::StrSplit(lower, '.')) {
    if (label.empty()) return "host pattern must not contain empty DNS labels";
  }
  for (const absl::string_view label : absl::StrSplit(lower, '.')) {
    if (label != "**" && !ParseCratePattern(Chars(label)).has_value()) {
      return absl::StrCat("invalid host pattern: the label '", label, "' is not a valid glob");
    }
  }
  return std::nullopt;
}

bool LoaderHostsOverlap(absl::string_view a, absl::string_view b) {
  if (a.empty() || b.empty()) return true;  // a hostless endpoint serves every host
  return LanguagesOverlap(ParseLoaderHost(Chars(absl::AsciiStrToLower(a))), ParseLoaderHost(Chars(absl::AsciiStrToLower(b))));
}

bool RoutePathMatches(absl::string_view pattern, absl::string_view path) {
  if (pattern.empty() || pattern == "**" || pattern == "/**" || pattern == path) return true;
  if (absl::EndsWith(pattern, "/**")) {
    const absl::string_view prefix = pattern.substr(0, pattern.size() - 3);
    return path == prefix || (absl::StartsWith(path, prefix) && path.size() > prefix.size() && path[prefix.size()] == '/');
  }
  const auto tokens = ParseCratePattern(Chars(pattern));
  return tokens.has_value() && CrateMatches(*tokens, Chars(path));
}

bool GlobCrateMatches(absl::string_view pattern, absl::string_view text) {
  const auto tokens = ParseCratePattern(Chars(pattern));
  return tokens.has_value() && CrateMatches(*tokens, Chars(text));
}

bool RouteCoversScope(absl::string_view pattern) {
  if (pattern.empty() || pattern == "**" || pattern == "/**") return true;
  if (absl::EndsWith(pattern, "/**")) return pattern.substr(0, pattern.size() - 3).find_first_of("*?[") == absl::string_view::npos;
  if (pattern.find('[') != absl::string_view::npos) return false;
  return ParseCratePattern(Chars(pattern)).has_value();
}

size_t RoutePathSpecificity(absl::string_view pattern) {
  size_t count = 0;
  for (const char32_t c : Chars(pattern)) count += c != '*';
  return count;
}

bool RoutePathsOverlap(absl::string_view a, absl::string_view b) {
  if (a.empty() || b.empty() || a == "**" || a == "/**" || b == "**" || b == "/**") return true;
  const auto left = ParseLoaderPattern(Chars(a));
  const auto right = ParseLoaderPattern(Chars(b));
  if (!left || !right) return true;  // the loader stays conservative about a pattern it cannot read
  return LanguagesOverlap(*left, *right);
}

}  // namespace osh::policy
