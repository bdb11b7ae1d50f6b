// A proxy between two Unix sockets for tests that need a link to fail the ways networks fail: cut (both
// directions shut down, as a reset) or silenced (bytes taken and dropped both ways, the sockets left open,
// as a NAT that forgot the flow or a host that vanished: neither end is told). New connections are
// accepted and relayed as before either way. Thread-safe; stops its threads at destruction.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace osh::test {

class LinkProxy {
 public:
  // Listens on `listen_socket` (REQUIREs it can) and relays each connection to `upstream_socket`.
  LinkProxy(std::string upstream_socket, const std::string& listen_socket);
  ~LinkProxy();
  LinkProxy(const LinkProxy&) = delete;
  LinkProxy& operator=(const LinkProxy&) = delete;

  void CutAll();      // every connection open now is shut down both ways
  void SilenceAll();  // every connection open now relays nothing more, silently, until it is closed
  int accepted() const { return accepted_; }  // connections accepted so far

 private:
  struct Link {
    int client;
    int server;
    std::atomic<bool> silenced{false};
  };
  void Accept();
  void Pump(const std::shared_ptr<Link>& link);
  std::string upstream_;
  int listener_ = -1;
  std::atomic<bool> stopping_{false};
  std::atomic<int> accepted_{0};
  std::mutex mu_;
  std::vector<std::shared_ptr<Link>> links_;  // open links
  std::vector<std::thread> pumps_;
  std::thread acceptor_;
};

}  // namespace osh::test
