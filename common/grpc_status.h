// absl::Status <-> grpc::Status, the one conversion every gRPC edge uses: the gateway's services, the
// remote PolicyDriver client, the sandbox client library and policyctl. The code numbers are the same by
// design. A status's ErrorInfo payload (common/errors.h) travels as google.rpc.Status in the gRPC error
// details (the "grpc-status-details-bin" trailer), so the peer reads the reason code as data; the message
// is sent unchanged, so peers that read only the text keep working. Thread-safe.
#pragma once

#include <grpcpp/support/status.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace osh::common {

// Called with the full text of a storage error before it is scrubbed (the gateway logs it).
using StorageErrorSink = void (*)(absl::string_view full_text);

// `status` as a gRPC status. A storage error (IsStorageError: decided by its payload, whichever backend)
// is handed to `log` in full and answered as "storage_error: the gateway's database could not complete the
// operation (<CODE>); details are in the gateway's log" — no SQL, table, column, file or server text.
grpc::Status ToGrpc(const absl::Status& status, StorageErrorSink log = nullptr);

// A gRPC status as absl::Status: the same code and message, and the ErrorInfo from the error details
// (when the peer sent one) as the payload, so ReasonOf reads it.
absl::Status FromGrpc(const grpc::Status& status);

// "OK", "UNAUTHENTICATED", ... (the names absl gives the same numbers).
std::string StatusCodeName(grpc::StatusCode code);

}  // namespace osh::common
