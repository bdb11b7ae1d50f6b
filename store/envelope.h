// An admitted projection as the gateway holds it: an immutable envelope (every field but the body, kept
// as its stored bytes plus the few fields read on hot paths) and a body shared by every envelope that
// carries the same bytes. Envelopes without context binding are interned, so 100k sandboxes served one
// projection hold one Envelope; a context-bound envelope belongs to one sandbox and is not looked up,
// and 100k individually signed projections of one policy still hold one body.
//
// Envelope is immutable once built; EnvelopePtr may be shared freely across threads. EnvelopeInterner
// is thread-safe and holds weak references only: an envelope lives as long as a sandbox uses it.
#pragma once

#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "openshell/policy/driver/v1/driver.pb.h"

namespace osh::store {

using BodyPtr = std::shared_ptr<const std::string>;

class Envelope {
 public:
  using Projection = openshell::policy::driver::v1::Projection;

  // `header` must have no body; `header_bytes` is its deterministic serialization.
  Envelope(const Projection& header, std::string header_bytes, BodyPtr body);

  // The header (every field but the body), parsed from its bytes on each call.
  Projection Header() const;
  // The stored form of the header: its deterministic serialization.
  const std::string& header_bytes() const { return header_bytes_; }
  const std::string& body() const { return *body_; }
  const BodyPtr& shared_body() const { return body_; }
  std::string policy_digest() const { return Header().policy_digest(); }
  uint64_t policy_version() const { return policy_version_; }
  int64_t issued_at_unix() const { return issued_at_unix_; }
  int64_t expires_at_unix() const { return expires_at_unix_; }
  bool context_bound() const { return context_bound_; }
  // The same projection: equal header bytes and the same body.
  bool SameAs(const Envelope& other) const {
    return this == &other || (body_ == other.body_ && header_bytes_ == other.header_bytes_);
  }

  // The projection exactly as admitted: the header with its body (a copy; for one reply).
  void CopyTo(Projection* out) const;
  // The same, shared while anyone holds it: every watcher of every sandbox on this envelope is written
  // one message, built once per envelope and change.
  std::shared_ptr<const Projection> Shared() const;

 private:
  const std::string header_bytes_;
  const BodyPtr body_;
  const uint64_t policy_version_;
  const int64_t issued_at_unix_;
  const int64_t expires_at_unix_;
  const bool context_bound_;
  mutable absl::Mutex mu_;
  mutable std::weak_ptr<const Projection> shared_ ABSL_GUARDED_BY(mu_);
};

using EnvelopePtr = std::shared_ptr<const Envelope>;

class EnvelopeInterner {
 public:
  using Projection = openshell::policy::driver::v1::Projection;

  // The interned envelope of a whole projection (its body is moved out and shared by digest; the digest
  // field is trusted here only as a key: bodies are compared byte-for-byte on a hit).
  EnvelopePtr Intern(Projection projection);
  // The interned envelope for a stored header and body; DATA_LOSS when the header does not decode.
  absl::StatusOr<EnvelopePtr> Intern(std::string header_bytes, const BodyPtr& body);
  // The interned body for `bytes` (keyed by `digest`, compared byte-for-byte).
  BodyPtr InternBody(const std::string& digest, std::string bytes);

  size_t envelopes() const;
  size_t bodies() const;

 private:
  // Key: SHA-256 of the header bytes and the interned body's address (equal bodies share one address).
  static std::string KeyOf(const std::string& header_bytes, const BodyPtr& body);
  // The shared envelope for an unbound header; a fresh one for a context-bound header.
  EnvelopePtr MakeLocked(const Projection& header, std::string header_bytes, const BodyPtr& body)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  BodyPtr InternBodyLocked(const std::string& digest, std::string&& bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SweepLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::weak_ptr<const Envelope>> envelopes_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::weak_ptr<const std::string>> bodies_ ABSL_GUARDED_BY(mu_);
  size_t inserts_since_sweep_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace osh::store
