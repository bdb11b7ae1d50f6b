#include "cli/cli_common.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iostream>

#include <google/protobuf/util/json_util.h>

#include "absl/strings/str_cat.h"

namespace osh::cli {
namespace {

const char* CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::UNKNOWN: return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "OK";
  }
}

}  // namespace

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

std::shared_ptr<grpc::Channel> Connect(const std::string& socket_path, int timeout_s) {
  if (absl::Status usable = CheckSocketPath(socket_path); !usable.ok()) {
    std::cerr << "error: " << usable.message() << "\n";
    return nullptr;
  }
  const std::string target = absl::StrCat("unix:", std::filesystem::absolute(socket_path).lexically_normal().string());
  auto channel = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(timeout_s))) {
    std::cerr << "error: cannot connect to " << socket_path << " (is the gateway running?)\n";
    return nullptr;
  }
  return channel;
}

std::unique_ptr<grpc::ClientContext> MakeContext(const Options& options, const std::string& handle) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(options.timeout_s));
  if (!handle.empty()) context->AddMetadata("authorization", absl::StrCat("Bearer ", handle));
  return context;
}

int ReportRpcError(const grpc::Status& status) {
  std::cerr << "error: " << CodeName(status.error_code()) << ": " << status.error_message() << "\n";
  return status.error_code() == grpc::StatusCode::UNAVAILABLE &&
                 status.error_message().rfind("driver_unavailable", 0) != 0
             ? kExitUsage  // the connection itself failed
             : kExitRefused;
}

int ReportLocalError(const absl::Status& status) {
  std::cerr << "error: " << status.message() << "\n";
  return kExitUsage;
}

absl::Status ParsePairs(const std::vector<std::string>& pairs, const std::string& flag,
                        google::protobuf::Map<std::string, std::string>* out) {
  for (const auto& kv : pairs) {
    const auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) {
      return absl::InvalidArgumentError(flag + " " + kv + ": expected key=value");
    }
    (*out)[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  return absl::OkStatus();
}

std::unique_ptr<openshell::policy::gateway::v1::PolicyGateway::Stub> AdminStub(const Options& options) {
  auto channel = Connect(options.admin_socket, options.timeout_s);
  return channel ? openshell::policy::gateway::v1::PolicyGateway::NewStub(channel) : nullptr;
}

absl::Status WriteFileAtomically(const std::string& path, const std::string& text, unsigned mode) {
  const std::string temp = absl::StrCat(path, ".tmp.", ::getpid());
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) return absl::InternalError(absl::StrCat(path, ": cannot create ", temp, ": ", std::strerror(errno)));
  int error = 0;
  for (size_t written = 0; written < text.size() && error == 0;) {
    const ssize_t n = ::write(fd, text.data() + written, text.size() - written);
    if (n > 0) written += static_cast<size_t>(n);
    else if (errno != EINTR) error = errno;
  }
  if (error == 0 && (::fchmod(fd, mode) != 0 || ::fsync(fd) != 0)) error = errno;
  ::close(fd);
  if (error == 0 && ::rename(temp.c_str(), path.c_str()) != 0) error = errno;
  if (error != 0) {
    ::unlink(temp.c_str());
    return absl::InternalError(absl::StrCat(path, ": cannot write: ", std::strerror(error)));
  }
  return absl::OkStatus();
}

std::string ToJson(const google::protobuf::Message& message, bool pretty) {
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  options.add_whitespace = pretty;
  std::string out;
  if (!google::protobuf::util::MessageToJsonString(message, &out, options).ok()) return "{}";
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

}  // namespace osh::cli
