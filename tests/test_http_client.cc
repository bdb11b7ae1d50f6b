// common/http_client.h against servers that misbehave on purpose: endless headers, a trickle of bytes,
// redirects, endless bodies. Each server is a raw socket in a thread of the test, so it can do what no
// well-behaved HTTP library would.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <thread>

#include <catch2/catch.hpp>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/http_client.h"

namespace {

using osh::common::HttpGet;
using osh::common::HttpLimits;
using osh::common::HttpPost;

// Writes `data` whole; false once the client has gone.
bool Send(int fd, const std::string& data) {
  size_t sent = 0;
  while (sent < data.size()) {
    const ssize_t n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return false;
    sent += static_cast<size_t>(n);
  }
  return true;
}

// An HTTP server on 127.0.0.1 that reads each request (its head, and a body of Content-Length bytes) and
// hands the connection to `script`, which answers however it likes; the connection is closed after it.
class ScriptedServer {
 public:
  using Script = std::function<void(int fd, const std::string& request)>;
  explicit ScriptedServer(Script script) : script_(std::move(script)) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(listen_fd_ >= 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    REQUIRE(::listen(listen_fd_, 16) == 0);
    socklen_t length = sizeof address;
    REQUIRE(::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&address), &length) == 0);
    port_ = ntohs(address.sin_port);
    thread_ = std::thread([this] { Serve(); });
  }
  ~ScriptedServer() {
    stop_ = true;
    thread_.join();
    ::close(listen_fd_);
  }
  std::string url(const std::string& path) const { return absl::StrCat("http://127.0.0.1:", port_, path); }
  int requests() const { return requests_.load(); }
  const std::string& last_request() const { return last_request_; }  // read after the call returned

 private:
  void Serve() {
    while (!stop_) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      const int fd = ::accept(listen_fd_, nullptr, nullptr);
      if (fd < 0) continue;
      std::string request;
      char buffer[4096];
      size_t body_length = 0;
      size_t head_end = std::string::npos;
      while (head_end == std::string::npos || request.size() < head_end + 4 + body_length) {
        const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
        if (n <= 0) break;
        request.append(buffer, static_cast<size_t>(n));
        if (head_end == std::string::npos && (head_end = request.find("\r\n\r\n")) != std::string::npos) {
          const size_t at = request.find("Content-Length: ");
          if (at != std::string::npos && at < head_end) {
            (void)absl::SimpleAtoi(request.substr(at + 16, request.find("\r\n", at) - at - 16), &body_length);
          }
        }
      }
      ++requests_;
      last_request_ = request;
      script_(fd, request);
      ::close(fd);
    }
  }
  Script script_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> requests_{0};
  std::string last_request_;
  std::thread thread_;
};

HttpLimits Limits(int timeout_ms) {
  HttpLimits limits;
  limits.timeout = absl::Milliseconds(timeout_ms);
  limits.max_header_bytes = 16 * 1024;
  limits.max_body_bytes = 64 * 1024;
  return limits;
}

}  // namespace

TEST_CASE("http client: an honest answer, a GET and a POST", "[http_client]") {
  ScriptedServer server([](int fd, const std::string&) { Send(fd, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"); });
  auto got = HttpGet(server.url("/checkpoint"), Limits(10000));
  REQUIRE(got.ok());
  CHECK(got->status == 200);
  CHECK(got->body == "hello");
  CHECK(absl::StartsWith(server.last_request(), "GET /checkpoint HTTP/1.1\r\n"));
  auto posted = HttpPost(server.url("/add-checkpoint"), "old 0\n\nbody", "text/plain; charset=utf-8", Limits(10000));
  REQUIRE(posted.ok());
  CHECK(posted->body == "hello");
  const std::string request = server.last_request();
  CHECK(absl::StartsWith(request, "POST /add-checkpoint HTTP/1.1\r\n"));
  CHECK_THAT(request, Catch::Contains("Content-Type: text/plain; charset=utf-8\r\n"));
  CHECK_THAT(request, !Catch::Contains("Expect:"));
  CHECK(absl::EndsWith(request, "\r\n\r\nold 0\n\nbody"));
  CHECK(HttpGet("ftp://127.0.0.1/x", Limits(1000)).status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(HttpGet("file:///etc/passwd", Limits(1000)).status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("http client: a header line without end, or headers without end, are cut off and never held whole",
          "[http_client]") {
  std::atomic<size_t> sent{0};
  SECTION("one endless header line") {
    ScriptedServer server([&](int fd, const std::string&) {
      if (!Send(fd, "HTTP/1.1 200 OK\r\nX-Endless: ")) return;
      const std::string chunk(64 * 1024, 'a');
      while (sent < (size_t{256} << 20) && Send(fd, chunk)) sent += chunk.size();
    });
    auto got = HttpGet(server.url("/checkpoint"), Limits(60000));
    INFO(got.status());
    CHECK_FALSE(got.ok());
    // The client stopped reading long before the server's 256 MiB: it held at most a bounded line.
    CHECK(sent.load() < (size_t{16} << 20));
  }
  SECTION("endless header lines") {
    ScriptedServer server([&](int fd, const std::string&) {
      if (!Send(fd, "HTTP/1.1 200 OK\r\n")) return;
      while (sent < (size_t{256} << 20) && Send(fd, "X-Line: 0123456789\r\n")) sent += 20;
    });
    auto got = HttpGet(server.url("/checkpoint"), Limits(60000));
    CHECK(got.status().code() == absl::StatusCode::kResourceExhausted);
    CHECK_THAT(std::string(got.status().message()), Catch::Contains("headers exceed 16384 bytes"));
    CHECK(sent.load() < (size_t{16} << 20));
  }
}

TEST_CASE("http client: a server trickling its answer is cut off at the request's timeout, not per read",
          "[http_client]") {
  // A byte every 50 ms: every read is quick, the whole answer would take ~10 s.
  ScriptedServer server([](int fd, const std::string&) {
    const std::string answer = "HTTP/1.1 200 OK\r\nContent-Length: 150\r\n\r\n" + std::string(150, 'x');
    for (char c : answer) {
      if (!Send(fd, std::string(1, c))) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
  auto got = HttpGet(server.url("/tile/0/000"), Limits(1000));
  CHECK(got.status().code() == absl::StatusCode::kUnavailable);
  CHECK_THAT(std::string(got.status().message()), Catch::Contains("imed out"));
}

TEST_CASE("http client: a redirect is answered as it is, never followed", "[http_client]") {
  ScriptedServer server([](int fd, const std::string&) {
    Send(fd, "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/elsewhere\r\nContent-Length: 0\r\n\r\n");
  });
  auto got = HttpGet(server.url("/checkpoint"), Limits(10000));
  REQUIRE(got.ok());
  CHECK(got->status == 302);
  CHECK(server.requests() == 1);
}

TEST_CASE("http client: a body past the bound is refused, declared or not", "[http_client]") {
  std::atomic<size_t> sent{0};
  SECTION("declared too large") {
    ScriptedServer server([](int fd, const std::string&) {
      Send(fd, "HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n");
    });
    auto got = HttpGet(server.url("/tile/entries/000"), Limits(10000));
    CHECK(got.status().code() == absl::StatusCode::kResourceExhausted);
    CHECK_THAT(std::string(got.status().message()), Catch::Contains("body exceeds 65536 bytes"));
  }
  SECTION("chunked without end") {
    ScriptedServer server([&](int fd, const std::string&) {
      if (!Send(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")) return;
      const std::string chunk = "1000\r\n" + std::string(0x1000, 'b') + "\r\n";
      while (sent < (size_t{256} << 20) && Send(fd, chunk)) sent += chunk.size();
    });
    auto got = HttpGet(server.url("/tile/entries/000"), Limits(60000));
    CHECK(got.status().code() == absl::StatusCode::kResourceExhausted);
    CHECK(sent.load() < (size_t{16} << 20));
  }
}
