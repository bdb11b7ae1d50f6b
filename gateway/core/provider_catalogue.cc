#include "gateway/core/provider_catalogue.h"

#include <algorithm>
#include <limits>
#include <tuple>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/errors.h"
#include "gateway/core/audit_recorder.h"
#include "gateway/core/context_limits.h"
#include "gateway/core/governance_signature.h"
#include "gateway/core/interceptor_governance.h"
#include "policy/provider_profile.h"

namespace osh::gateway {

namespace os_v1 = openshell::v1;
namespace audit = trust::audit;

namespace {

absl::Status ProfileUnverified(const std::string& id, absl::string_view why) {
  return common::Refused(absl::StatusCode::kFailedPrecondition, "profile_unverified",
                         absl::StrCat("provider profile '", id, "': ", why));
}

// The span of time around `now` in which no key of `trust` enters or leaves its window: a key is in its
// window at t when not_before <= t <= not_after, so its state changes at not_before and at not_after + 1.
// [from, until): every signature verdict taken at `now` holds for any time inside it.
std::pair<int64_t, int64_t> ProfileKeyWindowSpan(const trust::TrustStore* trust, int64_t now) {
  int64_t from = std::numeric_limits<int64_t>::min(), until = std::numeric_limits<int64_t>::max();
  if (trust == nullptr) return {from, until};
  auto bound = [&](int64_t change) {
    if (change <= now) {
      from = std::max(from, change);
    } else {
      until = std::min(until, change);
    }
  };
  for (const trust::TrustedKey& key : trust->keys()) {
    if (key.not_before_unix) bound(*key.not_before_unix);
    if (key.not_after_unix && *key.not_after_unix < std::numeric_limits<int64_t>::max()) bound(*key.not_after_unix + 1);
  }
  return {from, until};
}

}  // namespace

ProviderProfileCatalogue::ProviderProfileCatalogue(store::ProviderProfileStore* store,
                                                   std::function<std::shared_ptr<const trust::TrustStore>()> trust,
                                                   const store::Clock* clock)
    : store_(store), trust_(std::move(trust)), clock_(clock) {}

void ProviderProfileCatalogue::SetSigningKey(trust::PrivateKey key) {
  absl::MutexLock lock(&key_mu_);
  key_ = std::move(key);
}

absl::StatusOr<ProviderProfileCatalogue::Entry> ProviderProfileCatalogue::Set(os_v1::ProviderProfile profile) {
  // Only what the hash covers is stored and served: fields this gateway does not know (a newer upstream's)
  // are outside the ProtoJSON the hash and a signature are taken over.
  profile.DiscardUnknownFields();
  if (absl::Status valid = policy::ValidateNewProviderProfile(profile); !valid.ok()) return valid;
  auto hash = GovernanceProfileHash(profile);
  if (!hash.ok()) return hash.status();
  std::optional<trust::PrivateKey> key;
  {
    absl::MutexLock lock(&key_mu_);
    key = key_;
  }
  const std::shared_ptr<const trust::TrustStore> trust = trust_ ? trust_() : nullptr;
  Entry entry;
  entry.hash = *hash;
  // A signature handed in is kept only where it can be verified (a trust store); without one it is dropped,
  // and the profile signed here (with a signing key) or stored unsigned, as any other.
  if (trust == nullptr && policy::ProviderProfileSigned(profile)) {
    profile.mutable_annotations()->erase(policy::kProfileSignatureAnnotation);
    profile.mutable_annotations()->erase(policy::kProfileHashAnnotation);
    profile.mutable_annotations()->erase(policy::kProfileSignatureKidAnnotation);
  }
  const bool signed_elsewhere = policy::ProviderProfileSigned(profile);
  if (signed_elsewhere) {
    // Kept as it came: an authority's signature made offline (policyctl profile sign).
    const auto& annotations = profile.annotations();
    if (annotations.at(policy::kProfileHashAnnotation) != *hash) {
      return common::Refused(absl::StatusCode::kInvalidArgument, "invalid_profile",
                             absl::StrCat("annotations.", policy::kProfileHashAnnotation, ": the signed hash is ",
                                          BoundedText(annotations.at(policy::kProfileHashAnnotation), 80),
                                          ", the profile's is ", *hash,
                                          " (the profile changed after it was signed)"));
    }
    entry.kid = annotations.at(policy::kProfileSignatureKidAnnotation);
  } else if (key.has_value() && key->algorithm() == trust::kEd25519) {
    auto kid = SignProviderProfile(*key, &profile);
    if (!kid.ok()) return kid.status();
    entry.kid = *kid;
  } else if (trust != nullptr) {
    return common::Refused(
        absl::StatusCode::kFailedPrecondition, "profile_unsigned",
        key.has_value()
            ? absl::StrCat("a trust store is configured, so every profile must be signed by one of its keys, and the "
                           "governance format signs with Ed25519 only (builtin_signing_key is ",
                           key->algorithm(), "): sign it with an authority's key (policyctl profile sign) and set "
                           "the signed file")
            : "a trust store is configured, so every profile must be signed by one of its keys, and this gateway has "
              "no signing key (builtin_signing_key): sign it with an authority's key (policyctl profile sign) and set "
              "the signed file");
  }
  const std::string bytes = profile.SerializeAsString();
  if (trust != nullptr) {
    // Never store what would not be served: the signature must verify against the trust store now.
    auto verified = Verified({profile.id(), bytes}, trust.get(), clock_->NowUnix());
    if (!verified.ok()) {
      return common::Refused(absl::StatusCode::kFailedPrecondition, "profile_signature_untrusted",
                             absl::StrCat("the signing key (kid ", BoundedText(entry.kid, 64),
                                          ") is not an Ed25519 key of the trust store that is valid now: ",
                                          verified.status().message()));
    }
  }
  absl::MutexLock change(&change_mu_);
  absl::Status put = Checked(profile.id(), &profile, [&](uint64_t generation, const store::ProfileChangeCheck& check, std::optional<int64_t> checked_ceiling) {
    store::AuditEvent event = AuditRecorder::For(audit::Type::kMutation, "");
    event.outcome = audit::Outcome::kOk;
    event.reason = absl::StrCat("provider profile ", profile.id(), " set");
    event.audit_context = {{"provider_profile", profile.id()}, {"profile_hash", *hash}, {"change", "set"}};
    if (!entry.kid.empty()) event.audit_context["profile_signature_kid"] = entry.kid;
    if (signed_elsewhere) event.audit_context["profile_signed"] = "imported";
    return store_->PutProviderProfile(profile.id(), bytes, std::move(event), generation, check, checked_ceiling);
  });
  if (!put.ok()) return put;
  entry.profile = std::move(profile);
  return entry;
}

absl::Status ProviderProfileCatalogue::Checked(const std::string& id, const openshell::v1::ProviderProfile* changed,
                                               const CheckedWrite& write) {
  for (int attempt = 1;; ++attempt) {
    // The write commits only while the catalogue is still at the generation read here (another replica's
    // change in between: tried again). A record composed at this generation is refused once the change
    // commits (PutInterceptorRecord's expected_generation), so the two checks below see every other.
    auto generation = store_->ProviderProfileGeneration();
    if (!generation.ok()) return generation.status();
    std::optional<absl::Status> refused;
    store::ProfileChangeCheck check;
    std::optional<int64_t> checked_ceiling;
    // The whole check first, outside any transaction (composing and checking every record naming the id
    // can take long); inside it only what changed since: a record that is new or other than this check saw.
    absl::flat_hash_map<std::string, std::string> checked;
    absl::flat_hash_map<std::string, std::string> seen_versions;  // what the store reads again is what moved
    if (guard_) {
      if (records_ == nullptr) {
        return common::Refused(absl::StatusCode::kInternal, "internal_error",
                               "the provider-profile change guard has no interceptor records to check");
      }
      auto rows = records_->ListInterceptorRecords();
      if (!rows.ok()) {
        const absl::Status unknown = common::Refused(
            absl::StatusCode::kFailedPrecondition, "storage_error",
            absl::StrCat("the interceptor's sandbox records could not be read, so whether profile '", id, "' ",
                         changed != nullptr ? "set" : "deleted", " widens a sandbox beyond the ceiling is unknown: ",
                         rows.status().message()));
        if (on_refused_) on_refused_(id, changed, unknown);
        return unknown;
      }
      int64_t stamp = store::kNoCeiling;
      if (absl::Status allowed = guard_(id, changed, *rows, &stamp); !allowed.ok()) {
        if (on_refused_) on_refused_(id, changed, allowed);
        return allowed;
      }
      checked_ceiling = stamp;
      if (recheck_in_transaction_) {
        checked.reserve(rows->size());
        seen_versions.reserve(rows->size());
        for (store::InterceptorRecordRow& row : *rows) {
          seen_versions.emplace(row.sandbox, std::move(row.version));
          checked.emplace(std::move(row.sandbox), std::move(row.record));
        }
        check = store::ProfileChangeCheck([&](const std::vector<store::InterceptorRecordRow>& records) {
          std::vector<store::InterceptorRecordRow> changed_since;
          for (const store::InterceptorRecordRow& row : records) {
            const auto it = checked.find(row.sandbox);
            if (it == checked.end() || it->second != row.record) changed_since.push_back(row);
          }
          int64_t stamp = store::kNoCeiling;
          absl::Status allowed = guard_(id, changed, changed_since, &stamp);
          if (!allowed.ok()) {
            refused = allowed;
            return allowed;
          }
          // The records passed first were checked against that check's ceiling: these must be too (the
          // store compares it with the database's before this runs; this replica's view may have moved).
          if (stamp != *checked_ceiling) return store::CeilingChangedError(*checked_ceiling, stamp);
          return absl::OkStatus();
        }, &seen_versions);
      }
    }
    absl::Status written = write(*generation, check, checked_ceiling);
    Forget();  // committed or not (an error may follow a commit): read again
    if (refused.has_value() && on_refused_) on_refused_(id, changed, *refused);
    const bool ceiling_changed = store::IsCeilingChanged(written);
    const bool moved = ceiling_changed || common::ReasonOf(written) == "catalogue_changed";
    if (!moved) return written;
    if (attempt == kCheckAttempts) {
      // Refused for good: audited as the guard's refusals are.
      if (on_refused_) on_refused_(id, changed, written);
      return written;
    }
    // Another ceiling was stored (here or by another replica, whose feed may not have brought it yet):
    // the one the database holds is loaded, and the change checked against it.
    if (ceiling_changed && reload_ceiling_) {
      if (absl::Status reloaded = reload_ceiling_(); !reloaded.ok()) {
        if (on_refused_) on_refused_(id, changed, reloaded);  // ceiling_missing, or the database unreadable
        return reloaded;
      }
    }
  }
}

absl::Status ProviderProfileCatalogue::Delete(const std::string& id) {
  absl::MutexLock change(&change_mu_);
  auto stored = store_->GetProviderProfile(id);
  if (!stored.ok()) return stored.status();
  if (!stored->has_value()) return absl::NotFoundError(absl::StrCat("no provider profile '", id, "' in the catalogue"));
  absl::Status deleted = Checked(id, nullptr, [&](uint64_t generation, const store::ProfileChangeCheck& check, std::optional<int64_t> checked_ceiling) {
    store::AuditEvent event = AuditRecorder::For(audit::Type::kMutation, "");
    event.outcome = audit::Outcome::kOk;
    event.reason = absl::StrCat("provider profile ", id, " deleted");
    event.audit_context = {{"provider_profile", BoundedText(id, kMaxAuditFieldBytes)}, {"change", "delete"}};
    return store_->DeleteProviderProfile(id, std::move(event), generation, check, checked_ceiling);
  });
  if (deleted.code() == absl::StatusCode::kNotFound) {
    return absl::NotFoundError(absl::StrCat("no provider profile '", id, "' in the catalogue"));
  }
  return deleted;
}

absl::StatusOr<ProviderProfileCatalogue::Entry> ProviderProfileCatalogue::Verified(
    const store::ProviderProfileRow& row, const trust::TrustStore* trust, int64_t now) const {
  Entry entry;
  if (!entry.profile.ParseFromString(row.profile) || entry.profile.id() != row.id) {
    return absl::DataLossError(absl::StrCat("provider profile '", row.id, "': the stored profile does not decode"));
  }
  // Only what the hash covers is composed and served: a field this gateway does not know (a row another
  // version wrote) would otherwise reach a layer while two such profiles share one hash.
  entry.profile.DiscardUnknownFields();
  // A profile stored before this gateway held profiles to upstream's own validation (or by another replica's
  // older binary) is one upstream refuses, failing its whole catalogue: not composed, not served.
  if (absl::Status valid = policy::ValidateProviderProfile(entry.profile); !valid.ok()) {
    return ProfileUnverified(row.id, absl::StrCat("as stored, the OpenShell gateway refuses it (", valid.message(),
                                                  "): set it again as upstream takes it, or delete it"));
  }
  auto hash = GovernanceProfileHash(entry.profile);
  if (!hash.ok()) return hash.status();
  entry.hash = *hash;
  const auto& annotations = entry.profile.annotations();
  const auto kid = annotations.find(policy::kProfileSignatureKidAnnotation);
  if (kid != annotations.end()) entry.kid = kid->second;
  if (trust == nullptr) return entry;
  const auto token = annotations.find(policy::kProfileSignatureAnnotation);
  const auto stated_hash = annotations.find(policy::kProfileHashAnnotation);
  if (token == annotations.end() || stated_hash == annotations.end() || kid == annotations.end()) {
    return ProfileUnverified(row.id, "not signed (a trust store is configured)");
  }
  if (stated_hash->second != entry.hash) {
    return ProfileUnverified(row.id, absl::StrCat("its hash is ", entry.hash, ", not the signed ", stated_hash->second));
  }
  const std::string input = GovernanceSigningInput(entry.kid, GovernanceProfileClaims(row.id, entry.hash));
  if (!absl::StartsWith(token->second, absl::StrCat(input, "."))) {
    return ProfileUnverified(row.id, "its signature is not over this profile's claims");
  }
  std::string signature;
  if (!absl::WebSafeBase64Unescape(absl::string_view(token->second).substr(input.size() + 1), &signature)) {
    return ProfileUnverified(row.id, "its signature is not base64url");
  }
  for (const trust::TrustedKey& key : trust->keys()) {
    if (key.revoked || key.public_key.algorithm() != trust::kEd25519 || GovernanceKid(key.public_key) != entry.kid) {
      continue;
    }
    if ((key.not_before_unix && now < *key.not_before_unix) || (key.not_after_unix && now > *key.not_after_unix)) {
      continue;
    }
    if (key.public_key.Verify(input, signature)) return entry;
  }
  return ProfileUnverified(row.id, absl::StrCat("no Ed25519 key of the trust store with kid ", entry.kid,
                                                " (not revoked, valid now) verifies its signature"));
}

void ProviderProfileCatalogue::Forget() {
  absl::MutexLock lock(&cache_mu_);
  kept_.reset();
}

ProviderProfileCatalogue::CacheStats ProviderProfileCatalogue::cache_stats() const {
  absl::MutexLock lock(&cache_mu_);
  return stats_;
}

bool ProviderProfileCatalogue::Fresh(const Kept& kept, uint64_t generation, const trust::TrustStore* trust,
                                     int64_t now_unix) {
  return kept.generation == generation && kept.trust.get() == trust && now_unix >= kept.valid_from &&
         now_unix < kept.valid_until;
}

absl::StatusOr<std::shared_ptr<const ProviderProfileCatalogue::Kept>> ProviderProfileCatalogue::Current() const {
  // The trust store and the generation are read before the rows (Build): what is read after them holds at
  // least their changes, so what is kept under them is never older than they say.
  std::shared_ptr<const trust::TrustStore> trust = trust_ ? trust_() : nullptr;
  auto generation = store_->ProviderProfileGeneration();
  if (!generation.ok()) return generation.status();
  const int64_t now = clock_->NowUnix();
  {
    absl::MutexLock lock(&cache_mu_);
    if (kept_ != nullptr && Fresh(*kept_, *generation, trust.get(), now)) {
      ++stats_.hits;
      return kept_;
    }
  }
  absl::MutexLock rebuild(&rebuild_mu_);
  {
    absl::MutexLock lock(&cache_mu_);  // another caller may have rebuilt it meanwhile
    if (kept_ != nullptr && Fresh(*kept_, *generation, trust.get(), now)) {
      ++stats_.hits;
      return kept_;
    }
  }
  auto built = Build(*generation, std::move(trust), now);
  if (!built.ok()) return built.status();
  absl::MutexLock lock(&cache_mu_);
  ++stats_.rebuilds;
  kept_ = *built;
  return *built;
}

absl::StatusOr<std::shared_ptr<const ProviderProfileCatalogue::Kept>> ProviderProfileCatalogue::Build(
    uint64_t generation, std::shared_ptr<const trust::TrustStore> trust, int64_t now_unix) const {
  auto rows = store_->ListProviderProfiles();
  if (!rows.ok()) return rows.status();
  auto kept = std::make_shared<Kept>();
  kept->generation = generation;
  std::tie(kept->valid_from, kept->valid_until) = ProfileKeyWindowSpan(trust.get(), now_unix);
  kept->entries.reserve(rows->size());
  std::vector<os_v1::ProviderProfile> profiles;
  profiles.reserve(rows->size());
  openshell::gateway_interceptor::v1::ProviderProfileSnapshot snapshot;
  absl::Status first_failure;
  for (const auto& row : *rows) {
    absl::StatusOr<Entry> entry = Verified(row, trust.get(), now_unix);
    if (entry.ok()) {
      entry->generation = generation;
      *snapshot.add_profiles() = entry->profile;
      profiles.push_back(entry->profile);
    } else if (first_failure.ok()) {
      first_failure = entry.status();
    }
    kept->index.emplace(row.id, kept->entries.size());
    kept->entries.emplace_back(row.id, std::move(entry));
  }
  if (!first_failure.ok()) {
    kept->snapshot = first_failure;
  } else if (auto revision = GovernanceSnapshotHash(std::move(profiles)); !revision.ok()) {
    kept->snapshot = revision.status();
  } else {
    snapshot.set_revision(*revision);
    kept->snapshot = std::move(snapshot);
  }
  kept->trust = std::move(trust);
  return std::shared_ptr<const Kept>(std::move(kept));
}

absl::StatusOr<ProviderProfileCatalogue::Entry> ProviderProfileCatalogue::Get(const std::string& id) const {
  auto kept = Current();
  if (!kept.ok()) return kept.status();
  const auto it = (*kept)->index.find(id);
  if (it == (*kept)->index.end()) return absl::NotFoundError(absl::StrCat("no provider profile '", id, "' in the catalogue"));
  return (*kept)->entries[it->second].second;
}

absl::StatusOr<ProviderProfileCatalogue::Selection> ProviderProfileCatalogue::GetAll(
    const std::vector<std::string>& ids) const {
  auto kept = Current();
  if (!kept.ok()) return kept.status();
  Selection selection;
  selection.entries.reserve(ids.size());
  for (const std::string& id : ids) {
    const auto it = (*kept)->index.find(id);
    if (it == (*kept)->index.end()) {
      selection.entries.push_back(absl::NotFoundError(absl::StrCat("no provider profile '", id, "' in the catalogue")));
    } else if (const absl::StatusOr<Entry>& entry = (*kept)->entries[it->second].second; entry.ok()) {
      selection.entries.push_back(&*entry);
    } else {
      selection.entries.push_back(entry.status());
    }
  }
  selection.held = *std::move(kept);
  return selection;
}

absl::StatusOr<std::vector<ProviderProfileCatalogue::Entry>> ProviderProfileCatalogue::List() const {
  auto kept = Current();
  if (!kept.ok()) return kept.status();
  std::vector<Entry> out;
  out.reserve((*kept)->entries.size());
  for (const auto& [id, entry] : (*kept)->entries) {
    if (!entry.ok()) return entry.status();
    out.push_back(*entry);
  }
  return out;
}

absl::StatusOr<openshell::gateway_interceptor::v1::ProviderProfileSnapshot> ProviderProfileCatalogue::Snapshot() const {
  auto kept = Current();
  if (!kept.ok()) return kept.status();
  return (*kept)->snapshot;
}

absl::StatusOr<size_t> ProviderProfileCatalogue::Count() const {
  auto kept = Current();
  if (!kept.ok()) return kept.status();
  return (*kept)->entries.size();
}

}  // namespace osh::gateway
