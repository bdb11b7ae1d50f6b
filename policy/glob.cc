#include "policy/glob.h"

#include <algorithm>

#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace osh::policy {

namespace {

// One pattern character against one text character: a literal equals itself; `?` is any one character
// (globset's `Any`), including the symbolic kAnyChar but not a symbolic run.
bool CharMatches(char pattern, char text) {
  if (pattern == '?') return text != kAnyRun;
  return pattern == text && text != kAnyRun && text != kAnyChar;
}

}  // namespace

bool SegmentMatches(absl::string_view pattern, absl::string_view text) {
  // Iterative wildcard matching with one backtrack point (the last `*`): O(|pattern| × |text|) at worst,
  // no allocation, no recursion. Exact for `*` and `?`.
  size_t p = 0, t = 0, star = absl::string_view::npos, resume = 0;
  while (t < text.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      resume = t;
    } else if (p < pattern.size() && CharMatches(pattern[p], text[t])) {
      ++p;
      ++t;
    } else if (star != absl::string_view::npos) {
      p = star + 1;
      t = ++resume;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

absl::StatusOr<Glob> Glob::Parse(absl::string_view pattern, char delimiter) {
  Glob glob;
  glob.pattern_ = std::string(pattern);
  glob.delimiter_ = delimiter;
  for (char c : pattern) {
    if (c == '[' || c == ']' || c == '{' || c == '}' || c == '<' || c == '>' || c == '\\') {
      return absl::InvalidArgumentError(absl::StrCat("unsupported glob '", pattern, "': '", std::string(1, c),
                                                     "' is glob syntax outside the modelled language (*, ** and ?)"));
    }
    if (c == kAnyRun || c == kAnySegments || c == kAnyChar || c == kSomeSegments) {
      return absl::InvalidArgumentError(absl::StrCat("unsupported glob '", pattern, "': control character"));
    }
  }
  std::vector<absl::string_view> parts = absl::StrSplit(pattern, delimiter);
  for (size_t i = 0; i < parts.size(); ++i) {
    const absl::string_view part = parts[i];
    if (part == "**") {
      glob.has_wildcard_ = true;
      // globset: a trailing `/**` is `RecursiveSuffix` (`/.*`, one segment or more) unless the whole
      // pattern is `**` (`.*`); with `.` every `**` keeps a literal `.` beside it, so it needs one or more.
      const bool one_or_more = delimiter != '/' || (i + 1 == parts.size() && parts.size() > 1);
      glob.segments_.push_back({true, one_or_more, ""});
      continue;
    }
    Segment segment;
    // globset's `parse_star`: `**` that is not a whole segment is two `ZeroOrMore`, i.e. `*`.
    for (char c : part) {
      if (c == '*' && !segment.text.empty() && segment.text.back() == '*') continue;
      segment.text.push_back(c);
      if (c == '*' || c == '?') glob.has_wildcard_ = true;
    }
    glob.segments_.push_back(std::move(segment));
  }
  glob.symbolic_ = glob.BuildSymbolic();
  return glob;
}

namespace {

bool IsSymbolicSegments(absl::string_view part) {
  return part.size() == 1 && (part[0] == kAnySegments || part[0] == kSomeSegments);
}

}  // namespace

template <typename Parts>
bool Glob::MatchParts(const Parts& text) const {
  // reach[j]: the segments seen so far match text[0, j). Two rows, no recursion.
  const size_t n = text.size();
  absl::InlinedVector<char, 64> reach(n + 1, 0), next(n + 1, 0);
  reach[0] = 1;
  for (const Segment& segment : segments_) {
    bool any = false;
    if (segment.globstar && !segment.some) {
      char seen = 0;  // reach[0..j]
      for (size_t j = 0; j <= n; ++j) {
        seen |= reach[j];
        next[j] = seen;
        any |= seen != 0;
      }
    } else if (segment.globstar) {
      // One or more: some j < j' reached, with a part in [j, j') that is surely a segment (concrete or
      // kSomeSegments; a kAnySegments part may stand for none).
      char seen = 0, sure = 0;  // reach[0..j'-1], and reach[0..p] for the last sure part p < j'
      for (size_t j = 0; j <= n; ++j) {
        next[j] = sure;
        any |= sure != 0;
        if (j == n) break;
        seen |= reach[j];
        if (text[j] != absl::string_view(&kAnySegments, 1)) sure = seen;
      }
    } else {
      next[0] = 0;
      for (size_t j = 0; j < n; ++j) {
        const bool ok = reach[j] && !IsSymbolicSegments(text[j]) && SegmentMatches(segment.text, text[j]);
        next[j + 1] = ok ? 1 : 0;
        any |= ok;
      }
    }
    if (!any) return false;
    std::swap(reach, next);
  }
  return reach[n] != 0;
}

bool Glob::Matches(absl::string_view text) const {
  if (!has_wildcard_) return text == pattern_;
  // Inline storage: no heap allocation for hosts, paths and binaries of ordinary size.
  absl::InlinedVector<absl::string_view, 16> parts;
  for (absl::string_view part : absl::StrSplit(text, delimiter_)) parts.push_back(part);
  return MatchParts(parts);
}

std::string Glob::BuildSymbolic() const {
  std::string out;
  for (size_t i = 0; i < segments_.size(); ++i) {
    if (i > 0) out.push_back(delimiter_);
    if (segments_[i].globstar) {
      out.push_back(segments_[i].some ? kSomeSegments : kAnySegments);
      continue;
    }
    for (char c : segments_[i].text) out.push_back(c == '*' ? kAnyRun : c == '?' ? kAnyChar : c);
  }
  return out;
}

std::string Glob::Instance(absl::string_view run, absl::string_view segments) const {
  std::string out;
  bool first = true;
  for (const Segment& segment : segments_) {
    if (segment.globstar && segments.empty() && !segment.some) continue;
    if (!first) out.push_back(delimiter_);
    first = false;
    if (segment.globstar) {
      const absl::string_view fill = segments.empty() ? run : segments;
      out.append(fill.data(), fill.size());
      continue;
    }
    for (char c : segment.text) {
      if (c == '*') {
        out.append(run.data(), run.size());
      } else {
        out.push_back(c == '?' ? 'q' : c);
      }
    }
  }
  return out;
}

namespace {

// Whether two sequences share a member, by reachability over (i, j) prefix pairs, row by row with two rows
// of memory: `a_star(i)`/`b_star(j)` say whether an element matches any run (possibly empty) of the other
// side's elements, `same(i, j)` whether two plain elements share one. When both sides are at a star,
// letting one of them end first loses no common member.
template <typename AStar, typename BStar, typename Same>
bool SequencesIntersect(size_t na, size_t nb, AStar a_star, BStar b_star, Same same) {
  std::vector<char> row(nb + 1, 0), next(nb + 1, 0);
  row[0] = 1;
  for (size_t i = 0; i <= na; ++i) {
    std::fill(next.begin(), next.end(), 0);
    for (size_t j = 0; j <= nb; ++j) {
      if (!row[j]) continue;
      if (i < na && a_star(i)) {
        next[j] = 1;                 // the star ends here
        if (j < nb) row[j + 1] = 1;  // or covers one more element of the other side
      } else if (j < nb && b_star(j)) {
        row[j + 1] = 1;
        if (i < na) next[j] = 1;
      } else if (i < na && j < nb && same(i, j)) {
        next[j + 1] = 1;
      }
    }
    if (i == na) return row[nb] != 0;
    std::swap(row, next);
  }
  return false;
}

// Whether two `*`/`?` patterns of one segment share a string.
bool StarPatternsIntersect(absl::string_view a, absl::string_view b) {
  return SequencesIntersect(
      a.size(), b.size(), [&](size_t i) { return a[i] == '*'; }, [&](size_t j) { return b[j] == '*'; },
      [&](size_t i, size_t j) { return a[i] == b[j] || a[i] == '?' || b[j] == '?'; });
}

}  // namespace

bool Glob::Intersects(const Glob& other) const {
  if (!has_wildcard_) return other.Matches(pattern_);
  if (!other.has_wildcard_) return Matches(other.pattern_);
  // Segment by segment (SequencesIntersect), globstars being the stars.
  // A globstar that needs a segment is `*` then a zero-or-more globstar: the same language.
  auto expand = [](const std::vector<Segment>& in) {
    std::vector<Segment> out;
    out.reserve(in.size());
    for (const Segment& s : in) {
      if (s.globstar && s.some) out.push_back({false, false, "*"});
      out.push_back(s.globstar ? Segment{true, false, ""} : s);
    }
    return out;
  };
  const std::vector<Segment> a = expand(segments_), b = expand(other.segments_);
  return SequencesIntersect(
      a.size(), b.size(), [&](size_t i) { return a[i].globstar; }, [&](size_t j) { return b[j].globstar; },
      [&](size_t i, size_t j) { return StarPatternsIntersect(a[i].text, b[j].text); });
}

namespace {

// Whether two labels of host patterns share a concrete label. A label of a host without `*` is literal
// (its `?` is a plain character); otherwise `*` and `?` are wildcards.
bool LabelsIntersect(absl::string_view a, bool a_glob, absl::string_view b, bool b_glob) {
  const bool a_wild = a_glob && a.find_first_of("*?") != absl::string_view::npos;
  const bool b_wild = b_glob && b.find_first_of("*?") != absl::string_view::npos;
  if (!a_wild && !b_wild) return a == b;
  if (!a_wild) return SegmentMatches(b, a);
  if (!b_wild) return SegmentMatches(a, b);
  return StarPatternsIntersect(a, b);
}

}  // namespace

// Whether two valid host patterns (lower-cased) match a common host. A leading "**" covers one or
// more labels, so the patterns are compared label by label from the right.
bool HostPatternsIntersect(absl::string_view a, absl::string_view b) {
  const bool a_glob = a.find('*') != absl::string_view::npos;
  const bool b_glob = b.find('*') != absl::string_view::npos;
  if (!a_glob && !b_glob) return a == b;
  // Labels are walked from the right in place (no split, no allocation: this runs per endpoint pair).
  struct Labels {
    absl::string_view rest;  // the labels after a leading "**" one
    bool deep = false;
    size_t count = 0;
    explicit Labels(absl::string_view host) : rest(host) {
      deep = host == "**" || absl::StartsWith(host, "**.");
      if (deep) rest.remove_prefix(std::min<size_t>(3, host.size()));
      count = deep && rest.empty() ? 0 : static_cast<size_t>(std::count(rest.begin(), rest.end(), '.')) + 1;
    }
    absl::string_view PopLast() {
      const size_t dot = rest.rfind('.');
      absl::string_view label = dot == absl::string_view::npos ? rest : rest.substr(dot + 1);
      rest = dot == absl::string_view::npos ? absl::string_view() : rest.substr(0, dot);
      return label;
    }
  };
  Labels la(a), lb(b);
  if (!la.deep && !lb.deep && la.count != lb.count) return false;
  if (la.deep && !lb.deep && lb.count < la.count + 1) return false;
  if (lb.deep && !la.deep && la.count < lb.count + 1) return false;
  const size_t common = std::min(la.count, lb.count);
  for (size_t i = 0; i < common; ++i) {
    const absl::string_view x = la.PopLast(), y = lb.PopLast();
    if (!LabelsIntersect(x, a_glob, y, b_glob)) return false;
  }
  return true;
}

}  // namespace osh::policy
