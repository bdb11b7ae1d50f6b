// The audit log's vocabulary (SPEC §8, docs/audit.md): every event type and outcome the gateway writes,
// named once. Events carry them as strings (they are hashed into the chain as text), so these are the
// only spellings; a test keeps docs/audit.md's table equal to kAllTypes and kAllOutcomes.
#pragma once

namespace osh::trust::audit {

namespace type {
inline constexpr char kAdmission[] = "admission";
inline constexpr char kRefusal[] = "refusal";
inline constexpr char kRefresh[] = "refresh";
inline constexpr char kReprojection[] = "reprojection";
inline constexpr char kReverificationFailed[] = "reverification_failed";
inline constexpr char kDeletion[] = "deletion";
inline constexpr char kRelease[] = "release";
inline constexpr char kMutation[] = "mutation";
inline constexpr char kMutationRefused[] = "mutation_refused";
inline constexpr char kReport[] = "report";
inline constexpr char kDriverUp[] = "driver_up";
inline constexpr char kDriverDown[] = "driver_down";
inline constexpr char kTrustStoreReload[] = "trust_store_reload";
inline constexpr char kCeilingSet[] = "ceiling_set";
inline constexpr char kAuthenticationFailures[] = "authentication_failures";
}  // namespace type

// Every event type, in docs/audit.md's order.
inline constexpr const char* kAllTypes[] = {
    type::kAdmission, type::kRefusal,  type::kRefresh,         type::kReprojection, type::kReverificationFailed,
    type::kDeletion,  type::kRelease,  type::kMutation,        type::kMutationRefused, type::kReport,
    type::kDriverUp,  type::kDriverDown, type::kTrustStoreReload, type::kCeilingSet, type::kAuthenticationFailures};

namespace outcome {
inline constexpr char kOk[] = "ok";
inline constexpr char kRefused[] = "refused";
inline constexpr char kKeptLastGood[] = "kept_last_good";
inline constexpr char kPartial[] = "partial";  // a re-projection in which some sandboxes kept the last good
inline constexpr char kLoaded[] = "loaded";
inline constexpr char kFailed[] = "failed";
inline constexpr char kUnavailable[] = "unavailable";
}  // namespace outcome

inline constexpr const char* kAllOutcomes[] = {outcome::kOk,     outcome::kRefused, outcome::kKeptLastGood,
                                               outcome::kPartial, outcome::kLoaded, outcome::kFailed,
                                               outcome::kUnavailable};

}  // namespace osh::trust::audit
