#include "gateway/server/metrics_server.h"

#include <civetweb.h>

#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/host_port.h"
#include "gateway/core/log.h"
#include "policy/policy_file.h"
#include "tlog/tiles.h"

namespace osh::gateway {
namespace {

// Answers 405 to anything but GET. A small request body is read first: closing a connection with unread
// bytes makes the kernel reset it, and the client may then lose the answer before it reads it.
int RefuseMethod(mg_connection* conn) {
  char sink[4096];
  for (size_t drained = 0; drained < 64 * 1024;) {
    const int n = mg_read(conn, sink, sizeof sink);
    if (n <= 0) break;
    drained += static_cast<size_t>(n);
  }
  mg_send_http_error(conn, 405, "%s", "only GET\n");
  return 405;
}

// civetweb calls this for GET /metrics (and every other method on that path).
int ServeMetrics(mg_connection* conn, void* cbdata) {
  const mg_request_info* request = mg_get_request_info(conn);
  if (request == nullptr || std::string_view(request->request_method) != "GET") return RefuseMethod(conn);
  const std::string body = static_cast<const MetricsServer::Render*>(cbdata)->operator()();
  mg_send_http_ok(conn, "text/plain; version=0.0.4; charset=utf-8", static_cast<long long>(body.size()));
  mg_write(conn, body.data(), body.size());
  return 200;
}

// The size of the checkpoint published in `dir` (its note's second line); -1 when there is none.
int64_t PublishedSize(const std::string& dir) {
  auto note = policy::ReadFileToString(dir + "/checkpoint");
  if (!note.ok()) return -1;
  const std::vector<absl::string_view> lines = absl::StrSplit(*note, absl::MaxSplits('\n', 2));
  int64_t size = -1;
  if (lines.size() < 2 || !absl::SimpleAtoi(lines[1], &size)) return -1;
  return size;
}

// GET /checkpoint and /tile/...: only the canonical C2SP paths (tlog::ParseTilePath), read from the log's
// folder, and only tiles of the published tree (tlog::TreeSizeOf): one written ahead of a checkpoint that
// never came is not served (it may be replaced). Nothing else of the folder (temporary files of a write in
// progress, say) is reachable.
int ServeLog(mg_connection* conn, void* cbdata) {
  const mg_request_info* request = mg_get_request_info(conn);
  if (request == nullptr || std::string_view(request->request_method) != "GET") return RefuseMethod(conn);
  const std::string_view uri = request->local_uri != nullptr ? request->local_uri : "";
  const std::string relative(uri.substr(uri.empty() ? 0 : 1));
  const bool checkpoint = relative == "checkpoint";
  absl::StatusOr<tlog::Tile> tile = checkpoint ? absl::StatusOr<tlog::Tile>(tlog::Tile{}) : tlog::ParseTilePath(relative);
  if (!tile.ok()) {
    mg_send_http_error(conn, 404, "%s", "not a log path\n");
    return 404;
  }
  const std::string& dir = *static_cast<const std::string*>(cbdata);
  if (!checkpoint && tlog::TreeSizeOf(*tile) > PublishedSize(dir)) {
    mg_send_http_error(conn, 404, "%s", "not published\n");
    return 404;
  }
  auto data = policy::ReadFileToString(dir + "/" + relative);
  if (!data.ok()) {
    mg_send_http_error(conn, 404, "%s", "not published\n");
    return 404;
  }
  // A full tile never changes; a partial one is replaced by its full tile and the checkpoint moves on.
  const char* cache = checkpoint ? "no-cache" : tile->full() ? "public, max-age=31536000, immutable" : "public, max-age=60";
  mg_printf(conn,
            "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %zu\r\nCache-Control: %s\r\nConnection: close\r\n\r\n",
            checkpoint ? "text/plain; charset=utf-8" : "application/octet-stream", data->size(), cache);
  mg_write(conn, data->data(), data->size());
  return 200;
}

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const std::string& listen, Render render,
                                                                     const Options& options) {
  auto parsed = common::ParseHostPort(listen);
  if (!parsed.ok()) return absl::InvalidArgumentError(absl::StrCat(options.name, ": ", parsed.status().message()));
  const bool ipv6 = parsed->ipv6;
  const std::string host = ipv6 ? absl::StrCat("[", parsed->host, "]") : parsed->host;
  const int port = parsed->port;
  static const unsigned initialised = mg_init_library(0);
  (void)initialised;
  auto self = std::unique_ptr<MetricsServer>(new MetricsServer());
  self->render_ = std::make_unique<Render>(std::move(render));
  // civetweb, not a hand-made loop: a request's headers must arrive within request_timeout_ms in all (a
  // slow client cannot hold a worker longer), a fixed set of workers, no keep-alive, no file serving, and
  // SO_REUSEADDR only (a port another gateway serves is an error, not a shared port).
  const std::string ports = ipv6 ? absl::StrCat("+", host, ":", port) : absl::StrCat(host, ":", port);
  const std::string timeout = absl::StrCat(options.request_timeout_ms);
  const std::string threads = absl::StrCat(options.threads);
  std::string acl;
  if (!options.allow.empty()) {
    std::vector<std::string> entries = {"-0.0.0.0/0"};
    for (const auto& cidr : options.allow) entries.push_back(absl::StrCat("+", cidr));
    acl = absl::StrJoin(entries, ",");
  }
  std::vector<const char*> config = {"listening_ports", ports.c_str(),   "num_threads",        threads.c_str(),
                                     "request_timeout_ms", timeout.c_str(), "enable_keep_alive", "no",
                                     "linger_timeout_ms", "0"};
  if (!acl.empty()) config.insert(config.end(), {"access_control_list", acl.c_str()});
  config.push_back(nullptr);
  mg_callbacks callbacks{};
  callbacks.log_message = [](const mg_connection*, const char* message) {
    LogWarning(absl::StrCat("HTTP server: ", message));
    return 1;
  };
  mg_init_data init{};
  init.callbacks = &callbacks;
  init.configuration_options = config.data();
  char error[256] = {0};
  mg_error_data errors{};
  errors.text = error;
  errors.text_buffer_size = sizeof(error);
  self->context_ = mg_start2(&init, &errors);
  if (self->context_ == nullptr) {
    return absl::UnavailableError(absl::StrCat(options.name, ": cannot listen on ", listen, error[0] ? ": " : "", error));
  }
  if (*self->render_) mg_set_request_handler(self->context_, "/metrics$", ServeMetrics, self->render_.get());
  if (!options.log_dir.empty()) {
    self->log_dir_ = std::make_unique<std::string>(options.log_dir);
    mg_set_request_handler(self->context_, "/checkpoint$", ServeLog, self->log_dir_.get());
    mg_set_request_handler(self->context_, "/tile/", ServeLog, self->log_dir_.get());
  }
  mg_server_port bound[4];
  const int n = mg_get_server_ports(self->context_, 4, bound);
  const int actual = n > 0 ? bound[0].port : port;
  self->url_ = absl::StrCat("http://", host, ":", actual, *self->render_ ? "/metrics" : "/");
  return self;
}

MetricsServer::~MetricsServer() {
  if (context_ != nullptr) mg_stop(context_);
}

}  // namespace osh::gateway
