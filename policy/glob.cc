#include "policy/glob.h"

#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"

namespace osh::policy {

bool SegmentMatches(absl::string_view pattern, absl::string_view text) {
  // Iterative wildcard matching with one backtrack point: linear in practice, no allocation.
  size_t p = 0, t = 0, star = absl::string_view::npos, resume = 0;
  while (t < text.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      resume = t;
    } else if (p < pattern.size() && pattern[p] == text[t] && text[t] != kAnyRun) {
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

absl::StatusOr<Glob> Glob::Parse(absl::string_view pattern, char delimiter, int globstar_min) {
  Glob glob;
  glob.pattern_ = std::string(pattern);
  glob.delimiter_ = delimiter;
  glob.globstar_min_ = globstar_min;
  for (char c : pattern) {
    if (c == '?' || c == '[' || c == ']' || c == '{' || c == '}' || c == '<' || c == '>' || c == '\\') {
      return absl::InvalidArgumentError(
          absl::StrCat("unsupported glob '", pattern, "': '", std::string(1, c), "' is glob syntax outside the modelled language (only * and **)"));
    }
    if (c == kAnyRun || c == kAnySegments) {
      return absl::InvalidArgumentError(absl::StrCat("unsupported glob '", pattern, "': control character"));
    }
  }
  for (absl::string_view part : absl::StrSplit(pattern, delimiter)) {
    Segment segment;
    if (part == "**") {
      segment.globstar = true;
      glob.has_wildcard_ = true;
    } else {
      if (part.find("**") != absl::string_view::npos) {
        return absl::InvalidArgumentError(
            absl::StrCat("unsupported glob '", pattern, "': '**' must be a whole segment"));
      }
      if (part.find('*') != absl::string_view::npos) glob.has_wildcard_ = true;
      segment.text = std::string(part);
    }
    glob.segments_.push_back(std::move(segment));
  }
  glob.symbolic_ = glob.BuildSymbolic();
  return glob;
}

template <typename Parts, typename Memo>
bool Glob::MatchFrom(size_t pattern_at, const Parts& text, size_t text_at, Memo& memo) const {
  const size_t width = text.size() + 1;
  signed char& cached = memo[pattern_at * width + text_at];
  if (cached >= 0) return cached != 0;
  bool result = false;
  if (pattern_at == segments_.size()) {
    result = text_at == text.size();
  } else if (segments_[pattern_at].globstar) {
    for (size_t take = static_cast<size_t>(globstar_min_); text_at + take <= text.size() && !result; ++take) {
      result = MatchFrom(pattern_at + 1, text, text_at + take, memo);
    }
  } else if (text_at < text.size() && text[text_at] != absl::string_view(&kAnySegments, 1)) {
    result = SegmentMatches(segments_[pattern_at].text, text[text_at]) && MatchFrom(pattern_at + 1, text, text_at + 1, memo);
  }
  cached = result ? 1 : 0;
  return result;
}

bool Glob::Matches(absl::string_view text) const {
  if (!has_wildcard_) return text == pattern_;
  // Inline storage: no heap allocation for hosts, paths and binaries of ordinary size.
  absl::InlinedVector<absl::string_view, 16> parts;
  for (absl::string_view part : absl::StrSplit(text, delimiter_)) parts.push_back(part);
  absl::InlinedVector<signed char, 512> memo((segments_.size() + 1) * (parts.size() + 1), -1);
  return MatchFrom(0, parts, 0, memo);
}

std::string Glob::BuildSymbolic() const {
  std::string out;
  for (size_t i = 0; i < segments_.size(); ++i) {
    if (i > 0) out.push_back(delimiter_);
    if (segments_[i].globstar) {
      out.push_back(kAnySegments);
      continue;
    }
    for (char c : segments_[i].text) out.push_back(c == '*' ? kAnyRun : c);
  }
  return out;
}

std::string Glob::Instance(absl::string_view run, absl::string_view segments) const {
  std::string out;
  bool first = true;
  for (const Segment& segment : segments_) {
    if (segment.globstar && segments.empty() && globstar_min_ == 0) continue;
    if (!first) out.push_back(delimiter_);
    first = false;
    if (segment.globstar) {
      out.append(segments.empty() ? run.data() : segments.data(), segments.empty() ? run.size() : segments.size());
      continue;
    }
    for (char c : segment.text) {
      if (c == '*') {
        out.append(run.data(), run.size());
      } else {
        out.push_back(c);
      }
    }
  }
  return out;
}

namespace {

// Whether two `*`-patterns of one segment share a string. When both sides are at a `*`, letting one
// of them end first loses no common string.
bool StarPatternsIntersect(absl::string_view a, absl::string_view b) {
  std::vector<signed char> memo((a.size() + 1) * (b.size() + 1), -1);
  auto at = [&](auto&& self, size_t i, size_t j) -> bool {
    signed char& cached = memo[i * (b.size() + 1) + j];
    if (cached >= 0) return cached != 0;
    bool result;
    if (i == a.size() && j == b.size()) {
      result = true;
    } else if (i < a.size() && a[i] == '*') {
      result = self(self, i + 1, j) || (j < b.size() && self(self, i, j + 1));
    } else if (j < b.size() && b[j] == '*') {
      result = self(self, i, j + 1) || (i < a.size() && self(self, i + 1, j));
    } else {
      result = i < a.size() && j < b.size() && a[i] == b[j] && self(self, i + 1, j + 1);
    }
    cached = result ? 1 : 0;
    return result;
  };
  return at(at, 0, 0);
}

}  // namespace

bool Glob::SegmentsIntersect(size_t a, const Glob& other, size_t b, std::vector<signed char>& memo) const {
  signed char& cached = memo[a * (other.segments_.size() + 1) + b];
  if (cached >= 0) return cached != 0;
  bool result = false;
  const size_t na = segments_.size(), nb = other.segments_.size();
  if (a == na && b == nb) {
    result = true;
  } else if (a < na && segments_[a].globstar) {
    // A globstar ends here, or covers one more segment of the other side.
    result = SegmentsIntersect(a + 1, other, b, memo) || (b < nb && SegmentsIntersect(a, other, b + 1, memo));
  } else if (b < nb && other.segments_[b].globstar) {
    result = SegmentsIntersect(a, other, b + 1, memo) || (a < na && SegmentsIntersect(a + 1, other, b, memo));
  } else if (a < na && b < nb) {
    result = StarPatternsIntersect(segments_[a].text, other.segments_[b].text) &&
             SegmentsIntersect(a + 1, other, b + 1, memo);
  }
  cached = result ? 1 : 0;
  return result;
}

bool Glob::Intersects(const Glob& other) const {
  if (!has_wildcard_) return other.Matches(pattern_);
  if (!other.has_wildcard_) return Matches(other.pattern_);
  std::vector<signed char> memo((segments_.size() + 1) * (other.segments_.size() + 1), -1);
  return SegmentsIntersect(0, other, 0, memo);
}

// Whether two labels of host patterns (literal, "*", "**", or one '*' inside) share a concrete label.
static bool LabelsIntersect(absl::string_view a, absl::string_view b) {
  const bool a_wild = a.find('*') != absl::string_view::npos;
  const bool b_wild = b.find('*') != absl::string_view::npos;
  if (!a_wild && !b_wild) return a == b;
  if (!a_wild) return SegmentMatches(b, a);
  if (!b_wild) return SegmentMatches(a, b);
  const size_t as = a.find('*'), bs = b.find('*');
  const absl::string_view ap = a.substr(0, as), bp = b.substr(0, bs);
  const absl::string_view ax = a.substr(a.rfind('*') + 1), bx = b.substr(b.rfind('*') + 1);
  const bool prefixes = absl::StartsWith(ap, bp) || absl::StartsWith(bp, ap);
  const bool suffixes = absl::EndsWith(ax, bx) || absl::EndsWith(bx, ax);
  return prefixes && suffixes;
}

// Whether two valid host patterns (lower-cased) match a common host. A leading "**" covers one or
// more labels, so the patterns are compared label by label from the right.
bool HostPatternsIntersect(absl::string_view a, absl::string_view b) {
  if (a.find('*') == absl::string_view::npos && b.find('*') == absl::string_view::npos) return a == b;
  std::vector<absl::string_view> la = absl::StrSplit(a, '.'), lb = absl::StrSplit(b, '.');
  const bool a_deep = la.front() == "**", b_deep = lb.front() == "**";
  if (a_deep) la.erase(la.begin());
  if (b_deep) lb.erase(lb.begin());
  if (!a_deep && !b_deep && la.size() != lb.size()) return false;
  if (a_deep && !b_deep && lb.size() < la.size() + 1) return false;
  if (b_deep && !a_deep && la.size() < lb.size() + 1) return false;
  const size_t common = std::min(la.size(), lb.size());
  for (size_t i = 1; i <= common; ++i) {
    if (!LabelsIntersect(la[la.size() - i], lb[lb.size() - i])) return false;
  }
  return true;
}

}  // namespace osh::policy
