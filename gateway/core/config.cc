#include "gateway/core/config.h"

#include "common/host_port.h"
#include "common/ip_network.h"
#include "gateway/core/log_witnesses.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include <toml++/toml.h>

#include "absl/strings/ascii.h"
#include "store/open_store.h"
#include "trust/trust_store.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gateway/core/log.h"
#include "sandbox_client/endpoint.h"

namespace osh::gateway {
namespace {

constexpr char kGatewayTable[] = "openshell.gateway";
constexpr char kPolicyTable[] = "openshell.gateway.policy";
constexpr char kLimitsTable[] = "openshell.gateway.limits";
constexpr char kEnvPrefix[] = "POLICY_GATEWAY_";
constexpr char kConfigFileVariable[] = "POLICY_GATEWAY_CONFIG";
const std::vector<std::string> kListKeys = {"accepted_surfaces", "log_witnesses"};

// Whole-number keys: each bounded both ways, since a huge value would overflow the deadline, time and
// size arithmetic it feeds.
// Reads and writes one whole-number field of Config, whatever its type.
struct Access {
  std::function<void(Config&, int64_t)> set;
  std::function<int64_t(const Config&)> get;
};
struct IntKey {
  const char* name;
  int64_t min;
  int64_t max;
  Access access;
};
template <typename T>
Access Into(T Config::*field) {
  return {[field](Config& c, int64_t v) { c.*field = static_cast<T>(v); },
          [field](const Config& c) { return static_cast<int64_t>(c.*field); }};
}
template <typename T>
Access IntoLimit(T Limits::*field) {
  return {[field](Config& c, int64_t v) { c.limits.*field = static_cast<T>(v); },
          [field](const Config& c) { return static_cast<int64_t>(c.limits.*field); }};
}
Access IntoContextLimit(size_t ContextLimits::*field) {
  return {[field](Config& c, int64_t v) { c.limits.context.*field = static_cast<size_t>(v); },
          [field](const Config& c) { return static_cast<int64_t>(c.limits.context.*field); }};
}
const std::vector<IntKey>& IntKeys() {
  constexpr int64_t kDayMs = 86'400'000, kDayS = 86'400, kMiB = 1 << 20;
  static const auto* keys = new std::vector<IntKey>{
      {"driver_connect_timeout_ms", 0, kDayMs, Into(&Config::driver_connect_timeout_ms)},
      {"driver_call_timeout_ms", 1, 600'000, Into(&Config::driver_call_timeout_ms)},
      {"refresh_interval_s", 0, 365 * kDayS, Into(&Config::refresh_interval_s)},
      {"replica_reprojection_wait_ms", 0, 600'000, Into(&Config::replica_reprojection_wait_ms)},
      {"clock_skew_s", 0, kDayS, Into(&Config::clock_skew_s)},
      {"log_integrate_interval_ms", 10, 60'000, Into(&Config::log_integrate_interval_ms)},
      {"log_witness_timeout_ms", 10, 60'000, Into(&Config::log_witness_timeout_ms)},
      {"max_sandbox_connections", 0, 1'000'000, IntoLimit(&Limits::max_sandbox_connections)},
      {"max_admin_connections", 0, 100'000, IntoLimit(&Limits::max_admin_connections)},
      {"max_connections_per_peer", 0, 1'000'000, IntoLimit(&Limits::max_connections_per_peer)},
      {"connection_idle_timeout_s", 1, kDayS, IntoLimit(&Limits::connection_idle_timeout_s)},
      {"max_connection_age_s", 1, kDayS, IntoLimit(&Limits::max_connection_age_s)},
      {"handshake_timeout_s", 1, 300, IntoLimit(&Limits::handshake_timeout_s)},
      {"max_streams_per_connection", 1, 10'000, IntoLimit(&Limits::max_streams_per_connection)},
      {"max_transport_memory_mb", 32, 1 << 20, IntoLimit(&Limits::max_transport_memory_mb)},
      {"max_sandbox_peer_kib_per_s", 0, 1 << 20, IntoLimit(&Limits::max_sandbox_peer_kib_per_s)},
      {"max_watchers_per_sandbox", 1, 1000, IntoLimit(&Limits::max_watchers_per_sandbox)},
      {"max_watchers", 1, 1'000'000, IntoLimit(&Limits::max_watchers)},
      {"watch_backlog", 1, 64, IntoLimit(&Limits::watch_backlog)},
      {"watch_stall_s", 1, kDayS, IntoLimit(&Limits::watch_stall_s)},
      {"max_audit_streams", 1, 100'000, IntoLimit(&Limits::max_audit_streams)},
      {"audit_stream_backlog", 1, 1'000'000, IntoLimit(&Limits::audit_stream_backlog)},
      {"audit_stream_stall_s", 1, kDayS, IntoLimit(&Limits::audit_stream_stall_s)},
      {"reports_per_second", 1, 1000, IntoLimit(&Limits::reports_per_second)},
      {"report_burst", 1, 100'000, IntoLimit(&Limits::report_burst)},
      {"max_report_error_bytes", 256, kMiB, IntoLimit(&Limits::max_report_error_bytes)},
      {"max_interceptor_admissions", 1, 2047, IntoLimit(&Limits::max_interceptor_admissions)},
      {"max_sandbox_id_bytes", 16, 4096, IntoContextLimit(&ContextLimits::sandbox_id_bytes)},
      {"max_user_subject_bytes", 16, 65'536, IntoContextLimit(&ContextLimits::user_subject_bytes)},
      {"max_attributes", 0, 4096, IntoContextLimit(&ContextLimits::attributes)},
      {"max_attribute_key_bytes", 16, 4096, IntoContextLimit(&ContextLimits::attribute_key_bytes)},
      {"max_attribute_value_bytes", 16, 65'536, IntoContextLimit(&ContextLimits::attribute_value_bytes)},
  };
  return *keys;
}
const IntKey* FindIntKey(const std::string& name) {
  for (const auto& key : IntKeys()) {
    if (name == key.name) return &key;
  }
  return nullptr;
}

const std::vector<std::string> kBoolKeys = {"builtin_context_binding", "audit_syslog"};

bool Contains(const std::vector<std::string>& v, const std::string& s) { return std::find(v.begin(), v.end(), s) != v.end(); }

const ConfigKey* FindKey(const std::string& name) {
  for (const auto& key : ConfigKeys()) {
    if (name == key.name) return &key;
  }
  return nullptr;
}

std::string Where(const std::string& path, const toml::source_region& source) {
  return absl::StrCat(path, ":", source.begin.line);
}

// One error of a config file: its line (for file order) and the message ("file:line: what").
struct FileError {
  uint32_t line = 0;
  std::string message;
};

// Reads every key of `table` into `out`; each key that is unknown or of the wrong type adds an error (the
// rest are still read, so one run reports them all).
void ReadTable(const std::string& path, const toml::table& table, const std::string& prefix, ConfigValues* out,
               ConfigOrigins* origins, std::vector<FileError>* errors) {
  auto bad = [&](const toml::source_region& source, const std::string& what) {
    errors->push_back({source.begin.line, absl::StrCat(Where(path, source), ": ", what)});
  };
  for (const auto& [raw_key, node] : table) {
    const std::string key(raw_key.str());
    const std::string full = prefix.empty() ? key : absl::StrCat(prefix, ".", key);
    if (const toml::table* sub = node.as_table()) {
      if (full == "openshell" || full == kGatewayTable || full == kPolicyTable || full == kLimitsTable) {
        ReadTable(path, *sub, full, out, origins, errors);
      } else {
        bad(node.source(), absl::StrCat("unknown table '", full, "'"));
      }
      continue;
    }
    const ConfigKey* known = FindKey(key);
    if (known == nullptr || prefix != known->table) {
      bad(node.source(), absl::StrCat("unknown key '", full, "'", known ? absl::StrCat(" (it belongs in [", known->table, "])") : ""));
      continue;
    }
    if (origins != nullptr) (*origins)[key] = Where(path, node.source());
    if (Contains(kListKeys, key)) {
      const toml::array* array = node.as_array();
      std::vector<std::string> items;
      bool strings = array != nullptr;
      for (size_t i = 0; strings && i < array->size(); ++i) {
        const toml::node& item = *array->get(i);
        if (!item.is_string()) {
          bad(item.source(), absl::StrCat("'", full, "' must be a list of strings"));
          strings = false;
        } else {
          items.push_back(std::string(*item.value<std::string_view>()));
        }
      }
      if (array == nullptr) bad(node.source(), absl::StrCat("'", full, "' must be a list of strings"));
      if (strings) (*out)[key] = absl::StrJoin(items, ",");
    } else if (Contains(kBoolKeys, key)) {
      if (!node.is_boolean()) {
        bad(node.source(), absl::StrCat("'", full, "' must be true or false"));
      } else {
        (*out)[key] = *node.value<bool>() ? "true" : "false";
      }
    } else if (FindIntKey(key) != nullptr) {
      if (!node.is_integer()) {
        bad(node.source(), absl::StrCat("'", full, "' must be an integer"));
      } else {
        (*out)[key] = absl::StrCat(*node.value<int64_t>());
      }
    } else if (!node.is_string()) {
      bad(node.source(), absl::StrCat("'", full, "' must be a string"));
    } else {
      (*out)[key] = std::string(*node.value<std::string_view>());
    }
  }
}


// The interceptor_* keys (docs/openshell-interceptor.md): read, and checked on their own; the socket's
// relation to the other sockets is checked with them in ResolveConfig.
template <typename Bad>
absl::Status ResolveInterceptorKeys(const ConfigValues& merged, const Bad& bad, Config* config) {
  auto get = [&](const char* key, std::string* out) {
    if (auto it = merged.find(key); it != merged.end()) *out = it->second;
  };
  get("interceptor_socket", &config->interceptor_socket);
  get("interceptor_listen", &config->interceptor_listen);
  get("interceptor_socket_group", &config->interceptor_socket_group);
  get("interceptor_mode", &config->interceptor_mode);
  get("interceptor_gateway_keys", &config->interceptor_gateway_keys);
  get("interceptor_gateway_id", &config->interceptor_gateway_id);
  get("interceptor_audience", &config->interceptor_audience);
  get("interceptor_openshell_endpoint", &config->interceptor_openshell_endpoint);
  get("interceptor_openshell_token_file", &config->interceptor_openshell_token_file);
  get("interceptor_openshell_socket_owner", &config->interceptor_openshell_socket_owner);
  get("interceptor_openshell_ca", &config->interceptor_openshell_ca);
  get("interceptor_openshell_client_cert", &config->interceptor_openshell_client_cert);
  get("interceptor_openshell_client_key", &config->interceptor_openshell_client_key);
  if (config->interceptor_mode != "ceiling" && config->interceptor_mode != "admit") {
    return bad("interceptor_mode", absl::StrCat("expected ceiling or admit, got '", config->interceptor_mode, "'"));
  }
  if (config->interceptor_socket.empty() && merged.count("interceptor_socket_group")) {
    return bad("interceptor_socket_group", "is set but interceptor_socket is not: nothing would use it");
  }
  if (config->interceptor_socket.empty() && config->interceptor_listen.empty()) {
    for (const char* key : {"interceptor_mode", "interceptor_gateway_keys", "interceptor_gateway_id",
                            "interceptor_audience", "interceptor_openshell_endpoint", "interceptor_openshell_token_file",
                            "interceptor_openshell_socket_owner",
                            "interceptor_openshell_ca", "interceptor_openshell_client_cert",
                            "interceptor_openshell_client_key"}) {
      if (merged.count(key)) {
        return bad(key, "is set but neither interceptor_socket nor interceptor_listen is: nothing would use it");
      }
    }
  }
  if (!config->interceptor_listen.empty()) {
    if (auto parsed = common::ParseHostPort(config->interceptor_listen); !parsed.ok()) {
      return bad("interceptor_listen", std::string(parsed.status().message()));
    }
    // Over TCP the socket's permissions no longer say who calls: only the OpenShell gateway's token does.
    if (config->interceptor_gateway_keys.empty()) {
      return bad("interceptor_listen",
                 "the interceptor over TCP requires interceptor_gateway_keys (the OpenShell gateway's extension-token "
                 "key): every call must carry its token, since anyone who reaches the port could otherwise decide "
                 "what sandboxes may do");
    }
  }
  if (config->interceptor_gateway_id.empty()) return bad("interceptor_gateway_id", "must not be empty");
  if (config->interceptor_audience.empty()) return bad("interceptor_audience", "must not be empty");
  // The push exists only in admit mode; its credential only with its endpoint.
  const std::string& endpoint = config->interceptor_openshell_endpoint;
  if (!endpoint.empty() && config->interceptor_mode != "admit") {
    return bad("interceptor_openshell_endpoint", "is set but interceptor_mode is not admit: nothing is pushed in ceiling mode");
  }
  for (const char* key : {"interceptor_openshell_token_file", "interceptor_openshell_ca",
                          "interceptor_openshell_client_cert", "interceptor_openshell_client_key",
                          "interceptor_openshell_socket_owner"}) {
    if (endpoint.empty() && merged.count(key)) {
      return bad(key, "is set but interceptor_openshell_endpoint is not: nothing would use it");
    }
  }
  if (!endpoint.empty()) {
    const bool unix_socket = absl::StartsWith(endpoint, "unix:///");
    if (!unix_socket && !absl::StartsWith(endpoint, "https://")) {
      return bad("interceptor_openshell_endpoint",
                 absl::StrCat("expected unix:///<path> or https://<host>:<port>, got '", endpoint, "'"));
    }
    if (!unix_socket && merged.count("interceptor_openshell_socket_owner")) {
      return bad("interceptor_openshell_socket_owner", "applies to a unix:/// endpoint only");
    }
    if (!unix_socket) {
      if (auto parsed = common::ParseHostPort(endpoint.substr(std::strlen("https://"))); !parsed.ok()) {
        return bad("interceptor_openshell_endpoint", std::string(parsed.status().message()));
      }
    }
    if (unix_socket && !config->interceptor_openshell_ca.empty()) {
      return bad("interceptor_openshell_ca", "is set but interceptor_openshell_endpoint is a Unix socket (no TLS)");
    }
    if (config->interceptor_openshell_client_cert.empty() != config->interceptor_openshell_client_key.empty()) {
      return bad(config->interceptor_openshell_client_cert.empty() ? "interceptor_openshell_client_cert"
                                                                   : "interceptor_openshell_client_key",
                 "the client certificate and its key are set together");
    }
    if (unix_socket && !config->interceptor_openshell_client_cert.empty()) {
      return bad("interceptor_openshell_client_cert", "is set but interceptor_openshell_endpoint is a Unix socket (no TLS)");
    }
  }
  return absl::OkStatus();
}

}  // namespace

ConfigValueType ConfigValueTypeOf(const std::string& key) {
  if (Contains(kListKeys, key)) return ConfigValueType::kList;
  if (Contains(kBoolKeys, key)) return ConfigValueType::kBoolean;
  if (FindIntKey(key) != nullptr) return ConfigValueType::kInteger;
  return ConfigValueType::kString;
}

std::string Config::SqlitePath() const {
  return store::SqlitePathOf(database);
}

const std::vector<ConfigKey>& ConfigKeys() {
  static const auto* keys = new std::vector<ConfigKey>{
      {"state_dir", kGatewayTable, "folder for the database and sockets (created 0700)"},
      {"database", kGatewayTable,
       "sqlite:<path> (default: sqlite:<state_dir>/gateway.db), or postgresql://... for replicas (libpq URL; PG* variables apply)"},
      {"replica_reprojection_wait_ms", kGatewayTable,
       "replicas: how long to wait for the re-projection of the replica that changed a scope before re-projecting "
       "it here (default 5000)"},
      {"admin_socket", kGatewayTable, "PolicyGateway Unix socket (default: <state_dir>/admin.sock)"},
      {"sandbox_socket", kGatewayTable, "SandboxPolicy Unix socket (default: <state_dir>/sandbox.sock)"},
      {"fs_group", kGatewayTable,
       "group (name or gid) whose write permission on folders the ownership checks accept as the gateway's own: "
       "a Kubernetes pod's fsGroup, whose volumes' folders are group-writable; it must be a group the gateway runs "
       "with, not root's; files are never accepted group-writable; unset: no group"},
      {"sandbox_socket_group", kGatewayTable,
       "group (name or gid) whose members may connect to the sandbox socket: it becomes 0660, in a folder of its "
       "own made 0710 for that group (sandbox_socket must not share state_dir's folder); unset: 0600"},
      {"sandbox_listen", kGatewayTable,
       "host:port to serve sandboxes over TCP with TLS as well (tls_cert, tls_key; a client certificate too "
       "when sandbox_client_ca is set); without tls_cert only a loopback address, in plaintext, for development"},
      {"admin_listen", kGatewayTable,
       "host:port to serve the admin API over TCP with mutual TLS as well (tls_cert, tls_key and tls_client_ca "
       "required)"},
      {"tls_cert", kGatewayTable, "PEM certificate chain of the TCP listeners (reloaded on SIGHUP)"},
      {"tls_key", kGatewayTable, "PEM private key of tls_cert (reloaded on SIGHUP)"},
      {"tls_client_ca", kGatewayTable,
       "PEM CA bundle of operators: admin_listen's clients must present a certificate it issued (reloaded on "
       "SIGHUP); it does not gate sandbox_listen"},
      {"sandbox_client_ca", kGatewayTable,
       "PEM CA bundle of supervisors: when set, sandbox_listen's clients must present a certificate it issued "
       "(reloaded on SIGHUP); must not be tls_client_ca (a supervisor's certificate would be an operator's)"},
      {"log_format", kGatewayTable, "text (default) or json: one JSON object a line"},
      {"log_level", kGatewayTable, "info (default), warning or error: lines below it are dropped"},
      {"metrics_listen", kGatewayTable,
       "host:port for Prometheus metrics over HTTP (GET /metrics), e.g. 127.0.0.1:9464; unset: off"},
      {"metrics_allow", kGatewayTable,
       "comma-separated CIDRs allowed to scrape metrics_listen (e.g. 127.0.0.1/32,10.0.0.0/8); others' connections are "
       "closed as they connect; "
       "unset: any address that reaches the port"},
      {"audit_syslog", kGatewayTable,
       "true: also send every audit event to the local syslog, one RFC 5424 line with structured data (default false)"},
      {"audit_syslog_socket", kGatewayTable, "the Unix datagram socket audit_syslog sends to (default /dev/log)"},
      {"log_signing_key", kGatewayTable,
       "PEM Ed25519 private key of the verifiable log (policyctl log keygen; its own key, never one of the trust "
       "store): the audit log is published as a Merkle tree, tiles and signed checkpoints under <state_dir>/log; "
       "unset: no log"},
      {"log_origin", kGatewayTable, "the log's name: its checkpoints' origin line and its key's name (default: <hostname>/policy-gateway)"},
      {"log_listen", kGatewayTable,
       "host:port serving the verifiable log read-only over plain HTTP (GET /checkpoint, /tile/...; public: no "
       "allow list); may equal metrics_listen to share its server; unset: off"},
      {"log_integrate_interval_ms", kGatewayTable,
       "how often audit events committed since the last checkpoint are integrated and a new checkpoint signed (default 200)"},
      {"log_witnesses", kGatewayTable,
       "witnesses asked to cosign each checkpoint (C2SP tlog-witness), each \"<url> <verifier key>\": the prefix of "
       "its add-checkpoint endpoint and its cosignature/v1 key as policy-log-witness prints it; the published "
       "checkpoint carries the cosignatures collected; unset: none"},
      {"log_witness_timeout_ms", kGatewayTable,
       "how long one add-checkpoint request to a witness may take (default 1000); a witness that fails is asked "
       "again 10 s later"},
      {"interceptor_socket", kGatewayTable,
       "Unix socket serving openshell.gateway_interceptor.v1.GatewayInterceptor to an OpenShell gateway "
       "(docs/openshell-interceptor.md); unset (and no interceptor_listen): no interceptor"},
      {"interceptor_listen", kGatewayTable,
       "host:port to serve the interceptor over TCP with TLS as well (tls_cert, tls_key; no client certificate "
       "asked): requires interceptor_gateway_keys, since every call must carry the OpenShell gateway's token; "
       "unset: off"},
      {"interceptor_socket_group", kGatewayTable,
       "group (name or gid) whose members (the OpenShell gateway's user) may connect to interceptor_socket: it "
       "becomes 0660, in a folder of its own made 0710 for that group; unset: 0600"},
      {"interceptor_mode", kGatewayTable,
       "ceiling (default): the request's own policy stays and every path that can widen a sandbox is checked "
       "against the signed ceiling; admit: CreateSandbox is admitted through this gateway's Policy subsystem and "
       "its policy replaced by the admitted body, other policy writes refused unless the driver permits mutation"},
      {"interceptor_gateway_keys", kGatewayTable,
       "the OpenShell gateway's extension-token key: a JWKS file or an Ed25519 public-key PEM; every call must then "
       "carry its EdDSA bearer JWT; unset: no token is asked (the socket's permissions are the only check; "
       "refused with interceptor_listen)"},
      {"interceptor_gateway_id", kGatewayTable,
       "the OpenShell gateway's gateway_id: tokens must say iss = openshell-gateway:<id> (default: openshell)"},
      {"interceptor_audience", kGatewayTable,
       "the aud tokens must carry, also returned by Describe (default: "
       "urn:openshell:extension:interceptor:policy-gateway)"},
      {"interceptor_openshell_endpoint", kGatewayTable,
       "admit mode: the OpenShell gateway's gRPC endpoint (unix:///<path> or https://<host>:<port>), to which a "
       "changed projection is pushed as UpdateConfig; unset: nothing is pushed"},
      {"interceptor_openshell_token_file", kGatewayTable,
       "bearer token (OIDC) for the push, read at each push; its principal needs scope config:write and workspace "
       "role admin; unset: none sent"},
      {"interceptor_openshell_socket_owner", kGatewayTable,
       "unix:/// push: a user (name or uid) the process serving the OpenShell gateway's socket may run as, besides "
       "root and this gateway's user (checked on every connection, SO_PEERCRED)"},
      {"interceptor_openshell_ca", kGatewayTable, "CA (PEM) of the OpenShell gateway's TLS certificate; unset: the system's roots"},
      {"interceptor_openshell_client_cert", kGatewayTable, "client certificate (PEM) for the push over https (mTLS); with its key"},
      {"interceptor_openshell_client_key", kGatewayTable, "key (PEM) of interceptor_openshell_client_cert"},
      {"accepted_surfaces", kPolicyTable, "surfaces the gateway admits (default: openshell.sandbox.v1)"},
      {"trust_store", kPolicyTable, "trust store JSON file; unset: no verification (dev)"},
      {"ceiling_id", kPolicyTable,
       "the ceiling_id of this fleet's ceilings: SetCeiling refuses a ceiling of another id (invalid_ceiling), "
       "however well signed, and one of another id in the database is never adopted (a running gateway keeps its "
       "own and refuses commits, a starting one refuses to start: ceiling_missing); unset: any id"},
      {"driver_socket", kPolicyTable, "third-party PolicyDriver socket; unset: the builtin driver"},
      {"driver_connect_timeout_ms", kPolicyTable, "how long to retry connecting to the driver (default 30000)"},
      {"driver_call_timeout_ms", kPolicyTable, "deadline of each call to the driver (default 5000)"},
      {"driver_socket_owner", kPolicyTable,
       "user (name or uid) who may own the driver socket, besides root and the gateway's own user"},
      {"refresh_interval_s", kPolicyTable, "poll the driver this often; 0: only on RefreshSandbox (default 0)"},
      {"clock_skew_s", kPolicyTable, "allowed clock skew for key windows and expiry (default 60)"},
      {"builtin_signing_key", kPolicyTable, "PEM private key the builtin driver signs projections with"},
      {"builtin_signing_key_id", kPolicyTable, "key id for builtin_signing_key"},
      {"builtin_context_binding", kPolicyTable,
       "true (default): the builtin driver binds each projection to its sandbox's context; false: one "
       "projection (and one signature) per policy revision, shared by every sandbox it applies to"},
      {"max_sandbox_connections", kLimitsTable,
       "open connections on the sandbox socket; 0 (default): the descriptor limit less 512 and the admin cap"},
      {"max_admin_connections", kLimitsTable,
       "open connections on the admin socket; 0 (default): an eighth of the descriptor limit, 16 to 256"},
      {"max_connections_per_peer", kLimitsTable,
       "open connections one peer process may hold on a socket; past it a connection is closed at once; 0 "
       "(default): a quarter of that socket's cap"},
      {"connection_idle_timeout_s", kLimitsTable, "close a connection with no call in flight after this (default 120)"},
      {"max_connection_age_s", kLimitsTable,
       "admin_listen with TLS: ask a connection to go after this; its open calls go on, new calls reconnect and are "
       "checked against tls_client_ca as it is then (default 600)"},
      {"handshake_timeout_s", kLimitsTable,
       "close a connection whose HTTP/2 (and TLS) handshake has not finished after this (default 10)"},
      {"max_streams_per_connection", kLimitsTable, "calls open at once on one connection (HTTP/2 streams; default 100)"},
      {"max_sandbox_peer_kib_per_s", kLimitsTable,
       "KiB a second one address may send to sandbox_listen, over all its connections; past it reading pauses "
       "(default 64; 0: unlimited)"},
      {"max_transport_memory_mb", kLimitsTable,
       "memory gRPC may hold for one listener's connections and calls; past it, connections are shed (default 1024)"},
      {"max_watchers_per_sandbox", kLimitsTable, "open WatchProjection streams per sandbox (default 8)"},
      {"max_watchers", kLimitsTable, "open WatchProjection streams in all (default 10000)"},
      {"watch_backlog", kLimitsTable,
       "projections not yet written to a watcher before it is dropped as a slow reader (default 4)"},
      {"watch_stall_s", kLimitsTable,
       "a watch stream ended (slow reader, a newer watch took its place, revoked) while a write waits on a reader "
       "that takes nothing this long is cancelled, giving up its place (default 30)"},
      {"max_audit_streams", kLimitsTable, "open WatchAuditEvents and WatchSandboxes streams on the admin API (default 256)"},
      {"audit_stream_backlog", kLimitsTable,
       "audit events queued for one WatchAuditEvents stream; a slower reader catches up from the database (default 1024)"},
      {"audit_stream_stall_s", kLimitsTable,
       "a WatchAuditEvents stream whose reader takes no event this long while events wait is ended as lagging "
       "(default 10)"},
      {"reports_per_second", kLimitsTable, "ReportPolicyStatus calls a second per sandbox, refilled steadily (default 2)"},
      {"report_burst", kLimitsTable, "ReportPolicyStatus calls per sandbox in a burst (default 20)"},
      {"max_report_error_bytes", kLimitsTable, "a report's error text is cut to this, with a marker (default 4096)"},
      {"max_interceptor_admissions", kLimitsTable,
       "admit mode: CreateSandbox modify phases admitting at once; one more is refused RESOURCE_EXHAUSTED, so "
       "admissions waiting on a slow driver leave room for the other Evaluate calls (default 1024, of 2048)"},
      {"max_sandbox_id_bytes", kLimitsTable, "longest context.sandbox_id admitted (default 256)"},
      {"max_user_subject_bytes", kLimitsTable, "longest context.user_subject admitted (default 1024)"},
      {"max_attributes", kLimitsTable, "most context.attributes entries admitted (default 64)"},
      {"max_attribute_key_bytes", kLimitsTable, "longest context.attributes key admitted (default 128)"},
      {"max_attribute_value_bytes", kLimitsTable, "longest context.attributes value admitted (default 1024)"},
  };
  return *keys;
}

absl::StatusOr<ConfigValues> ParseConfigText(std::string_view text, const std::string& name, ConfigOrigins* origins) {
  ConfigValues values;
  try {
    const toml::table table = toml::parse(text, name);
    std::vector<FileError> errors;
    ReadTable(name, table, "", &values, origins, &errors);
    if (!errors.empty()) {  // every one, in file order (a table is read in key order)
      std::stable_sort(errors.begin(), errors.end(), [](const FileError& a, const FileError& b) { return a.line < b.line; });
      std::vector<std::string> lines;
      for (const auto& e : errors) lines.push_back(e.message);
      return absl::InvalidArgumentError(absl::StrJoin(lines, "\n"));
    }
  } catch (const toml::parse_error& error) {
    return absl::InvalidArgumentError(absl::StrCat(name, ":", error.source().begin.line, ": ", std::string(error.description())));
  }
  return values;
}

absl::StatusOr<ConfigValues> ReadConfigFile(const std::string& path, ConfigOrigins* origins) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat(path, ": cannot be read: ", std::strerror(errno)));
  std::ostringstream text;
  text << in.rdbuf();
  return ParseConfigText(text.str(), path, origins);
}

std::string EnvironmentName(const std::string& key) { return absl::StrCat(kEnvPrefix, absl::AsciiStrToUpper(key)); }
std::string FlagName(const std::string& key) {
  std::string flag = absl::StrCat("--", key);
  std::replace(flag.begin(), flag.end(), '_', '-');
  return flag;
}

absl::StatusOr<ConfigValues> ReadConfigEnvironment(const char* const* environment) {
  ConfigValues values;
  for (const char* const* entry = environment; entry != nullptr && *entry != nullptr; ++entry) {
    const std::string_view text(*entry);
    if (!text.starts_with(kEnvPrefix)) continue;
    const size_t equals = text.find('=');
    const std::string name(text.substr(0, equals));
    // The sandbox handle of policyctl and supervisors (sandbox_client) shares the prefix: not a setting.
    if (name == kConfigFileVariable || name == "POLICY_GATEWAY_SANDBOX_HANDLE") continue;
    const ConfigKey* known = nullptr;
    for (const auto& key : ConfigKeys()) {
      if (EnvironmentName(key.name) == name) known = &key;
    }
    if (known == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, ": not a setting (the variables are ", kEnvPrefix, "<KEY> for the config keys, and ",
          kConfigFileVariable, "); unset it or fix its name"));
    }
    values[known->name] = equals == std::string_view::npos ? "" : std::string(text.substr(equals + 1));
  }
  return values;
}

bool IsIntegerKey(const std::string& key) { return FindIntKey(key) != nullptr; }

ConfigOrigins OriginsOf(const ConfigValues& flags, const ConfigValues& env, const ConfigValues& file,
                        const ConfigOrigins& file_origins) {
  ConfigOrigins origins;
  for (const auto& key : ConfigKeys()) {
    const std::string name = key.name;
    if (flags.count(name)) {
      origins[name] = absl::StrCat("flag ", name == "accepted_surfaces" ? "--accepted-surface" : FlagName(name));
    } else if (env.count(name)) {
      origins[name] = absl::StrCat("environment ", EnvironmentName(name));
    } else if (file.count(name)) {
      auto it = file_origins.find(name);
      origins[name] = it != file_origins.end() ? it->second : "file";
    } else {
      origins[name] = "default";
    }
  }
  return origins;
}

ConfigValues EffectiveValues(const Config& config) {
  ConfigValues values = {
      {"state_dir", config.state_dir},
      {"database", config.database},
      {"admin_socket", config.admin_socket},
      {"sandbox_socket", config.sandbox_socket},
      {"metrics_listen", config.metrics_listen},
      {"metrics_allow", config.metrics_allow},
      {"audit_syslog", config.audit_syslog ? "true" : "false"},
      {"audit_syslog_socket", config.audit_syslog_socket},
      {"fs_group", config.fs_group},
      {"sandbox_socket_group", config.sandbox_socket_group},
      {"sandbox_listen", config.sandbox_listen},
      {"admin_listen", config.admin_listen},
      {"tls_cert", config.tls_cert},
      {"tls_key", config.tls_key},
      {"tls_client_ca", config.tls_client_ca},
      {"sandbox_client_ca", config.sandbox_client_ca},
      {"log_format", config.log_format},
      {"log_level", config.log_level},
      {"accepted_surfaces", absl::StrJoin(config.accepted_surfaces, ",")},
      {"trust_store", config.trust_store},
      {"ceiling_id", config.ceiling_id},
      {"driver_socket", config.driver_socket},
      {"driver_socket_owner", config.driver_socket_owner},
      {"builtin_signing_key", config.builtin_signing_key},
      {"builtin_signing_key_id", config.builtin_signing_key_id},
      {"builtin_context_binding", config.builtin_context_binding ? "true" : "false"},
      {"log_signing_key", config.log_signing_key},
      {"log_origin", config.log_origin},
      {"log_listen", config.log_listen},
      {"log_witnesses", absl::StrJoin(config.log_witnesses, ",")},
      {"interceptor_socket", config.interceptor_socket},
      {"interceptor_listen", config.interceptor_listen},
      {"interceptor_socket_group", config.interceptor_socket_group},
      {"interceptor_mode", config.interceptor_mode},
      {"interceptor_gateway_keys", config.interceptor_gateway_keys},
      {"interceptor_gateway_id", config.interceptor_gateway_id},
      {"interceptor_audience", config.interceptor_audience},
      {"interceptor_openshell_endpoint", config.interceptor_openshell_endpoint},
      {"interceptor_openshell_token_file", config.interceptor_openshell_token_file},
      {"interceptor_openshell_socket_owner", config.interceptor_openshell_socket_owner},
      {"interceptor_openshell_ca", config.interceptor_openshell_ca},
      {"interceptor_openshell_client_cert", config.interceptor_openshell_client_cert},
      {"interceptor_openshell_client_key", config.interceptor_openshell_client_key},
  };
  for (const IntKey& key : IntKeys()) values[key.name] = absl::StrCat(key.access.get(config));
  return values;
}

absl::StatusOr<Config> ResolveConfig(const ConfigValues& flags, const ConfigValues& env, const ConfigValues& file,
                                     const ConfigOrigins& file_origins) {
  ConfigValues merged = file;
  for (const auto& [k, v] : env) merged[k] = v;
  for (const auto& [k, v] : flags) merged[k] = v;
  const ConfigOrigins origins = OriginsOf(flags, env, file, file_origins);
  // A bad value names its key and where it came from: a file's line first, as parse errors do.
  auto bad = [&](const std::string& key, const std::string& message) {
    auto it = origins.find(key);
    const std::string origin = it == origins.end() ? "default" : it->second;
    if (file.count(key) && !flags.count(key) && !env.count(key) && file_origins.count(key)) {
      return absl::InvalidArgumentError(absl::StrCat(origin, ": ", key, ": ", message));
    }
    return absl::InvalidArgumentError(absl::StrCat(key, ": ", message, origin == "default" ? "" : absl::StrCat(" (", origin, ")")));
  };
  // An empty environment variable or flag over a value the file (or, for a flag, the environment) gives —
  // an unset ${VAR} in a unit file, `--trust-store ""` — would switch that setting off unseen: the trust
  // store, a client CA, metrics_allow (review 106). Refused; unset it to keep the lower one.
  // (An empty variable a flag overrides switches nothing off: not refused — review 107.)
  auto overrides_with_empty = [&](const ConfigValues& higher, const ConfigValues& lower) -> std::string {
    for (const auto& [k, v] : higher) {
      if (&higher == &env && flags.count(k)) continue;
      if (auto it = lower.find(k); v.empty() && it != lower.end() && !it->second.empty()) return k;
    }
    return "";
  };
  for (const std::string& key : {overrides_with_empty(env, file), overrides_with_empty(flags, env),
                                 overrides_with_empty(flags, file)}) {
    if (!key.empty()) {
      return bad(key, "is set to the empty string over a value given at lower precedence, which it would switch "
                      "off: unset it to keep that value, or give another");
    }
  }
  Config config;
  auto get = [&](const std::string& key, std::string* out) {
    if (auto it = merged.find(key); it != merged.end()) *out = it->second;
  };
  get("state_dir", &config.state_dir);
  get("database", &config.database);
  get("admin_socket", &config.admin_socket);
  get("sandbox_socket", &config.sandbox_socket);
  get("metrics_listen", &config.metrics_listen);
  get("metrics_allow", &config.metrics_allow);
  if (!config.metrics_allow.empty() && config.metrics_listen.empty()) {
    return bad("metrics_allow", "is set but metrics_listen is not: nothing would use it");
  }
  for (absl::string_view entry : absl::StrSplit(config.metrics_allow, ',', absl::SkipWhitespace())) {
    entry = absl::StripAsciiWhitespace(entry);
    // What the metrics listener refuses at start (common/http_server.cc, ParseAllowEntry), refused here so
    // that --check-config refuses it too.
    if (auto network = common::ParseIpNetwork(entry); !network.ok()) {
      return bad("metrics_allow", absl::StrCat("'", entry, "' ", absl::StartsWith(network.status().message(), "invalid")
                                                                     ? "has a bad prefix length"
                                                                     : "is not an address or CIDR"));
    }
  }
  get("fs_group", &config.fs_group);
  get("sandbox_socket_group", &config.sandbox_socket_group);
  get("sandbox_listen", &config.sandbox_listen);
  get("admin_listen", &config.admin_listen);
  get("tls_cert", &config.tls_cert);
  get("tls_key", &config.tls_key);
  get("tls_client_ca", &config.tls_client_ca);
  get("sandbox_client_ca", &config.sandbox_client_ca);
  get("log_format", &config.log_format);
  get("log_level", &config.log_level);
  if (auto parsed = ParseLogFormat(config.log_format); !parsed.ok()) return bad("log_format", std::string(parsed.status().message()));
  if (auto parsed = ParseLogLevel(config.log_level); !parsed.ok()) return bad("log_level", std::string(parsed.status().message()));
  get("trust_store", &config.trust_store);
  get("ceiling_id", &config.ceiling_id);
  if (merged.count("ceiling_id") && !trust::IsValidKeyId(config.ceiling_id)) {
    return bad("ceiling_id", absl::StrCat("'", config.ceiling_id, "' must be 1..128 of [A-Za-z0-9._:-], as a ceiling's id"));
  }
  get("driver_socket", &config.driver_socket);
  get("driver_socket_owner", &config.driver_socket_owner);
  get("builtin_signing_key", &config.builtin_signing_key);
  get("builtin_signing_key_id", &config.builtin_signing_key_id);
  get("log_signing_key", &config.log_signing_key);
  get("log_origin", &config.log_origin);
  get("log_listen", &config.log_listen);
  if (!config.log_listen.empty() && config.log_signing_key.empty()) {
    return bad("log_listen", "is set but log_signing_key is not: there is no log to serve");
  }
  if (!config.log_origin.empty() && config.log_signing_key.empty()) {
    return bad("log_origin", "is set but log_signing_key is not: there is no log to name");
  }
  if (auto it = merged.find("log_witnesses"); it != merged.end()) {
    config.log_witnesses = absl::StrSplit(it->second, ',', absl::SkipWhitespace());
    for (const std::string& witness : config.log_witnesses) {
      if (auto parsed = ParseLogWitness(witness); !parsed.ok()) return bad("log_witnesses", std::string(parsed.status().message()));
    }
    if (!config.log_witnesses.empty() && config.log_signing_key.empty()) {
      return bad("log_witnesses", "are set but log_signing_key is not: there is no log to witness");
    }
  }
  if (auto status = ResolveInterceptorKeys(merged, bad, &config); !status.ok()) return status;
  if (auto it = merged.find("builtin_context_binding"); it != merged.end()) {
    if (!absl::SimpleAtob(it->second, &config.builtin_context_binding)) {
      return bad("builtin_context_binding", absl::StrCat("expected true or false, got '", it->second, "'"));
    }
  }
  if (auto it = merged.find("audit_syslog"); it != merged.end() && !absl::SimpleAtob(it->second, &config.audit_syslog)) {
    return bad("audit_syslog", absl::StrCat("expected true or false, got '", it->second, "'"));
  }
  get("audit_syslog_socket", &config.audit_syslog_socket);
  if (auto it = merged.find("accepted_surfaces"); it != merged.end()) {
    config.accepted_surfaces = absl::StrSplit(it->second, ',', absl::SkipWhitespace());
    if (config.accepted_surfaces.empty()) return bad("accepted_surfaces", "must name at least one surface");
  }
  for (const IntKey& key : IntKeys()) {
    auto it = merged.find(key.name);
    if (it == merged.end()) continue;
    int64_t value = 0;
    if (!absl::SimpleAtoi(it->second, &value) || value < key.min || value > key.max) {
      return bad(key.name, absl::StrCat("expected a whole number from ", key.min, " to ", key.max, ", got '", it->second, "'"));
    }
    key.access.set(config, value);
  }
  if (config.state_dir.empty()) return bad("state_dir", "must not be empty");
  if (config.database.empty()) config.database = absl::StrCat("sqlite:", config.state_dir, "/gateway.db");
  if (config.admin_socket.empty()) config.admin_socket = absl::StrCat(config.state_dir, "/admin.sock");
  if (config.sandbox_socket.empty()) config.sandbox_socket = absl::StrCat(config.state_dir, "/sandbox.sock");
  if (!config.log_signing_key.empty() && config.log_origin.empty() && store::IsPostgresUrl(config.database)) {
    // Replicas are one log: a name per host would make each its own (and a pod's name changes on restart).
    return bad("log_origin", "required with a PostgreSQL database: every replica of a fleet signs one log under one "
                             "name (for example log_origin = \"policy.example.com/policy-gateway\")");
  }
  if (!config.log_signing_key.empty() && config.log_origin.empty()) {
    char host[256] = {};
    if (::gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0') std::snprintf(host, sizeof(host), "localhost");
    config.log_origin = absl::StrCat(host, "/policy-gateway");
  }
  if (config.SqlitePath().empty() && !store::IsPostgresUrl(config.database)) {
    return bad("database", "expected sqlite:<path> or postgresql://...");
  }
  if (config.admin_socket == config.sandbox_socket) {
    return absl::InvalidArgumentError("admin_socket and sandbox_socket must differ");
  }
  if (!config.sandbox_socket_group.empty()) {
    auto folder = [](const std::string& path) { return std::filesystem::absolute(path).lexically_normal().parent_path(); };
    const auto sandbox_folder = folder(config.sandbox_socket);
    if (sandbox_folder == folder(config.admin_socket) || (!config.SqlitePath().empty() && sandbox_folder == folder(config.SqlitePath())) ||
        sandbox_folder == std::filesystem::absolute(config.state_dir).lexically_normal()) {
      return bad("sandbox_socket_group",
                 absl::StrCat("needs sandbox_socket in a folder of its own (the group will be let into it), not ",
                              sandbox_folder.string(), ", which holds the admin socket or the database"));
    }
  }
  if (!config.interceptor_listen.empty() && config.tls_cert.empty()) {
    return bad("interceptor_listen",
               "the interceptor over TCP requires TLS: set tls_cert and tls_key (the OpenShell gateway's token and "
               "every request it sends would otherwise cross the network in plaintext)");
  }
  if (!config.interceptor_socket.empty()) {
    const auto interceptor = std::filesystem::absolute(config.interceptor_socket).lexically_normal();
    for (const std::string* other : {&config.admin_socket, &config.sandbox_socket}) {
      if (interceptor == std::filesystem::absolute(*other).lexically_normal()) {
        return bad("interceptor_socket", absl::StrCat("is ", *other, ", a socket the gateway already serves"));
      }
    }
  }
  if (!config.interceptor_socket_group.empty()) {
    auto folder = [](const std::string& path) { return std::filesystem::absolute(path).lexically_normal().parent_path(); };
    const auto interceptor_folder = folder(config.interceptor_socket);
    if (interceptor_folder == folder(config.admin_socket) || interceptor_folder == folder(config.sandbox_socket) ||
        (!config.SqlitePath().empty() && interceptor_folder == folder(config.SqlitePath())) ||
        interceptor_folder == std::filesystem::absolute(config.state_dir).lexically_normal()) {
      return bad("interceptor_socket_group",
                 absl::StrCat("needs interceptor_socket in a folder of its own (the group will be let into it), not ",
                              interceptor_folder.string(), ", which holds another socket or the database"));
    }
  }
  if (config.tls_cert.empty() != config.tls_key.empty()) {
    return bad(config.tls_cert.empty() ? "tls_key" : "tls_cert", "tls_cert and tls_key go together");
  }
  if (!config.admin_listen.empty() && (config.tls_cert.empty() || config.tls_client_ca.empty())) {
    return bad("admin_listen",
               "the admin API over TCP requires mutual TLS: set tls_cert, tls_key and tls_client_ca (admin calls "
               "change policy, and only a client certificate from tls_client_ca proves who makes them)");
  }
  if (!config.sandbox_listen.empty() && config.tls_cert.empty() && !sandbox_client::IsLoopbackHostPort(config.sandbox_listen)) {
    return bad("sandbox_listen",
               "a sandbox listener off loopback requires TLS: set tls_cert and tls_key (plaintext is allowed on a "
               "loopback address only, for development)");
  }
  if (!config.sandbox_client_ca.empty() && config.sandbox_listen.empty()) {
    return bad("sandbox_client_ca", "is set but sandbox_listen is not: nothing would use it");
  }
  if (!config.sandbox_client_ca.empty() && config.tls_cert.empty()) {
    return bad("sandbox_client_ca", "client certificates need TLS: set tls_cert and tls_key");
  }
  if (!config.tls_client_ca.empty() && !config.sandbox_client_ca.empty() &&
      std::filesystem::absolute(config.tls_client_ca).lexically_normal() ==
          std::filesystem::absolute(config.sandbox_client_ca).lexically_normal()) {
    return bad("sandbox_client_ca",
               "is tls_client_ca: any supervisor's certificate would then be an operator's on admin_listen; give "
               "supervisors a CA of their own");
  }
  if (!config.tls_cert.empty() && config.sandbox_listen.empty() && config.admin_listen.empty() &&
      config.interceptor_listen.empty()) {
    return bad("tls_cert", "is set but none of sandbox_listen, admin_listen and interceptor_listen is: nothing would use it");
  }
  for (const auto& [key, value] : {std::pair<const char*, const std::string*>{"sandbox_listen", &config.sandbox_listen},
                                    {"admin_listen", &config.admin_listen},
                                    {"metrics_listen", &config.metrics_listen},
                                    {"log_listen", &config.log_listen}}) {
    if (value->empty()) continue;
    if (auto parsed = common::ParseHostPort(*value); !parsed.ok()) return bad(key, std::string(parsed.status().message()));
  }
  if (config.builtin_signing_key.empty() != config.builtin_signing_key_id.empty()) {
    return absl::InvalidArgumentError("builtin_signing_key and builtin_signing_key_id go together");
  }
  return config;
}

}  // namespace osh::gateway
