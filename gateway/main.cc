// policy-gateway: the daemon. See docs/policy-gateway.md for the manual.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <thread>

#include <CLI/CLI.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gateway/clock.h"
#include "gateway/config.h"
#include "gateway/daemon.h"
#include "gateway/log.h"

namespace osh::gateway {
namespace {

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
    std::string flag = absl::StrCat("--", key.name);
    std::replace(flag.begin(), flag.end(), '_', '-');
    if (std::string(key.name) == "accepted_surfaces") {
      app.add_option("--accepted-surface", surfaces, absl::StrCat(key.help, " (repeat for more)"));
      continue;
    }
    app.add_option(flag, flag_values[key.name], key.help);
  }
  bool accept_state_rollback = false;
  app.add_flag("--accept-state-rollback", accept_state_rollback,
               "serve a database whose audit chain is behind the head recorded beside it (restored from a backup): "
               "confirm once, after checking it is the state to serve; audited");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    return app.exit(error) == 0 ? 0 : kExitConfig;
  }
  for (const auto& key : ConfigKeys()) {
    std::string flag = absl::StrCat("--", key.name);
    std::replace(flag.begin(), flag.end(), '_', '-');
    if (std::string(key.name) != "accepted_surfaces" && app.count(flag) > 0) flags[key.name] = flag_values[key.name];
  }
  if (!surfaces.empty()) flags["accepted_surfaces"] = absl::StrJoin(surfaces, ",");
  if (config_path.empty()) {
    if (const char* env = std::getenv("POLICY_GATEWAY_CONFIG")) config_path = env;
  }
  ConfigValues file_values;
  if (!config_path.empty()) {
    auto read = ReadConfigFile(config_path);
    if (!read.ok()) {
      std::cerr << "policy-gateway: config: " << read.status().message() << "\n";
      return kExitConfig;
    }
    file_values = *read;
  }
  auto config = ResolveConfig(flags, ReadConfigEnvironment(), file_values);
  if (!config.ok()) {
    std::cerr << "policy-gateway: config: " << config.status().message() << "\n";
    return kExitConfig;
  }
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
  return osh::gateway::Run(argc, argv);
}
