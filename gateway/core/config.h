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
#include "gateway/core/limits.h"

namespace osh::gateway {

struct Config {
  std::string state_dir = "./var";
  std::string database;        // "sqlite:<path>" (default: sqlite:<state_dir>/gateway.db)
  // Replicas: how long one waits for the re-projection of the replica that changed a scope before it
  // re-projects the scope itself (docs/replicas.md).
  int64_t replica_reprojection_wait_ms = 5000;
  std::string admin_socket;    // default: <state_dir>/admin.sock
  std::string sandbox_socket;  // default: <state_dir>/sandbox.sock
  std::string sandbox_socket_group;  // "": the sandbox socket is 0600; else 0660 for this group (its own folder)
  // "": none; else a group (name or gid) whose write permission on folders counts as the gateway's own in
  // the ownership checks (trust::AcceptGroupWritableFolders): a Kubernetes pod's fsGroup.
  std::string fs_group;
  std::string sandbox_listen;  // "host:port": SandboxPolicy over TCP with TLS too; "": Unix socket only
  std::string admin_listen;    // "host:port": PolicyGateway over TCP with mutual TLS too; "": Unix socket only
  std::string tls_cert;        // PEM certificate chain of the TCP listeners (and interceptor_listen's)
  std::string tls_key;         // its PEM private key
  std::string tls_client_ca;   // PEM CA bundle of operators: admin_listen's clients must present a certificate it issued
  std::string sandbox_client_ca;  // PEM CA bundle of supervisors, for sandbox_listen ("": no certificate asked)
  std::string metrics_listen;  // "host:port" for GET /metrics (Prometheus); "": off
  std::string metrics_allow;   // comma-separated CIDRs that may scrape it; "": any
  std::string log_format = "text";  // "text" | "json"
  std::string log_level = "info";   // "info" | "warning" | "error"
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
  // The verifiable log (docs/audit.md): off unless log_signing_key is set.
  std::string log_signing_key;    // PEM Ed25519 private key of the log (policyctl log keygen); never a trust-store key
  std::string log_origin;         // the checkpoints' origin line (default: <hostname>/policy-gateway)
  int64_t log_integrate_interval_ms = 200;
  // Witnesses that cosign each checkpoint: "<url> <cosignature verifier key>" each (docs/audit.md).
  std::vector<std::string> log_witnesses;
  int64_t log_witness_timeout_ms = 1000;  // each add-checkpoint request
  std::string log_listen;         // "host:port" serving <state_dir>/log read-only over HTTP ("": off; may be metrics_listen)  // how often pending audit events are integrated and a checkpoint signed
  // The OpenShell gateway interceptor (docs/openshell-interceptor.md): off unless interceptor_socket or
  // interceptor_listen is set.
  std::string interceptor_socket;        // Unix socket of openshell.gateway_interceptor.v1.GatewayInterceptor
  // "host:port": the same service over TCP with TLS (tls_cert, tls_key); requires interceptor_gateway_keys
  std::string interceptor_listen;
  std::string interceptor_socket_group;  // "": 0600; else 0660 for this group (its own folder)
  std::string interceptor_mode = "ceiling";  // "ceiling" or "admit" (docs/openshell-interceptor.md, "Modes")
  std::string interceptor_gateway_keys;  // JWKS file or Ed25519 SPKI PEM of the OpenShell gateway; "": no tokens
  std::string ceiling_id;  // not empty: the only ceiling_id SetCeiling accepts (invalid_ceiling otherwise)
  std::string interceptor_gateway_id = "openshell";  // iss = openshell-gateway:<id>
  std::string interceptor_audience = "urn:openshell:extension:interceptor:policy-gateway";
  // Admit mode's push (README §9): the OpenShell gateway's gRPC endpoint ("unix:///path", or
  // "https://host:port" with TLS), and our credential for it: a bearer token file (read at each push, so a
  // rotated token is used at once) and/or a client certificate and key; the CA of its TLS certificate
  // ("": the system's roots). "" endpoint: changed projections are not pushed.
  std::string interceptor_openshell_endpoint;
  std::string interceptor_openshell_token_file;
  std::string interceptor_openshell_socket_owner;  // unix:/// push: a user the socket's server may run as
  std::string interceptor_openshell_ca;
  std::string interceptor_openshell_client_cert;
  std::string interceptor_openshell_client_key;
  bool audit_syslog = false;                  // every audit event to the local syslog too (docs/audit.md)
  std::string audit_syslog_socket = "/dev/log";  // ... over this Unix datagram socket
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

// How a key's value is written in TOML (and in --check-config's JSON): a string, a whole number, true or
// false, or a list of strings (comma-joined in ConfigValues).
enum class ConfigValueType { kString, kInteger, kBoolean, kList };
ConfigValueType ConfigValueTypeOf(const std::string& key);

// Where each key's value came from: "flag --clock-skew-s", "environment POLICY_GATEWAY_CLOCK_SKEW_S",
// "<file>:<line>" or "default".
using ConfigOrigins = std::map<std::string, std::string>;

// Reads a TOML file into values. INVALID_ARGUMENT "<file>:<line>: ..." for a syntax error (the first:
// the parser stops there), else for every unknown key or table and every value of the wrong type, one a
// line in file order. `origins`, when given, receives each key's "<file>:<line>".
absl::StatusOr<ConfigValues> ReadConfigFile(const std::string& path, ConfigOrigins* origins = nullptr);
// The same for TOML text already read; `name` stands for the file in messages.
absl::StatusOr<ConfigValues> ParseConfigText(std::string_view text, const std::string& name,
                                             ConfigOrigins* origins = nullptr);

// Values from the POLICY_GATEWAY_<KEY> variables of `environment` (a NULL-terminated "NAME=value"
// array, as `environ`). A POLICY_GATEWAY_* variable that names no key (POLICY_GATEWAY_CONFIG, the file,
// aside) is INVALID_ARGUMENT naming it: a misspelt setting must not be ignored.
absl::StatusOr<ConfigValues> ReadConfigEnvironment(const char* const* environment);

// Merges the sources (flags > env > file > defaults), validates and derives the defaults that depend
// on state_dir. INVALID_ARGUMENT naming the key and where the value came from: "<file>:<line>: key: ..."
// for a file's value (with `file_origins`), "key: ... (flag --key)" or "(environment ...)" otherwise.
absl::StatusOr<Config> ResolveConfig(const ConfigValues& flags, const ConfigValues& env, const ConfigValues& file,
                                     const ConfigOrigins& file_origins = {});

// Each key's origin, as ResolveConfig ranks the sources.
ConfigOrigins OriginsOf(const ConfigValues& flags, const ConfigValues& env, const ConfigValues& file,
                        const ConfigOrigins& file_origins);
// Each key's value in `config` as text (lists comma-joined; derived defaults filled in).
ConfigValues EffectiveValues(const Config& config);
// The flag and the environment variable of a key.
std::string FlagName(const std::string& key);
std::string EnvironmentName(const std::string& key);
// Whether a key takes a whole number (for --help's type names).
bool IsIntegerKey(const std::string& key);

}  // namespace osh::gateway
