// A bounded cache of bodies that already passed step 7 of the check (strict parse + schema validation),
// keyed by their SHA-256 digest. The check always recomputes the digest from the bytes it is given, so a
// hit means the very same bytes were parsed and validated before: the result is reused, never trusted
// from the driver's word. Signatures, context binding, expiry and rollback are checked on every call.
//
// Thread-safe. Entries are evicted oldest-first beyond `capacity`.
#pragma once

#include <cstddef>
#include <deque>
#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "openshell/sandbox/v1/sandbox.pb.h"

namespace osh::trust {

class ValidatedBodyCache {
 public:
  using Policy = std::shared_ptr<const openshell::sandbox::v1::SandboxPolicy>;

  explicit ValidatedBodyCache(size_t capacity = 1024) : capacity_(capacity) {}

  // The parsed policy for the body whose recomputed digest is `digest`, or null.
  Policy Find(const std::string& digest) const;
  void Insert(const std::string& digest, Policy policy);
  size_t size() const;

 private:
  const size_t capacity_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Policy> entries_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> order_ ABSL_GUARDED_BY(mu_);  // insertion order, for eviction
};

}  // namespace osh::trust
