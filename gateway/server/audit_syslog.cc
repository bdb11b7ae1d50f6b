#include "gateway/server/audit_syslog.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/errors.h"
#include "gateway/core/log.h"

namespace osh::gateway {
namespace {

constexpr int kFacilityAuthpriv = 10;
constexpr int kSeverityWarning = 4, kSeverityInfo = 6;

// An RFC 5424 PARAM-VALUE: `"`, `\` and `]` escaped with a backslash.
std::string SdValue(const std::string& value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '"' || c == '\\' || c == ']') out += '\\';
    out += c;
  }
  return out;
}

std::string Hostname() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0 || name[0] == '\0') return "-";
  return name;
}

}  // namespace

std::string SyslogLine(const openshell::policy::gateway::v1::AuditEvent& e, const std::string& hostname, int pid) {
  const bool failure = e.outcome() == "refused" || e.outcome() == "failed" || e.outcome() == "kept_last_good" ||
                       e.outcome() == "unavailable";
  const int pri = kFacilityAuthpriv * 8 + (failure ? kSeverityWarning : kSeverityInfo);
  const std::string time = absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::FromUnixMillis(e.time_unix_ms()),
                                            absl::UTCTimeZone());
  std::string line = absl::StrCat("<", pri, ">1 ", time, " ", hostname, " policy-gateway ", pid, " audit [openshell@32473");
  auto param = [&line](const char* name, const std::string& value) {
    absl::StrAppend(&line, " ", name, "=\"", SdValue(value), "\"");
  };
  param("seq", absl::StrCat(e.seq()));
  param("type", e.type());
  param("outcome", e.outcome());
  param("sandbox_id", e.sandbox_id());
  param("policy_digest", e.policy_digest());
  param("policy_version", absl::StrCat(e.policy_version()));
  param("actor", e.actor());
  param("hash", e.hash());
  absl::StrAppend(&line, "]");
  if (!e.reason().empty()) absl::StrAppend(&line, " ", e.reason());
  return line;
}

absl::StatusOr<std::unique_ptr<AuditSyslog>> AuditSyslog::Start(AuditFeed* feed, store::AuditLog* log,
                                                                std::string socket_path) {
  const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("audit_syslog: socket: ", std::strerror(errno)));
  std::unique_ptr<AuditSyslog> out(new AuditSyslog(feed, std::move(socket_path), fd));
  const uint64_t head = log->AuditChainHead().seq;
  out->thread_ = std::thread([sender = out.get(), head] { sender->Run(head); });
  return out;
}

AuditSyslog::AuditSyslog(AuditFeed* feed, std::string socket_path, int fd)
    : feed_(feed), socket_path_(std::move(socket_path)), fd_(fd), hostname_(Hostname()) {}

AuditSyslog::~AuditSyslog() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
  ::close(fd_);
}

void AuditSyslog::Send(const std::string& line) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (socket_path_.size() >= sizeof address.sun_path) return;
  std::memcpy(address.sun_path, socket_path_.data(), socket_path_.size());
  if (::sendto(fd_, line.data(), line.size(), MSG_DONTWAIT | MSG_NOSIGNAL, reinterpret_cast<const sockaddr*>(&address),
               sizeof address) >= 0) {
    return;
  }
  if (SampledForLog(++failures_)) {
    LogWarning(absl::StrCat("audit_syslog: cannot send to ", socket_path_, ": ", std::strerror(errno), " (", failures_,
                            " event(s) not sent so far)"));
  }
}

void AuditSyslog::Run(uint64_t after_seq) {
  const int pid = static_cast<int>(::getpid());
  std::shared_ptr<AuditSubscription> subscription;
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) break;
    }
    if (subscription == nullptr) {
      auto subscribed = feed_->Subscribe(after_seq, [this] {
        absl::MutexLock lock(&mu_);
        woken_ = true;
      });
      if (!subscribed.ok()) {
        if (common::ReasonOf(subscribed.status()) == "gateway_stopping") break;
        absl::MutexLock lock(&mu_);  // the stream limit: try again in a while
        mu_.AwaitWithTimeout(absl::Condition(&stopping_), absl::Seconds(1));
        continue;
      }
      subscription = *std::move(subscribed);
    }
    AuditSubscription::Next next = subscription->Take();
    if (next.event != nullptr) {
      Send(SyslogLine(*next.event, hostname_, pid));
      after_seq = next.event->seq();
      continue;
    }
    if (!next.end.ok()) {  // lagging: resume after the last one sent; stopping: done
      feed_->Unsubscribe(subscription);
      subscription.reset();
      if (common::ReasonOf(next.end) == "gateway_stopping") break;
      continue;
    }
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(this, &AuditSyslog::Due), absl::Milliseconds(500));
    woken_ = false;
  }
  if (subscription != nullptr) feed_->Unsubscribe(subscription);
}

}  // namespace osh::gateway
