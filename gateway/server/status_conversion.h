// absl::Status -> grpc::Status at the gateway's service edge: common::ToGrpc (common/grpc_status.h) with
// the gateway's log as the sink of storage errors — a storage error (marked by its payload, from either
// backend) is logged in full and answered as "storage_error: …" naming no SQL, table, column, file or
// server text; every other status keeps its message and carries its reason code in the error details.
#pragma once

#include <grpcpp/support/status.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "common/grpc_status.h"
#include "gateway/core/log.h"

namespace osh::gateway {

inline grpc::Status ToGrpc(const absl::Status& status) {
  return common::ToGrpc(status, [](absl::string_view full_text) { LogError(std::string(full_text)); });
}

using common::StatusCodeName;

}  // namespace osh::gateway
