// Serves the Prometheus metrics over plain HTTP (GET /metrics) on `metrics_listen`, and/or the verifiable
// log's static files (GET /checkpoint, /tile/...: C2SP tlog-tiles paths, read-only) on `log_listen` — one
// server when the two share an address — on common::HttpServer (libmicrohttpd, event-driven). Another
// method is 405, another path 404; neither has its body read. Off unless configured.
//
// What a hostile client can do is bounded as common/http_server.h says: a slow client (headers or body)
// holds a connection slot, never a thread, and only until `request_timeout_ms` from its connection;
// connections are not kept alive; `allow` (CIDRs) refuses every other source address as it connects.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace osh::common {
class HttpServer;
}

namespace osh::gateway {

class MetricsServer {
 public:
  using Render = std::function<std::string()>;
  struct Options {
    int request_timeout_ms = 2000;
    int response_timeout_ms = 5000;  // the answer must be taken within this (a client that never reads frees its slot)
    unsigned threads = 4;
    size_t max_connections = 256;    // open at once (see common/http_server.h)
    std::vector<std::string> allow;  // CIDRs ("10.0.0.0/8"); empty: any address
    std::string log_dir;             // serve the log published here ("": no log paths)
    std::string name = "metrics_listen";  // the config key, for messages
  };
  // `listen` is "host:port" ("[::1]:9464" for IPv6; port 0 picks a free one). `render` is called for
  // each scrape, on a server thread, and must be thread-safe; empty: no /metrics. INVALID_ARGUMENT for a
  // malformed address or `allow` entry, UNAVAILABLE when it cannot be bound (in use, or not an address of
  // this host).
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& listen, Render render,
                                                               const Options& options);
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& listen, Render render) {
    return Start(listen, std::move(render), Options());
  }
  ~MetricsServer();  // stops serving: no connection open, no render running
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // "http://host:port/metrics" (or "http://host:port/" without metrics), with the port actually bound.
  const std::string& url() const { return url_; }

 private:
  MetricsServer() = default;
  std::unique_ptr<common::HttpServer> server_;
  std::string url_;
};

}  // namespace osh::gateway
