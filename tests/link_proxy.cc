#include "tests/link_proxy.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include <catch2/catch.hpp>

namespace osh::test {
namespace {

int UnixSocket(const std::string& path, bool listen) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::snprintf(address.sun_path, sizeof(address.sun_path), "%s", path.c_str());
  const auto* a = reinterpret_cast<const sockaddr*>(&address);
  const bool ok = fd >= 0 && (listen ? ::bind(fd, a, sizeof(address)) == 0 && ::listen(fd, 64) == 0
                                     : ::connect(fd, a, sizeof(address)) == 0);
  if (!ok && fd >= 0) ::close(fd);
  return ok ? fd : -1;
}

}  // namespace

LinkProxy::LinkProxy(std::string upstream_socket, const std::string& listen_socket)
    : upstream_(std::move(upstream_socket)) {
  listener_ = UnixSocket(listen_socket, /*listen=*/true);
  REQUIRE(listener_ >= 0);
  acceptor_ = std::thread([this] { Accept(); });
}

LinkProxy::~LinkProxy() {
  stopping_ = true;
  acceptor_.join();
  CutAll();
  for (auto& pump : pumps_) pump.join();
  ::close(listener_);
}

void LinkProxy::CutAll() {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& link : links_) {
    ::shutdown(link->client, SHUT_RDWR);
    ::shutdown(link->server, SHUT_RDWR);
  }
  links_.clear();  // each pump closes its pair when it sees the shutdown
}

void LinkProxy::SilenceAll() {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& link : links_) link->silenced = true;
}

void LinkProxy::Accept() {
  while (!stopping_) {
    pollfd pfd{listener_, POLLIN, 0};
    if (::poll(&pfd, 1, 100) != 1) continue;
    const int client = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) continue;
    const int server = UnixSocket(upstream_, /*listen=*/false);
    if (server < 0) {
      ::close(client);
      continue;
    }
    ++accepted_;
    auto link = std::make_shared<Link>();
    link->client = client;
    link->server = server;
    std::lock_guard<std::mutex> lock(mu_);
    links_.push_back(link);
    pumps_.emplace_back([this, link] { Pump(link); });
  }
}

void LinkProxy::Pump(const std::shared_ptr<Link>& link) {
  const int a = link->client, b = link->server;
  char buffer[16384];
  // A silenced link still reads (and drops) what either end sends, so neither end's writes block: as
  // packets lost on the way. Nor does one end closing reach the other: the link ends only when both ends
  // closed, or at CutAll / destruction (which shut both down).
  bool open[2] = {true, true};
  while (open[0] || open[1]) {
    pollfd fds[2] = {{open[0] ? a : -1, POLLIN, 0}, {open[1] ? b : -1, POLLIN, 0}};
    if (::poll(fds, 2, 100) < 0) break;
    bool closed = false;
    for (int i = 0; i < 2 && !closed; ++i) {
      if (!open[i] || (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      const ssize_t n = ::read(fds[i].fd, buffer, sizeof(buffer));
      if (n <= 0) {
        if (link->silenced) {
          open[i] = false;  // this end is gone; the other is not told
          continue;
        }
        closed = true;
        break;
      }
      if (link->silenced) continue;
      const int to = i == 0 ? b : a;
      for (ssize_t sent = 0; sent < n;) {
        // MSG_NOSIGNAL: a peer CutAll shut down is an error here, never a SIGPIPE that ends the test binary.
        const ssize_t w = ::send(to, buffer + sent, static_cast<size_t>(n - sent), MSG_NOSIGNAL);
        if (w <= 0) {
          closed = true;
          break;
        }
        sent += w;
      }
    }
    if (closed) break;
  }
  {
    // Out of the list before the descriptors are closed: CutAll never shuts down a number reused since.
    std::lock_guard<std::mutex> lock(mu_);
    links_.erase(std::remove(links_.begin(), links_.end(), link), links_.end());
  }
  ::shutdown(a, SHUT_RDWR);
  ::shutdown(b, SHUT_RDWR);
  ::close(a);
  ::close(b);
}

}  // namespace osh::test
