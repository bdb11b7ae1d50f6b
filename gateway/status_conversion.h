// absl::Status <-> grpc::Status at the service edge (the code numbers are the same by design).
// Storage errors ("sqlite: …", "postgresql: …", with SQL, server and file details) are logged in full and replaced by a stable
// message naming only their kind: clients get no SQL text, operators find the details in the log.
#pragma once

#include <grpcpp/support/status.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gateway/log.h"

namespace osh::gateway {

inline grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  const auto code = static_cast<grpc::StatusCode>(status.code());
  // Both stores name themselves first ("sqlite: …", "postgresql: …", "postgresql (host…): …"). Issue 26
  // replaces this prefix test with a status payload.
  if (absl::StartsWith(status.message(), "sqlite: ") || absl::StartsWith(status.message(), "postgresql")) {
    LogError(absl::StrCat("storage error answered as ", absl::StatusCodeToString(status.code()), ": ", status.message()));
    return grpc::Status(code, absl::StrCat("storage_error: the gateway's database could not complete the operation (",
                                           absl::StatusCodeToString(status.code()), "); details are in the gateway's log"));
  }
  return grpc::Status(code, std::string(status.message()));
}

// "OK", "UNAUTHENTICATED", ... (the same names absl gives the same numbers).
inline std::string StatusCodeName(grpc::StatusCode code) {
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

}  // namespace osh::gateway
