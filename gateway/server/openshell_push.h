// Admit mode's push (docs/openshell-interceptor.md, "Admit mode"; ../shared/interceptor/README.md §9): when
// the projection this gateway serves a sandbox changes (a refresh or a re-projection committed here), the
// new body is sent to the OpenShell gateway as openshell.v1.OpenShell/UpdateConfig {name, policy, the
// policy-gateway/* annotations}, so what OpenShell stores and its supervisor enforces follows the Policy
// subsystem. The OpenShell gateway calls this gateway's own interceptor (UpdateConfig modify and validate)
// while the push is pending, so no lock and no thread is held across it: calls are asynchronous (gRPC's
// callback API) and the push's one thread only prepares them and takes their results.
//
// Which sandboxes: those the interceptor has a record of (created through it) whose recorded policy is
// not the body served now; a sandbox is pushed again only after its call ended, with the latest body.
// The record names what the OpenShell gateway holds: our own validate does not record a pushed body (an
// allow is not a commit); the push records it once upstream accepted it. So a call that fails, or is lost
// to a crash before upstream's answer, still reads as not pushed to a retry, the catch-up at start and the
// next change (a push repeated after a commit whose answer was lost is harmless: the same body again).
// At start every admitted sandbox is looked at once (CatchUp: after a restart, or a push lost to a crash).
// A call that fails for a passing reason (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED,
// INTERNAL, UNKNOWN) is tried again after 1 s, 2 s, 4 s ... at most max_backoff; a refusal (upstream takes
// only additive filesystem changes and unchanged landlock and process on a live sandbox: INVALID_ARGUMENT;
// or a deny of this gateway's own validate) is recorded as the sandbox's refresh error
// ("openshell_push_refused: ...", drift refresh_failed; cleared by a later accepted push) and asked again
// after refusal_retry (5 min), at once when its projection changes again. At most max_in_flight calls run
// at once.
//
// Credentials: a bearer token read from `token_file` at each push (authorization metadata), and over
// https a TLS channel (the CA in `ca`, or the system's roots) with an optional client certificate. Over
// unix:/// each connection is made here and the process serving the socket checked (SO_PEERCRED: root, this
// process's user or `socket_owner`), so the token reaches no process of another user; a refused connection
// is a passing failure (one attempt a second at most).
//
// Thread-safe. The admission interface and the record store must outlive the push; destroying it cancels
// the calls in flight and waits for them.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "gateway/core/interceptor_admission.h"
#include "gateway/core/interceptor_records.h"
#include "gateway/server/metrics.h"
#include "openshell/v1/openshell_v1_subset.grpc.pb.h"
#include "store/store.h"

namespace osh::gateway {

class OpenShellPush {
 public:
  struct Options {
    std::string endpoint;     // "unix:///path" or "https://host:port"
    std::string token_file;   // "": no bearer token
    std::string ca;           // PEM file; "": the system's roots (https only)
    std::string client_cert;  // PEM files of a client certificate and its key (https only); "": none
    std::string client_key;
    // unix:///: a user the process serving the socket may run as besides root and this gateway's user (each
    // connection is made here and checked, SO_PEERCRED: the token goes to no other process).
    std::optional<uid_t> socket_owner;
    std::chrono::milliseconds timeout{5000};        // one UpdateConfig call
    std::chrono::milliseconds first_backoff{1000};  // the first retry of a passing failure, doubled each time
    std::chrono::milliseconds max_backoff{30000};
    std::chrono::milliseconds refusal_retry{300000};  // a refused push is asked again after this
    size_t max_in_flight = 8;  // calls at once: each re-enters this gateway's interceptor
    Metrics* metrics = nullptr;  // counts each finished call by outcome (may be null; must outlive the push)
    // Records a policy upstream accepted as the sandbox's (the interceptor's InterceptorEvaluator::
    // RecordPushed: fenced against profile changes). Required; a failure pushes the sandbox again later.
    std::function<absl::Status(const std::string& key, const openshell::sandbox::v1::SandboxPolicy& pushed)>
        record_pushed;
  };
  // Reads the CA and client certificate files (INVALID_ARGUMENT naming the file), makes the channel
  // (connected lazily) and starts the push's thread.
  static absl::StatusOr<std::unique_ptr<OpenShellPush>> Start(Options options, InterceptorAdmission* admission,
                                                             store::InterceptorRecordStore* records);
  // Cancels the calls in flight, waits for them and stops the thread; later Notify calls do nothing.
  // Idempotent (the destructor calls it); counts() stays valid.
  void Stop();
  ~OpenShellPush();

  // The projection served to `sandbox_id` changed: push it (soon, on the push's thread). Cheap and
  // non-blocking: may be called with other locks held (the registry's observer).
  void Notify(const std::string& sandbox_id);
  // Looks at every admitted sandbox once (soon, on the push's thread; a listing that fails is tried again
  // 10 s later): call it after the registry's observer is set, so no change falls between the two.
  void CatchUp();

  struct Counts {
    uint64_t pushed = 0;    // calls the OpenShell gateway accepted
    uint64_t refused = 0;   // refusals recorded as refresh errors
    uint64_t retried = 0;   // passing failures, tried again
    uint64_t in_flight = 0;
  };
  Counts counts() const;

 private:
  struct Call;
  OpenShellPush(Options options, InterceptorAdmission* admission, store::InterceptorRecordStore* records);
  void Run();
  // Prepares and sends the push of `sandbox_id` (taken by Run: in_flight_ holds its placeholder; no lock
  // held); false when there is nothing to push (the placeholder is released).
  bool Send(const std::string& sandbox_id);
  bool Prepare(const std::string& sandbox_id);
  // Drops the placeholder of a sandbox Send did not push; a Notify meanwhile schedules it again.
  void Release(const std::string& sandbox_id);
  // A call's result, on the push's thread.
  void Finish(std::unique_ptr<Call> call);

  const Options options_;
  InterceptorAdmission* const admission_;
  InterceptorRecords records_;
  // The push's thread's own (Prepare, Finish): over unix:/// a channel over one connection this gateway
  // made and checked, made again (checked) after a call on it failed UNAVAILABLE; null until connected.
  // An old channel goes with the last call that holds it (its context), on this thread.
  bool Connected();
  std::string socket_path_;  // unix:///: the socket's path; "": https
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<openshell::v1::OpenShell::Stub> stub_;
  std::string connect_error_;  // why the last connection was not made
  std::chrono::steady_clock::time_point next_connect_{};  // no connection attempt before (after a failed one)

  mutable absl::Mutex mu_;
  absl::CondVar wake_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::map<std::string, std::chrono::steady_clock::time_point> due_ ABSL_GUARDED_BY(mu_);  // sandbox -> when
  std::map<std::string, int> attempts_ ABSL_GUARDED_BY(mu_);   // passing failures in a row, per sandbox
  // At most one call per sandbox: null while Send prepares it (taken under the lock that took it from due_).
  std::map<std::string, Call*> in_flight_ ABSL_GUARDED_BY(mu_);
  std::optional<std::chrono::steady_clock::time_point> catch_up_due_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> dirty_ ABSL_GUARDED_BY(mu_);            // notified while its call was in flight
  std::vector<std::unique_ptr<Call>> done_ ABSL_GUARDED_BY(mu_);  // finished calls, for the thread
  Counts counts_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace osh::gateway
