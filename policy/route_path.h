// How upstream's runtime picks, per request, which of the L7 endpoints sharing one host:port applies,
// and which pairs of them its loader refuses as ambiguous. An endpoint's `path` has two meanings
// upstream, and this file is the home of the second:
//   - in Rego (sandbox-policy.rego `endpoint_path_matches_request`) it scopes the endpoint's rules with the
//     glob language of SCHEMA.md (policy/glob.h);
//   - in the proxy (crates/openshell-supervisor-network/src/l7/mod.rs `endpoint_path_matches`,
//     `path_specificity`; l7/relay.rs `select_l7_config_for_path`) it *selects the endpoint* with the Rust
//     `glob` crate's `Pattern::matches` (default options), after three shortcuts: an empty pattern, `**` and
//     `/**` match every path; a pattern equal to the path matches; `<prefix>/**` matches `<prefix>` and
//     everything under `<prefix>/` (the prefix taken literally). In the crate's language `*` is any run of
//     characters *including* `/`, `?` any one character, `[...]`/`[!...]` a character class, and a `**`
//     that is a whole path component (with the `/` after it) matches nothing or anything ending in `/`
//     (or, when only stars follow it, anything at all: `/api/**/` selects `/api/x`);
//     `***`, a `**` inside a component and an unclosed `[` make the pattern invalid, which matches nothing.
// Specificity is the number of characters that are not `*`; the most specific matching endpoint wins.
//
// The overlap tests mirror upstream's loader (crates/openshell-policy/src/ambiguity.rs
// `path_patterns_overlap`), which is deliberately coarser than the matcher: there `*` and `**` both
// stand for any run, and an invalid pattern overlaps everything.
//
// Pure functions of their arguments; thread-safe. Cost: matching is O(pattern × path) characters with
// two rows of pattern-sized memory, overlap O(|a| × |b|) states; nothing recurses.
#pragma once

#include <cstddef>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"

namespace osh::policy {

// Whether an endpoint whose `path` is `pattern` is a route for a request to `path` (canonical).
bool RoutePathMatches(absl::string_view pattern, absl::string_view path);

// Whether an endpoint's route (its `path` as the proxy reads it) selects every request path its Rego scope
// (the same `path` as policy/glob.h reads it) admits: "", `**`, `/**`, `<literal prefix>/**`, and any
// other pattern the crate reads without a class (its `*` and `?` cross '/', so they take more than
// Rego's). Not so `/repos/*/**` (the prefix is taken literally) or `/a**` (invalid: selects nothing).
bool RouteCoversScope(absl::string_view pattern);

// An upper bound on the steps RoutePathMatches(pattern, path) takes (pattern × path characters), for a
// caller that bounds the routing work one request may cost.
inline size_t RoutePathCost(absl::string_view pattern, absl::string_view path) {
  return (pattern.size() + 1) * (path.size() + 1);
}

// The rank that decides between matching routes: characters of `pattern` other than `*` (0 for "").
size_t RoutePathSpecificity(absl::string_view pattern);

// Whether some request path could select both patterns, as upstream's loader judges it.
bool RoutePathsOverlap(absl::string_view a, absl::string_view b);

// Whether two endpoint hosts can match one host name, as upstream's loader judges it (ambiguity.rs
// `host_patterns_overlap`): case-insensitive; "" (hostless) overlaps every host; `*` is any run without a
// '.', `**` any run; `?` is a plain character there, unlike at run time.
bool LoaderHostsOverlap(absl::string_view a, absl::string_view b);

// The glob crate's `Pattern::new(pattern)` then `.matches(text)`, default options, without the route
// shortcuts RoutePathMatches adds; false for a pattern the crate refuses. (Upstream's loader asks it
// whether an MCP rule's method glob selects `tools/call`.)
bool GlobCrateMatches(absl::string_view pattern, absl::string_view text);

// Why upstream refuses `pattern` as a middleware selector's host pattern, or nullopt when it accepts it
// (crates/openshell-core/src/host_pattern.rs `HostPattern::new`): empty, Unicode whitespace, a brace, an
// empty DNS label, or a label other than `**` that the glob crate's `Pattern::new` refuses (`***`, `**`
// inside a label, an unclosed `[`). A bare `**` is valid there: it selects every host.
std::optional<std::string> SelectorHostPatternError(absl::string_view pattern);

}  // namespace osh::policy
