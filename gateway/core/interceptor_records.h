// What the interceptor knows of each OpenShell sandbox: the policy and providers of the last request about
// it that the interceptor allowed at validate (CreateSandbox, UpdateConfig with a full or merged policy,
// DetachSandboxProvider). It is the base mergeOperations are applied to (README §9). An allow is not a
// commit (the OpenShell handler can still refuse), so a record may be ahead of upstream; it is never wider
// than what was checked against the ceiling.
//
// Phase 1 keeps the records in memory: after a restart of policy-gateway every sandbox is unknown again
// (mergeOperations are refused with unknown_sandbox until a full UpdateConfig records it). Thread-safe.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "openshell/sandbox/v1/sandbox.pb.h"

namespace osh::gateway {

class InterceptorRecords {
 public:
  struct Record {
    openshell::sandbox::v1::SandboxPolicy policy;
    std::vector<std::string> providers;
  };

  void Put(const std::string& sandbox, Record record);
  std::optional<Record> Get(const std::string& sandbox) const;
  // The sandbox's policy changed in a way not seen here (an undone draft chunk): unknown from now on.
  void Forget(const std::string& sandbox);
  // Drops `provider` from the sandbox's providers (a detach); nothing when the sandbox is unknown.
  void RemoveProvider(const std::string& sandbox, const std::string& provider);
  size_t size() const;

 private:
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Record> records_ ABSL_GUARDED_BY(mu_);
};

}  // namespace osh::gateway
