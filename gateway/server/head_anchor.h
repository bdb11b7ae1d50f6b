// Rollback detection: the audit chain's head (seq and hash) is recorded in "<database>.head" beside a
// SQLite file, or "<state_dir>/postgresql.head" for a PostgreSQL replica, outside the database, after changes (at most a second late) and at stop. At start
// the database must still contain that event with that hash: a database restored from an older copy
// (which would bring deleted sandboxes back, their revoked handles working again) has a shorter chain or
// a different event there, and the gateway refuses to serve it until an operator confirms with
// --accept-state-rollback (audited). Thread-safe.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "store/store.h"

namespace osh::gateway {

class HeadAnchor {
 public:
  // `store` must outlive the anchor; the record is "<database_path>.head".
  HeadAnchor(store::Store* store, std::string database_path)
      : store_(store), path_(std::move(database_path) + ".head") {}

  // OK when there is no record yet or the database still holds the recorded head; FAILED_PRECONDITION
  // explaining the rollback (recorded seq and hash, what the database has) otherwise.
  absl::Status Check();
  // Writes the current head if it moved since the last record (atomically: temp file, rename).
  void Record();

  const std::string& path() const { return path_; }

 private:
  store::Store* const store_;
  const std::string path_;
  absl::Mutex mu_;
  uint64_t recorded_seq_ ABSL_GUARDED_BY(mu_) = UINT64_MAX;
};

}  // namespace osh::gateway
