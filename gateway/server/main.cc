// policy-gateway: the daemon. See docs/policy-gateway.md for the manual.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <iostream>
#include <memory>
#include <mutex>
#include <chrono>
#include <thread>

#include <CLI/CLI.hpp>
#include <grpc/grpc.h>
#include <jansson.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gateway/core/clock.h"
#include "gateway/core/config.h"
#include "gateway/server/daemon.h"
#include "gateway/core/log.h"
#include "store/migrate.h"
#include "store/open_store.h"

namespace osh::gateway {
namespace {

// --check-config: every key's effective value and where it came from, as a table or JSON.
int PrintConfig(const Config& config, const ConfigOrigins& origins, const std::string& output) {
  const ConfigValues values = EffectiveValues(config);
  if (output == "json") {  // keys in the order of SPEC §6, each value typed as in TOML (jansson keeps the order)
    std::unique_ptr<json_t, decltype(&json_decref)> root(json_object(), &json_decref);
    for (const auto& key : ConfigKeys()) {
      const std::string& text = values.at(key.name);
      json_t* value = nullptr;
      int64_t number = 0;
      switch (ConfigValueTypeOf(key.name)) {
        case ConfigValueType::kInteger:
          value = absl::SimpleAtoi(text, &number) ? json_integer(number) : json_stringn(text.data(), text.size());
          break;
        case ConfigValueType::kBoolean:
          value = json_boolean(text == "true");
          break;
        case ConfigValueType::kList:
          value = json_array();
          for (absl::string_view item : absl::StrSplit(text, ',', absl::SkipEmpty())) {
            json_array_append_new(value, json_stringn(item.data(), item.size()));
          }
          break;
        case ConfigValueType::kString:
          value = json_stringn(text.data(), text.size());
          break;
      }
      json_t* entry = json_object();
      json_object_set_new(entry, "value", value != nullptr ? value : json_null());  // null: not UTF-8
      json_object_set_new(entry, "source", json_string(origins.at(key.name).c_str()));
      json_object_set_new(entry, "table", json_string(key.table));
      json_object_set_new(root.get(), key.name, entry);
    }
    std::unique_ptr<char, decltype(&free)> json(json_dumps(root.get(), JSON_COMPACT | JSON_PRESERVE_ORDER), &free);
    if (json == nullptr) return kExitStartup;
    std::cout << json.get() << "\n";
    return 0;
  }
  size_t key_width = 3, value_width = 5;
  for (const auto& key : ConfigKeys()) {
    key_width = std::max(key_width, std::strlen(key.name));
    value_width = std::max(value_width, values.at(key.name).size());
  }
  auto row = [&](const std::string& a, const std::string& b, const std::string& c) {
    std::cout << a << std::string(key_width + 2 - a.size(), ' ') << b << std::string(value_width + 2 - b.size(), ' ')
              << c << "\n";
  };
  row("KEY", "VALUE", "SOURCE");
  for (const auto& key : ConfigKeys()) row(key.name, values.at(key.name), origins.at(key.name));
  std::cout << "config ok\n";
  return 0;
}

// `policy-gateway migrate`: the whole state of one store copied into another, empty one.
int Migrate(const std::string& from_url, const std::string& to_url, const std::string& output,
            store::Importer::Begin begin) {
  auto fail = [](const std::string& what, const absl::Status& status) {
    std::cerr << "policy-gateway migrate: " << what << ": " << status.message() << "\n";
    return kExitStartup;
  };
  if (const std::string path = store::SqlitePathOf(from_url); !path.empty() && !std::filesystem::exists(path)) {
    return fail(path, absl::NotFoundError("no such database file"));
  }
  store::StoreOptions source;
  source.role = store::StoreRole::kMigration;
  source.exclusive = true;  // a gateway serving a SQLite source would go on changing it
  auto from = store::OpenStore(from_url, source);
  if (!from.ok()) return fail(absl::StrCat("--from ", store::DisplayName(from_url)), from.status());
  store::StoreOptions target;
  target.role = store::StoreRole::kMigration;
  auto to = store::OpenStore(to_url, target);
  if (!to.ok()) return fail(absl::StrCat("--to ", store::DisplayName(to_url)), to.status());
  store::MigrationOptions options;
  options.source_name = store::DisplayName(from_url);
  options.begin = begin;
  // Test hook (integration tests only: a copy slow enough to be cut short at a known point): audit pages
  // of N events, each followed by a progress line and a 300 ms pause.
  if (const char* slow = std::getenv("OSH_TEST_MIGRATE_SLOW_PAGES"); slow != nullptr) {
    uint32_t page = 0;
    if (absl::SimpleAtoi(slow, &page) && page > 0) {
      options.audit_page = page;
      options.after_audit_page = [](uint64_t copied) {
        std::cerr << "policy-gateway migrate: audit chain: " << copied << " event(s) copied" << std::endl;
        std::this_thread::sleep_for(std::chrono::milliseconds(300));
      };
    }
  }
  auto report = store::MigrateStore(**from, **to, options, [](const std::string& line) {
    std::cerr << "policy-gateway migrate: " << line << "\n";
  });
  if (!report.ok()) return fail(absl::StrCat("--to ", store::DisplayName(to_url)), report.status());
  if (output == "json") {
    google::protobuf::Struct root;
    auto& fields = *root.mutable_fields();
    fields["from"].set_string_value(store::DisplayName(from_url));
    fields["to"].set_string_value(store::DisplayName(to_url));
    fields["sandboxes"].set_number_value(static_cast<double>(report->sandboxes));
    fields["pending_releases"].set_number_value(static_cast<double>(report->pending_releases));
    fields["policy_revisions"].set_number_value(static_cast<double>(report->policy_revisions));
    fields["interceptor_records"].set_number_value(static_cast<double>(report->interceptor_records));
    fields["provider_profiles"].set_number_value(static_cast<double>(report->provider_profiles));
    fields["audit_events"].set_number_value(static_cast<double>(report->audit_events));
    fields["audit_resumed_after"].set_number_value(static_cast<double>(report->resumed_after));
    fields["ceiling"].set_bool_value(report->ceiling);
    fields["audit_head_hash"].set_string_value(report->head.hash);
    std::string json;
    if (!google::protobuf::util::MessageToJsonString(root, &json).ok()) return kExitStartup;
    std::cout << json << "\n";
    return 0;
  }
  std::cout << "migrated " << store::DisplayName(from_url) << " -> " << store::DisplayName(to_url) << "\n"
            << "  sandboxes         " << report->sandboxes << "\n"
            << "  pending releases  " << report->pending_releases << "\n"
            << "  policy revisions  " << report->policy_revisions << "\n"
            << "  interceptor       " << report->interceptor_records << " sandbox record(s)\n"
            << "  provider profiles " << report->provider_profiles << "\n"
            << "  ceiling           " << (report->ceiling ? "yes" : "none") << "\n"
            << "  audit events      " << report->audit_events;
  if (report->resumed_after > 0) std::cout << " after the " << report->resumed_after << " the interrupted run copied";
  std::cout << " (head " << report->head.hash << ", same chain)\n";
  return 0;
}

int Run(int argc, char** argv) {
  CLI::App app{"policy-gateway: decides which policy each sandbox enforces and proves it is the one an authority issued.\n"
               "Precedence: flag > environment (POLICY_GATEWAY_<KEY>) > config file > default."};
  app.set_version_flag("--version", OSH_VERSION);
  std::string config_path;
  app.add_option("--config", config_path, "TOML config file (env POLICY_GATEWAY_CONFIG)");
  ConfigValues flags;
  std::vector<std::string> surfaces;
  std::map<std::string, std::string> flag_values;
  for (const auto& key : ConfigKeys()) {
    if (std::string(key.name) == "accepted_surfaces") {
      app.add_option("--accepted-surface", surfaces, absl::StrCat(key.help, " (repeat for more)"));
      continue;
    }
    auto* option = app.add_option(FlagName(key.name), flag_values[key.name], key.help);
    if (IsIntegerKey(key.name)) option->type_name("INT");
    if (std::string(key.name) == "builtin_context_binding") option->type_name("BOOL");
  }
  bool accept_state_rollback = false;
  app.add_flag("--accept-state-rollback", accept_state_rollback,
               "serve a database whose audit chain is behind the head recorded beside it (restored from a backup): "
               "confirm once, after checking it is the state to serve; audited");
  bool check_config = false;
  std::string output = "text";
  app.add_flag("--check-config", check_config,
               "validate the configuration, print every key's effective value and its source (flag, environment, "
               "file:line or default), and exit: 0 when valid, 2 when not; starts nothing");
  app.add_option("-o,--output", output, "--check-config output")->check(CLI::IsMember({"text", "json"}))->capture_default_str();
  auto* migrate = app.add_subcommand(
      "migrate",
      "copy a gateway's whole state (sandboxes, handles, policies with revisions, pending releases, the ceiling and "
      "the audit chain) from one database into another, empty one; stop every gateway using either first");
  std::string migrate_from, migrate_to, migrate_output = "text";
  bool migrate_replace_target = false, migrate_resume = false;
  auto* replace_flag = migrate->add_flag(
      "--replace-target", migrate_replace_target,
      "the target holds what an interrupted migration left (gateways refuse it): empty it and copy again (refused on "
      "a target no migration marked)");
  migrate->add_flag("--resume", migrate_resume,
                    "continue an interrupted migration from the same source: the state is copied again, the audit "
                    "chain from where the copy stopped once its copied part is checked against the source's (refused "
                    "if the source's chain changed meanwhile: then --replace-target)")
      ->excludes(replace_flag);
  migrate->add_option("--from", migrate_from, "the database to copy: sqlite:<path> (or a PostgreSQL URL)")->required();
  migrate->add_option("--to", migrate_to, "the empty database to fill: postgresql://...")->required();
  migrate->add_option("-o,--output", migrate_output, "summary format")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    return app.exit(error) == 0 ? 0 : kExitConfig;
  }
  if (*migrate) {
    return Migrate(migrate_from, migrate_to, migrate_output,
                   migrate_resume           ? store::Importer::Begin::kResume
                   : migrate_replace_target ? store::Importer::Begin::kReplace
                                            : store::Importer::Begin::kFresh);
  }
  for (const auto& key : ConfigKeys()) {
    if (std::string(key.name) != "accepted_surfaces" && app.count(FlagName(key.name)) > 0) {
      flags[key.name] = flag_values[key.name];
    }
  }
  if (!surfaces.empty()) flags["accepted_surfaces"] = absl::StrJoin(surfaces, ",");
  if (config_path.empty()) {
    if (const char* env = std::getenv("POLICY_GATEWAY_CONFIG")) config_path = env;
  }
  auto fail = [](const absl::Status& status) {
    std::cerr << "policy-gateway: config: " << status.message() << "\n";
    return kExitConfig;
  };
  ConfigValues file_values;
  ConfigOrigins file_origins;
  if (!config_path.empty()) {
    auto read = ReadConfigFile(config_path, &file_origins);
    if (!read.ok()) return fail(read.status());
    file_values = *read;
  }
  auto env_values = ReadConfigEnvironment(environ);
  if (!env_values.ok()) return fail(env_values.status());
  auto config = ResolveConfig(flags, *env_values, file_values, file_origins);
  if (!config.ok()) return fail(config.status());
  SetLogFormat(*ParseLogFormat(config->log_format));  // both checked by ResolveConfig
  SetMinimumLogLevel(*ParseLogLevel(config->log_level));
  if (check_config) return PrintConfig(*config, OriginsOf(flags, *env_values, file_values, file_origins), output);
  config->accept_state_rollback = accept_state_rollback;

  // Start-up can take a while (a driver that does not answer yet, a large database): SIGTERM and SIGINT
  // end it at once, as a kill would — every state change is a committed transaction, so nothing is torn.
  // From just before the sockets are bound, a stop signal is left to ServeUntilStopped (a clean drain).
  std::mutex start_mu;
  bool starting = true;  // guarded by start_mu
  std::thread start_watch([&] {
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    const timespec tick{0, 50'000'000};
    for (;;) {
      const int signal_number = sigtimedwait(&stop_signals, nullptr, &tick);
      std::lock_guard<std::mutex> lock(start_mu);
      if (!starting) {
        if (signal_number > 0) ::kill(::getpid(), signal_number);  // pending again, for ServeUntilStopped
        return;
      }
      if (signal_number == SIGTERM || signal_number == SIGINT) {
        LogInfo(absl::StrCat(signal_number == SIGTERM ? "SIGTERM" : "SIGINT", " during start-up: exiting"));
        std::_Exit(kExitStartup);
      }
    }
  });
  auto end_of_startup = [&] {
    std::lock_guard<std::mutex> lock(start_mu);
    starting = false;
  };
  Daemon::Started started = Daemon::Start(*config, DaemonClock(), end_of_startup);
  end_of_startup();  // also when start-up failed before serving
  start_watch.join();
  if (started.daemon == nullptr) return started.exit_code;
  return started.daemon->ServeUntilStopped();
}

}  // namespace
}  // namespace osh::gateway

int main(int argc, char** argv) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);
#if defined(NDEBUG) && !defined(OSH_SANITIZED)
  // Debian's Abseil is built with lock-order (deadlock) detection on, which records every lock
  // acquisition in a graph: ~2% of the CPU of an admission storm. The sanitizer builds keep it.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
#endif
  // One reference to gRPC's library for the life of the process, never released: otherwise the last
  // server's destructor runs grpc_shutdown, which joins gRPC's executor threads — and one of them may be
  // sleeping in a TCP write's backup poller (a stream whose reader stopped reading) for up to 10 s before it
  // looks again. Everything of ours has stopped and is durable by then; the process's exit ends those threads.
  grpc_init();
  return osh::gateway::Run(argc, argv);
}
