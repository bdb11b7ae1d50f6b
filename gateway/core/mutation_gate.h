// The mutation gate (SPEC §5): one place that decides, from the `mutation_class` method option in
// gateway.proto, whether a PolicyGateway method may run. Deny by default: a method that is not
// classified NON_MUTATING or AUTHORITY_SIGNED (it verifies an authority's signature itself: SetCeiling)
// is treated as mutating.
#pragma once

#include <string>

#include <google/protobuf/descriptor.h>

#include "absl/status/status.h"
#include "openshell/policy/gateway/v1/gateway.pb.h"

namespace osh::gateway {

// The classification of a method (MUTATION_CLASS_UNSPECIFIED when the option is missing).
openshell::policy::gateway::v1::MutationClass ClassOf(const google::protobuf::MethodDescriptor& method);

// OK when the method may run; FAILED_PRECONDITION "mutation_not_permitted: ..." when it would mutate
// and the driver does not permit mutation. `method_path` is gRPC's "/package.Service/Method".
absl::Status CheckMutationGate(const std::string& method_path, bool permits_mutation);

}  // namespace osh::gateway
