#include "policy/explain.h"

#include <algorithm>
#include <bitset>
#include <map>
#include <memory>
#include <new>
#include <set>
#include <tuple>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_join.h"
#include "policy/body_codec.h"
#include "policy/containment_model.h"
#include "policy/destination.h"

namespace osh::policy {

absl::string_view ChangeAreaName(ChangeArea area) {
  switch (area) {
    case ChangeArea::kFilesystem: return "filesystem";
    case ChangeArea::kProcess: return "process";
    case ChangeArea::kNetwork: return "network";
  }
  return "network";
}

// Helpers in a named namespace of their own: unity batches put several .cc files in one unit.
namespace explain_detail {

using namespace containment_model;  // NOLINT(google-build-using-namespace): the model explain is built on
using openshell::sandbox::v1::FilesystemPolicy;
using openshell::sandbox::v1::SandboxPolicy;

// Which side allows what a class describes: `to` for added classes, `from` for removed ones.
enum class Direction { kAdded, kRemoved };

void AssignRules(Direction direction, std::vector<std::string> allowing, std::vector<std::string> refusing,
                 ChangeClass* out) {
  if (direction == Direction::kAdded) {
    out->to_rules = std::move(allowing);
    out->from_rules = std::move(refusing);
  } else {
    out->from_rules = std::move(allowing);
    out->to_rules = std::move(refusing);
  }
}

// ---- filesystem -------------------------------------------------------------------------------------

struct FsGrant {
  std::string path;   // or kWorkdir
  std::string field;  // e.g. "filesystem.read_write[0]"
};

struct FsGrants {
  std::vector<FsGrant> write, read;  // read includes write
};

// What the supervisor grants for `policy` under one upstream version's baseline (containment_model.h):
// the listed paths, the baseline paths it adds, the workdir, or — with none of them — the whole
// filesystem, since no Landlock ruleset is applied.
FsGrants FsGrantsOf(const SandboxPolicy& policy, const FilesystemBaseline& baseline) {
  const FilesystemPolicy fs = EffectiveFilesystemOf(policy, baseline);
  FsGrants out;
  if (!LandlockApplied(fs)) {
    out.write.push_back({"/", "filesystem: no path and no workdir, so no Landlock ruleset is applied"});
    out.read = out.write;
    return out;
  }
  for (int i = 0; i < fs.read_write_size(); ++i) {
    out.write.push_back({fs.read_write(i), EffectivePathField("read_write", i, policy)});
  }
  if (fs.include_workdir()) {
    out.write.push_back({kWorkdir, policy.has_filesystem() ? "filesystem.include_workdir"
                                                           : "filesystem: none, which upstream reads as include_workdir"});
  }
  for (int i = 0; i < fs.read_only_size(); ++i) {
    out.read.push_back({fs.read_only(i), EffectivePathField("read_only", i, policy)});
  }
  out.read.insert(out.read.end(), out.write.begin(), out.write.end());
  return out;
}

bool UnderSome(absl::string_view path, const std::vector<FsGrant>& bases) {
  return std::any_of(bases.begin(), bases.end(), [&](const FsGrant& b) { return Under(path, b.path); });
}

const FsGrant* FirstMagicLink(const std::vector<FsGrant>& grants) {
  for (const FsGrant& g : grants) {
    if (MagicLink(g.path)) return &g;
  }
  return nullptr;
}

// The paths not below another of the list (the first of equal ones): the coarsest description.
std::vector<FsGrant> TopMost(const std::vector<FsGrant>& paths) {
  std::vector<FsGrant> out;
  for (size_t i = 0; i < paths.size(); ++i) {
    bool below = false;
    for (size_t j = 0; j < paths.size() && !below; ++j) {
      if (i == j || !Under(paths[i].path, paths[j].path)) continue;
      below = !Under(paths[j].path, paths[i].path) || j < i;  // strictly below, or a later duplicate
    }
    if (!below) out.push_back(paths[i]);
  }
  return out;
}

std::string Named(const FsGrant& g) { return absl::StrCat(g.field, " '", g.path, "'"); }

std::string Described(const FsGrant& g) {
  if (g.path == kWorkdir) return "the workdir (the supervisor's: /sandbox by default)";
  return absl::StrCat(g.path, g.path == "/" ? " (everything)" : " and below");
}

// The part of `base` that `refusing` already grants (paths below it), named.
std::vector<std::string> GrantedBelow(const std::string& base, const std::vector<FsGrant>& refusing) {
  std::vector<std::string> out;
  for (const FsGrant& g : refusing) {
    if (Under(g.path, base)) out.push_back(Named(g));
  }
  return out;
}

// The classes one side grants and the other does not, under one baseline; undecided ones (a magic link on
// either side) go to `unknown`.
void FilesystemDeltaUnder(const FsGrants& allowing, const FsGrants& refusing, Direction direction,
                          std::vector<ChangeClass>* changed, std::vector<ChangeClass>* unknown) {
  const FsGrant* refusing_link = FirstMagicLink(refusing.read);
  std::set<std::string> reported;
  auto add = [&](const FsGrant& g, absl::string_view access, std::vector<std::string> already) {
    ChangeClass c;
    c.area = ChangeArea::kFilesystem;
    reported.insert(g.path);
    if (MagicLink(g.path) || refusing_link != nullptr) {
      const FsGrant& link = MagicLink(g.path) ? g : *refusing_link;
      c.description = absl::StrCat("may be ", direction == Direction::kAdded ? "added" : "removed", ": ", access, " ",
                                   Described(g), " (", Named(link), ": ", kMagicLinkWhy, ")");
      AssignRules(direction, {Named(g)}, {}, &c);
      unknown->push_back(std::move(c));
      return;
    }
    c.partial = !already.empty();
    c.description = absl::StrCat(access, " ", Described(g), c.partial ? " (in part)" : "");
    c.fs_path = g.path;
    c.fs_access = std::string(access);
    if (already.empty()) already.push_back(absl::StrCat("(no ", access == "read" ? "readable" : "writable", " path covers it)"));
    AssignRules(direction, {Named(g)}, std::move(already), &c);
    changed->push_back(std::move(c));
  };
  // A magic link on the allowing side decides nothing wherever it is listed (below another listed path
  // too): unless the refusing side lists the same path with the same access, it is unknown.
  auto has_path = [](const std::vector<FsGrant>& grants, absl::string_view path) {
    return std::any_of(grants.begin(), grants.end(),
                       [&](const FsGrant& g) { return Under(g.path, path) && Under(path, g.path); });
  };
  for (const FsGrant& g : allowing.read) {
    if (!MagicLink(g.path) || reported.contains(g.path)) continue;
    const bool writes = has_path(allowing.write, g.path);
    if (has_path(refusing.read, g.path) && (!writes || has_path(refusing.write, g.path))) continue;
    add(g, writes ? "read-write" : "read", {});
  }
  for (const FsGrant& g : TopMost(allowing.write)) {
    if (reported.contains(g.path) || UnderSome(g.path, refusing.write)) continue;
    const bool read_too = !UnderSome(g.path, refusing.read);
    std::vector<std::string> already = GrantedBelow(g.path, read_too ? refusing.read : refusing.write);
    add(g, read_too ? "read-write" : "write", std::move(already));
  }
  for (const FsGrant& g : TopMost(allowing.read)) {
    if (reported.contains(g.path) || UnderSome(g.path, refusing.read)) continue;
    add(g, "read", GrantedBelow(g.path, refusing.read));
  }
}

// Under each upstream version's baseline; a class seen under some versions only says so.
void FilesystemDelta(const SandboxPolicy& allowing, const SandboxPolicy& refusing, Direction direction,
                     std::vector<ChangeClass>* changed, std::vector<ChangeClass>* unknown) {
  const auto baselines = FilesystemBaselines();
  std::vector<std::pair<ChangeClass, size_t>> seen_changed, seen_unknown;  // class, versions it is seen under
  auto merge = [](std::vector<ChangeClass>&& found, std::vector<std::pair<ChangeClass, size_t>>* into) {
    for (ChangeClass& c : found) {
      auto same = std::find_if(into->begin(), into->end(), [&](const auto& s) {
        return s.first.description == c.description && s.first.fs_path == c.fs_path && s.first.fs_access == c.fs_access;
      });
      if (same != into->end()) {
        ++same->second;
      } else {
        into->emplace_back(std::move(c), 1);
      }
    }
  };
  for (const FilesystemBaseline& baseline : baselines) {
    std::vector<ChangeClass> found_changed, found_unknown;
    FilesystemDeltaUnder(FsGrantsOf(allowing, baseline), FsGrantsOf(refusing, baseline), direction, &found_changed,
                         &found_unknown);
    merge(std::move(found_changed), &seen_changed);
    merge(std::move(found_unknown), &seen_unknown);
  }
  auto emit = [&](std::vector<std::pair<ChangeClass, size_t>>& seen, std::vector<ChangeClass>* out) {
    for (auto& [c, versions] : seen) {
      if (versions < baselines.size()) {
        absl::StrAppend(&c.description, " (with the baseline paths of some upstream supervisor versions)");
      }
      out->push_back(std::move(c));
    }
  };
  emit(seen_changed, changed);
  emit(seen_unknown, unknown);
}

// ---- process identity -------------------------------------------------------------------------------

void ProcessDelta(const SandboxPolicy& from, const SandboxPolicy& to, ChangeExplanation* out) {
  auto identity = [&](absl::string_view field, absl::string_view what, const std::string& old_value,
                      const std::string& new_value) {
    if (old_value == new_value) return;
    auto make = [&](const std::string& value, Direction direction) {
      ChangeClass c;
      c.area = ChangeArea::kProcess;
      c.description = absl::StrCat("run as ", what, " ", value.empty() ? "(the image's default)" : absl::StrCat("'", value, "'"));
      c.process_field = std::string(field);
      c.process_value = value;
      AssignRules(direction, {absl::StrCat(field, " '", value, "'")},
                  {absl::StrCat(field, " '", direction == Direction::kAdded ? old_value : new_value, "'")}, &c);
      return c;
    };
    out->added.push_back(make(new_value, Direction::kAdded));
    out->removed.push_back(make(old_value, Direction::kRemoved));
  };
  identity("process.run_as_user", "user", from.process().run_as_user(), to.process().run_as_user());
  identity("process.run_as_group", "group", from.process().run_as_group(), to.process().run_as_group());
  // A group without a user: supervisors before upstream's identity fix keep their own user (root) for it
  // (containment: ProcessWidening) — not told by the user's class above (review 101).
  const auto group_only = [](const SandboxPolicy& p) {
    return p.process().run_as_user().empty() && !p.process().run_as_group().empty();
  };
  if (group_only(to) && !(group_only(from) && from.process().run_as_group() == to.process().run_as_group())) {
    ChangeClass c;
    c.area = ChangeArea::kProcess;
    c.description = absl::StrCat("run as the supervisor's own user (root) on supervisors before upstream's identity fix: "
                                 "process.run_as_group '", to.process().run_as_group(), "' without run_as_user");
    out->unknown.push_back(std::move(c));
  }
  const bool from_hard = from.landlock().compatibility() == "hard_requirement";
  const bool to_hard = to.landlock().compatibility() == "hard_requirement";
  if (from_hard != to_hard) {
    const SandboxPolicy& weaker = from_hard ? to : from;
    ChangeClass c;
    c.area = ChangeArea::kProcess;
    c.description = "run without Landlock where the kernel lacks it";
    c.process_field = "landlock.compatibility";
    c.process_value = weaker.landlock().compatibility();
    AssignRules(from_hard ? Direction::kAdded : Direction::kRemoved,
                {absl::StrCat("landlock.compatibility '", weaker.landlock().compatibility(), "'")},
                {"landlock.compatibility 'hard_requirement'"}, &c);
    (from_hard ? out->added : out->removed).push_back(std::move(c));
  }
}

// ---- network ----------------------------------------------------------------------------------------

// The keys of two maps whose values differ (or exist on one side only), by their canonical bytes.
template <typename Map>
std::set<std::string> ChangedKeys(const Map& a, const Map& b) {
  std::set<std::string> changed;
  for (const auto& [key, value] : a) {
    auto it = b.find(key);
    if (it == b.end() || SerializeDeterministic(value) != SerializeDeterministic(it->second)) changed.insert(key);
  }
  for (const auto& [key, value] : b) {
    if (!a.contains(key)) changed.insert(key);
  }
  return changed;
}

// The network entries that can decide a changed request. An intent's decision depends only on the
// entries with an endpoint serving its host:port (their content and key order), so a decision can change
// only where a changed entry (different, or on one side only) serves the host:port. Keeping the changed
// entries and every entry with an endpoint that may serve a host:port of theirs keeps, for each such
// intent, every entry that serves it: the kept parts of the two policies decide those intents exactly
// as the whole policies do, and every other intent is decided the same by both.
class RelevantEntries {
 public:
  RelevantEntries(const SandboxPolicy& from, const SandboxPolicy& to)
      : keys_(ChangedKeys(from.network_policies(), to.network_policies())) {
    for (const SandboxPolicy* p : {&from, &to}) {
      for (const auto& key : keys_) {
        auto it = p->network_policies().find(key);
        if (it == p->network_policies().end()) continue;
        for (const auto& ep : it->second.endpoints()) {
          Changed changed{absl::AsciiStrToLower(ep.host()), std::make_shared<std::bitset<65536>>()};
          for (uint32_t port : Ports(ep)) changed.ports->set(port & 0xFFFF);
          endpoints_.push_back(std::move(changed));
        }
      }
    }
  }
  bool empty() const { return keys_.empty(); }

  // `policy` with only the relevant entries (its other fields as they are).
  SandboxPolicy Of(const SandboxPolicy& policy) const {
    SandboxPolicy out = policy;
    auto* entries = out.mutable_network_policies();
    for (auto it = entries->begin(); it != entries->end();) {
      it = Relevant(it->first, it->second) ? std::next(it) : entries->erase(it);
    }
    return out;
  }

 private:
  struct Changed {
    std::string host;
    std::shared_ptr<std::bitset<65536>> ports;
  };

  // Endpoints × changed endpoints × ports at most (each ≤ 1024, 1024 and 256 by validation), hosts first.
  bool Relevant(const std::string& key, const openshell::sandbox::v1::NetworkPolicyRule& entry) const {
    if (keys_.contains(key)) return true;
    for (const auto& ep : entry.endpoints()) {
      const std::string host = absl::AsciiStrToLower(ep.host());
      const std::vector<uint32_t> ports = Ports(ep);
      for (const Changed& changed : endpoints_) {
        // A hostless endpoint (allowed_ips) serves any host on its ports.
        if (!host.empty() && !changed.host.empty() && !HostPatternsIntersect(host, changed.host)) continue;
        if (std::any_of(ports.begin(), ports.end(), [&](uint32_t p) { return changed.ports->test(p & 0xFFFF); })) {
          return true;
        }
      }
    }
    return false;
  }

  std::set<std::string> keys_;
  std::vector<Changed> endpoints_;
};

std::string AllowingRule(const EgressDecision& d) {
  return absl::StartsWith(d.rule, "network_policies.") ? d.rule : d.endpoint;
}

std::string RefusingRule(const EgressDecision& d) {
  if (absl::StartsWith(d.rule, "network_policies.")) return absl::StrCat(d.rule, ": ", d.reason);
  if (!d.endpoint.empty()) return absl::StrCat(d.endpoint, ": ", d.reason);
  // Which binary missed is what a diff of authority needs; the hint upstream adds is advice for a sandbox's logs.
  return absl::StrCat("(no rule: ", absl::StrReplaceAll(d.reason, {{kBinaryMissHint, ""}}), ")");
}

// Grants whose differences merge into one class: the same endpoint and path pattern, one verdict.
struct MergedClass {
  bool decided = true;
  bool partial = false;
  bool every_request = false;  // a connection class with its uninspected requests folded in
  const Grant* first = nullptr;
  std::vector<std::string> methods, binaries;
  std::vector<uint32_t> ports;
  std::optional<Witness> witness;
  std::vector<std::string> allowing, refusing;
  std::vector<NetworkShare> shares;
};

template <typename T>
void AddOnce(std::vector<T>* list, const T& value) {
  if (std::find(list->begin(), list->end(), value) == list->end()) list->push_back(value);
}

std::string DescribeMerged(const MergedClass& m) {
  const Grant& g = *m.first;
  const std::string where = absl::StrCat(g.host, ":", absl::StrJoin(m.ports, ","));
  const std::string who = absl::StrCat(" for ", absl::StrJoin(m.binaries, ", "));
  if (!g.request) return absl::StrCat("connect to ", where, who);
  if (g.uninspected) return absl::StrCat("any request to ", where, " (not inspected)", who);
  std::vector<std::string> methods;
  for (const auto& method : m.methods) methods.push_back(method == kAnyMethod ? "any method" : method);
  return absl::StrCat(absl::StrJoin(methods, "|"), " ", where, " ", g.path.all ? "** (any path)" : g.path.Text(), who);
}

void NetworkDirection(const SandboxPolicy& allowing, const SandboxPolicy& refusing, Direction direction,
                      std::vector<ChangeClass>* changed, std::vector<ChangeClass>* unknown) {
  const absl::string_view verb = direction == Direction::kAdded ? "newly allowed" : "no longer allowed";
  const SandboxPolicy nothing;
  const PolicyIndex allowing_index(allowing), refusing_index(refusing), empty_index(nothing);
  std::shared_ptr<const EgressPolicy> allowing_eval, refusing_eval;  // compiled on first need
  const std::vector<Grant> grants = GrantsOf(allowing);
  std::vector<MergedClass> merged;
  std::map<std::tuple<bool, bool, std::string, int, std::string, bool, bool>, size_t> by_key;
  for (const Grant& grant : grants) {
    if (grant.request && allowing_index.NeverAllows(grant)) continue;
    if (!grant.host_glob && AlwaysRefusedHost(grant.host)) continue;  // the enforcer never connects there
    if (refusing_index.Covers(grant, allowing_index)) continue;
    if (!allowing_eval) {
      allowing_eval = EgressPolicy::Compile(allowing);
      refusing_eval = EgressPolicy::Compile(refusing);
    }
    std::optional<Witness> witness = FindWitness(grant, *allowing_eval, *refusing_eval, refusing_index);
    const bool decided = witness.has_value();
    const bool partial = decided && !(allowing_index.Covers(grant, empty_index) && !refusing_index.MayAllowAny(grant));
    // Rules of one endpoint on the same path merge (a preset's GET, HEAD and OPTIONS are one class).
    const auto key = std::make_tuple(decided, partial, grant.entry, grant.endpoint, grant.request ? grant.path.Text() : "",
                                     grant.request, grant.uninspected);
    auto [it, inserted] = by_key.emplace(key, merged.size());
    if (inserted) {
      MergedClass m;
      m.decided = decided;
      m.partial = partial;
      m.first = &grant;
      merged.push_back(std::move(m));
    }
    MergedClass& m = merged[it->second];
    AddOnce(&m.methods, grant.method);
    AddOnce(&m.binaries, grant.binary);
    AddOnce(&m.ports, grant.port);
    m.shares.push_back(NetworkShare{grant.binary, grant.host, grant.port, grant.request, grant.uninspected,
                                    grant.method, grant.request ? grant.path.Text() : ""});
    if (decided) {  // each grant's rules are named; the first grant's witness stands for the class
      AddOnce(&m.allowing, AllowingRule(witness->allowed));
      AddOnce(&m.refusing, RefusingRule(witness->refused));
      if (inserted) m.witness = std::move(witness);
    } else {
      AddOnce(&m.allowing, grant.rule_label.empty() ? grant.endpoint_label : grant.rule_label);
    }
  }
  // A connection class and the uninspected-requests class of the same endpoint say one thing: fold.
  std::vector<bool> folded(merged.size(), false);
  for (size_t u = 0; u < merged.size(); ++u) {
    const MergedClass& requests = merged[u];
    if (!requests.first->uninspected) continue;
    for (size_t c = 0; c < merged.size(); ++c) {
      MergedClass& connection = merged[c];
      if (connection.first->request || connection.decided != requests.decided || connection.partial != requests.partial ||
          connection.first->entry != requests.first->entry || connection.first->endpoint != requests.first->endpoint ||
          connection.binaries != requests.binaries || connection.ports != requests.ports) {
        continue;
      }
      folded[u] = true;
      for (const auto& r : requests.allowing) AddOnce(&connection.allowing, r);
      for (const auto& r : requests.refusing) AddOnce(&connection.refusing, r);
      connection.shares.insert(connection.shares.end(), requests.shares.begin(), requests.shares.end());
      connection.every_request = true;
      break;
    }
  }
  for (size_t i = 0; i < merged.size(); ++i) {
    if (folded[i]) continue;
    MergedClass& m = merged[i];
    ChangeClass c;
    c.area = ChangeArea::kNetwork;
    c.shares = std::move(m.shares);
    std::string description = DescribeMerged(m);
    if (m.every_request) absl::StrAppend(&description, ", every request (not inspected)");
    if (!m.decided) {
      c.description = absl::StrCat("may be ", verb, ": ", description,
                                   " (the other policy covers it only in part or through several rules together, which is not decided)");
      AssignRules(direction, m.allowing, {}, &c);
      unknown->push_back(std::move(c));
      continue;
    }
    c.partial = m.partial;
    c.description = absl::StrCat(description, m.partial ? " (in part)" : "");
    c.intent = std::move(m.witness->intent);
    AssignRules(direction, std::move(m.allowing), std::move(m.refusing), &c);
    changed->push_back(std::move(c));
  }
}

void NetworkDelta(const SandboxPolicy& whole_from, const SandboxPolicy& whole_to, ChangeExplanation* out) {
  const RelevantEntries relevant(whole_from, whole_to);
  const bool middlewares_equal = ChangedKeys(whole_from.network_middlewares(), whole_to.network_middlewares()).empty();
  if (relevant.empty() && middlewares_equal) return;  // the same network rules decide the same
  // Only the entries that can decide a changed request are compared (and must be modelled).
  const SandboxPolicy from = relevant.Of(whole_from), to = relevant.Of(whole_to);
  auto unmodelled = FindUnmodelled(from, "from");
  if (!unmodelled) unmodelled = FindUnmodelled(to, "to");
  if (!unmodelled && !middlewares_equal) unmodelled = "network_middlewares differ (middlewares are not modelled)";
  // Credential use the policy before did not give (signing with a provider's keys, secrets put into bodies):
  // authority the same traffic without it does not have (review 101).
  if (!unmodelled) unmodelled = CredentialUseUndecided(to, from, "to");
  if (!unmodelled) unmodelled = TooManyGrants(from, "from");
  if (!unmodelled) unmodelled = TooManyGrants(to, "to");
  if (unmodelled) {
    ChangeClass c;
    c.description = absl::StrCat("network requests may be newly allowed or no longer allowed, not decided: ", *unmodelled);
    out->unknown.push_back(std::move(c));
    return;
  }
  NetworkDirection(to, from, Direction::kAdded, &out->added, &out->unknown);
  NetworkDirection(from, to, Direction::kRemoved, &out->removed, &out->unknown);
  // An entry left with endpoints and no binaries: decided above as upstream's runtime grants it (to no
  // process), but upstream's merge rules and docs read an empty list as every binary (review 101).
  for (const auto& key : SortedKeys(to)) {
    const auto& entry = to.network_policies().at(key);
    const auto before = from.network_policies().find(key);
    const bool was_empty = before != from.network_policies().end() && before->second.binaries_size() == 0;
    if (entry.binaries_size() > 0 || entry.endpoints_size() == 0 || was_empty) continue;
    ChangeClass c;
    c.description = absl::StrCat("network requests may be newly allowed to every binary: network_policies.", key, ": ",
                                 kNoBinariesWhy);
    out->unknown.push_back(std::move(c));
  }
}

ChangeExplanation ExplainBounded(const SandboxPolicy& from, const SandboxPolicy& to) {
  ChangeExplanation out;
  FilesystemDelta(to, from, Direction::kAdded, &out.added, &out.unknown);
  FilesystemDelta(from, to, Direction::kRemoved, &out.removed, &out.unknown);
  ProcessDelta(from, to, &out);
  NetworkDelta(from, to, &out);
  return out;
}

}  // namespace explain_detail

ChangeExplanation ExplainChange(const openshell::sandbox::v1::SandboxPolicy& from,
                                const openshell::sandbox::v1::SandboxPolicy& to) {
  try {
    return explain_detail::ExplainBounded(from, to);
  } catch (const std::bad_alloc&) {
    ChangeExplanation out;
    ChangeClass c;
    c.description = "out of memory while explaining the change: nothing is decided";
    out.unknown.push_back(std::move(c));
    return out;
  }
}

FilesystemAccess FilesystemAccessOf(const openshell::sandbox::v1::SandboxPolicy& policy, absl::string_view path,
                                    size_t baseline) {
  const auto baselines = containment_model::FilesystemBaselines();
  if (baseline >= baselines.size()) return {};
  const explain_detail::FsGrants grants = explain_detail::FsGrantsOf(policy, baselines[baseline]);
  return {explain_detail::UnderSome(path, grants.read), explain_detail::UnderSome(path, grants.write)};
}

FilesystemAccess FilesystemAccessOf(const openshell::sandbox::v1::SandboxPolicy& policy, absl::string_view path) {
  FilesystemAccess any;
  for (const auto& baseline : containment_model::FilesystemBaselines()) {
    explain_detail::FsGrants grants = explain_detail::FsGrantsOf(policy, baseline);
    for (auto* list : {&grants.read, &grants.write}) {
      for (auto& g : *list) {
        if (g.path == containment_model::kWorkdir) g.path = kDefaultWorkdir;
      }
    }
    any.read = any.read || explain_detail::UnderSome(path, grants.read);
    any.write = any.write || explain_detail::UnderSome(path, grants.write);
  }
  return any;
}

namespace {

// Whether `text` matches `pattern` with `delimiter`; a pattern without wildcards is the exact text.
bool ShareMatches(const std::string& pattern, char delimiter, absl::string_view text) {
  if (pattern.find_first_of("*?") == std::string::npos) return pattern == text;
  auto glob = Glob::Parse(pattern, delimiter);
  return glob.ok() && glob->Matches(text);
}

bool ShareDescribes(const NetworkShare& share, const EgressIntent& intent) {
  if (share.port != intent.port) return false;
  const std::string host = absl::AsciiStrToLower(intent.host);
  // A host without `*` is an exact name even with `?` (policy/glob.h).
  if (share.host.find('*') == std::string::npos ? share.host != host : !ShareMatches(share.host, '.', host)) return false;
  bool process = ShareMatches(share.binary, '/', intent.binary);
  for (size_t a = 0; !process && a < intent.ancestors.size(); ++a) process = ShareMatches(share.binary, '/', intent.ancestors[a]);
  if (!process) return false;
  if (!intent.request) return !share.request;
  if (!share.request) return false;
  if (share.uninspected) return true;
  return (share.method == containment_model::kAnyMethod || containment_model::MethodCovers(share.method, intent.request->method)) &&
         (share.path == "**" || ShareMatches(share.path, '/', intent.request->path));
}

}  // namespace

bool ClassDescribes(const ChangeClass& c, const EgressIntent& intent) {
  if (c.area != ChangeArea::kNetwork) return false;
  return std::any_of(c.shares.begin(), c.shares.end(), [&](const NetworkShare& s) { return ShareDescribes(s, intent); });
}

}  // namespace osh::policy
