#include "common/http_server.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netdb.h>
#include <strings.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/ascii.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/descriptor_limit.h"

namespace osh::common {
namespace http_internal {

// An address block of `allow`: 16 bytes (IPv4 as IPv4-mapped IPv6) and a prefix length over them.
struct Network {
  std::array<unsigned char, 16> address{};
  int prefix = 0;

  bool Contains(const std::array<unsigned char, 16>& other) const {
    const int whole = prefix / 8, bits = prefix % 8;
    if (std::memcmp(address.data(), other.data(), whole) != 0) return false;
    if (bits == 0) return true;
    const unsigned char mask = static_cast<unsigned char>(0xFF << (8 - bits));
    return (address[whole] & mask) == (other[whole] & mask);
  }
};

std::array<unsigned char, 16> Mapped(const in_addr& v4) {
  std::array<unsigned char, 16> out{};
  out[10] = out[11] = 0xFF;
  std::memcpy(out.data() + 12, &v4, 4);
  return out;
}

}  // namespace http_internal

namespace {

using http_internal::Mapped;
using http_internal::Network;


// Body bytes all requests together may hold at once beyond the first kFreeBodyBytes of each (a real
// request is a few KiB, so stalled large bodies never crowd one out): a flood of large bodies is
// refused, not buffered.
constexpr size_t kBufferedBodyBudget = size_t{64} << 20;
constexpr size_t kFreeBodyBytes = 64 * 1024;

// The part of a body of `size` bytes charged to the shared budget.
size_t Charged(size_t size) { return size > kFreeBodyBytes ? size - kFreeBodyBytes : 0; }

absl::StatusOr<Network> ParseNetwork(absl::string_view text) {
  const absl::string_view trimmed = absl::StripAsciiWhitespace(text);
  const std::vector<std::string> parts = absl::StrSplit(trimmed, absl::MaxSplits('/', 1));
  Network out;
  in_addr v4{};
  in6_addr v6{};
  int max_prefix = 0;
  if (inet_pton(AF_INET, parts[0].c_str(), &v4) == 1) {
    out.address = Mapped(v4);
    max_prefix = 32;
  } else if (inet_pton(AF_INET6, parts[0].c_str(), &v6) == 1) {
    std::memcpy(out.address.data(), &v6, 16);
    max_prefix = 128;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("'", trimmed, "' is not an address or CIDR"));
  }
  int prefix = max_prefix;
  if (parts.size() == 2 && (!absl::SimpleAtoi(parts[1], &prefix) || prefix < 0 || prefix > max_prefix)) {
    return absl::InvalidArgumentError(absl::StrCat("'", trimmed, "' has a bad prefix length"));
  }
  out.prefix = prefix + (max_prefix == 32 ? 96 : 0);
  return out;
}

std::string AddressText(const sockaddr* address) {
  char host[INET6_ADDRSTRLEN] = "?";
  if (address == nullptr) return host;
  if (address->sa_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(address)->sin_addr, host, sizeof host);
  } else if (address->sa_family == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(address)->sin6_addr, host, sizeof host);
  }
  return host;
}

// One request, from its request line (the URI callback) to its end (the completed callback).
struct Request {
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  bool headers_seen = false;
  bool answered = false;   // a response is queued: any further body is dropped
  bool too_large = false;  // declared over max_body_bytes: read, dropped, then 413
  HttpRequest head;
};

}  // namespace

struct HttpServer::State {
  Options options;
  Route route;
  Handle handle;
  std::vector<http_internal::Network> allow;
  std::atomic<size_t> buffered{0};  // body bytes held by all requests
  MHD_Daemon* daemon = nullptr;
  std::thread watchdog;

  // Every open connection's socket and when it opened (see the header: the watchdog shuts down the
  // socket of a connection open longer than the timeout, and libmicrohttpd then closes it as it would
  // any dead peer's).
  absl::Mutex mu;
  std::map<MHD_Connection*, std::pair<int, std::chrono::steady_clock::time_point>> open ABSL_GUARDED_BY(mu);
  bool stopping ABSL_GUARDED_BY(mu) = false;

  void Log(LogLevel level, const std::string& message) const {
    if (options.log) options.log(level, message);
  }
};

namespace {

using State = HttpServer::State;

MHD_Result Answer(MHD_Connection* connection, const HttpResponse& answer) {
  MHD_Response* response =
      MHD_create_response_from_buffer(answer.body.size(), const_cast<char*>(answer.body.data()), MHD_RESPMEM_MUST_COPY);
  if (response == nullptr) return MHD_NO;
  MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, answer.content_type.c_str());
  for (const auto& [name, value] : answer.headers) MHD_add_response_header(response, name.c_str(), value.c_str());
  MHD_add_response_header(response, MHD_HTTP_HEADER_CONNECTION, "close");  // one request per connection
  const MHD_Result queued = MHD_queue_response(connection, answer.status, response);
  MHD_destroy_response(response);
  return queued;
}

HttpResponse TooLarge() { return HttpResponse{MHD_HTTP_CONTENT_TOO_LARGE, "text/plain; charset=utf-8", "request body too large\n", {}}; }

void* OnRequestLine(void*, const char*, MHD_Connection*) { return new Request(); }

MHD_Result OnAccept(void* cls, const sockaddr* address, socklen_t) {
  const State& state = *static_cast<const State*>(cls);
  if (state.allow.empty()) return MHD_YES;
  std::array<unsigned char, 16> peer{};
  if (address->sa_family == AF_INET) {
    peer = Mapped(reinterpret_cast<const sockaddr_in*>(address)->sin_addr);
  } else if (address->sa_family == AF_INET6) {
    std::memcpy(peer.data(), &reinterpret_cast<const sockaddr_in6*>(address)->sin6_addr, 16);
  } else {
    return MHD_NO;
  }
  for (const Network& network : state.allow) {
    if (network.Contains(peer)) return MHD_YES;
  }
  return MHD_NO;
}

void OnConnection(void* cls, MHD_Connection* connection, void**, MHD_ConnectionNotificationCode code) {
  State& state = *static_cast<State*>(cls);
  absl::MutexLock lock(&state.mu);
  if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
    state.open.erase(connection);  // from here on its descriptor may be another's: never touched again
    return;
  }
  const MHD_ConnectionInfo* info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
  if (info != nullptr) state.open[connection] = {info->connect_fd, std::chrono::steady_clock::now()};
}

// Shuts down the sockets of connections open longer than the timeout, until the server stops.
void Watchdog(State* state) {
  absl::MutexLock lock(&state->mu);
  auto stopping = [state]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(state->mu) { return state->stopping; };
  while (!state->mu.AwaitWithTimeout(absl::Condition(&stopping), absl::Milliseconds(100))) {
    const auto now = std::chrono::steady_clock::now();
    for (auto& [connection, socket] : state->open) {
      auto& [fd, opened] = socket;
      if (fd >= 0 && now - opened > state->options.request_timeout) {
        ::shutdown(fd, SHUT_RDWR);  // the descriptor stays libmicrohttpd's; it closes it on its next turn
        fd = -1;
      }
    }
  }
}

void OnCompleted(void* cls, MHD_Connection*, void** con_cls, MHD_RequestTerminationCode) {
  auto* request = static_cast<Request*>(*con_cls);
  if (request == nullptr) return;
  static_cast<State*>(cls)->buffered -= Charged(request->head.body.size());
  delete request;
  *con_cls = nullptr;
}

MHD_Result OnRequest(void* cls, MHD_Connection* connection, const char* url, const char* method, const char*,
                     const char* upload_data, size_t* upload_data_size, void** con_cls) {
  State& state = *static_cast<State*>(cls);
  auto* request = static_cast<Request*>(*con_cls);
  if (request == nullptr) return MHD_NO;
  if (std::chrono::steady_clock::now() - request->started > state.options.request_timeout) {
    state.Log(HttpServer::LogLevel::kWarning, absl::StrCat(state.options.name, ": a request did not arrive whole within the timeout [",
                                               request->head.client, "]"));
    return MHD_NO;
  }
  if (!request->headers_seen) {  // the first call: headers only
    request->headers_seen = true;
    const MHD_ConnectionInfo* info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    request->head.client = AddressText(info != nullptr ? info->client_addr : nullptr);
    request->head.method = method;
    request->head.path = url;
    if (std::optional<HttpResponse> answer = state.route(request->head)) {
      request->answered = true;
      return Answer(connection, *answer);
    }
    // Declared too large: refused at once when far too large (the connection then closes under a client
    // still sending, which may miss the answer); a little too large, read and dropped (within the
    // timeout, as any body) so that the client reads the 413.
    const size_t max = state.options.max_body_bytes;
    const char* length = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    const unsigned long long declared = length != nullptr ? std::strtoull(length, nullptr, 10) : 0;
    const char* expect = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
    const bool waits_to_send = expect != nullptr && strcasecmp(expect, "100-continue") == 0;
    if (declared > 2 * static_cast<unsigned long long>(max) || (waits_to_send && declared > max)) {
      request->answered = true;  // answered before the body is sent
      return Answer(connection, TooLarge());
    }
    request->too_large = declared > max;
    return MHD_YES;
  }
  if (*upload_data_size > 0) {
    const size_t n = *upload_data_size;
    *upload_data_size = 0;
    if (request->answered || request->too_large) return MHD_YES;  // dropped
    std::string& body = request->head.body;
    // Past the bound (a body without Content-Length), or past what all requests may hold: closed.
    if (body.size() + n > state.options.max_body_bytes) return MHD_NO;
    const size_t charge = Charged(body.size() + n) - Charged(body.size());
    if (charge > 0 && state.buffered.fetch_add(charge) + charge > kBufferedBodyBudget) {
      state.buffered -= charge;
      return MHD_NO;
    }
    body.append(upload_data, n);
    return MHD_YES;
  }
  if (request->answered) return MHD_YES;
  request->answered = true;
  if (request->too_large) return Answer(connection, TooLarge());
  return Answer(connection, state.handle(request->head));
}

void OnPanicLog(void* cls, const char* format, va_list args) {
  const State& state = *static_cast<const State*>(cls);
  char line[512];
  std::vsnprintf(line, sizeof line, format, args);
  std::string message(line);
  while (!message.empty() && message.back() == '\n') message.pop_back();
  state.Log(HttpServer::LogLevel::kWarning, absl::StrCat(state.options.name, ": ", message));
}

}  // namespace

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const std::string& host, int port, Options options, Route route,
                                                              Handle handle) {
  std::unique_ptr<HttpServer> out(new HttpServer());
  out->state_ = std::make_unique<State>();
  State& state = *out->state_;
  for (const std::string& entry : options.allow) {
    auto network = ParseNetwork(entry);
    if (!network.ok()) return absl::InvalidArgumentError(absl::StrCat(options.name, ": allow: ", network.status().message()));
    state.allow.push_back(*network);
  }
  const std::string listen = absl::StrCat(host.find(':') != std::string::npos ? absl::StrCat("[", host, "]") : host, ":", port);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string service = absl::StrCat(port);
  if (int rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &found); rc != 0) {
    return absl::UnavailableError(absl::StrCat(options.name, ": cannot listen on ", listen, ": ", gai_strerror(rc)));
  }
  sockaddr_storage bind_address{};
  std::memcpy(&bind_address, found->ai_addr, found->ai_addrlen);
  const bool ipv6 = found->ai_family == AF_INET6;
  ::freeaddrinfo(found);

  state.options = std::move(options);
  state.route = std::move(route);
  state.handle = std::move(handle);
  // Headers must fit in the connection's 32 KiB pool; idle connections close after the timeout; at most
  // 1024 connections (fewer when the descriptor limit, raised first, leaves less than that and a reserve
  // for the rest of the process), 32 from one address.
  const size_t descriptors = RaiseDescriptorLimit();
  const unsigned connection_limit =
      static_cast<unsigned>(std::clamp<size_t>(descriptors > 64 ? descriptors - 64 : 16, 16, 1024));
  const auto timeout_s = std::chrono::duration_cast<std::chrono::seconds>(state.options.request_timeout).count();
  const unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG | (ipv6 ? MHD_USE_IPv6 : 0);
  state.daemon = MHD_start_daemon(
      flags, static_cast<uint16_t>(port), &OnAccept, &state, &OnRequest, &state,
      MHD_OPTION_EXTERNAL_LOGGER, &OnPanicLog, &state,  // first: messages before it go to stderr raw
      MHD_OPTION_SOCK_ADDR, reinterpret_cast<sockaddr*>(&bind_address),
      MHD_OPTION_THREAD_POOL_SIZE, std::max(1u, state.options.threads),
      MHD_OPTION_CONNECTION_LIMIT, connection_limit,
      MHD_OPTION_PER_IP_CONNECTION_LIMIT, 32u,
      MHD_OPTION_CONNECTION_TIMEOUT, static_cast<unsigned>(std::max<int64_t>(1, timeout_s)),
      MHD_OPTION_CONNECTION_MEMORY_LIMIT, size_t{32 * 1024},
      MHD_OPTION_URI_LOG_CALLBACK, &OnRequestLine, nullptr,
      MHD_OPTION_NOTIFY_COMPLETED, &OnCompleted, &state,
      MHD_OPTION_NOTIFY_CONNECTION, &OnConnection, &state,
      MHD_OPTION_END);
  if (state.daemon == nullptr) {
    return absl::UnavailableError(absl::StrCat(state.options.name, ": cannot listen on ", listen));
  }
  state.watchdog = std::thread(Watchdog, &state);
  const MHD_DaemonInfo* bound = MHD_get_daemon_info(state.daemon, MHD_DAEMON_INFO_BIND_PORT);
  out->port_ = bound != nullptr && bound->port != 0 ? bound->port : port;
  return out;
}

HttpServer::~HttpServer() {
  if (state_ == nullptr) return;
  if (state_->daemon != nullptr) MHD_stop_daemon(state_->daemon);  // every connection closed and forgotten
  {
    absl::MutexLock lock(&state_->mu);
    state_->stopping = true;
  }
  if (state_->watchdog.joinable()) state_->watchdog.join();
}

}  // namespace osh::common
