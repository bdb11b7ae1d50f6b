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

absl::StatusOr<std::unique_ptr<Database>> OpenStore(const std::string& url, const StoreOptions& options = {});

// Where a gateway anchors the audit head of the store at `url` (StoreOptions::anchor_path): beside a
// SQLite file ("<file>.head"); "<state_dir>/postgresql.head" for a PostgreSQL replica (each replica keeps
// the head it last saw: a database restored from a dump, or another database given under the same
// state_dir, is refused alike).
std::string AnchorPathFor(const std::string& url, const std::string& state_dir);

// The SQLite file of a "sqlite:<path>" URL or a bare path; "" for any other URL.
std::string SqlitePathOf(const std::string& url);
// Whether `url` names the PostgreSQL store (postgresql:// or postgres://).
bool IsPostgresUrl(const std::string& url);
// The database for messages and logs: the SQLite path, or PostgreSQL's host, port, database and user
// (never a password).
std::string DisplayName(const std::string& url);

}  // namespace osh::store
