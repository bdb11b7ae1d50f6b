// Where policyctl's log commands read a log published as C2SP tlog-tiles static files: a directory (the
// log's prefix: DIR/checkpoint, DIR/tile/...) or an http(s) URL prefix (URL/checkpoint, URL/tile/...),
// fetched with cpp-httplib (HTTPS verifies the server against the system's CA certificates).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "tlog/tiles.h"

namespace osh::cli {

// `where` is a directory or an http:// or https:// URL. Fetch answers NOT_FOUND for a missing file
// (HTTP 404) and UNAVAILABLE when a server cannot be reached or answers another error status; each HTTP
// request is bounded by `timeout_s`. INVALID_ARGUMENT for a malformed URL.
absl::StatusOr<std::unique_ptr<tlog::PathTileFetcher>> OpenLogSource(const std::string& where, int timeout_s);

}  // namespace osh::cli
