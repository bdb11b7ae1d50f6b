#include "witness/server.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netdb.h>
#include <strings.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/descriptor_limit.h"
#include "witness/log.h"

namespace osh::witness {

// What the handler needs (WitnessServer::State holds it, so it is not in the anonymous namespace).
struct WitnessRoute {
  Witness* witness = nullptr;
  std::string path;  // <submission_prefix>/add-checkpoint
  size_t max_request_bytes = 0;
  std::chrono::milliseconds timeout{0};
  std::atomic<size_t> buffered{0};  // body bytes held by all requests

  // Every open connection's socket and when it opened. libmicrohttpd times out idle connections only: a
  // client trickling its headers a byte at a time would keep its slot for ever. The watchdog shuts a
  // connection's socket down once it has been open for `timeout` (a connection carries one request:
  // every answer says Connection: close), and libmicrohttpd then closes it as it would any dead peer.
  absl::Mutex mu;
  std::map<MHD_Connection*, std::pair<int, std::chrono::steady_clock::time_point>> open ABSL_GUARDED_BY(mu);
  bool stopping ABSL_GUARDED_BY(mu) = false;
};

namespace {

using Route = WitnessRoute;

// Body bytes all requests together may hold at once beyond the first kFreeBodyBytes of each (a real
// add-checkpoint is a few KiB, so stalled large bodies never crowd one out): a flood of large bodies is
// refused, not buffered.
constexpr size_t kBufferedBodyBudget = size_t{64} << 20;
constexpr size_t kFreeBodyBytes = 64 * 1024;

// The part of a body of `size` bytes charged to the shared budget.
size_t Charged(size_t size) { return size > kFreeBodyBytes ? size - kFreeBodyBytes : 0; }

// One request, from its request line (the URI callback) to its end (the completed callback).
struct Request {
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  bool headers_seen = false;
  bool answered = false;
  bool too_large = false;  // declared over max_request_bytes: read, dropped, then 413
  std::string body;
};

std::string ClientAddress(MHD_Connection* connection) {
  const MHD_ConnectionInfo* info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
  if (info == nullptr || info->client_addr == nullptr) return "?";
  char host[INET6_ADDRSTRLEN] = "?";
  const sockaddr* address = info->client_addr;
  if (address->sa_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(address)->sin_addr, host, sizeof host);
  } else if (address->sa_family == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(address)->sin6_addr, host, sizeof host);
  }
  return host;
}

MHD_Result Answer(MHD_Connection* connection, unsigned status, std::string_view content_type, std::string_view body,
                  const char* allow = nullptr) {
  MHD_Response* response =
      MHD_create_response_from_buffer(body.size(), const_cast<char*>(body.data()), MHD_RESPMEM_MUST_COPY);
  if (response == nullptr) return MHD_NO;
  MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, std::string(content_type).c_str());
  if (allow != nullptr) MHD_add_response_header(response, MHD_HTTP_HEADER_ALLOW, allow);
  MHD_add_response_header(response, MHD_HTTP_HEADER_CONNECTION, "close");  // one request per connection
  const MHD_Result queued = MHD_queue_response(connection, status, response);
  MHD_destroy_response(response);
  return queued;
}

void* OnRequestLine(void*, const char*, MHD_Connection*) { return new Request(); }

void OnConnection(void* cls, MHD_Connection* connection, void**, MHD_ConnectionNotificationCode code) {
  Route& route = *static_cast<Route*>(cls);
  absl::MutexLock lock(&route.mu);
  if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
    route.open.erase(connection);  // from here on its descriptor may be another's: never touched again
    return;
  }
  const MHD_ConnectionInfo* info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
  if (info != nullptr) route.open[connection] = {info->connect_fd, std::chrono::steady_clock::now()};
}

// Shuts down the sockets of connections open longer than the timeout, until the route stops.
void Watchdog(Route* route) {
  absl::MutexLock lock(&route->mu);
  auto stopping = [route]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(route->mu) { return route->stopping; };
  while (!route->mu.AwaitWithTimeout(absl::Condition(&stopping), absl::Milliseconds(100))) {
    const auto now = std::chrono::steady_clock::now();
    for (auto& [connection, socket] : route->open) {
      auto& [fd, opened] = socket;
      if (fd >= 0 && now - opened > route->timeout) {
        ::shutdown(fd, SHUT_RDWR);  // the descriptor stays libmicrohttpd's; it closes it on its next turn
        fd = -1;
      }
    }
  }
}

void OnCompleted(void* cls, MHD_Connection*, void** con_cls, MHD_RequestTerminationCode) {
  auto* request = static_cast<Request*>(*con_cls);
  if (request == nullptr) return;
  static_cast<Route*>(cls)->buffered -= Charged(request->body.size());
  delete request;
  *con_cls = nullptr;
}

MHD_Result Handle(void* cls, MHD_Connection* connection, const char* url, const char* method, const char*,
                  const char* upload_data, size_t* upload_data_size, void** con_cls) {
  Route& route = *static_cast<Route*>(cls);
  auto* request = static_cast<Request*>(*con_cls);
  if (request == nullptr) return MHD_NO;
  // The whole request — headers and body, however slowly they come — within the timeout, or the connection
  // is closed unanswered. (Connections wait in the event loop, not in a worker: a slow client holds a
  // connection slot, bounded per address, never a thread.)
  if (std::chrono::steady_clock::now() - request->started > route.timeout) {
    WitnessLog(WitnessLogLevel::kWarning,
               absl::StrCat("a request did not arrive whole within the timeout [", ClientAddress(connection), "]"));
    return MHD_NO;
  }
  if (!request->headers_seen) {  // the first call: headers only
    request->headers_seen = true;
    if (route.path != url) {
      request->answered = true;
      return Answer(connection, MHD_HTTP_NOT_FOUND, "text/plain; charset=utf-8", "not found\n");
    }
    if (std::strcmp(method, "POST") != 0) {
      request->answered = true;
      return Answer(connection, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain; charset=utf-8", "add-checkpoint takes POST\n",
                    "POST");
    }
    // Declared too large: refused at once when far too large (the connection then closes under a client
    // still sending, which may miss the answer); a little too large, read and dropped (within the
    // timeout, as any body) so that the client reads the 413.
    const char* length = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    const unsigned long long declared = length != nullptr ? std::strtoull(length, nullptr, 10) : 0;
    const char* expect = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
    const bool waits_to_send = expect != nullptr && strcasecmp(expect, "100-continue") == 0;
    if (declared > 2 * static_cast<unsigned long long>(route.max_request_bytes) ||
        (waits_to_send && declared > route.max_request_bytes)) {  // answered before the body is sent
      request->answered = true;
      return Answer(connection, MHD_HTTP_CONTENT_TOO_LARGE, "text/plain; charset=utf-8", "request body too large\n");
    }
    request->too_large = declared > route.max_request_bytes;
    return MHD_YES;
  }
  if (*upload_data_size > 0) {
    const size_t n = *upload_data_size;
    *upload_data_size = 0;
    if (request->answered || request->too_large) return MHD_YES;  // dropped
    // Past the bound (a body without Content-Length), or past what all requests may hold: closed.
    if (request->body.size() + n > route.max_request_bytes) return MHD_NO;
    const size_t charge = Charged(request->body.size() + n) - Charged(request->body.size());
    if (charge > 0 && route.buffered.fetch_add(charge) + charge > kBufferedBodyBudget) {
      route.buffered -= charge;
      return MHD_NO;
    }
    request->body.append(upload_data, n);
    return MHD_YES;
  }
  if (request->answered) return MHD_YES;
  request->answered = true;
  if (request->too_large) {
    return Answer(connection, MHD_HTTP_CONTENT_TOO_LARGE, "text/plain; charset=utf-8", "request body too large\n");
  }
  const WitnessResponse answer = route.witness->AddCheckpoint(request->body);
  const MHD_Result queued = Answer(connection, answer.status, answer.content_type, answer.body);
  if (!answer.log_message.empty()) {
    const WitnessLogLevel level = answer.status == 200 ? WitnessLogLevel::kInfo
                                  : answer.status >= 500 ? WitnessLogLevel::kError
                                                         : WitnessLogLevel::kWarning;
    WitnessLog(level, absl::StrCat(answer.log_message, " [", ClientAddress(connection), "]"));
  }
  return queued;
}

void OnPanicLog(void*, const char* format, va_list args) {
  char line[512];
  std::vsnprintf(line, sizeof line, format, args);
  std::string message(line);
  while (!message.empty() && message.back() == '\n') message.pop_back();
  WitnessLog(WitnessLogLevel::kWarning, absl::StrCat("HTTP server: ", message));
}

}  // namespace

struct WitnessServer::State {
  WitnessRoute route;
  MHD_Daemon* daemon = nullptr;
  std::thread watchdog;
};

absl::StatusOr<std::unique_ptr<WitnessServer>> WitnessServer::Bind(Witness& witness, const WitnessConfig& config) {
  absl::StatusOr<std::pair<std::string, int>> address = SplitListenAddress(config.listen);
  if (!address.ok()) return address.status();
  const auto& [host, port] = *address;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string service = absl::StrCat(port);
  if (int rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &found); rc != 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", config.listen, ": ", gai_strerror(rc)));
  }
  sockaddr_storage bind_address{};
  std::memcpy(&bind_address, found->ai_addr, found->ai_addrlen);
  const bool ipv6 = found->ai_family == AF_INET6;
  ::freeaddrinfo(found);

  std::unique_ptr<WitnessServer> out(new WitnessServer());
  out->state_ = std::make_unique<State>();
  Route& route = out->state_->route;
  route.witness = &witness;
  route.path = config.submission_prefix + kAddCheckpointPath;
  route.max_request_bytes = config.max_request_bytes;
  route.timeout = std::chrono::milliseconds(int64_t{config.request_timeout_s} * 1000);
  // libmicrohttpd, event-driven (epoll) on 4 threads: a connection waits in the loop, not in a worker.
  // Headers must fit in the connection's 32 KiB pool; idle connections close after request_timeout_s;
  // at most 1024 connections (fewer when the descriptor limit, raised first, leaves less than that and a
  // reserve for the state file), 32 from one address.
  const size_t descriptors = common::RaiseDescriptorLimit();
  const unsigned connection_limit =
      static_cast<unsigned>(std::clamp<size_t>(descriptors > 64 ? descriptors - 64 : 16, 16, 1024));
  unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG | (ipv6 ? MHD_USE_IPv6 : 0);
  out->state_->daemon = MHD_start_daemon(
      flags, static_cast<uint16_t>(port), nullptr, nullptr, &Handle, &route,
      MHD_OPTION_EXTERNAL_LOGGER, &OnPanicLog, nullptr,  // first: messages before it go to stderr raw
      MHD_OPTION_SOCK_ADDR, reinterpret_cast<sockaddr*>(&bind_address),
      MHD_OPTION_THREAD_POOL_SIZE, 4u,
      MHD_OPTION_CONNECTION_LIMIT, connection_limit,
      MHD_OPTION_PER_IP_CONNECTION_LIMIT, 32u,
      MHD_OPTION_CONNECTION_TIMEOUT, static_cast<unsigned>(config.request_timeout_s),
      MHD_OPTION_CONNECTION_MEMORY_LIMIT, size_t{32 * 1024},
      MHD_OPTION_URI_LOG_CALLBACK, &OnRequestLine, nullptr,
      MHD_OPTION_NOTIFY_COMPLETED, &OnCompleted, &route,
      MHD_OPTION_NOTIFY_CONNECTION, &OnConnection, &route,
      MHD_OPTION_END);
  if (out->state_->daemon == nullptr) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", config.listen));
  }
  out->state_->watchdog = std::thread(Watchdog, &route);
  const MHD_DaemonInfo* bound = MHD_get_daemon_info(out->state_->daemon, MHD_DAEMON_INFO_BIND_PORT);
  out->port_ = bound != nullptr && bound->port != 0 ? bound->port : port;
  return out;
}

WitnessServer::~WitnessServer() {
  Stop();
  if (state_ == nullptr) return;
  if (state_->daemon != nullptr) MHD_stop_daemon(state_->daemon);  // every connection closed and forgotten
  {
    absl::MutexLock lock(&state_->route.mu);
    state_->route.stopping = true;
  }
  if (state_->watchdog.joinable()) state_->watchdog.join();
}

void WitnessServer::Run() { stopped_.WaitForNotification(); }

void WitnessServer::Stop() {
  absl::MutexLock lock(&stop_mu_);
  if (!stopped_.HasBeenNotified()) stopped_.Notify();
}

}  // namespace osh::witness
