// Random policies and intents drawn from a small vocabulary of hosts, binaries, ports, methods and paths
// (for property tests; a fixed seed makes failures reproduce). Shared by the decision, containment and
// explain properties.
#pragma once

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "openshell/sandbox/v1/sandbox.pb.h"
#include "policy/egress.h"
#include "policy/glob.h"

namespace osh::test {

using openshell::sandbox::v1::SandboxPolicy;
using osh::policy::EgressIntent;

inline const std::vector<std::string> kHosts = {"api.example.com", "*.example.com", "**.example.com", "a.b.example.com",
                                         "x-api.example.com", "*-api.example.com", "api.other.org"};
inline const std::vector<std::string> kBinaries = {"/usr/bin/curl", "/usr/bin/*", "/usr/**", "/usr/bin/gh", "/opt/*/bin/tool"};
inline const std::vector<uint32_t> kPorts = {443, 8443};
inline const std::vector<std::string> kMethods = {"GET", "POST", "DELETE", "*", "PUT"};
inline const std::vector<std::string> kPaths = {"/repos/**", "/repos/*", "/repos/acme", "**", "/**", "/repos/*/issues", "/admin/**"};
inline const std::vector<std::string> kAccess = {"read-only", "read-write", "full"};
inline const std::vector<std::string> kRoutes = {"/repos/**", "/repos/*/**", "/admin/**", "/**", "/repos/acme"};

template <typename T>
inline const T& Pick(std::mt19937& rng, const std::vector<T>& from) {
  return from[std::uniform_int_distribution<size_t>(0, from.size() - 1)(rng)];
}
inline bool Chance(std::mt19937& rng, double p) { return std::uniform_real_distribution<double>(0, 1)(rng) < p; }

inline SandboxPolicy RandomPolicy(std::mt19937& rng) {
  SandboxPolicy policy;
  policy.set_version(1);
  const int entries = std::uniform_int_distribution<int>(1, 3)(rng);
  for (int e = 0; e < entries; ++e) {
    auto& entry = (*policy.mutable_network_policies())[absl::StrCat("e", e)];
    const int binaries = std::uniform_int_distribution<int>(1, 2)(rng);
    for (int b = 0; b < binaries; ++b) entry.add_binaries()->set_path(Pick(rng, kBinaries));
    const int endpoints = std::uniform_int_distribution<int>(1, 2)(rng);
    for (int i = 0; i < endpoints; ++i) {
      auto* ep = entry.add_endpoints();
      ep->set_host(Pick(rng, kHosts));
      if (Chance(rng, 0.3)) {
        ep->add_ports(443);
        ep->add_ports(8443);
      } else {
        ep->set_port(Pick(rng, kPorts));
      }
      if (Chance(rng, 0.6)) {
        ep->set_protocol("rest");
        ep->set_enforcement("enforce");
        // An endpoint path scopes the rules (Rego) and, beside another REST endpoint, routes requests.
        if (Chance(rng, 0.1)) ep->set_path(Pick(rng, kRoutes));
        if (Chance(rng, 0.3)) {
          ep->set_access(Pick(rng, kAccess));
        } else {
          const int rules = std::uniform_int_distribution<int>(1, 3)(rng);
          for (int r = 0; r < rules; ++r) {
            auto* allow = ep->add_rules()->mutable_allow();
            allow->set_method(Pick(rng, kMethods));
            allow->set_path(Pick(rng, kPaths));
          }
        }
        if (Chance(rng, 0.3)) {
          auto* deny = ep->add_deny_rules();
          deny->set_method(Pick(rng, kMethods));
          deny->set_path(Pick(rng, kPaths));
        }
      }
    }
  }
  return policy;
}

inline std::string Fill(std::mt19937& rng, const std::string& pattern, char delimiter) {
  auto glob = osh::policy::Glob::Parse(pattern, delimiter);
  REQUIRE(glob.ok());
  const std::vector<std::string> runs = {"a", "acme", "tool", "", "api"};
  const std::string two = delimiter == '.' ? "x.y" : "x/y";
  const std::vector<std::string> segments = {"", "q", two};
  std::string run = Pick(rng, runs);
  if (delimiter == '.' && run.empty()) run = "z";  // DNS labels are never empty
  return glob->Instance(run, Pick(rng, segments));
}

// Intents drawn from the policy's own endpoints, binaries and rules, plus a few off-vocabulary ones.
inline std::vector<EgressIntent> IntentsFrom(std::mt19937& rng, const SandboxPolicy& policy, int count) {
  std::vector<EgressIntent> out;
  std::vector<std::pair<std::string, const openshell::sandbox::v1::NetworkPolicyRule*>> entries;
  for (const auto& [key, entry] : policy.network_policies()) entries.emplace_back(key, &entry);
  std::sort(entries.begin(), entries.end());  // a map's iteration order varies between runs
  for (int n = 0; n < count; ++n) {
    const auto* entry = Pick(rng, entries).second;
    const auto& ep = entry->endpoints(std::uniform_int_distribution<int>(0, entry->endpoints_size() - 1)(rng));
    EgressIntent intent;
    intent.host = Fill(rng, ep.host(), '.');
    intent.port = ep.ports_size() > 0 ? ep.ports(0) : ep.port();
    const std::string& binary = entry->binaries(std::uniform_int_distribution<int>(0, entry->binaries_size() - 1)(rng)).path();
    intent.binary = binary.find('*') == std::string::npos ? binary : Fill(rng, binary, '/');
    if (Chance(rng, 0.2)) std::swap(intent.binary, intent.ancestors.emplace_back("/usr/local/bin/launcher"));
    if (Chance(rng, 0.7)) {
      osh::policy::EgressRequest request;
      if (ep.rules_size() > 0 && Chance(rng, 0.8)) {
        const auto& allow = ep.rules(std::uniform_int_distribution<int>(0, ep.rules_size() - 1)(rng)).allow();
        request.method = allow.method() == "*" ? Pick(rng, kMethods) : allow.method();
        request.path = allow.path() == "**" ? "/anything/at/all" : Fill(rng, allow.path(), '/');
      } else {
        request.method = Pick(rng, kMethods);
        request.path = Fill(rng, Pick(rng, kPaths) == "**" ? "/x" : Pick(rng, kPaths), '/');
      }
      if (request.method == "*") request.method = "PATCH";
      if (Chance(rng, 0.1)) request.method = "HEAD";
      // As the sandbox's proxy hands a path to its policy: from '/', no empty, '.' or '..' segment (a filled
      // pattern can be "x/y" or "a//b"; the evaluator answers such a path unsupported).
      std::vector<std::string> segments;
      for (absl::string_view part : absl::StrSplit(request.path, '/')) {
        if (!part.empty() && part != "." && part != "..") segments.emplace_back(part);
      }
      request.path = "/" + absl::StrJoin(segments, "/");
      intent.request = std::move(request);
    }
    out.push_back(std::move(intent));
  }
  return out;
}

}  // namespace osh::test
