// The provider-profile catalogue (docs/openshell-interceptor.md, "Provider profiles"; the contract is
// ../shared/interceptor/README.md §7 and §8): the profiles operators author with `policyctl profile`,
// kept in the store (store::ProviderProfileStore, one audit event per change), served by the
// interceptor's SnapshotProviderProfiles and composed into every candidate it checks against the ceiling.
//
// Signing (README §8): with a signing key (the gateway's builtin_signing_key, Ed25519) every profile set
// is signed as upstream's governance interceptor signs one: an EdDSA JWT (header {"typ":"JWT","alg":
// "EdDSA","kid":<kid>}, kid = hex of the first 16 bytes of SHA-256 of the key's SPKI DER; claims sub
// "provider-profile:<id>", iss "openshell-governance-interceptor", aud "openshell-governance-profile",
// iat 0, exp 0, hash_algorithm, profile_id, profile_sha256 = GovernanceProfileHash) carried in the
// annotations openshell.nvidia.com/profile-signature, -hash and -signature-kid. With a trust store,
// every profile must carry such a signature by a trust-store Ed25519 key (matched by that kid, not
// revoked, inside its window now) over the profile as stored: Set refuses a profile it cannot sign so
// (profile_unsigned, profile_signature_untrusted), and a stored profile that does not verify (a rewritten
// row, a key revoked since) is never served or composed (profile_unverified). Without a trust store,
// profiles are served as stored.
//
// Kept, never stale: the catalogue is read from the store and verified once, then kept (its entries, their
// verdicts and the snapshot with its revision) for as long as nothing a verdict depends on changes. Every
// read first reads the store's catalogue generation (store::ProviderProfileStore::
// ProviderProfileGeneration, one small row, stepped in the transaction of every change by any process on
// the database) and the trust store in force, and uses what is kept only when both are the ones it was
// verified under and the time is still inside every trust-store key's window boundary it was verified
// between; otherwise it reads and verifies again. So a change committed here or by another replica on a
// shared database is served by the next read after its commit, and a trust store reloaded (a key revoked,
// a window changed) re-verifies every profile before one is served again. Set and Delete also drop what
// is kept at once. Thread-safe; the store must outlive the catalogue.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "gateway/core/governance_signature.h"
#include "openshell/gateway_interceptor/v1/gateway_interceptor.pb.h"
#include "openshell/v1/openshell_v1_subset.pb.h"
#include "store/clock.h"
#include "store/store.h"
#include "trust/keys.h"
#include "trust/trust_store.h"

namespace osh::gateway {

class ProviderProfileCatalogue {
 public:
  // `trust` answers the trust store in force (null: none, profiles are not verified).
  ProviderProfileCatalogue(store::ProviderProfileStore* store,
                           std::function<std::shared_ptr<const trust::TrustStore>()> trust,
                           const store::Clock* clock);

  // The key profiles are signed with from now on. Only an Ed25519 key signs (the governance format's);
  // with another, profiles are stored unsigned, or refused (profile_unsigned) when a trust store is set.
  void SetSigningKey(trust::PrivateKey key);

  // Asked by Set (once the profile is valid and signed; `changed` = it) and Delete (`changed` = null)
  // twice: first over every interceptor record of `records` (read outside any transaction), then inside
  // the change's transaction (store::ProfileChangeCheck, once no record composed at the catalogue as it
  // was can commit until the change has) over the records committed since that are new or other than
  // the first check saw — so that the long part holds no transaction. A non-OK status is the refusal, and
  // nothing is stored. `checked_ceiling` receives the stamp of the ceiling it checked against
  // (CeilingGuard::StampOf; left at store::kNoCeiling when it checks against none): the change commits only
  // while that is the ceiling in the database (store::ProviderProfileStore's checked_ceiling), and the
  // second check must have checked against the first's, or the change is refused ceiling_changed and tried
  // again — a ceiling narrowed while the first check ran is never left unchecked. It must not write to the
  // store (the second runs on the store's writing thread); `on_refused` is told of a refusal afterwards,
  // outside the transaction (the core audits it) — the guard's, a failed `reload_ceiling`, and a change
  // still refused catalogue_changed or ceiling_changed at its last try. With `recheck_in_transaction` false (a database no other
  // process writes: every record write of this process that follows a composition — a validate's, a
  // push's — holds change_lock) there is no second check, and so no read of the records inside the
  // transaction. Set and Delete hold one lock across the change, so changes in this process are checked one
  // at a time, and write only while the store's catalogue generation is the one read first (another
  // replica's change in between, or another ceiling: tried again, up to kCheckAttempts times, then ABORTED
  // catalogue_changed or ceiling_changed). The core sets it to CheckProfileChange (a change must not widen
  // a sandbox beyond the ceiling). `records` must not be null (a change is then refused, internal_error).
  // `reload_ceiling` (may be null) is called after a commit refused ceiling_changed, before the change is
  // checked again: it brings this process's ceiling to the one the database holds (another replica's, not
  // yet delivered by the feed); its error is the change's answer. Call before serving; not thread-safe
  // against Set.
  using ChangeGuard = std::function<absl::Status(const std::string& id, const openshell::v1::ProviderProfile* changed,
                                                 const std::vector<store::InterceptorRecordRow>& records,
                                                 int64_t* checked_ceiling)>;
  using RefusalHook = std::function<void(const std::string& id, const openshell::v1::ProviderProfile* changed,
                                         const absl::Status& refusal)>;
  void SetChangeGuard(ChangeGuard guard, store::InterceptorRecordStore* records, RefusalHook on_refused = nullptr,
                      bool recheck_in_transaction = true, std::function<absl::Status()> reload_ceiling = nullptr) {
    guard_ = std::move(guard);
    records_ = records;
    on_refused_ = std::move(on_refused);
    recheck_in_transaction_ = recheck_in_transaction;
    reload_ceiling_ = std::move(reload_ceiling);
  }
  // Held shared by whoever composes profiles into a candidate and records the sandbox's providers from it
  // (the interceptor's validate phase, admit mode's record of a push), while Set and Delete hold it exclusively across the guard and the
  // write: in one process a validate and a change do not overlap at all (between processes the store's
  // generation fences them: ChangeGuard). Take it before anything the catalogue or the records lock.
  absl::Mutex& change_lock() const { return change_mu_; }

  // One profile as stored, with its governance hash and the kid of its signature ("" unsigned).
  struct Entry {
    openshell::v1::ProviderProfile profile;
    std::string hash;
    std::string kid;
    // The catalogue generation it was read at (store::ProviderProfileStore::ProviderProfileGeneration):
    // what a record composed from it names (store::InterceptorRecordStore::PutInterceptorRecord).
    uint64_t generation = 0;
  };

  // Validates (policy::ValidateProviderProfile), signs when a key is set, asks the change guard, and stores the profile,
  // creating or replacing the one of its id, with one audit event (type mutation). What is stored.
  // A profile that arrives signed already (its three openshell.nvidia.com/profile-* annotations, written by
  // `policyctl profile sign` with an authority's key) keeps that signature when a trust store is set,
  // signing key or not: its stated hash must be the profile's (invalid_profile) and it must verify now
  // (profile_signature_untrusted). Without a trust store a signature handed in cannot be verified: it is
  // dropped, and the profile signed here or stored unsigned. Unknown fields are discarded first (the hash
  // does not cover them).
  absl::StatusOr<Entry> Set(openshell::v1::ProviderProfile profile);
  // Asks the change guard, then removes the profile `id` with one audit event; NOT_FOUND when there is none.
  absl::Status Delete(const std::string& id);
  // The profile `id` as stored (NOT_FOUND when none), verified as for serving.
  absl::StatusOr<Entry> Get(const std::string& id) const;
  // Several profiles read from one catalogue (one generation, one trust store), none copied: `entries[i]` is
  // ids[i]'s entry as Get would say it (NOT_FOUND when none, the verification's error when it fails),
  // pointing into the catalogue `held` keeps alive. An error when the catalogue itself cannot be read.
  struct Selection {
    std::shared_ptr<const void> held;
    std::vector<absl::StatusOr<const Entry*>> entries;
  };
  absl::StatusOr<Selection> GetAll(const std::vector<std::string>& ids) const;
  // Every profile, ordered by id, verified as for serving.
  absl::StatusOr<std::vector<Entry>> List() const;
  // What SnapshotProviderProfiles serves: every profile as stored, verified, and revision = the
  // governance snapshot hash over them. A profile that does not verify fails the whole snapshot
  // (FAILED_PRECONDITION profile_unverified): OpenShell then keeps the sandboxes' last good policies.
  absl::StatusOr<openshell::gateway_interceptor::v1::ProviderProfileSnapshot> Snapshot() const;
  // How many profiles are stored.
  absl::StatusOr<size_t> Count() const;
  // The store's catalogue generation now (store::ProviderProfileStore::ProviderProfileGeneration).
  absl::StatusOr<uint64_t> Generation() const { return store_->ProviderProfileGeneration(); }

  // How often a read was served from the kept catalogue, and how often it was read and verified again.
  struct CacheStats {
    uint64_t hits = 0;
    uint64_t rebuilds = 0;
  };
  CacheStats cache_stats() const;

 private:
  // The catalogue as read at one generation and verified under one trust store, over one span of time.
  struct Kept {
    uint64_t generation = 0;
    // Held, so that no later trust store can be allocated at the same address while this is kept.
    std::shared_ptr<const trust::TrustStore> trust;
    // The verdicts hold for now_unix in [valid_from, valid_until): no trust-store key's window starts or
    // ends inside it.
    int64_t valid_from = 0;
    int64_t valid_until = 0;
    std::vector<std::pair<std::string, absl::StatusOr<Entry>>> entries;  // in the store's order (by id)
    absl::flat_hash_map<std::string, size_t> index;                      // id -> position in entries
    absl::StatusOr<openshell::gateway_interceptor::v1::ProviderProfileSnapshot> snapshot =
        absl::UnknownError("unset");
  };

  // Decodes a stored profile and, with a trust store, checks its signature at `now_unix`.
  absl::StatusOr<Entry> Verified(const store::ProviderProfileRow& row, const trust::TrustStore* trust,
                                 int64_t now_unix) const;
  // The kept catalogue if it is still current (generation, trust store, time), else read and verified again.
  absl::StatusOr<std::shared_ptr<const Kept>> Current() const;
  absl::StatusOr<std::shared_ptr<const Kept>> Build(uint64_t generation, std::shared_ptr<const trust::TrustStore> trust,
                                                    int64_t now_unix) const;
  static bool Fresh(const Kept& kept, uint64_t generation, const trust::TrustStore* trust, int64_t now_unix);
  void Forget();
  // Runs `write` with the generation read first, the change guard as the store's check and the ceiling
  // the guard checked against (nullopt: no guard), again (up to kCheckAttempts in all) while the store
  // answers catalogue_changed (another replica's change committed in between) or ceiling_changed (another
  // ceiling was stored meanwhile: reload_ceiling first).
  using CheckedWrite = std::function<absl::Status(uint64_t generation, const store::ProfileChangeCheck& check,
                                                  std::optional<int64_t> checked_ceiling)>;
  absl::Status Checked(const std::string& id, const openshell::v1::ProviderProfile* changed, const CheckedWrite& write)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(change_mu_);
  static constexpr int kCheckAttempts = 4;

  store::ProviderProfileStore* const store_;
  ChangeGuard guard_;
  store::InterceptorRecordStore* records_ = nullptr;  // not owned
  bool recheck_in_transaction_ = true;
  RefusalHook on_refused_;
  std::function<absl::Status()> reload_ceiling_;
  mutable absl::Mutex change_mu_;  // Set and Delete: the guard's check and the write, one change at a time
  const std::function<std::shared_ptr<const trust::TrustStore>()> trust_;
  const store::Clock* const clock_;
  mutable absl::Mutex key_mu_;
  std::optional<trust::PrivateKey> key_ ABSL_GUARDED_BY(key_mu_);
  // One rebuild at a time (the others wait for it and use what it kept); taken before cache_mu_.
  mutable absl::Mutex rebuild_mu_ ABSL_ACQUIRED_BEFORE(cache_mu_);
  mutable absl::Mutex cache_mu_;
  mutable std::shared_ptr<const Kept> kept_ ABSL_GUARDED_BY(cache_mu_);
  mutable CacheStats stats_ ABSL_GUARDED_BY(cache_mu_);
};

}  // namespace osh::gateway
