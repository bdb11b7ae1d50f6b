// Errors as values that carry their reason code as data (issue 26 §3): every refusal keeps SPEC's message
// "reason_code: detail" (what clients, logs and the audit log have always read) and carries a
// google.rpc.ErrorInfo payload (type URL kErrorInfoTypeUrl) whose `reason` is the same code, so no module
// re-parses the code out of the text. Storage errors (either backend) carry an ErrorInfo with reason
// "storage_error": their message is the full backend text (SQL, server text, file names) for the log, and
// ToGrpc (common/grpc_status.h) answers them with a scrubbed message. Depends on absl and protobuf only
// (no gRPC). Pure functions, thread-safe.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace osh::common {

// ErrorInfo.domain of every error this project attaches.
inline constexpr char kErrorDomain[] = "policy-gateway.openshell";
// The absl payload key: the ErrorInfo's Any type URL, so the payload is the Any's value as is.
inline constexpr char kErrorInfoTypeUrl[] = "type.googleapis.com/google.rpc.ErrorInfo";
// The reason code of a storage error (SPEC's clients see "storage_error: ..." and nothing of the backend).
inline constexpr char kStorageErrorReason[] = "storage_error";

// `code` (not OK) with SPEC's message "reason: detail" and an ErrorInfo payload {reason, kErrorDomain}.
absl::Status Refused(absl::StatusCode code, absl::string_view reason, absl::string_view detail);

// A storage error of `backend` ("sqlite", "postgresql"): `code` with message `full_detail` (kept as the
// backend said it, for the log) and an ErrorInfo payload {"storage_error", kErrorDomain,
// {"backend": backend}}. Never shown to a client as is: ToGrpc scrubs it.
absl::Status StorageError(absl::StatusCode code, absl::string_view backend, absl::string_view full_detail);

// True when `status` carries the storage payload (the payload, never the text, decides).
bool IsStorageError(const absl::Status& status);

// The reason code of `status`: its ErrorInfo payload's reason when it has one. Otherwise, and only for
// statuses that come without details (a peer or an older gateway that sends none, a module not yet
// converted to Refused), the message's prefix before the first ':' when that prefix looks like a reason
// code (1..40 of [a-z_]); "" when there is none (no payload and no "word:" prefix), and for OK.
std::string ReasonOf(const absl::Status& status);

// `status` with `reason` attached as its ErrorInfo payload (domain kErrorDomain); the code and message are
// kept. For statuses built elsewhere (a client's local check, a peer's text) that need a typed reason.
absl::Status WithReason(absl::Status status, absl::string_view reason);

// `status` (not OK) with `context` in front of its message ("context: message"), its code or `code` when
// given, and every payload kept: a storage error wrapped by a caller stays one (and is scrubbed), a
// refusal keeps its reason. OK stays OK.
absl::Status Annotated(const absl::Status& status, absl::string_view context);
absl::Status Annotated(const absl::Status& status, absl::string_view context, absl::StatusCode code);

// The status's ErrorInfo payload serialized (the Any value); empty when it has none.
std::string ErrorInfoBytes(const absl::Status& status);

}  // namespace osh::common
