// The remote driver: the PolicyDriver contract of SPEC §3 spoken over a Unix socket to an operator-run
// process. Fail-closed: while the driver is unreachable, available() is false and every call answers
// UNAVAILABLE at once; a background monitor reconnects (re-checking the socket file and capabilities
// each time) and reports every change of state to the listener.
//
// Thread-safe. The monitor thread runs from Start() until destruction.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "drivers/policy_driver.h"
#include "openshell/policy/driver/v1/driver.grpc.pb.h"

namespace osh::drivers {

struct RemoteDriverOptions {
  std::string socket_path;
  std::optional<uid_t> socket_owner;   // may own the socket besides root and this process's user
  int64_t connect_timeout_ms = 30000;  // start-up: keep trying this long before starting degraded
  int64_t call_timeout_ms = 5000;      // the deadline of every driver call
  int64_t probe_interval_ms = 1000;    // how often a connected driver is probed, and a lost one retried
  std::vector<std::string> accepted_surfaces;
  std::string gateway_version;
};

// Checks the socket file before any connection: NOT_FOUND when it does not exist (yet);
// FAILED_PRECONDITION when it is a symlink, not a socket, owned by a user other than this process's or
// root, or writable by others.
absl::Status CheckDriverSocket(const std::string& path, std::optional<uid_t> allowed_owner = std::nullopt);

// A channel over one connection to the Unix socket at `path`, made here and checked: the process that
// accepted it (its SO_PEERCRED uid, fixed when it listened) is root, this process's user or
// `allowed_owner`, so a process that bound the path after a check of the file (or between two checks) is
// refused. The channel never reconnects by itself: a new connection is made (and checked) through here.
// UNAVAILABLE when nothing accepts before `deadline`, FAILED_PRECONDITION naming the peer's uid otherwise.
// `what` names the socket in messages ("driver socket"), `owner_setting` the setting that names the other
// user allowed ("driver_socket_owner"). Used for every Unix socket this gateway calls.
absl::StatusOr<std::shared_ptr<grpc::Channel>> ConnectCheckedChannel(const std::string& path,
                                                                     std::optional<uid_t> allowed_owner,
                                                                     std::chrono::system_clock::time_point deadline,
                                                                     absl::string_view what,
                                                                     absl::string_view owner_setting);

// A user name or a numeric uid, as a uid; INVALID_ARGUMENT naming it when there is no such user.
absl::StatusOr<uid_t> ResolveUser(const std::string& user);

// Bounds on a driver's GetCapabilities answer (CheckCapabilities refuses one past them).
inline constexpr size_t kMaxCapabilitiesBytes = 64 * 1024;
inline constexpr int kMaxCapabilityEntries = 256;        // features, and supported surfaces
inline constexpr size_t kMaxCapabilityNameBytes = 256;   // driver_name, driver_version

// api_version must be 1 and supported_surfaces must meet accepted_surfaces; otherwise
// FAILED_PRECONDITION naming both lists.
absl::Status CheckCapabilities(const driver_v1::Capabilities& capabilities,
                               const std::vector<std::string>& accepted_surfaces);

// The longest driver handle the gateway keeps; a longer one, or one with a NUL byte, is a driver error.
inline constexpr size_t kMaxDriverHandleBytes = 4096;
// OK for a handle the gateway keeps; else INTERNAL "AcquireHandle: …" saying why (empty, too long, a NUL
// byte). The one rule: the gateway's client and the conformance harness ask it.
absl::Status CheckDriverHandle(absl::string_view handle);

class RemoteDriver final : public PolicyDriver {
 public:
  // Called on every change of state (true = available) with a human-readable reason, and again while
  // unavailable whenever the reason changes (e.g. the socket appeared but is unsafe). Called from the
  // monitor thread or from the thread whose call found the driver gone; never with a lock held.
  using StateListener = std::function<void(bool available, const std::string& detail)>;

  // Connects with retry until connect_timeout_ms and checks capabilities. Errors mean the daemon must not
  // start: an unsafe socket file, or an incompatible driver (wrong api_version, no surface overlap).
  // A driver that is merely unreachable is not an error: it starts unavailable and keeps retrying.
  static absl::StatusOr<std::unique_ptr<RemoteDriver>> Start(RemoteDriverOptions options);
  ~RemoteDriver() override;  // Stop()s

  // Refuses new asynchronous calls (answered UNAVAILABLE at once, on the calling thread) and new
  // connections, stops and joins the monitor (no listener call starts from it afterwards), then waits for
  // the asynchronous calls under way to be answered and let go (each is bounded by its deadlines: at most
  // 3 × call_timeout_ms + 1 s is waited; async_calls_under_way() says whether any outlived that).
  // Idempotent. Never from a driver call's callback (it would wait out the bound for its own call) or the
  // state listener (the monitor cannot join itself).
  void Stop();
  // Asynchronous calls whose callbacks have not all been let go yet. Thread-safe.
  int64_t async_calls_under_way() const;

  // Replaces the listener (it is not called for the state at the time of the call).
  void SetStateListener(StateListener listener);

  // Called after each AcquireHandle, GetProjection and ReleaseHandle call that reached the wire, with the
  // method, its status code and how long it took (for metrics). Replaces any earlier observer.
  using CallObserver = std::function<void(const char* method, grpc::StatusCode code, absl::Duration took)>;
  void SetCallObserver(CallObserver observer);

  std::string kind() const override { return "remote"; }
  absl::StatusOr<driver_v1::Capabilities> GetCapabilities() override;
  absl::StatusOr<std::string> AcquireHandle(const driver_v1::RuntimeContext& context,
                                            const std::string& idempotency_key) override;
  absl::StatusOr<driver_v1::GetProjectionResponse> GetProjection(const std::string& handle,
                                                                const std::string& surface_id) override;
  void AcquireHandleAsync(const driver_v1::RuntimeContext& context, const std::string& idempotency_key,
                          HandleDone done) override;
  void GetProjectionAsync(const std::string& handle, const std::string& surface_id, ProjectionDone done) override;
  absl::Status ReleaseHandle(const std::string& handle) override;
  bool available() const override { return available_.load(); }
  // One connection attempt (bounded by call_timeout_ms), unless one is running: a caller arriving during
  // an attempt (the monitor's or another caller's) waits for it and takes its outcome, so N callers while
  // the driver is down wait for at most one attempt each, never for a queue of them.
  bool TryReconnect() override;

  // How many connection attempts have started (for tests and diagnostics). Thread-safe.
  int64_t connection_attempts() const;

 private:
  explicit RemoteDriver(RemoteDriverOptions options);
  using Stub = driver_v1::PolicyDriver::Stub;

  // A connection attempt, or the outcome of the one running when called (see TryReconnect). `replacing`:
  // the connection a caller found dead — a new one replaces it (quietly while the driver is available)
  // unless it was replaced already; null: connect only when not available. `tell_here` false: the
  // listener hears of it from the monitor thread (Defer), not from the caller's.
  absl::Status Connect(std::chrono::system_clock::time_point deadline, const driver_v1::PolicyDriver::Stub* replacing = nullptr,
                       bool tell_here = true);
  // A change of state for the listener, told after the locks are let go. `seq` orders the changes: news
  // older than news already told is dropped (a listener never hears "down" after the "up" that followed).
  struct News {
    StateListener listener;  // empty: nothing to tell
    bool up = false;
    std::string detail;
    int64_t seq = 0;
  };
  // The attempt itself: socket check, a channel over one connection made and checked here
  // (ConnectCheckedChannel: it never reconnects by itself), and capabilities asked, all before `deadline` and within call_timeout_ms. On success, `news` is what to
  // tell.
  absl::Status Attempt(std::chrono::system_clock::time_point deadline, News* news);
  // After a call on `used` failed with `status`: when it is UNAVAILABLE and `used`'s connection is dead (a
  // probe on it fails too; the driver restarted, say), a new connection (Connect, checked) replaces it: the
  // stub to call once more on. Null otherwise (the connection answers — the driver itself said UNAVAILABLE
  // — or no new connection could be made: the driver is then down). Blocks up to two call timeouts; the
  // listener is told by the monitor thread.
  std::shared_ptr<driver_v1::PolicyDriver::Stub> ReconnectedAfter(
      const std::shared_ptr<driver_v1::PolicyDriver::Stub>& used, const grpc::Status& status);
  // A call made on `stub` by `issue` (which starts it and has `sent` called with its status), answered by
  // `answered` (on any thread) with its status and the stub it was made on; a call that fails UNAVAILABLE
  // is made once more when ReconnectedAfter finds another connection (on the monitor thread: a gRPC
  // callback must not block).
  using Issue = std::function<void(const std::shared_ptr<driver_v1::PolicyDriver::Stub>& stub,
                                   std::function<void(grpc::Status)> sent)>;
  // `retried`: the status is the second call's (on a new connection). SendAsync's `retried` true at the
  // start: made once only.
  using Answered = std::function<void(const grpc::Status& status, const driver_v1::PolicyDriver::Stub* used,
                                      bool retried)>;
  // `may_retry`: whether a call failed UNAVAILABLE may be made again (asked before the reconnect and again
  // of the driver connected after it).
  void SendAsync(const char* method, std::shared_ptr<driver_v1::PolicyDriver::Stub> stub, Issue issue,
                 Answered answered, std::function<bool()> may_retry, bool retried);
  // An asynchronous call (SendAsync) that holds this object until its callbacks are gone (Stop waits for
  // it): `rpc(async stub, context, request, response, sent)` starts it; `finish` is called once, on any
  // thread, with its status as a blocking call's (CallFailed; UNAVAILABLE "not reachable" when no
  // connection was there, "… the gateway is stopping" after Stop), the response, and whether it was made
  // again on a new connection.
  template <class Request, class Response, class Rpc>
  void CallAsync(const char* method, Request request, Rpc rpc, std::function<bool()> may_retry,
                 std::function<void(absl::Status, Response&, bool retried)> finish);
  // A blocking call with one retry on a new connection (ReconnectedAfter); see remote_driver.cc.
  template <class Request, class Response, class Rpc>
  grpc::Status CallWithReconnect(const char* method, const Request& request, Response* response, Rpc rpc,
                                 std::shared_ptr<driver_v1::PolicyDriver::Stub>* used,
                                 const std::function<bool()>& may_retry, bool* retried);
  // `news` told by the monitor thread.
  void Defer(News news);
  // Lets go of the channels nothing else holds (on the monitor thread).
  void SweepChannels();
  // Calls waiting for the monitor to reconnect: past this many, a call is answered with its failure at once.
  static constexpr size_t kMaxQueuedReconnects = 1024;
  // Has the monitor thread call `retry` with ReconnectedAfter(used, status); with nullptr at once
  // when the driver is stopping.
  // `reconnect_tried` false: answered without a reconnect (too many waiting), "not reachable".
  void ReconnectLater(std::shared_ptr<driver_v1::PolicyDriver::Stub> used, grpc::Status status,
                      std::function<void(std::shared_ptr<driver_v1::PolicyDriver::Stub>, bool reconnect_tried)> retry);
  std::shared_ptr<Stub> stub() const;
  std::unique_ptr<grpc::ClientContext> CallContext() const;
  // Interprets a failed call made on `used`: UNAVAILABLE means the driver is gone (unless a newer
  // connection has replaced `used` meanwhile).
  // `in_callback`: on one of gRPC's callback threads (an async call), which must not block: the state
  // listener (it audits, writing the store) is then told by the monitor thread.
  absl::Status CallFailed(const grpc::Status& status, const char* method, const Stub* used, bool in_callback = false);
  // Unavailable, stub dropped; with `failed`, only while that is still the current connection. What to
  // tell, or nothing (no change, or left for the monitor to tell when `in_callback`).
  News SetDown(std::string detail, const Stub* failed, bool in_callback);
  // SetDown, then tells the listener.
  void MarkDown(const std::string& detail, bool in_callback = false, const Stub* failed = nullptr);
  // Available on `stub` (set with the state, under one lock). What to tell, or nothing.
  News SetUp(std::shared_ptr<Stub> stub, const driver_v1::Capabilities& capabilities, std::string detail);
  // Calls the listener with `news` unless later news was told already. No lock held while it runs.
  void Tell(News news);
  void Observe(const char* method, const grpc::Status& status, absl::Time started);
  void Monitor();

  const RemoteDriverOptions options_;
  std::atomic<bool> available_{false};

  // One connection attempt at a time (the monitor's or a caller's); the others wait for its outcome.
  mutable absl::Mutex attempt_mu_;
  bool attempt_running_ ABSL_GUARDED_BY(attempt_mu_) = false;
  int64_t attempts_started_ ABSL_GUARDED_BY(attempt_mu_) = 0;
  int64_t attempts_finished_ ABSL_GUARDED_BY(attempt_mu_) = 0;
  absl::Status last_attempt_ ABSL_GUARDED_BY(attempt_mu_);
  mutable absl::Mutex mu_;
  std::shared_ptr<Stub> stub_ ABSL_GUARDED_BY(mu_);
  std::optional<driver_v1::Capabilities> capabilities_ ABSL_GUARDED_BY(mu_);
  StateListener listener_ ABSL_GUARDED_BY(mu_);
  CallObserver observer_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::string last_problem_ ABSL_GUARDED_BY(mu_);  // logged once per distinct problem while down
  std::vector<News> deferred_ ABSL_GUARDED_BY(mu_);  // news for the monitor to tell, in order
  // Every channel made, until only this holds it (SweepChannels lets it go on the monitor thread; the rest
  // go with this object, on the thread that destroys it, never on one of gRPC's callback threads).
  std::vector<std::shared_ptr<grpc::Channel>> channels_ ABSL_GUARDED_BY(mu_);
  struct Reconnect {
    std::shared_ptr<driver_v1::PolicyDriver::Stub> used;
    grpc::Status status;
    std::function<void(std::shared_ptr<driver_v1::PolicyDriver::Stub>, bool)> retry;
  };
  std::vector<Reconnect> reconnects_ ABSL_GUARDED_BY(mu_);  // ReconnectLater's, for the monitor
  int64_t state_seq_ ABSL_GUARDED_BY(mu_) = 0;              // changes of state recorded
  absl::Mutex tell_mu_;
  int64_t told_seq_ ABSL_GUARDED_BY(tell_mu_) = 0;  // the latest change the listener was told
  std::thread monitor_;
  // Asynchronous calls under way: shared with each call's callbacks, so it outlives whichever goes last.
  struct AsyncCalls;
  std::shared_ptr<AsyncCalls> async_calls_;
  // A hold on this object for one asynchronous call (released when its callbacks are all gone), or null
  // when stopping.
  std::shared_ptr<void> HoldForAsyncCall();
};

}  // namespace osh::drivers
