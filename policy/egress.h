// Egress decisions: may this process reach host:port, and may this REST request pass? Answered for a
// SandboxPolicy exactly as upstream's runtime answers it (its Rego evaluator plus the Rust steps around
// it; see docs/decisions-and-ceilings.md for the rules). Pure: no I/O, no clock, no allocation per
// connection-level decision once a caller reuses its EgressDecision.
//
// Thread safety: a compiled EgressPolicy is immutable; Decide may run on many threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "openshell/sandbox/v1/sandbox.pb.h"

namespace osh::policy {

// An L7 REST request: method, canonical path, and the query (a key may repeat: all its values).
// Upstream's runtime appends this to every binary miss's reason (sandbox-policy.rego, deny_reason), word
// for word; so does Decide.
inline constexpr char kBinaryMissHint[] =
    ". SYMLINK HINT: the binary path is the kernel-resolved target from /proc/<pid>/exe, not the symlink. If your "
    "policy specifies a symlink (e.g., /usr/bin/python3) but the actual binary is /usr/bin/python3.11, either: (1) "
    "use the canonical path in your policy (run 'readlink -f /usr/bin/python3' inside the sandbox), or (2) ensure "
    "symlink resolution is working (check sandbox logs for 'Cannot access container filesystem')";

// The longest request path upstream's proxy takes (l7/path.rs, MAX_PATH_LEN): a longer one is refused before
// its policy sees it, so Decide denies a request on it (when its connection is inspected).
inline constexpr size_t kMaxRequestTargetPath = 4096;

// Why `path` is not a request path as upstream's proxy hands it to its policy (l7/path.rs: percent-decoded,
// `.` and `..` resolved, `//` collapsed, `;params` stripped, every byte outside RFC 3986's pchar
// percent-encoded; so from '/', at most kMaxRequestTargetPath bytes, only letters, digits,
// `-._~!$&'()*+,=:@` and '/', and no '.' or '..' segment or '//' — this evaluator does not take the
// percent-encoded form); "" when it is one. Decide answers a request on such a path unsupported (denied
// when longer than kMaxRequestTargetPath).
std::string PathNotCanonical(absl::string_view path);

struct EgressRequest {
  std::string method;
  std::string path;
  std::vector<std::pair<std::string, std::vector<std::string>>> query;
};

struct EgressIntent {
  std::string host;
  uint32_t port = 0;
  std::string binary;                      // the process's executable path; "" = identity unavailable
  std::vector<std::string> ancestors;      // executable paths of its ancestors
  std::vector<std::string> cmdline_paths;  // evidence only: never grants
  std::optional<EgressRequest> request;    // set to ask about one request on the connection
};

enum class EgressVerdict {
  kAllow,
  kDeny,
  kAudit,        // the request breaks L7 policy, but the endpoint's enforcement is not `enforce`
  kUnsupported,  // the answer depends on something the evaluator does not model (reason says what)
};
absl::string_view VerdictName(EgressVerdict verdict);  // "allow", "deny", "audit", "unsupported"

struct EgressDecision {
  EgressVerdict verdict = EgressVerdict::kDeny;
  std::string matched_policy;  // smallest network_policies key whose endpoint and binary match; "" if none
  std::string endpoint;        // e.g. "network_policies.gh.endpoints[0] (api.github.com:443)"
  std::string rule;            // e.g. "network_policies.gh.endpoints[0].rules[1] (GET /repos/**)"
  std::string reason;          // upstream's wording for denials; an explanation otherwise
};

class EgressPolicy {
 public:
  // Indexes a policy (assumed valid: ValidatePolicy) for fast decisions.
  static std::shared_ptr<const EgressPolicy> Compile(const openshell::sandbox::v1::SandboxPolicy& policy);

  // Decides `intent`, overwriting `out` (its strings keep their capacity, so reuse avoids allocation).
  void Decide(const EgressIntent& intent, EgressDecision* out) const;
  EgressDecision Decide(const EgressIntent& intent) const;

  struct Compiled;  // the index; defined in egress.cc
  ~EgressPolicy();
  EgressPolicy(const EgressPolicy&) = delete;
  EgressPolicy& operator=(const EgressPolicy&) = delete;

 private:
  explicit EgressPolicy(std::unique_ptr<Compiled> compiled);
  void DecideBounded(const EgressIntent& intent, EgressDecision* out) const;
  std::unique_ptr<Compiled> compiled_;
};

// The method-and-path allow rules an endpoint's `access` preset (read-only, read-write, full) stands for
// under its `protocol`, as upstream expands it: REST's (and every protocol's but these two) read-only GET,
// HEAD, OPTIONS, read-write adds POST, PUT, PATCH, full every method; websocket's read-only GET,
// read-write GET and WEBSOCKET_TEXT, full every method; graphql's none (its presets are operation-type
// rules, which allow no request by method and path). (method, path) pairs; empty for no preset.
std::vector<std::pair<std::string, std::string>> PresetRules(absl::string_view protocol, absl::string_view access);

}  // namespace osh::policy
