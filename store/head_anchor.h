// Rollback detection: the audit chain's head (seq and hash) is recorded in a file outside the database
// ("<database>.head" beside a SQLite file, "<state_dir>/postgresql.head" for a PostgreSQL replica), after
// changes (at most a second late) and when the store closes. When the store opens, the database must
// still contain that event with that hash: a database restored from an older copy (which would bring
// deleted sandboxes back, their revoked handles working again) has a shorter chain or a different event
// there, and the store refuses to open until an operator confirms (StoreOptions::accept_state_rollback,
// audited). Owned by the store it watches (open_store.h); thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"

namespace osh::store {

class AuditLog;
struct StoreOptions;

class HeadAnchor {
 public:
  // `log` must outlive the anchor; `path` is the record's file; `notice` (may be empty) is told of a
  // record that cannot be written.
  HeadAnchor(AuditLog* log, std::string path, std::function<void(const std::string&)> notice)
      : log_(log), path_(std::move(path)), notice_(std::move(notice)) {}
  // Stops the recording thread (if started) and records the final head.
  ~HeadAnchor();

  // OK when there is no record yet or the database still holds the recorded head; FAILED_PRECONDITION
  // "state_rollback: ..." explaining the rollback (recorded seq and hash, what the database has) otherwise.
  absl::Status Check();
  // Writes the current head if it moved since the last record (atomically: temp file, rename; 0600) —
  // unless the event recorded last is no longer in the chain as recorded (the database was rolled back or
  // forked under the gateway): then the record stays for good, and `notice` says so once.
  void Record();
  // Records now and then every second until destruction. Call once, after Check passed (or was accepted).
  void StartRecording();

  const std::string& path() const { return path_; }

 private:
  AuditLog* const log_;
  const std::string path_;
  const std::function<void(const std::string&)> notice_;
  absl::Mutex mu_;
  uint64_t recorded_seq_ ABSL_GUARDED_BY(mu_) = UINT64_MAX;  // UINT64_MAX: nothing recorded by this process yet
  std::string recorded_hash_ ABSL_GUARDED_BY(mu_);
  bool forked_ ABSL_GUARDED_BY(mu_) = false;
  absl::Notification stop_;
  std::thread thread_;
};

// For a store just opened with `options`: nothing when options.anchor_path is empty; else checks the
// anchor (refusing a rollback unless accepted: then audited and told to options.notice) and starts
// recording. The anchor returned must be destroyed before `log`.
absl::StatusOr<std::unique_ptr<HeadAnchor>> AnchorOpenedStore(AuditLog* log, const StoreOptions& options);

}  // namespace osh::store
