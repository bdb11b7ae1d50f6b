#include "gateway/core/mutation_gate.h"

#include "absl/strings/str_cat.h"

namespace osh::gateway {

using openshell::policy::gateway::v1::MutationClass;

MutationClass ClassOf(const google::protobuf::MethodDescriptor& method) {
  return method.options().GetExtension(openshell::policy::gateway::v1::mutation_class);
}

absl::Status CheckMutationGate(const std::string& method_path, bool permits_mutation) {
  if (permits_mutation) return absl::OkStatus();
  // "/openshell.policy.gateway.v1.PolicyGateway/SetPolicy" -> "openshell.policy.gateway.v1.PolicyGateway.SetPolicy"
  std::string full_name = method_path.size() > 1 ? method_path.substr(1) : method_path;
  if (auto slash = full_name.rfind('/'); slash != std::string::npos) full_name[slash] = '.';
  const auto* method = google::protobuf::DescriptorPool::generated_pool()->FindMethodByName(full_name);
  // A method that changes policy only with an authority's signature (SetCeiling) checks that signature
  // itself: it is not the driver's to forbid.
  if (method != nullptr && (ClassOf(*method) == openshell::policy::gateway::v1::NON_MUTATING ||
                            ClassOf(*method) == openshell::policy::gateway::v1::AUTHORITY_SIGNED)) {
    return absl::OkStatus();
  }
  return absl::FailedPreconditionError(
      absl::StrCat("mutation_not_permitted: ", full_name,
                   " changes policy and the active driver does not permit mutation"));
}

}  // namespace osh::gateway
