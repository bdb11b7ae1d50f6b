// The glob languages of SCHEMA.md exactly as upstream's runtime evaluates them. Upstream matches every
// policy glob with Rego's `glob.match(pattern, delimiters, text)` (crates/openshell-supervisor-network/
// data/sandbox-policy.rego: `path_matches`, `binary_allowed`, `endpoint_allowed`, `query_value_matches`),
// which regorus 0.9.1 implements with globset (`literal_separator(true)`), the delimiter standing for
// globset's separator. In globset's terms (crates/globset/src/glob.rs, `Parser::parse_star` and
// `Tokens::tokens_to_regex`) that gives, per segment between delimiters:
//   - `*` any run of characters inside one segment (`ZeroOrMore` = `[^/]*`), `?` exactly one character
//     inside one segment (`Any` = `[^/]`); `*`s glued together (`a**`, `***`) are still `*`;
//   - a segment that is exactly `**` spans whole segments: for `/` (paths, binaries) zero or more, except
//     a trailing `/**` (`RecursiveSuffix` = `/.*`), which needs one or more — `/repos/**` does not match
//     `/repos`; a pattern that is just `**` matches everything. For `.` (hosts; query values, whose
//     delimiter list is empty and so defaults to `.`) the `.` is kept as a literal between separators,
//     so every `**` needs one segment or more (`**.x.com` does not match `x.com`).
// Other glob syntax (`[`, `{`, `<`, `\`) is *unsupported*: refused with the reason,
// never given a guessed meaning. Immutable after Parse; safe to share across threads.
//
// Matching also works on *symbolic* text (used to decide containment exactly): kAnyRun stands for an
// arbitrary run inside one segment (only a `*` covers it), kAnyChar for one arbitrary character (a `?` or
// `*` covers it), a segment that is exactly kAnySegments for zero or more whole segments and one that is
// exactly kSomeSegments for one or more (only a `**` covers them; one that needs a segment covers a run
// of symbolic segments only if one of them is a concrete segment or kSomeSegments).
//
// Cost: matching is iterative dynamic programming, O(pattern segments × text segments) segment tests
// with two rows of text-sized memory; a segment test is O(pattern × text characters) with no allocation.
// Intersection is O(|a| × |b|) characters with row-sized memory. Nothing recurses, so the stack use does
// not depend on the input; the sizes themselves are bounded by validation (docs/decisions-and-ceilings.md).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace osh::policy {

inline constexpr char kAnyRun = '\x01';
inline constexpr char kAnySegments = '\x02';
inline constexpr char kAnyChar = '\x03';
inline constexpr char kSomeSegments = '\x04';

class Glob {
 public:
  // `delimiter` is '/' for paths and binaries, '.' for hosts and query values (see above).
  // INVALID_ARGUMENT "unsupported glob ..." for syntax outside the language above.
  static absl::StatusOr<Glob> Parse(absl::string_view pattern, char delimiter);

  // Whether `text` (concrete or symbolic) is in the pattern's language.
  bool Matches(absl::string_view text) const;

  // The symbolic text standing for every string the pattern matches: `*` becomes kAnyRun, `?` kAnyChar
  // and a `**` segment kAnySegments. Another glob covers this glob iff it Matches its Symbolic() form.
  const std::string& Symbolic() const { return symbolic_; }

  // One concrete string the pattern matches: each `*` filled with `run` (no delimiter in it), each `?`
  // with 'q', each `**` segment with `segments` (delimiters allowed), or left out when `segments` is empty.
  std::string Instance(absl::string_view run, absl::string_view segments) const;

  // Whether some string matches both globs (same delimiter).
  bool Intersects(const Glob& other) const;

  bool HasWildcard() const { return has_wildcard_; }
  const std::string& pattern() const { return pattern_; }

 private:
  struct Segment {
    bool globstar = false;  // whole segments: zero or more, or one or more when `some`
    bool some = false;
    std::string text;       // the segment's pattern when not a globstar
  };
  template <typename Parts>
  bool MatchParts(const Parts& text) const;
  std::string BuildSymbolic() const;

  std::string pattern_;
  char delimiter_ = '/';
  bool has_wildcard_ = false;
  std::vector<Segment> segments_;
  std::string symbolic_;
};

// Whether two valid host patterns (lower-cased; SCHEMA.md's host rules) match a common host name. A
// host without `*` is an exact name even if it contains `?` (upstream's `endpoint_allowed` only globs
// hosts that contain `*`).
bool HostPatternsIntersect(absl::string_view a, absl::string_view b);

// Whether a segment pattern with `*` and `?` wildcards matches one segment of (symbolic) text.
bool SegmentMatches(absl::string_view pattern, absl::string_view text);

}  // namespace osh::policy
