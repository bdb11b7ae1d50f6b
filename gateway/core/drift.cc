#include "gateway/core/drift.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "trust/ceiling.h"

namespace osh::gateway {
namespace {

namespace v1 = openshell::policy::gateway::v1;

// The first 12 hex digits of a digest, as policyctl's tables show it ("none" for "").
std::string ShortDigest(const std::string& digest) { return digest.empty() ? "none" : digest.substr(0, 12); }

bool RefusedByCeiling(const std::string& refresh_error) {
  return absl::StartsWith(refresh_error, absl::StrCat(trust::reason::kExceedsCeiling, ":")) ||
         absl::StartsWith(refresh_error, absl::StrCat(trust::reason::kContainmentUnknown, ":"));
}

}  // namespace

void FillDrift(const std::optional<drivers::PolicyAuthoring::Desired>& desired, const absl::Status& not_served,
               v1::SandboxInfo* info) {
  if (desired) {
    info->set_desired_digest(desired->policy_digest);
    info->set_desired_version(desired->policy_version);
    info->set_desired_source(desired->source);
    info->set_desired_known(true);
  } else {
    info->set_desired_digest(info->policy_digest());
    info->set_desired_version(info->policy_version());
    info->set_desired_source("served");
    info->set_desired_known(false);
  }
  const bool reported_served = info->reported_digest() == info->policy_digest();
  v1::DriftState state = v1::DRIFT_IN_SYNC;
  std::string reason;
  if (reported_served && info->load_status() == v1::FAILED) {
    state = v1::DRIFT_LOAD_FAILED;
    reason = absl::StrCat("the sandbox failed to load ", ShortDigest(info->policy_digest()), ": ", info->load_error());
  } else if (!not_served.ok()) {
    state = RefusedByCeiling(info->last_refresh_error()) ? v1::DRIFT_REFUSED_BY_CEILING : v1::DRIFT_REFRESH_FAILED;
    reason = absl::StrCat("not served: ", not_served.message(),
                          info->last_refresh_error().empty() ? "" : absl::StrCat("; last refresh: ", info->last_refresh_error()));
  } else if (!info->last_refresh_error().empty()) {
    state = RefusedByCeiling(info->last_refresh_error()) ? v1::DRIFT_REFUSED_BY_CEILING : v1::DRIFT_REFRESH_FAILED;
    reason = absl::StrCat("last good kept: ", info->last_refresh_error());
  } else if (info->desired_digest() != info->policy_digest() || info->desired_version() != info->policy_version()) {
    state = v1::DRIFT_REFRESH_PENDING;
    reason = absl::StrCat("serves ", ShortDigest(info->policy_digest()), " version ", info->policy_version(),
                          "; desired ", ShortDigest(info->desired_digest()), " version ", info->desired_version(),
                          " (", info->desired_source(), ")");
  } else if (!reported_served || info->load_status() != v1::LOADED) {
    state = v1::DRIFT_NOT_REPORTED;
    reason = info->reported_digest().empty()
                 ? absl::StrCat("no report yet for ", ShortDigest(info->policy_digest()))
                 : absl::StrCat("last report was about ", ShortDigest(info->reported_digest()), ", not the served ",
                                ShortDigest(info->policy_digest()));
  }
  info->set_drift(state);
  info->set_drift_state(std::string(kDriftStateNames.Name(state)));
  info->set_drift_reason(std::move(reason));
}

}  // namespace osh::gateway
