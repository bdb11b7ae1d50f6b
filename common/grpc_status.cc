#include "common/grpc_status.h"

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "common/errors.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"

namespace osh::common {

grpc::Status ToGrpc(const absl::Status& status, StorageErrorSink log) {
  if (status.ok()) return grpc::Status::OK;
  const auto code = static_cast<grpc::StatusCode>(status.code());
  std::string message(status.message());
  if (IsStorageError(status)) {
    if (log != nullptr) {
      log(absl::StrCat("storage error answered as ", absl::StatusCodeToString(status.code()), ": ", status.message()));
    }
    message = absl::StrCat(kStorageErrorReason, ": the gateway's database could not complete the operation (",
                           absl::StatusCodeToString(status.code()), "); details are in the gateway's log");
  }
  std::string info = ErrorInfoBytes(status);
  if (info.empty()) return grpc::Status(code, message);
  if (IsStorageError(status)) {
    // The backend name stays in the log with the rest: the client learns only the reason.
    google::rpc::ErrorInfo scrubbed;
    scrubbed.set_reason(kStorageErrorReason);
    scrubbed.set_domain(kErrorDomain);
    info = scrubbed.SerializeAsString();
  }
  google::rpc::Status details;
  details.set_code(static_cast<int>(code));
  details.set_message(message);
  auto* any = details.add_details();
  any->set_type_url(kErrorInfoTypeUrl);
  any->set_value(std::move(info));
  return grpc::Status(code, message, details.SerializeAsString());
}

absl::Status FromGrpc(const grpc::Status& status) {
  absl::Status out(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
  if (out.ok() || status.error_details().empty()) return out;
  google::rpc::Status details;
  if (!details.ParseFromString(status.error_details())) return out;  // not ours to read: the text stands
  for (const auto& any : details.details()) {
    if (any.type_url() == kErrorInfoTypeUrl) {
      out.SetPayload(kErrorInfoTypeUrl, absl::Cord(any.value()));
      break;
    }
  }
  return out;
}

std::string StatusCodeName(grpc::StatusCode code) {
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

}  // namespace osh::common
