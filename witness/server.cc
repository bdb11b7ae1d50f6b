#include "witness/server.h"

#include <chrono>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "witness/log.h"

namespace osh::witness {

absl::StatusOr<std::unique_ptr<WitnessServer>> WitnessServer::Bind(Witness& witness, const WitnessConfig& config) {
  absl::StatusOr<std::pair<std::string, int>> address = SplitListenAddress(config.listen);
  if (!address.ok()) return address.status();
  const auto& [host, port] = *address;
  common::HttpServer::Options options;
  options.request_timeout = std::chrono::milliseconds(int64_t{config.request_timeout_s} * 1000);
  options.max_body_bytes = config.max_request_bytes;
  options.threads = 4;
  options.name = "HTTP server";
  options.log = [](common::HttpServer::LogLevel level, const std::string& message) {
    WitnessLog(level == common::HttpServer::LogLevel::kError ? WitnessLogLevel::kError : WitnessLogLevel::kWarning, message);
  };
  const std::string path = config.submission_prefix + kAddCheckpointPath;
  auto route = [path](const common::HttpRequest& request) -> std::optional<common::HttpResponse> {
    if (request.path != path) return common::HttpResponse{404, "text/plain; charset=utf-8", "not found\n", {}};
    if (request.method != "POST") {
      return common::HttpResponse{405, "text/plain; charset=utf-8", "add-checkpoint takes POST\n", {{"Allow", "POST"}}};
    }
    return std::nullopt;  // read the body, then `handle`
  };
  auto handle = [&witness](const common::HttpRequest& request) {
    const WitnessResponse answer = witness.AddCheckpoint(request.body);
    if (!answer.log_message.empty()) {
      const WitnessLogLevel level = answer.status == 200 ? WitnessLogLevel::kInfo
                                    : answer.status >= 500 ? WitnessLogLevel::kError
                                                           : WitnessLogLevel::kWarning;
      WitnessLogRequest(level, absl::StrCat(answer.log_message, " [", request.client, "]"), answer.evidence);
    }
    return common::HttpResponse{static_cast<unsigned>(answer.status), answer.content_type, answer.body, {}};
  };
  auto server = common::HttpServer::Start(host, port, std::move(options), std::move(route), std::move(handle));
  if (!server.ok()) return server.status();
  std::unique_ptr<WitnessServer> out(new WitnessServer());
  out->server_ = *std::move(server);
  out->port_ = out->server_->port();
  return out;
}

WitnessServer::~WitnessServer() {
  Stop();
  server_.reset();  // every connection closed, no handler running
}

void WitnessServer::Run() { stopped_.WaitForNotification(); }

void WitnessServer::Stop() {
  absl::MutexLock lock(&stop_mu_);
  if (!stopped_.HasBeenNotified()) stopped_.Notify();
}

}  // namespace osh::witness
