// The stores' errors as storage errors (common/errors.h): the backend's own text kept whole for the log,
// prefixed with the backend's name ("sqlite: …", "postgresql: …"), and the storage payload that makes the
// gateway's ToGrpc answer clients "storage_error: …" instead. Every error a backend reports about itself
// (SQL, server, file or decoding failures) is made here; errors about the request ("no sandbox 'x'",
// "scope 's' is at revision 3, expected 2") are not storage errors and stay plain statuses.
#pragma once

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/errors.h"

namespace osh::store {

inline absl::Status SqliteStorageError(absl::StatusCode code, absl::string_view detail) {
  return common::StorageError(code, "sqlite", absl::StrCat("sqlite: ", detail));
}

// `detail` follows "postgresql" as is: ": server text" or " (host=… dbname=…): connection text".
inline absl::Status PostgresStorageError(absl::StatusCode code, absl::string_view detail) {
  return common::StorageError(code, "postgresql", absl::StrCat("postgresql", detail));
}

}  // namespace osh::store
