// Gateway units without processes: the mutation gate over the service descriptor, configuration
// precedence and errors, socket path preparation.
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <sqlite3.h>
#include <cstdlib>
#include <cstring>
#include <set>
#include <sstream>
#include <thread>
#include <tuple>

#include "common/host_port.h"
#include "gateway/core/ceiling_guard.h"
#include "gateway/core/cost_bounded_memo.h"
#include "gateway/core/config.h"
#include "gateway/core/interceptor_evaluator.h"
#include "gateway/core/interceptor_governance.h"
#include "gateway/core/interceptor_payload.h"
#include "gateway/core/provider_catalogue.h"
#include "gateway/core/profile_change_check.h"
#include "gateway/core/interceptor_records.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/message_differencer.h"
#include "store/sqlite_db.h"
#include "gateway/core/log.h"
#include "gateway/core/drift.h"
#include "gateway/core/audit_budget.h"
#include "gateway/core/audit_recorder.h"
#include "gateway/core/driver_state_audit.h"
#include "gateway/core/audit_feed.h"
#include "common/errors.h"
#include "store/sqlite_store.h"
#include "absl/time/clock.h"
#include <atomic>
#include "gateway/server/daemon.h"
#include "gateway/server/metrics.h"
#include "gateway/core/mutation_gate.h"
#include "gateway/core/worker_pool.h"
#include "drivers/unix_server.h"
#include "openshell/policy/gateway/v1/gateway.grpc.pb.h"
#include "tests/test_support.h"
#include <ctime>
#include "store/clock.h"
#include "policy/policy_file.h"
#include "policy/body_codec.h"
#include "policy/digest.h"
#include "trust/ceiling.h"

namespace v1 = openshell::policy::gateway::v1;

TEST_CASE("mutation gate: every PolicyGateway method is classified", "[gate]") {
  const auto* service = v1::AdmitSandboxRequest::descriptor()->file()->FindServiceByName("PolicyGateway");
  REQUIRE(service != nullptr);
  REQUIRE(service->method_count() >= 11);
  for (int i = 0; i < service->method_count(); ++i) {
    INFO(service->method(i)->full_name());
    CHECK(osh::gateway::ClassOf(*service->method(i)) != v1::MUTATION_CLASS_UNSPECIFIED);
  }
}

TEST_CASE("mutation gate: refuses exactly the mutating methods, and anything unknown", "[gate]") {
  const auto* service = v1::AdmitSandboxRequest::descriptor()->file()->FindServiceByName("PolicyGateway");
  std::set<std::string> refused;
  for (int i = 0; i < service->method_count(); ++i) {
    const std::string path = "/" + service->full_name() + "/" + service->method(i)->name();
    CHECK(osh::gateway::CheckMutationGate(path, /*permits_mutation=*/true).ok());
    auto status = osh::gateway::CheckMutationGate(path, /*permits_mutation=*/false);
    if (!status.ok()) {
      CHECK(absl::IsFailedPrecondition(status));
      CHECK_THAT(std::string(status.message()), Catch::StartsWith("mutation_not_permitted: "));
      refused.insert(service->method(i)->name());
    }
  }
  CHECK(refused == std::set<std::string>{"SetPolicy", "UpdatePolicy", "DeletePolicy", "SetProviderProfile",
                                         "DeleteProviderProfile", "ForgetInterceptorRecord", "SeedInterceptorRecord"});
  // SetCeiling changes policy only with an authority's signature, which it checks itself.
  CHECK(osh::gateway::ClassOf(*service->FindMethodByName("SetCeiling")) == v1::AUTHORITY_SIGNED);
  // Deny by default: a method the descriptor does not know is refused too.
  CHECK(absl::IsFailedPrecondition(
      osh::gateway::CheckMutationGate("/openshell.policy.gateway.v1.PolicyGateway/RewriteEverything", false)));
}

TEST_CASE("config: flag > environment > file > default, with derived paths", "[config]") {
  osh::test::TempDir dir;
  const std::string file = dir / "gateway.toml";
  osh::test::WriteFile(file, R"(
[openshell.gateway]
state_dir = "/srv/file"
admin_socket = "/srv/file/admin.sock"

[openshell.gateway.policy]
accepted_surfaces = ["openshell.sandbox.v1", "other.v2"]
clock_skew_s = 30
refresh_interval_s = 5
)");
  auto values = osh::gateway::ReadConfigFile(file);
  REQUIRE(values.ok());
  auto defaults = osh::gateway::ResolveConfig({}, {}, {});
  REQUIRE(defaults.ok());
  CHECK(defaults->state_dir == "./var");
  CHECK(defaults->SqlitePath() == "./var/gateway.db");
  CHECK(defaults->admin_socket == "./var/admin.sock");
  CHECK(defaults->sandbox_socket == "./var/sandbox.sock");
  CHECK(defaults->clock_skew_s == 60);
  CHECK(defaults->trust_store.empty());
  CHECK(defaults->driver_socket.empty());

  auto from_file = osh::gateway::ResolveConfig({}, {}, *values);
  REQUIRE(from_file.ok());
  CHECK(from_file->state_dir == "/srv/file");
  CHECK(from_file->sandbox_socket == "/srv/file/sandbox.sock");
  CHECK(from_file->accepted_surfaces == std::vector<std::string>{"openshell.sandbox.v1", "other.v2"});
  CHECK(from_file->clock_skew_s == 30);

  auto env_wins = osh::gateway::ResolveConfig({}, {{"clock_skew_s", "10"}, {"state_dir", "/srv/env"}}, *values);
  REQUIRE(env_wins.ok());
  CHECK(env_wins->clock_skew_s == 10);
  CHECK(env_wins->state_dir == "/srv/env");
  CHECK(env_wins->admin_socket == "/srv/file/admin.sock");  // still from the file

  auto flag_wins = osh::gateway::ResolveConfig({{"clock_skew_s", "1"}}, {{"clock_skew_s", "10"}}, *values);
  REQUIRE(flag_wins.ok());
  CHECK(flag_wins->clock_skew_s == 1);

  const char* environment[] = {"HOME=/root", "POLICY_GATEWAY_TRUST_STORE=/etc/t.json", "POLICY_GATEWAY_CONFIG=/x.toml",
                               "POLICY_GATEWAY_MAX_WATCHERS=9", nullptr};
  auto env = osh::gateway::ReadConfigEnvironment(environment);
  REQUIRE(env.ok());
  CHECK(*env == osh::gateway::ConfigValues{{"trust_store", "/etc/t.json"}, {"max_watchers", "9"}});
}

TEST_CASE("config: a misspelt POLICY_GATEWAY_* variable is an error naming it, not ignored", "[config]") {
  const char* environment[] = {"POLICY_GATEWAY_TRUST_STOR=/etc/t.json", nullptr};
  auto env = osh::gateway::ReadConfigEnvironment(environment);
  REQUIRE_FALSE(env.ok());
  CHECK_THAT(std::string(env.status().message()), Catch::StartsWith("POLICY_GATEWAY_TRUST_STOR: not a setting"));
}

TEST_CASE("config: a bad value names where it came from — file:line, flag or variable", "[config]") {
  osh::test::TempDir dir;
  const std::string file = dir / "gateway.toml";
  osh::test::WriteFile(file, "[openshell.gateway.policy]\n\nclock_skew_s = 999999\n");
  osh::gateway::ConfigOrigins file_origins;
  auto values = osh::gateway::ReadConfigFile(file, &file_origins);
  REQUIRE(values.ok());
  CHECK(file_origins.at("clock_skew_s") == file + ":3");
  auto from_file = osh::gateway::ResolveConfig({}, {}, *values, file_origins);
  CHECK(from_file.status().message() == file + ":3: clock_skew_s: expected a whole number from 0 to 86400, got '999999'");
  auto from_env = osh::gateway::ResolveConfig({}, {{"clock_skew_s", "-5"}}, *values, file_origins);
  CHECK(from_env.status().message() ==
        "clock_skew_s: expected a whole number from 0 to 86400, got '-5' (environment POLICY_GATEWAY_CLOCK_SKEW_S)");
  auto from_flag = osh::gateway::ResolveConfig({{"clock_skew_s", "x"}}, {}, *values, file_origins);
  CHECK(from_flag.status().message() == "clock_skew_s: expected a whole number from 0 to 86400, got 'x' (flag --clock-skew-s)");
  // Replicas sign one log under one name (helper 80): with PostgreSQL the origin is not the host's.
  auto no_origin = osh::gateway::ResolveConfig(
      {{"database", "postgresql://db.example/policy"}, {"log_signing_key", "/etc/policy-gateway/log.key"}}, {}, {}, {});
  REQUIRE_FALSE(no_origin.ok());
  CHECK_THAT(std::string(no_origin.status().message()), Catch::StartsWith("log_origin: required with a PostgreSQL database"));
  CHECK(osh::gateway::ResolveConfig({{"database", "postgresql://db.example/policy"},
                                     {"log_signing_key", "/etc/policy-gateway/log.key"},
                                     {"log_origin", "policy.example.com/policy-gateway"}},
                                    {}, {}, {})
            .ok());
  // An empty variable or flag over a value given at lower precedence (an unset ${VAR} in a unit file) would
  // switch it off unseen — here the trust store (review 106): refused, naming it; alone it is the default.
  const osh::gateway::ConfigValues with_trust = {{"trust_store", "/etc/openshell/policy.trust"}};
  auto emptied = osh::gateway::ResolveConfig({}, {{"trust_store", ""}}, with_trust, {});
  REQUIRE_FALSE(emptied.ok());
  CHECK_THAT(std::string(emptied.status().message()),
             Catch::StartsWith("trust_store: is set to the empty string over a value given at lower precedence") &&
                 Catch::Contains("(environment POLICY_GATEWAY_TRUST_STORE)"));
  CHECK_FALSE(osh::gateway::ResolveConfig({{"trust_store", ""}}, {}, with_trust, {}).ok());
  CHECK_FALSE(osh::gateway::ResolveConfig({{"metrics_allow", ""}}, {{"metrics_allow", "10.0.0.0/8"}},
                                          {{"metrics_listen", "127.0.0.1:9464"}}, {})
                  .ok());
  CHECK(osh::gateway::ResolveConfig({}, {{"trust_store", ""}}, {}, {}).ok());
  CHECK(osh::gateway::ResolveConfig({{"trust_store", "/x/trust.json"}}, {{"trust_store", ""}}, with_trust, {}).ok());
  // Origins and effective values, as --check-config prints them.
  auto ok = osh::gateway::ResolveConfig({{"state_dir", "/srv/x"}}, {{"clock_skew_s", "5"}}, {}, {});
  REQUIRE(ok.ok());
  const auto origins = osh::gateway::OriginsOf({{"state_dir", "/srv/x"}}, {{"clock_skew_s", "5"}}, {}, {});
  CHECK(origins.at("state_dir") == "flag --state-dir");
  CHECK(origins.at("clock_skew_s") == "environment POLICY_GATEWAY_CLOCK_SKEW_S");
  CHECK(origins.at("trust_store") == "default");
  const auto values_now = osh::gateway::EffectiveValues(*ok);
  CHECK(values_now.at("database") == "sqlite:/srv/x/gateway.db");
  CHECK(values_now.at("clock_skew_s") == "5");
  CHECK(values_now.at("max_watchers") == "10000");
  CHECK(values_now.size() == osh::gateway::ConfigKeys().size());
  // The reference names every key (docs/policy-gateway.md, "Configuration").
  const std::string doc = osh::test::ReadFile(std::string(OSH_SOURCE_DIR) + "/docs/policy-gateway.md");
  for (const auto& key : osh::gateway::ConfigKeys()) {
    INFO(key.name);
    CHECK(doc.find(absl::StrCat("`", key.name, "`")) != std::string::npos);
  }
}

TEST_CASE("config: unknown keys, wrong types and bad values are errors naming the key", "[config]") {
  osh::test::TempDir dir;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"[openshell.gateway]\nstate_dir = \"x\"\nstatedir = \"y\"\n", ":3: unknown key 'openshell.gateway.statedir'"},
      {"[openshell.gateway]\ntrust_store = \"x\"\n", ":2: unknown key 'openshell.gateway.trust_store' (it belongs in [openshell.gateway.policy])"},
      {"[openshell.other]\nx = 1\n", ":1: unknown table 'openshell.other'"},
      {"[openshell.gateway.policy]\nclock_skew_s = \"60\"\n", ":2: 'openshell.gateway.policy.clock_skew_s' must be an integer"},
      {"[openshell.gateway.policy]\naccepted_surfaces = \"a\"\n", ":2: 'openshell.gateway.policy.accepted_surfaces' must be a list"},
      {"[openshell.gateway\n", ":1: "},
  };
  for (const auto& [text, expect] : cases) {
    INFO(text);
    const std::string file = dir / "c.toml";
    osh::test::WriteFile(file, text);
    auto values = osh::gateway::ReadConfigFile(file);
    REQUIRE_FALSE(values.ok());
    CHECK_THAT(std::string(values.status().message()), Catch::StartsWith(file) && Catch::Contains(expect));
  }
  // Every unknown key and wrong type of a file in one run, one a line, in file order (the TOML tables are
  // read in key order: `zz_unknown` sorts after `admin_socket` but stands before it).
  {
    const std::string file = dir / "many.toml";
    osh::test::WriteFile(file, "[openshell.gateway]\nzz_unknown = 1\nadmin_socket = 5\n[openshell.gateway.limits]\n"
                               "max_watchers = \"x\"\n[openshell.gateway.policy]\naccepted_surfaces = [\"a\", 2]\n");
    auto values = osh::gateway::ReadConfigFile(file);
    REQUIRE_FALSE(values.ok());
    CHECK(std::string(values.status().message()) ==
          file + ":2: unknown key 'openshell.gateway.zz_unknown'\n" + file +
              ":3: 'openshell.gateway.admin_socket' must be a string\n" + file +
              ":5: 'openshell.gateway.limits.max_watchers' must be an integer\n" + file +
              ":7: 'openshell.gateway.policy.accepted_surfaces' must be a list of strings");
  }
  CHECK_THAT(std::string(osh::gateway::ResolveConfig({{"clock_skew_s", "-1"}}, {}, {}).status().message()),
             Catch::StartsWith("clock_skew_s: expected a whole number from 0 to 86400"));
  // Huge values are refused rather than overflowing the time arithmetic they feed.
  for (const char* key : {"driver_connect_timeout_ms", "driver_call_timeout_ms", "refresh_interval_s", "clock_skew_s",
                          "replica_reprojection_wait_ms", "log_integrate_interval_ms", "log_witness_timeout_ms",
                          "connection_idle_timeout_s", "handshake_timeout_s"}) {
    INFO(key);
    auto resolved = osh::gateway::ResolveConfig({{key, "9223372036854775807"}}, {}, {});
    REQUIRE_FALSE(resolved.ok());
    CHECK_THAT(std::string(resolved.status().message()), Catch::StartsWith(std::string(key) + ": expected a whole number from "));
  }
  CHECK(osh::gateway::ResolveConfig({{"driver_call_timeout_ms", "600000"}, {"clock_skew_s", "86400"}}, {}, {}).ok());
  CHECK(osh::gateway::ResolveConfig({{"database", "postgresql://db/x"}}, {}, {}).ok());  // replicas (docs/replicas.md)
  CHECK(osh::gateway::ResolveConfig({{"database", "postgres://db/x"}}, {}, {}).ok());
  CHECK_THAT(std::string(osh::gateway::ResolveConfig({{"database", "mysql://db/x"}}, {}, {}).status().message()),
             Catch::Contains("expected sqlite:<path> or postgresql://..."));
  CHECK_FALSE(osh::gateway::ResolveConfig({{"builtin_signing_key", "k.pem"}}, {}, {}).ok());
}

TEST_CASE("log: a multi-line message (libpq's errors) is one text line", "[config]") {
  CHECK(osh::gateway::OneLine("connection to server on socket \"/tmp/x/.s.PGSQL.5432\" failed: No such file or directory\n"
                              "\tIs the server running locally and accepting connections on that socket?\n") ==
        "connection to server on socket \"/tmp/x/.s.PGSQL.5432\" failed: No such file or directory; Is the server "
        "running locally and accepting connections on that socket?");
  CHECK(osh::gateway::OneLine("a\r\nb\x01" "c\x7f") == "a; b\\x01c\\x7f");
  CHECK(osh::gateway::OneLine("plain\ttabs stay") == "plain\ttabs stay");
}

TEST_CASE("config: every host:port listener is parsed by one rule", "[config]") {
  for (const auto& [text, host, port, ipv6] : std::vector<std::tuple<std::string, std::string, int, bool>>{
           {"127.0.0.1:0", "127.0.0.1", 0, false}, {"[::1]:9464", "::1", 9464, true}, {"gw.example:65535", "gw.example", 65535, false}}) {
    INFO(text);
    auto parsed = osh::common::ParseHostPort(text);
    REQUIRE(parsed.ok());
    CHECK(parsed->host == host);
    CHECK(parsed->port == port);
    CHECK(parsed->ipv6 == ipv6);
  }
  for (const char* bad : {"127.0.0.1", ":80", "host:", "host:65536", "host:-1", "host:+80", "host:8 0", "host:0x50"}) {
    INFO(bad);
    CHECK_THAT(std::string(osh::common::ParseHostPort(bad).status().message()), Catch::Contains("expected host:port"));
  }
  // The config check and the listeners agree: a bad value is refused at load, naming its key.
  for (const char* key : {"sandbox_listen", "metrics_listen"}) {  // (admin_listen without mutual TLS is refused first)
    INFO(key);
    auto resolved = osh::gateway::ResolveConfig({{key, "localhost:http"}}, {}, {});
    REQUIRE_FALSE(resolved.ok());
    CHECK_THAT(std::string(resolved.status().message()), Catch::StartsWith(std::string(key) + ": expected host:port"));
  }
}

TEST_CASE("config: limits are settings in [openshell.gateway.limits], flags and environment, range-checked", "[config][limits]") {
  osh::test::TempDir dir;
  const std::string file = dir / "limits.toml";
  osh::test::WriteFile(file,
                       "[openshell.gateway.limits]\nmax_watchers_per_sandbox = 2\nreport_burst = 5\n"
                       "max_sandbox_id_bytes = 64\nconnection_idle_timeout_s = 30\n");
  auto values = osh::gateway::ReadConfigFile(file);
  REQUIRE(values.ok());
  auto config = osh::gateway::ResolveConfig({{"max_watchers", "100"}}, {{"watch_backlog", "2"}}, *values);
  REQUIRE(config.ok());
  CHECK(config->limits.max_watchers_per_sandbox == 2);
  CHECK(config->limits.max_watchers == 100);
  CHECK(config->limits.watch_backlog == 2);
  CHECK(config->limits.report_burst == 5);
  CHECK(config->limits.context.sandbox_id_bytes == 64);
  CHECK(config->limits.connection_idle_timeout_s == 30);
  // Untouched ones keep their defaults.
  CHECK(config->limits.reports_per_second == osh::gateway::Limits().reports_per_second);
  CHECK(config->limits.context.attributes == osh::gateway::ContextLimits().attributes);
  // A limit outside its table, of the wrong type, or out of range is an error naming it.
  osh::test::WriteFile(file, "[openshell.gateway.policy]\nmax_watchers = 5\n");
  CHECK_THAT(std::string(osh::gateway::ReadConfigFile(file).status().message()),
             Catch::Contains(":2: unknown key 'openshell.gateway.policy.max_watchers' (it belongs in [openshell.gateway.limits])"));
  osh::test::WriteFile(file, "[openshell.gateway.limits]\nwatch_backlog = \"4\"\n");
  CHECK_THAT(std::string(osh::gateway::ReadConfigFile(file).status().message()),
             Catch::Contains(":2: 'openshell.gateway.limits.watch_backlog' must be an integer"));
  for (const auto& [key, bad] : std::vector<std::pair<std::string, std::string>>{
           {"max_watchers_per_sandbox", "0"}, {"watch_backlog", "65"}, {"max_report_error_bytes", "10"},
           {"connection_idle_timeout_s", "0"}, {"max_sandbox_connections", "-1"}, {"reports_per_second", "x"}}) {
    INFO(key << " = " << bad);
    auto refused = osh::gateway::ResolveConfig({{key, bad}}, {}, {});
    REQUIRE_FALSE(refused.ok());
    CHECK_THAT(std::string(refused.status().message()), Catch::StartsWith(key + ": expected a whole number from "));
  }
}

TEST_CASE("config: connection caps follow the descriptor limit, explicit ones lowered to what it holds", "[config][limits]") {
  osh::gateway::Limits limits;
  auto caps = osh::gateway::ConnectionCapsFor(1024, limits);
  CHECK(caps.admin == 128);
  CHECK(caps.sandbox == 1024 - 512 - 128);
  CHECK(caps.lowered.empty());
  caps = osh::gateway::ConnectionCapsFor(1'048'576, limits);
  CHECK(caps.admin == 256);
  CHECK(caps.sandbox == 1'048'576 - 512 - 256);
  limits.max_sandbox_connections = 100;
  limits.max_admin_connections = 20;
  caps = osh::gateway::ConnectionCapsFor(1024, limits);
  CHECK(caps.sandbox == 100);
  CHECK(caps.admin == 20);
  CHECK(caps.lowered.empty());
  limits.max_sandbox_connections = 5000;
  caps = osh::gateway::ConnectionCapsFor(1024, limits);
  CHECK(caps.sandbox == 1024 - 512 - 20);
  CHECK_THAT(caps.lowered, Catch::StartsWith("max_sandbox_connections 5000 lowered to 492: the descriptor limit is 1024"));
  // The HTTP listeners' connections come out of the same budget.
  caps = osh::gateway::ConnectionCapsFor(1024, limits, 320);
  CHECK(caps.sandbox == 1024 - 512 - 320 - 20);
  CHECK_THAT(caps.lowered, Catch::Contains("512 stay for files and the driver, 320 for the HTTP listeners"));
}

TEST_CASE("sockets: folder made private, stale socket replaced, live one refused, for gateway and drivers alike", "[sockets]") {
  osh::test::TempDir dir;
  const std::string folder = dir / "run";
  const std::string path = folder + "/a.sock";
  REQUIRE(osh::drivers::PrepareServerSocketPath(path).ok());
  struct stat st;
  REQUIRE(stat(folder.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0700);

  // A bound socket nobody listens on is stale: replaced.
  const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  CHECK(osh::drivers::PrepareServerSocketPath(path).ok());
  CHECK(access(path.c_str(), F_OK) != 0);
  close(fd);

  // A listening socket is refused.
  const int live = socket(AF_UNIX, SOCK_STREAM, 0);
  REQUIRE(bind(live, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  REQUIRE(listen(live, 1) == 0);
  auto status = osh::drivers::PrepareServerSocketPath(path);
  CHECK_THAT(std::string(status.message()), Catch::Contains("another process is listening"));
  close(live);

  // A regular file is not replaced; a loose folder is refused.
  unlink(path.c_str());
  osh::test::WriteFile(path, "x");
  CHECK_THAT(std::string(osh::drivers::PrepareServerSocketPath(path).message()), Catch::Contains("is not a socket"));
  chmod(folder.c_str(), 0755);
  CHECK_THAT(std::string(osh::drivers::PrepareServerSocketPath(folder + "/b.sock").message()), Catch::Contains("chmod 700"));

  // A driver's socket may live in a shared folder (the gateway must reach it), but the other checks hold.
  using osh::drivers::SocketFolder;
  CHECK(osh::drivers::PrepareServerSocketPath(folder + "/b.sock", SocketFolder::kAsIs).ok());
  CHECK_THAT(std::string(osh::drivers::PrepareServerSocketPath(path, SocketFolder::kAsIs).message()),
             Catch::Contains("is not a socket"));
  unlink(path.c_str());
  const int driver_live = socket(AF_UNIX, SOCK_STREAM, 0);
  REQUIRE(bind(driver_live, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  REQUIRE(listen(driver_live, 1) == 0);
  CHECK_THAT(std::string(osh::drivers::PrepareServerSocketPath(path, SocketFolder::kAsIs).message()),
             Catch::Contains("another process is listening"));
  close(driver_live);
  CHECK_THAT(std::string(osh::drivers::PrepareServerSocketPath(dir / "missing/c.sock", SocketFolder::kAsIs).message()),
             Catch::Contains("cannot stat"));
}

TEST_CASE("metrics: reason codes, cumulative histogram buckets and escaped labels in the exposition format", "[metrics]") {
  using osh::gateway::Metrics;
  // Reason codes come from the status payload (common::ReasonOf; its own tests are in test_errors.cc), and
  // from the message's first word for statuses without one, as here.
  Metrics metrics;
  metrics.ObserveAdminCall("AdmitSandbox", absl::OkStatus(), absl::Microseconds(300));
  metrics.ObserveAdminCall("AdmitSandbox", absl::OkStatus(), absl::Milliseconds(3));
  metrics.ObserveAdminCall("AdmitSandbox", absl::UnauthenticatedError("unsigned: no signature"), absl::Seconds(20));
  metrics.ObserveAdminCall("AdmitSandbox", absl::InternalError("boom"), absl::Milliseconds(1));
  metrics.ObserveDriverCall("GetProjection", "UNAVAILABLE", absl::Milliseconds(7));
  Metrics::Snapshot snapshot;
  snapshot.trust_keys.push_back({"key \"a\"\\b", 1900000000, true});
  snapshot.trust_keys.push_back({"no-expiry", 0, false});
  const std::string text = metrics.Render(snapshot);
  INFO(text);
  CHECK_THAT(text, Catch::Contains("\npolicy_gateway_admissions_total{outcome=\"admitted\",reason=\"\"} 2\n"));
  CHECK_THAT(text, Catch::Contains("\npolicy_gateway_admissions_total{outcome=\"refused\",reason=\"unsigned\"} 1\n"));
  CHECK_THAT(text, Catch::Contains("\npolicy_gateway_admissions_total{outcome=\"error\",reason=\"internal\"} 1\n"));
  // Cumulative: 0.3 ms and 1 ms fall in le=0.001, 3 ms in le=0.005, 20 s only in +Inf.
  CHECK_THAT(text, Catch::Contains("admin_call_duration_seconds_bucket{method=\"AdmitSandbox\",le=\"0.0005\"} 1\n"));
  CHECK_THAT(text, Catch::Contains("admin_call_duration_seconds_bucket{method=\"AdmitSandbox\",le=\"0.001\"} 2\n"));
  CHECK_THAT(text, Catch::Contains("admin_call_duration_seconds_bucket{method=\"AdmitSandbox\",le=\"0.005\"} 3\n"));
  CHECK_THAT(text, Catch::Contains("admin_call_duration_seconds_bucket{method=\"AdmitSandbox\",le=\"10\"} 3\n"));
  CHECK_THAT(text, Catch::Contains("admin_call_duration_seconds_bucket{method=\"AdmitSandbox\",le=\"+Inf\"} 4\n"));
  CHECK_THAT(text, Catch::Contains("admin_call_duration_seconds_count{method=\"AdmitSandbox\"} 4\n"));
  CHECK_THAT(text, Catch::Contains("driver_calls_total{method=\"GetProjection\",code=\"UNAVAILABLE\"} 1\n"));
  CHECK_THAT(text, Catch::Contains(
      "policy_gateway_trust_key_not_after_timestamp_seconds{key_id=\"key \\\"a\\\"\\\\b\",revoked=\"true\"} 1900000000\n"));
  CHECK_THAT(text, !Catch::Contains("key_id=\"no-expiry\""));
  CHECK_THAT(text, Catch::Contains("\npolicy_gateway_trust_keys 2\n"));
  // Every sample line belongs to a family declared with # TYPE before it.
  std::set<std::string> declared;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("# TYPE ", 0) == 0) {
      declared.insert(line.substr(7, line.find(' ', 7) - 7));
      continue;
    }
    if (line.empty() || line[0] == '#') continue;
    std::string family = line.substr(0, line.find_first_of("{ "));
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      const std::string s(suffix);
      if (family.size() > s.size() && family.compare(family.size() - s.size(), s.size(), s) == 0 &&
          declared.count(family.substr(0, family.size() - s.size()))) {
        family = family.substr(0, family.size() - s.size());
      }
    }
    INFO(line);
    CHECK(declared.count(family) == 1);
  }
}

TEST_CASE("drift: each state from served, loaded, desired and the last refresh error, first match wins", "[drift]") {
  const std::string served(64, 'a'), other(64, 'b');
  auto info = [&](v1::LoadStatus status, const std::string& reported, const std::string& refresh_error = "") {
    v1::SandboxInfo s;
    s.set_policy_digest(served);
    s.set_policy_version(7);
    s.set_load_status(status);
    s.set_reported_digest(reported);
    s.set_load_error(status == v1::FAILED ? "cannot apply" : "");
    s.set_last_refresh_error(refresh_error);
    return s;
  };
  using Desired = osh::drivers::PolicyAuthoring::Desired;
  const Desired same{served, 7, "scope default revision 3"};
  auto drift = [](v1::SandboxInfo s, const std::optional<Desired>& desired, const absl::Status& not_served = absl::OkStatus()) {
    osh::gateway::FillDrift(desired, not_served, &s);
    return s;
  };
  CHECK(drift(info(v1::LOADED, served), same).drift() == v1::DRIFT_IN_SYNC);
  CHECK(drift(info(v1::LOADED, served), same).drift_state() == "in_sync");
  // Unknown desired: the served projection stands for it.
  const v1::SandboxInfo unknown = drift(info(v1::LOADED, served), std::nullopt);
  CHECK(unknown.drift() == v1::DRIFT_IN_SYNC);
  CHECK_FALSE(unknown.desired_known());
  CHECK(unknown.desired_digest() == served);
  CHECK(unknown.desired_source() == "served");
  // Never reported, or reported only an earlier digest (LOADED or FAILED): not_reported.
  CHECK(drift(info(v1::LOAD_STATUS_UNSPECIFIED, ""), same).drift_state() == "not_reported");
  CHECK(drift(info(v1::LOADED, other), same).drift_state() == "not_reported");
  CHECK(drift(info(v1::FAILED, other), same).drift_state() == "not_reported");
  const v1::SandboxInfo failed = drift(info(v1::FAILED, served), same);
  CHECK(failed.drift_state() == "load_failed");
  CHECK_THAT(failed.drift_reason(), Catch::Contains("cannot apply"));
  // Desired moved on (another digest, or only another version): refresh_pending, naming both.
  const v1::SandboxInfo pending = drift(info(v1::LOADED, served), Desired{other, 8, "scope tenant:acme revision 1"});
  CHECK(pending.drift_state() == "refresh_pending");
  CHECK_THAT(pending.drift_reason(), Catch::Contains("scope tenant:acme revision 1"));
  CHECK(drift(info(v1::LOADED, served), Desired{served, 8, "x"}).drift_state() == "refresh_pending");
  CHECK(drift(info(v1::LOADED, served), Desired{"", 9, "no policy"}).drift_state() == "refresh_pending");
  // A kept-last-good refresh: by the ceiling, or otherwise; before pending, after a failed load.
  CHECK(drift(info(v1::LOADED, served, "exceeds_ceiling: adds api.github.com"), Desired{other, 8, "x"}).drift_state() ==
        "refused_by_ceiling");
  CHECK(drift(info(v1::LOADED, served, "containment_unknown: regex"), same).drift_state() == "refused_by_ceiling");
  CHECK(drift(info(v1::LOADED, served, "driver_unavailable: down"), same).drift_state() == "refresh_failed");
  CHECK(drift(info(v1::FAILED, served, "driver_unavailable: down"), same).drift_state() == "load_failed");
  // Refused by the serving rule (an expired projection the driver did not renew): never in sync, whatever
  // the sandbox reported loading (review 104: wait returned 0 while every fetch was refused).
  const absl::Status expired = absl::FailedPreconditionError("expired: the admitted projection expired at 100");
  const v1::SandboxInfo refused = drift(info(v1::LOADED, served), same, expired);
  CHECK(refused.drift_state() == "refresh_failed");
  CHECK_THAT(refused.drift_reason(), Catch::StartsWith("not served: expired:"));
  CHECK(drift(info(v1::LOADED, served, "exceeds_ceiling: adds x"), same, expired).drift_state() == "refused_by_ceiling");
  CHECK(drift(info(v1::FAILED, served), same, expired).drift_state() == "load_failed");
  // Every state has its name.
  for (int state = v1::DriftState_MIN; state <= v1::DriftState_MAX; ++state) {
    if (state == v1::DRIFT_STATE_UNSPECIFIED) continue;
    CHECK_FALSE(osh::gateway::kDriftStateNames.Name(static_cast<v1::DriftState>(state)).empty());
  }
}

TEST_CASE("audit feed: from a cursor, in order and once, then live, a stalled reader ends, close ends all",
          "[audit_stream]") {
  osh::test::TempDir dir;
  auto store = osh::store::SqliteStore::Open(dir / "gateway.db", osh::store::StoreOptions{});
  REQUIRE(store.ok());
  osh::store::AuditLog& log = (*store)->audit();
  auto append = [&](int n) {
    for (int i = 0; i < n; ++i) {
      osh::store::AuditEvent event;
      event.type = osh::trust::audit::Type::kRelease;
      REQUIRE(log.AppendAudit(event).ok());
    }
  };
  append(5);
  osh::gateway::AuditFeed::Options options;
  options.backlog = 4;
  options.page = 2;
  options.poll = absl::Milliseconds(5);
  options.stall = absl::Seconds(1);
  options.max_subscriptions = 2;
  osh::gateway::AuditFeed feed(&log, options);
  std::atomic<int> wakes{0};
  // Takes until `seq` or 5 s; returns the seqs taken.
  auto take_until = [](osh::gateway::AuditSubscription& s, uint64_t seq) {
    std::vector<uint64_t> taken;
    const absl::Time end = absl::Now() + absl::Seconds(5);
    while ((taken.empty() || taken.back() < seq) && absl::Now() < end) {
      auto next = s.Take();
      if (!next.end.ok()) break;
      if (next.event != nullptr) taken.push_back(next.event->seq());
      else absl::SleepFor(absl::Milliseconds(2));
    }
    return taken;
  };
  auto reader = feed.Subscribe(2, [&] { ++wakes; });
  REQUIRE(reader.ok());
  CHECK(take_until(**reader, 5) == std::vector<uint64_t>{3, 4, 5});  // caught up a page at a time, backlog 4
  append(7);  // more than the backlog at once: a reader that takes gets them all, the rest from the log
  CHECK(take_until(**reader, 12) == std::vector<uint64_t>{6, 7, 8, 9, 10, 11, 12});
  CHECK((*reader)->cursor() == 12);
  CHECK(wakes > 0);

  // A subscription nobody takes from: ended once events waited for it longer than `stall`.
  auto idle = feed.Subscribe(12, [] {});
  REQUIRE(idle.ok());
  CHECK(absl::IsResourceExhausted(feed.Subscribe(0, [] {}).status()));  // max_subscriptions
  CHECK(osh::common::ReasonOf(feed.Subscribe(0, [] {}).status()) == "audit_streams_limit");
  absl::SleepFor(absl::Milliseconds(50));  // the feed has seen head 12
  for (int i = 0; i < 6; ++i) {
    append(1);
    absl::SleepFor(absl::Milliseconds(20));
  }
  CHECK(take_until(**reader, 18).size() == 6);
  for (int i = 0; i < 300 && (*idle)->end().ok(); ++i) absl::SleepFor(absl::Milliseconds(10));  // never taking
  const osh::gateway::AuditSubscription::Next lagged = (*idle)->Take();
  CHECK(lagged.event == nullptr);  // its queue was dropped
  CHECK(absl::IsResourceExhausted(lagged.end));
  CHECK(osh::common::ReasonOf(lagged.end) == "audit_stream_lagging");
  feed.Unsubscribe(*idle);
  CHECK(feed.subscriptions() == 1);

  feed.Close();
  CHECK(absl::IsUnavailable((*reader)->Take().end));
  CHECK(osh::common::ReasonOf((*reader)->Take().end) == "gateway_stopping");
  CHECK(absl::IsUnavailable(feed.Subscribe(0, [] {}).status()));
  feed.Unsubscribe(*reader);
}

// Whether a test's call reaches the interceptor in its validate or its modify phase.
enum class PhaseForUnits { kValidate, kModify };

// OpenShell's call `method` as the interceptor is asked about it: `json` (ProtoJSON) is its proposed
// operation, in `phase`.
openshell::gateway_interceptor::v1::InterceptorEvaluation EvaluationForUnits(const std::string& method,
                                                                             PhaseForUnits phase,
                                                                             const std::string& json) {
  openshell::gateway_interceptor::v1::InterceptorEvaluation e;
  e.set_service("openshell.v1.OpenShell");
  e.set_method(method);
  google::protobuf::Struct* payload = phase == PhaseForUnits::kValidate
                                          ? e.mutable_validate()->mutable_proposed_operation()
                                          : e.mutable_modify_operation()->mutable_proposed_operation();
  REQUIRE(google::protobuf::util::JsonStringToMessage(json, payload).ok());
  return e;
}

TEST_CASE("interceptor records: a record written before `_provider_` entries were stripped is read without them",
          "[interceptor][interceptor_records]") {
  // Review finding (helper 73): records of sandbox syncs written before a4a55e8 kept the entries upstream
  // dropped; attach, detach and profile changes composed them (their deny rules could hide allows).
  openshell::sandbox::v1::SandboxPolicy old;
  old.set_version(1);
  (*old.mutable_network_policies())["api"].set_name("api");
  (*old.mutable_network_policies())["_provider_zz"].set_name("_provider_zz");
  osh::gateway::InterceptorRecords::Record record;
  REQUIRE(osh::gateway::InterceptorRecords::Decode(osh::gateway::InterceptorRecords::Encode({old, {"pypi"}}), &record));
  CHECK(record.policy.network_policies().contains("api"));
  CHECK_FALSE(record.policy.network_policies().contains("_provider_zz"));
  CHECK(record.providers == std::vector<std::string>{"pypi"});
}

TEST_CASE("interceptor records: kept in the store before the allow and read through it, a store that fails is a deny "
          "(fail closed), its text only in the log",
          "[interceptor][interceptor_records]") {
  namespace icv1 = openshell::gateway_interceptor::v1;
  osh::test::TempDir dir;
  const std::string path = dir / "gateway.db";
  auto store = osh::store::SqliteStore::Open(path);
  REQUIRE(store.ok());
  osh::gateway::CeilingGuard ceiling(store->get(), store->get());  // no ceiling in force: candidates are allowed
  osh::gateway::InterceptorEvaluator evaluator(&ceiling, store->get(), store->get(), {"aud", nullptr, nullptr, {}});
  auto evaluation = [](const std::string& method, bool validate, const std::string& json) {
    return EvaluationForUnits(method, validate ? PhaseForUnits::kValidate : PhaseForUnits::kModify, json);
  };
  const std::string create = R"({"name": "build-7", "spec": {"policy": {"version": 1.0,
      "filesystem": {"includeWorkdir": true, "readOnly": ["/usr"], "readWrite": ["/sandbox"]},
      "networkPolicies": {"api": {"name": "api", "endpoints": [{"host": "api.github.com", "port": 443.0}],
                                  "binaries": [{"path": "/usr/bin/curl"}]}}}, "providers": []}})";
  const auto allowed = evaluator.Evaluate(evaluation("CreateSandbox", true, create));
  INFO(allowed.reason());
  REQUIRE(allowed.allowed());
  // In the store, as the record the next merge starts from.
  auto stored = (*store)->GetInterceptorRecord("build-7");
  REQUIRE(stored.ok());
  REQUIRE(stored->has_value());
  osh::gateway::InterceptorRecords::Record record;
  REQUIRE(osh::gateway::InterceptorRecords::Decode(**stored, &record));
  CHECK(record.policy.network_policies().at("api").endpoints(0).host() == "api.github.com");
  CHECK(record.providers.empty());

  // The store fails underneath (its table gone): nothing that needs the record is allowed.
  {
    auto db = osh::store::Db::Open(path);
    REQUIRE(db.ok());
    REQUIRE(db->Exec("DROP TABLE interceptor_records").ok());
  }
  const std::string merge = R"({"name": "build-7", "mergeOperations": [{"removeRule": {"ruleName": "api"}}]})";
  for (const auto& [method, validate, json] :
       std::vector<std::tuple<std::string, bool, std::string>>{{"CreateSandbox", true, create},
                                                              {"UpdateConfig", false, merge},
                                                              {"DetachSandboxProvider", true, R"({"sandboxName": "build-7", "providerName": "p"})"}}) {
    INFO(method);
    const auto denied = evaluator.Evaluate(evaluation(method, validate, json));
    CHECK_FALSE(denied.allowed());
    CHECK(denied.status_code() == "FAILED_PRECONDITION");
    CHECK_THAT(denied.reason(), Catch::StartsWith("storage_error: the interceptor's record of sandbox 'build-7' could not be"));
    CHECK_THAT(denied.reason(), !Catch::Contains("interceptor_records"));  // the SQL error stays in the log
  }
  // The modify phase of a create stores nothing, so it does not depend on the store.
  CHECK(evaluator.Evaluate(evaluation("CreateSandbox", false, create)).allowed());
}

// A ceiling "corp-max" of `version`, signed by `key` as kid "authority", serialized: the restrictive default
// policy plus one rule per host (port 443, `binary`).
std::string SignedCeilingForUnits(const osh::trust::PrivateKey& key, const std::vector<std::string>& hosts,
                                  const std::string& binary, uint64_t version) {
  openshell::sandbox::v1::SandboxPolicy policy = osh::policy::RestrictiveDefaultPolicy();
  for (const auto& host : hosts) {
    auto& rule = (*policy.mutable_network_policies())[host];
    rule.set_name(host);
    auto* endpoint = rule.add_endpoints();
    endpoint->set_host(host);
    endpoint->set_port(443);
    rule.add_binaries()->set_path(binary);
  }
  auto ceiling = osh::trust::MakeCeiling(policy, "corp-max", version, "", std::time(nullptr));
  REQUIRE(osh::trust::SignCeiling(&ceiling, key, "authority").ok());
  return ceiling.SerializeAsString();
}

// A profile inside the usual test ceilings: pip to pypi.org:443.
openshell::v1::ProviderProfile PypiProfileForUnits() {
  openshell::v1::ProviderProfile pypi;
  pypi.set_id("pypi");
  pypi.set_display_name("PyPI");
  auto* endpoint = pypi.add_endpoints();
  endpoint->set_host("pypi.org");
  endpoint->set_port(443);
  pypi.add_binaries()->set_path("/usr/bin/pip");
  return pypi;
}

// PypiProfileForUnits with a second endpoint, files.pythonhosted.org:443.
openshell::v1::ProviderProfile WiderPypiProfileForUnits() {
  openshell::v1::ProviderProfile wider = PypiProfileForUnits();
  auto* mirror = wider.add_endpoints();
  mirror->set_host("files.pythonhosted.org");
  mirror->set_port(443);
  return wider;
}

TEST_CASE("ceiling guard: with ceiling_id configured, SetCeiling refuses another fleet's ceiling, and a stored one of "
          "another id is never adopted",
          "[ceiling][config]") {
  osh::test::TempDir dir;
  auto store = osh::store::SqliteStore::Open(dir / "gateway.db");
  REQUIRE(store.ok());
  auto key = osh::trust::PrivateKey::Generate("ed25519");
  REQUIRE(key.ok());
  auto trust = osh::trust::TrustStore::Parse(osh::test::TrustStoreJson({{"authority", key->PublicKeyPem()}}));
  REQUIRE(trust.ok());
  const int64_t now = osh::store::Clock::System()->NowUnix();
  auto signed_ceiling = [&](const std::string& id, uint64_t version, bool wide) {
    auto policy = osh::policy::RestrictiveDefaultPolicy();
    if (wide) (*policy.mutable_network_policies())["all"].add_endpoints()->set_host("*.example.com");
    if (wide) (*policy.mutable_network_policies())["all"].mutable_endpoints(0)->set_port(443);
    if (wide) (*policy.mutable_network_policies())["all"].add_binaries()->set_path("/usr/bin/curl");
    auto ceiling = osh::trust::MakeCeiling(policy, id, version, "", now);
    REQUIRE(osh::trust::SignCeiling(&ceiling, *key, "authority").ok());
    return ceiling;
  };
  {
    osh::gateway::CeilingGuard guard(store->get(), store->get(), "fleet-a");
    // Another fleet's ceiling, wider and of a higher version, signed by the same authority: refused, audited.
    auto other = guard.Set(signed_ceiling("fleet-b", 5, true), &*trust, now, 60);
    REQUIRE_FALSE(other.ok());
    CHECK_THAT(std::string(other.status().message()),
               Catch::StartsWith("invalid_ceiling: ceiling_id 'fleet-b' is not the one this gateway enforces ('fleet-a'"));
    CHECK(guard.current() == nullptr);
    auto events = (*store)->ListAuditEvents(0, 100);
    REQUIRE(events.ok());
    REQUIRE_FALSE(events->empty());
    CHECK(events->back().type == osh::trust::audit::Type::kCeilingSet);
    CHECK(events->back().outcome == osh::trust::audit::Outcome::kRefused);
    // This fleet's: in force.
    REQUIRE(guard.Set(signed_ceiling("fleet-a", 1, false), &*trust, now, 60).ok());
    REQUIRE(guard.Load(&*trust, now, 60).ok());  // the store tells the gateway's gate; this guard alone, read it
    REQUIRE(guard.current() != nullptr);
    CHECK(guard.current()->ceiling.ceiling_id() == "fleet-a");
    CHECK(guard.current()->verified);
    {
      // Another ceiling of the same version and id, written into the row: not "already in force".
      const std::string in_force_digest = guard.current()->ceiling.policy_digest();
      const std::string other = signed_ceiling("fleet-a", 1, true).SerializeAsString();
      sqlite3* db = nullptr;
      REQUIRE(sqlite3_open_v2((dir / "gateway.db").c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) == SQLITE_OK);
      sqlite3_stmt* stmt = nullptr;
      REQUIRE(sqlite3_prepare_v2(db, "UPDATE ceiling SET ceiling = ? WHERE id = 1", -1, &stmt, nullptr) == SQLITE_OK);
      sqlite3_bind_blob(stmt, 1, other.data(), static_cast<int>(other.size()), SQLITE_TRANSIENT);
      REQUIRE(sqlite3_step(stmt) == SQLITE_DONE);
      sqlite3_finalize(stmt);
      const absl::Status rewritten = guard.Load(&*trust, now, 60);
      CHECK(absl::IsDataLoss(rewritten));
      CHECK_THAT(std::string(rewritten.message()), Catch::StartsWith("ceiling_missing: the database holds another ceiling of version 1"));
      CHECK(guard.current()->ceiling.policy_digest() == in_force_digest);  // the one in force stays
      const std::string original = guard.current()->ceiling.SerializeAsString();
      REQUIRE(sqlite3_prepare_v2(db, "UPDATE ceiling SET ceiling = ? WHERE id = 1", -1, &stmt, nullptr) == SQLITE_OK);
      sqlite3_bind_blob(stmt, 1, original.data(), static_cast<int>(original.size()), SQLITE_TRANSIENT);
      REQUIRE(sqlite3_step(stmt) == SQLITE_DONE);
      sqlite3_finalize(stmt);
      sqlite3_close(db);
      CHECK(guard.Load(&*trust, now, 60).ok());  // the same one again: already in force
    }
    // A gateway without the setting (another replica, an old binary) stores fleet-b's, wider and newer: it
    // never replaces fleet-a's here — the one in force stays, and the database's is reported.
    osh::gateway::CeilingGuard unconfigured(store->get(), store->get());
    REQUIRE(unconfigured.Set(signed_ceiling("fleet-b", 7, true), &*trust, now, 60).ok());
    const absl::Status adopted = guard.Load(&*trust, now, 60);
    CHECK(absl::IsDataLoss(adopted));
    CHECK_THAT(std::string(adopted.message()),
               Catch::StartsWith("ceiling_missing: the database holds ceiling 'fleet-b' version 7, not one of this "
                                 "gateway's ceiling_id 'fleet-a'"));
    CHECK(guard.current()->ceiling.ceiling_id() == "fleet-a");
    CHECK(guard.current()->ceiling.version() == 1);
  }
  {
    // The same database under a gateway configured for another fleet (as at a restart): another fleet's
    // ceiling is never adopted, not even with none in force (it may be wider than this fleet's): the load
    // fails (so does the start); that fleet's own, of a higher version, is accepted over it.
    osh::gateway::CeilingGuard guard(store->get(), store->get(), "fleet-z");
    const absl::Status loaded = guard.Load(&*trust, now, 60);
    CHECK(absl::IsDataLoss(loaded));
    CHECK_THAT(std::string(loaded.message()), Catch::Contains("refusing to run under it"));
    CHECK(guard.current() == nullptr);
    CHECK_FALSE(guard.Set(signed_ceiling("fleet-z", 7, false), &*trust, now, 60).ok());  // not above the one stored
    REQUIRE(guard.Set(signed_ceiling("fleet-z", 8, false), &*trust, now, 60).ok());
    REQUIRE(guard.Load(&*trust, now, 60).ok());
    CHECK(guard.current()->ceiling.ceiling_id() == "fleet-z");
    CHECK(guard.current()->verified);
  }
  // The setting itself: a ceiling's id or nothing.
  CHECK(osh::gateway::ResolveConfig({{"ceiling_id", "fleet-a"}}, {}, {})->ceiling_id == "fleet-a");
  CHECK(osh::gateway::ResolveConfig({}, {}, {})->ceiling_id.empty());
  for (const char* bad : {"", "fleet a", "fleet/a"}) {
    INFO(bad);
    auto resolved = osh::gateway::ResolveConfig({{"ceiling_id", bad}}, {}, {});
    REQUIRE_FALSE(resolved.ok());
    CHECK_THAT(std::string(resolved.status().message()), Catch::StartsWith("ceiling_id: "));
  }
}

TEST_CASE("provider catalogue: profiles are signed and verified against the trust store, and a rewritten row or a revoked "
          "key is never served or composed",
          "[interceptor][provider_profiles]") {
  namespace icv1 = openshell::gateway_interceptor::v1;
  osh::test::TempDir dir;
  auto store = osh::store::SqliteStore::Open(dir / "gateway.db");
  REQUIRE(store.ok());
  auto key = osh::trust::PrivateKey::Generate("ed25519");
  REQUIRE(key.ok());
  auto trusted = osh::trust::TrustStore::Parse(osh::test::TrustStoreJson({{"gateway-key", key->PublicKeyPem()}}));
  REQUIRE(trusted.ok());
  std::shared_ptr<const osh::trust::TrustStore> trust = std::make_shared<osh::trust::TrustStore>(*trusted);
  osh::gateway::ProviderProfileCatalogue catalogue(store->get(), [&trust] { return trust; },
                                                   osh::store::Clock::System());
  openshell::v1::ProviderProfile pypi = PypiProfileForUnits();

  // A trust store and no signing key: nothing is stored that could not be served.
  auto unsigned_set = catalogue.Set(pypi);
  CHECK(osh::common::ReasonOf(unsigned_set.status()) == "profile_unsigned");
  // A signing key outside the trust store: refused the same way.
  auto stranger = osh::trust::PrivateKey::Generate("ed25519");
  REQUIRE(stranger.ok());
  catalogue.SetSigningKey(*stranger);
  CHECK(osh::common::ReasonOf(catalogue.Set(pypi).status()) == "profile_signature_untrusted");
  CHECK(*catalogue.Count() == 0);

  catalogue.SetSigningKey(*key);
  auto stored = catalogue.Set(pypi);
  INFO(stored.status().ToString());
  REQUIRE(stored.ok());
  CHECK(stored->hash == *osh::gateway::GovernanceProfileHash(pypi));
  CHECK(stored->kid.size() == 32);
  REQUIRE(catalogue.Get("pypi").ok());
  {
    // Several at once, from one catalogue: each as Get says it, none copied.
    auto all = catalogue.GetAll({"pypi", "nosuch", "pypi"});
    REQUIRE(all.ok());
    REQUIRE(all->entries.size() == 3);
    REQUIRE(all->entries[0].ok());
    CHECK((*all->entries[0])->hash == stored->hash);
    CHECK((*all->entries[0])->generation == catalogue.Get("pypi")->generation);
    CHECK(all->entries[1].status().code() == absl::StatusCode::kNotFound);
    REQUIRE(all->entries[2].ok());
    CHECK(*all->entries[0] == *all->entries[2]);
    CHECK(all->held != nullptr);
  }
  auto snapshot = catalogue.Snapshot();
  REQUIRE(snapshot.ok());
  CHECK(snapshot->profiles_size() == 1);

  // The evaluator composes it, and refuses an unknown provider.
  osh::gateway::CeilingGuard ceiling(store->get(), store->get());
  osh::gateway::InterceptorEvaluator evaluator(&ceiling, store->get(), store->get(), {"aud", &catalogue, nullptr, {}});
  CHECK(evaluator.Describe().provider_profiles());
  auto create = [](const std::string& providers) {
    return EvaluationForUnits(
        "CreateSandbox", PhaseForUnits::kModify,
        absl::StrCat(R"({"name": "build-7", "spec": {"policy": {"version": 1.0, "filesystem": {"readOnly": ["/usr"]}}, "providers": )",
                     providers, "}}"));
  };
  CHECK(evaluator.Evaluate(create(R"(["pypi"])")).allowed());
  CHECK_THAT(evaluator.Evaluate(create(R"(["nosuch"])")).reason(), Catch::StartsWith("unknown_provider: "));

  // A row rewritten in the database (a wider endpoint, the signature kept): not served, not composed.
  openshell::v1::ProviderProfile tampered = stored->profile;
  tampered.mutable_endpoints(0)->set_host("evil.example.com");
  REQUIRE((*store)->PutProviderProfile("pypi", tampered.SerializeAsString(), osh::test::StoredEvent("mutation")).ok());
  CHECK(osh::common::ReasonOf(catalogue.Get("pypi").status()) == "profile_unverified");
  CHECK(osh::common::ReasonOf(catalogue.Snapshot().status()) == "profile_unverified");
  const auto refused = evaluator.Evaluate(create(R"(["pypi"])"));
  CHECK_FALSE(refused.allowed());
  CHECK(refused.status_code() == "FAILED_PRECONDITION");
  CHECK_THAT(refused.reason(), Catch::StartsWith("profile_unverified: provider profile 'pypi': its hash is "));

  // Signed again, then its key revoked in the trust store: no longer verified.
  REQUIRE(catalogue.Set(pypi).ok());
  REQUIRE(catalogue.Get("pypi").ok());
  std::string revoked_json = osh::test::TrustStoreJson({{"gateway-key", key->PublicKeyPem()}});
  revoked_json.insert(1, R"("revoked_key_ids": ["gateway-key"], )");
  auto revoked = osh::trust::TrustStore::Parse(revoked_json);
  REQUIRE(revoked.ok());
  trust = std::make_shared<osh::trust::TrustStore>(*revoked);
  CHECK(osh::common::ReasonOf(catalogue.Get("pypi").status()) == "profile_unverified");

  // Deleting: NOT_FOUND the second time; Describe follows the catalogue.
  REQUIRE(catalogue.Delete("pypi").ok());
  CHECK(catalogue.Delete("pypi").code() == absl::StatusCode::kNotFound);
  CHECK_FALSE(evaluator.Describe().provider_profiles());
  CHECK(osh::common::ReasonOf(evaluator.SnapshotProviderProfiles().status()) == "provider_profiles_empty");
}

// A fresh SQLite store in `dir` and an Ed25519 key: the setup of the kept-cache tests below.
std::pair<std::unique_ptr<osh::store::SqliteStore>, std::optional<osh::trust::PrivateKey>> KeptCacheStoreAndKey(
    const osh::test::TempDir& dir) {
  auto store = osh::store::SqliteStore::Open(dir / "gateway.db");
  REQUIRE(store.ok());
  auto key = osh::trust::PrivateKey::Generate("ed25519");
  REQUIRE(key.ok());
  return {*std::move(store), *std::move(key)};
}

TEST_CASE("provider catalogue: a change is checked over every record, then inside its transaction over those "
          "committed since, and a record composed at the catalogue before it cannot commit after it",
          "[interceptor][provider_profiles]") {
  // Two writers on one database (as two replicas): the change's check must see every record that can be
  // composed with the profile it replaces. The long check runs outside any transaction over every record;
  // one written after it is handed to the check inside the transaction; one written while that runs,
  // naming the generation it was composed at, waits and is then refused.
  osh::test::TempDir dir;
  auto [store, key] = KeptCacheStoreAndKey(dir);
  osh::store::FakeClock clock(int64_t{1893456000} * 1000);
  osh::gateway::ProviderProfileCatalogue catalogue(store.get(), nullptr, &clock);
  const uint64_t before = *store->ProviderProfileGeneration();
  REQUIRE(store->PutInterceptorRecord("early", "e", before).ok());
  int checks = 0, refusals = 0;
  std::vector<std::vector<std::string>> seen;  // the records each check was handed
  std::thread late;
  absl::Status late_status;
  catalogue.SetChangeGuard(
      [&](const std::string&, const openshell::v1::ProviderProfile*,
          const std::vector<osh::store::InterceptorRecordRow>& records, int64_t*) {
        ++checks;
        seen.emplace_back();
        for (const auto& row : records) seen.back().push_back(row.sandbox);
        if (checks == 1) {
          // Outside any transaction: another writer records a sandbox after this check read the records.
          CHECK(store->PutInterceptorRecord("between", "b", before).ok());
        } else if (checks == 2) {
          // Inside: another writer records a sandbox composed at the catalogue as it was.
          late = std::thread([&] { late_status = store->PutInterceptorRecord("late", "l", before); });
          absl::SleepFor(absl::Milliseconds(100));
        }
        return absl::OkStatus();
      },
      store.get(), [&](const std::string&, const openshell::v1::ProviderProfile*, const absl::Status&) { ++refusals; });
  const auto set = catalogue.Set(PypiProfileForUnits());
  if (late.joinable()) late.join();
  INFO(set.status().ToString());
  REQUIRE(set.ok());
  CHECK(checks == 2);
  CHECK(seen == std::vector<std::vector<std::string>>{{"early"}, {"between"}});
  CHECK(absl::IsAborted(late_status));
  CHECK(osh::common::ReasonOf(late_status) == "catalogue_changed");
  CHECK_FALSE(store->GetInterceptorRecord("late")->has_value());
  // At the new generation it commits, and the next change's first check is handed it; nothing changed
  // between the two checks, so the second is handed nothing.
  REQUIRE(store->PutInterceptorRecord("late", "l", *store->ProviderProfileGeneration()).ok());
  seen.clear();
  REQUIRE(catalogue.Delete("pypi").ok());
  CHECK(checks == 4);
  CHECK(seen == std::vector<std::vector<std::string>>{{"between", "early", "late"}, {}});
  CHECK(refusals == 0);
  // A refusal (here inside the transaction) writes nothing and is told to the hook once, afterwards.
  catalogue.SetChangeGuard(
      [&](const std::string&, const openshell::v1::ProviderProfile*,
          const std::vector<osh::store::InterceptorRecordRow>& records, int64_t*) {
        if (records.empty()) return osh::common::Refused(absl::StatusCode::kFailedPrecondition, "exceeds_ceiling", "no");
        return absl::OkStatus();
      },
      store.get(),
      [&](const std::string& id, const openshell::v1::ProviderProfile* changed, const absl::Status& refusal) {
        ++refusals;
        CHECK(id == "pypi");
        CHECK(changed != nullptr);
        CHECK(osh::common::ReasonOf(refusal) == "exceeds_ceiling");
      });
  const uint64_t generation = *store->ProviderProfileGeneration();
  const uint64_t head = store->AuditChainHead().seq;
  CHECK(osh::common::ReasonOf(catalogue.Set(PypiProfileForUnits()).status()) == "exceeds_ceiling");
  CHECK(refusals == 1);
  CHECK(*store->ProviderProfileGeneration() == generation);
  CHECK(store->AuditChainHead().seq == head);
  CHECK_FALSE(store->GetProviderProfile("pypi")->has_value());
}

TEST_CASE("provider catalogue: a change is checked against one ceiling, and commits only while that ceiling is "
          "still the one stored: a ceiling narrowed meanwhile is checked too",
          "[interceptor][provider_profiles][ceiling]") {
  // The profile change's long check runs outside any transaction; a narrower ceiling stored while it runs
  // (by this process or another replica, whose view reaches this one later) must not leave the records it
  // passed unchecked against the ceiling the change commits under.
  osh::test::TempDir dir;
  auto [store, key] = KeptCacheStoreAndKey(dir);
  auto trust = osh::trust::TrustStore::Parse(osh::test::TrustStoreJson({{"authority", key->PublicKeyPem()}}));
  REQUIRE(trust.ok());
  auto ceiling_of = [&](const std::vector<std::string>& hosts, uint64_t version) {
    return SignedCeilingForUnits(*key, hosts, "/usr/bin/pip", version);
  };
  const std::string broad = ceiling_of({"pypi.org", "files.pythonhosted.org"}, 1);
  const std::string narrow = ceiling_of({"pypi.org"}, 2);
  osh::gateway::CeilingGuard ceiling(store.get(), store.get());
  REQUIRE(store->SaveCeiling(broad, 1, osh::test::StoredEvent("ceiling_set")).ok());
  REQUIRE(ceiling.Adopt(broad, &*trust, std::time(nullptr), 60).ok());
  osh::gateway::ProviderProfileCatalogue catalogue(store.get(), nullptr, osh::store::Clock::System());
  REQUIRE(catalogue.Set(PypiProfileForUnits()).ok());
  REQUIRE(store->PutInterceptorRecord(
                   "build-1", osh::gateway::InterceptorRecords::Encode({osh::policy::RestrictiveDefaultPolicy(), {"pypi"}}))
              .ok());
  // pypi widened to files.pythonhosted.org: inside the broad ceiling, outside the narrow one.
  const openshell::v1::ProviderProfile wider = WiderPypiProfileForUnits();

  for (const bool seen_late : {false, true}) {
    DYNAMIC_SECTION((seen_late ? "the narrow ceiling is stored by another replica: this process loads it when the "
                                 "commit is refused"
                               : "the narrow ceiling is in force here as soon as it is stored")) {
      int checks = 0, reloads = 0;
      std::vector<int64_t> stamps;
      catalogue.SetChangeGuard(
          [&](const std::string& id, const openshell::v1::ProviderProfile* changed,
              const std::vector<osh::store::InterceptorRecordRow>& records, int64_t* checked_ceiling) {
            ++checks;
            absl::Status verdict =
                osh::gateway::CheckProfileChange(ceiling, records, catalogue, id, changed, checked_ceiling);
            stamps.push_back(*checked_ceiling);
            if (checks == 1) {
              // Passed against the broad ceiling; the narrow one is stored before the change commits.
              CHECK(verdict.ok());
              REQUIRE(store->SaveCeiling(narrow, 2, osh::test::StoredEvent("ceiling_set")).ok());
              if (!seen_late) REQUIRE(ceiling.Adopt(narrow, &*trust, std::time(nullptr), 60).ok());
            }
            return verdict;
          },
          store.get(), nullptr, true, [&] {
            ++reloads;
            return ceiling.Load(&*trust, std::time(nullptr), 60);
          });
      const auto set = catalogue.Set(wider);
      INFO(set.status().ToString());
      CHECK(osh::common::ReasonOf(set.status()) == "exceeds_ceiling");
      CHECK_THAT(std::string(set.status().message()), Catch::Contains("build-1"));
      // Checked first against the broad ceiling (1); the commit was refused, the ceiling the database holds
      // loaded, and the change checked again against the narrow one (2).
      CHECK(stamps == std::vector<int64_t>{1, 2});
      CHECK(reloads == 1);
      osh::gateway::ProviderProfileCatalogue::Entry stored = *catalogue.Get("pypi");
      CHECK(stored.profile.endpoints_size() == 1);
    }
  }
}

TEST_CASE("provider catalogue: a change whose ceiling moves at every try is refused ceiling_changed after four, "
          "audited, and nothing is stored",
          "[interceptor][provider_profiles][ceiling]") {
  osh::test::TempDir dir;
  auto [store, key] = KeptCacheStoreAndKey(dir);
  osh::gateway::ProviderProfileCatalogue catalogue(store.get(), nullptr, osh::store::Clock::System());
  int64_t version = 0;  // the ceiling stored last (opaque bytes: the store does not read them)
  int checks = 0, reloads = 0;
  std::vector<std::string> refusals;
  catalogue.SetChangeGuard(
      [&](const std::string&, const openshell::v1::ProviderProfile*, const std::vector<osh::store::InterceptorRecordRow>&,
          int64_t* checked_ceiling) {
        ++checks;
        *checked_ceiling = version == 0 ? osh::store::kNoCeiling : version;
        // Another writer stores a newer ceiling before this change commits, every time.
        ++version;
        REQUIRE(store->SaveCeiling(absl::StrCat("c", version), version, osh::test::StoredEvent("ceiling_set")).ok());
        return absl::OkStatus();
      },
      store.get(),
      [&](const std::string&, const openshell::v1::ProviderProfile*, const absl::Status& refusal) {
        refusals.push_back(osh::common::ReasonOf(refusal));
      },
      true, [&] {
        ++reloads;
        return absl::OkStatus();
      });
  const uint64_t generation = *store->ProviderProfileGeneration();
  const auto set = catalogue.Set(PypiProfileForUnits());
  CHECK(absl::IsAborted(set.status()));
  CHECK(osh::common::ReasonOf(set.status()) == "ceiling_changed");
  CHECK(checks == 4);
  CHECK(reloads == 3);
  CHECK(refusals == std::vector<std::string>{"ceiling_changed"});
  CHECK(*store->ProviderProfileGeneration() == generation);
  CHECK_FALSE(store->GetProviderProfile("pypi")->has_value());
}

// The interceptor records of `inner`, where another writer (as another replica) commits a catalogue change
// just before the next record write reaches the store: the race a validate on one replica runs with a
// profile change on another.
class RecordsRacedByAChange : public osh::store::InterceptorRecordStore {
 public:
  RecordsRacedByAChange(osh::store::SqliteStore* inner, std::function<void()> change)
      : inner_(inner), change_(std::move(change)) {}
  int puts = 0;
  absl::Status PutInterceptorRecord(const std::string& sandbox, const std::string& record,
                                    std::optional<uint64_t> expected_generation,
                                    const std::optional<std::string>* expected_previous,
                                    osh::store::AuditEvent* event) override {
    if (puts++ == 0 && change_) change_();
    return inner_->PutInterceptorRecord(sandbox, record, expected_generation, expected_previous, event);
  }
  absl::StatusOr<std::optional<std::string>> GetInterceptorRecord(const std::string& sandbox) override {
    return inner_->GetInterceptorRecord(sandbox);
  }
  absl::Status DeleteInterceptorRecord(const std::string& sandbox) override { return inner_->DeleteInterceptorRecord(sandbox); }
  absl::Status ForgetInterceptorRecord(const std::string& sandbox, osh::store::AuditEvent event) override {
    return inner_->ForgetInterceptorRecord(sandbox, std::move(event));
  }
  absl::StatusOr<std::vector<osh::store::InterceptorRecordRow>> ListInterceptorRecords() override {
    return inner_->ListInterceptorRecords();
  }
  absl::StatusOr<std::vector<osh::store::InterceptorRecordRow>> ListInterceptorRecordsPage(
      const std::optional<std::string>& after, size_t limit) override {
    return inner_->ListInterceptorRecordsPage(after, limit);
  }

 private:
  osh::store::SqliteStore* const inner_;
  std::function<void()> change_;
};

TEST_CASE("interceptor: a provider named after one of upstream's type aliases (gh, glab) is refused, even with a stored "
          "profile of that id, and such a profile is not set",
          "[interceptor][provider_profiles]") {
  // Review 96: upstream reads a provider of type gh as github (openshell-providers normalize_provider_type) and
  // composes github's profile; checking gh's layer here would check another policy than the one enforced.
  osh::test::TempDir dir;
  auto [store, key] = KeptCacheStoreAndKey(dir);
  osh::gateway::ProviderProfileCatalogue catalogue(store.get(), nullptr, osh::store::Clock::System());
  openshell::v1::ProviderProfile gh = PypiProfileForUnits();
  gh.set_id("gh");
  const auto set = catalogue.Set(gh);
  REQUIRE_FALSE(set.ok());
  CHECK_THAT(std::string(set.status().message()),
             Catch::Contains("'gh': the OpenShell gateway reads a provider of type 'gh' as 'github'"));
  // One stored before (another version): still served, never composed.
  REQUIRE(store->PutProviderProfile("gh", gh.SerializeAsString(), osh::test::StoredEvent("mutation")).ok());
  REQUIRE(catalogue.Snapshot().ok());
  osh::gateway::CeilingGuard ceiling(store.get(), store.get());
  osh::gateway::InterceptorEvaluator evaluator(&ceiling, store.get(), store.get(), {"aud", &catalogue, nullptr, {}});
  const auto refused = evaluator.Evaluate(EvaluationForUnits(
      "CreateSandbox", PhaseForUnits::kValidate,
      R"({"name": "build-1", "spec": {"policy": {"version": 1.0, "filesystem": {"readOnly": ["/usr"]}}, "providers": ["gh"]}})"));
  CHECK_FALSE(refused.allowed());
  CHECK_THAT(refused.reason(), Catch::StartsWith("unknown_provider: provider 'gh': the OpenShell gateway reads the "
                                                 "provider type 'gh' as 'github'"));
}

TEST_CASE("interceptor: a validate whose providers' catalogue changes before its record commits is decided again on "
          "the new catalogue, and what it composed before is never recorded",
          "[interceptor][provider_profiles][interceptor_records]") {
  namespace icv1 = openshell::gateway_interceptor::v1;
  osh::test::TempDir dir;
  auto [store, key] = KeptCacheStoreAndKey(dir);
  osh::gateway::ProviderProfileCatalogue catalogue(store.get(), nullptr, osh::store::Clock::System());
  REQUIRE(catalogue.Set(PypiProfileForUnits()).ok());
  osh::gateway::CeilingGuard ceiling(store.get(), store.get());
  auto validate = [](const std::string& name) {
    return EvaluationForUnits(
        "CreateSandbox", PhaseForUnits::kValidate,
        absl::StrCat(R"({"name": ")", name,
                     R"(", "spec": {"policy": {"version": 1.0, "filesystem": {"readOnly": ["/usr"]}}, "providers": ["pypi"]}})"));
  };
  // Another replica adds a profile meanwhile: pypi's layer is the same, but the record names the catalogue
  // it was composed at, so it is refused and the validate decided again (allowed, recorded once).
  openshell::v1::ProviderProfile other = PypiProfileForUnits();
  other.set_id("other");
  RecordsRacedByAChange added(store.get(), [&] {
    REQUIRE(store->PutProviderProfile("other", other.SerializeAsString(), osh::test::StoredEvent("mutation")).ok());
  });
  osh::gateway::InterceptorEvaluator evaluator(&ceiling, store.get(), &added, {"aud", &catalogue, nullptr, {}});
  const auto allowed = evaluator.Evaluate(validate("build-7"));
  INFO(allowed.reason());
  CHECK(allowed.allowed());
  CHECK(added.puts == 2);
  CHECK(store->GetInterceptorRecord("build-7")->has_value());

  // Another replica attaches a provider to build-7 just before a detach's record write: the detach was
  // decided on the record without it, so its write is refused and it is decided again on the new record
  // (the other provider kept).
  openshell::sandbox::v1::SandboxPolicy own;
  own.set_version(1);
  own.mutable_filesystem()->add_read_only("/usr");
  REQUIRE(store->PutInterceptorRecord("build-9", osh::gateway::InterceptorRecords::Encode({own, {"pypi"}})).ok());
  RecordsRacedByAChange attached(store.get(), [&] {
    REQUIRE(store->PutInterceptorRecord("build-9", osh::gateway::InterceptorRecords::Encode({own, {"pypi", "other"}})).ok());
  });
  osh::gateway::InterceptorEvaluator detaching(&ceiling, store.get(), &attached, {"aud", &catalogue, nullptr, {}});
  const auto detached = detaching.Evaluate(EvaluationForUnits("DetachSandboxProvider", PhaseForUnits::kValidate,
                                                              R"({"sandboxName": "build-9", "providerName": "pypi"})"));
  INFO(detached.reason());
  CHECK(detached.allowed());
  CHECK(attached.puts == 2);
  osh::gateway::InterceptorRecords::Record after;
  REQUIRE(osh::gateway::InterceptorRecords::Decode(**store->GetInterceptorRecord("build-9"), &after));
  CHECK(after.providers == std::vector<std::string>{"other"});
  // Two replicas attach the same provider: the second, decided again, finds it attached and records it once.
  REQUIRE(store->PutInterceptorRecord("build-10", osh::gateway::InterceptorRecords::Encode({own, {"pypi"}})).ok());
  RecordsRacedByAChange attached_too(store.get(), [&] {
    REQUIRE(store->PutInterceptorRecord("build-10", osh::gateway::InterceptorRecords::Encode({own, {"pypi", "other"}})).ok());
  });
  osh::gateway::InterceptorEvaluator attaching(&ceiling, store.get(), &attached_too, {"aud", &catalogue, nullptr, {}});
  const auto attached_once = attaching.Evaluate(EvaluationForUnits(
      "AttachSandboxProvider", PhaseForUnits::kValidate, R"({"sandboxName": "build-10", "providerName": "other"})"));
  INFO(attached_once.reason());
  CHECK(attached_once.allowed());
  REQUIRE(osh::gateway::InterceptorRecords::Decode(**store->GetInterceptorRecord("build-10"), &after));
  CHECK(after.providers == std::vector<std::string>{"pypi", "other"});

  // Another replica deletes pypi meanwhile: decided again, the provider is unknown now, nothing recorded.
  RecordsRacedByAChange deleted(store.get(), [&] {
    REQUIRE(store->DeleteProviderProfile("pypi", osh::test::StoredEvent("mutation")).ok());
  });
  osh::gateway::InterceptorEvaluator second(&ceiling, store.get(), &deleted, {"aud", &catalogue, nullptr, {}});
  const auto refused = second.Evaluate(validate("build-8"));
  CHECK_FALSE(refused.allowed());
  CHECK_THAT(refused.reason(), Catch::StartsWith("unknown_provider: "));
  CHECK(deleted.puts == 1);
  CHECK_FALSE(store->GetInterceptorRecord("build-8")->has_value());
}

// Admit mode's Policy subsystem, where a narrower ceiling is stored while an admission commits: the
// admission's composed check passed against the ceiling before it; the core, refused ceiling_changed,
// reloads the ceiling and checks the policy alone against it, then commits (as GatewayCore::AdmitCommitted
// does). `narrow` is what it puts in force meanwhile.
class AdmissionRacedByACeiling : public osh::gateway::InterceptorAdmission {
 public:
  explicit AdmissionRacedByACeiling(std::function<void()> narrow) : narrow_(std::move(narrow)) {}
  int withdrawn = 0;
  absl::StatusOr<Admitted> Admit(const openshell::policy::driver::v1::RuntimeContext& context,
                                 const AdmitCheck& also_check) override {
    Admitted admitted;
    admitted.context = context;
    admitted.policy = std::make_shared<const openshell::sandbox::v1::SandboxPolicy>(osh::policy::RestrictiveDefaultPolicy());
    admitted.digest = osh::policy::Sha256Hex(osh::policy::SerializeDeterministic(*admitted.policy));
    admitted.version = 1;
    std::vector<osh::store::AuditEvent> events;
    const osh::trust::CheckResult checked = also_check(*admitted.policy, &events);
    if (!checked.ok()) return osh::common::Refused(absl::StatusCode::kFailedPrecondition, checked.reason, checked.detail);
    narrow_();
    admitted_ = admitted;
    return admitted;
  }
  absl::StatusOr<std::optional<Admitted>> Current(const std::string&) const override { return admitted_; }
  absl::Status Withdraw(const std::string&) override {
    ++withdrawn;
    admitted_.reset();
    return absl::OkStatus();
  }
  bool permits_mutation() const override { return true; }
  absl::StatusOr<std::vector<std::string>> AdmittedIds() const override { return std::vector<std::string>{}; }
  absl::Status RecordPushRefused(const std::string&, const std::string&) override { return absl::OkStatus(); }
  absl::Status RecordPushAccepted(const std::string&) override { return absl::OkStatus(); }

 private:
  std::function<void()> narrow_;
  std::optional<Admitted> admitted_;
};

TEST_CASE("interceptor: admit mode checks the composed candidate again when its admission committed under another "
          "ceiling than the check read",
          "[interceptor][ceiling]") {
  namespace icv1 = openshell::gateway_interceptor::v1;
  osh::test::TempDir dir;
  auto [store, key] = KeptCacheStoreAndKey(dir);
  auto trust = osh::trust::TrustStore::Parse(osh::test::TrustStoreJson({{"authority", key->PublicKeyPem()}}));
  REQUIRE(trust.ok());
  osh::gateway::CeilingGuard ceiling(store.get(), store.get());
  REQUIRE(ceiling.Adopt(SignedCeilingForUnits(*key, {"pypi.org", "files.pythonhosted.org"}, "/usr/bin/pip", 1), &*trust,
                        std::time(nullptr), 60)
              .ok());
  osh::gateway::ProviderProfileCatalogue catalogue(store.get(), nullptr, osh::store::Clock::System());
  REQUIRE(catalogue.Set(WiderPypiProfileForUnits()).ok());
  AdmissionRacedByACeiling admission([&] {
    REQUIRE(ceiling.Adopt(SignedCeilingForUnits(*key, {"pypi.org"}, "/usr/bin/pip", 2), &*trust, std::time(nullptr), 60)
                .ok());
  });
  osh::gateway::InterceptorEvaluator evaluator(&ceiling, store.get(), store.get(), {"aud", &catalogue, &admission, {}});
  icv1::InterceptorEvaluation create = EvaluationForUnits("CreateSandbox", PhaseForUnits::kModify,
                                                          R"({"name": "build-1", "spec": {"providers": ["pypi"]}})");
  (*create.mutable_principal())["kind"] = "user";
  (*create.mutable_principal())["subject"] = "dev@example.com";
  const auto result = evaluator.Evaluate(create);
  INFO(result.reason());
  // The policy alone is inside the narrow ceiling; with pypi's layer it is not.
  CHECK_FALSE(result.allowed());
  CHECK_THAT(result.reason(), Catch::StartsWith("exceeds_ceiling: "));
  CHECK(result.patches().empty());
  CHECK(admission.withdrawn == 1);
}

// Admit mode's Policy subsystem that hands its admission on (keeps the check and the answer, as a driver
// call under way does) and then throws (memory) before AdmitAsync returns.
class AdmissionThatThrowsAfterHandingOn : public osh::gateway::InterceptorAdmission {
 public:
  AdmitCheck kept_check;
  AdmitDone kept_done;
  absl::StatusOr<Admitted> Admit(const openshell::policy::driver::v1::RuntimeContext&, const AdmitCheck&) override {
    return absl::InternalError("not used");
  }
  bool admits_without_blocking() const override { return true; }
  void AdmitAsync(openshell::policy::driver::v1::RuntimeContext, AdmitCheck also_check, AdmitDone done) override {
    kept_check = std::move(also_check);
    kept_done = std::move(done);
    throw std::bad_alloc();
  }
  absl::StatusOr<std::optional<Admitted>> Current(const std::string&) const override { return std::nullopt; }
  absl::Status Withdraw(const std::string&) override { return absl::OkStatus(); }
  bool permits_mutation() const override { return true; }
  absl::StatusOr<std::vector<std::string>> AdmittedIds() const override { return std::vector<std::string>{}; }
  absl::Status RecordPushRefused(const std::string&, const std::string&) override { return absl::OkStatus(); }
  absl::Status RecordPushAccepted(const std::string&) override { return absl::OkStatus(); }
};

TEST_CASE("interceptor: admit mode's create answered with a deny because something threw after its admission was "
          "handed on is answered only once the admission's steps let go of the request",
          "[interceptor][admit]") {
  // Threat model row 25's leftover (review 91): `done` lets the caller (gRPC) free the request, which the
  // step handed on before the throw still reads (its composed check, its answer).
  namespace icv1 = openshell::gateway_interceptor::v1;
  osh::test::TempDir dir;
  auto [store, key] = KeptCacheStoreAndKey(dir);
  osh::gateway::CeilingGuard ceiling(store.get(), store.get());
  osh::gateway::ProviderProfileCatalogue catalogue(store.get(), nullptr, osh::store::Clock::System());
  AdmissionThatThrowsAfterHandingOn admission;
  osh::gateway::InterceptorEvaluator evaluator(&ceiling, store.get(), store.get(), {"aud", &catalogue, &admission, {}});
  osh::gateway::WorkerPool pool(2);
  auto create = std::make_unique<icv1::InterceptorEvaluation>(
      EvaluationForUnits("CreateSandbox", PhaseForUnits::kModify, R"({"name": "build-1", "spec": {}})"));
  (*create->mutable_principal())["kind"] = "user";
  (*create->mutable_principal())["subject"] = "dev@example.com";
  REQUIRE(evaluator.MayAdmit(*create));
  icv1::InterceptorResult response;
  std::atomic<int> answers{0};
  // `done` frees the request, as gRPC does once the call is finished (runs on whichever thread lets go last:
  // no Catch assertion in it).
  evaluator.EvaluateAsync(*create, "", &response, &pool, [&] {
    create.reset();
    answers.fetch_add(1);
  }, /*here_may_block=*/false);
  REQUIRE(admission.kept_check);
  REQUIRE(admission.kept_done);
  // Not answered while the admission's steps hold the call: the request is still there for them.
  REQUIRE(answers.load() == 0);
  REQUIRE(create != nullptr);
  std::vector<osh::store::AuditEvent> events;
  const auto policy = osh::policy::RestrictiveDefaultPolicy();
  (void)admission.kept_check(policy, &events);  // reads the request (the audit event names its principal)
  admission.kept_done(osh::common::Refused(absl::StatusCode::kUnavailable, "driver_unavailable", "gone"));
  admission.kept_check = nullptr;
  admission.kept_done = nullptr;
  pool.Shutdown();  // the answer's step handed to the pool has run and let go
  CHECK(answers.load() == 1);
  CHECK(create == nullptr);
  CHECK_FALSE(response.allowed());
  CHECK_THAT(response.reason(), Catch::StartsWith("internal_error: "));
}

TEST_CASE("interceptor: admit mode's accepted push records its policy fenced like a validate: a profile change "
          "committed first makes it read the catalogue again",
          "[interceptor][provider_profiles][interceptor_records]") {
  osh::test::TempDir dir;
  auto [store, key] = KeptCacheStoreAndKey(dir);
  osh::gateway::ProviderProfileCatalogue catalogue(store.get(), nullptr, osh::store::Clock::System());
  REQUIRE(catalogue.Set(PypiProfileForUnits()).ok());
  osh::gateway::CeilingGuard ceiling(store.get(), store.get());
  openshell::sandbox::v1::SandboxPolicy before, pushed;
  before.set_version(1);
  pushed.set_version(1);
  pushed.mutable_filesystem()->add_read_only("/usr");
  REQUIRE(store->PutInterceptorRecord("build-7", osh::gateway::InterceptorRecords::Encode({before, {"pypi"}})).ok());
  openshell::v1::ProviderProfile other = PypiProfileForUnits();
  other.set_id("other");
  RecordsRacedByAChange raced(store.get(), [&] {
    REQUIRE(store->PutProviderProfile("other", other.SerializeAsString(), osh::test::StoredEvent("mutation")).ok());
  });
  osh::gateway::InterceptorEvaluator evaluator(&ceiling, store.get(), &raced, {"aud", &catalogue, nullptr, {}});
  REQUIRE(evaluator.RecordPushed("build-7", pushed).ok());
  CHECK(raced.puts == 2);  // refused at the generation it read, then recorded at the new one
  osh::gateway::InterceptorRecords::Record recorded;
  REQUIRE(osh::gateway::InterceptorRecords::Decode(**store->GetInterceptorRecord("build-7"), &recorded));
  CHECK(recorded.policy.filesystem().read_only_size() == 1);
  CHECK(recorded.providers == std::vector<std::string>{"pypi"});
  // A sandbox with no record: nothing written.
  REQUIRE(evaluator.RecordPushed("nobody", pushed).ok());
  CHECK_FALSE(store->GetInterceptorRecord("nobody")->has_value());
}

TEST_CASE("provider catalogue: a stored profile the OpenShell gateway would refuse is neither composed nor served",
          "[interceptor][provider_profiles]") {
  // Review (helper 71, follow-up): profiles stored before the catalogue held them to upstream's validation (or
  // by an older replica) would fail upstream's whole catalogue.
  osh::test::TempDir dir;
  auto [store, key] = KeptCacheStoreAndKey(dir);
  osh::gateway::ProviderProfileCatalogue catalogue(store.get(), nullptr, osh::store::Clock::System());
  REQUIRE(catalogue.Set(PypiProfileForUnits()).ok());
  REQUIRE(catalogue.Snapshot().ok());
  openshell::v1::ProviderProfile old = PypiProfileForUnits();
  old.set_id("my_api");  // an id the catalogue took before: upstream takes lowercase kebab-case only
  REQUIRE(store->PutProviderProfile("my_api", old.SerializeAsString(), osh::test::StoredEvent("mutation")).ok());
  const auto snapshot = catalogue.Snapshot();
  REQUIRE_FALSE(snapshot.ok());
  CHECK_THAT(std::string(snapshot.status().message()),
             Catch::StartsWith("profile_unverified: provider profile 'my_api': as stored, the OpenShell gateway refuses "
                               "it (invalid_profile: id: 'my_api': lowercase kebab-case"));
  CHECK_FALSE(catalogue.Get("my_api").ok());
  CHECK(catalogue.Get("pypi").ok());
}

TEST_CASE("provider catalogue: the verified catalogue is kept until the store's generation, the trust store or a key's "
          "window moves, never longer",
          "[interceptor][provider_profiles][cache]") {
  osh::test::TempDir dir;
  auto [store, key] = KeptCacheStoreAndKey(dir);
  // The signing key is trusted until 2030-01-01T01:00:00Z; the clock starts an hour before.
  std::string trust_json = osh::test::TrustStoreJson({{"gateway-key", key->PublicKeyPem()}});
  trust_json.insert(trust_json.find(R"("key_id")"), R"("not_after": "2030-01-01T01:00:00Z", )");
  auto parsed = osh::trust::TrustStore::Parse(trust_json);
  INFO(trust_json);
  REQUIRE(parsed.ok());
  std::shared_ptr<const osh::trust::TrustStore> trust = std::make_shared<osh::trust::TrustStore>(*parsed);
  osh::store::FakeClock clock(int64_t{1893456000} * 1000);
  osh::gateway::ProviderProfileCatalogue catalogue(store.get(), [&trust] { return trust; }, &clock);
  catalogue.SetSigningKey(*key);
  openshell::v1::ProviderProfile pypi = PypiProfileForUnits();
  const auto set = catalogue.Set(pypi);
  INFO(set.status().ToString());
  REQUIRE(set.ok());

  // Read and verified once, then kept across Snapshot, Get and Count.
  REQUIRE(catalogue.Snapshot().ok());
  REQUIRE(catalogue.Get("pypi").ok());
  CHECK(*catalogue.Count() == 1);
  CHECK(catalogue.cache_stats().rebuilds == 1);
  CHECK(catalogue.cache_stats().hits == 2);

  // A change committed to the store by another writer (as another replica's): the generation moved.
  REQUIRE(store->PutProviderProfile("other", "not a profile", osh::test::StoredEvent("mutation")).ok());
  CHECK(*catalogue.Count() == 2);
  CHECK(catalogue.Get("other").status().code() == absl::StatusCode::kDataLoss);
  CHECK(catalogue.Snapshot().status().code() == absl::StatusCode::kDataLoss);
  REQUIRE(store->DeleteProviderProfile("other", osh::test::StoredEvent("mutation")).ok());
  REQUIRE(catalogue.Snapshot().ok());
  const uint64_t rebuilds = catalogue.cache_stats().rebuilds;

  // The key's window ends: what was verified inside it is not served after it, nor before its start.
  clock.SetUnixMillis(int64_t{1893459600} * 1000);  // its last second: still inside
  REQUIRE(catalogue.Get("pypi").ok());
  CHECK(catalogue.cache_stats().rebuilds == rebuilds);
  clock.AdvanceSeconds(1);
  CHECK(osh::common::ReasonOf(catalogue.Get("pypi").status()) == "profile_unverified");
  CHECK(osh::common::ReasonOf(catalogue.Snapshot().status()) == "profile_unverified");
  clock.SetUnixMillis(int64_t{1893456000} * 1000);
  REQUIRE(catalogue.Snapshot().ok());

  // Another trust store (a reload, even of the same keys): verified again under it.
  trust = std::make_shared<osh::trust::TrustStore>(*parsed);
  const uint64_t before_reload = catalogue.cache_stats().rebuilds;
  REQUIRE(catalogue.Snapshot().ok());
  CHECK(catalogue.cache_stats().rebuilds == before_reload + 1);
}

TEST_CASE("ceiling guard: a candidate seen before is answered from the kept verdict, never across ceilings or trust "
          "stores",
          "[interceptor][ceiling][cache]") {
  osh::test::TempDir dir;
  auto [store, key] = KeptCacheStoreAndKey(dir);
  auto trust = osh::trust::TrustStore::Parse(osh::test::TrustStoreJson({{"authority", key->PublicKeyPem()}}));
  REQUIRE(trust.ok());
  auto ceiling_of = [&](const std::vector<std::string>& hosts, uint64_t version) {
    return SignedCeilingForUnits(*key, hosts, "/usr/bin/curl", version);
  };
  osh::gateway::CeilingGuard guard(store.get(), store.get());
  REQUIRE(guard.Adopt(ceiling_of({"pypi.org", "api.github.com"}, 1), &*trust, std::time(nullptr), 60).ok());
  openshell::sandbox::v1::SandboxPolicy candidate = osh::policy::RestrictiveDefaultPolicy();
  auto& rule = (*candidate.mutable_network_policies())["pypi"];
  rule.set_name("pypi");
  auto* endpoint = rule.add_endpoints();
  endpoint->set_host("pypi.org");
  endpoint->set_port(443);
  rule.add_binaries()->set_path("/usr/bin/curl");
  const std::string digest = osh::policy::Sha256Hex(osh::policy::SerializeDeterministic(candidate));

  CHECK(guard.Check(candidate, digest).ok());
  CHECK(guard.Check(candidate, digest).ok());
  CHECK(guard.cache_stats().hits == 1);
  CHECK(guard.cache_stats().misses == 1);
  // A trust-store reload: nothing kept is reused.
  guard.TrustChanged();
  CHECK(guard.cache_stats().kept == 0);
  CHECK(guard.Check(candidate, digest).ok());
  CHECK(guard.cache_stats().misses == 2);
  // A new ceiling without pypi.org: the same candidate (same digest) is decided against it.
  REQUIRE(guard.Adopt(ceiling_of({"api.github.com"}, 2), &*trust, std::time(nullptr), 60).ok());
  const auto refused = guard.Check(candidate, digest);
  CHECK(refused.reason == "exceeds_ceiling");
  CHECK(guard.cache_stats().misses == 3);
}

TEST_CASE("interceptor payloads: the memo's fingerprint tells contents apart, and a memoised conversion equals a "
          "fresh one",
          "[interceptor][payload][cache]") {
  namespace sbv1 = openshell::sandbox::v1;
  auto parse_struct = [](const std::string& json) {
    google::protobuf::Struct object;
    REQUIRE(google::protobuf::util::JsonStringToMessage(json, &object).ok());
    return object;
  };
  SECTION("the fingerprint: same members in any order meet; any other difference parts them") {
    const auto a = parse_struct(R"({"name":"s1","spec":{"policy":{"version":1},"providers":["a","b"]}})");
    const auto b = parse_struct(R"({"spec":{"providers":["a","b"],"policy":{"version":1}},"name":"s1"})");
    CHECK(osh::gateway::InterceptorPayloadFingerprint(a) == osh::gateway::InterceptorPayloadFingerprint(b));
    const std::vector<std::string> others = {
        R"({"name":"s1","spec":{"policy":{"version":"1"},"providers":["a","b"]}})",   // string, not number
        R"({"name":"s1","spec":{"policy":{"version":2},"providers":["a","b"]}})",     // another number
        R"({"name":"s1","spec":{"policy":{"version":1},"providers":["b","a"]}})",     // list order counts
        R"({"name":"s1","spec":{"policy":{"version":1},"providers":["ab"]}})",        // no run-together strings
        R"({"name":"s1","spec":{"policy":{"version":1},"providers":["a","b",null]}})",
        R"({"name":"s1","spec":{"policy":{"version":1,"x":true},"providers":["a","b"]}})",
        R"({"name":"s1","spec":{"policy":{"version":1},"providers":{"a":"b"}}})",     // object, not list
        R"({"nam":"es1","spec":{"policy":{"version":1},"providers":["a","b"]}})",     // key/value boundary
        R"({"name":"s1","spec":{"policy":{"version":1},"providers":["a","b"]},"x":false})",
    };
    std::set<std::string> seen = {osh::gateway::InterceptorPayloadFingerprint(a)};
    for (const std::string& other : others) {
      INFO(other);
      CHECK(seen.insert(osh::gateway::InterceptorPayloadFingerprint(parse_struct(other))).second);
    }
  }
  SECTION("the fingerprint of nested objects: each object's members sorted on their own, siblings kept apart") {
    // Objects inside objects and lists, several members each, in every order the JSON gives them.
    const auto a = parse_struct(R"({"b":{"y":{"k":1,"j":[{"t":1,"s":2},{"r":3}]},"x":2},"a":{"q":1,"p":{"o":2,"n":3}},"c":[{"z":1,"w":2}]})");
    const auto b = parse_struct(R"({"c":[{"w":2,"z":1}],"a":{"p":{"n":3,"o":2},"q":1},"b":{"x":2,"y":{"j":[{"s":2,"t":1},{"r":3}],"k":1}}})");
    CHECK(osh::gateway::InterceptorPayloadFingerprint(a) == osh::gateway::InterceptorPayloadFingerprint(b));
    CHECK(osh::gateway::InterceptorPayloadDigest(a) == osh::policy::Sha256(osh::gateway::InterceptorPayloadFingerprint(a)));
    CHECK(osh::gateway::InterceptorPayloadDigest(a) == osh::gateway::InterceptorPayloadDigest(b));
    // Members moved between sibling objects are another content.
    const auto moved = parse_struct(R"({"b":{"y":{"k":1,"j":[{"t":1,"s":2},{"r":3}]},"q":1},"a":{"x":2,"p":{"o":2,"n":3}},"c":[{"z":1,"w":2}]})");
    const auto swapped = parse_struct(R"({"b":{"y":{"k":1,"j":[{"t":1,"s":2},{"r":3}]},"x":2},"a":{"q":1,"p":{"o":2,"n":3}},"c":[{"z":2,"w":1}]})");
    CHECK(osh::gateway::InterceptorPayloadFingerprint(moved) != osh::gateway::InterceptorPayloadFingerprint(a));
    CHECK(osh::gateway::InterceptorPayloadFingerprint(swapped) != osh::gateway::InterceptorPayloadFingerprint(a));
    CHECK(osh::gateway::InterceptorPayloadDigest(moved) != osh::gateway::InterceptorPayloadDigest(a));
    // Lengths of two bytes and more (128 and up) part contents as one-byte ones do.
    std::set<std::string> long_ones;
    for (const std::string& json : {absl::StrCat(R"({"a":")", std::string(300, 'x'), R"("})"),
                                    absl::StrCat(R"({"a":")", std::string(299, 'x'), R"("})"),
                                    absl::StrCat(R"({"a":")", std::string(128, 'x'), R"("})"),
                                    absl::StrCat(R"({"a":")", std::string(127, 'x'), R"("})"),
                                    absl::StrCat(R"({"a":[")", std::string(150, 'x'), R"(",")", std::string(149, 'x'), R"("]})"),
                                    absl::StrCat(R"({")", std::string(200, 'k'), R"(":"x"})"),
                                    absl::StrCat(R"({")", std::string(199, 'k'), R"(":"kx"})")}) {
      INFO(json.size());
      CHECK(long_ones.insert(osh::gateway::InterceptorPayloadFingerprint(parse_struct(json))).second);
    }
  }
  SECTION("decoding: a payload seen before decodes to what a fresh decode gives; a near twin is not confused") {
    const std::string json =
        R"({"name":"memo-1","spec":{"policy":{"version":1,"networkPolicies":{"r":{"name":"r","endpoints":[{"host":"a.example","port":443}]}}}}})";
    const auto payload = parse_struct(json);
    openshell::v1::CreateSandboxRequest fresh, first, again;
    REQUIRE(osh::gateway::DecodeInterceptorPayloadUncached(payload, &fresh).ok());
    const auto before = osh::gateway::InterceptorPayloadMemoStats().decoded;
    REQUIRE(osh::gateway::DecodeInterceptorPayload(payload, &first).ok());
    REQUIRE(osh::gateway::DecodeInterceptorPayload(payload, &again).ok());
    // The first was converted, the second came from the memo (as it does with the digest handed in).
    REQUIRE(osh::gateway::DecodeInterceptorPayload(payload, &again, osh::gateway::InterceptorPayloadDigest(payload)).ok());
    const auto after = osh::gateway::InterceptorPayloadMemoStats().decoded;
    CHECK(after.misses == before.misses + 1);
    CHECK(after.hits == before.hits + 2);
    CHECK(google::protobuf::util::MessageDifferencer::Equals(fresh, first));
    CHECK(google::protobuf::util::MessageDifferencer::Equals(fresh, again));
    auto twin_json = json;
    twin_json.replace(twin_json.find("443"), 3, "444");
    openshell::v1::CreateSandboxRequest twin;
    REQUIRE(osh::gateway::DecodeInterceptorPayload(parse_struct(twin_json), &twin).ok());
    CHECK(twin.spec().policy().network_policies().at("r").endpoints(0).port() == 444);
    // Into another type the same payload is decoded afresh (and refused by that type's strict rules).
    openshell::v1::UpdateConfigRequest other;
    CHECK_FALSE(osh::gateway::DecodeInterceptorPayload(payload, &other).ok());
    // A refused payload is refused every time: only successes are kept, so each is converted again.
    const auto bad = parse_struct(R"({"name":"memo-1","spec":{"policy":{"version":1.5}}})");
    openshell::v1::CreateSandboxRequest refused;
    const auto before_bad = osh::gateway::InterceptorPayloadMemoStats().decoded;
    CHECK_FALSE(osh::gateway::DecodeInterceptorPayload(bad, &refused).ok());
    CHECK_FALSE(osh::gateway::DecodeInterceptorPayload(bad, &refused).ok());
    CHECK(osh::gateway::InterceptorPayloadMemoStats().decoded.misses == before_bad.misses + 2);
  }
  SECTION("encoding: a message encoded before gives the fresh encoding; another message its own") {
    sbv1::SandboxPolicy policy;
    policy.set_version(1);
    auto& rule = (*policy.mutable_network_policies())["r"];
    rule.set_name("r");
    rule.add_endpoints()->set_host("a.example");
    auto fresh = osh::gateway::MessageToInterceptorValueUncached(policy);
    const auto before = osh::gateway::InterceptorPayloadMemoStats().encoded;
    auto first = osh::gateway::MessageToInterceptorValue(policy);
    auto again = osh::gateway::MessageToInterceptorValue(policy);
    const auto after = osh::gateway::InterceptorPayloadMemoStats().encoded;
    CHECK(after.misses == before.misses + 1);
    CHECK(after.hits == before.hits + 1);
    REQUIRE(fresh.ok());
    REQUIRE(first.ok());
    REQUIRE(again.ok());
    CHECK(google::protobuf::util::MessageDifferencer::Equals(*fresh, **first));
    CHECK(google::protobuf::util::MessageDifferencer::Equals(*fresh, **again));
    rule.mutable_endpoints(0)->set_host("b.example");
    auto changed = osh::gateway::MessageToInterceptorValue(policy);
    REQUIRE(changed.ok());
    CHECK_FALSE(google::protobuf::util::MessageDifferencer::Equals(*fresh, **changed));
    // An identity names the message instead of its serialization: the same identity is the same entry,
    // another identity of the same message its own.
    auto named = osh::gateway::MessageToInterceptorValue(policy, "identity-1");
    const auto before_named = osh::gateway::InterceptorPayloadMemoStats().encoded;
    auto named_again = osh::gateway::MessageToInterceptorValue(policy, "identity-1");
    auto other_name = osh::gateway::MessageToInterceptorValue(policy, "identity-2");
    const auto after_named = osh::gateway::InterceptorPayloadMemoStats().encoded;
    REQUIRE(named.ok());
    REQUIRE(named_again.ok());
    REQUIRE(other_name.ok());
    CHECK(named->get() == named_again->get());
    CHECK(named->get() != other_name->get());
    CHECK(after_named.hits == before_named.hits + 1);
    CHECK(after_named.misses == before_named.misses + 1);
    CHECK((*changed)->struct_value().fields().at("networkPolicies").struct_value().fields().at("r").struct_value()
              .fields().at("endpoints").list_value().values(0).struct_value().fields().at("host").string_value() ==
          "b.example");
  }
}

TEST_CASE("driver state audit: transitions within a burst a minute, a new text of the same state every ten minutes, "
          "the state held back audited once the budget allows",
          "[gateway][driver]") {
  using osh::gateway::DriverStateAudit;
  DriverStateAudit audit;
  const absl::Time t0 = absl::FromUnixSeconds(1'800'000'000);
  // The first report, whatever it says; the same again is not audited.
  auto first = audit.OnReport(false, "connect refused", t0);
  REQUIRE(first.has_value());
  CHECK_FALSE(first->available);
  CHECK(first->not_audited == 0);
  CHECK_FALSE(audit.OnReport(false, "connect refused", t0 + absl::Seconds(1)).has_value());
  // Another text of the same state: not within ten minutes, then audited naming what it held back.
  for (int i = 2; i < 30; ++i) CHECK_FALSE(audit.OnReport(false, absl::StrCat("attempt ", i), t0 + absl::Seconds(i)).has_value());
  auto later = audit.OnReport(false, "attempt 601", t0 + absl::Seconds(601));
  REQUIRE(later.has_value());
  CHECK(later->detail == "attempt 601");
  CHECK(later->not_audited == 29);
  CHECK_FALSE(audit.Pending(false, "attempt 601", t0 + absl::Seconds(602)).has_value());  // the log says what the driver is

  // Flapping: 21 reports in one minute, each a transition; the minute's burst is audited, the rest counted.
  const absl::Time t1 = t0 + absl::Hours(1);
  int audited = 0;
  bool available = true;
  for (int i = 0; i < 21; ++i, available = !available) {
    if (audit.OnReport(available, available ? "" : "gone", t1 + absl::Seconds(i)).has_value()) ++audited;
  }
  CHECK(audited == DriverStateAudit::kBurst);
  // The driver ended up (the last report, i = 20); the burst's last audited one (i = 5) said down.
  CHECK_FALSE(audit.Pending(true, "", t1 + absl::Seconds(30)).has_value());  // no budget left this minute
  auto caught_up = audit.Pending(true, "", t1 + absl::Seconds(61));
  REQUIRE(caught_up.has_value());
  CHECK(caught_up->available);
  CHECK(caught_up->detail.empty());
  CHECK(caught_up->not_audited == 21 - DriverStateAudit::kBurst);
  CHECK_FALSE(audit.Pending(true, "", t1 + absl::Seconds(62)).has_value());
  // A transition within the new window's budget is audited at once.
  auto down = audit.OnReport(false, "gone again", t1 + absl::Seconds(63));
  REQUIRE(down.has_value());
  CHECK_FALSE(down->available);
  CHECK(down->not_audited == 0);

  // Review 84: a short flap back to the audited state while the budget is spent leaves a trace once it
  // allows; the driver's own state wins over the last report heard; a clock stepping back restarts the window.
  const absl::Time t2 = t1 + absl::Hours(1);
  for (int i = 0; i < DriverStateAudit::kBurst; ++i) {
    REQUIRE(audit.OnReport(i % 2 == 0, "", t2 + absl::Seconds(i)).has_value());  // up, down, …, down
  }
  CHECK_FALSE(audit.OnReport(true, "", t2 + absl::Seconds(10)).has_value());
  CHECK_FALSE(audit.OnReport(false, "gone", t2 + absl::Seconds(11)).has_value());
  CHECK_FALSE(audit.Pending(false, "gone", t2 + absl::Seconds(12)).has_value());  // no budget yet
  auto flap = audit.Pending(false, "gone", t2 + absl::Seconds(70));
  REQUIRE(flap.has_value());
  CHECK_FALSE(flap->available);
  CHECK(flap->not_audited == 2);
  CHECK_FALSE(audit.Pending(false, "gone", t2 + absl::Seconds(71)).has_value());
  // Reports crossed on the way: the last heard says down, the driver is up — taken once it says so twice.
  CHECK_FALSE(audit.Pending(true, "connected", t2 + absl::Seconds(72)).has_value());
  auto actual = audit.Pending(true, "connected", t2 + absl::Seconds(73));
  REQUIRE(actual.has_value());
  CHECK(actual->available);
  CHECK(actual->detail == "connected");
  // The minute's budget spent, then the clock steps back an hour: the window restarts rather than
  // stalling until the clock catches up, and a new text is not held for the hour either.
  bool up = true;
  for (int i = 0; i < DriverStateAudit::kBurst; ++i, up = !up) {
    audit.OnReport(!up, "", t2 + absl::Seconds(80 + i));
  }
  REQUIRE_FALSE(audit.OnReport(true, "", t2 + absl::Seconds(90)).has_value());  // spent
  const absl::Time back = t2 - absl::Hours(1);
  auto after_step = audit.OnReport(false, "back in time", back);
  REQUIRE(after_step.has_value());
  CHECK_FALSE(after_step->available);
  auto text_after_step = audit.OnReport(false, "another text", back - absl::Seconds(5));
  CHECK(text_after_step.has_value());
}

TEST_CASE("cost-bounded memo: a value is computed again only once 100 times its last computation's cost has "
          "passed, at most 30 s, and a caller finding it being computed gets the kept value",
          "[metrics][drift]") {
  // The drift gauge's pass over every admitted sandbox, for scrapes that need no credential (review 79).
  absl::Time now = absl::FromUnixSeconds(1'800'000'000);
  osh::gateway::CostBoundedMemo<int> memo(100, absl::Seconds(30), [&now] { return now; });
  int next = 1;
  auto compute = [&](absl::Duration cost) {
    return [&, cost] {
      now += cost;
      return next++;
    };
  };
  CHECK(memo.Get(compute(absl::Milliseconds(50))) == 1);  // cost 50 ms: fresh for 5 s after it ended
  now += absl::Seconds(4);
  CHECK(memo.Get(compute(absl::Milliseconds(50))) == 1);
  CHECK(memo.computations() == 1);
  now += absl::Seconds(1);
  CHECK(memo.Get(compute(absl::Microseconds(10))) == 2);  // stale: computed again, cost 10 us: fresh 1 ms
  now += absl::Milliseconds(2);
  CHECK(memo.Get(compute(absl::Seconds(1))) == 3);  // cost 1 s: 100 s capped at 30 s
  now += absl::Seconds(29);
  CHECK(memo.Get(compute(absl::Seconds(1))) == 3);
  now += absl::Seconds(2);
  // Another caller asks while this one computes: the kept value, not a second pass.
  int asked_meanwhile = 0;
  CHECK(memo.Get([&] {
    asked_meanwhile = memo.Get(compute(absl::Seconds(1)));
    return next++;
  }) == 4);
  CHECK(asked_meanwhile == 3);
  CHECK(memo.computations() == 4);
  // A computation that throws (memory) leaves no caller waiting on it: the next ask computes again.
  now += absl::Seconds(200);
  CHECK_THROWS_AS(memo.Get([]() -> int { throw std::bad_alloc(); }), std::bad_alloc);
  CHECK(memo.Get(compute(absl::Milliseconds(1))) == 4);  // the kept value, for a second after a throw
  now += absl::Seconds(2);
  CHECK(memo.Get(compute(absl::Milliseconds(1))) == 5);
  // The default clock is monotonic.
  osh::gateway::CostBoundedMemo<int> steady;
  CHECK(steady.Get([] { return 7; }) == 7);
}

TEST_CASE("log sampling: the first occurrence of what a caller can repeat at will, then one in kLogOneIn",
          "[gateway][log]") {
  using osh::gateway::SampledForLog;
  CHECK(SampledForLog(1));
  CHECK_FALSE(SampledForLog(2));
  CHECK_FALSE(SampledForLog(osh::gateway::kLogOneIn - 1));
  CHECK(SampledForLog(osh::gateway::kLogOneIn));
  CHECK_FALSE(SampledForLog(osh::gateway::kLogOneIn + 1));
  CHECK(SampledForLog(7 * osh::gateway::kLogOneIn));
  int logged = 0;
  for (uint64_t count = 1; count <= 10'000; ++count) logged += SampledForLog(count) ? 1 : 0;
  CHECK(logged == 11);
}

TEST_CASE("audit budget: a burst, then one a refill, and what it holds back is counted and said once", "[unit][audit]") {
  osh::gateway::AuditBudget budget(3, absl::Seconds(1));
  const absl::Time t0 = absl::FromUnixSeconds(1'000'000);
  uint64_t held = 99;
  for (int i = 0; i < 3; ++i) {
    REQUIRE(budget.Take(t0, &held));
    CHECK(held == 0);
  }
  for (int i = 0; i < 5; ++i) CHECK_FALSE(budget.Take(t0, &held));  // counted
  CHECK(budget.TakeHeldBack(t0) == 0);                               // no budget for a summary yet
  REQUIRE(budget.Take(t0 + absl::Milliseconds(1500), &held));        // one refilled: says the five
  CHECK(held == 5);
  CHECK_FALSE(budget.Take(t0 + absl::Milliseconds(1600), &held));
  CHECK(budget.TakeHeldBack(t0 + absl::Milliseconds(2600)) == 1);    // a summary of its own
  CHECK(budget.TakeHeldBack(t0 + absl::Seconds(10)) == 0);           // nothing held
  // Refilled up to the burst, not beyond; a clock stepping back refills nothing.
  for (int i = 0; i < 3; ++i) CHECK(budget.Take(t0 + absl::Seconds(100), &held));
  CHECK_FALSE(budget.Take(t0 + absl::Seconds(100), &held));
  CHECK_FALSE(budget.Take(t0 + absl::Seconds(50), &held));
  CHECK_FALSE(budget.Take(t0 + absl::Seconds(100), &held));
  REQUIRE(budget.Take(t0 + absl::Seconds(101), &held));
  CHECK(held == 3);
  // At a stop the last count is said whatever the budget.
  CHECK_FALSE(budget.Take(t0 + absl::Seconds(101), &held));
  CHECK(budget.TakeHeldBack(t0 + absl::Seconds(101)) == 0);
  CHECK(budget.TakeHeldBack(t0 + absl::Seconds(101), /*whatever_the_budget=*/true) == 1);
  CHECK(budget.TakeHeldBack(t0 + absl::Seconds(101), true) == 0);
}

TEST_CASE("audit context: a driver's key under openshell. is moved aside, so the gateway's own entries cannot be forged",
          "[audit]") {
  // Regression (review 114, mended at stop 71): a driver's "openshell.truncated" read as the gateway's note.
  google::protobuf::Map<std::string, std::string> context;
  context["openshell.truncated"] = "0 of 1 entries left out";
  context["openshell.sandbox.v1"] = "x";
  context["policy_file"] = "default.yaml";
  context["openshellish"] = "y";  // not the prefix
  context["driver.openshell.truncated"] = "the driver's own";  // must not collide with the one moved aside
  const auto recorded = osh::gateway::BoundedAuditContext(context);
  CHECK(recorded.size() == 5);
  CHECK(recorded.at("driver.driver.openshell.truncated") == "the driver's own");
  CHECK_FALSE(recorded.contains("openshell.truncated"));
  CHECK(recorded.at("driver.openshell.truncated") == "0 of 1 entries left out");
  CHECK(recorded.at("driver.openshell.sandbox.v1") == "x");
  CHECK(recorded.at("policy_file") == "default.yaml");
  CHECK(recorded.at("openshellish") == "y");
  // Past the bounds the gateway's own entry says so, and it is the only key under the prefix.
  for (int i = 0; i < 100; ++i) context["k" + std::to_string(i)] = "v";
  const auto bounded = osh::gateway::BoundedAuditContext(context);
  REQUIRE(bounded.contains("openshell.truncated"));
  CHECK_THAT(bounded.at("openshell.truncated"), Catch::Contains("entries left out"));
  for (const auto& [key, value] : bounded) {
    if (key != "openshell.truncated") CHECK_FALSE(absl::StartsWith(key, "openshell."));
  }
}
