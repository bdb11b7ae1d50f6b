#include "gateway/server/metrics.h"

#include <dirent.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/errors.h"
#include "gateway/core/interceptor_evaluator.h"
#include "gateway/core/interceptor_payload.h"

namespace osh::gateway {
namespace {

// Latency buckets (seconds): 0.5 ms to 10 s.
constexpr double kBuckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
constexpr size_t kBucketCount = sizeof(kBuckets) / sizeof(kBuckets[0]);

// A label value as the exposition format quotes it: backslash, double quote and newline escaped.
std::string Quoted(absl::string_view value) {
  std::string out;
  for (char c : value) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

template <typename Labels>
std::string LabelText(const Labels& labels, absl::string_view extra_name = "", absl::string_view extra_value = "") {
  std::vector<std::string> parts;
  for (const auto& [name, value] : labels) parts.push_back(absl::StrCat(name, "=\"", Quoted(value), "\""));
  if (!extra_name.empty()) parts.push_back(absl::StrCat(extra_name, "=\"", extra_value, "\""));
  return parts.empty() ? "" : absl::StrCat("{", absl::StrJoin(parts, ","), "}");
}

std::string Number(double value) { return absl::StrFormat("%.15g", value); }

void Header(std::string* out, absl::string_view name, absl::string_view type, absl::string_view help) {
  absl::StrAppend(out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
}

void Gauge(std::string* out, absl::string_view name, absl::string_view help, double value) {
  Header(out, name, "gauge", help);
  absl::StrAppend(out, name, " ", Number(value), "\n");
}

// Resident memory, open descriptors and CPU seconds of this process, from /proc.
struct ProcessFigures {
  double resident_bytes = 0;
  double open_fds = 0;
  double cpu_seconds = 0;
};
ProcessFigures ReadProcess() {
  ProcessFigures figures;
  std::ifstream statm("/proc/self/statm");
  uint64_t size = 0, resident = 0;
  if (statm >> size >> resident) figures.resident_bytes = static_cast<double>(resident) * ::sysconf(_SC_PAGESIZE);
  if (DIR* dir = ::opendir("/proc/self/fd")) {
    while (const dirent* entry = ::readdir(dir)) figures.open_fds += entry->d_name[0] != '.' ? 1 : 0;
    ::closedir(dir);
  }
  std::ifstream stat("/proc/self/stat");
  std::string line;
  if (std::getline(stat, line)) {
    // Fields after the command name (which may hold spaces) start at ") "; utime and stime are 14 and 15.
    const size_t end = line.rfind(") ");
    if (end != std::string::npos) {
      std::vector<std::string> fields = absl::StrSplit(line.substr(end + 2), ' ');
      if (fields.size() > 13) {
        const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
        figures.cpu_seconds = (std::stod(fields[11]) + std::stod(fields[12])) / ticks;
      }
    }
  }
  return figures;
}

}  // namespace

Metrics::Metrics() : started_(absl::Now()) {}

void Metrics::Observe(std::map<Labels, Histogram>* histograms, const Labels& labels, double seconds) {
  Histogram& h = (*histograms)[labels];
  if (h.buckets.empty()) h.buckets.assign(kBucketCount, 0);
  for (size_t i = 0; i < kBucketCount; ++i) {
    if (seconds <= kBuckets[i]) {
      ++h.buckets[i];
      break;
    }
  }
  ++h.count;
  h.sum += seconds;
}

void Metrics::ObserveAdminCall(absl::string_view method, const absl::Status& status, absl::Duration took) {
  const std::string code = absl::StatusCodeToString(status.code());
  absl::MutexLock lock(&mu_);
  ++admin_calls_[{{"method", std::string(method)}, {"code", code}}];
  Observe(&admin_latency_, {{"method", std::string(method)}}, absl::ToDoubleSeconds(took));
  if (method == "AdmitSandbox") {
    // Refusals carry their reason code; a refusal without one is named by its status code
    // ("already_exists"); internal failures are errors.
    std::string reason = common::ReasonOf(status);
    const bool internal = status.code() == absl::StatusCode::kInternal || status.code() == absl::StatusCode::kUnknown ||
                          status.code() == absl::StatusCode::kDataLoss;
    if (!status.ok() && reason.empty()) reason = absl::AsciiStrToLower(code);
    const char* outcome = status.ok() ? "admitted" : (internal ? "error" : "refused");
    ++admissions_[{{"outcome", outcome}, {"reason", reason}}];
  }
}

void Metrics::ObserveSandboxCall(absl::string_view call, absl::string_view code) {
  absl::MutexLock lock(&mu_);
  ++sandbox_calls_[{{"call", std::string(call)}, {"code", std::string(code)}}];
}

void Metrics::ObserveWatchEnd(absl::string_view reason) {
  absl::MutexLock lock(&mu_);
  ++watch_ends_[{{"reason", std::string(reason)}}];
}

void Metrics::ObserveWatchStallCancel() {
  absl::MutexLock lock(&mu_);
  ++watch_stall_cancels_;
}

void Metrics::ObserveDriverCall(absl::string_view method, absl::string_view code, absl::Duration took) {
  absl::MutexLock lock(&mu_);
  ++driver_calls_[{{"method", std::string(method)}, {"code", std::string(code)}}];
  Observe(&driver_latency_, {{"method", std::string(method)}}, absl::ToDoubleSeconds(took));
}

void Metrics::ObserveInterceptorCall(absl::string_view method, absl::string_view phase, absl::string_view decision,
                                     absl::Duration took) {
  absl::MutexLock lock(&mu_);
  ++interceptor_calls_[{{"method", std::string(method)}, {"phase", std::string(phase)}, {"decision", std::string(decision)}}];
  Observe(&interceptor_latency_, {{"method", std::string(method)}, {"phase", std::string(phase)}}, absl::ToDoubleSeconds(took));
}

void Metrics::ObserveInterceptorPush(absl::string_view outcome) {
  absl::MutexLock lock(&mu_);
  ++interceptor_pushes_[{{"outcome", std::string(outcome)}}];
}

void Metrics::ObserveStoreCommit(absl::Duration took) {
  absl::MutexLock lock(&mu_);
  Observe(&store_commit_latency_, {}, absl::ToDoubleSeconds(took));
}

std::string Metrics::Render(const Snapshot& s) const {
  std::string out;
  auto counters = [&out](absl::string_view name, absl::string_view help, const std::map<Labels, uint64_t>& values) {
    Header(&out, name, "counter", help);
    for (const auto& [labels, value] : values) absl::StrAppend(&out, name, LabelText(labels), " ", value, "\n");
  };
  auto histograms = [&out](absl::string_view name, absl::string_view help, const std::map<Labels, Histogram>& values) {
    Header(&out, name, "histogram", help);
    for (const auto& [labels, h] : values) {
      uint64_t cumulative = 0;
      for (size_t i = 0; i < kBucketCount; ++i) {
        cumulative += h.buckets[i];
        absl::StrAppend(&out, name, "_bucket", LabelText(labels, "le", Number(kBuckets[i])), " ", cumulative, "\n");
      }
      absl::StrAppend(&out, name, "_bucket", LabelText(labels, "le", "+Inf"), " ", h.count, "\n");
      absl::StrAppend(&out, name, "_sum", LabelText(labels), " ", Number(h.sum), "\n");
      absl::StrAppend(&out, name, "_count", LabelText(labels), " ", h.count, "\n");
    }
  };
  {
    absl::MutexLock lock(&mu_);
    counters("policy_gateway_admissions_total", "Admissions by outcome (admitted, refused, error) and reason code.",
             admissions_);
    counters("policy_gateway_admin_calls_total", "Admin (PolicyGateway) calls by method and status code.", admin_calls_);
    histograms("policy_gateway_admin_call_duration_seconds", "Admin call latency by method.", admin_latency_);
    counters("policy_gateway_sandbox_calls_total",
             "Sandbox calls (GetProjection, WatchProjection, ReportPolicyStatus) by status code.", sandbox_calls_);
    counters("policy_gateway_watch_ends_total", "Watch streams that ran, by why they ended.", watch_ends_);
    counters("policy_gateway_watch_stall_cancels_total",
             "Ended watch streams cancelled because their reader took nothing for watch_stall_s.",
             {{Labels{}, watch_stall_cancels_}});
    counters("policy_gateway_driver_calls_total", "Calls to the policy driver by method and status code.", driver_calls_);
    histograms("policy_gateway_driver_call_duration_seconds", "Policy driver call latency by method.", driver_latency_);
    histograms("policy_gateway_store_commit_duration_seconds", "Store transaction commit (fsync) latency.",
               store_commit_latency_);
    counters("policy_gateway_interceptor_calls_total",
             "OpenShell gateway interceptor calls by intercepted method, phase and decision.", interceptor_calls_);
    histograms("policy_gateway_interceptor_call_duration_seconds",
               "OpenShell gateway interceptor call latency by intercepted method and phase.", interceptor_latency_);
    counters("policy_gateway_interceptor_pushes_total",
             "Admit mode's pushes of changed projections to the OpenShell gateway by outcome.", interceptor_pushes_);
  }
  {
    const InterceptorMemoStats memo = InterceptorPayloadMemoStats();
    const InterceptorEvaluatorMemoStats evaluator_memo = InterceptorEvaluatorMemoCounts();
    const std::map<Labels, uint64_t> memo_counts = {
        {{{"memo", "decoded"}, {"result", "hit"}}, memo.decoded.hits},
        {{{"memo", "decoded"}, {"result", "miss"}}, memo.decoded.misses},
        {{{"memo", "encoded"}, {"result", "hit"}}, memo.encoded.hits},
        {{{"memo", "encoded"}, {"result", "miss"}}, memo.encoded.misses},
        {{{"memo", "composed"}, {"result", "hit"}}, evaluator_memo.composed.hits},
        {{{"memo", "composed"}, {"result", "miss"}}, evaluator_memo.composed.misses},
        {{{"memo", "record_encoded"}, {"result", "hit"}}, evaluator_memo.record_encoded.hits},
        {{{"memo", "record_encoded"}, {"result", "miss"}}, evaluator_memo.record_encoded.misses},
    };
    counters("policy_gateway_interceptor_memo_total",
             "Interceptor memos (decoded requests, encoded patch values, compositions, record encodings) by result.",
             memo_counts);
  }
  Gauge(&out, "policy_gateway_admitted_sandboxes", "Sandboxes admitted and served.", s.admitted_sandboxes);
  Gauge(&out, "policy_gateway_watchers", "Open WatchProjection streams.", s.watchers);
  Gauge(&out, "policy_gateway_driver_up", "1 while the policy driver is reachable.", s.driver_up ? 1 : 0);
  Gauge(&out, "policy_gateway_pending_releases", "Driver-handle releases queued for delivery.", s.pending_releases);
  Gauge(&out, "policy_gateway_refresh_errors", "Admitted sandboxes whose last refresh failed.", s.refresh_errors);
  Gauge(&out, "policy_gateway_reprojections_pending",
        "Policy scopes whose re-projection is queued (one that failed waits out its retry pause; one another replica "
        "changed waits for that replica's re-projection).",
        s.reprojections_pending);
  Gauge(&out, "policy_gateway_revoked_sandboxes", "Sandboxes refused to fetchers after a key revocation.",
        s.revoked_sandboxes);
  Gauge(&out, "policy_gateway_possibly_leaked_handles",
        "Driver handles that may have leaked (a driver that ignores idempotency keys).", s.possibly_leaked_handles);
  Gauge(&out, "policy_gateway_database_reachable", "1 while the database answers (always 1 for SQLite).",
        s.database_reachable ? 1 : 0);
  Gauge(&out, "policy_gateway_live_replicas", "Gateways sharing the database whose heartbeat is fresh (1 for SQLite).",
        s.live_replicas);
  Gauge(&out, "policy_gateway_feed_changes_behind",
        "Changes committed in the database that this replica's change feed has not read yet (0 for SQLite).",
        s.feed_changes_behind);
  Gauge(&out, "policy_gateway_feed_read_age_seconds",
        "Seconds since this replica's change feed last read the database (0 for SQLite).",
        static_cast<double>(s.feed_read_age_ms) / 1000.0);
  Gauge(&out, "policy_gateway_audit_head_seq", "Sequence number of the newest audit event.", s.audit_head_seq);
  Header(&out, "policy_gateway_store_transactions_total", "counter", "Store commits (each one fsync).");
  absl::StrAppend(&out, "policy_gateway_store_transactions_total ", s.store_transactions, "\n");
  Header(&out, "policy_gateway_store_writes_total", "counter", "Store writes, several per commit under load.");
  absl::StrAppend(&out, "policy_gateway_store_writes_total ", s.store_writes, "\n");
  Header(&out, "policy_gateway_sandboxes_by_drift", "gauge",
         "Admitted sandboxes by drift state (in_sync, not_reported, load_failed, refresh_pending, "
         "refused_by_ceiling, refresh_failed).");
  for (const auto& [state, count] : s.sandboxes_by_drift) {
    absl::StrAppend(&out, "policy_gateway_sandboxes_by_drift", LabelText(Labels{{"state", state}}), " ", count, "\n");
  }
  Gauge(&out, "policy_gateway_audit_streams", "Open WatchAuditEvents and WatchSandboxes streams.", s.audit_streams);
  Gauge(&out, "policy_gateway_trust_keys", "Keys in the trust store in force.", static_cast<double>(s.trust_keys.size()));
  Header(&out, "policy_gateway_trust_key_not_after_timestamp_seconds", "gauge",
         "When each trusted key stops counting (keys with a not_after only).");
  for (const auto& key : s.trust_keys) {
    if (key.not_after_unix == 0) continue;
    absl::StrAppend(&out, "policy_gateway_trust_key_not_after_timestamp_seconds",
                    LabelText(Labels{{"key_id", key.key_id}, {"revoked", key.revoked ? "true" : "false"}}), " ",
                    key.not_after_unix, "\n");
  }
  const ProcessFigures process = ReadProcess();
  Gauge(&out, "process_start_time_seconds", "Start time of the process since the Unix epoch.",
        absl::ToDoubleSeconds(started_ - absl::UnixEpoch()));
  Gauge(&out, "process_resident_memory_bytes", "Resident memory size in bytes.", process.resident_bytes);
  Gauge(&out, "process_open_fds", "Open file descriptors.", process.open_fds);
  Header(&out, "process_cpu_seconds_total", "counter", "User and system CPU time in seconds.");
  absl::StrAppend(&out, "process_cpu_seconds_total ", Number(process.cpu_seconds), "\n");
  return out;
}

}  // namespace osh::gateway
