#include "common/http_server.h"

#include "common/address_share.h"
#include "common/ip_network.h"

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
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/ascii.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/descriptor_limit.h"

namespace osh::common {

namespace {


// Body bytes all requests together may hold at once beyond the first kFreeBodyBytes of each (a real
// request is a few KiB, so stalled large bodies never crowd one out): a flood of large bodies is
// refused, not buffered.
constexpr size_t kBufferedBodyBudget = size_t{64} << 20;
constexpr size_t kFreeBodyBytes = 64 * 1024;

// The part of a body of `size` bytes charged to the shared budget.
size_t Charged(size_t size) { return size > kFreeBodyBytes ? size - kFreeBodyBytes : 0; }

// An `allow` entry, IPv4 as its IPv4-mapped block: a dual-stack listener sees IPv4 clients mapped, and
// AddressOf gives every client in that form.
absl::StatusOr<IpNetwork> ParseAllowEntry(absl::string_view text) {
  const absl::string_view trimmed = absl::StripAsciiWhitespace(text);
  auto network = ParseIpNetwork(trimmed);
  if (!network.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("'", trimmed, "' ", absl::StartsWith(network.status().message(), "invalid")
                                                                           ? "has a bad prefix length"
                                                                           : "is not an address or CIDR"));
  }
  return MappedToV6(*network);
}

std::string PeerText(const sockaddr* address) {
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
  size_t charged = 0;      // what this request's body holds of the shared budget
  HttpRequest head;
};

}  // namespace

struct HttpServer::State {
  Options options;
  Route route;
  Handle handle;
  std::vector<IpNetwork> allow;  // IPv4 as IPv4-mapped (ParseAllowEntry)
  std::atomic<size_t> buffered{0};  // body bytes held by all requests
  MHD_Daemon* daemon = nullptr;
  std::thread watchdog;

  // Every open connection's socket, when it opened, and whether its request has been answered (see the
  // header: the watchdog shuts down the socket of a connection past its deadline, and libmicrohttpd then
  // closes it as it would any dead peer's).
  struct Open {
    int fd = -1;
    std::chrono::steady_clock::time_point opened;
    bool answered = false;
    osh::common::AddressShares::Counted counted;  // in `shares`
  };
  absl::Mutex mu;
  std::map<MHD_Connection*, Open> open ABSL_GUARDED_BY(mu);
  // Open connections per client address and per block of addresses (common/address_share.h: an IPv6
  // /64). A connection is counted from libmicrohttpd's "started" notice to its "closed" one and refused at
  // accept when either is full; two accepts on different event threads may both pass, so a count can
  // exceed its limit by the threads less one.
  // 32 and 256 at most, and never more than a quarter and a half of the connections: a small server (the
  // metrics listener's 64) is not filled by two addresses, nor by one /64 (review 110).
  osh::common::AddressShares shares ABSL_GUARDED_BY(mu){32, 256};
  bool stopping ABSL_GUARDED_BY(mu) = false;

  // The server's own messages, at most kLogBurst a minute: a client cannot flood the log (and through it
  // the journal's rate limit, which would then drop the daemon's other warnings). What is dropped is
  // counted and said with the next message let through.
  static constexpr int kLogBurst = 20;
  absl::Mutex log_mu;
  std::chrono::steady_clock::time_point log_window ABSL_GUARDED_BY(log_mu);
  int logged ABSL_GUARDED_BY(log_mu) = 0;
  size_t dropped ABSL_GUARDED_BY(log_mu) = 0;

  void Log(LogLevel level, const std::string& message) {
    if (!options.log) return;
    size_t dropped_before = 0;
    {
      absl::MutexLock lock(&log_mu);
      const auto now = std::chrono::steady_clock::now();
      if (now - log_window >= std::chrono::minutes(1)) log_window = now, logged = 0;
      if (logged >= kLogBurst) {
        ++dropped;
        return;
      }
      ++logged;
      dropped_before = std::exchange(dropped, 0);
    }
    options.log(level, dropped_before == 0 ? message
                                           : absl::StrCat(message, " (and ", dropped_before,
                                                          " earlier message(s) of this server not logged: at most ",
                                                          kLogBurst, " a minute)"));
  }

  void MarkAnswered(MHD_Connection* connection) {
    absl::MutexLock lock(&mu);
    if (auto it = open.find(connection); it != open.end()) it->second.answered = true;
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
  State& state = *static_cast<State*>(cls);
  const auto key = AddressOf(address);
  if (!key) return MHD_NO;
  IpNetwork peer;
  peer.v6 = true;
  peer.address = *key;
  peer.prefix = 128;
  if (!state.allow.empty() &&
      std::none_of(state.allow.begin(), state.allow.end(), [&peer](const IpNetwork& network) { return Contains(network, peer); })) {
    return MHD_NO;
  }
  std::optional<osh::common::AddressShares::Full> full;
  {
    absl::MutexLock lock(&state.mu);
    full = state.shares.Refusal(address);
  }
  if (full) {
    state.Log(HttpServer::LogLevel::kWarning,
              absl::StrCat(state.options.name, ": a connection refused: ", full->held, " are open from ", full->whom));
    return MHD_NO;
  }
  return MHD_YES;
}

void OnConnection(void* cls, MHD_Connection* connection, void**, MHD_ConnectionNotificationCode code) {
  State& state = *static_cast<State*>(cls);
  absl::MutexLock lock(&state.mu);
  if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
    // From here on its descriptor may be another's: never touched again.
    if (auto it = state.open.find(connection); it != state.open.end()) {
      state.shares.Release(it->second.counted);
      state.open.erase(it);
    }
    return;
  }
  const MHD_ConnectionInfo* info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
  const MHD_ConnectionInfo* client = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
  State::Open entry{info != nullptr ? info->connect_fd : -1, std::chrono::steady_clock::now(), false,
                    client != nullptr ? state.shares.Take(client->client_addr) : osh::common::AddressShares::Counted{}};
  state.open[connection] = std::move(entry);
}

// Shuts down the sockets of connections past their deadline — the request not whole within
// request_timeout, or the answer not taken within response_timeout more — until the server stops.
void Watchdog(State* state) {
  absl::MutexLock lock(&state->mu);
  auto stopping = [state]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(state->mu) { return state->stopping; };
  const auto request_deadline = state->options.request_timeout;
  const auto answer_deadline = state->options.request_timeout + state->options.response_timeout;
  while (!state->mu.AwaitWithTimeout(absl::Condition(&stopping), absl::Milliseconds(100))) {
    const auto now = std::chrono::steady_clock::now();
    for (auto& [connection, open] : state->open) {
      if (open.fd >= 0 && now - open.opened > (open.answered ? answer_deadline : request_deadline)) {
        ::shutdown(open.fd, SHUT_RDWR);  // the descriptor stays libmicrohttpd's; it closes it on its next turn
        open.fd = -1;
      }
    }
  }
}

void OnCompleted(void* cls, MHD_Connection*, void** con_cls, MHD_RequestTerminationCode) {
  auto* request = static_cast<Request*>(*con_cls);
  if (request == nullptr) return;
  static_cast<State*>(cls)->buffered -= request->charged;
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
    request->head.client = PeerText(info != nullptr ? info->client_addr : nullptr);
    request->head.method = method;
    request->head.path = url;
    const char* length = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    const unsigned long long declared = length != nullptr ? std::strtoull(length, nullptr, 10) : 0;
    request->head.has_body =
        declared > 0 || MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING) != nullptr;
    if (std::optional<HttpResponse> answer = state.route(request->head)) {
      request->answered = true;
      state.MarkAnswered(connection);
      return Answer(connection, *answer);
    }
    // Declared too large: refused at once when far too large (the connection then closes under a client
    // still sending, which may miss the answer); a little too large, read and dropped (within the
    // timeout, as any body) so that the client reads the 413.
    const size_t max = state.options.max_body_bytes;
    const char* expect = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
    const bool waits_to_send = expect != nullptr && strcasecmp(expect, "100-continue") == 0;
    if (declared > 2 * static_cast<unsigned long long>(max) || (waits_to_send && declared > max)) {
      request->answered = true;  // answered before the body is sent
      state.MarkAnswered(connection);
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
    // Past the bound (a body without Content-Length), or past what all requests may hold: closed. What is
    // charged is the memory held (the string's capacity, grown here, not by append's doubling).
    if (body.size() + n > state.options.max_body_bytes) return MHD_NO;
    if (body.size() + n > body.capacity()) {
      const size_t grown = std::min(std::max(body.size() + n, 2 * body.capacity()), state.options.max_body_bytes);
      const size_t charge = Charged(grown) > request->charged ? Charged(grown) - request->charged : 0;
      if (charge > 0 && state.buffered.fetch_add(charge) + charge > kBufferedBodyBudget) {
        state.buffered -= charge;
        return MHD_NO;
      }
      request->charged += charge;
      body.reserve(grown);
      // The allocator may give more than asked (libstdc++ at least doubles): that is held too.
      if (const size_t held = Charged(body.capacity()); held > request->charged) {
        state.buffered += held - request->charged;
        request->charged = held;
      }
    }
    body.append(upload_data, n);
    return MHD_YES;
  }
  if (request->answered) return MHD_YES;
  request->answered = true;
  state.MarkAnswered(connection);
  if (request->too_large) return Answer(connection, TooLarge());
  return Answer(connection, state.handle(request->head));
}

void OnPanicLog(void* cls, const char* format, va_list args) {
  State& state = *static_cast<State*>(cls);
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
    auto network = ParseAllowEntry(entry);
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
  // A name with addresses of both families ("localhost") is bound on its IPv4 address, as before; every
  // address ("") on the IPv6 wildcard, which takes IPv4 clients too (dual stack).
  const int preferred = host.empty() ? AF_INET6 : AF_INET;
  const addrinfo* chosen = found;
  for (const addrinfo* a = found; a != nullptr; a = a->ai_next) {
    if (a->ai_family == preferred) {
      chosen = a;
      break;
    }
  }
  sockaddr_storage bind_address{};
  std::memcpy(&bind_address, chosen->ai_addr, chosen->ai_addrlen);
  const bool ipv6 = chosen->ai_family == AF_INET6;
  ::freeaddrinfo(found);

  state.options = std::move(options);
  state.route = std::move(route);
  state.handle = std::move(handle);
  // Headers must fit in the connection's 32 KiB pool; idle connections close after the timeout; at most
  // 1024 connections (fewer when the descriptor limit, raised first, leaves less than that and a reserve
  // for the rest of the process), 32 from one address and 256 from one IPv6 /64 (OnAccept).
  const size_t descriptors = RaiseDescriptorLimit();
  const unsigned connection_limit = static_cast<unsigned>(
      std::clamp<size_t>(descriptors > 64 ? descriptors - 64 : 16, 16, std::max<size_t>(16, state.options.max_connections)));
  {
    absl::MutexLock lock(&state.mu);
    state.shares = osh::common::AddressShares(std::clamp<size_t>(connection_limit / 4, 1, 32),
                                              std::clamp<size_t>(connection_limit / 2, 1, 256));
  }
  const auto timeout_s = (state.options.request_timeout.count() + 999) / 1000;  // whole seconds, rounded up
  // An IPv6 address takes IPv4 clients too (as IPv4-mapped addresses: `allow` matches them as IPv4).
  const unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG | (ipv6 ? MHD_USE_DUAL_STACK : 0);
  state.daemon = MHD_start_daemon(
      flags, static_cast<uint16_t>(port), &OnAccept, &state, &OnRequest, &state,
      MHD_OPTION_EXTERNAL_LOGGER, &OnPanicLog, &state,  // first: messages before it go to stderr raw
      MHD_OPTION_SOCK_ADDR, reinterpret_cast<sockaddr*>(&bind_address),
      MHD_OPTION_THREAD_POOL_SIZE, std::max(1u, state.options.threads),
      MHD_OPTION_CONNECTION_LIMIT, connection_limit,
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
  size_t dropped = 0;
  {
    absl::MutexLock lock(&state_->log_mu);
    dropped = std::exchange(state_->dropped, 0);
  }
  if (dropped > 0 && state_->options.log) {
    state_->options.log(LogLevel::kWarning, absl::StrCat(state_->options.name, ": ", dropped,
                                                         " message(s) of this server not logged (at most ",
                                                         State::kLogBurst, " a minute)"));
  }
}

}  // namespace osh::common
