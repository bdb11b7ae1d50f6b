// The model under containment (policy/containment.h) and change explanation (policy/explain.h): what of
// a policy's network rules is decided exactly, a policy's grants as symbolic (binary, host, port, method,
// path) sets, an index that proves one policy allows every request of another's grant, and the search
// for a concrete witness intent. One home for this algebra: containment and explain both use it.
//
// Preconditions: every policy given here is valid (ValidatePolicy) and has no construct FindUnmodelled
// names (the index parses its globs assuming both). Pure; an index is immutable once built and may be
// shared across threads.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "openshell/sandbox/v1/sandbox.pb.h"
#include "policy/egress.h"
#include "policy/glob.h"

namespace osh::policy::containment_model {

inline constexpr absl::string_view kAnyMethod = "";  // a symbolic method: every method there is

std::vector<std::string> SortedKeys(const openshell::sandbox::v1::SandboxPolicy& policy);
std::vector<uint32_t> Ports(const openshell::sandbox::v1::NetworkEndpoint& ep);

// The first network construct of `policy` that is not decided (GraphQL, WebSocket, JSON-RPC, MCP, SQL,
// explicit tcp, query matchers, allowed_ips, tls, non-enforced REST, glob syntax beyond *, ** and ?),
// named with `which` ("ceiling", "candidate", "from", "to") and its field path.
std::optional<std::string> FindUnmodelled(const openshell::sandbox::v1::SandboxPolicy& policy, absl::string_view which);

// The first endpoint of `candidate` whose credential use (credential_signing, a credential rewrite or
// binding, allow_uninspected_credentials) `ceiling` does not give the same binaries on the same host,
// protocol, ports and paths (docs/decisions-and-ceilings.md), named with `which`; nothing when every one's is.
std::optional<std::string> CredentialUseUndecided(const openshell::sandbox::v1::SandboxPolicy& candidate,
                                                  const openshell::sandbox::v1::SandboxPolicy& ceiling,
                                                  absl::string_view which);

// Filesystem paths by prefix: `path` is `base` or below it (trailing slashes ignored; "/" is above all).
bool Under(absl::string_view path, absl::string_view base);
bool UnderAny(absl::string_view path, const google::protobuf::RepeatedPtrField<std::string>& bases);

// ---- the filesystem a supervisor applies (upstream's Landlock set-up), for containment and explain alike ----
// Upstream reads a policy without a filesystem section as include_workdir: true; once a policy has network
// entries (proxy mode) it adds the baseline paths the policy does not list, and which ones changed between
// its versions: each version's baseline is listed, oldest first. A policy with no path and no workdir gets
// no Landlock ruleset at all (the whole filesystem). Not modelled: a GPU host's paths, whether a listed path
// exists in the image (docs/decisions-and-ceilings.md, "What inside means").
struct FilesystemBaseline {
  std::vector<const char*> read_only, read_write;
};
absl::Span<const FilesystemBaseline> FilesystemBaselines();
openshell::sandbox::v1::FilesystemPolicy EffectiveFilesystemOf(const openshell::sandbox::v1::SandboxPolicy& policy,
                                                               const FilesystemBaseline& baseline);
// The field path of entry `i` of an effective filesystem's `list` ("read_only" or "read_write") of
// `policy`: "filesystem.read_write[2]" for a listed path, or naming a baseline path the supervisor adds.
std::string EffectivePathField(const char* list, int i, const openshell::sandbox::v1::SandboxPolicy& policy);
// Whether a Landlock ruleset is applied for an effective filesystem.
bool LandlockApplied(const openshell::sandbox::v1::FilesystemPolicy& fs);
// The supervisor's workdir (--workdir, or the image's; /sandbox by default), granted read-write by
// include_workdir, as a path of this model: no policy path is it or below it (policy paths are absolute),
// and it is below "/" only.
inline constexpr char kWorkdir[] = "<workdir>";
// A listed path through which Landlock, which opens each path following symlinks, may reach another part
// of the filesystem whatever the image holds: procfs's and /dev/fd's magic links (/proc/self/root is "/").
bool MagicLink(absl::string_view path);
// Why an entry with endpoints and no binaries is not decided (containment, explain).
inline constexpr char kNoBinariesWhy[] =
    "no binaries (upstream's runtime grants such an entry to no process, its merge rules and docs to every binary: "
    "not decided)";

inline constexpr char kMagicLinkWhy[] =
    "below /proc or /dev/fd a path may be a link to anywhere (/proc/self/root is /), not decided";

// A REST path pattern: `**` (everything) or a '/'-glob.
struct PathPattern {
  bool all = false;
  std::shared_ptr<const Glob> glob;
  static PathPattern Of(absl::string_view pattern);
  bool Covers(const PathPattern& other) const;
  bool Intersects(const PathPattern& other) const;
  std::string Text() const { return all ? "**" : glob->pattern(); }
};

struct MethodRule {
  std::string method;
  PathPattern path;
};

struct IndexedEndpoint {
  size_t entry = 0;
  std::string host;
  std::optional<Glob> host_glob;
  std::vector<uint32_t> ports;
  bool rest = false;
  std::optional<PathPattern> scope;
  bool route_covers_scope = true;  // policy/route_path.h RouteCoversScope of its `path`
  std::vector<MethodRule> allow;
  std::vector<MethodRule> deny;
};

struct IndexedEntry {
  absl::flat_hash_set<std::string> exact_binaries;
  std::vector<Glob> glob_binaries;
};

// One thing a policy allows, symbolically: a process (exact path or glob), a host (exact or glob), a
// port, and optionally requests (a method or kAnyMethod, and a path pattern).
struct Grant {
  std::string binary;
  std::shared_ptr<const Glob> binary_glob;
  std::string host;  // lower-cased
  std::shared_ptr<const Glob> host_glob;
  uint32_t port = 0;
  bool request = false;
  bool uninspected = false;  // every request, because the endpoint has no L7 protocol
  std::string method;        // kAnyMethod for every method
  PathPattern path;
  std::string where;     // the endpoint (and binary) it comes from, for messages
  std::string entry;     // the network_policies key
  int endpoint = 0;      // index in the entry's endpoints
  std::string endpoint_label;  // as EgressDecision::endpoint names it
  std::string rule_label;      // as EgressDecision::rule names it; "" for the connection itself
};

bool MethodCovers(absl::string_view rule, absl::string_view method);
bool MethodMayMatch(absl::string_view rule, absl::string_view method);

// A policy's network rules, indexed for proofs about grants (of this policy or another).
class PolicyIndex {
 public:
  explicit PolicyIndex(const openshell::sandbox::v1::SandboxPolicy& policy);

  // Concrete instances where this policy's rules begin and end (witness search material).
  std::vector<std::string> binary_instances;
  std::vector<std::string> rule_methods;
  std::vector<std::string> rule_paths;
  std::vector<std::string> host_instances;

  // Proven: this policy allows every concrete intent of `grant` (any ancestors) that `self` (the
  // grant's own policy's index) does not deny itself.
  bool Covers(const Grant& grant, const PolicyIndex& self) const;
  // Proven: this policy denies `rule`'s requests on `grant`'s connection for every process that the
  // other policy's `entry` applies to.
  bool DeniesWhenever(const Grant& grant, const IndexedEntry& entry, const MethodRule& rule) const;
  // Proven: this policy allows no request of `grant` (see containment.cc).
  bool NeverAllows(const Grant& grant) const;
  // False only when proven that this policy allows no intent of `grant`, whatever the process's
  // ancestors: no endpoint may serve its host:port, or (for requests) none has an allow rule that may
  // meet its method and path while every one that may serve it inspects requests.
  bool MayAllowAny(const Grant& grant) const;

 private:
  template <typename F>
  void ForEachCandidate(const Grant& grant, F&& f) const;
  static bool HostCovers(const IndexedEndpoint& ep, const Grant& grant);
  static bool CoversEntry(const IndexedEntry& mine, const IndexedEntry& other);
  static bool BinaryCovers(const IndexedEntry& entry, const Grant& grant);

  std::vector<IndexedEntry> entries_;
  std::vector<IndexedEndpoint> endpoints_;
  absl::flat_hash_map<std::string, std::vector<size_t>> exact_;
  std::vector<size_t> wildcard_;
};

// Every grant of `policy`, in key, endpoint, binary, port, rule order.
std::vector<Grant> GrantsOf(const openshell::sandbox::v1::SandboxPolicy& policy);
// GrantsOf(policy).size(), counted without building them (per endpoint: the entry's binaries × the
// ports × the connection, plus every request when not inspected, plus one grant per REST allow rule's
// method and HEAD beside GET). A valid policy can reach tens of millions (1024 binaries × 256 ports × 256
// rules): past kMaxGrants containment and explain answer "not decided" rather than build them (each grant
// is a few hundred bytes and a search).
uint64_t GrantBound(const openshell::sandbox::v1::SandboxPolicy& policy);
inline constexpr uint64_t kMaxGrants = 200000;
// The "not decided" text for a policy past kMaxGrants, naming `which` ("candidate", "from", "to").
std::optional<std::string> TooManyGrants(const openshell::sandbox::v1::SandboxPolicy& policy, absl::string_view which);

// A concrete intent inside `grant` that `allowing` allows (or audits) and `refusing` does not allow,
// with both decisions; nullopt when the search finds none. `index` is `refusing`'s index.
struct Witness {
  EgressIntent intent;
  EgressDecision allowed;
  EgressDecision refused;
};
std::optional<Witness> FindWitness(const Grant& grant, const EgressPolicy& allowing, const EgressPolicy& refusing,
                                   const PolicyIndex& index);

}  // namespace osh::policy::containment_model
