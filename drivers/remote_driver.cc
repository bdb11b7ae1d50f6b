#include "drivers/remote_driver.h"

#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <grpcpp/create_channel_posix.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/grpc_status.h"

namespace osh::drivers {
namespace {

std::string ListOrNone(const std::vector<std::string>& items) {
  return items.empty() ? "(none)" : absl::StrCat("[", absl::StrJoin(items, ", "), "]");
}

}  // namespace

absl::StatusOr<uid_t> ResolveUser(const std::string& user) {
  uint32_t uid = 0;
  if (absl::SimpleAtoi(user, &uid)) return static_cast<uid_t>(uid);
  std::vector<char> buffer(16384);
  passwd entry{};
  passwd* found = nullptr;
  if (::getpwnam_r(user.c_str(), &entry, buffer.data(), buffer.size(), &found) != 0 || found == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("no user named '", user, "'"));
  }
  return found->pw_uid;
}

absl::Status CheckDriverSocket(const std::string& path, std::optional<uid_t> allowed_owner) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat("driver socket ", path, " does not exist"));
    return absl::FailedPreconditionError(absl::StrCat("driver socket ", path, ": ", std::strerror(errno)));
  }
  if (S_ISLNK(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat("driver socket ", path, " is a symlink; refusing to follow it"));
  }
  if (!S_ISSOCK(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat("driver socket ", path, " is not a socket"));
  }
  if (st.st_uid != ::geteuid() && st.st_uid != 0 && st.st_uid != allowed_owner) {
    return absl::FailedPreconditionError(absl::StrCat(
        "driver socket ", path, " is owned by uid ", st.st_uid, ", neither root, this process's user (", ::geteuid(),
        ")", allowed_owner ? absl::StrCat(", nor driver_socket_owner (", *allowed_owner, ")") : "",
        "; refusing it (set driver_socket_owner if the driver runs as that user)"));
  }
  if ((st.st_mode & S_IWOTH) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("driver socket ", path, " is writable by others (mode ", absl::StrFormat("%04o", st.st_mode & 07777), "); refusing it"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> ConnectCheckedChannel(const std::string& path,
                                                                     std::optional<uid_t> allowed_owner,
                                                                     std::chrono::system_clock::time_point deadline,
                                                                     absl::string_view what,
                                                                     absl::string_view owner_setting) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.size() >= sizeof(address.sun_path)) {
    return absl::FailedPreconditionError(absl::StrCat(what, " ", path, ": the path is too long for a socket"));
  }
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::UnavailableError(absl::StrCat(what, " ", path, ": socket: ", std::strerror(errno)));
  // A connect waits while the listener's backlog is full: no longer than the deadline (SO_SNDTIMEO bounds it).
  const auto left = std::max<int64_t>(
      1000, std::chrono::duration_cast<std::chrono::microseconds>(deadline - std::chrono::system_clock::now()).count());
  timeval timeout{};
  timeout.tv_sec = static_cast<time_t>(left / 1'000'000);
  timeout.tv_usec = static_cast<suseconds_t>(left % 1'000'000);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) {
    const int error = errno;
    ::close(fd);
    return absl::UnavailableError(absl::StrCat(what, " ", path, ": nothing answers (", std::strerror(error), ")"));
  }
  timeout = {};
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  ucred peer{};
  socklen_t size = sizeof(peer);
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &size) != 0) {
    const int error = errno;
    ::close(fd);
    return absl::UnavailableError(absl::StrCat(what, " ", path, ": SO_PEERCRED: ", std::strerror(error)));
  }
  if (peer.uid != ::geteuid() && peer.uid != 0 && peer.uid != allowed_owner) {
    ::close(fd);
    return absl::FailedPreconditionError(absl::StrCat(
        what, " ", path, " is served by process ", peer.pid, " as uid ", peer.uid, ", neither root, this process's user (",
        ::geteuid(), ")", allowed_owner ? absl::StrCat(", nor ", owner_setting, " (", *allowed_owner, ")") : "",
        "; refusing it (set ", owner_setting, " if it runs as that user)"));
  }
  grpc::ChannelArguments args;
  args.SetString(GRPC_ARG_DEFAULT_AUTHORITY, "localhost");  // what a channel to "unix:<path>" sent
  return grpc::CreateCustomInsecureChannelFromFd(path, fd, args);  // owns the descriptor
}

absl::Status CheckDriverHandle(absl::string_view handle) {
  if (handle.empty()) return absl::InternalError("AcquireHandle: the driver returned an empty handle");
  // A handle is stored and sent back verbatim: one that a store could not keep whole (a NUL byte) or that
  // would bloat every row is refused here, as a driver error (issue 25.8).
  if (handle.size() > kMaxDriverHandleBytes) {
    return absl::InternalError(absl::StrCat("AcquireHandle: the driver returned a handle of ", handle.size(),
                                            " bytes, at most ", kMaxDriverHandleBytes));
  }
  if (handle.find('\0') != absl::string_view::npos) {
    return absl::InternalError("AcquireHandle: the driver returned a handle with a NUL byte");
  }
  return absl::OkStatus();
}

absl::Status CheckCapabilities(const driver_v1::Capabilities& capabilities,
                               const std::vector<std::string>& accepted_surfaces) {
  // Bounded: the gateway copies them into status answers and logs, and asks them every second.
  if (capabilities.ByteSizeLong() > kMaxCapabilitiesBytes || capabilities.features_size() > kMaxCapabilityEntries ||
      capabilities.supported_surfaces_size() > kMaxCapabilityEntries ||
      capabilities.driver_name().size() > kMaxCapabilityNameBytes ||
      capabilities.driver_version().size() > kMaxCapabilityNameBytes) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the driver's capabilities are too large (", capabilities.ByteSizeLong(), " bytes, ",
        capabilities.features_size(), " features, ", capabilities.supported_surfaces_size(),
        " surfaces; at most ", kMaxCapabilitiesBytes, " bytes, ", kMaxCapabilityEntries, " of each, names of ",
        kMaxCapabilityNameBytes, " bytes)"));
  }
  auto control = [](const std::string& name) {
    return std::any_of(name.begin(), name.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; });
  };
  const bool names_clean = !control(capabilities.driver_name()) && !control(capabilities.driver_version()) &&
                           std::none_of(capabilities.features().begin(), capabilities.features().end(), control) &&
                           std::none_of(capabilities.supported_surfaces().begin(),
                                        capabilities.supported_surfaces().end(), control);
  if (!names_clean) {
    return absl::FailedPreconditionError(
        "the driver's name, version, a feature or a surface holds a control character (they are shown in status "
        "answers, audit events and logs)");
  }
  const std::vector<std::string> supported(capabilities.supported_surfaces().begin(),
                                           capabilities.supported_surfaces().end());
  if (capabilities.api_version() != 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        "driver '", capabilities.driver_name(), "' speaks api_version ", capabilities.api_version(),
        "; this gateway speaks 1 (driver surfaces ", ListOrNone(supported), ", accepted surfaces ",
        ListOrNone(accepted_surfaces), ")"));
  }
  for (const auto& surface : accepted_surfaces) {
    if (std::find(supported.begin(), supported.end(), surface) != supported.end()) return absl::OkStatus();
  }
  return absl::FailedPreconditionError(absl::StrCat("driver '", capabilities.driver_name(),
                                                    "' supports no accepted surface: driver supports ",
                                                    ListOrNone(supported), ", gateway accepts ",
                                                    ListOrNone(accepted_surfaces)));
}

namespace {

// What the gateway says of itself when it asks for a driver's capabilities (on connecting, and each probe).
driver_v1::GetCapabilitiesRequest CapabilitiesRequest(const RemoteDriverOptions& options) {
  driver_v1::GetCapabilitiesRequest request;
  request.set_gateway_version(options.gateway_version);
  for (const auto& s : options.accepted_surfaces) request.add_accepted_surfaces(s);
  return request;
}

}  // namespace

struct RemoteDriver::AsyncCalls {
  absl::Mutex mu;
  int64_t under_way ABSL_GUARDED_BY(mu) = 0;
  bool stopping ABSL_GUARDED_BY(mu) = false;
};

RemoteDriver::RemoteDriver(RemoteDriverOptions options)
    : options_(std::move(options)), async_calls_(std::make_shared<AsyncCalls>()) {}

absl::StatusOr<std::unique_ptr<RemoteDriver>> RemoteDriver::Start(RemoteDriverOptions options) {
  std::unique_ptr<RemoteDriver> driver(new RemoteDriver(std::move(options)));
  const auto deadline =
      std::chrono::system_clock::now() + std::chrono::milliseconds(driver->options_.connect_timeout_ms);
  absl::Status last;
  do {
    last = driver->Connect(deadline);
    if (last.ok()) break;
    // An unsafe socket or an incompatible driver is a misconfiguration, not an outage.
    if (absl::IsFailedPrecondition(last)) return last;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  } while (std::chrono::system_clock::now() < deadline);
  {
    absl::MutexLock lock(&driver->mu_);
    if (!last.ok()) driver->last_problem_ = std::string(last.message());
  }
  driver->monitor_ = std::thread([d = driver.get()] { d->Monitor(); });
  return driver;
}

RemoteDriver::~RemoteDriver() {
  Stop();
  // A channel still held elsewhere (by a call's callback finishing on one of gRPC's threads) would lose its
  // last reference there, which gRPC 1.51 cannot take (see SweepChannels): it is left alive instead, at the
  // end of the process's use of the driver.
  absl::MutexLock lock(&mu_);
  for (auto& channel : channels_) {
    if (channel.use_count() > 1) new std::shared_ptr<grpc::Channel>(std::move(channel));  // deliberately kept
  }
}

std::shared_ptr<void> RemoteDriver::HoldForAsyncCall() {
  std::shared_ptr<AsyncCalls> calls = async_calls_;
  {
    absl::MutexLock lock(&calls->mu);
    if (calls->stopping) return nullptr;
    ++calls->under_way;
  }
  // Let go when the last copy of the call's callbacks is destroyed (on whichever thread): only the shared
  // count is touched then, never this object.
  class Hold {
   public:
    explicit Hold(std::shared_ptr<AsyncCalls> calls) : calls_(std::move(calls)) {}
    Hold(const Hold&) = delete;
    Hold& operator=(const Hold&) = delete;
    ~Hold() {
      absl::MutexLock lock(&calls_->mu);
      --calls_->under_way;
    }

   private:
    const std::shared_ptr<AsyncCalls> calls_;
  };
  return std::make_shared<Hold>(std::move(calls));
}

void RemoteDriver::Stop() {
  AsyncCalls& calls = *async_calls_;
  {
    absl::MutexLock lock(&calls.mu);
    calls.stopping = true;  // from now on a new asynchronous call is refused (review 91: not after the join)
  }
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (monitor_.joinable()) monitor_.join();  // answers the calls waiting for a reconnect
  // An asynchronous call still under way would use this object after it is gone (its callback runs on one
  // of gRPC's threads): each is bounded by its deadlines (a call, a reconnect, the call once more).
  absl::MutexLock lock(&calls.mu);
  auto answered = [&calls]() ABSL_SHARED_LOCKS_REQUIRED(calls.mu) { return calls.under_way == 0; };
  calls.mu.AwaitWithTimeout(absl::Condition(&answered), absl::Milliseconds(3 * options_.call_timeout_ms + 1000));
}

int64_t RemoteDriver::async_calls_under_way() const {
  absl::MutexLock lock(&async_calls_->mu);
  return async_calls_->under_way;
}

void RemoteDriver::SetStateListener(StateListener listener) {
  absl::MutexLock lock(&mu_);
  listener_ = std::move(listener);
}

bool RemoteDriver::TryReconnect() {
  if (available()) return true;
  return Connect(std::chrono::system_clock::now() + std::chrono::milliseconds(options_.call_timeout_ms)).ok();
}

void RemoteDriver::Defer(News news) {
  if (!news.listener) return;
  absl::MutexLock lock(&mu_);
  deferred_.push_back(std::move(news));
}

int64_t RemoteDriver::connection_attempts() const {
  absl::MutexLock lock(&attempt_mu_);
  return attempts_started_;
}

absl::Status RemoteDriver::Connect(std::chrono::system_clock::time_point deadline, const Stub* replacing,
                                   bool tell_here) {
  {
    absl::MutexLock lock(&mu_);
    // Stopped: no new connection (nor news for a listener about to be let go) from work still draining.
    if (stopping_) {
      return absl::UnavailableError("the policy driver is not reachable: the gateway is stopping");
    }
  }
  for (bool joined_one = false;;) {
    {
      absl::MutexLock lock(&attempt_mu_);
      if (attempt_running_) {
        // Join the attempt under way: queueing a new one behind it would add a whole attempt per caller
        // to every admission that arrives while the driver is down (a storm of them timed out).
        const int64_t joined = attempts_started_;
        auto finished = [this, joined]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(attempt_mu_) { return attempts_finished_ >= joined; };
        attempt_mu_.Await(absl::Condition(&finished));
        const absl::Status outcome = last_attempt_;
        // An attempt that began long before this caller came may have run out just as the driver came
        // back (its channel waiting out a back-off): with at least half of its own time left, the caller
        // tries once more (its own attempt, or the one another such caller started).
        const auto left = deadline - std::chrono::system_clock::now();
        if (outcome.ok() || joined_one || absl::IsFailedPrecondition(outcome) ||
            left < std::chrono::milliseconds(options_.call_timeout_ms) / 2) {
          return outcome;
        }
        joined_one = true;
        continue;
      }
      if (replacing == nullptr) {
        if (available()) return absl::OkStatus();  // another attempt succeeded since the caller looked
      } else if (auto current = stub(); current != nullptr && current.get() != replacing) {
        return absl::OkStatus();  // the dead connection was replaced since the caller found it dead
      }
      attempt_running_ = true;
      ++attempts_started_;
    }
    News news;
    absl::Status status = Attempt(deadline, &news);
    // Only the attempt's owner says the driver is down: a caller that took an attempt's outcome could say
    // it after a later attempt succeeded.
    if (!status.ok()) news = SetDown(std::string(status.message()), nullptr, /*in_callback=*/false);
    {
      absl::MutexLock lock(&attempt_mu_);
      attempt_running_ = false;
      attempts_finished_ = attempts_started_;
      last_attempt_ = status;
    }
    // The listener (it audits, and delivers queued releases when the driver is back) is told after the
    // callers waiting for the attempt are let go: they do not wait for it. From within a call (which may
    // hold what the listener takes: the release queue's delivery), by the monitor thread.
    if (tell_here) {
      Tell(std::move(news));
    } else {
      Defer(std::move(news));
    }
    return status;
  }
}

absl::Status RemoteDriver::Attempt(std::chrono::system_clock::time_point deadline, News* news) {
  if (auto status = CheckDriverSocket(options_.socket_path, options_.socket_owner); !status.ok()) return status;
  // The whole attempt, capabilities included, within one call timeout.
  const auto attempt_deadline =
      std::min(deadline, std::chrono::system_clock::now() + std::chrono::milliseconds(options_.call_timeout_ms));
  // Connected here, its peer checked: the channel over this one connection never reconnects by itself (a
  // channel to the path would, to whatever listens there then, unchecked); a call that finds it dead
  // reconnects through here (ReconnectedAfter), and so does the monitor.
  auto connected = ConnectCheckedChannel(options_.socket_path, options_.socket_owner, attempt_deadline,
                                         "driver socket", "driver_socket_owner");
  if (!connected.ok()) return connected.status();
  std::shared_ptr<grpc::Channel> channel = *std::move(connected);
  {
    // Kept here until nothing else holds it, then let go on the monitor thread (SweepChannels): a channel
    // whose last reference drops on one of gRPC's callback threads shuts gRPC's callback queue down from
    // that very thread, which then frees what it still uses (gRPC 1.51, grpc/grpc#32584).
    absl::MutexLock lock(&mu_);
    channels_.push_back(channel);
  }
  auto stub = std::make_shared<Stub>(channel);
  const driver_v1::GetCapabilitiesRequest request = CapabilitiesRequest(options_);
  driver_v1::Capabilities capabilities;
  grpc::ClientContext ctx;
  ctx.set_deadline(attempt_deadline);
  if (grpc::Status status = stub->GetCapabilities(&ctx, request, &capabilities); !status.ok()) {
    return absl::UnavailableError(absl::StrCat("GetCapabilities: ", status.error_message()));
  }
  capabilities.DiscardUnknownFields();
  if (auto status = CheckCapabilities(capabilities, options_.accepted_surfaces); !status.ok()) return status;
  *news = SetUp(std::move(stub), capabilities,
                absl::StrCat("driver '", capabilities.driver_name(), "' ", capabilities.driver_version(),
                             " connected on ", options_.socket_path));
  return absl::OkStatus();
}

std::shared_ptr<RemoteDriver::Stub> RemoteDriver::stub() const {
  absl::MutexLock lock(&mu_);
  return stub_;
}

std::unique_ptr<grpc::ClientContext> RemoteDriver::CallContext() const {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(options_.call_timeout_ms));
  return ctx;
}

void RemoteDriver::SetCallObserver(CallObserver observer) {
  absl::MutexLock lock(&mu_);
  observer_ = std::move(observer);
}

void RemoteDriver::Observe(const char* method, const grpc::Status& status, absl::Time started) {
  CallObserver observer;
  {
    absl::MutexLock lock(&mu_);
    observer = observer_;
  }
  if (observer) observer(method, status.error_code(), absl::Now() - started);
}

RemoteDriver::News RemoteDriver::SetUp(std::shared_ptr<Stub> stub, const driver_v1::Capabilities& capabilities,
                                       std::string detail) {
  absl::MutexLock lock(&mu_);  // the stub and the state together: never available without a stub
  stub_ = std::move(stub);
  capabilities_ = capabilities;
  last_problem_.clear();
  if (available_.exchange(true)) return {};
  return News{listener_, true, std::move(detail), ++state_seq_};
}

RemoteDriver::News RemoteDriver::SetDown(std::string detail, const Stub* failed, bool in_callback) {
  absl::MutexLock lock(&mu_);
  // A call on a connection that a newer one has replaced says nothing about the newer one.
  if (failed != nullptr && stub_.get() != failed) return {};
  const bool was_available = available_.exchange(false);
  stub_.reset();
  if (!was_available && detail == last_problem_) return {};
  last_problem_ = detail;
  News news{listener_, false, std::move(detail), ++state_seq_};
  if (in_callback) {
    deferred_.push_back(std::move(news));  // the monitor wakes and tells the listener
    return {};
  }
  return news;
}

void RemoteDriver::Tell(News news) {
  if (!news.listener) return;
  {
    absl::MutexLock lock(&tell_mu_);
    if (news.seq <= told_seq_) return;  // a later change was told already: this one is history
    told_seq_ = news.seq;
  }
  news.listener(news.up, news.detail);
}

void RemoteDriver::MarkDown(const std::string& detail, bool in_callback, const Stub* failed) {
  Tell(SetDown(detail, failed, in_callback));
}

absl::Status RemoteDriver::CallFailed(const grpc::Status& status, const char* method, const Stub* used,
                                      bool in_callback) {
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
    MarkDown(absl::StrCat(method, ": ", status.error_message()), in_callback, used);
  }
  // The code and the driver's words only: its status details are not read, so that no ErrorInfo of a
  // driver's passes for this gateway's own reason (a `storage_error` would be scrubbed as the gateway's
  // database failing, and its text dropped).
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

void RemoteDriver::Monitor() {
  std::vector<Reconnect> reconnects;
  for (;;) {
    {
      std::vector<News> deferred;
      bool stop = false;
      {
        absl::MutexLock lock(&mu_);
        auto wake = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
          return stopping_ || !deferred_.empty() || !reconnects_.empty();
        };
        mu_.AwaitWithTimeout(absl::Condition(&wake), absl::Milliseconds(options_.probe_interval_ms));
        // Taken with the flag, in one critical section: an entry queued after this is answered by
        // ReconnectLater itself (it sees the flag), none is left behind.
        reconnects.swap(reconnects_);
        stop = stopping_;
        if (!stop) deferred.swap(deferred_);
      }
      SweepChannels();
      for (News& news : deferred) Tell(std::move(news));  // each dropped if a later change was told first
      if (!reconnects.empty()) {
        // Calls whose connection was found dead: each is made again on a new (checked) connection, or
        // answered with its failure; one probe and one reconnect per dead connection. None waits for the
        // next tick; none is left unanswered at a stop.
        std::map<const Stub*, std::shared_ptr<Stub>> fresh;
        for (Reconnect& reconnect : reconnects) {
          std::shared_ptr<Stub> retry_on;
          if (!stop) {
            auto [it, first] = fresh.try_emplace(reconnect.used.get());
            if (first) it->second = ReconnectedAfter(reconnect.used, reconnect.status);
            retry_on = it->second;
          }
          reconnect.retry(std::move(retry_on), /*reconnect_tried=*/true);
        }
        reconnects.clear();
        if (stop) return;
        continue;
      }
      if (stop) return;
      if (!deferred.empty()) continue;  // reconnect from the next tick, as after any other failure
    }
    if (!available()) {
      const auto deadline = std::chrono::system_clock::now() + std::chrono::milliseconds(options_.call_timeout_ms);
      Connect(deadline).IgnoreError();  // a failed attempt marks the driver down itself
      continue;
    }
    // Connected: probe, so a driver that died between calls is noticed without traffic.
    auto current = stub();
    if (current == nullptr) continue;
    const driver_v1::GetCapabilitiesRequest request = CapabilitiesRequest(options_);
    driver_v1::Capabilities capabilities;
    auto ctx = CallContext();
    grpc::Status status = current->GetCapabilities(ctx.get(), request, &capabilities);
    if (!status.ok()) {
      // The connection is dead or the driver does not answer: a new connection, checked, replaces it
      // quietly when one can be made (a driver that closes connections by age, say); down otherwise.
      const auto deadline = std::chrono::system_clock::now() + std::chrono::milliseconds(options_.call_timeout_ms);
      Connect(deadline, current.get()).IgnoreError();  // a failed attempt marks the driver down itself
      continue;
    }
    capabilities.DiscardUnknownFields();
    if (absl::Status compatible = CheckCapabilities(capabilities, options_.accepted_surfaces); !compatible.ok()) {
      MarkDown(std::string(compatible.message()), false, current.get());
      continue;
    }
    absl::MutexLock lock(&mu_);
    if (stub_ == current) capabilities_ = capabilities;  // not the answer of a connection replaced meanwhile
  }
}

void RemoteDriver::SweepChannels() {
  std::vector<std::shared_ptr<grpc::Channel>> unused;
  {
    absl::MutexLock lock(&mu_);
    for (auto it = channels_.begin(); it != channels_.end();) {
      // Held only here: a new reference is made only from one held elsewhere (a Stub, a ClientContext:
      // shared_from_this), so none can appear now and this is its last reference.
      if (it->use_count() == 1) {
        unused.push_back(std::move(*it));
        it = channels_.erase(it);
      } else {
        ++it;
      }
    }
  }
  // Let go here, on the monitor thread, with no lock held.
}

std::shared_ptr<RemoteDriver::Stub> RemoteDriver::ReconnectedAfter(const std::shared_ptr<Stub>& used,
                                                                   const grpc::Status& status) {
  if (status.error_code() != grpc::StatusCode::UNAVAILABLE || used == nullptr) return nullptr;
  {
    // Is the connection itself dead, or did the driver answer UNAVAILABLE? Asked on that connection.
    driver_v1::Capabilities ignored;
    auto ctx = CallContext();
    if (used->GetCapabilities(ctx.get(), CapabilitiesRequest(options_), &ignored).ok()) return nullptr;
  }
  // Replaced by a new connection, checked, when one can be made (quietly: the driver never looked down);
  // down otherwise. What the listener is to hear is told by the monitor thread (see Connect).
  if (!Connect(std::chrono::system_clock::now() + std::chrono::milliseconds(options_.call_timeout_ms), used.get(),
               /*tell_here=*/false)
           .ok()) {
    return nullptr;
  }
  auto fresh = stub();
  return fresh != nullptr && fresh != used ? fresh : nullptr;
}

void RemoteDriver::ReconnectLater(std::shared_ptr<Stub> used, grpc::Status status,
                                  std::function<void(std::shared_ptr<Stub>, bool)> retry) {
  bool stopping = false;
  {
    absl::MutexLock lock(&mu_);
    if (!stopping_ && reconnects_.size() < kMaxQueuedReconnects) {
      reconnects_.push_back(Reconnect{std::move(used), std::move(status), std::move(retry)});
      return;
    }
    stopping = stopping_;
  }
  // Stopping: answered with its failure. Too many waiting: answered "not reachable" without marking the
  // connection down (the reconnect the others wait for decides that).
  retry(nullptr, /*reconnect_tried=*/stopping);
}

void RemoteDriver::SendAsync(const char* method, std::shared_ptr<Stub> stub, Issue issue, Answered answered,
                             std::function<bool()> may_retry, bool retried) {
  if (stub == nullptr) {
    return answered(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the policy driver is not reachable"), nullptr, retried);
  }
  const absl::Time started = absl::Now();
  issue(stub, [this, method, stub, issue, answered = std::move(answered), may_retry = std::move(may_retry), retried,
               started](grpc::Status status) mutable {
    Observe(method, status, started);
    if (status.error_code() == grpc::StatusCode::UNAVAILABLE && !retried && may_retry()) {
      // Perhaps the connection died (a driver restarted): once more on a new one, made off this thread.
      return ReconnectLater(
          stub, status,
          [this, method, issue, answered, may_retry, status, stub](std::shared_ptr<Stub> fresh, bool reconnect_tried) {
            if (!reconnect_tried) return answered(status, nullptr, /*retried=*/false);
            // Asked again of the driver now connected (its capabilities may have changed).
            if (fresh == nullptr || !may_retry()) return answered(status, stub.get(), /*retried=*/false);
            SendAsync(method, std::move(fresh), issue, answered, may_retry, /*retried=*/true);
          });
    }
    answered(status, stub.get(), retried);
  });
}

absl::StatusOr<driver_v1::Capabilities> RemoteDriver::GetCapabilities() {
  absl::MutexLock lock(&mu_);
  if (!capabilities_) return absl::UnavailableError("the policy driver has never answered");
  return *capabilities_;
}

namespace {

// What the gateway takes of an AcquireHandle answer.
absl::StatusOr<std::string> CheckedHandle(driver_v1::AcquireHandleResponse& response) {
  if (absl::Status checked = CheckDriverHandle(response.handle()); !checked.ok()) return checked;
  return std::move(*response.mutable_handle());
}

absl::StatusOr<driver_v1::GetProjectionResponse> CheckedProjection(driver_v1::GetProjectionResponse& response) {
  if (!response.has_projection() && !response.has_no_verified_policy()) {
    return absl::InternalError("GetProjection: the driver returned neither a projection nor no_verified_policy");
  }
  return std::move(response);
}

// One asynchronous call's state, alive until its callback has run.
template <class Request, class Response>
struct AsyncCall {
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;  // one per attempt, kept until the call is over
  Request request;
  Response response;
};

}  // namespace

// A call on the current connection, and once more on a new one when that connection was found dead
// (ReconnectedAfter): the channel never reconnects by itself. The status of the last call; `*used` the stub
// it was made on (null: none, the driver is not reachable).
template <class Request, class Response, class Rpc>
grpc::Status RemoteDriver::CallWithReconnect(const char* method, const Request& request, Response* response, Rpc rpc,
                                             std::shared_ptr<Stub>* used, const std::function<bool()>& may_retry,
                                             bool* retried) {
  *retried = false;
  *used = stub();
  if (*used == nullptr) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the policy driver is not reachable");
  for (;;) {
    response->Clear();
    auto ctx = CallContext();
    const absl::Time started = absl::Now();
    grpc::Status status = rpc(**used, ctx.get(), request, response);
    Observe(method, status, started);
    if (status.ok() || *retried || !may_retry()) return status;
    auto fresh = ReconnectedAfter(*used, status);
    if (fresh == nullptr || !may_retry()) return status;  // asked again of the driver now connected
    *used = std::move(fresh);
    *retried = true;
  }
}

namespace {

// GetProjection made again on a new connection (the driver restarted) and answered NOT_FOUND: the restarted
// driver does not know the handle, which says the driver went away, not that the handle is wrong.
// (Applied to what CallFailed made of the driver's own answer: NOT_FOUND marks no connection down.)
absl::Status AfterRestart(absl::Status failed, bool retried) {
  if (!retried || failed.code() != absl::StatusCode::kNotFound) return failed;
  return absl::UnavailableError(
      absl::StrCat("the driver restarted and no longer knows the handle (", failed.message(), ")"));
}

}  // namespace

absl::StatusOr<std::string> RemoteDriver::AcquireHandle(const driver_v1::RuntimeContext& context,
                                                       const std::string& idempotency_key) {
  driver_v1::AcquireHandleRequest request;
  *request.mutable_context() = context;
  request.set_idempotency_key(idempotency_key);
  driver_v1::AcquireHandleResponse response;
  std::shared_ptr<Stub> used;
  bool retried = false;
  // Made again only where that cannot make a second handle: the driver honours the idempotency key (an
  // UNAVAILABLE may come after the driver kept a handle; the caller's re-acquire then releases it).
  const grpc::Status status = CallWithReconnect(
      "AcquireHandle", request, &response,
      [](Stub& stub, grpc::ClientContext* ctx, const auto& r, auto* out) { return stub.AcquireHandle(ctx, r, out); },
      &used, [&] { return !idempotency_key.empty() && honours_idempotency_key(); }, &retried);
  if (used == nullptr) return absl::UnavailableError("the policy driver is not reachable");
  if (!status.ok()) return CallFailed(status, "AcquireHandle", used.get());
  return CheckedHandle(response);
}

template <class Request, class Response, class Rpc>
void RemoteDriver::CallAsync(const char* method, Request request, Rpc rpc, std::function<bool()> may_retry,
                             std::function<void(absl::Status, Response&, bool retried)> finish) {
  std::shared_ptr<void> hold = HoldForAsyncCall();
  if (hold == nullptr) {
    Response none;
    return finish(absl::UnavailableError("the policy driver is not reachable: the gateway is stopping"), none, false);
  }
  auto call = std::make_shared<AsyncCall<Request, Response>>();
  call->request = std::move(request);
  SendAsync(
      method, stub(),
      [this, call, rpc](const std::shared_ptr<Stub>& stub, std::function<void(grpc::Status)> sent) {
        call->contexts.push_back(CallContext());
        call->response.Clear();
        rpc(*stub->async(), call->contexts.back().get(), &call->request, &call->response, std::move(sent));
      },
      [this, method, call, finish = std::move(finish), hold](const grpc::Status& status, const Stub* used,
                                                             bool retried) {
        if (used == nullptr) {
          return finish(absl::UnavailableError("the policy driver is not reachable"), call->response, retried);
        }
        finish(status.ok() ? absl::OkStatus() : CallFailed(status, method, used, /*in_callback=*/true), call->response,
               retried);
      },
      std::move(may_retry), /*retried=*/false);
}

void RemoteDriver::AcquireHandleAsync(const driver_v1::RuntimeContext& context, const std::string& idempotency_key,
                                      HandleDone done) {
  driver_v1::AcquireHandleRequest request;
  *request.mutable_context() = context;
  request.set_idempotency_key(idempotency_key);
  CallAsync<driver_v1::AcquireHandleRequest, driver_v1::AcquireHandleResponse>(
      "AcquireHandle", std::move(request),
      [](auto& async, grpc::ClientContext* ctx, const auto* r, auto* out, std::function<void(grpc::Status)> sent) {
        async.AcquireHandle(ctx, r, out, std::move(sent));
      },
      // As AcquireHandle: made again only where no second handle can result.
      [this, keyed = !idempotency_key.empty()] { return keyed && honours_idempotency_key(); },
      [done = std::move(done)](absl::Status status, driver_v1::AcquireHandleResponse& response, bool /*retried*/) {
        if (!status.ok()) return done(std::move(status));
        done(CheckedHandle(response));
      });
}

absl::StatusOr<driver_v1::GetProjectionResponse> RemoteDriver::GetProjection(const std::string& handle,
                                                                            const std::string& surface_id) {
  driver_v1::GetProjectionRequest request;
  request.set_handle(handle);
  request.set_surface_id(surface_id);
  driver_v1::GetProjectionResponse response;
  std::shared_ptr<Stub> used;
  bool retried = false;
  const grpc::Status status = CallWithReconnect(
      "GetProjection", request, &response,
      [](Stub& stub, grpc::ClientContext* ctx, const auto& r, auto* out) { return stub.GetProjection(ctx, r, out); },
      &used, [] { return true; }, &retried);
  if (used == nullptr) return absl::UnavailableError("the policy driver is not reachable");
  if (!status.ok()) return AfterRestart(CallFailed(status, "GetProjection", used.get()), retried);
  return CheckedProjection(response);
}

void RemoteDriver::GetProjectionAsync(const std::string& handle, const std::string& surface_id, ProjectionDone done) {
  driver_v1::GetProjectionRequest request;
  request.set_handle(handle);
  request.set_surface_id(surface_id);
  CallAsync<driver_v1::GetProjectionRequest, driver_v1::GetProjectionResponse>(
      "GetProjection", std::move(request),
      [](auto& async, grpc::ClientContext* ctx, const auto* r, auto* out, std::function<void(grpc::Status)> sent) {
        async.GetProjection(ctx, r, out, std::move(sent));
      },
      [] { return true; },
      [done = std::move(done)](absl::Status status, driver_v1::GetProjectionResponse& response, bool retried) {
        if (!status.ok()) return done(AfterRestart(std::move(status), retried));
        done(CheckedProjection(response));
      });
}

absl::Status RemoteDriver::ReleaseHandle(const std::string& handle) {
  driver_v1::ReleaseHandleRequest request;
  request.set_handle(handle);
  driver_v1::ReleaseHandleResponse response;
  std::shared_ptr<Stub> used;
  bool retried = false;
  const grpc::Status status = CallWithReconnect(
      "ReleaseHandle", request, &response,
      [](Stub& stub, grpc::ClientContext* ctx, const auto& r, auto* out) { return stub.ReleaseHandle(ctx, r, out); },
      &used, [] { return true; }, &retried);
  if (used == nullptr) return absl::UnavailableError("the policy driver is not reachable");
  if (status.ok() || status.error_code() == grpc::StatusCode::NOT_FOUND) return absl::OkStatus();
  return CallFailed(status, "ReleaseHandle", used.get());
}

}  // namespace osh::drivers
