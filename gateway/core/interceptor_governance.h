// The governance hash of OpenShell's example governance interceptor (../shared/interceptor/README.md §8):
// the one interop format other OpenShell tools know for hashing a policy or a provider-profile catalogue.
// Canonical bytes C(m): the typed message's ProtoJSON (protobuf's printer, defaults left out), read back
// by protobuf's JSON parser as a google.protobuf.Value and re-emitted without whitespace, object keys
// sorted by raw bytes, strings escaping only '"', '\' and U+0000..U+001F. Numbers print in decimal when
// integral (every integer of the hashed types: 64-bit ones are strings in ProtoJSON); a non-integral
// double prints in shortest round-trip form. The README's "5.0" form of an integral double exists only in
// Struct fields, which neither SandboxPolicy nor ProviderProfile has. Pure functions, thread-safe.
#pragma once

#include <string>
#include <vector>

#include <google/protobuf/message.h>

#include "absl/status/statusor.h"
#include "openshell/sandbox/v1/sandbox.pb.h"
#include "openshell/v1/openshell_v1_subset.pb.h"

namespace osh::gateway {

inline constexpr char kGovernanceHashAlgorithm[] = "openshell-governance-protojson-sha256-v2";

// C(m).
absl::StatusOr<std::string> GovernanceCanonicalJson(const google::protobuf::Message& message);

// "sha256:v2:<hex>" of a policy; of a profile (without its openshell.nvidia.com/profile-* annotations);
// of a snapshot (profiles sorted by id).
absl::StatusOr<std::string> GovernancePolicyHash(const openshell::sandbox::v1::SandboxPolicy& policy);
absl::StatusOr<std::string> GovernanceProfileHash(const openshell::v1::ProviderProfile& profile);
absl::StatusOr<std::string> GovernanceSnapshotHash(std::vector<openshell::v1::ProviderProfile> profiles);

// Upstream's own revision of a snapshot served with an empty one: "sha256:" + hex(SHA-256(
// "openshell-provider-profile-snapshot-v1" || protobuf(p1) || ...)), profiles sorted by id, unframed.
std::string UpstreamSnapshotRevision(std::vector<openshell::v1::ProviderProfile> profiles);

}  // namespace osh::gateway
