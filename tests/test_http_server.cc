// common/http_server.h as clients meet it: address families and the allow list, refused entries, a GET
// with a body, and its own messages kept from flooding the log. (The slow-client bounds are exercised
// through its users: tests/test_hostile.cc for the gateway's listeners, tests/test_log_tools.cc for the
// witness.)
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>
#include <httplib.h>

#include "absl/status/status.h"
#include "common/address_share.h"
#include "common/http_server.h"
#include "gateway/server/tcp_front.h"
#include "tests/test_support.h"

namespace {

using osh::common::HttpRequest;
using osh::common::HttpResponse;
using osh::common::HttpServer;

// A route that answers every request on its head with its method, path and whether it declared a body.
std::unique_ptr<HttpServer> Echo(const std::string& host, HttpServer::Options options) {
  auto route = [](const HttpRequest& request) -> std::optional<HttpResponse> {
    return HttpResponse{200, "text/plain", request.method + " " + request.path + (request.has_body ? " body" : ""), {}};
  };
  auto handle = [](const HttpRequest&) { return HttpResponse{500, "text/plain", "unreachable", {}}; };
  auto server = HttpServer::Start(host, 0, std::move(options), route, handle);
  REQUIRE(server.ok());
  return *std::move(server);
}

int Connect(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

TEST_CASE("http server: an IPv6 wildcard listener takes IPv4 clients, and allow matches them as IPv4", "[http_server]") {
  HttpServer::Options options;
  options.allow = {"127.0.0.1"};
  auto open = Echo("::", options);
  httplib::Client client("127.0.0.1", open->port());
  auto answer = client.Get("/x");
  REQUIRE(answer);
  CHECK(answer->status == 200);
  CHECK(answer->body == "GET /x");
  CHECK(answer->get_header_value("Connection") == "close");
  options.allow = {"10.0.0.0/8", "::1/128"};
  auto closed = Echo("::", options);
  httplib::Client refused("127.0.0.1", closed->port());
  CHECK_FALSE(refused.Get("/x"));  // closed as it connects
  // A name with both families is bound on its IPv4 address.
  options.allow.clear();
  auto local = Echo("localhost", options);
  httplib::Client by_name("127.0.0.1", local->port());
  CHECK(by_name.Get("/y"));
}

TEST_CASE("http server: a malformed allow entry is refused, naming it", "[http_server]") {
  for (const std::string entry : {"10.0.0.0/33", "::/129", "10.0.0.0/", "example.com", "10.0.0.0/8x"}) {
    INFO(entry);
    HttpServer::Options options;
    options.name = "metrics_listen";
    options.allow = {entry};
    auto server = HttpServer::Start("127.0.0.1", 0, options, [](const HttpRequest&) { return std::nullopt; },
                                    [](const HttpRequest&) { return HttpResponse{}; });
    REQUIRE_FALSE(server.ok());
    CHECK(absl::IsInvalidArgument(server.status()));
    CHECK_THAT(std::string(server.status().message()), Catch::StartsWith("metrics_listen: allow: '" + entry + "'"));
  }
}

TEST_CASE("http server: a route sees whether a body was declared, and a GET without one is answered",
          "[http_server]") {
  auto server = Echo("127.0.0.1", HttpServer::Options());
  httplib::Client client("127.0.0.1", server->port());
  auto with_body = client.Post("/p", std::string(100, 'x'), "text/plain");
  REQUIRE(with_body);
  CHECK(with_body->body == "POST /p body");
  auto without = client.Get("/g");
  REQUIRE(without);
  CHECK(without->body == "GET /g");
}

TEST_CASE("http server: its own messages reach the log at most 20 a minute, whatever a client does", "[http_server]") {
  std::atomic<int> logged{0};
  HttpServer::Options options;
  options.log = [&logged](HttpServer::LogLevel, const std::string&) { ++logged; };
  auto server = Echo("127.0.0.1", options);
  // 32 connections from one address fill its share; each further one is refused, and libmicrohttpd says so.
  std::vector<int> held;
  for (int i = 0; i < 32; ++i) {
    const int fd = Connect(server->port());
    REQUIRE(fd >= 0);
    held.push_back(fd);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  for (int i = 0; i < 200; ++i) {
    const int fd = Connect(server->port());
    if (fd >= 0) {
      char byte;
      (void)::recv(fd, &byte, 1, 0);  // closed by the server
      ::close(fd);
    }
  }
  for (int fd : held) ::close(fd);
  CHECK(logged >= 1);
  CHECK(logged <= 20);
}

TEST_CASE("http server: bodies return what they held of the shared budget, however the string grew", "[http_server]") {
  // Regression: a body's memory was charged as it grew but given back as Charged(capacity), which the
  // allocator may round past what was charged (libstdc++ doubles): the shared count wrapped below zero and
  // every later large body was refused.
  HttpServer::Options options;
  options.max_body_bytes = 100000;
  auto route = [](const HttpRequest&) -> std::optional<HttpResponse> { return std::nullopt; };
  auto handle = [](const HttpRequest& request) {
    return HttpResponse{200, "text/plain", std::to_string(request.body.size()), {}};
  };
  auto server = HttpServer::Start("127.0.0.1", 0, options, route, handle);
  REQUIRE(server.ok());
  for (int i = 0; i < 4; ++i) {
    INFO("request " << i);
    httplib::Client client("127.0.0.1", (*server)->port());
    auto answer = client.Post("/p", std::string(90000, 'x'), "application/octet-stream");
    REQUIRE(answer);
    CHECK(answer->status == 200);
    CHECK(answer->body == "90000");
  }
}

namespace {

sockaddr_in6 V6(const char* text) {
  sockaddr_in6 address{};
  address.sin6_family = AF_INET6;
  REQUIRE(inet_pton(AF_INET6, text, &address.sin6_addr) == 1);
  return address;
}

sockaddr_in V4(const char* text) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  REQUIRE(inet_pton(AF_INET, text, &address.sin_addr) == 1);
  return address;
}

template <typename Address>
osh::common::AddressKey BlockOf(const Address& address) {
  auto block = osh::common::BlockOf(reinterpret_cast<const sockaddr*>(&address));
  REQUIRE(block.has_value());
  return *block;
}

template <typename Address>
osh::common::AddressKey AddressOf(const Address& address) {
  auto key = osh::common::AddressOf(reinterpret_cast<const sockaddr*>(&address));
  REQUIRE(key.has_value());
  return *key;
}

// A connection to 127.0.0.1:port from `source` (an address of 127/8).
int ConnectFrom(const char* source, int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in from = V4(source);
  sockaddr_in to = V4("127.0.0.1");
  to.sin_port = htons(static_cast<uint16_t>(port));
  if (::bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof from) != 0 ||
      ::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Sends a GET on `fd` and reads until the server closes: the answer, or "" when it closed unanswered.
std::string Get(int fd) {
  const std::string request = "GET /x HTTP/1.1\r\nHost: t\r\n\r\n";
  (void)::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string answer;
  char buffer[512];
  for (ssize_t n; (n = ::recv(fd, buffer, sizeof buffer, 0)) > 0;) answer.append(buffer, static_cast<size_t>(n));
  return answer;
}

}  // namespace

TEST_CASE("http server: a client is its address, and an IPv6 /64 is a block of them with a bound of its own", "[http_server]") {
  CHECK(AddressOf(V6("2001:db8:1:2:aaaa::1")) != AddressOf(V6("2001:db8:1:2:bbbb:cccc:dddd:2")));
  CHECK(BlockOf(V6("2001:db8:1:2:aaaa::1")) == BlockOf(V6("2001:db8:1:2:bbbb:cccc:dddd:2")));
  CHECK(BlockOf(V6("2001:db8:1:2::1")) != BlockOf(V6("2001:db8:1:3::1")));
  CHECK(BlockOf(V6("::1")) == BlockOf(V6("::2")));  // both in ::/64
  CHECK(AddressOf(V6("::ffff:10.0.0.1")) == AddressOf(V4("10.0.0.1")));  // IPv4-mapped on a dual-stack listener
  CHECK(BlockOf(V6("::ffff:10.0.0.1")) == BlockOf(V4("10.0.0.1")));
  CHECK(BlockOf(V6("::ffff:10.0.0.1")) != BlockOf(V6("::ffff:10.0.0.2")));  // an IPv4 address is its own block
  CHECK(BlockOf(V4("10.0.0.1")) != BlockOf(V4("10.0.0.2")));
  // NAT64 (64:ff9b::/96): each translated IPv4 client is its own block, not one /64 for all of them.
  CHECK(BlockOf(V6("64:ff9b::a00:1")) != BlockOf(V6("64:ff9b::a00:2")));
  CHECK(BlockOf(V6("64:ff9b::a00:1")) == AddressOf(V6("64:ff9b::a00:1")));
  sockaddr unix_address{};
  unix_address.sa_family = AF_UNIX;
  CHECK_FALSE(osh::common::AddressOf(&unix_address).has_value());
  CHECK_FALSE(osh::common::BlockOf(nullptr).has_value());
  // As text (the gateway's TCP fronts key their per-peer counts on the address, and logs name either).
  const auto address = [](const auto& a) { return osh::common::AddressText(reinterpret_cast<const sockaddr*>(&a)); };
  const auto block = [](const auto& a) { return osh::common::BlockText(reinterpret_cast<const sockaddr*>(&a)); };
  CHECK(address(V6("2001:db8:1:2:aaaa::1")) == "2001:db8:1:2:aaaa::1");
  CHECK(block(V6("2001:db8:1:2:aaaa::1")) == "2001:db8:1:2::/64");
  CHECK(address(V6("::ffff:10.0.0.1")) == "10.0.0.1");
  CHECK(block(V4("192.0.2.7")) == "192.0.2.7");
  CHECK(osh::common::AddressText(&unix_address).empty());
}

TEST_CASE("address shares: an address holds its share, an IPv6 /64 its own larger one, an IPv4 address is its own "
          "block, and a release gives the room back",
          "[http_server][limits]") {
  // The one counting rule of the HTTP server and the gateway's TCP fronts (review 115: the fronts counted an
  // address only, so a host spreading its connections over its /64 held the whole listener).
  using osh::common::AddressShares;
  const auto at = [](const auto& address) { return reinterpret_cast<const sockaddr*>(&address); };
  AddressShares shares(/*per_address=*/2, /*per_block=*/3);
  const auto a1 = V6("2001:db8:1:2::1"), a2 = V6("2001:db8:1:2::2"), a3 = V6("2001:db8:1:2::3");
  const auto other_block = V6("2001:db8:1:3::1");
  std::vector<AddressShares::Counted> held;
  CHECK_FALSE(shares.Refusal(at(a1)).has_value());
  held.push_back(shares.Take(at(a1)));
  held.push_back(shares.Take(at(a1)));
  const auto full = shares.Refusal(at(a1));
  REQUIRE(full.has_value());
  CHECK(full->held == 2);
  CHECK(full->whom == "2001:db8:1:2::1");
  CHECK_FALSE(full->block);
  CHECK_FALSE(shares.Refusal(at(a2)).has_value());  // another address of the block: room in the block
  held.push_back(shares.Take(at(a2)));
  const auto block_full = shares.Refusal(at(a3));  // its address holds none, its /64 holds 3
  REQUIRE(block_full.has_value());
  CHECK(block_full->block);
  CHECK(block_full->held == 3);
  CHECK(block_full->whom == "2001:db8:1:2::/64");
  CHECK_FALSE(shares.Refusal(at(other_block)).has_value());
  // IPv4 (also IPv4-mapped): each address its own block, held to the address's share only.
  const auto v4 = V4("192.0.2.7");
  const auto mapped = V6("::ffff:192.0.2.8");
  AddressShares tight(/*per_address=*/2, /*per_block=*/1);
  tight.Take(at(v4));
  CHECK_FALSE(tight.Refusal(at(v4)).has_value());
  tight.Take(at(v4));
  REQUIRE(tight.Refusal(at(v4)).has_value());
  CHECK(tight.Refusal(at(v4))->whom == "192.0.2.7");
  CHECK_FALSE(tight.Refusal(at(mapped)).has_value());
  // A release gives the room back and forgets an address and a block with none open.
  CHECK(shares.Held(held[0]) == 2);
  shares.Release(held[0]);
  CHECK(shares.Held(held[0]) == 1);
  CHECK_FALSE(shares.Refusal(at(a1)).has_value());
  CHECK_FALSE(shares.Refusal(at(a3)).has_value());
  for (size_t i = 1; i < held.size(); ++i) shares.Release(held[i]);
  CHECK(shares.addresses() == 0);
  CHECK(shares.blocks() == 0);
  // 0: that share is off.
  AddressShares off(0, 0);
  for (int i = 0; i < 5; ++i) off.Take(at(a1));
  CHECK_FALSE(off.Refusal(at(a1)).has_value());
  sockaddr unix_address{};
  unix_address.sa_family = AF_UNIX;
  CHECK_FALSE(shares.Refusal(&unix_address).has_value());
  const auto none = shares.Take(&unix_address);
  CHECK_FALSE(none.address.has_value());
  shares.Release(none);
}

namespace {

// Holds `share` connections from 127.0.0.1 and checks that one more from it is closed unanswered (once
// the server has counted them: it counts as it takes each in) while one from 127.0.0.2, another share, is
// answered. Returns the connections held.
std::vector<int> FillShareOf127001(HttpServer& server, int share) {
  std::vector<int> held;
  for (int i = 0; i < share; ++i) {
    const int fd = ConnectFrom("127.0.0.1", server.port());
    REQUIRE(fd >= 0);
    held.push_back(fd);
  }
  bool refused = false;
  // Up to 30 s: under a loaded suite (ctest -j) the server may take a while to take them in (a dev run
  // once ran out at 5 s); a server that never refuses still fails.
  for (int attempt = 0; attempt < 300 && !refused; ++attempt) {
    const int fd = ConnectFrom("127.0.0.1", server.port());
    REQUIRE(fd >= 0);
    refused = Get(fd).empty();
    ::close(fd);
    if (!refused) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  CHECK(refused);
  const int other = ConnectFrom("127.0.0.2", server.port());
  REQUIRE(other >= 0);
  CHECK_THAT(Get(other), Catch::StartsWith("HTTP/1.1 200"));
  ::close(other);
  return held;
}

}  // namespace

TEST_CASE("http server: 32 connections from one address fill its place only, and a closed one frees it",
          "[http_server]") {
  HttpServer::Options options;
  options.allow = {"127.0.0.0/8"};
  // The held connections send nothing: with the default request_timeout (10 s) the server closes them, and
  // under a loaded suite the refusal loop below could outlast them and never see the share full (a dev
  // ctest failed so at 30 s). They must outlive the test.
  options.request_timeout = std::chrono::minutes(5);
  auto server = Echo("0.0.0.0", options);
  std::vector<int> held = FillShareOf127001(*server, 32);
  // One of the 32 closes: its place is free again (the server notices the close on its next turn).
  ::close(held.back());
  held.pop_back();
  bool answered = false;
  for (int attempt = 0; attempt < 50 && !answered; ++attempt) {
    const int fd = ConnectFrom("127.0.0.1", server->port());
    REQUIRE(fd >= 0);
    answered = Get(fd).rfind("HTTP/1.1 200", 0) == 0;
    ::close(fd);
    if (!answered) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  CHECK(answered);
  for (int fd : held) ::close(fd);
}

TEST_CASE("tcp front: one address holds its share of the relayed connections, another address is relayed beside it",
          "[limits]") {
  // The gateway's TCP fronts count with AddressShares (above): an address past its share is closed at once.
  osh::test::TempDir dir;
  const std::string backend = dir / "backend.sock";
  const int listener = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, backend.c_str(), sizeof(address.sun_path) - 1);
  REQUIRE(::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  REQUIRE(::listen(listener, 64) == 0);
  // The backend (gRPC's server in the gateway): greets each connection and closes it once the client has.
  std::vector<std::thread> served;
  std::thread backend_thread([&] {
    for (int fd; (fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC)) >= 0;) {
      served.emplace_back([fd] {
        (void)::send(fd, "ok", 2, MSG_NOSIGNAL);
        char ignored[64];
        while (::recv(fd, ignored, sizeof ignored, 0) > 0) {
        }
        ::close(fd);
      });
    }
  });
  auto front = osh::gateway::TcpFront::Bind("127.0.0.1:0");
  REQUIRE(front.ok());
  osh::gateway::TcpFront::Options options;
  options.max_connections = 16;
  options.max_per_peer = 3;
  // Its IPv6 /64 share (this machine has one IPv6 loopback address: the rule is shown above, on the
  // counting class the front uses with these shares).
  CHECK(osh::gateway::TcpFront::BlockShare(options) == 8);
  osh::gateway::TcpFront::Options wide = options;
  wide.max_per_peer = 12;
  CHECK(osh::gateway::TcpFront::BlockShare(wide) == 12);  // never less than an address's
  wide.max_per_peer = 0;
  CHECK(osh::gateway::TcpFront::BlockShare(wide) == 0);  // no share at all
  REQUIRE((*front)->Start(backend, options).ok());
  const int port = std::stoi((*front)->address().substr((*front)->address().rfind(':') + 1));
  // "ok" when the connection was relayed, "" when the front closed it unrelayed.
  const auto greeting = [](int fd) {
    timeval wait{10, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof wait);
    char buffer[2];
    const ssize_t n = ::recv(fd, buffer, sizeof buffer, MSG_WAITALL);
    return n == 2 ? std::string(buffer, 2) : std::string();
  };
  std::vector<int> held;
  for (int i = 0; i < 3; ++i) {
    held.push_back(ConnectFrom("127.0.0.1", port));
    REQUIRE(held.back() >= 0);
    CHECK(greeting(held.back()) == "ok");
  }
  const int past = ConnectFrom("127.0.0.1", port);
  REQUIRE(past >= 0);
  CHECK(greeting(past).empty());  // past its share: closed at once
  ::close(past);
  const int other = ConnectFrom("127.0.0.2", port);
  REQUIRE(other >= 0);
  CHECK(greeting(other) == "ok");
  // One closed gives its room back.
  ::close(held.back());
  held.pop_back();
  bool relayed = false;
  for (int attempt = 0; attempt < 100 && !relayed; ++attempt) {
    const int again = ConnectFrom("127.0.0.1", port);
    REQUIRE(again >= 0);
    relayed = greeting(again) == "ok";
    if (relayed) {
      held.push_back(again);
    } else {
      ::close(again);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  CHECK(relayed);
  for (int fd : held) ::close(fd);
  ::close(other);
  front->reset();  // closes what it still relays: each backend end hears its end
  ::shutdown(listener, SHUT_RDWR);
  backend_thread.join();
  for (auto& thread : served) thread.join();
  ::close(listener);
}
