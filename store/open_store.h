// The store named by a `database` URL (SPEC §6): "sqlite:<path>" (or a bare path) opens or creates the
// embedded SQLite store; "postgresql://…" / "postgres://…" opens the multi-replica PostgreSQL store (libpq: URL
// parameters and PG* environment variables apply). Any other form is INVALID_ARGUMENT naming what is accepted.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "store/clock.h"
#include "store/store.h"

namespace osh::store {

// Who opens the store: a gateway (on PostgreSQL: a replica with a heartbeat and the change feed, refused
// on the target of an unfinished migration) or `policy-gateway migrate` (no heartbeat, no feed: it must
// not count as a live replica, and it may open an unfinished migration's target to replace it).
enum class StoreRole { kGateway, kMigration };

// `clock` (not owned) must outlive the store.
absl::StatusOr<std::unique_ptr<Store>> OpenStore(const std::string& url, const Clock* clock = Clock::System(),
                                                 StoreRole role = StoreRole::kGateway);

// The SQLite file of a "sqlite:<path>" URL or a bare path; "" for any other URL.
std::string SqlitePathOf(const std::string& url);
// Whether `url` names the PostgreSQL store (postgresql:// or postgres://).
bool IsPostgresUrl(const std::string& url);
// The database for messages and logs: the SQLite path, or PostgreSQL's host, port, database and user
// (never a password).
std::string DisplayName(const std::string& url);

}  // namespace osh::store
