#include "witness/server.h"

#include <httplib.h>

#include "absl/strings/str_cat.h"
#include "witness/log.h"

namespace osh::witness {

absl::StatusOr<std::unique_ptr<WitnessServer>> WitnessServer::Bind(Witness& witness, const WitnessConfig& config) {
  absl::StatusOr<std::pair<std::string, int>> address = SplitListenAddress(config.listen);
  if (!address.ok()) return address.status();
  std::unique_ptr<WitnessServer> out(new WitnessServer());
  out->server_ = std::make_unique<httplib::Server>();
  httplib::Server& server = *out->server_;
  server.set_payload_max_length(config.max_request_bytes);
  server.set_read_timeout(config.request_timeout_s, 0);
  server.set_write_timeout(config.request_timeout_s, 0);
  server.set_keep_alive_timeout(config.request_timeout_s);
  const std::string path = config.submission_prefix + kAddCheckpointPath;
  server.Post(path, [&witness](const httplib::Request& request, httplib::Response& response) {
    const WitnessResponse answer = witness.AddCheckpoint(request.body);
    response.status = answer.status;
    response.set_content(answer.body, answer.content_type);
    if (answer.log_message.empty()) return;
    const WitnessLogLevel level = answer.status == 200 ? WitnessLogLevel::kInfo
                                  : answer.status >= 500 ? WitnessLogLevel::kError
                                                         : WitnessLogLevel::kWarning;
    WitnessLog(level, absl::StrCat(answer.log_message, " [", request.remote_addr, "]"));
  });
  const auto not_allowed = [](const httplib::Request&, httplib::Response& response) {
    response.status = 405;
    response.set_header("Allow", "POST");
    response.set_content("add-checkpoint takes POST\n", "text/plain; charset=utf-8");
  };
  server.Get(path, not_allowed);
  server.Put(path, not_allowed);
  server.Delete(path, not_allowed);
  server.Patch(path, not_allowed);
  server.Options(path, not_allowed);
  server.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request&, httplib::Response& response) {
    if (!response.body.empty()) return httplib::Server::HandlerResponse::Unhandled;  // a handler's own answer
    response.set_content(response.status == 413 ? "request body too large\n" : response.status == 404 ? "not found\n" : "error\n",
                         "text/plain; charset=utf-8");
    return httplib::Server::HandlerResponse::Handled;
  }));
  const auto& [host, port] = *address;
  if (port == 0) {
    out->port_ = server.bind_to_any_port(host);
    if (out->port_ < 0) return absl::UnavailableError(absl::StrCat("cannot listen on ", config.listen));
  } else {
    if (!server.bind_to_port(host, port)) return absl::UnavailableError(absl::StrCat("cannot listen on ", config.listen));
    out->port_ = port;
  }
  return out;
}

WitnessServer::~WitnessServer() = default;

void WitnessServer::Run() { server_->listen_after_bind(); }

void WitnessServer::Stop() { server_->stop(); }

}  // namespace osh::witness
