// The gateway's configuration (SPEC §6). Precedence: command-line flag > environment > TOML file >
// default. Unknown keys in the file are errors naming the key and its line.
//
// Environment variables: POLICY_GATEWAY_CONFIG (the file) and POLICY_GATEWAY_<KEY> for each key, e.g.
// POLICY_GATEWAY_STATE_DIR, POLICY_GATEWAY_TRUST_STORE; list values are comma-separated.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "gateway/limits.h"

namespace osh::gateway {

struct Config {
  std::string state_dir = "./var";
  std::string database;        // "sqlite:<path>" (default: sqlite:<state_dir>/gateway.db)
  std::string admin_socket;    // default: <state_dir>/admin.sock
  std::string sandbox_socket;  // default: <state_dir>/sandbox.sock
  std::vector<std::string> accepted_surfaces = {"openshell.sandbox.v1"};
  std::string trust_store;     // "": no verification
  std::string driver_socket;   // "": the builtin driver
  int64_t driver_connect_timeout_ms = 30000;
  int64_t driver_call_timeout_ms = 5000;  // deadline of every driver call (an addition to SPEC §6)
  std::string driver_socket_owner;        // may own the driver socket besides root and us ("": nobody else)
  int64_t refresh_interval_s = 0;
  int64_t clock_skew_s = 60;
  std::string builtin_signing_key;     // PEM private key file; "": the builtin driver does not sign
  std::string builtin_signing_key_id;
  bool builtin_context_binding = true;  // false: the builtin driver serves one projection per revision
  Limits limits;  // [openshell.gateway.limits]
  // Not a config key: the flag --accept-state-rollback, an operator's one-off confirmation (HeadAnchor).
  bool accept_state_rollback = false;

  // The SQLite file named by `database`.
  std::string SqlitePath() const;
};

// Raw values by key name ("state_dir", ...) as strings (lists comma-joined), one map per source.
using ConfigValues = std::map<std::string, std::string>;

// The keys, in the order of SPEC §6, with their TOML table ("openshell.gateway",
// "openshell.gateway.policy" or, for the limits, "openshell.gateway.limits").
struct ConfigKey {
  const char* name;
  const char* table;
  const char* help;
};
const std::vector<ConfigKey>& ConfigKeys();

// Reads a TOML file into values. INVALID_ARGUMENT "<file>:<line>: ..." for syntax errors, unknown keys
// and wrong types.
absl::StatusOr<ConfigValues> ReadConfigFile(const std::string& path);
// The same for TOML text already read; `name` stands for the file in messages.
absl::StatusOr<ConfigValues> ParseConfigText(std::string_view text, const std::string& name);

// Values from POLICY_GATEWAY_<KEY> variables.
ConfigValues ReadConfigEnvironment();

// Merges the sources (flags > env > file > defaults), validates and derives the defaults that depend
// on state_dir. INVALID_ARGUMENT naming the key for bad values.
absl::StatusOr<Config> ResolveConfig(const ConfigValues& flags, const ConfigValues& env, const ConfigValues& file);

}  // namespace osh::gateway
