#include "gateway/server/metrics_server.h"

#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/host_port.h"
#include "common/http_server.h"
#include "gateway/core/log.h"
#include "policy/policy_file.h"
#include "tlog/tiles.h"

namespace osh::gateway {
namespace {

using common::HttpRequest;
using common::HttpResponse;

HttpResponse Text(unsigned status, std::string body) { return HttpResponse{status, "text/plain; charset=utf-8", std::move(body), {}}; }

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
HttpResponse ServeLog(const std::string& dir, const std::string& path) {
  const std::string relative = path.substr(1);
  const bool checkpoint = relative == "checkpoint";
  absl::StatusOr<tlog::Tile> tile = checkpoint ? absl::StatusOr<tlog::Tile>(tlog::Tile{}) : tlog::ParseTilePath(relative);
  if (!tile.ok()) return Text(404, "not a log path\n");
  if (!checkpoint && tlog::TreeSizeOf(*tile) > PublishedSize(dir)) return Text(404, "not published\n");
  auto data = policy::ReadFileToString(dir + "/" + relative);
  if (!data.ok()) return Text(404, "not published\n");
  // A full tile never changes; a partial one is replaced by its full tile and the checkpoint moves on.
  const char* cache = checkpoint ? "no-cache" : tile->full() ? "public, max-age=31536000, immutable" : "public, max-age=60";
  return HttpResponse{200, checkpoint ? "text/plain; charset=utf-8" : "application/octet-stream", *std::move(data),
                      {{"Cache-Control", cache}}};
}

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const std::string& listen, Render render,
                                                                     const Options& options) {
  auto parsed = common::ParseHostPort(listen);
  if (!parsed.ok()) return absl::InvalidArgumentError(absl::StrCat(options.name, ": ", parsed.status().message()));
  common::HttpServer::Options http;
  http.request_timeout = std::chrono::milliseconds(options.request_timeout_ms);
  http.response_timeout = std::chrono::milliseconds(options.response_timeout_ms);
  http.threads = options.threads;
  http.max_connections = options.max_connections;
  http.allow = options.allow;
  http.name = options.name;
  http.log = [](common::HttpServer::LogLevel, const std::string& message) { LogWarning(message); };
  // Every request is answered on its head: nothing here takes a body (max_body_bytes 0), so none is kept.
  const bool metrics = static_cast<bool>(render);
  auto route = [render = std::move(render), dir = options.log_dir](const HttpRequest& request) -> std::optional<HttpResponse> {
    const bool is_metrics = render && request.path == "/metrics";
    const bool is_log = !dir.empty() && (request.path == "/checkpoint" || absl::StartsWith(request.path, "/tile/"));
    if (!is_metrics && !is_log) return Text(404, "not found\n");
    if (request.method != "GET") {
      HttpResponse refused = Text(405, "only GET\n");
      refused.headers.emplace_back("Allow", "GET");
      return refused;
    }
    // A GET with a body is answered only once the body is read: refused before rendering anything, so a
    // client trickling one holds no rendered answer while it does.
    if (request.has_body) return Text(400, "a GET has no body\n");
    if (is_log) return ServeLog(dir, request.path);
    return HttpResponse{200, "text/plain; version=0.0.4; charset=utf-8", render(), {}};
  };
  auto unused = [](const HttpRequest&) { return Text(404, "not found\n"); };
  auto server = common::HttpServer::Start(parsed->host, parsed->port, std::move(http), std::move(route), std::move(unused));
  if (!server.ok()) return server.status();
  auto self = std::unique_ptr<MetricsServer>(new MetricsServer());
  self->server_ = *std::move(server);
  const std::string host = parsed->ipv6 ? absl::StrCat("[", parsed->host, "]") : parsed->host;
  self->url_ = absl::StrCat("http://", host, ":", self->server_->port(), metrics ? "/metrics" : "/");
  return self;
}

MetricsServer::~MetricsServer() = default;

}  // namespace osh::gateway
