// policy-log-witness's configuration: a TOML file (docs/witness.md).
//   name = "witness.example/w1"           the witness's key name (its cosignatures carry it)
//   key_file = "/etc/openshell/witness.pem"   its Ed25519 private key, PKCS#8 PEM (`policy-log-witness keygen`)
//   listen = "127.0.0.1:7380"             host:port of the HTTP server
//   state_file = "/var/lib/policy-log-witness/state.toml"   the last checkpoint cosigned per log
//   submission_prefix = ""                optional URL path prefix: POST <prefix>/add-checkpoint
//   request_timeout_s = 10                optional: reading a request and writing its answer, each
//   max_request_bytes = 1052672           optional: a larger body is refused (413)
//   [[log]]                               one per log witnessed
//   origin = "gateway.example/policy-gateway"
//   key = "gateway.example/policy-gateway+1234abcd+AQ..."   the log's note verifier key
// Unknown keys are refused, with the file and line.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "witness/witness.h"

namespace osh::witness {

struct WitnessConfig {
  std::string name;
  std::string key_file;
  std::string listen = "127.0.0.1:7380";
  std::string state_file;
  std::string submission_prefix;
  int request_timeout_s = 10;
  size_t max_request_bytes = kMaxRequestBytes;
  std::vector<WitnessedLog> logs;
};

// INVALID_ARGUMENT with "<file>:<line>: why" for anything malformed, missing or unknown.
absl::StatusOr<WitnessConfig> ParseWitnessConfig(absl::string_view text, const std::string& file_name);
absl::StatusOr<WitnessConfig> ReadWitnessConfig(const std::string& path);

// host and port of a "host:port" listen address ("[::1]:7380" too); INVALID_ARGUMENT otherwise.
absl::StatusOr<std::pair<std::string, int>> SplitListenAddress(absl::string_view listen);

}  // namespace osh::witness
