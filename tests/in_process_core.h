// The gateway core in process, wired as the daemon wires it but without sockets: SQLite in a temp
// folder, the builtin driver, and a FakeClock injected into all three (tests move time by hand).
#pragma once

#include <catch2/catch.hpp>
#include <functional>
#include <memory>

#include "builtin_driver/builtin_driver.h"
#include "gateway/core/gateway_core.h"
#include "store/clock.h"
#include "store/sqlite_store.h"
#include "tests/test_support.h"

namespace osh::test {

struct InProcessCore {
  static constexpr int64_t kStart = 1'800'000'000;  // unix seconds: where the clock starts
  TempDir dir;
  osh::store::FakeClock clock{kStart * 1000};
  std::unique_ptr<osh::store::SqliteStore> store;
  std::unique_ptr<osh::builtin_driver::BuiltinDriver> driver;
  osh::gateway::SandboxRegistry registry;
  osh::gateway::Config config;
  std::unique_ptr<osh::gateway::GatewayCore> core;

  // `configure`, when set, adjusts the config (limits, skew, trust_store, ...) before the core is made;
  // `signing_key` signs the builtin driver's projections. With config.trust_store set, the core verifies
  // against the trust store loaded from it.
  explicit InProcessCore(const std::function<void(osh::gateway::Config&)>& configure = nullptr,
                         std::optional<osh::builtin_driver::SigningKey> signing_key = std::nullopt) {
    if (configure) configure(config);
    auto opened = osh::store::SqliteStore::Open(dir / "gateway.db", &clock);
    REQUIRE(opened.ok());
    store = *std::move(opened);
    auto created = osh::builtin_driver::BuiltinDriver::Create(store.get(), std::move(signing_key), true, &clock);
    REQUIRE(created.ok());
    driver = *std::move(created);
    std::shared_ptr<const osh::trust::TrustStore> trust;
    if (!config.trust_store.empty()) {
      auto loaded = osh::trust::TrustStore::Load(config.trust_store);
      REQUIRE(loaded.ok());
      trust = std::make_shared<const osh::trust::TrustStore>(*std::move(loaded));
    }
    core = std::make_unique<osh::gateway::GatewayCore>(config, store.get(), driver.get(), &registry, trust, &clock);
  }
};

}  // namespace osh::test
