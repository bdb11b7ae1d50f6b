#include "policy/containment.h"

#include "common/errors.h"

#include <algorithm>
#include <memory>
#include <new>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "policy/body_codec.h"
#include "policy/containment_model.h"
#include "policy/destination.h"
#include "policy/egress.h"
#include "policy/glob.h"
#include "policy/route_path.h"

namespace osh::policy {

using openshell::sandbox::v1::FilesystemPolicy;
using openshell::sandbox::v1::L7Allow;
using openshell::sandbox::v1::L7DenyRule;
using openshell::sandbox::v1::NetworkEndpoint;
using openshell::sandbox::v1::SandboxPolicy;

absl::Status ContainmentResult::ToStatus() const {
  switch (verdict) {
    case Containment::kInside: return absl::OkStatus();
    case Containment::kOutside: return common::Refused(absl::StatusCode::kFailedPrecondition, "exceeds_ceiling", detail);
    case Containment::kUnknown: return common::Refused(absl::StatusCode::kFailedPrecondition, "containment_unknown", detail);
  }
  return common::Refused(absl::StatusCode::kFailedPrecondition, "containment_unknown", "no verdict");
}

namespace containment_model {

std::vector<std::string> SortedKeys(const SandboxPolicy& policy) {
  std::vector<std::string> keys;
  for (const auto& [key, rule] : policy.network_policies()) keys.push_back(key);
  std::sort(keys.begin(), keys.end());
  return keys;
}

std::vector<uint32_t> Ports(const NetworkEndpoint& ep) {
  if (ep.ports_size() > 0) return {ep.ports().begin(), ep.ports().end()};
  return {ep.port()};
}

template <typename RuleT>
static std::optional<std::string> UnmodelledRuleField(const RuleT& rule) {
  if (!rule.query().empty()) return "query matchers";
  if (!rule.command().empty()) return "a SQL command";
  if (!rule.operation_type().empty() || !rule.operation_name().empty() || !rule.fields().empty()) return "GraphQL fields";
  if (!rule.params().empty()) return "JSON-RPC params";
  return std::nullopt;
}

static std::optional<std::string> GlobProblem(absl::string_view pattern, char delimiter) {
  if (pattern == "**" && delimiter == '/') return std::nullopt;
  auto glob = Glob::Parse(pattern, delimiter);
  if (!glob.ok()) return std::string(glob.status().message());
  return std::nullopt;
}

// A method upstream's Rego compares as upper(actual) == upper(expected) with Unicode case mapping, under
// which some non-ASCII methods equal ASCII ones ("poſt" is POST): only ASCII methods are decided.
static bool NonAsciiMethod(absl::string_view method) {
  return std::any_of(method.begin(), method.end(), [](char c) { return static_cast<unsigned char>(c) >= 0x80; });
}
constexpr char kNonAsciiMethod[] = "not ASCII (upstream compares methods by Unicode case mapping, not decided)";

// The first construct of `policy` that containment does not decide, named.
std::optional<std::string> FindUnmodelled(const SandboxPolicy& policy, absl::string_view which) {
  for (const auto& key : SortedKeys(policy)) {
    const auto& entry = policy.network_policies().at(key);
    // Upstream's runtime Rego grants an entry without binaries to no process (the evaluator follows it), but
    // its merge code and docs say an empty list authorizes every binary: a candidate's such entry is inside
    // under the one and may be far outside under a runtime that follows the other. (A ceiling's grants
    // nothing here, the narrower reading.)
    if (which == "candidate" && entry.binaries_size() == 0 && entry.endpoints_size() > 0) {
      return absl::StrCat(which, " network_policies.", key, ": ", kNoBinariesWhy);
    }
    for (int b = 0; b < entry.binaries_size(); ++b) {
      const std::string& path = entry.binaries(b).path();
      if (path.find('*') == std::string::npos) continue;
      if (auto problem = GlobProblem(path, '/')) {
        return absl::StrCat(which, " network_policies.", key, ".binaries[", b, "]: ", *problem);
      }
    }
    for (int i = 0; i < entry.endpoints_size(); ++i) {
      const NetworkEndpoint& ep = entry.endpoints(i);
      const std::string where = absl::StrCat(which, " network_policies.", key, ".endpoints[", i, "]");
      if (!ep.protocol().empty() && ep.protocol() != "rest") {
        return absl::StrCat(where, ": protocol '", ep.protocol(), "' (only L4 and REST endpoints are decided)");
      }
      if (ep.allowed_ips_size() > 0) return absl::StrCat(where, ": allowed_ips (checked after DNS, not decidable on policy)");
      if (!ep.tls().empty()) return absl::StrCat(where, ": tls '", ep.tls(), "'");
      if (ep.protocol().empty() && (ep.rules_size() > 0 || ep.deny_rules_size() > 0 || !ep.access().empty())) {
        return absl::StrCat(where, ": REST rules on an endpoint without protocol 'rest'");
      }
      if (ep.protocol() == "rest" && ep.enforcement() != "enforce") {
        return absl::StrCat(where, ": REST enforcement '", ep.enforcement().empty() ? "(unset: audit)" : ep.enforcement(),
                            "' (only enforced REST is decided)");
      }
      if (!ep.path().empty()) {
        if (auto problem = GlobProblem(ep.path(), '/')) return absl::StrCat(where, ".path: ", *problem);
      }
      // With allow_encoded_slash a %2F stays inside a path segment, so the paths rules see are not the
      // segments this model matches (a ceiling's `*` segment, its deny rules, are then dodged).
      if (ep.allow_encoded_slash()) return absl::StrCat(where, ": allow_encoded_slash (paths with %2F are not decided)");
      for (int r = 0; r < ep.rules_size(); ++r) {
        const L7Allow& allow = ep.rules(r).allow();
        if (auto field = UnmodelledRuleField(allow)) return absl::StrCat(where, ".rules[", r, "]: ", *field);
        if (auto problem = GlobProblem(allow.path(), '/')) return absl::StrCat(where, ".rules[", r, "]: ", *problem);
        if (NonAsciiMethod(allow.method())) return absl::StrCat(where, ".rules[", r, "].method: ", kNonAsciiMethod);
      }
      for (int r = 0; r < ep.deny_rules_size(); ++r) {
        const L7DenyRule& deny = ep.deny_rules(r);
        if (auto field = UnmodelledRuleField(deny)) return absl::StrCat(where, ".deny_rules[", r, "]: ", *field);
        if (auto problem = GlobProblem(deny.path(), '/')) return absl::StrCat(where, ".deny_rules[", r, "]: ", *problem);
        if (NonAsciiMethod(deny.method())) return absl::StrCat(where, ".deny_rules[", r, "].method: ", kNonAsciiMethod);
      }
    }
  }
  return std::nullopt;
}

static std::string Trimmed(absl::string_view path) {
  while (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  return std::string(path);
}

bool Under(absl::string_view path, absl::string_view base) {
  const std::string p = Trimmed(path), b = Trimmed(base);
  return b == "/" || p == b || absl::StartsWith(p, b + "/");
}

bool UnderAny(absl::string_view path, const google::protobuf::RepeatedPtrField<std::string>& bases) {
  return std::any_of(bases.begin(), bases.end(), [&](const std::string& base) { return Under(path, base); });
}

// A baseline read-write path a policy lists read-only stays read-only in some versions and is made
// read-write in others; only the first is listed, since making it read-write on both sides of a comparison
// never shows a widening the first does not.
absl::Span<const FilesystemBaseline> FilesystemBaselines() {
  static const FilesystemBaseline kBaselines[] = {
      {{"/usr", "/lib", "/etc", "/app", "/var/log"}, {"/sandbox", "/tmp"}},
      {{"/usr", "/lib", "/etc", "/app", "/var/log", "/proc", "/dev/urandom"}, {"/tmp", "/dev/null"}},
  };
  return kBaselines;
}

FilesystemPolicy EffectiveFilesystemOf(const SandboxPolicy& policy, const FilesystemBaseline& baseline) {
  FilesystemPolicy fs = policy.filesystem();
  if (!policy.has_filesystem()) fs.set_include_workdir(true);
  if (policy.network_policies().empty()) return fs;
  auto listed = [&](const char* path) {
    return std::find(fs.read_only().begin(), fs.read_only().end(), path) != fs.read_only().end() ||
           std::find(fs.read_write().begin(), fs.read_write().end(), path) != fs.read_write().end();
  };
  for (const char* path : baseline.read_only) {
    if (!listed(path)) fs.add_read_only(path);
  }
  for (const char* path : baseline.read_write) {
    if (!listed(path)) fs.add_read_write(path);
  }
  return fs;
}

std::string EffectivePathField(const char* list, int i, const SandboxPolicy& policy) {
  const int listed = std::string_view(list) == "read_write" ? policy.filesystem().read_write_size()
                                                            : policy.filesystem().read_only_size();
  return i < listed ? absl::StrCat("filesystem.", list, "[", i, "]")
                    : absl::StrCat("filesystem.", list, " (a baseline path the supervisor adds)");
}

bool LandlockApplied(const FilesystemPolicy& fs) {
  return fs.include_workdir() || fs.read_only_size() > 0 || fs.read_write_size() > 0;
}

bool MagicLink(absl::string_view listed) {
  // As the kernel resolves it (upstream normalises the path, then Landlock opens it): `//` and `.` segments
  // do not hide /dev/fd/3 (validation refuses `..`).
  std::vector<absl::string_view> segments;
  for (absl::string_view segment : absl::StrSplit(listed, '/', absl::SkipEmpty())) {
    if (segment != ".") segments.push_back(segment);
  }
  const std::string path = absl::StrCat("/", absl::StrJoin(segments, "/"));
  return (path != "/proc" && Under(path, "/proc")) || Under(path, "/dev/fd") || path == "/dev/stdin" ||
         path == "/dev/stdout" || path == "/dev/stderr";
}

static std::optional<std::string> FilesystemWidening(const SandboxPolicy& candidate, const SandboxPolicy& ceiling,
                                                     const FilesystemBaseline& baseline) {
  const FilesystemPolicy cand = EffectiveFilesystemOf(candidate, baseline);
  const FilesystemPolicy ceil = EffectiveFilesystemOf(ceiling, baseline);
  // No Landlock ruleset is the whole filesystem, which only a ceiling without one allows as well.
  if (!LandlockApplied(cand) && LandlockApplied(ceil)) {
    return std::string("filesystem: no read_only or read_write path and no workdir, so no Landlock ruleset is "
                       "applied (the whole filesystem); the ceiling restricts it");
  }
  for (int i = 0; i < cand.read_write_size(); ++i) {
    if (!UnderAny(cand.read_write(i), ceil.read_write())) {
      return absl::StrCat(EffectivePathField("read_write", i, candidate), " '", cand.read_write(i),
                          "' is not under any read-write path of the ceiling");
    }
  }
  for (int i = 0; i < cand.read_only_size(); ++i) {
    if (!UnderAny(cand.read_only(i), ceil.read_only()) && !UnderAny(cand.read_only(i), ceil.read_write())) {
      return absl::StrCat(EffectivePathField("read_only", i, candidate), " '", cand.read_only(i),
                          "' is not under any path of the ceiling");
    }
  }
  // The workdir is the supervisor's (--workdir, or the image's; /sandbox by default): only the ceiling's own
  // include_workdir grants it, whatever paths the ceiling lists.
  if (cand.include_workdir() && !ceil.include_workdir()) {
    return std::string(candidate.has_filesystem()
                           ? "filesystem.include_workdir adds the workdir (/sandbox by default) read-write; the "
                             "ceiling does not"
                           : "filesystem: none, which upstream reads as include_workdir (the workdir, /sandbox by "
                             "default, read-write); the ceiling does not");
  }
  return std::nullopt;
}

static std::optional<std::string> MagicLinkPath(const SandboxPolicy& candidate) {
  auto check = [](const auto& paths, const char* list) -> std::optional<std::string> {
    for (int i = 0; i < paths.size(); ++i) {
      if (MagicLink(paths.Get(i))) {
        return absl::StrCat("candidate filesystem.", list, "[", i, "] '", paths.Get(i), "': ", kMagicLinkWhy);
      }
    }
    return std::nullopt;
  };
  if (auto what = check(candidate.filesystem().read_only(), "read_only")) return what;
  return check(candidate.filesystem().read_write(), "read_write");
}

static std::optional<std::string> FilesystemWidening(const SandboxPolicy& candidate, const SandboxPolicy& ceiling) {
  for (const FilesystemBaseline& baseline : FilesystemBaselines()) {
    if (auto widening = FilesystemWidening(candidate, ceiling, baseline)) return widening;
  }
  return std::nullopt;
}

static std::optional<std::string> ProcessWidening(const SandboxPolicy& candidate, const SandboxPolicy& ceiling) {
  // A group without a user: upstream's supervisors before their identity fix change only the group and keep
  // their own user (root) for such a policy, where a policy naming neither runs as sandbox:sandbox (or as the
  // supervisor's user, on the oldest): never inside unless the ceiling has the same shape and group.
  const auto& cand_process = candidate.process();
  if (cand_process.run_as_user().empty() && !cand_process.run_as_group().empty() &&
      !(ceiling.process().run_as_user().empty() && ceiling.process().run_as_group() == cand_process.run_as_group())) {
    return absl::StrCat("process.run_as_group '", cand_process.run_as_group(),
                        "' without run_as_user: supervisors before upstream's identity fix keep their own user "
                        "(root) for it; the ceiling's identity is not that");
  }
  auto check = [](absl::string_view field, const std::string& cand, const std::string& ceil) -> std::optional<std::string> {
    if (ceil.empty() || cand == ceil) return std::nullopt;
    return absl::StrCat("process.", field, " '", cand, "' where the ceiling requires '", ceil, "'");
  };
  if (auto w = check("run_as_user", candidate.process().run_as_user(), ceiling.process().run_as_user())) return w;
  if (auto w = check("run_as_group", candidate.process().run_as_group(), ceiling.process().run_as_group())) return w;
  if (ceiling.landlock().compatibility() == "hard_requirement" &&
      candidate.landlock().compatibility() != "hard_requirement") {
    return absl::StrCat("landlock.compatibility '", candidate.landlock().compatibility(),
                        "' where the ceiling requires 'hard_requirement'");
  }
  return std::nullopt;
}

// ---- network: the ceiling, indexed -------------------------------------------------------------

PathPattern PathPattern::Of(absl::string_view pattern) {
  PathPattern p;
  if (pattern == "**") {
    p.all = true;
  } else {
    p.glob = std::make_shared<const Glob>(*Glob::Parse(pattern, '/'));  // FindUnmodelled refused bad ones
  }
  return p;
}

bool PathPattern::Covers(const PathPattern& other) const {
  if (all) return true;
  if (other.all) return false;
  return glob->Matches(other.glob->Symbolic());
}

bool PathPattern::Intersects(const PathPattern& other) const {
  if (all || other.all) return true;
  return glob->Intersects(*other.glob);
}

bool MethodCovers(absl::string_view rule, absl::string_view method) {
  if (rule.empty()) return false;
  if (rule == "*") return true;
  if (method == kAnyMethod) return false;
  return absl::EqualsIgnoreCase(rule, method) || (absl::EqualsIgnoreCase(method, "HEAD") && absl::EqualsIgnoreCase(rule, "GET"));
}

bool MethodMayMatch(absl::string_view rule, absl::string_view method) {
  if (rule.empty()) return false;
  if (rule == "*" || method == kAnyMethod) return true;
  return MethodCovers(rule, method);
}

// binary_instances: concrete paths matching each of the policy's binaries: as ancestors, they make a
// process that every entry applies to (the worst case for its deny rules). rule_methods, rule_paths:
// concrete requests from its rules (where its deny rules and the edges of its allow rules are).
// host_instances: a concrete host for each endpoint.
PolicyIndex::PolicyIndex(const SandboxPolicy& policy) {
  for (const auto& key : SortedKeys(policy)) {
    const auto& source = policy.network_policies().at(key);
    IndexedEntry entry;
    for (const auto& b : source.binaries()) {
      if (b.path().find('*') == std::string::npos) {
        entry.exact_binaries.insert(b.path());
        binary_instances.push_back(b.path());
      } else {
        entry.glob_binaries.push_back(*Glob::Parse(b.path(), '/'));
        binary_instances.push_back(entry.glob_binaries.back().Instance("oshw", "oshw"));
      }
    }
    const size_t e = entries_.size();
    entries_.push_back(std::move(entry));
    if (source.binaries().empty()) continue;  // grants nothing
    for (const auto& ep : source.endpoints()) {
      IndexedEndpoint out;
      out.entry = e;
      out.host = absl::AsciiStrToLower(ep.host());
      if (out.host.find('*') != std::string::npos) out.host_glob = *Glob::Parse(out.host, '.');
      out.ports = Ports(ep);
      out.rest = ep.protocol() == "rest";
      if (!ep.path().empty()) out.scope = PathPattern::Of(ep.path());
      out.route_covers_scope = RouteCoversScope(ep.path());
      for (const auto& [method, path] : PresetRules(ep.protocol(), ep.access())) out.allow.push_back({method, PathPattern::Of(path)});
      for (const auto& rule : ep.rules()) out.allow.push_back({rule.allow().method(), PathPattern::Of(rule.allow().path())});
      for (const auto& rule : ep.deny_rules()) out.deny.push_back({rule.method(), PathPattern::Of(rule.path())});
      for (const auto* rules : {&out.allow, &out.deny}) {
        for (const MethodRule& rule : *rules) {
          if (!rule.method.empty() && rule.method != "*") rule_methods.push_back(absl::AsciiStrToUpper(rule.method));
          if (rule.path.all) continue;
          rule_paths.push_back(rule.path.glob->Instance("oshw", "oshw/oshw"));
          rule_paths.push_back(rule.path.glob->Instance("oshw", ""));
        }
      }
      const size_t index = endpoints_.size();
      host_instances.push_back(out.host_glob ? out.host_glob->Instance("oshw", "oshw.oshw") : out.host);
      if (out.host_glob) {
        wildcard_.push_back(index);
      } else {
        exact_[out.host].push_back(index);
      }
      endpoints_.push_back(std::move(out));
    }
  }
  for (auto* list : {&rule_methods, &rule_paths, &host_instances, &binary_instances}) {
    std::sort(list->begin(), list->end());
    list->erase(std::unique(list->begin(), list->end()), list->end());
  }
}

template <typename F>
void PolicyIndex::ForEachCandidate(const Grant& grant, F&& f) const {
  if (grant.host_glob) {
    for (const auto& ep : endpoints_) f(ep);
    return;
  }
  if (auto it = exact_.find(grant.host); it != exact_.end()) {
    for (size_t index : it->second) f(endpoints_[index]);
  }
  for (size_t index : wildcard_) f(endpoints_[index]);
}

// Proven: the ceiling allows every concrete intent of `grant` that the candidate (`self`, the
// candidate's own index) does not deny itself.
bool PolicyIndex::Covers(const Grant& grant, const PolicyIndex& self) const {
  bool connection = false;
  std::vector<const IndexedEndpoint*> may_apply;
  ForEachCandidate(grant, [&](const IndexedEndpoint& ep) {
    if (std::find(ep.ports.begin(), ep.ports.end(), grant.port) == ep.ports.end()) return;
    if (!HostPatternsIntersect(ep.host, grant.host)) return;
    // Any entry may apply to the request whatever its binaries: a process's ancestors are not
    // bounded, so some process with this grant's binary also matches that entry's.
    may_apply.push_back(&ep);
    if (HostCovers(ep, grant) && BinaryCovers(entries_[ep.entry], grant)) connection = true;
  });
  if (!connection) return false;
  if (!grant.request) return true;
  bool inspected = false, allowed = false;
  // With two REST endpoints that may serve the request, upstream's proxy routes it by their paths and
  // denies one no path selects (policy/route_path.h): then an endpoint proves the grant allowed only if
  // its route selects all its scope does.
  const bool routed = std::count_if(may_apply.begin(), may_apply.end(), [](const IndexedEndpoint* ep) { return ep->rest; }) > 1;
  for (const IndexedEndpoint* ep : may_apply) {
    if (!ep->rest) continue;
    inspected = true;
    const bool scope_may = !ep->scope || ep->scope->Intersects(grant.path);
    if (!scope_may) continue;
    for (const MethodRule& deny : ep->deny) {
      if (!MethodMayMatch(deny.method, grant.method) || !deny.path.Intersects(grant.path)) continue;
      if (!self.DeniesWhenever(grant, entries_[ep->entry], deny)) return false;
    }
    if (allowed || !HostCovers(*ep, grant) || !BinaryCovers(entries_[ep->entry], grant)) continue;
    if (ep->scope && !ep->scope->Covers(grant.path)) continue;
    if (routed && !ep->route_covers_scope) continue;
    for (const MethodRule& allow : ep->allow) {
      if (MethodCovers(allow.method, grant.method) && allow.path.Covers(grant.path)) allowed = true;
    }
  }
  return !inspected || allowed;
}

// Proven: this policy denies `rule`'s requests on `grant`'s connection for every process that the
// other policy's `entry` applies to — so a deny rule there takes nothing the candidate allows.
bool PolicyIndex::DeniesWhenever(const Grant& grant, const IndexedEntry& entry, const MethodRule& rule) const {
  const std::string rule_method = rule.method == "*" ? std::string(kAnyMethod) : rule.method;
  bool denies = false;
  ForEachCandidate(grant, [&](const IndexedEndpoint& ep) {
    if (denies || !ep.rest || std::find(ep.ports.begin(), ep.ports.end(), grant.port) == ep.ports.end()) return;
    if (!HostCovers(ep, grant)) return;
    const IndexedEntry& mine = entries_[ep.entry];
    const bool applies = BinaryCovers(mine, grant) || CoversEntry(mine, entry);
    if (!applies || (ep.scope && !ep.scope->Covers(rule.path))) return;
    for (const MethodRule& deny : ep.deny) {
      if (MethodCovers(deny.method, rule_method) && deny.path.Covers(rule.path)) denies = true;
    }
  });
  return denies;
}

// Proven: the policy itself allows no request of `grant` — one of its deny rules applies to every
// process and request of it, or (for a grant of any request) an inspecting endpoint always applies,
// so the requests it allows are exactly those of its REST rules, each a grant of its own.
bool PolicyIndex::NeverAllows(const Grant& grant) const {
  bool never = false;
  ForEachCandidate(grant, [&](const IndexedEndpoint& ep) {
    if (never || !ep.rest || std::find(ep.ports.begin(), ep.ports.end(), grant.port) == ep.ports.end()) return;
    if (!HostCovers(ep, grant) || !BinaryCovers(entries_[ep.entry], grant)) return;
    if (grant.uninspected) {
      never = true;
      return;
    }
    if (ep.scope && !ep.scope->Covers(grant.path)) return;
    for (const MethodRule& deny : ep.deny) {
      if (MethodCovers(deny.method, grant.method) && deny.path.Covers(grant.path)) never = true;
    }
  });
  return never;
}

bool PolicyIndex::MayAllowAny(const Grant& grant) const {
  bool may = false;
  ForEachCandidate(grant, [&](const IndexedEndpoint& ep) {
    if (may || std::find(ep.ports.begin(), ep.ports.end(), grant.port) == ep.ports.end()) return;
    if (!HostPatternsIntersect(ep.host, grant.host)) return;
    // Any entry may apply whatever its binaries (ancestors are not bounded); only entries with
    // binaries are indexed, and an entry without binaries grants nothing.
    if (!grant.request || !ep.rest) {
      may = true;
      return;
    }
    if (ep.scope && !ep.scope->Intersects(grant.path)) return;
    for (const MethodRule& allow : ep.allow) {
      if (MethodMayMatch(allow.method, grant.method) && allow.path.Intersects(grant.path)) may = true;
    }
  });
  return may;
}

bool PolicyIndex::HostCovers(const IndexedEndpoint& ep, const Grant& grant) {
  if (!grant.host_glob) return ep.host_glob ? ep.host_glob->Matches(grant.host) : ep.host == grant.host;
  return ep.host_glob && ep.host_glob->Matches(grant.host_glob->Symbolic());
}

// Every binary of `other` is covered by one of `mine` (as exact path or glob).
bool PolicyIndex::CoversEntry(const IndexedEntry& mine, const IndexedEntry& other) {
  if (other.exact_binaries.empty() && other.glob_binaries.empty()) return false;
  for (const auto& exact : other.exact_binaries) {
    if (mine.exact_binaries.contains(exact)) continue;
    if (std::none_of(mine.glob_binaries.begin(), mine.glob_binaries.end(), [&](const Glob& g) { return g.Matches(exact); })) {
      return false;
    }
  }
  for (const Glob& glob : other.glob_binaries) {
    const std::string& symbolic = glob.Symbolic();
    if (std::none_of(mine.glob_binaries.begin(), mine.glob_binaries.end(), [&](const Glob& g) { return g.Matches(symbolic); })) {
      return false;
    }
  }
  return true;
}

bool PolicyIndex::BinaryCovers(const IndexedEntry& entry, const Grant& grant) {
  if (!grant.binary_glob) {
    if (entry.exact_binaries.contains(grant.binary)) return true;
    return std::any_of(entry.glob_binaries.begin(), entry.glob_binaries.end(),
                       [&](const Glob& g) { return g.Matches(grant.binary); });
  }
  const std::string& symbolic = grant.binary_glob->Symbolic();
  return std::any_of(entry.glob_binaries.begin(), entry.glob_binaries.end(),
                     [&](const Glob& g) { return g.Matches(symbolic); });
}

// ---- network: the candidate's grants and concrete witnesses --------------------------------------

// The grants one allow rule's method makes (GrantsOf: none for an empty method, HEAD beside GET).
static uint64_t MethodGrants(absl::string_view method) {
  if (method.empty()) return 0;
  return absl::EqualsIgnoreCase(method, "GET") ? 2 : 1;
}

uint64_t GrantBound(const SandboxPolicy& policy) {
  uint64_t bound = 0;
  for (const auto& [key, entry] : policy.network_policies()) {
    for (const NetworkEndpoint& ep : entry.endpoints()) {
      uint64_t per = 1;  // the connection
      if (ep.protocol().empty()) {
        per += 1;  // every request, not inspected
      } else if (ep.protocol() == "rest") {
        for (const auto& [method, path] : PresetRules(ep.protocol(), ep.access())) per += MethodGrants(method);
        for (const auto& rule : ep.rules()) per += MethodGrants(rule.allow().method());
      }
      bound += static_cast<uint64_t>(entry.binaries_size()) * Ports(ep).size() * per;
    }
  }
  return bound;
}

std::optional<std::string> TooManyGrants(const SandboxPolicy& policy, absl::string_view which) {
  const uint64_t bound = GrantBound(policy);
  if (bound <= kMaxGrants) return std::nullopt;
  return absl::StrCat(which, " network_policies: ", bound,
                      " (binary, port, rule) grants, too many to decide (at most ", kMaxGrants,
                      "): fewer binaries, ports or rules per entry");
}

std::vector<Grant> GrantsOf(const SandboxPolicy& candidate) {
  std::vector<Grant> grants;
  const PathPattern all_paths = PathPattern::Of("**");
  for (const auto& key : SortedKeys(candidate)) {
    const auto& entry = candidate.network_policies().at(key);
    std::vector<std::pair<std::string, std::shared_ptr<const Glob>>> binaries;
    for (const auto& binary : entry.binaries()) {
      std::shared_ptr<const Glob> glob;
      if (binary.path().find('*') != std::string::npos) glob = std::make_shared<const Glob>(*Glob::Parse(binary.path(), '/'));
      binaries.emplace_back(binary.path(), std::move(glob));
    }
    for (int i = 0; i < entry.endpoints_size(); ++i) {
      const NetworkEndpoint& ep = entry.endpoints(i);
      struct AllowRule {
        std::string method;
        PathPattern path;
        std::string label;  // as EgressDecision::rule names it
      };
      const std::string prefix = absl::StrCat("network_policies.", key, ".endpoints[", i, "]");
      std::vector<AllowRule> rules;  // what the endpoint allows
      if (ep.protocol() == "rest") {
        for (const auto& [method, path] : PresetRules(ep.protocol(), ep.access())) {
          rules.push_back({method, PathPattern::Of(path), absl::StrCat(prefix, ".access ", ep.access(), " (", method, " ", path, ")")});
        }
        for (int r = 0; r < ep.rules_size(); ++r) {
          const auto& allow = ep.rules(r).allow();
          rules.push_back({allow.method(), PathPattern::Of(allow.path()),
                           absl::StrCat(prefix, ".rules[", r, "] (", allow.method(), " ", allow.path(), ")")});
        }
      }
      const std::vector<uint32_t> ports = Ports(ep);
      const std::string endpoint_label =
          absl::StrCat(prefix, " (", ep.host().empty() ? "*" : ep.host(), ":", absl::StrJoin(ports, ","), ")");
      const std::string host = absl::AsciiStrToLower(ep.host());
      std::shared_ptr<const Glob> host_glob;
      if (host.find('*') != std::string::npos) host_glob = std::make_shared<const Glob>(*Glob::Parse(host, '.'));
      for (const auto& [binary, binary_glob] : binaries) {
        for (uint32_t port : ports) {
          Grant base;
          base.entry = key;
          base.endpoint = i;
          base.endpoint_label = endpoint_label;
          base.binary = binary;
          base.binary_glob = binary_glob;
          base.host = host;
          base.host_glob = host_glob;
          base.port = port;
          base.path = all_paths;
          base.where = absl::StrCat("network_policies.", key, ".endpoints[", i, "] (", ep.host(), ":", port,
                                    ") for binary '", binary, "'");
          grants.push_back(base);  // the connection itself
          if (ep.protocol().empty()) {
            Grant any = base;  // not inspected: every request passes
            any.request = true;
            any.uninspected = true;
            any.method = std::string(kAnyMethod);
            grants.push_back(std::move(any));
            continue;
          }
          for (const AllowRule& rule : rules) {
            const std::string& method = rule.method;
            if (method.empty()) continue;  // allows nothing
            std::vector<std::string> methods;
            if (method == "*") {
              methods.push_back(std::string(kAnyMethod));
            } else {
              methods.push_back(absl::AsciiStrToUpper(method));
              if (absl::EqualsIgnoreCase(method, "GET")) methods.push_back("HEAD");
            }
            for (const auto& m : methods) {
              Grant request = base;
              request.request = true;
              request.method = m;
              request.path = rule.path;
              request.rule_label = rule.label;
              grants.push_back(std::move(request));
            }
          }
        }
      }
    }
  }
  return grants;
}

static std::vector<std::string> Instances(const std::shared_ptr<const Glob>& glob, const std::string& exact, char delimiter) {
  if (!glob) return {exact};
  const std::string two = delimiter == '.' ? "oshw.oshw" : "oshw/oshw";
  std::vector<std::string> out = {glob->Instance("oshw", two), glob->Instance("oshw", "oshw"), glob->Instance("oshw", "")};
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::optional<Witness> FindWitness(const Grant& grant, const EgressPolicy& candidate, const EgressPolicy& ceiling,
                                   const PolicyIndex& index) {
  // Two passes: the grant's own instances with no ancestors (where a witness almost always is, found
  // without building the rest), then everything: the other policy's instances inside the grant (where
  // its rules begin and end) and ancestors that make its entries apply.
  const std::vector<std::string> no_ancestors;
  std::vector<const std::vector<std::string>*> ancestries = {&no_ancestors};
  std::vector<std::string> methods, paths;
  std::vector<std::string> binaries = Instances(grant.binary_glob, grant.binary, '/');
  std::vector<std::string> hosts = Instances(grant.host_glob, grant.host, '.');
  if (grant.request) {
    if (grant.method == kAnyMethod) {
      methods = {"OSH-WITNESS", "DELETE", "POST", "PUT", "PATCH", "GET", "HEAD", "OPTIONS"};
    } else {
      methods = {grant.method};
    }
    paths = grant.path.all ? std::vector<std::string>{"/", "/oshw/oshw"} : Instances(grant.path.glob, "", '/');
  } else {
    methods = {""};
    paths = {""};
  }
  std::vector<std::vector<std::string>> singles;
  for (int pass = 0; pass < 2; ++pass) {
    if (pass == 1) {
      if (grant.request && grant.method == kAnyMethod) {
        methods.insert(methods.end(), index.rule_methods.begin(), index.rule_methods.end());
      }
      // Where the other policy's rules begin and end, when inside what the grant allows.
      for (const std::string& path : index.rule_paths) {
        if (grant.request && (grant.path.all || grant.path.glob->Matches(path))) paths.push_back(path);
      }
      if (grant.binary_glob) {
        for (const auto& b : index.binary_instances) {
          if (grant.binary_glob->Matches(b)) binaries.push_back(b);
        }
      }
      if (grant.host_glob) {
        for (const auto& h : index.host_instances) {
          if (grant.host_glob->Matches(h)) hosts.push_back(h);
        }
      }
      // Ancestors: every binary of the other policy at once, then each of the first 16 alone.
      for (size_t i = 0; i < index.binary_instances.size() && i < 16; ++i) singles.push_back({index.binary_instances[i]});
      ancestries.push_back(&index.binary_instances);
      for (const auto& single : singles) ancestries.push_back(&single);
    }
    for (const auto* ancestors : ancestries) {
      for (const std::string& binary : binaries) {
        for (const std::string& host : hosts) {
          for (const std::string& method : methods) {
            for (const std::string& path : paths) {
              // A path the enforcer never sees (its proxy normalises paths first) witnesses nothing.
              if (grant.request && !PathNotCanonical(path).empty()) continue;
              EgressIntent intent;
              intent.host = host;
              intent.port = grant.port;
              intent.binary = binary;
              intent.ancestors = *ancestors;
              if (grant.request) intent.request = EgressRequest{method, path, {}};
              EgressDecision allowed = candidate.Decide(intent);
              if (allowed.verdict != EgressVerdict::kAllow && allowed.verdict != EgressVerdict::kAudit) continue;
              EgressDecision refused = ceiling.Decide(intent);
              // Only a refusal witnesses: a ceiling that cannot decide (unsupported) is not one.
              if (refused.verdict == EgressVerdict::kAllow || refused.verdict == EgressVerdict::kUnsupported) continue;
              return Witness{std::move(intent), std::move(allowed), std::move(refused)};
            }
          }
        }
      }
    }
  }
  return std::nullopt;
}

// The widening a witness shows, in words.
static std::string DescribeWidening(const Grant& grant, const Witness& w) {
  std::string what = absl::StrCat(grant.where, ": ", w.intent.binary, " -> ", w.intent.host, ":", grant.port);
  if (!w.intent.ancestors.empty()) absl::StrAppend(&what, " (with ancestors ", absl::StrJoin(w.intent.ancestors, ", "), ")");
  if (w.intent.request) absl::StrAppend(&what, " ", w.intent.request->method, " ", w.intent.request->path);
  absl::StrAppend(&what, " is allowed by the candidate (", w.allowed.rule.empty() ? w.allowed.endpoint : w.allowed.rule,
                  ") but not by the ceiling (", w.refused.reason, ")");
  return what;
}

}  // namespace containment_model

static ContainmentResult CheckContainmentBounded(const SandboxPolicy& candidate, const SandboxPolicy& ceiling);

// Middlewares are not modelled: a ceiling's may deny what its rules allow (a fail-closed one denies whatever
// it cannot inspect), a candidate's may change a request after its rules allowed it. Decided only when both
// sides carry the same ones (or none).
static std::optional<std::string> MiddlewaresUndecided(const SandboxPolicy& candidate, const SandboxPolicy& ceiling) {
  if (candidate.network_middlewares().empty() && ceiling.network_middlewares().empty()) return std::nullopt;
  // Compared as upstream loads them (middleware.rs into_proto): an empty name is the key, and a missing
  // config an empty one.
  auto normalized = [](const std::string& id, openshell::sandbox::v1::NetworkMiddlewareConfig config) {
    if (config.name().empty()) config.set_name(id);
    config.mutable_config();
    return SerializeDeterministic(config);
  };
  bool same = candidate.network_middlewares_size() == ceiling.network_middlewares_size();
  for (const auto& [id, config] : ceiling.network_middlewares()) {
    const auto other = candidate.network_middlewares().find(id);
    same = same && other != candidate.network_middlewares().end() &&
           normalized(id, other->second) == normalized(id, config);
  }
  if (same) return std::nullopt;
  return std::string("network_middlewares differ between the candidate and the ceiling (middlewares are not "
                     "modelled: only the same set on both sides is decided)");
}

// Credential use is not part of the traffic model: an endpoint that makes the proxy sign its requests with a
// provider's keys (credential_signing), put secrets into bodies or frames (the credential rewrites), bind a
// credential, or relax the guard on uninspected credentials uses authority the same traffic without them
// does not. Its settings as one string ("" for none).
static std::string CredentialSettings(const NetworkEndpoint& ep) {
  if (ep.credential_signing().empty() && !ep.request_body_credential_rewrite() && !ep.websocket_credential_rewrite() &&
      !ep.has_credential_binding() && !ep.allow_uninspected_credentials()) {
    return "";
  }
  return absl::StrCat(ep.credential_signing(), "\n", ep.signing_service(), "\n", ep.signing_region(), "\n",
                      ep.request_body_credential_rewrite(), ep.websocket_credential_rewrite(),
                      ep.allow_uninspected_credentials(), "\n",
                      ep.has_credential_binding() ? SerializeDeterministic(ep.credential_binding()) : "");
}

// Whether `ceiling` gives endpoint `ep` of the candidate's `entry` its credential use (`settings`): an entry of
// the ceiling naming every binary `entry` names (by the same text) has an endpoint of the same host, protocol
// and settings, on all `ep`'s ports, whose path serves every request of `ep`'s — and no other L7 endpoint of
// the ceiling on the host could take those requests instead (the best path selects: policy/route_path.h).
static bool CeilingGivesCredentialUse(const SandboxPolicy& ceiling, const openshell::sandbox::v1::NetworkPolicyRule& entry,
                                      const NetworkEndpoint& ep, const std::string& settings) {
  using containment_model::Ports;
  int l7_on_host = 0;
  for (const auto& [key, theirs] : ceiling.network_policies()) {
    for (const NetworkEndpoint& other : theirs.endpoints()) {
      l7_on_host += absl::EqualsIgnoreCase(other.host(), ep.host()) && !other.protocol().empty() && other.protocol() != "tcp";
    }
  }
  if (l7_on_host > 1) return false;
  const std::vector<uint32_t> ports = Ports(ep);
  for (const auto& [key, theirs] : ceiling.network_policies()) {
    const bool same_binaries = std::all_of(entry.binaries().begin(), entry.binaries().end(), [&](const auto& binary) {
      return std::any_of(theirs.binaries().begin(), theirs.binaries().end(),
                         [&](const auto& other) { return other.path() == binary.path(); });
    });
    if (!same_binaries) continue;
    for (const NetworkEndpoint& other : theirs.endpoints()) {
      if (!absl::EqualsIgnoreCase(other.host(), ep.host()) || other.protocol() != ep.protocol() ||
          CredentialSettings(other) != settings ||
          !(other.path().empty() || other.path() == "**" || other.path() == ep.path())) {
        continue;
      }
      const std::vector<uint32_t> theirs_ports = Ports(other);
      if (std::all_of(ports.begin(), ports.end(), [&](uint32_t port) {
            return std::find(theirs_ports.begin(), theirs_ports.end(), port) != theirs_ports.end();
          })) {
        return true;
      }
    }
  }
  return false;
}

std::optional<std::string> containment_model::CredentialUseUndecided(const SandboxPolicy& candidate,
                                                                      const SandboxPolicy& ceiling, absl::string_view which) {
  for (const auto& key : SortedKeys(candidate)) {
    const auto& entry = candidate.network_policies().at(key);
    for (int i = 0; i < entry.endpoints_size(); ++i) {
      const NetworkEndpoint& ep = entry.endpoints(i);
      const std::string settings = CredentialSettings(ep);
      if (settings.empty() || CeilingGivesCredentialUse(ceiling, entry, ep, settings)) continue;
      return absl::StrCat(which, " network_policies.", key, ".endpoints[", i, "] (", ep.host(),
                          "): credential use (credential_signing, a credential rewrite or binding, or "
                          "allow_uninspected_credentials) is decided only where an entry of the ceiling for the same "
                          "binaries has an endpoint of the same host, protocol and credential settings on its ports and "
                          "paths");
    }
  }
  return std::nullopt;
}

// No exception leaves the library: the work is bounded by validation's bounds, so only the allocator
// can still throw, and then the answer fails closed (unknown is a refusal).
ContainmentResult CheckContainment(const SandboxPolicy& candidate, const SandboxPolicy& ceiling) {
  try {
    return CheckContainmentBounded(candidate, ceiling);
  } catch (const std::bad_alloc&) {
    return {Containment::kUnknown, "out of memory while checking containment"};
  }
}

static ContainmentResult CheckContainmentBounded(const SandboxPolicy& candidate, const SandboxPolicy& ceiling) {
  using namespace containment_model;  // NOLINT(google-build-using-namespace): this file is the model's home
  if (auto what = FindUnmodelled(ceiling, "ceiling")) return {Containment::kUnknown, *what};
  if (auto what = FindUnmodelled(candidate, "candidate")) return {Containment::kUnknown, *what};
  if (auto what = MiddlewaresUndecided(candidate, ceiling)) return {Containment::kUnknown, *what};
  if (auto what = CredentialUseUndecided(candidate, ceiling, "candidate")) return {Containment::kUnknown, *what};
  if (auto what = MagicLinkPath(candidate)) return {Containment::kUnknown, *what};
  if (auto what = TooManyGrants(candidate, "candidate")) return {Containment::kUnknown, *what};
  if (auto widening = FilesystemWidening(candidate, ceiling)) return {Containment::kOutside, *widening};
  if (auto widening = ProcessWidening(candidate, ceiling)) return {Containment::kOutside, *widening};

  const PolicyIndex index(ceiling);
  const PolicyIndex self(candidate);
  std::shared_ptr<const EgressPolicy> candidate_eval, ceiling_eval;  // compiled on first need
  for (const Grant& grant : GrantsOf(candidate)) {
    if (grant.request && self.NeverAllows(grant)) continue;
    if (!grant.host_glob && AlwaysRefusedHost(grant.host)) continue;  // the enforcer never connects there
    if (index.Covers(grant, self)) continue;
    if (!candidate_eval) {
      candidate_eval = EgressPolicy::Compile(candidate);
      ceiling_eval = EgressPolicy::Compile(ceiling);
    }
    if (auto witness = FindWitness(grant, *candidate_eval, *ceiling_eval, index)) {
      return {Containment::kOutside, DescribeWidening(grant, *witness)};
    }
    std::string what = grant.where;
    if (grant.request) {
      absl::StrAppend(&what, ", requests ", grant.method == kAnyMethod ? "(any method)" : grant.method, " ",
                      grant.path.all ? "**" : grant.path.glob->pattern());
    }
    return {Containment::kUnknown,
            absl::StrCat(what, ": the ceiling covers it only in part or through several rules together, which is not decided")};
  }
  return {Containment::kInside, ""};
}

}  // namespace osh::policy
