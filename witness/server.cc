#include "witness/server.h"

#include <civetweb.h>

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "witness/log.h"

namespace osh::witness {
namespace {

struct Route {
  Witness* witness;
  std::string path;  // <submission_prefix>/add-checkpoint
  size_t max_request_bytes;
  std::chrono::milliseconds timeout;
};

void Answer(mg_connection* conn, int status, std::string_view content_type, std::string_view body,
            std::string_view extra_headers = "") {
  mg_printf(conn, "HTTP/1.1 %d %s\r\nContent-Type: %.*s\r\nContent-Length: %zu\r\n%.*sConnection: close\r\n\r\n", status,
            mg_get_response_code_text(conn, status), static_cast<int>(content_type.size()), content_type.data(),
            body.size(), static_cast<int>(extra_headers.size()), extra_headers.data());
  mg_write(conn, body.data(), body.size());
}

// Reads the request's body: at most `limit` bytes kept, and all of it within `timeout` of the call (civetweb
// bounds each read, this the sum). Bytes past `limit` are read and dropped, up to `limit` + 64 KiB more, so
// a client that sent a little too much is answered rather than reset.
enum class Body { kRead, kTooLarge, kTooSlow };
Body ReadBody(mg_connection* conn, size_t limit, std::chrono::milliseconds timeout, std::string* body) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  char buffer[16384];
  size_t dropped = 0;
  for (;;) {
    if (std::chrono::steady_clock::now() > deadline) return Body::kTooSlow;
    const int n = mg_read(conn, buffer, sizeof buffer);
    if (n < 0) return Body::kTooSlow;  // the connection failed or a read timed out
    if (n == 0) return dropped > 0 ? Body::kTooLarge : Body::kRead;
    if (dropped == 0 && body->size() + static_cast<size_t>(n) <= limit) {
      body->append(buffer, static_cast<size_t>(n));
      continue;
    }
    dropped += static_cast<size_t>(n);
    if (dropped > limit + 64 * 1024) return Body::kTooLarge;
  }
}

int Handle(mg_connection* conn, void* cbdata) {
  const Route& route = *static_cast<const Route*>(cbdata);
  const mg_request_info* request = mg_get_request_info(conn);
  const std::string_view uri = request != nullptr && request->local_uri != nullptr ? request->local_uri : "";
  if (uri != route.path) {
    Answer(conn, 404, "text/plain; charset=utf-8", "not found\n");
    return 404;
  }
  if (std::string_view(request->request_method) != "POST") {
    std::string ignored;
    ReadBody(conn, 0, route.timeout, &ignored);
    Answer(conn, 405, "text/plain; charset=utf-8", "add-checkpoint takes POST\n", "Allow: POST\r\n");
    return 405;
  }
  std::string body;
  switch (ReadBody(conn, route.max_request_bytes, route.timeout, &body)) {
    case Body::kTooLarge:
      Answer(conn, 413, "text/plain; charset=utf-8", "request body too large\n");
      return 413;
    case Body::kTooSlow:
      WitnessLog(WitnessLogLevel::kWarning,
                 absl::StrCat("a request body did not arrive whole in time [", request->remote_addr, "]"));
      return 0;  // closed without an answer
    case Body::kRead:
      break;
  }
  const WitnessResponse answer = route.witness->AddCheckpoint(body);
  Answer(conn, answer.status, answer.content_type, answer.body);
  if (!answer.log_message.empty()) {
    const WitnessLogLevel level = answer.status == 200 ? WitnessLogLevel::kInfo
                                  : answer.status >= 500 ? WitnessLogLevel::kError
                                                         : WitnessLogLevel::kWarning;
    WitnessLog(level, absl::StrCat(answer.log_message, " [", request->remote_addr, "]"));
  }
  return answer.status;
}

}  // namespace

struct WitnessServer::State {
  Route route;
  mg_context* context = nullptr;
};

absl::StatusOr<std::unique_ptr<WitnessServer>> WitnessServer::Bind(Witness& witness, const WitnessConfig& config) {
  absl::StatusOr<std::pair<std::string, int>> address = SplitListenAddress(config.listen);
  if (!address.ok()) return address.status();
  const auto& [host, port] = *address;
  static const unsigned initialised = mg_init_library(0);
  (void)initialised;
  std::unique_ptr<WitnessServer> out(new WitnessServer());
  out->state_ = std::make_unique<State>();
  out->state_->route = Route{&witness, config.submission_prefix + kAddCheckpointPath, config.max_request_bytes,
                             std::chrono::milliseconds(int64_t{config.request_timeout_s} * 1000)};
  // civetweb: a request's line and headers must arrive whole within request_timeout_ms and fit in
  // max_request_size (16 KiB), or the connection is closed; a fixed set of workers; no keep-alive; no file
  // serving (no document root).
  const bool ipv6 = host.find(':') != std::string::npos;
  const std::string ports = ipv6 ? absl::StrCat("+[", host, "]:", port) : absl::StrCat(host, ":", port);
  const std::string timeout = absl::StrCat(int64_t{config.request_timeout_s} * 1000);
  const char* options[] = {"listening_ports",   ports.c_str(), "num_threads", "8", "request_timeout_ms", timeout.c_str(),
                           "enable_keep_alive", "no",          "max_request_size", "16384", nullptr};
  mg_callbacks callbacks{};
  callbacks.log_message = [](const mg_connection*, const char* message) {
    WitnessLog(WitnessLogLevel::kWarning, absl::StrCat("HTTP server: ", message));
    return 1;
  };
  mg_init_data init{};
  init.callbacks = &callbacks;
  init.configuration_options = options;
  char error[256] = {0};
  mg_error_data errors{};
  errors.text = error;
  errors.text_buffer_size = sizeof(error);
  out->state_->context = mg_start2(&init, &errors);
  if (out->state_->context == nullptr) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", config.listen, error[0] ? ": " : "", error));
  }
  mg_set_request_handler(out->state_->context, "/", Handle, &out->state_->route);  // every path: Handle says 404
  mg_server_port bound[4];
  const int n = mg_get_server_ports(out->state_->context, 4, bound);
  out->port_ = n > 0 ? bound[0].port : port;
  return out;
}

WitnessServer::~WitnessServer() {
  Stop();
  if (state_ != nullptr && state_->context != nullptr) mg_stop(state_->context);
}

void WitnessServer::Run() { stopped_.WaitForNotification(); }

void WitnessServer::Stop() {
  if (!stopped_.HasBeenNotified()) stopped_.Notify();
}

}  // namespace osh::witness
