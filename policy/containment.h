// Containment: is a candidate SandboxPolicy inside a ceiling (an authority's managed maximum)?
// Checked on the whole candidate, never on a change. Inside means: every (binary, host:port) the
// candidate allows, the ceiling allows; every REST request the candidate allows, the ceiling allows
// (enforced); filesystem read-write within the ceiling's read-write and read-only within its read-only
// or read-write (by path prefix), the workdir not added; process identity and landlock not weakened.
//
// Exact for the language of the egress evaluator over L4 and enforced REST endpoints: the answer is
// `inside` only when proven for every intent, `outside` only with a concrete intent the candidate
// allows and the ceiling refuses (named in the result), and `unknown` otherwise — including every
// construct the check does not model (GraphQL, WebSocket, JSON-RPC, MCP, SQL, explicit tcp, query
// matchers, allowed_ips, tls, non-enforced REST, glob syntax beyond *, ** and ?, a path-scoped REST endpoint over an L4 ceiling endpoint). Fail closed: unknown
// is a refusal. Pure; thread-safe.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "openshell/sandbox/v1/sandbox.pb.h"

namespace osh::policy {

enum class Containment { kInside, kOutside, kUnknown };

struct ContainmentResult {
  Containment verdict = Containment::kUnknown;
  std::string detail;  // outside: the first widening, named; unknown: what cannot be decided

  // OK when inside; FAILED_PRECONDITION "exceeds_ceiling: <detail>" or "containment_unknown: <detail>".
  absl::Status ToStatus() const;
};

// Both policies must be valid (ValidatePolicy).
ContainmentResult CheckContainment(const openshell::sandbox::v1::SandboxPolicy& candidate,
                                   const openshell::sandbox::v1::SandboxPolicy& ceiling);

}  // namespace osh::policy
