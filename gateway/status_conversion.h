// absl::Status <-> grpc::Status at the service edge (the code numbers are the same by design).
#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace osh::gateway {

inline grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

}  // namespace osh::gateway
