// Shared plumbing of policyctl: connection settings, output format, exit codes, printing.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <google/protobuf/map.h>
#include <google/protobuf/message.h>
#include <google/protobuf/struct.pb.h>
#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "policy/policy_file.h"
#include "sandbox_client/endpoint.h"
#include "openshell/policy/gateway/v1/gateway.grpc.pb.h"

namespace osh::cli {

// Exit codes: 0 success, 1 a refusal by the gateway (or a failed verification), 2 usage or I/O.
inline constexpr int kExitOk = 0;
inline constexpr int kExitRefused = 1;
inline constexpr int kExitUsage = 2;

struct Options {
  std::string output = "table";  // "table" or "json"
  std::string admin_socket;
  std::string sandbox_socket;
  // --server host:port: the API a command uses over TCP instead of its socket (admin commands: the
  // gateway's admin_listen; fetch/watch/report: its sandbox_listen), TLS with --ca (and --cert/--key).
  std::string server;
  std::string ca_file, cert_file, key_file;
  int timeout_s = 30;
  bool json() const { return output == "json"; }
};

enum class Api { kAdmin, kSandbox };

// Where `api` is reached with `options`: --server (TCP) when given, else the API's socket.
sandbox_client::Endpoint EndpointFor(const Options& options, Api api);

// A channel to `api`, connected, or nullptr after printing why (exit 2). A missing or dead socket fails
// at once; a live one gets `timeout_s` to answer.
std::shared_ptr<grpc::Channel> Connect(const Options& options, Api api);

// A PolicyGateway stub on the admin socket, or nullptr after printing why (exit 2).
std::unique_ptr<openshell::policy::gateway::v1::PolicyGateway::Stub> AdminStub(const Options& options);

using policy::WriteFileAtomically;  // files the CLI writes (keys, exports) are replaced atomically

// A client context with the call deadline and, when given, the sandbox handle as bearer token.
std::unique_ptr<grpc::ClientContext> MakeContext(const Options& options, const std::string& handle = "");

// Prints a failed call as "error: CODE: message" and returns its exit code (1: the gateway refused or
// failed, with a reason code; 2: UNAVAILABLE without one — the gateway could not be reached).
int ReportRpcError(const grpc::Status& status);
// The same for a status a client library returned (common::FromGrpc kept the reason code of the details).
int ReportError(const absl::Status& status);
// Prints a local failure (file, parse) and returns kExitUsage.
int ReportLocalError(const absl::Status& status);

// One unary call on the admin socket; false (with `exit_code` set and the error printed) when it failed.
template <typename Request, typename Response>
bool CallAdmin(const Options& options, int& exit_code,
               grpc::Status (openshell::policy::gateway::v1::PolicyGateway::Stub::*method)(grpc::ClientContext*,
                                                                                          const Request&, Response*),
               const Request& request, Response* response) {
  auto stub = AdminStub(options);
  if (!stub) {
    exit_code = kExitUsage;
    return false;
  }
  auto ctx = MakeContext(options);
  if (const grpc::Status status = ((*stub).*method)(ctx.get(), request, response); !status.ok()) {
    exit_code = ReportRpcError(status);
    return false;
  }
  return true;
}

// "key=value" arguments of `flag` into `out`; INVALID_ARGUMENT naming the flag and argument otherwise.
absl::Status ParsePairs(const std::vector<std::string>& pairs, const std::string& flag,
                        google::protobuf::Map<std::string, std::string>* out);

// Text another party chose (a driver's reason, a stored audit field, a sandbox id read back from a
// database someone may have edited), fit for an operator's terminal: control characters and terminal
// escapes escaped, invalid UTF-8 escaped, at most `max_bytes` (common::BoundedText). `quoted`: `"` and `\`
// escaped too, for a value printed between quotes (no forged `actor=` after a closing quote).
std::string TerminalText(const std::string& text, bool quoted = false, size_t max_bytes = 4096);
// A `key=value` field's value: TerminalText, between quotes (escaped) when it holds a space, a quote, a
// backslash or `=`, so a value such as `s actor=uid:0` never reads as another field.
std::string TerminalWord(const std::string& text);

// A table: each column as wide as its widest cell (header included), two spaces apart, the last column
// unpadded. Every cell is printed as TerminalText.
void PrintTable(const std::vector<std::string>& headers, const std::vector<std::vector<std::string>>& rows);

// Protobuf JSON mapping with proto field names and default values printed.
std::string ToJson(const google::protobuf::Message& message, bool pretty = false);
// A JSON string value, for the Struct documents the commands print.
google::protobuf::Value TextValue(const std::string& text);

}  // namespace osh::cli
