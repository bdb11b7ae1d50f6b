// The gateway's Prometheus metrics (docs/policy-gateway.md, "Metrics"). Counters and latency histograms
// are updated where things happen (the admin service, the sandbox service, the remote driver); gauges
// are read at scrape time from a Snapshot the caller fills. Render() writes the text exposition format
// (version 0.0.4). Thread-safe: updates take a short lock; a scrape copies under it.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include "absl/strings/string_view.h"
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace osh::gateway {

class Metrics {
 public:
  // What is read at scrape time.
  struct Snapshot {
    uint64_t admitted_sandboxes = 0;
    uint64_t watchers = 0;
    bool driver_up = false;
    uint64_t pending_releases = 0;
    uint64_t reprojections_pending = 0;
    uint64_t refresh_errors = 0;
    uint64_t revoked_sandboxes = 0;
    uint64_t possibly_leaked_handles = 0;
    uint64_t audit_head_seq = 0;
    uint64_t store_transactions = 0;  // commits (each one fsync), and the writes they carried
    uint64_t store_writes = 0;
    bool database_reachable = true;
    uint32_t live_replicas = 1;  // gateways sharing the database whose heartbeat is fresh
    uint64_t feed_changes_behind = 0;  // changes this replica's feed has not read (0 for SQLite)
    uint64_t feed_read_age_ms = 0;     // since this replica's feed last read the database
    struct Key {
      std::string key_id;
      int64_t not_after_unix = 0;  // 0: none
      bool revoked = false;
    };
    std::vector<Key> trust_keys;
    std::vector<std::pair<std::string, uint64_t>> sandboxes_by_drift;  // drift state name -> sandboxes
    uint64_t audit_streams = 0;  // open WatchAuditEvents streams
  };

  Metrics();

  // An admin call finished: `method` is the RPC name ("AdmitSandbox"). Admissions are also counted by
  // outcome (admitted | refused | error) and reason (the refusal's reason code, or its status code in
  // lower case when it has none, e.g. "already_exists").
  void ObserveAdminCall(absl::string_view method, const absl::Status& status, absl::Duration took);
  // A sandbox's GetProjection, WatchProjection start or ReportPolicyStatus: `call` names it, `code` is
  // the gRPC code name ("OK", "UNAUTHENTICATED", ...).
  void ObserveSandboxCall(absl::string_view call, absl::string_view code);
  // A watch stream (WatchProjection, WatchServedProjection) that ran ended: `reason` the refusal's reason
  // code (watch_limit: a newer watch took its place; slow_reader; gateway_stopping; key_revoked, …) or the
  // status code in lower case (cancelled: the client went away; unauthenticated: the handle was revoked).
  void ObserveWatchEnd(absl::string_view reason);
  // An ended watch stream whose reader took nothing for watch_stall_s was cancelled.
  void ObserveWatchStallCancel();
  // A call to the policy driver (AcquireHandle, GetProjection, ReleaseHandle).
  void ObserveDriverCall(absl::string_view method, absl::string_view code, absl::Duration took);

  // An interceptor call (docs/openshell-interceptor.md): `method` the intercepted RPC ("CreateSandbox") or
  // "Describe" / "SnapshotProviderProfiles", `phase` ("modify_operation", "validate", ... or "" for those),
  // `decision` ("allow", "deny", "unauthenticated", "ok", "unimplemented").
  void ObserveInterceptorCall(absl::string_view method, absl::string_view phase, absl::string_view decision,
                              absl::Duration took);

  // A finished push of admit mode (OpenShellPush): `outcome` "accepted", "refused" or "retried".
  void ObserveInterceptorPush(absl::string_view outcome);

  // A store transaction committed (made durable) in `took`.
  void ObserveStoreCommit(absl::Duration took);

  std::string Render(const Snapshot& snapshot) const;

 private:
  struct Histogram {
    std::vector<uint64_t> buckets;  // cumulative counts are computed when rendering
    uint64_t count = 0;
    double sum = 0;
  };
  using Labels = std::vector<std::pair<std::string, std::string>>;
  void Observe(std::map<Labels, Histogram>* histograms, const Labels& labels, double seconds)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const absl::Time started_;
  mutable absl::Mutex mu_;
  std::map<Labels, uint64_t> admin_calls_ ABSL_GUARDED_BY(mu_);
  std::map<Labels, Histogram> admin_latency_ ABSL_GUARDED_BY(mu_);
  std::map<Labels, uint64_t> admissions_ ABSL_GUARDED_BY(mu_);
  std::map<Labels, uint64_t> sandbox_calls_ ABSL_GUARDED_BY(mu_);
  std::map<Labels, uint64_t> watch_ends_ ABSL_GUARDED_BY(mu_);
  uint64_t watch_stall_cancels_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<Labels, uint64_t> driver_calls_ ABSL_GUARDED_BY(mu_);
  std::map<Labels, Histogram> driver_latency_ ABSL_GUARDED_BY(mu_);
  std::map<Labels, Histogram> store_commit_latency_ ABSL_GUARDED_BY(mu_);
  std::map<Labels, uint64_t> interceptor_calls_ ABSL_GUARDED_BY(mu_);
  std::map<Labels, Histogram> interceptor_latency_ ABSL_GUARDED_BY(mu_);
  std::map<Labels, uint64_t> interceptor_pushes_ ABSL_GUARDED_BY(mu_);
};

}  // namespace osh::gateway
