// One HTTP(S) request to a party this process does not control — a log's tile server (policyctl log), a
// witness (the gateway's log_witnesses) — bounded in every way such a party could stretch it, on libcurl.
//
// Bounds: the whole request (connection, request, response headers and body) ends within `timeout`, however
// the server trickles its bytes; the response headers may hold `max_header_bytes` in all and the body
// `max_body_bytes`, or the request ends there and nothing more is read; redirects are never followed (a 3xx
// is answered as it is: the caller decides); only http:// and https:// (https verified against the
// system's CA certificates); no proxy from the environment and no content decoding (no compression bomb).
//
// Thread-safe: each call has its own connection. Errors are values (never exceptions):
//   UNAVAILABLE         the server could not be reached, the connection failed, or `timeout` passed;
//   RESOURCE_EXHAUSTED  the headers or the body went past their bound (the message says which);
//   INVALID_ARGUMENT    a URL that is not http(s).
#pragma once

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace osh::common {

struct HttpLimits {
  absl::Duration timeout = absl::Seconds(30);
  size_t max_header_bytes = 64 * 1024;
  size_t max_body_bytes = 1 << 20;
};

struct HttpAnswer {
  int status = 0;    // the HTTP status code
  std::string body;  // at most max_body_bytes
};

absl::StatusOr<HttpAnswer> HttpGet(const std::string& url, const HttpLimits& limits);

// POSTs `body` with the Content-Type `content_type` (no "Expect: 100-continue" round trip).
absl::StatusOr<HttpAnswer> HttpPost(const std::string& url, absl::string_view body, absl::string_view content_type,
                                    const HttpLimits& limits);

}  // namespace osh::common
