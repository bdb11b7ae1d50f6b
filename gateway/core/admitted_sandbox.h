// One admitted sandbox as the gateway serves it: an immutable value, shared.
//
// The registry (gateway/core/sandbox_registry.h) publishes a new AdmittedSandbox for every change it
// applies (admission, new projection, verification) and never changes one it has handed out, so a reader
// holds a consistent sandbox (its envelope, verification and times of one moment) without a lock, for as
// long as it keeps the pointer. What sandboxes report about themselves is not part of it: that is the
// report recorder's (gateway/core/report_recorder.h).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "store/change.h"

namespace osh::gateway {

struct AdmittedSandbox {
  // How a sandbox's projection was verified; one object shared by every sandbox verified alike.
  struct Verification {
    store::Verification verification = store::Verification::kNone;
    std::vector<std::string> key_ids;
  };
  using HandleHash = std::array<char, 32>;  // SHA-256 of the sandbox handle, inline (no allocation)

  std::string sandbox_id;
  std::string context_bytes;   // the serialized RuntimeContext
  HandleHash handle_sha256{};
  std::string driver_handle;
  store::EnvelopePtr envelope;  // never null
  std::shared_ptr<const Verification> verified_by;  // never null
  int64_t admitted_at_unix = 0;
  int64_t updated_at_unix = 0;
  // False for a sandbox loaded from the store (start-up, another replica's feed is verified already)
  // until it is re-verified: nothing unverified is served.
  bool verified = false;
  // The body admitted before the current one, since this process started (not stored: after a restart
  // only the current one is known). A sandbox still reporting about it is behind, not wrong.
  store::BodyPtr previous_body;
};

using AdmittedPtr = std::shared_ptr<const AdmittedSandbox>;

}  // namespace osh::gateway
