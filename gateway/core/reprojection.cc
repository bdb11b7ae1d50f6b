#include "gateway/core/reprojection.h"

#include <algorithm>
#include <atomic>
#include <functional>
#include <thread>
#include <map>
#include <set>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "trust/audit_vocabulary.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "gateway/core/driver_handles.h"
#include "gateway/core/log.h"
#include "policy/scope.h"
#include "trust/projection_check.h"

namespace osh::gateway {

namespace audit = trust::audit;

using store::Verification;
namespace driver_v1 = drivers::driver_v1;

namespace {

// "" when none kept the last good; else ": <reason> (<ids>), …" for the first reasons (most sandboxes
// first), each naming its first sandboxes: what an operator asks of a partial re-projection (the event
// is cut to a verifiable-log entry's size by the store if it must be).
std::string KeptSummary(const std::map<std::string, std::vector<std::string>>& kept_by_reason) {
  constexpr size_t kReasons = 4, kIdsPerReason = 10;
  if (kept_by_reason.empty()) return "";
  std::vector<const std::pair<const std::string, std::vector<std::string>>*> order;
  for (const auto& entry : kept_by_reason) order.push_back(&entry);
  std::stable_sort(order.begin(), order.end(), [](const auto* a, const auto* b) { return a->second.size() > b->second.size(); });
  std::vector<std::string> parts;
  for (size_t i = 0; i < order.size() && i < kReasons; ++i) {
    const auto& [reason, ids] = *order[i];
    std::vector<std::string> named(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(std::min(ids.size(), kIdsPerReason)));
    parts.push_back(absl::StrCat(reason, " (", ids.size(), ": ", absl::StrJoin(named, ", "),
                                 ids.size() > kIdsPerReason ? absl::StrCat(" and ", ids.size() - kIdsPerReason, " more") : "",
                                 ")"));
  }
  if (order.size() > kReasons) parts.push_back(absl::StrCat("and ", order.size() - kReasons, " other reason(s)"));
  return absl::StrCat(": ", absl::StrJoin(parts, "; "));
}


// Runs fn(0..n-1) on up to hardware_concurrency threads (this one included), logging progress every 5 s
// for a large scope so an operator sees a long change advance.
void ParallelFor(size_t n, const std::function<void(size_t)>& fn, const std::string& scope) {
  const size_t threads = std::min<size_t>(std::max(1u, std::thread::hardware_concurrency()), n / 64 + 1);
  std::atomic<size_t> next{0}, done{0};
  std::atomic<bool> finished{false};
  std::thread progress;
  if (n >= 1000) {
    progress = std::thread([&] {
      const absl::Time started = absl::Now();
      absl::Time last = started;
      while (!finished.load()) {
        absl::SleepFor(absl::Milliseconds(100));
        if (absl::Now() - last >= absl::Seconds(5)) {
          last = absl::Now();
          LogInfo(absl::StrCat("re-projection of scope ", scope, ": ", done.load(), " of ", n, " projection(s) signed and checked in ",
                               absl::FormatDuration(absl::Trunc(last - started, absl::Seconds(1)))));
        }
      }
    });
  }
  auto work = [&] {
    for (size_t i = next++; i < n; i = next++) {
      fn(i);
      ++done;
    }
  };
  std::vector<std::thread> helpers;
  for (size_t t = 1; t < threads; ++t) helpers.emplace_back(work);
  work();
  for (auto& helper : helpers) helper.join();
  finished = true;
  if (progress.joinable()) progress.join();
}

}  // namespace

Reprojector::Reprojector(const Config& config, store::SandboxStore* store, bool shared, drivers::PolicyDriver* driver,
                         SandboxRegistry* registry, ProjectionGate* gate, const store::Clock* clock)
    : config_(config), store_(store), shared_(shared), driver_(driver), registry_(registry), gate_(gate), clock_(clock) {}

Reprojector::Outcome Reprojector::Run(const std::string& scope, const trust::TrustStore* trust, bool announce) {
  for (int attempt = 0; attempt <= 3; ++attempt) {
    if (auto outcome = Attempt(scope, trust, announce)) return *outcome;
    // Another ceiling was stored since the check: load it and re-project against it.
    if (absl::Status loaded = gate_->ceiling().Load(trust, clock_->NowUnix(), config_.clock_skew_s); !loaded.ok()) {
      LogError(absl::StrCat("re-projection of scope ", scope, ": ", loaded.message(), "; nothing moved"));
      return Outcome{.failed = true};
    }
  }
  LogError(absl::StrCat("re-projection of scope ", scope, ": the ceiling or the policy revisions kept changing; nothing moved"));
  return Outcome{.failed = true};
}

std::optional<Reprojector::Outcome> Reprojector::Attempt(const std::string& scope, const trust::TrustStore* trust,
                                                         bool announce) {
  drivers::PolicyAuthoring* authoring = driver_->authoring();
  const auto ceiling = gate_->ceiling().current();  // every group is checked against this one, and the commit says so
  // Taken before any projection is fetched: what they are made from is at least this new. The commit
  // says so for the scopes its sandboxes resolve through, and is refused if one of them has a newer
  // revision in the store than this driver knows (another replica's, not yet brought by the feed).
  std::optional<std::map<std::string, uint64_t>> known_revisions;
  if (authoring != nullptr) known_revisions = authoring->KnownRevisions();
  std::set<std::string> resolved_through;  // the scopes of the sandboxes this attempt may write
  // The admitted sandboxes whose effective policy may come from `scope`.
  const bool all = scope == policy::kDefaultScope;
  auto members = registry_->Select([&](const std::string& context_bytes) {
    if (all) return true;
    driver_v1::RuntimeContext context;
    if (!context.ParseFromString(context_bytes)) return false;
    const auto scopes = policy::ScopesFor(context);
    return std::find(scopes.begin(), scopes.end(), scope) != scopes.end();
  });
  // Sandboxes whose projection key is equal get byte-identical projections: fetch, check and store one
  // per group (PolicyAuthoring::ProjectionKey), not one per sandbox.
  struct Group {
    std::vector<const AdmittedSandbox*> members;
    driver_v1::RuntimeContext context;  // of the first member
  };
  absl::flat_hash_map<std::string, Group> groups;
  size_t current = 0;  // already served what the driver serves now (another replica moved them, or nothing changed)
  for (const auto& m : members) {
    driver_v1::RuntimeContext context;
    context.ParseFromString(m->context_bytes);
    if (authoring != nullptr && authoring->IsCurrent(context, m->envelope->Header())) {
      ++current;
      continue;
    }
    if (known_revisions) {
      for (auto& s : policy::ScopesFor(context)) resolved_through.insert(std::move(s));
    }
    std::string key = authoring != nullptr ? authoring->ProjectionKey(context) : "";
    if (key.empty()) key = absl::StrCat("sandbox\n", m->sandbox_id);  // no promise: one group each
    auto& group = groups[key];
    if (group.members.empty()) group.context = std::move(context);
    group.members.push_back(m.get());
  }

  const Verification verification = ProjectionGate::VerificationWith(trust);
  const int64_t now = clock_->NowUnix();
  store::ChangeBatch batch;
  std::map<std::string, size_t> moved_by_digest;
  std::vector<store::AuditEvent> per_sandbox;  // with the verifiable log: one event per sandbox moved
  size_t unchanged = current, kept = 0;
  // Who kept the last good, by reason: named in the summary event (review 117: it gave a count alone).
  std::map<std::string, std::vector<std::string>> kept_by_reason;
  auto keep_one = [&](const std::string& sandbox_id, const std::string& message) {
    batch.changes.push_back(store::change::SetRefreshError{sandbox_id, message});
    kept_by_reason[message].push_back(sandbox_id);
    ++kept;
  };
  auto keep_last_good = [&](const Group& group, const std::string& message) {
    for (const auto* m : group.members) keep_one(m->sandbox_id, message);
  };
  // Fetch, sign (the driver) and check one projection per group — in parallel: with context binding a
  // scope of 100k sandboxes is 100k groups, each a signature and a verify (issue 25.16). Then the batch is
  // built in order, alone.
  struct Verdict {
    std::string refused;  // non-empty: the group keeps the last good, with this message
    store::EnvelopePtr envelope;
    std::vector<std::string> key_ids;
  };
  std::vector<Group*> order;
  order.reserve(groups.size());
  for (auto& [key, group] : groups) order.push_back(&group);
  std::vector<Verdict> verdicts(order.size());
  auto decide = [&](size_t i) {
    const Group& group = *order[i];
    Verdict& verdict = verdicts[i];
    const auto* first = group.members.front();
    auto response = driver_->GetProjection(first->driver_handle, first->envelope->Header().surface_id());
    if (!response.ok()) {
      verdict.refused = std::string(DriverError(response.status(), "GetProjection").message());
      return;
    }
    if (response->has_no_verified_policy()) {
      verdict.refused = absl::StrCat(trust::reason::kNoVerifiedPolicy, ": ", response->no_verified_policy().reason());
      return;
    }
    driver_v1::Projection projection = std::move(*response->mutable_projection());
    projection.DiscardUnknownFields();
    // Once per group (rollback is judged per member below), against the ceiling of this attempt.
    const ProjectionGate::Verdict checked = gate_->CheckNew(projection, group.context, now, std::nullopt, trust, &ceiling);
    if (!checked.ok()) {
      verdict.refused = checked.result.Message();
      return;
    }
    const trust::CheckResult& result = checked.result;
    verdict.envelope = store_->envelopes().Intern(std::move(projection));
    verdict.key_ids = result.verified_key_ids;
  };
  ParallelFor(order.size(), decide, scope);
  for (size_t i = 0; i < order.size(); ++i) {
    const Group& group = *order[i];
    Verdict& verdict = verdicts[i];
    if (!verdict.refused.empty()) {
      keep_last_good(group, verdict.refused);
      continue;
    }
    const store::EnvelopePtr& envelope = verdict.envelope;
    const uint64_t version = envelope->policy_version();
    // Each member named with the handle it was listed under: one deleted and admitted again while this
    // re-projection ran (another context, whose projection was not asked for) is not moved (review 117).
    store::change::ReplaceProjection move{{}, envelope, verification, std::move(verdict.key_ids), now, false, nullptr, {}};
    for (const auto* m : group.members) {
      if (m->envelope->SameAs(*envelope)) {
        ++unchanged;
      } else if (version < m->envelope->policy_version()) {
        keep_one(m->sandbox_id, absl::StrCat(trust::reason::kRollback, ": policy_version ", version,
                                             " is older than the admitted ", m->envelope->policy_version()));
      } else {
        move.sandbox_ids.push_back(m->sandbox_id);
        move.handle_sha256s.emplace_back(reinterpret_cast<const char*>(m->handle_sha256.data()), m->handle_sha256.size());
      }
    }
    if (!move.sandbox_ids.empty()) {
      moved_by_digest[envelope->policy_digest()] += move.sandbox_ids.size();
      if (!config_.log_signing_key.empty()) {
        // With the verifiable log, each sandbox's move is an entry of its own, naming it, the digest and
        // the version: the entry its proof (GetLogProof) shows it. Appended after the summary below.
        const auto header = envelope->Header();
        for (const auto& id : move.sandbox_ids) {
          store::AuditEvent moved = AuditRecorder::For(audit::Type::kReprojection, id, &header);
          moved.outcome = audit::Outcome::kOk;
          moved.key_ids = move.key_ids;
          moved.reason = absl::StrCat("scope ", scope);
          per_sandbox.push_back(std::move(moved));
        }
      }
      batch.changes.push_back(std::move(move));
    }
  }
  // With replicas, the re-projection of this replica's own change tells the others, who wait for it, and
  // from which revision of the scope it was made.
  const bool announced_to_replicas = announce && shared_ && known_revisions;
  auto announce_into = [&](store::ChangeBatch& b) {
    if (!announced_to_replicas) return;
    b.reprojected_scope = scope;
    if (const auto known = known_revisions->find(scope); known != known_revisions->end()) {
      b.reprojected_revision = known->second;
    }
  };
  if (batch.changes.empty()) {
    // Nothing to move. The others still wait for this re-projection of the revision (they may hold
    // sandboxes this replica does not know yet): an announcement alone tells them it is done.
    if (announced_to_replicas) {
      store::ChangeBatch announced;
      announce_into(announced);
      if (auto committed = store_->Commit(std::move(announced)); !committed.ok()) {
        LogWarning(absl::StrCat("re-projection of scope ", scope, ": nothing to move, but the other replicas could not ",
                                "be told so; trying again: ", committed.status().ToString()));
        return Outcome{.failed = true};
      }
    }
    return Outcome{};
  }
  // One summary event for the whole change: every sandbox of the scope moves in this one transaction.
  store::AuditEvent event;
  event.type = audit::Type::kReprojection;
  event.outcome = kept == 0 ? audit::Outcome::kOk : audit::Outcome::kPartial;
  std::vector<std::string> parts;
  for (const auto& [digest, n] : moved_by_digest) parts.push_back(absl::StrCat(n, " to ", digest));
  event.reason = absl::StrCat("scope ", scope, ": ", absl::StrJoin(parts, ", "), parts.empty() ? "none moved" : "",
                              "; ", unchanged, " unchanged; ", kept, " kept the last good", KeptSummary(kept_by_reason));
  if (moved_by_digest.size() == 1) event.policy_digest = moved_by_digest.begin()->first;
  batch.moves_summary = batch.events.size();  // the store names the members it passed by in it
  batch.events.push_back(std::move(event));
  for (auto& moved : per_sandbox) batch.events.push_back(std::move(moved));
  batch.checked_ceiling = CeilingGuard::StampOf(ceiling);
  announce_into(batch);  // the other replicas need not re-project it for the revision too
  if (known_revisions) {
    std::map<std::string, uint64_t> checked;
    for (const auto& s : resolved_through) {
      const auto known = known_revisions->find(s);
      checked.emplace(s, known == known_revisions->end() ? 0 : known->second);
    }
    batch.checked_revisions = std::move(checked);
  }
  auto committed = store_->Commit(std::move(batch));
  if (store::IsCeilingChanged(committed.status())) return std::nullopt;
  if (store::IsPolicyChanged(committed.status())) {
    // A revision this driver was not told of (another replica's, not yet brought by the feed): what was
    // fetched may be older than what that replica put in force. Nothing moved; the driver re-reads the
    // revisions from the store and the whole attempt runs again.
    LogWarning(absl::StrCat("re-projection of scope ", scope, ": ", committed.status().message(),
                            "; nothing moved, re-reading the policy revisions and running it again"));
    if (absl::Status reloaded = authoring->ReloadRevisions(); !reloaded.ok()) {
      LogError(absl::StrCat("re-projection of scope ", scope, ": re-reading the policy revisions: ", reloaded.ToString()));
      return Outcome{.failed = true};
    }
    return std::nullopt;
  }
  if (!committed.ok()) {
    LogError(absl::StrCat("re-projection of scope ", scope, " failed; nothing moved: ", committed.status().ToString()));
    return Outcome{.failed = true};
  }
  Outcome outcome;
  for (const auto& [digest, n] : moved_by_digest) outcome.moved += static_cast<uint32_t>(n);
  // Listed, then passed by in the transaction (deleted and admitted again meanwhile): not moved.
  outcome.moved -= static_cast<uint32_t>(std::min<size_t>(committed->passed_by.size(), outcome.moved));
  if (!committed->passed_by.empty()) {
    LogInfo(store::SummaryNamingPassedBy(absl::StrCat("re-projection of scope ", scope, " committed"), committed->passed_by));
  }
  outcome.kept = static_cast<uint32_t>(kept);
  if (kept > 0) {
    LogWarning(absl::StrCat("re-projection of scope ", scope, ": ", kept, " sandbox(es) kept the last good",
                            KeptSummary(kept_by_reason)));
  }
  return outcome;
}

}  // namespace osh::gateway
