// A small HTTP/1.1 server for clients we do not control: the gateway's metrics_listen and log_listen, and
// policy-log-witness's add-checkpoint. libmicrohttpd (Debian's libmicrohttpd) underneath, event-driven
// (epoll) on a few threads of its own.
//
// What an unauthenticated client can make it hold is bounded, and this is the one home of those bounds:
//   - a slow client holds a connection slot, never a thread: at most `max_connections` connections (fewer
//     when the descriptor limit — raised at start — leaves less than that and 64 more), from one address
//     32 or a quarter of those connections if fewer, from one IPv6 /64 (common/address_share.h) 256 or half;
//   - a connection carries one request (every answer says `Connection: close`), which — headers and body,
//     however slowly they come — must arrive whole within `request_timeout` of the connection, or the
//     connection is closed unanswered; and the answer must be taken within `response_timeout` more
//     (libmicrohttpd times out idle connections only; a watchdog thread shuts down the socket of any
//     connection past its deadline);
//   - headers fit in 32 KiB;
//   - a body is kept only for a request the route lets through (`Route` returns nothing); one declared
//     larger than `max_body_bytes` is read and dropped, then refused with 413 (more than twice that, or
//     with `Expect: 100-continue`: refused before it is read); one without Content-Length is closed at that
//     size; all requests together hold at most 64 MiB of bodies beyond the first 64 KiB of each (counted
//     as the memory held). A request answered on its head keeps no body: libmicrohttpd stops reading a
//     POST or PUT there (the kernel may then reset the connection under a client still sending, which can
//     lose the answer) and reads and drops the body of any other method before answering, within the
//     same deadline;
//   - `allow` (CIDRs): any other source address is refused as it connects (closed, no answer);
//   - the server's own messages (refused connections, malformed requests, timeouts) reach `log` at most 20
//     in each one-minute window (so up to 40 around a window's edge); the rest are counted and the count
//     said with the next one, or when the server stops.
//
// Addresses: an IPv6 listen address takes IPv4 clients too (IPv4-mapped; `allow` matches them as IPv4);
// a name with addresses of both families ("localhost") is bound on its IPv4 one.
//
// Thread safety: `route` and `handle` run on the server's event threads, several at once; they must be
// thread-safe, and one that is slow holds its thread and the connections waiting on it. None runs after the
// destructor returns.
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
  bool has_body = false;  // a Content-Length over 0 or a Transfer-Encoding was declared
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
    std::chrono::milliseconds response_timeout{30000};
    size_t max_connections = 1024;
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

  // Listens on `host` (a name or address; "" = every address, IPv4 and IPv6) and `port` (0: a free one).
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
