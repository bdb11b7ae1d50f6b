// The one conversion of a ChangeExplanation (policy/explain.h) to its wire form, ExplainChangeResponse:
// used by the gateway's ExplainChange and by policyctl's offline `diff`, so both print the same classes.
// Pure; thread-safe.
#pragma once

#include "openshell/policy/gateway/v1/gateway.pb.h"
#include "policy/explain.h"

namespace osh::policy {

openshell::policy::gateway::v1::ExplainChangeResponse ExplanationToProto(const ChangeExplanation& explanation);

}  // namespace osh::policy
