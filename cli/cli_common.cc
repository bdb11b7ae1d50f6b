#include "cli/cli_common.h"

#include "common/bounded_text.h"

#include <jansson.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>

#include <google/protobuf/util/json_util.h>

#include "absl/strings/str_cat.h"
#include "common/errors.h"
#include "common/grpc_status.h"

namespace osh::cli {

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

int ReportRpcError(const grpc::Status& status) { return ReportError(common::FromGrpc(status)); }

int ReportError(const absl::Status& status) {
  std::cerr << "error: " << absl::StatusCodeToString(status.code()) << ": " << status.message() << "\n";
  // UNAVAILABLE with a reason code (driver_unavailable, storage_error) is the gateway's answer; without one
  // the connection itself failed. The code comes from the status details (ReasonOf reads the text only
  // from a gateway that sends none).
  return status.code() == absl::StatusCode::kUnavailable && common::ReasonOf(status).empty() ? kExitUsage
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

std::string TerminalText(const std::string& text, bool quoted, size_t max_bytes) {
  if (!quoted) return common::BoundedText(text, max_bytes);
  std::string escaped;  // `\` and `"` first, so the escapes BoundedText writes read as escapes
  escaped.reserve(text.size());
  for (char c : text) {
    if (c == '"' || c == '\\') escaped += '\\';
    escaped += c;
  }
  return common::BoundedText(escaped, max_bytes);
}

std::string TerminalWord(const std::string& text) {
  if (text.find_first_of(" \"\\=") == std::string::npos) return TerminalText(text);
  return absl::StrCat("\"", TerminalText(text, /*quoted=*/true), "\"");
}

void PrintTable(const std::vector<std::string>& headers, const std::vector<std::vector<std::string>>& raw_rows) {
  std::vector<std::vector<std::string>> rows;
  rows.reserve(raw_rows.size());
  for (const auto& raw : raw_rows) {
    std::vector<std::string>& row = rows.emplace_back();
    for (const auto& cell : raw) row.push_back(TerminalText(cell));
  }
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

google::protobuf::Value TextValue(const std::string& text) {
  google::protobuf::Value value;
  value.set_string_value(text);
  return value;
}

std::string ToJson(const google::protobuf::Message& message, bool pretty) {
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  options.add_whitespace = pretty;
  std::string out;
  if (!google::protobuf::util::MessageToJsonString(message, &out, options).ok()) return "{}";
  if (!out.empty() && out.back() == '\n') out.pop_back();
  if (message.GetDescriptor()->full_name() == "google.protobuf.Struct") {
    // A Struct's fields are a map, printed in hash order, so the same answer came out in a different key
    // order from run to run: printed again with its keys sorted (jansson), at every level.
    json_error_t error;
    json_t* parsed = json_loadb(out.data(), out.size(), 0, &error);
    if (parsed != nullptr) {
      char* sorted = json_dumps(parsed, JSON_SORT_KEYS | JSON_ENCODE_ANY | (pretty ? JSON_INDENT(2) : JSON_COMPACT));
      if (sorted != nullptr) out = sorted;
      std::free(sorted);
      json_decref(parsed);
    }
  }
  return out;
}

}  // namespace osh::cli
