// The glob languages of SCHEMA.md as upstream's runtime evaluates them: a pattern is split at one
// delimiter into segments; `*` matches any run of characters inside one segment; a segment that is
// exactly `**` matches whole segments (zero or more for paths and query values, one or more for the
// first label of a host). Nothing else is special — a pattern using other glob syntax (`?`, `[`, `{`,
// `<`, `\`) or `**` glued to other characters is *unsupported*: it is refused with the reason, never
// given a guessed meaning. Immutable after Parse; safe to share across threads.
//
// Matching also works on *symbolic* text (used to decide containment exactly): kAnyRun stands for an
// arbitrary run inside one segment (only a `*` or `**` covers it) and a segment that is exactly
// kAnySegments stands for any number of whole segments (only a `**` covers it).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace osh::policy {

inline constexpr char kAnyRun = '\x01';
inline constexpr char kAnySegments = '\x02';

class Glob {
 public:
  // `globstar_min` is how many segments a `**` segment must cover (0 for paths, 1 for hosts).
  // INVALID_ARGUMENT "unsupported glob ..." for syntax outside the language above.
  static absl::StatusOr<Glob> Parse(absl::string_view pattern, char delimiter, int globstar_min);

  // Whether `text` (concrete or symbolic) is in the pattern's language.
  bool Matches(absl::string_view text) const;

  // The symbolic text standing for every string the pattern matches: `*` becomes kAnyRun and a `**`
  // segment becomes kAnySegments. Another glob covers this glob iff it Matches its Symbolic() form.
  const std::string& Symbolic() const { return symbolic_; }

  // One concrete string the pattern matches: each `*` filled with `run` (no delimiter in it), each `**`
  // segment with `segments` (delimiters allowed; at least globstar_min segments), or left out when
  // `segments` is empty and zero segments are allowed.
  std::string Instance(absl::string_view run, absl::string_view segments) const;

  // Whether some string matches both globs (same delimiter; for globstar_min 0, as paths use).
  bool Intersects(const Glob& other) const;

  bool HasWildcard() const { return has_wildcard_; }
  const std::string& pattern() const { return pattern_; }

 private:
  struct Segment {
    bool globstar = false;
    std::string text;  // the segment's pattern when not a globstar
  };
  bool SegmentsIntersect(size_t a, const Glob& other, size_t b, std::vector<signed char>& memo) const;
  template <typename Parts, typename Memo>
  bool MatchFrom(size_t pattern_at, const Parts& text, size_t text_at, Memo& memo) const;
  std::string BuildSymbolic() const;

  std::string pattern_;
  char delimiter_ = '/';
  int globstar_min_ = 0;
  bool has_wildcard_ = false;
  std::vector<Segment> segments_;
  std::string symbolic_;
};

// Whether two valid host patterns (lower-cased; SCHEMA.md's host rules) match a common host name.
bool HostPatternsIntersect(absl::string_view a, absl::string_view b);

// Whether a segment pattern with `*` wildcards matches one segment of (symbolic) text.
bool SegmentMatches(absl::string_view pattern, absl::string_view text);

}  // namespace osh::policy
