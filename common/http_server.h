// A small HTTP/1.1 server for clients we do not control: the gateway's metrics_listen and log_listen, and
// policy-log-witness's add-checkpoint. libmicrohttpd (Debian's libmicrohttpd) underneath, event-driven
// (epoll) on a few threads of its own.
//
// What an unauthenticated client can make it hold is bounded, and this is the one home of those bounds:
//   - a slow client holds a connection slot, never a thread: at most 1024 connections (fewer when the
//     descriptor limit — raised at start — is lower), 32 from one address;
//   - a connection carries one request (every answer says `Connection: close`), which — headers and body,
//     however slowly they come — must arrive whole within `request_timeout` of the connection, or the
//     connection is closed unanswered (libmicrohttpd times out idle connections only; a watchdog thread
//     shuts down the socket of any connection open longer);
//   - headers fit in 32 KiB;
//   - a body is read only for a request the route lets through (`Route` returns nothing); one declared
//     larger than `max_body_bytes` is read and dropped, then refused with 413 (more than twice that, or
//     with `Expect: 100-continue`: refused before it is read); one without Content-Length is closed at that
//     size; all requests together hold at most 64 MiB of bodies beyond the first 64 KiB of each. A request
//     answered on its head has whatever body follows read and dropped, within the same deadline;
//   - `allow` (CIDRs): any other source address is refused as it connects (closed, no answer).
//
// Thread safety: `route` and `handle` run on the server's threads, several at once; they must be
// thread-safe. None runs after the destructor returns.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace osh::common {

struct HttpRequest {
  std::string method;
  std::string path;    // the URL's path as sent, without its query
  std::string client;  // the peer's address (for logs)
  std::string body;    // empty in `Route`; the whole body in `Handle`
};

struct HttpResponse {
  unsigned status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // besides Content-Type, Content-Length, Connection
};

class HttpServer {
 public:
  enum class LogLevel { kInfo, kWarning, kError };
  struct Options {
    std::chrono::milliseconds request_timeout{10000};
    size_t max_body_bytes = 0;        // 0: no request may carry a body to `handle`
    unsigned threads = 4;
    std::vector<std::string> allow;   // CIDRs ("10.0.0.0/8", "::1/128"); empty: any address
    std::string name = "HTTP server";  // for messages ("metrics_listen", ...)
    std::function<void(LogLevel, const std::string&)> log;  // the server's own warnings; may be empty
  };
  // Decides a request on its head: a response to answer at once (its body, if any, is never handed on),
  // or nothing to read the body and pass the whole request to `handle`.
  using Route = std::function<std::optional<HttpResponse>(const HttpRequest&)>;
  using Handle = std::function<HttpResponse(const HttpRequest&)>;

  // Listens on `host` (a name or address; "" = every address) and `port` (0: a free one).
  // INVALID_ARGUMENT for a malformed `allow` entry, UNAVAILABLE when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const std::string& host, int port, Options options, Route route,
                                                           Handle handle);
  ~HttpServer();  // stops: every connection closed, no callback running
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  int port() const { return port_; }

  struct State;  // defined in http_server.cc

 private:
  HttpServer() = default;
  std::unique_ptr<State> state_;
  int port_ = 0;
};

}  // namespace osh::common
