#include "cli/cli_common.h"


#include <algorithm>
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

sandbox_client::Endpoint EndpointFor(const Options& options, Api api) {
  sandbox_client::Endpoint endpoint;
  endpoint.unix_socket = api == Api::kAdmin ? options.admin_socket : options.sandbox_socket;
  endpoint.server = options.server;
  endpoint.ca_file = options.ca_file;
  endpoint.cert_file = options.cert_file;
  endpoint.key_file = options.key_file;
  return endpoint;
}

std::shared_ptr<grpc::Channel> Connect(const Options& options, Api api) {
  auto channel = sandbox_client::OpenChannel(EndpointFor(options, api), std::chrono::seconds(options.timeout_s));
  if (!channel.ok()) {
    std::cerr << "error: " << channel.status().message() << "\n";
    return nullptr;
  }
  return *std::move(channel);
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
  auto channel = Connect(options, Api::kAdmin);
  return channel ? openshell::policy::gateway::v1::PolicyGateway::NewStub(channel) : nullptr;
}

void PrintTable(const std::vector<std::string>& headers, const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths(headers.size(), 0);
  auto widen = [&widths](const std::vector<std::string>& row) {
    for (size_t i = 0; i < row.size() && i < widths.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  };
  widen(headers);
  for (const auto& row : rows) widen(row);
  auto print = [&widths](const std::vector<std::string>& row) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(widths[i] - row[i].size() + 2, ' ');
    }
    std::cout << line << "\n";
  };
  print(headers);
  for (const auto& row : rows) print(row);
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
