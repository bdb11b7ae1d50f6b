#include "store/migrate.h"

#include "absl/strings/str_cat.h"
#include "common/errors.h"
#include "openshell/policy/ceiling/v1/ceiling.pb.h"

namespace osh::store {
namespace {

absl::Status Step(const absl::Status& status, const char* what) {
  return common::Annotated(status, what);
}

}  // namespace

absl::StatusOr<MigrationReport> MigrateStore(Database& source, Database& target, const MigrationOptions& options,
                                             const std::function<void(const std::string&)>& progress) {
  Importer* const importer = target.importer();
  if (importer == nullptr) {
    return absl::UnimplementedError("this kind of database cannot be migrated into (the target must be PostgreSQL)");
  }
  auto say = [&](const std::string& line) {
    if (progress) progress(line);
  };
  for (auto [store, side] : {std::pair{&source, "the source"}, std::pair{&target, "the target"}}) {
    const ReplicaStatus replicas = store->replication().replica_status();
    if (!replicas.database_reachable) return absl::UnavailableError(absl::StrCat(side, " cannot be reached"));
    if (replicas.database_kind == "postgresql" && replicas.live_replicas > 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          side, " has ", replicas.live_replicas,
          " live gateway replica(s) (a heartbeat within the last 10 s): stop every gateway on either database first"));
    }
  }
  MigrationReport report;
  if (options.begin == Importer::Begin::kResume) {
    // Checked before anything is written: a chain that is not a prefix of the source's is left as it is.
    auto marker = importer->MigrationMarker();
    if (!marker.ok()) return Step(marker.status(), "reading the target's migration marker");
    if (!marker->has_value()) {
      return absl::FailedPreconditionError("the target database holds no unfinished migration: there is nothing to --resume");
    }
    if ((*marker)->source != options.source_name) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the target's unfinished migration is from ", (*marker)->source, ", not from ", options.source_name,
          ": --resume continues only the same source's copy (--replace-target copies again)"));
    }
    const AuditLog::ChainHead copied = target.audit().AuditChainHead();
    if (copied.seq > 0) {
      auto same = source.audit().ListAuditEvents(copied.seq - 1, 1);
      if (!same.ok()) return Step(same.status(), "reading the audit chain");
      if (same->empty() || same->front().seq != copied.seq || same->front().hash != copied.hash) {
        return absl::DataLossError(absl::StrCat(
            "the target's copy of the audit chain (to seq ", copied.seq,
            ") is not a prefix of the source's chain: the source changed since the migration was interrupted; "
            "run with --replace-target to copy again from the start"));
      }
    }
    report.resumed_after = copied.seq;
  }
  if (absl::Status s = importer->BeginImport(options.source_name, options.begin); !s.ok()) {
    return Step(s, "marking the target");
  }
  StoreImage image;
  auto sandboxes = source.sandboxes().LoadSandboxes();
  if (!sandboxes.ok()) return Step(sandboxes.status(), "reading sandboxes");
  image.sandboxes = *std::move(sandboxes);
  auto releases = source.releases().PendingReleases();
  if (!releases.ok()) return Step(releases.status(), "reading pending releases");
  image.releases = *std::move(releases);
  auto revisions = source.revisions().ListPolicyRevisions("", 0, 0, /*bodies=*/true);
  if (!revisions.ok()) return Step(revisions.status(), "reading policy revisions");
  image.revisions = *std::move(revisions);
  auto ceiling = source.ceiling().LoadCeiling();
  if (!ceiling.ok()) return Step(ceiling.status(), "reading the ceiling");
  if (*ceiling) {
    openshell::policy::ceiling::v1::Ceiling parsed;
    if (!parsed.ParseFromString(**ceiling)) return absl::DataLossError("reading the ceiling: it does not decode");
    image.ceiling = **ceiling;
    image.ceiling_version = parsed.version();
  }
  auto records = source.interceptor_records().ListInterceptorRecords();
  if (!records.ok()) return Step(records.status(), "reading the interceptor's records");
  image.interceptor_records = *std::move(records);
  auto profiles = source.provider_profiles().ListProviderProfiles();
  if (!profiles.ok()) return Step(profiles.status(), "reading the provider-profile catalogue");
  image.provider_profiles = *std::move(profiles);
  report.sandboxes = image.sandboxes.size();
  report.pending_releases = image.releases.size();
  report.policy_revisions = image.revisions.size();
  report.ceiling = image.ceiling.has_value();
  report.interceptor_records = image.interceptor_records.size();
  report.provider_profiles = image.provider_profiles.size();
  say(absl::StrCat("copying ", report.sandboxes, " sandbox(es), ", report.pending_releases, " pending release(s), ",
                   report.policy_revisions, " policy revision(s), ", report.interceptor_records,
                   " interceptor record(s), ", report.provider_profiles, " provider profile(s)", report.ceiling ? " and the ceiling" : ""));
  if (absl::Status s = importer->ImportImage(image); !s.ok()) return Step(s, "writing the state");

  const AuditLog::ChainHead source_head = source.audit().AuditChainHead();
  const uint32_t kPage = options.audit_page == 0 ? 1000 : options.audit_page;
  if (report.resumed_after > 0) {
    say(absl::StrCat("audit chain: resuming after seq ", report.resumed_after, " (checked against the source's)"));
  }
  for (uint64_t after = report.resumed_after;;) {
    auto page = source.audit().ListAuditEvents(after, kPage);
    if (!page.ok()) return Step(page.status(), "reading the audit chain");
    if (page->empty()) break;
    if (absl::Status s = importer->ImportAuditEvents(*page); !s.ok()) return Step(s, "writing the audit chain");
    report.audit_events += page->size();
    after = page->back().seq;
    if (options.after_audit_page) options.after_audit_page(after);
    if (report.audit_events % (100 * kPage) == 0) {
      say(absl::StrCat("audit chain: ", after, " of ", source_head.seq, " event(s)"));
    }
  }
  // The final commit: the marker goes only if the target's chain ends on the source's head.
  if (absl::Status s = importer->FinishImport(source_head); !s.ok()) return Step(s, "finishing");
  report.head = target.audit().AuditChainHead();
  if (report.head.seq != source_head.seq || report.head.hash != source_head.hash) {
    return absl::DataLossError(absl::StrCat("the copied chain ends at seq ", report.head.seq, ", the source's at ",
                                            source_head.seq));
  }
  return report;
}

}  // namespace osh::store
