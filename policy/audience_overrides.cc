#include "policy/audience_overrides.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace osh::policy {
namespace {

using Labels = std::vector<absl::string_view>;

// Past this many (override, endpoint, port) bindings a profile is refused rather than compared pairwise.
constexpr size_t kMaxBindings = 4096;
// The comparisons' table cells (pattern length x text length, summed) one profile may cost; past it the
// profile is refused rather than checked (an override path of 60,000 bytes was a 3.6 GB table).
constexpr uint64_t kMaxWork = 50'000'000;

// What the comparisons of one check may still spend. Once spent, every comparison answers "overlaps"
// and the check says so.
struct Work {
  uint64_t left = kMaxWork;
  bool spent = false;
  bool Spend(uint64_t cells) {
    if (spent || cells > left) {
      spent = true;
      return false;
    }
    left -= cells;
    return true;
  }
};

bool HasNonAscii(absl::string_view text) {
  return std::any_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) >= 0x80; });
}

// Characters other than '*' (Rust counts chars: UTF-8 lead bytes here).
uint64_t LiteralChars(absl::string_view text) {
  return std::count_if(text.begin(), text.end(), [](char c) {
    const auto byte = static_cast<unsigned char>(c);
    return c != '*' && (byte & 0xC0) != 0x80;
  });
}

uint64_t SaturateU32(uint64_t value) { return std::min<uint64_t>(value, std::numeric_limits<uint32_t>::max()); }

// Upstream's label match: "*" is one label, "**" any number, any other label (even "a*") is literal.
bool LabelsMatch(const Labels& pattern, const Labels& host, Work& work) {
  const size_t n = pattern.size(), k = host.size();
  if (!work.Spend((n + 1) * (k + 1))) return true;
  std::vector<char> memo((n + 1) * (k + 1), 0);
  const auto at = [&](size_t i, size_t j) -> char& { return memo[i * (k + 1) + j]; };
  for (size_t i = n + 1; i-- > 0;) {
    for (size_t j = k + 1; j-- > 0;) {
      bool result;
      if (i == n) {
        result = j == k;
      } else if (pattern[i] == "**") {
        result = at(i + 1, j) || (j < k && at(i, j + 1));
      } else if (pattern[i] == "*") {
        result = j < k && at(i + 1, j + 1);
      } else {
        result = j < k && host[j] == pattern[i] && at(i + 1, j + 1);
      }
      at(i, j) = result;
    }
  }
  return at(0, 0);
}

bool HostPatternMatches(absl::string_view pattern_text, absl::string_view host_text, Work& work) {
  const std::string pattern = absl::AsciiStrToLower(pattern_text);
  const std::string host = absl::AsciiStrToLower(host_text);
  if (pattern == host) return true;
  if (!absl::StrContains(pattern, '*')) return false;
  return LabelsMatch(absl::StrSplit(pattern, '.'), absl::StrSplit(host, '.'), work);
}

// Whether some host matches both label patterns.
bool LabelsCanOverlap(const Labels& first, const Labels& second, Work& work) {
  const size_t n = first.size(), k = second.size();
  if (!work.Spend((n + 1) * (k + 1))) return true;
  std::vector<char> memo((n + 1) * (k + 1), 0);
  const auto at = [&](size_t i, size_t j) -> char& { return memo[i * (k + 1) + j]; };
  for (size_t i = n + 1; i-- > 0;) {
    for (size_t j = k + 1; j-- > 0;) {
      bool result;
      if (i == n && j == k) {
        result = true;
      } else if (i == n) {
        result = second[j] == "**" && at(i, j + 1);
      } else if (j == k) {
        result = first[i] == "**" && at(i + 1, j);
      } else if (first[i] == "**") {
        result = at(i + 1, j) || at(i, j + 1);
      } else if (second[j] == "**") {
        result = at(i, j + 1) || at(i + 1, j);
      } else {
        result = (first[i] == "*" || second[j] == "*" || first[i] == second[j]) && at(i + 1, j + 1);
      }
      at(i, j) = result;
    }
  }
  return at(0, 0);
}

bool HostPatternsCanOverlap(const std::string& first, const std::string& second, Work& work) {
  if (!absl::StrContains(first, '*')) return HostPatternMatches(second, first, work);
  if (!absl::StrContains(second, '*')) return HostPatternMatches(first, second, work);
  return LabelsCanOverlap(absl::StrSplit(first, '.'), absl::StrSplit(second, '.'), work);
}

uint64_t HostSpecificity(absl::string_view pattern) {
  const uint64_t penalty = SaturateU32(static_cast<uint64_t>(std::count(pattern.begin(), pattern.end(), '*')) * 10000);
  const std::vector<absl::string_view> labels = absl::StrSplit(pattern, '.', absl::SkipEmpty());
  uint64_t score = penalty >= 100000 ? 0 : 100000 - penalty;
  score = SaturateU32(score + SaturateU32(labels.size() * 100));
  return SaturateU32(score + LiteralChars(pattern));
}

uint64_t PathSpecificity(absl::string_view path) {
  if (path.empty() || path == "**") return 0;
  return SaturateU32(1000000 + LiteralChars(path));
}

// The Rust glob crate's Pattern (default MatchOptions), over ASCII text.
struct GlobToken {
  enum Kind { kChar, kAnyChar, kAnySequence, kAnyRecursive, kWithin, kExcept };
  Kind kind = kChar;
  char c = 0;
  std::vector<std::pair<char, char>> ranges;  // for kWithin / kExcept

  static GlobToken Of(Kind kind, char c = 0, std::vector<std::pair<char, char>> ranges = {}) {
    GlobToken token;
    token.kind = kind;
    token.c = c;
    token.ranges = std::move(ranges);
    return token;
  }
};

std::vector<std::pair<char, char>> ParseSpecifiers(absl::string_view s) {
  std::vector<std::pair<char, char>> specifiers;
  for (size_t i = 0; i < s.size();) {
    if (i + 3 <= s.size() && s[i + 1] == '-') {
      specifiers.emplace_back(s[i], s[i + 2]);
      i += 3;
    } else {
      specifiers.emplace_back(s[i], s[i]);
      i += 1;
    }
  }
  return specifiers;
}

// Nothing where the crate's Pattern::new fails (then upstream's match is false).
std::optional<std::vector<GlobToken>> ParseGlob(absl::string_view chars) {
  std::vector<GlobToken> tokens;
  const size_t n = chars.size();
  size_t i = 0;
  while (i < n) {
    const char c = chars[i];
    if (c == '?') {
      tokens.push_back(GlobToken::Of(GlobToken::kAnyChar));
      ++i;
    } else if (c == '*') {
      const size_t old = i;
      while (i < n && chars[i] == '*') ++i;
      const size_t count = i - old;
      if (count > 2) return std::nullopt;
      if (count == 1) {
        tokens.push_back(GlobToken::Of(GlobToken::kAnySequence));
        continue;
      }
      // "**" only as a whole component; a following '/' belongs to it.
      if (old != 0 && chars[old - 1] != '/') return std::nullopt;
      if (i < n && chars[i] == '/') {
        ++i;
      } else if (i != n) {
        return std::nullopt;
      }
      if (!(tokens.size() > 1 && tokens.back().kind == GlobToken::kAnyRecursive)) {
        tokens.push_back(GlobToken::Of(GlobToken::kAnyRecursive));
      }
    } else if (c == '[') {
      if (i + 4 <= n && chars[i + 1] == '!') {
        const size_t j = chars.substr(i + 3).find(']');
        if (j != absl::string_view::npos) {
          tokens.push_back(GlobToken::Of(GlobToken::kExcept, 0, ParseSpecifiers(chars.substr(i + 2, j + 1))));
          i += j + 4;
          continue;
        }
      } else if (i + 3 <= n && chars[i + 1] != '!') {
        const size_t j = chars.substr(i + 2).find(']');
        if (j != absl::string_view::npos) {
          tokens.push_back(GlobToken::Of(GlobToken::kWithin, 0, ParseSpecifiers(chars.substr(i + 1, j + 1))));
          i += j + 3;
          continue;
        }
      }
      return std::nullopt;
    } else {
      tokens.push_back(GlobToken::Of(GlobToken::kChar, c));
      ++i;
    }
  }
  return tokens;
}

bool InSpecifiers(const std::vector<std::pair<char, char>>& specifiers, char c) {
  return std::any_of(specifiers.begin(), specifiers.end(),
                     [c](const auto& range) { return range.first <= c && c <= range.second; });
}

bool GlobMatches(absl::string_view pattern, absl::string_view path, Work& work) {
  const auto tokens = ParseGlob(pattern);
  if (!tokens.has_value()) return false;
  const size_t t = tokens->size(), l = path.size();
  if (!work.Spend((t + 1) * (l + 1))) return true;
  // m[ti][pos]: tokens from ti match path from pos.
  std::vector<char> memo((t + 1) * (l + 1), 0);
  const auto at = [&](size_t ti, size_t pos) -> char& { return memo[ti * (l + 1) + pos]; };
  at(t, l) = 1;
  for (size_t ti = t; ti-- > 0;) {
    const GlobToken& token = (*tokens)[ti];
    bool resumes_after = false;  // for "**": some later position just after a '/' matches the rest
    for (size_t pos = l + 1; pos-- > 0;) {
      bool result = false;
      switch (token.kind) {
        case GlobToken::kAnySequence:
          result = at(ti + 1, pos) || (pos < l && at(ti, pos + 1));
          break;
        case GlobToken::kAnyRecursive:
          if (pos < l && path[pos] == '/' && at(ti + 1, pos + 1)) resumes_after = true;
          result = at(ti + 1, pos) || resumes_after;
          break;
        default:
          if (pos < l) {
            const char c = path[pos];
            bool one = false;
            if (token.kind == GlobToken::kChar) one = c == token.c;
            if (token.kind == GlobToken::kAnyChar) one = true;
            if (token.kind == GlobToken::kWithin) one = InSpecifiers(token.ranges, c);
            if (token.kind == GlobToken::kExcept) one = !InSpecifiers(token.ranges, c);
            result = one && at(ti + 1, pos + 1);
          }
          break;
      }
      at(ti, pos) = result;
    }
  }
  return at(0, 0);
}

bool PathMatchesAll(absl::string_view path) { return path.empty() || path == "**" || path == "/**"; }

std::optional<absl::string_view> PrefixPattern(absl::string_view path) {
  if (absl::ConsumeSuffix(&path, "/**")) return path;
  return std::nullopt;
}

bool PathMatches(absl::string_view pattern, absl::string_view path, Work& work) {
  if (PathMatchesAll(pattern) || pattern == path) return true;
  if (const auto prefix = PrefixPattern(pattern)) {
    return path == *prefix || absl::StartsWith(path, absl::StrCat(*prefix, "/"));
  }
  if (HasNonAscii(pattern) || HasNonAscii(path)) return true;  // not decided by this port: taken to match
  return GlobMatches(pattern, path, work);
}

bool PathPatternsCanOverlap(absl::string_view first, absl::string_view second, Work& work) {
  if (PathMatchesAll(first) || PathMatchesAll(second)) return true;
  if (HasNonAscii(first) || HasNonAscii(second)) return true;  // not decided by this port: ambiguous
  if (!absl::StrContains(first, '*')) return PathMatches(second, first, work);
  if (!absl::StrContains(second, '*')) return PathMatches(first, second, work);
  const auto a = PrefixPattern(first);
  const auto b = PrefixPattern(second);
  if (!a.has_value() || !b.has_value()) return true;
  return *a == *b || absl::StartsWith(*a, absl::StrCat(*b, "/")) || absl::StartsWith(*b, absl::StrCat(*a, "/"));
}

std::vector<uint32_t> EndpointPorts(const openshell::sandbox::v1::NetworkEndpoint& endpoint) {
  std::vector<uint32_t> ports;
  if (endpoint.ports().empty()) {
    if (endpoint.port() != 0) ports.push_back(endpoint.port());
  } else {
    for (uint32_t port : endpoint.ports()) {
      if (port != 0) ports.push_back(port);
    }
  }
  return ports;
}

bool OverrideMatchesEndpoint(const openshell::v1::ProviderCredentialTokenGrantAudienceOverride& override_config,
                             absl::string_view endpoint_host, uint32_t endpoint_port, Work& work) {
  const absl::string_view host = absl::StripAsciiWhitespace(override_config.host());
  const bool host_matches = host.empty() || HostPatternMatches(host, endpoint_host, work) ||
                            HostPatternMatches(endpoint_host, host, work);
  return host_matches && (override_config.port() == 0 || override_config.port() == endpoint_port);
}

struct Binding {
  int index;
  std::string host;
  uint32_t port;
  std::string path;
  uint64_t score;
};

}  // namespace

bool AudienceOverridePathMatches(absl::string_view pattern, absl::string_view path) {
  Work work;
  return PathMatches(pattern, path, work);
}

std::optional<std::string> FindAmbiguousAudienceOverrides(
    const openshell::v1::ProviderProfileCredential& credential,
    const google::protobuf::RepeatedPtrField<openshell::sandbox::v1::NetworkEndpoint>& endpoints) {
  if (!credential.has_token_grant()) return std::nullopt;
  const auto& overrides = credential.token_grant().audience_overrides();
  std::vector<Binding> bindings;
  Work work;
  const std::string too_costly = absl::StrCat(
      "the overrides' host and path selectors take more than ", kMaxWork,
      " steps to compare against the endpoints and each other: shorter selectors or fewer overrides");
  for (int index = 0; index < overrides.size(); ++index) {
    const auto& override_config = overrides[index];
    for (const auto& endpoint : endpoints) {
      for (uint32_t port : EndpointPorts(endpoint)) {
        const bool matches = OverrideMatchesEndpoint(override_config, endpoint.host(), port, work);
        if (work.spent) return too_costly;
        if (!matches) continue;
        const absl::string_view own_host = absl::StripAsciiWhitespace(override_config.host());
        const absl::string_view own_path = absl::StripAsciiWhitespace(override_config.path());
        const absl::string_view host = own_host.empty() ? absl::StripAsciiWhitespace(endpoint.host()) : own_host;
        const absl::string_view path = own_path.empty() ? absl::StripAsciiWhitespace(endpoint.path()) : own_path;
        Binding candidate{index, absl::AsciiStrToLower(host), port, std::string(path),
                          HostSpecificity(host) + PathSpecificity(path)};
        for (const Binding& existing : bindings) {
          if (existing.index == candidate.index) continue;
          const bool ambiguous = existing.port == candidate.port && existing.score == candidate.score &&
                                 HostPatternsCanOverlap(existing.host, candidate.host, work) &&
                                 PathPatternsCanOverlap(existing.path, candidate.path, work);
          if (work.spent) return too_costly;
          if (ambiguous) {
            return absl::StrCat("ambiguous token_grant audience_overrides at indexes ", existing.index, " and ",
                                candidate.index, " for ", candidate.host, ":", port, " path selectors '",
                                existing.path, "' and '", candidate.path,
                                "' (the OpenShell gateway refuses the profile, and the catalogue with it)");
          }
        }
        if (bindings.size() == kMaxBindings) {
          return absl::StrCat("more than ", kMaxBindings,
                              " (override, endpoint, port) bindings: give the overrides hosts or ports of their own");
        }
        bindings.push_back(std::move(candidate));
      }
    }
  }
  return std::nullopt;
}

}  // namespace osh::policy
