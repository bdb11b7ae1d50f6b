// Where policyctl's log commands read a log published as C2SP tlog-tiles static files: a directory (the
// log's prefix: DIR/checkpoint, DIR/tile/...) or an http(s) URL prefix (URL/checkpoint, URL/tile/...),
// fetched with common/http_client.h (libcurl; HTTPS verifies the server against the system's CA
// certificates; redirects are not followed).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "tlog/tiles.h"

namespace osh::cli {

// `where` is a directory or an http:// or https:// URL. Fetch answers NOT_FOUND for a missing file
// (HTTP 404) and UNAVAILABLE when a server cannot be reached or answers another status (a redirect
// included); each HTTP request is bounded whole by `timeout_s`, its headers by 64 KiB and its body by the
// largest file a log publishes (DATA_LOSS past it: not a log's file). INVALID_ARGUMENT for a malformed URL.
absl::StatusOr<std::unique_ptr<tlog::PathTileFetcher>> OpenLogSource(const std::string& where, int timeout_s);

}  // namespace osh::cli
