// Upstream OpenShell refuses a provider profile whose token grant has two audience overrides binding one
// endpoint equally well, and with it the whole catalogue it is served: such a profile is refused here
// when it is set (policy/audience_overrides.h). Cases follow upstream's profile validation
// (crates/openshell-providers, validate_token_grant_audience_overrides) and the Rust glob crate it matches
// path selectors with.
#include <catch2/catch.hpp>

#include <string>

#include "absl/strings/str_cat.h"
#include "policy/audience_overrides.h"
#include "policy/provider_profile.h"

namespace {

using osh::policy::AudienceOverridePathMatches;

std::string Profile(const std::string& endpoints, const std::string& overrides) {
  return absl::StrCat("id: x\ndisplay_name: X\nendpoints:\n", endpoints,
                      "credentials:\n  - name: token\n    token_grant:\n"
                      "      token_endpoint: https://sts.example.com/token\n      audience_overrides:\n",
                      overrides);
}

}  // namespace

TEST_CASE("audience overrides: two that bind one endpoint equally well are refused as upstream refuses them",
          "[provider_profiles]") {
  const std::string api = "  - { host: api.example.com, port: 443 }\n";
  const std::vector<std::pair<std::string, std::string>> refused = {
      // Neither names a host or a path: both bind the endpoint as it is.
      {Profile(api, "        - { audience: a }\n        - { audience: b }\n"),
       "at indexes 0 and 1 for api.example.com:443 path selectors '' and ''"},
      // Hosts compared without case.
      {Profile(api, "        - { host: api.example.com, audience: a }\n        - { host: API.example.com, audience: b }\n"),
       "at indexes 0 and 1 for api.example.com:443"},
      // Two path globs of the same specificity that are not disjoint prefixes.
      {Profile(api, "        - { path: '/v1/*x', audience: a }\n        - { path: '/v1/a*', audience: b }\n"),
       "path selectors '/v1/*x' and '/v1/a*'"},
      // A prefix and a glob under it.
      {Profile(api, "        - { path: '/v1/**', audience: a }\n        - { path: '/v1/*', audience: b }\n"),
       "path selectors '/v1/**' and '/v1/*'"},
      // One override for every port, another for the endpoint's only port: the same binding.
      {Profile("  - { host: api.example.com, ports: [443, 8443] }\n",
               "        - { port: 8443, audience: a }\n        - { audience: b }\n"),
       "at indexes 0 and 1 for api.example.com:8443"},
  };
  for (const auto& [text, expected] : refused) {
    INFO(text);
    auto parsed = osh::policy::ParseProviderProfileText(text, "bad.yaml");
    REQUIRE_FALSE(parsed.ok());
    CHECK(parsed.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(parsed.status().message()),
               Catch::Contains("credentials[0].token_grant.audience_overrides: ambiguous token_grant audience_overrides") &&
                   Catch::Contains(expected));
  }
  const std::vector<std::string> taken = {
      // Disjoint path prefixes.
      Profile(api, "        - { path: '/v1/**', audience: a }\n        - { path: '/v2/**', audience: b }\n"),
      // Ports of their own.
      Profile("  - { host: api.example.com, ports: [443, 8443] }\n",
              "        - { port: 443, audience: a }\n        - { port: 8443, audience: b }\n"),
      // An exact host is more specific than the wildcard endpoint it falls under.
      Profile("  - { host: '*.example.com', port: 443 }\n",
              "        - { host: api.example.com, audience: a }\n        - { audience: b }\n"),
      // Hosts that no name matches both of.
      Profile("  - { host: a.example.com, port: 443 }\n  - { host: b.example.com, port: 443 }\n",
              "        - { host: a.example.com, audience: a }\n        - { host: b.example.com, audience: b }\n"),
      // A literal path and a glob of another specificity.
      Profile(api, "        - { path: '/v1/[ab]c', audience: a }\n        - { path: '/v1/?c', audience: b }\n"),
      // Literal paths of the same specificity that differ.
      Profile(api, "        - { path: '/v1/a', audience: a }\n        - { path: '/v1/b', audience: b }\n"),
      // One override alone.
      Profile(api, "        - { audience: a }\n"),
  };
  for (const std::string& text : taken) {
    INFO(text);
    auto parsed = osh::policy::ParseProviderProfileText(text, "good.yaml");
    CHECK(parsed.ok());
    if (!parsed.ok()) UNSCOPED_INFO(parsed.status().message());
  }
  // Bounded work: two 60,000-byte literal paths of equal specificity were a 3.6 GB comparison table.
  const std::string long_a = "/a" + std::string(60000, 'x') + "1", long_b = "/a" + std::string(60000, 'x') + "2";
  auto costly = osh::policy::ParseProviderProfileText(
      Profile(api, absl::StrCat("        - { path: '", long_a, "', audience: a }\n        - { path: '", long_b,
                                "', audience: b }\n")),
      "costly.yaml");
  REQUIRE_FALSE(costly.ok());
  CHECK_THAT(std::string(costly.status().message()),
             Catch::Contains("credentials[0].token_grant.audience_overrides: the overrides' host and path selectors "
                             "take more than"));
  // Loose ends upstream would trim are refused, as for every name it trims.
  auto loose = osh::policy::ParseProviderProfileText(Profile(api, "        - { host: ' api.example.com', audience: a }\n"),
                                                     "loose.yaml");
  REQUIRE_FALSE(loose.ok());
  CHECK_THAT(std::string(loose.status().message()),
             Catch::Contains("credentials[0].token_grant.audience_overrides[0].host: white space"));
}

TEST_CASE("audience overrides: path selectors match as the Rust glob crate matches them", "[provider_profiles]") {
  // upstream's shortcuts: everything, and a prefix with its sub-paths
  CHECK(AudienceOverridePathMatches("", "/anything"));
  CHECK(AudienceOverridePathMatches("/**", "/anything/at/all"));
  CHECK(AudienceOverridePathMatches("/v1/**", "/v1"));
  CHECK(AudienceOverridePathMatches("/v1/**", "/v1/a/b"));
  CHECK_FALSE(AudienceOverridePathMatches("/v1/**", "/v1x"));
  // `*` and `?` cross '/', `**` is whole components (zero or more)
  CHECK(AudienceOverridePathMatches("/a/*", "/a/b/c"));
  CHECK(AudienceOverridePathMatches("/a/?", "/a/b"));
  CHECK_FALSE(AudienceOverridePathMatches("/a/?", "/a/bc"));
  CHECK(AudienceOverridePathMatches("/a/**/b", "/a/b"));
  CHECK(AudienceOverridePathMatches("/a/**/b", "/a/x/y/b"));
  CHECK_FALSE(AudienceOverridePathMatches("/a/**/b", "/a/xb"));
  CHECK(AudienceOverridePathMatches("**/b", "/x/b"));
  // character classes, negated with '!', a ']' first is a member
  CHECK(AudienceOverridePathMatches("/a/[bc]d", "/a/cd"));
  CHECK(AudienceOverridePathMatches("/a/[a-c]d", "/a/bd"));
  CHECK_FALSE(AudienceOverridePathMatches("/a/[!bc]d", "/a/cd"));
  CHECK(AudienceOverridePathMatches("/a/[!bc]d", "/a/xd"));
  CHECK(AudienceOverridePathMatches("/a/[]]", "/a/]"));
  // patterns the crate refuses match nothing (unless equal to the path)
  CHECK_FALSE(AudienceOverridePathMatches("/a/[b*", "/a/[bx"));
  CHECK_FALSE(AudienceOverridePathMatches("/a**", "/abc"));
  CHECK_FALSE(AudienceOverridePathMatches("/a/***", "/a/b"));
  CHECK_FALSE(AudienceOverridePathMatches("/a/**b", "/a/xb"));
  CHECK(AudienceOverridePathMatches("/a/[b", "/a/[b"));
  // case matters
  CHECK_FALSE(AudienceOverridePathMatches("/A/*", "/a/b"));
}
