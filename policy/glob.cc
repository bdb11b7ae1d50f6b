#include "policy/glob.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
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
  return glob;
}

bool Glob::MatchFrom(size_t pattern_at, const std::vector<absl::string_view>& text, size_t text_at,
                     std::vector<signed char>& memo) const {
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
  std::vector<absl::string_view> parts = absl::StrSplit(text, delimiter_);
  std::vector<signed char> memo((segments_.size() + 1) * (parts.size() + 1), -1);
  return MatchFrom(0, parts, 0, memo);
}

std::string Glob::Symbolic() const {
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

std::string Glob::Instance(absl::string_view filler, bool empty_globstar) const {
  std::string out;
  bool first = true;
  for (const Segment& segment : segments_) {
    if (segment.globstar && empty_globstar && globstar_min_ == 0) continue;
    if (!first) out.push_back(delimiter_);
    first = false;
    if (segment.globstar) {
      out.append(filler.data(), filler.size());
      continue;
    }
    for (char c : segment.text) {
      if (c == '*') {
        out.append(filler.data(), filler.size());
      } else {
        out.push_back(c);
      }
    }
  }
  return out;
}

}  // namespace osh::policy
