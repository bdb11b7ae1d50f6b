// `audit_syslog = true` (docs/audit.md, "To syslog"): every audit event committed while the gateway runs is
// sent to the local syslog as one RFC 5424 line with the event as structured data, over the Unix datagram
// socket `audit_syslog_socket` (/dev/log: journald or rsyslog). It follows the chain through an AuditFeed
// subscription from the head at start (events committed while the gateway was down are not sent: export or
// tail them), resuming after its last seq if it ever lags. Sending never blocks the gateway: a datagram the
// socket does not take at once is dropped, and the first failure (and each 1000th) is logged.
#pragma once

#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "gateway/core/audit_feed.h"
#include "openshell/policy/gateway/v1/gateway.pb.h"

namespace osh::gateway {

// The RFC 5424 line of one event: `<PRI>1 TIME HOST policy-gateway PID audit [openshell@32473 seq="…"
// type="…" outcome="…" sandbox_id="…" policy_digest="…" policy_version="…" actor="…" hash="…"] reason`.
// Facility authpriv; severity info, or warning for the outcomes refused, failed, kept_last_good and
// unavailable. Parameter values escape `"`, `\` and `]` (RFC 5424 §6.3.3).
std::string SyslogLine(const openshell::policy::gateway::v1::AuditEvent& event, const std::string& hostname, int pid);

class AuditSyslog {
 public:
  // Subscribes to `feed` from the chain's head in `log` (both must outlive this) and starts sending.
  // Errors: the feed's refusals; INTERNAL when no datagram socket can be made.
  static absl::StatusOr<std::unique_ptr<AuditSyslog>> Start(AuditFeed* feed, store::AuditLog* log,
                                                            std::string socket_path);
  ~AuditSyslog();  // stops sending and unsubscribes
  AuditSyslog(const AuditSyslog&) = delete;
  AuditSyslog& operator=(const AuditSyslog&) = delete;

 private:
  AuditSyslog(AuditFeed* feed, std::string socket_path, int fd);
  void Run(uint64_t after_seq);
  void Send(const std::string& line);
  bool Due() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return woken_ || stopping_; }

  AuditFeed* const feed_;
  const std::string socket_path_;
  const int fd_;
  const std::string hostname_;
  mutable absl::Mutex mu_;
  bool woken_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t failures_ = 0;  // the sending thread only
  std::thread thread_;
};

}  // namespace osh::gateway
