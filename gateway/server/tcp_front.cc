#include "gateway/server/tcp_front.h"

#include "common/host_port.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gateway/core/log.h"
#include "common/address_share.h"
#include "gateway/server/peer_share.h"

namespace osh::gateway {
namespace {

constexpr size_t kBufferBytes = 32 * 1024;

// Bytes read from one side, not yet written to the other. Its memory is held only while it holds bytes:
// ten thousand idle watch streams hold no buffers.
struct Buffer {
  std::unique_ptr<char[]> bytes;
  size_t begin = 0, end = 0;
  bool empty() const { return begin == end; }
  size_t room() const { return kBufferBytes - end; }
  char* data() {
    if (bytes == nullptr) bytes.reset(new char[kBufferBytes]);
    return bytes.get();
  }
  void Compact() {
    if (begin == end) {
      begin = end = 0;
      bytes.reset();
    } else if (begin > 0 && room() == 0) {
      std::memmove(bytes.get(), bytes.get() + begin, end - begin);
      end -= begin;
      begin = 0;
    }
  }
};

}  // namespace

// The relay: one epoll loop over the listening socket and both ends of every connection.
class TcpFront::Loop {
 public:
  Loop(int listen_fd, std::string address, std::string backend, Options options, int epoll_fd, int wake_fd,
       int nudge_fd)
      : listen_fd_(listen_fd),
        address_(std::move(address)),
        backend_(std::move(backend)),
        options_(std::move(options)),
        shares_(options_.max_per_peer, TcpFront::BlockShare(options_)),
        epoll_(epoll_fd),
        wake_(wake_fd),
        nudge_(nudge_fd) {}
  ~Loop() {
    const uint64_t one = 1;
    [[maybe_unused]] auto written = ::write(wake_, &one, sizeof(one));
    if (thread_.joinable()) thread_.join();
    for (Conn* conn : conns_) {
      ::close(conn->client.fd);
      ::close(conn->backend.fd);
      delete conn;
    }
    ::close(epoll_);
    ::close(wake_);
    ::close(nudge_);
  }
  void Run() { thread_ = std::thread([this] { Serve(); }); }
  // Has the loop take the listening socket out of its epoll and close it; returns once it has. The open
  // connections go on being relayed.
  void StopAccepting() {
    const uint64_t one = 1;
    [[maybe_unused]] auto written = ::write(nudge_, &one, sizeof(one));
    accept_closed_.WaitForNotification();
  }
  size_t open() const { return open_.load(); }

 private:
  struct Conn;
  // One end of a connection; epoll's data points at it.
  struct End {
    Conn* conn;
    int fd;
    bool eof = false;        // read side done
    bool shut = false;       // we shut its write side
    uint32_t events = 0;     // what epoll watches now
    bool removed = false;    // taken out of epoll (a backend that closed: see Rearm)
  };
  struct Peer {  // a peer address's byte budget, kept while it holds a connection (shares_ counts them)
    double tokens = 0;  // bytes it may still send now
    std::chrono::steady_clock::time_point refilled{};
  };
  struct Conn {
    End client, backend;
    Buffer up, down;  // client -> backend, backend -> client
    std::string peer;
    common::AddressShares::Counted counted;  // in shares_
    bool throttled = false;  // its peer's bucket is empty: not reading from the client for now
  };

  static End& Other(End& end) { return &end == &end.conn->client ? end.conn->backend : end.conn->client; }
  // What `end` reads into and writes from.
  static Buffer& Inbox(End& end) { return &end == &end.conn->client ? end.conn->up : end.conn->down; }
  static Buffer& Outbox(End& end) { return &end == &end.conn->client ? end.conn->down : end.conn->up; }

  void Serve() {
    epoll_event listen_event{};
    listen_event.events = EPOLLIN;
    listen_event.data.ptr = nullptr;
    ::epoll_ctl(epoll_, EPOLL_CTL_ADD, listen_fd_, &listen_event);
    epoll_event wake_event{};
    wake_event.events = EPOLLIN;
    wake_event.data.ptr = const_cast<int*>(&wake_);
    ::epoll_ctl(epoll_, EPOLL_CTL_ADD, wake_, &wake_event);
    epoll_event nudge_event{};
    nudge_event.events = EPOLLIN;
    nudge_event.data.ptr = const_cast<int*>(&nudge_);
    ::epoll_ctl(epoll_, EPOLL_CTL_ADD, nudge_, &nudge_event);
    bool listening = true, warned_descriptors = false, closed_listener = false;
    std::vector<epoll_event> events(256);
    for (;;) {
      const bool full = conns_.size() >= options_.max_connections;
      if (!closed_listener && full == listening) {
        listening = !full;
        epoll_event change{};
        change.events = listening ? static_cast<uint32_t>(EPOLLIN) : 0u;
        change.data.ptr = nullptr;
        ::epoll_ctl(epoll_, EPOLL_CTL_MOD, listen_fd_, &change);
        if (full) {
          LogWarning(absl::StrCat(address_, ": ", conns_.size(), " connections open, the cap (", options_.max_connections,
                                  "): not accepting until some close"));
        } else {
          LogInfo(absl::StrCat(address_, ": accepting connections again (", conns_.size(), " open)"));
        }
        if (options_.on_state) options_.on_state(listening);
      }
      const int ready =
          ::epoll_wait(epoll_, events.data(), static_cast<int>(events.size()), throttled_.empty() ? 1000 : 10);
      if (ready < 0) {
        if (errno == EINTR) continue;
        LogError(absl::StrCat(address_, ": epoll_wait: ", std::strerror(errno)));
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        continue;
      }
      // The wake (the destructor) and the nudge (StopAccepting) first: an accept that fails below stops
      // this batch's accepting, and must never keep either from being seen.
      for (int i = 0; i < ready; ++i) {
        if (events[i].data.ptr == &wake_) return;
      }
      for (int i = 0; i < ready; ++i) {
        if (events[i].data.ptr != &nudge_) continue;
        uint64_t count = 0;
        [[maybe_unused]] auto got = ::read(nudge_, &count, sizeof(count));
        if (!closed_listener) {  // a stop: new connections are refused by the kernel from now on
          ::epoll_ctl(epoll_, EPOLL_CTL_DEL, listen_fd_, nullptr);
          ::close(listen_fd_);
          closed_listener = true;
          accept_closed_.Notify();
        }
      }
      bool accept_backoff = false;
      for (int i = 0; i < ready; ++i) {
        if (events[i].data.ptr == &nudge_) continue;
        if (events[i].data.ptr == nullptr) {
          if (closed_listener || accept_backoff) continue;  // closed above, or out of descriptors
          if (!Accept(&warned_descriptors)) accept_backoff = true;  // connections below may free some
          continue;
        }
        End& end = *static_cast<End*>(events[i].data.ptr);
        if (closed_.contains(end.conn)) continue;  // closed earlier in this batch
        Pump(end, events[i].events);
      }
      for (Conn* conn : closed_) delete conn;
      closed_.clear();
      Unthrottle();
    }
  }

  // Accepts every pending connection (up to the cap). False when descriptors ran out.
  bool Accept(bool* warned) {
    while (conns_.size() < options_.max_connections) {
      sockaddr_storage address{};
      socklen_t size = sizeof(address);
      const int fd = ::accept4(listen_fd_, reinterpret_cast<sockaddr*>(&address), &size, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd < 0) {
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
          if (!*warned) LogWarning(absl::StrCat(address_, ": accept: ", std::strerror(errno), "; retrying"));
          *warned = true;
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
          return false;
        }
        return true;  // EAGAIN (none left), ECONNABORTED, EINTR
      }
      *warned = false;
      const auto* from = reinterpret_cast<const sockaddr*>(&address);
      std::string peer = common::AddressText(from);
      // Looked up, not counted: a peer whose connection fails below leaves no entry behind (a client rotating
      // its source addresses while the backend is down would grow the maps).
      if (const auto full = shares_.Refusal(from)) {
        ::close(fd);
        share_refusals_.Refused(address_, full->whom, full->held,
                                full->block ? "an IPv6 /64's share, half the listener's connections"
                                            : "its share (max_connections_per_peer)");
        continue;
      }
      const int backend = ConnectBackend();
      if (backend < 0) {
        ::close(fd);
        continue;
      }
      const int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      auto* conn = new Conn{{nullptr, fd}, {nullptr, backend}, {}, {}, std::move(peer), shares_.Take(from)};
      conn->client.conn = conn->backend.conn = conn;
      conns_.insert(conn);
      if (auto [held, first] = per_peer_.try_emplace(conn->peer); first) {
        held->second.tokens = Burst();
        held->second.refilled = std::chrono::steady_clock::now();
      }
      open_ = conns_.size();
      Watch(conn->client, EPOLLIN, EPOLL_CTL_ADD);
      Watch(conn->backend, EPOLLIN, EPOLL_CTL_ADD);
    }
    return true;
  }

  int ConnectBackend() {
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::memcpy(address.sun_path, backend_.c_str(), std::min(backend_.size() + 1, sizeof(address.sun_path) - 1));
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return -1;
    if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 && errno != EINPROGRESS) {
      if (!warned_backend_) LogError(absl::StrCat(address_, ": cannot reach ", backend_, ": ", std::strerror(errno)));
      warned_backend_ = true;
      ::close(fd);
      return -1;
    }
    warned_backend_ = false;
    return fd;
  }

  void Watch(End& end, uint32_t events, int op = EPOLL_CTL_MOD) {
    if (op == EPOLL_CTL_MOD && events == end.events) return;
    epoll_event event{};
    event.events = events;
    event.data.ptr = &end;
    ::epoll_ctl(epoll_, op, end.fd, &event);
    end.events = events;
  }

  // Moves what `end` has to read and to write, then updates what both ends wait for.
  void Pump(End& end, uint32_t ready) {
    Conn& conn = *end.conn;
    End& other = Other(end);
    // A client gone both ways can take nothing more: what it sent last is of no use to anyone.
    if ((ready & (EPOLLHUP | EPOLLERR)) != 0 && &end == &conn.client) return Close(conn);
    if ((ready & (EPOLLIN | EPOLLHUP | EPOLLERR)) != 0 && !end.eof) {
      if (!Read(end) || !Write(other)) return Close(conn);
    }
    if ((ready & EPOLLOUT) != 0) {
      if (!Write(end)) return Close(conn);
    }
    if ((ready & EPOLLERR) != 0) return Close(conn);
    // The server is done and everything it said was delivered; or both directions finished.
    if (conn.backend.eof && conn.down.empty()) return Close(conn);
    if (conn.client.eof && conn.backend.eof && conn.up.empty() && conn.down.empty()) return Close(conn);
    Rearm(end);
    Rearm(other);
  }

  // Reads from `end` into its inbox until it would block or the inbox is full. False on an error.
  bool Read(End& end) {
    Buffer& in = Inbox(end);
    const bool metered = &end == &end.conn->client && options_.max_bytes_per_peer_per_s != 0;
    while (!end.eof) {
      in.Compact();
      if (in.room() == 0) break;
      size_t want = in.room();
      Peer* peer = nullptr;
      if (metered) {
        peer = &per_peer_[end.conn->peer];
        Refill(*peer);
        if (peer->tokens < 1) {
          end.conn->throttled = true;
          throttled_.insert(end.conn);
          break;
        }
        want = std::min(want, static_cast<size_t>(peer->tokens));
      }
      const ssize_t n = ::read(end.fd, in.data() + in.end, want);
      if (n > 0) {
        in.end += static_cast<size_t>(n);
        if (peer != nullptr) peer->tokens -= static_cast<double>(n);
      } else if (n == 0) {
        end.eof = true;
      } else if (errno == EINTR) {
        continue;
      } else {
        return errno == EAGAIN || errno == EWOULDBLOCK;
      }
    }
    return true;
  }

  // Writes `end`'s outbox to it until it would block; shuts its write side once the other end is done
  // and everything is written. False on an error.
  bool Write(End& end) {
    Buffer& out = Outbox(end);
    while (!out.empty()) {
      const ssize_t n = ::send(end.fd, out.data() + out.begin, out.end - out.begin, MSG_NOSIGNAL);
      if (n > 0) {
        out.begin += static_cast<size_t>(n);
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else {
        return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
      }
    }
    out.Compact();
    if (out.empty() && Other(end).eof && !end.shut) {
      ::shutdown(end.fd, SHUT_WR);
      end.shut = true;
    }
    return true;
  }

  double Burst() const { return std::max<double>(64 * 1024, static_cast<double>(options_.max_bytes_per_peer_per_s)); }
  void Refill(Peer& peer) const {
    const auto now = std::chrono::steady_clock::now();
    const double seconds = std::chrono::duration<double>(now - peer.refilled).count();
    peer.refilled = now;
    peer.tokens = std::min(Burst(), peer.tokens + seconds * static_cast<double>(options_.max_bytes_per_peer_per_s));
  }
  // Reads again from throttled connections whose peer's bucket has refilled.
  void Unthrottle() {
    if (throttled_.empty()) return;
    std::vector<Conn*> ready;
    for (Conn* conn : throttled_) {
      Peer& peer = per_peer_[conn->peer];
      Refill(peer);
      if (peer.tokens >= 1) ready.push_back(conn);
    }
    for (Conn* conn : ready) {
      throttled_.erase(conn);
      conn->throttled = false;
      Rearm(conn->client);
    }
  }

  void Rearm(End& end) {
    for (Buffer* buffer : {&Inbox(end), &Outbox(end)}) {
      if (buffer->empty()) buffer->Compact();  // gives an empty buffer's memory back
    }
    uint32_t events = 0;
    const bool paused = &end == &end.conn->client && end.conn->throttled;
    if (!end.eof && !paused && Inbox(end).room() + Inbox(end).begin > 0) events |= EPOLLIN;
    if (!Outbox(end).empty()) events |= EPOLLOUT;
    if (events == 0 && end.eof && &end == &end.conn->backend && !end.removed) {
      // Closed by the server, its last bytes still on their way to the client: stop hearing its hang-up
      // (reported whatever we ask for) until the client has them all.
      ::epoll_ctl(epoll_, EPOLL_CTL_DEL, end.fd, nullptr);
      end.removed = true;
      end.events = 0;
      return;
    }
    if (end.removed) return;
    Watch(end, events);
  }

  void Close(Conn& conn) {
    if (!conns_.erase(&conn)) return;
    ::epoll_ctl(epoll_, EPOLL_CTL_DEL, conn.client.fd, nullptr);
    if (!conn.backend.removed) ::epoll_ctl(epoll_, EPOLL_CTL_DEL, conn.backend.fd, nullptr);
    ::close(conn.client.fd);
    ::close(conn.backend.fd);
    shares_.Release(conn.counted);
    if (shares_.Held(conn.counted) == 0) per_peer_.erase(conn.peer);
    throttled_.erase(&conn);
    open_ = conns_.size();
    closed_.insert(&conn);  // deleted after this batch of events: a later event may still name it
  }

  const int listen_fd_;
  const std::string address_;
  const std::string backend_;
  const Options options_;
  common::AddressShares shares_;  // the loop thread's own: connections per address and per IPv6 /64
  const int epoll_;
  const int wake_;
  const int nudge_;  // StopAccepting
  absl::Notification accept_closed_;
  std::thread thread_;
  // The loop thread's own:
  absl::flat_hash_set<Conn*> conns_;
  absl::flat_hash_set<Conn*> closed_;
  absl::flat_hash_map<std::string, Peer> per_peer_;
  absl::flat_hash_set<Conn*> throttled_;
  ShareRefusals share_refusals_;
  bool warned_backend_ = false;
  std::atomic<size_t> open_{0};
};

absl::StatusOr<std::unique_ptr<TcpFront>> TcpFront::Bind(const std::string& listen) {
  auto parsed = common::ParseHostPort(listen);
  if (!parsed.ok()) return parsed.status();
  const std::string host = parsed->host;
  const int port = parsed->port;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  if (const int error = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &found); error != 0) {
    return absl::FailedPreconditionError(absl::StrCat("cannot listen on ", listen, ": ", ::gai_strerror(error)));
  }
  std::string last_error = "no address";
  int fd = -1;
  for (addrinfo* a = found; a != nullptr && fd < 0; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
    if (fd < 0) continue;
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));  // never SO_REUSEPORT
    if (::bind(fd, a->ai_addr, a->ai_addrlen) != 0 || ::listen(fd, SOMAXCONN) != 0) {
      last_error = std::strerror(errno);
      ::close(fd);
      fd = -1;
    }
  }
  ::freeaddrinfo(found);
  if (fd < 0) {
    return absl::FailedPreconditionError(absl::StrCat("cannot listen on ", listen, ": ", last_error,
                                                      " (is the address in use?)"));
  }
  sockaddr_storage bound{};
  socklen_t size = sizeof(bound);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &size);
  const int actual = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6&>(bound).sin6_port
                                                       : reinterpret_cast<sockaddr_in&>(bound).sin_port);
  const std::string shown = absl::StrCat(parsed->ipv6 ? absl::StrCat("[", host, "]") : host, ":", actual);
  return std::unique_ptr<TcpFront>(new TcpFront(fd, shown));
}

TcpFront::TcpFront(int listen_fd, std::string address) : listen_fd_(listen_fd), address_(std::move(address)) {}

TcpFront::~TcpFront() {
  loop_.reset();
  if (!listen_closed_) ::close(listen_fd_);
}

void TcpFront::StopAccepting() {
  if (listen_closed_) return;
  if (loop_ != nullptr) {
    loop_->StopAccepting();  // the loop closes it (it may be in accept4 on it)
  } else {
    ::close(listen_fd_);
  }
  listen_closed_ = true;
}

absl::Status TcpFront::Start(const std::string& backend, Options options) {
  if (loop_ != nullptr) return absl::FailedPreconditionError("the TCP front is already started");
  sockaddr_un probe{};
  if (backend.size() >= sizeof(probe.sun_path)) {
    return absl::FailedPreconditionError(absl::StrCat(backend, ": the path is too long for a socket"));
  }
  const int epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd < 0) return absl::UnavailableError(absl::StrCat("epoll_create1: ", std::strerror(errno)));
  const int wake = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  const int nudge = wake < 0 ? -1 : ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (nudge < 0) {
    const std::string why = std::strerror(errno);
    if (wake >= 0) ::close(wake);
    ::close(epoll_fd);
    return absl::UnavailableError(absl::StrCat("eventfd: ", why));
  }
  loop_ = std::make_unique<Loop>(listen_fd_, address_, backend, std::move(options), epoll_fd, wake, nudge);
  loop_->Run();
  return absl::OkStatus();
}

size_t TcpFront::open_connections() const { return loop_ == nullptr ? 0 : loop_->open(); }

bool TcpFront::AwaitConnectionsClosed(std::chrono::system_clock::time_point deadline) const {
  // Timed on the steady clock from here: a step of the wall clock neither cuts nor stretches the wait.
  const auto now = std::chrono::steady_clock::now();
  const auto until = now + std::max<std::chrono::nanoseconds>(deadline - std::chrono::system_clock::now(),
                                                               std::chrono::nanoseconds::zero()) + kRelayGrace;
  while (open_connections() > 0) {
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

}  // namespace osh::gateway
