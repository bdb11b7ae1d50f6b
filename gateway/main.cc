// policy-gateway: the daemon. See docs/policy-gateway.md for the manual.
#include <signal.h>
#include <sys/stat.h>

#include <filesystem>
#include <iostream>
#include <memory>
#include <thread>

#include <CLI/CLI.hpp>
#include <grpcpp/ext/health_check_service_server_builder_option.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "builtin_driver/builtin_driver.h"
#include "drivers/remote_driver.h"
#include "gateway/admin_service.h"
#include "gateway/clock.h"
#include "gateway/config.h"
#include "gateway/gateway_core.h"
#include "gateway/log.h"
#include "gateway/refresh_scheduler.h"
#include "gateway/sandbox_registry.h"
#include "gateway/sandbox_service.h"
#include "drivers/unix_server.h"
#include "gateway/worker_pool.h"
#include "policy/policy_file.h"
#include "store/open_store.h"
#include "trust/trust_store.h"

namespace osh::gateway {
namespace {

constexpr char kAdmissionHealthService[] = "openshell.policy.gateway.v1.Admission";
constexpr int kExitConfig = 2;
constexpr int kExitStartup = 1;

struct Listener {
  std::unique_ptr<grpc::Server> server;
  std::string path;
};

absl::StatusOr<Listener> Listen(const std::string& socket_path, grpc::Service* typed, grpc::CallbackGenericService* generic) {
  grpc::ServerBuilder builder;
  if (typed != nullptr) builder.RegisterService(typed);
  if (generic != nullptr) builder.RegisterCallbackGenericService(generic);
  auto server = drivers::StartUnixServer(socket_path, builder);  // private folder, socket 0600
  if (!server.ok()) return server.status();
  return Listener{*std::move(server), std::filesystem::absolute(socket_path).lexically_normal().string()};
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
    std::string flag = absl::StrCat("--", key.name);
    std::replace(flag.begin(), flag.end(), '_', '-');
    if (std::string(key.name) == "accepted_surfaces") {
      app.add_option("--accepted-surface", surfaces, absl::StrCat(key.help, " (repeat for more)"));
      continue;
    }
    app.add_option(flag, flag_values[key.name], key.help);
  }
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

  if (auto status = drivers::EnsurePrivateDir(config->state_dir); !status.ok()) {
    LogError(std::string(status.message()));
    return kExitStartup;
  }
  const std::string db_path = config->SqlitePath();
  if (auto status = drivers::EnsurePrivateDir(std::filesystem::absolute(db_path).parent_path().string()); !status.ok()) {
    LogError(std::string(status.message()));
    return kExitStartup;
  }
  const store::Clock* clock = DaemonClock();
  auto store = store::OpenStore(config->database, clock);
  if (!store.ok()) {
    LogError(absl::StrCat("database ", db_path, ": ", store.status().message()));
    return kExitStartup;
  }

  std::shared_ptr<const trust::TrustStore> trust_store;
  if (!config->trust_store.empty()) {
    auto loaded = trust::TrustStore::Load(config->trust_store);
    if (!loaded.ok()) {
      LogError(std::string(loaded.status().message()));
      return kExitStartup;
    }
    trust_store = std::make_shared<const trust::TrustStore>(*std::move(loaded));
    LogInfo(absl::StrCat("trust store ", config->trust_store, ": ", trust_store->keys().size(), " key(s), threshold ",
                         trust_store->threshold()));
  } else {
    LogWarning("no trust store configured: projections are admitted with verification = none");
  }

  std::unique_ptr<drivers::PolicyDriver> driver;
  drivers::RemoteDriver* remote = nullptr;
  if (!config->driver_socket.empty()) {
    if (!config->builtin_signing_key.empty()) {
      LogError("builtin_signing_key is for the builtin driver; it cannot be used with driver_socket");
      return kExitConfig;
    }
    drivers::RemoteDriverOptions options;
    options.socket_path = config->driver_socket;
    options.connect_timeout_ms = config->driver_connect_timeout_ms;
    options.call_timeout_ms = config->driver_call_timeout_ms;
    if (!config->driver_socket_owner.empty()) {
      auto uid = drivers::ResolveUser(config->driver_socket_owner);
      if (!uid.ok()) {
        LogError(absl::StrCat("driver_socket_owner: ", uid.status().message()));
        return kExitConfig;
      }
      options.socket_owner = *uid;
    }
    options.accepted_surfaces = config->accepted_surfaces;
    options.gateway_version = OSH_VERSION;
    LogInfo(absl::StrCat("connecting to the policy driver on ", config->driver_socket, " (up to ",
                         config->driver_connect_timeout_ms, " ms)"));
    auto started = drivers::RemoteDriver::Start(options);
    if (!started.ok()) {
      LogError(absl::StrCat("policy driver: ", started.status().message()));
      return kExitStartup;
    }
    remote = started->get();
    if (auto caps = remote->GetCapabilities(); caps.ok()) {
      LogInfo(absl::StrCat("policy driver '", caps->driver_name(), "' ", caps->driver_version(), ": permits_mutation=",
                           caps->permits_mutation() ? "true" : "false", ", signs_projections=",
                           caps->signs_projections() ? "true" : "false"));
      if (trust_store == nullptr && !caps->signs_projections()) {
        LogWarning("the driver does not sign and no trust store is configured: nothing proves where policies come from");
      }
    } else {
      LogError(absl::StrCat("POLICY DRIVER UNAVAILABLE at start-up (", config->driver_socket,
                            "): starting degraded; admissions fail closed until it answers"));
    }
    driver = *std::move(started);
  }
  std::optional<builtin_driver::SigningKey> signing_key;
  if (driver == nullptr && !config->builtin_signing_key.empty()) {
    auto pem = policy::ReadFileToString(config->builtin_signing_key);
    if (!pem.ok()) {
      LogError(absl::StrCat("builtin_signing_key: ", pem.status().message()));
      return kExitStartup;
    }
    auto key = trust::PrivateKey::FromPem(*pem);
    if (!key.ok()) {
      LogError(absl::StrCat("builtin_signing_key ", config->builtin_signing_key, ": ", key.status().message()));
      return kExitStartup;
    }
    signing_key = builtin_driver::SigningKey{*std::move(key), config->builtin_signing_key_id};
  }
  if (driver == nullptr) {
    auto builtin = builtin_driver::BuiltinDriver::Create(store->get(), std::move(signing_key),
                                                         config->builtin_context_binding, clock);
    if (!builtin.ok()) {
      LogError(absl::StrCat("builtin driver: ", builtin.status().message()));
      return kExitStartup;
    }
    driver = *std::move(builtin);
  }

  SandboxRegistry registry;
  GatewayCore core(*config, store->get(), driver.get(), &registry, trust_store, clock);
  auto loaded = core.LoadAdmitted();
  if (!loaded.ok()) {
    LogError(absl::StrCat("loading admitted sandboxes: ", loaded.status().message()));
    return kExitStartup;
  }
  core.DeliverPendingReleases();

  WorkerPool pool(8);
  AdminService admin_service(&core, &pool);
  SandboxService sandbox_service(&registry, &core, &pool);
  grpc::EnableDefaultHealthCheckService(true);
  auto admin = Listen(config->admin_socket, nullptr, &admin_service);
  if (!admin.ok()) {
    LogError(std::string(admin.status().message()));
    return kExitStartup;
  }
  auto sandbox = Listen(config->sandbox_socket, &sandbox_service, nullptr);
  if (!sandbox.ok()) {
    LogError(std::string(sandbox.status().message()));
    admin->server->Shutdown();
    return kExitStartup;
  }
  // Admission health follows the driver; always read its current state, so updates cannot reorder.
  absl::Mutex health_mu;
  auto update_health = [&] {
    absl::MutexLock lock(&health_mu);
    for (auto* server : {admin->server.get(), sandbox->server.get()}) {
      server->GetHealthCheckService()->SetServingStatus(kAdmissionHealthService, driver->available());
    }
  };
  if (remote != nullptr) {
    // Runs on the monitor thread, or on the thread whose driver call found it gone.
    remote->SetStateListener([&core, &update_health](bool available, const std::string& detail) {
      update_health();
      core.OnDriverState(available, detail);
      if (available) core.DeliverPendingReleases();
    });
  }
  update_health();
  auto scheduler = std::make_unique<RefreshScheduler>(&core, &registry, driver.get(), config->refresh_interval_s);
  // Loaded sandboxes are served as soon as the sockets answer, each re-verified on first use; this pass
  // re-verifies the rest in the background.
  std::thread verifier([&core] { core.VerifyLoaded(); });
  LogInfo(absl::StrCat("serving: driver ", driver->kind(), ", ", *loaded, " admitted sandbox(es), admin ", admin->path,
                       ", sandbox ", sandbox->path, ", database ", db_path));

  // Signals were blocked before any thread started; this thread alone receives them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  for (;;) {
    int signal_number = 0;
    if (sigwait(&signals, &signal_number) != 0) continue;
    if (signal_number == SIGHUP) {
      LogInfo("SIGHUP: reloading the trust store");
      pool.Submit([&core] { core.ReloadTrustStore().IgnoreError(); });  // logs and audits either way
      continue;
    }
    LogInfo(absl::StrCat(signal_number == SIGTERM ? "SIGTERM" : "SIGINT", ": draining"));
    break;
  }
  registry.CloseAllWatchers();
  const auto deadline = std::chrono::system_clock::now() + std::chrono::seconds(5);
  admin->server->Shutdown(deadline);
  sandbox->server->Shutdown(deadline);
  admin->server->Wait();
  sandbox->server->Wait();
  // Quiesce every thread that may still touch the servers, the core or the driver, in order.
  core.StopVerifying();
  verifier.join();
  scheduler.reset();
  if (remote != nullptr) {
    remote->Stop();
    remote->SetStateListener(nullptr);
  }
  pool.Shutdown();
  LogInfo("stopped");
  return 0;
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
