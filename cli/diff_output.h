// How policyctl prints an ExplainChange answer (`diff`, `policy set|update --dry-run`): a table (change,
// area, class, witness, the rule that allows it) and a count line, or with -o json
// {"added":[CLASS...],"removed":[CLASS...],"unknown":[CLASS...]} in protobuf's JSON mapping.
#pragma once

#include <google/protobuf/struct.pb.h>

#include "cli/cli_common.h"
#include "openshell/policy/gateway/v1/gateway.pb.h"

namespace osh::cli {

inline constexpr int kExitDiffers = 1;      // some class is added or removed
inline constexpr int kExitDiffUnknown = 3;  // none decided, but some class is unknown

// The JSON form as a Struct: the three lists always present, empty fields left out.
google::protobuf::Struct DiffToStruct(const openshell::policy::gateway::v1::ExplainChangeResponse& diff);
void PrintDiff(const Options& options, const openshell::policy::gateway::v1::ExplainChangeResponse& diff);
int DiffExitCode(const openshell::policy::gateway::v1::ExplainChangeResponse& diff);

}  // namespace osh::cli
