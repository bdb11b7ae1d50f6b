// Serves the Prometheus metrics over plain HTTP (GET /metrics) on `metrics_listen`, with cpp-httplib on
// a thread of its own. Anything else is 404. Off unless configured.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace httplib {
class Server;
}

namespace osh::gateway {

class MetricsServer {
 public:
  // `listen` is "host:port" ("[::1]:9464" for IPv6; port 0 picks a free one). `render` is called for
  // each scrape, on the server's thread, and must be thread-safe. INVALID_ARGUMENT for a malformed
  // address, UNAVAILABLE when it cannot be bound.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& listen,
                                                               std::function<std::string()> render);
  ~MetricsServer();  // stops serving and joins the thread
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // "http://host:port/metrics", with the port actually bound.
  const std::string& url() const { return url_; }

 private:
  MetricsServer() = default;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  std::string url_;
};

}  // namespace osh::gateway
