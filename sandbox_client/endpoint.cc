#include "sandbox_client/endpoint.h"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace osh::sandbox_client {
namespace {

absl::StatusOr<std::string> ReadPem(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat(what, " ", path, ": cannot be read: ", std::strerror(errno)));
  std::ostringstream text;
  text << in.rdbuf();
  if (text.str().find("-----BEGIN ") == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(what, " ", path, ": not a PEM file"));
  }
  return text.str();
}

}  // namespace

std::string Endpoint::Describe() const {
  if (server.empty()) return absl::StrCat("unix:", std::filesystem::absolute(unix_socket).lexically_normal().string());
  return absl::StrCat(server, ca_file.empty() ? " (plaintext)" : " (TLS)");
}

bool IsLoopbackHostPort(const std::string& host_port) {
  std::string host = host_port;
  if (const size_t colon = host.rfind(':'); colon != std::string::npos) host = host.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host == "localhost") return true;
  in_addr v4{};
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (inet_pton(AF_INET6, host.c_str(), &v6) == 1) return IN6_IS_ADDR_LOOPBACK(&v6);
  return false;
}

absl::Status CheckSocketPath(const std::string& socket_path) {
  struct stat st {};
  if (::stat(socket_path.c_str(), &st) != 0) {
    return absl::UnavailableError(absl::StrCat("no socket at ", socket_path, ": ", std::strerror(errno),
                                               " (is the gateway running? is the path right?)"));
  }
  if (!S_ISSOCK(st.st_mode)) return absl::UnavailableError(absl::StrCat(socket_path, " is not a socket"));
  // A socket file nobody listens on (a gateway that died) refuses at once; say so instead of waiting.
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  const std::string absolute = std::filesystem::absolute(socket_path).lexically_normal().string();
  if (absolute.size() >= sizeof(address.sun_path)) return absl::OkStatus();  // let gRPC say what it makes of it
  std::memcpy(address.sun_path, absolute.c_str(), absolute.size() + 1);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::OkStatus();
  const int connected = ::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address));
  const int error = errno;
  ::close(fd);
  if (connected != 0 && (error == ECONNREFUSED || error == ENOENT)) {
    return absl::UnavailableError(absl::StrCat("nobody is listening on ", socket_path, " (is the gateway running?)"));
  }
  if (connected != 0 && error == EACCES) {
    return absl::PermissionDeniedError(absl::StrCat(socket_path, ": permission denied (run as the gateway's user)"));
  }
  return absl::OkStatus();
}

void QuietGrpcLogs() { ::setenv("GRPC_VERBOSITY", "NONE", /*overwrite=*/0); }

absl::Status CheckKeepalive(const Keepalive& keepalive) {
  if (keepalive.time < kMinKeepalive) {
    return absl::InvalidArgumentError(absl::StrCat("keepalive of ", keepalive.time.count(),
                                                   " ms: at least ", kMinKeepalive.count(),
                                                   " ms (the gateway drops a connection that pings too often)"));
  }
  if (keepalive.timeout.count() <= 0) {
    return absl::InvalidArgumentError("keepalive timeout: must be above 0 ms");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> OpenChannel(const Endpoint& endpoint,
                                                           std::chrono::milliseconds connect_timeout,
                                                           const Keepalive& keepalive) {
  if (absl::Status checked = CheckKeepalive(keepalive); !checked.ok()) return checked;
  grpc::ChannelArguments arguments;
  arguments.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, static_cast<int>(keepalive.time.count()));
  arguments.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, static_cast<int>(keepalive.timeout.count()));
  arguments.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 0);
  arguments.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);  // a quiet watch sends no data: ping anyway
  auto create = [&](const std::string& target, const std::shared_ptr<grpc::ChannelCredentials>& credentials) {
    return grpc::CreateCustomChannel(target, credentials, arguments);
  };
  std::shared_ptr<grpc::Channel> channel;
  if (endpoint.server.empty()) {
    if (absl::Status usable = CheckSocketPath(endpoint.unix_socket); !usable.ok()) return usable;
    channel = create(endpoint.Describe(), grpc::InsecureChannelCredentials());
  } else if (endpoint.ca_file.empty()) {
    if (!endpoint.cert_file.empty()) {
      return absl::InvalidArgumentError("a client certificate needs TLS: give the CA file of the gateway's certificate");
    }
    if (!IsLoopbackHostPort(endpoint.server)) {
      return absl::InvalidArgumentError(absl::StrCat(
          endpoint.server, ": a gateway off loopback is reached with TLS only: give the CA file of its certificate"));
    }
    channel = create(endpoint.server, grpc::InsecureChannelCredentials());
  } else {
    grpc::SslCredentialsOptions tls;
    auto ca = ReadPem(endpoint.ca_file, "CA file");
    if (!ca.ok()) return ca.status();
    tls.pem_root_certs = *std::move(ca);
    if (endpoint.cert_file.empty() != endpoint.key_file.empty()) {
      return absl::InvalidArgumentError("a client certificate and its key go together");
    }
    if (!endpoint.cert_file.empty()) {
      auto cert = ReadPem(endpoint.cert_file, "client certificate");
      if (!cert.ok()) return cert.status();
      auto key = ReadPem(endpoint.key_file, "client key");
      if (!key.ok()) return key.status();
      tls.pem_cert_chain = *std::move(cert);
      tls.pem_private_key = *std::move(key);
    }
    channel = create(endpoint.server, grpc::SslCredentials(tls));
  }
  if (connect_timeout.count() > 0 &&
      !channel->WaitForConnected(std::chrono::system_clock::now() + connect_timeout)) {
    return absl::UnavailableError(absl::StrCat(
        "cannot connect to ", endpoint.Describe(),
        endpoint.server.empty() || endpoint.ca_file.empty()
            ? " (is the gateway running?)"
            : " (is the gateway running? does the CA file match its certificate, and its name the host?"
              " is a client certificate needed?)"));
  }
  return channel;
}

}  // namespace osh::sandbox_client
