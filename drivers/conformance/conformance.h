// The driver conformance harness: exercises a running PolicyDriver over its Unix socket against the
// contract of SPEC §3 (docs/driver-contract.md) and reports one row per check. It is a client only: it
// never changes the driver beyond acquiring and releasing the handles it uses (all released at the end).
//
// Thread-safe in the sense that runs share nothing; one run uses several client threads itself.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "openshell/policy/conformance/v1/conformance.pb.h"
#include "openshell/policy/driver/v1/driver.pb.h"
#include "trust/trust_store.h"

namespace osh::conformance {

namespace conformance_v1 = openshell::policy::conformance::v1;

struct ConformanceOptions {
  std::string socket;
  std::string surface = "openshell.sandbox.v1";
  std::optional<uid_t> socket_owner;  // may own the socket besides root and us (the gateway's driver_socket_owner)
  // When set: the driver must sign, and every projection must verify under this store (SPEC §3.3 step 3).
  std::shared_ptr<const trust::TrustStore> trust_store;
  // A context the driver serves. An empty sandbox_id is replaced by a fresh random one.
  openshell::policy::driver::v1::RuntimeContext context;
  int clients = 4;   // concurrent clients, each on its own connection
  int rounds = 10;   // acquire/get/release rounds per client
  int64_t call_timeout_ms = 5000;
  int64_t connect_timeout_ms = 5000;
  int64_t clock_skew_s = 60;
  // When set: run through /bin/sh to restart the driver (returning once it is restarting); the
  // restart.handles check then asks for a handle acquired before.
  std::string restart_command;
};

// Runs every check. NOT_FOUND when there is no socket at the path; UNAVAILABLE when nothing answers on
// it within connect_timeout_ms. Otherwise the report, whatever the checks found.
absl::StatusOr<conformance_v1::Report> RunConformance(const ConformanceOptions& options);

}  // namespace osh::conformance
