// A change of the provider-profile catalogue can widen sandboxes that were allowed already: every
// OpenShell sandbox whose interceptor record (InterceptorRecords) names a provider of that id gets the new
// layer — or loses the deleted one, and with it the layer's deny rules, which may have hidden what the
// sandbox's policy or another layer allows — on the OpenShell gateway's next snapshot refresh, through no
// request the interceptor sees. So a profile set or delete is checked before it is stored
// (ProviderProfileCatalogue's change guard): for every record naming the profile's id among its
// providers, the record's policy composed with its providers' layers — the new profile for that id (no
// layer for a delete), the catalogue's profiles for the others — must pass CheckComposedCandidate against
// the ceiling in force, or be contained (policy::CheckContainment) in the composition with the profile it
// replaces: a change that only narrows what a sandbox gets is never held back, even where the sandbox is
// outside already (a ceiling narrowed since it was recorded). A provider whose profile is missing or does
// not verify adds no layer here (upstream adds none for a type without a profile; this gateway refuses such
// a provider at its next Evaluate anyway). Without a ceiling in force nothing is checked.
//
// Refusals (FAILED_PRECONDITION, "reason_code: detail"): the verdict's reason (exceeds_ceiling,
// containment_unknown, invalid_policy) naming the profile, the first sandbox it would widen and the
// widening; interceptor_record_invalid when a record does not decode (it names the sandbox: forget it),
// storage_error when the records or a profile cannot be read (fail closed).
//
// What it rests on: the records, which the interceptor writes at validate — ahead of the OpenShell
// gateway's commit, so a detach, undo or create that upstream then refuses can leave a record without a
// provider upstream still has (docs/threat-model.md). Within one process changes are serialised, and an
// interceptor validate (which records what it composed) excludes them (ProviderProfileCatalogue::
// change_lock, held across the check and the write); between replicas on one database a record composed
// at the catalogue as it was cannot commit after a change (store::InterceptorRecordStore::
// PutInterceptorRecord's expected_generation), and the change is checked again inside its transaction over
// the records committed since its first check (ProviderProfileCatalogue::SetChangeGuard); every record is
// checked against one ceiling, and the change commits only while it is the ceiling stored (a ceiling set
// meanwhile, on any process: checked again, whole). Cost: every
// record is read once, outside any transaction (inside it, on PostgreSQL, the names and row versions, and
// then only the records written since); each distinct one (policy and providers: sandboxes of one policy
// share a record's bytes) is decoded, and each naming the profile's id among its providers is composed and
// checked (verdicts are kept per candidate by the ceiling guard).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gateway/core/ceiling_guard.h"
#include "gateway/core/provider_catalogue.h"
#include "openshell/v1/openshell_v1_subset.pb.h"
#include "store/store.h"

namespace osh::gateway {

// `changed`: the profile `id` as it would be stored; null: `id` deleted. `records`: every interceptor record
// as committed (the change's transaction hands them over: store::ProfileChangeCheck). Every record is
// checked against one ceiling, the one in force when this starts; `checked_ceiling` receives its stamp
// (CeilingGuard::StampOf: the change must commit only while it is still the ceiling in the database,
// store::ProviderProfileStore's checked_ceiling, or a ceiling narrowed meanwhile would go unchecked).
// Writes nothing.
absl::Status CheckProfileChange(const CeilingGuard& ceiling, const std::vector<store::InterceptorRecordRow>& records,
                                const ProviderProfileCatalogue& catalogue, const std::string& id,
                                const openshell::v1::ProviderProfile* changed, int64_t* checked_ceiling);

}  // namespace osh::gateway
