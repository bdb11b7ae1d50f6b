// The exact authority a change adds (and takes away): every class of request that one policy allows and
// the other does not, in both directions, each with a concrete witness and the rules of each side that
// decide it — filesystem (path × read/write), process identity, network (binary × host × port × method ×
// path, where modelled). Classes are a policy's own rules (an endpoint, an allow rule, a filesystem path)
// merged over its binaries, ports and the methods of rules on the same path, never concrete requests one by one.
//
// Exactness. Every witness is judged by the egress evaluator (policy/egress.h) and the filesystem rule
// below: an `added` witness is allowed by `to` and denied by `from`, a `removed` one the reverse. A class
// is `partial` unless proven that the allowing side allows all of it and the other side none of it
// (then every request of the class changes). Where the model of policy/containment_model.h does not
// decide (GraphQL, WebSocket, JSON-RPC, MCP, SQL, explicit tcp, query matchers, allowed_ips, tls,
// non-enforced REST, network_middlewares, a rule covered only by several rules of the other side
// together), the answer is an `unknown` class naming why — never a guess. Only the entries that can
// decide a changed request are compared: the changed ones and those serving a host:port of theirs.
//
// Witness processes have no ancestors unless one is needed (then the witness names them): a process's
// ancestors are unbounded, so proofs assume the worst case, as containment does.
//
// Pure (no I/O, no clock); thread-safe (no shared state). Both policies must be valid (ValidatePolicy).
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "openshell/sandbox/v1/sandbox.pb.h"
#include "policy/egress.h"

namespace osh::policy {

enum class ChangeArea { kFilesystem, kProcess, kNetwork };
absl::string_view ChangeAreaName(ChangeArea area);  // "filesystem", "process", "network"

// One rule's share of a network class: what its description is made of, for ClassDescribes. A request
// share (`request`) is one method on one path glob (`**`: any path), or every request (`uninspected`).
struct NetworkShare {
  std::string binary;  // exact path or glob
  std::string host;    // lower-cased; a glob when it has `*`
  uint32_t port = 0;
  bool request = false;
  bool uninspected = false;
  std::string method;  // with `request`: "*" any method
  std::string path;    // with `request`: a path glob
};

struct ChangeClass {
  ChangeArea area = ChangeArea::kNetwork;
  std::string description;  // e.g. "GET|HEAD api.github.com:443/repos/** for /usr/bin/gh"
  bool partial = false;     // only some requests of the description change (see above)
  // What each side says: the rule (or endpoint, or filesystem field) that allows, or why it refuses.
  std::vector<std::string> from_rules;
  std::vector<std::string> to_rules;
  // The witness: network (an egress intent), filesystem (path and "read", "write" or "read-write"), or
  // process (the field and the value it takes). Unknown classes have none.
  std::optional<EgressIntent> intent;
  std::string fs_path, fs_access;
  std::string process_field, process_value;
  // Network classes (decided or not): the rule shares merged into the class.
  std::vector<NetworkShare> shares;
};

// Whether `intent` is one of the requests a network class describes: some share's binary is the intent's
// executable or one of its ancestors, its host and port are the intent's, and — for an intent with a
// request — its method and path are the request's (or it lets every request through); an intent without
// a request is a connection, of a connection share. A superset test: a `partial` class describes more than
// changes. False for other areas and for the unknown classes that name no rule.
bool ClassDescribes(const ChangeClass& c, const EgressIntent& intent);

struct ChangeExplanation {
  std::vector<ChangeClass> added;    // allowed by `to`, not by `from`
  std::vector<ChangeClass> removed;  // allowed by `from`, not by `to`
  std::vector<ChangeClass> unknown;  // not decided: may be added or removed (the description says which)
  bool empty() const { return added.empty() && removed.empty() && unknown.empty(); }
};

// Deterministic: the same pair gives the same classes in the same order. ExplainChange(a, b).added and
// ExplainChange(b, a).removed are the same classes. Never throws (out of memory gives an unknown class).
ChangeExplanation ExplainChange(const openshell::sandbox::v1::SandboxPolicy& from,
                                const openshell::sandbox::v1::SandboxPolicy& to);

// What a policy lets the sandbox do at a filesystem path (by prefix), as the supervisor applies it
// (containment_model.h): read under read_only or read_write paths, write under read_write, with the
// baseline paths proxy mode adds; include_workdir (or no filesystem section) grants the workdir, the path
// containment_model::kWorkdir ("<workdir>": the supervisor's, /sandbox by default); with no path and no
// workdir, no Landlock ruleset: everything. Under one upstream version's baseline (an index into
// containment_model::FilesystemBaselines(); none past its end), or — without one, as `policyctl decide
// --fs-path` asks — under any of them (what some supervisor version grants) with the workdir taken as
// upstream's default, kDefaultWorkdir. Paths below /proc or /dev/fd the policy lists are taken as written
// (explain calls them unknown).
inline constexpr char kDefaultWorkdir[] = "/sandbox";
struct FilesystemAccess {
  bool read = false;
  bool write = false;
};
FilesystemAccess FilesystemAccessOf(const openshell::sandbox::v1::SandboxPolicy& policy, absl::string_view path,
                                    size_t baseline);
FilesystemAccess FilesystemAccessOf(const openshell::sandbox::v1::SandboxPolicy& policy, absl::string_view path);

}  // namespace osh::policy
