// Hostile inputs (issue 15) against the core in process: bounded admission contexts, bounded and escaped
// report text, a per-sandbox report rate, and audit pages bounded by bytes.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

#include <catch2/catch.hpp>

#include "absl/strings/str_cat.h"
#include <filesystem>

#include "absl/strings/match.h"
#include "gateway/core/context_limits.h"
#include "gateway/server/status_conversion.h"
#include "store/sqlite_db.h"
#include "policy/policy_file.h"
#include "tests/in_process_core.h"
#include "trust/secure_path.h"
#include "trust/keys.h"
#include "trust/trust_store.h"

namespace gw = openshell::policy::gateway::v1;
namespace drv = openshell::policy::driver::v1;
using osh::test::InProcessCore;

namespace {

drv::RuntimeContext Context(const std::string& id) {
  drv::RuntimeContext context;
  context.set_sandbox_id(id);
  context.set_user_subject("alice@example.com");
  return context;
}

// An admitted sandbox in a core with the restrictive default policy.
struct Admitted {
  InProcessCore t;
  gw::AdmitSandboxResponse sandbox;
  explicit Admitted(const std::function<void(osh::gateway::Config&)>& configure = nullptr) : t(configure) {
    gw::SetPolicyRequest set;
    set.set_scope("default");
    *set.mutable_policy() = osh::policy::RestrictiveDefaultPolicy();
    REQUIRE(t.core->SetPolicy(set).ok());
    auto admitted = t.core->Admit(Context("sb-1"));
    REQUIRE(admitted.ok());
    sandbox = *admitted;
  }
  absl::Status Report(const std::string& error) {
    gw::ReportPolicyStatusRequest report;
    report.set_policy_digest(sandbox.policy_digest());
    report.set_status(gw::FAILED);
    report.set_error(error);
    return t.core->Report("sb-1", report);
  }
};

}  // namespace

TEST_CASE("limits: admission contexts are bounded and free of control characters, naming the field", "[limits][core]") {
  InProcessCore t;
  gw::SetPolicyRequest set;
  set.set_scope("default");
  *set.mutable_policy() = osh::policy::RestrictiveDefaultPolicy();
  REQUIRE(t.core->SetPolicy(set).ok());
  auto refused = [&](const drv::RuntimeContext& context, const std::string& field) {
    auto admitted = t.core->Admit(context);
    INFO(admitted.status());
    CHECK(absl::IsInvalidArgument(admitted.status()));
    CHECK(absl::StartsWith(admitted.status().message(), field));
    CHECK(admitted.status().message().size() < 300);  // the message quotes nothing unbounded
  };
  refused(Context(std::string(3 << 20, 'x')), "context.sandbox_id: 3145728 bytes, at most 256");
  refused(Context("sb\nINFO forged log line"), "context.sandbox_id: control characters");
  refused(Context("sb-\xff"), "context.sandbox_id: not valid UTF-8");
  drv::RuntimeContext subject = Context("sb-2");
  subject.set_user_subject(std::string(5000, 's'));
  refused(subject, "context.user_subject: 5000 bytes");
  drv::RuntimeContext many = Context("sb-3");
  for (int i = 0; i < 250000; ++i) (*many.mutable_attributes())["k" + std::to_string(i)] = "v";
  refused(many, "context.attributes: 250000 entries, at most 64");
  drv::RuntimeContext long_key = Context("sb-4");
  (*long_key.mutable_attributes())[std::string(10000, 'k')] = "v";
  refused(long_key, "context.attributes: key \"kkkk");
  drv::RuntimeContext long_value = Context("sb-5");
  (*long_value.mutable_attributes())["team"] = std::string(2000, 'v');
  refused(long_value, "context.attributes[\"team\"]: 2000 bytes, at most 1024");
  // Nothing was admitted or audited by the refusals; the limits themselves admit.
  CHECK(t.registry.size() == 0);
  drv::RuntimeContext fits = Context(std::string(256, 'i'));
  fits.set_user_subject("bob@example.com");
  for (int i = 0; i < 64; ++i) (*fits.mutable_attributes())[std::string(120, 'a') + std::to_string(i)] = std::string(1024, 'v');
  CHECK(t.core->Admit(fits).ok());
}

TEST_CASE("limits: a report's error text is cut at 4 KiB with a marker, control characters escaped", "[limits][core]") {
  Admitted a;
  REQUIRE(a.Report(std::string(3900000, 'e')).ok());
  auto info = a.t.core->GetSandbox("sb-1");
  REQUIRE(info.ok());
  CHECK(info->load_error().size() < osh::gateway::Limits().max_report_error_bytes + 64);
  CHECK(absl::EndsWith(info->load_error(), "…[truncated, 3900000 bytes]"));
  auto events = a.t.store->ListAuditEvents(0, 100);
  REQUIRE(events.ok());
  CHECK(events->back().reason == info->load_error());

  REQUIRE(a.Report("line one\n2026-01-01T00:00:00Z INFO forged\x1b[31m").ok());
  info = a.t.core->GetSandbox("sb-1");
  CHECK(info->load_error() == "line one\\n2026-01-01T00:00:00Z INFO forged\\033[31m");
  // A multi-byte character is never cut in half.
  CHECK(osh::gateway::BoundedText(std::string(10, 'a') + "é", 11) == "aaaaaaaaaa …[truncated, 12 bytes]");
  // Valid UTF-8 that rewrites what a person sees is escaped too: a C1 CSI (U+009B), a right-to-left override
  // (U+202E) and an isolate (U+2066) that reorder the line, a line separator (U+2028), a BOM; other
  // characters pass as they are.
  REQUIRE(a.Report("ok \xc2\x9b" "31m \xe2\x80\xae" "evil\xe2\x81\xa6 x\xe2\x80\xa8y \xef\xbb\xbf é ü 名").ok());
  info = a.t.core->GetSandbox("sb-1");
  CHECK(info->load_error() == "ok \\u009b31m \\u202eevil\\u2066 x\\u2028y \\ufeff é ü 名");
  CHECK(osh::gateway::BoundedText("\xc2\x80\xc2\x9f\xc2\xa0\xd8\x9c\xe2\x80\x8e\xe2\x80\x8f\xe2\x81\xa9", 100) ==
        "\\u0080\\u009f\xc2\xa0\\u061c\\u200e\\u200f\\u2069");
}

TEST_CASE("limits: reports are rate-limited per sandbox, refilled over time", "[limits][core]") {
  Admitted a;
  int accepted = 0;
  absl::Status last;
  for (int i = 0; i < 100; ++i) {
    last = a.Report(absl::StrCat("x", i));
    if (last.ok()) ++accepted;
  }
  CHECK(accepted == osh::gateway::Limits().report_burst);
  CHECK(absl::IsResourceExhausted(last));
  CHECK(absl::StartsWith(last.message(), "rate_limited: "));
  a.t.clock.AdvanceSeconds(1);
  CHECK(a.Report("y1").ok());
  CHECK(a.Report("y2").ok());
  CHECK(absl::IsResourceExhausted(a.Report("y3")));
  // Another sandbox has its own bucket.
  auto other = a.t.core->Admit(Context("sb-2"));
  REQUIRE(other.ok());
  gw::ReportPolicyStatusRequest report;
  report.set_policy_digest(other->policy_digest());
  report.set_status(gw::LOADED);
  CHECK(a.t.core->Report("sb-2", report).ok());
  // The audit log holds what was accepted, nothing of what was refused.
  auto events = a.t.store->ListAuditEvents(0, 1000);
  REQUIRE(events.ok());
  size_t reports = 0;
  for (const auto& e : *events) reports += e.type == osh::trust::audit::Type::kReport ? 1 : 0;
  CHECK(reports == static_cast<size_t>(osh::gateway::Limits().report_burst) + 3);
}

TEST_CASE("limits: an operator's settings replace the defaults for reports and contexts", "[limits][core]") {
  Admitted a([](osh::gateway::Config& config) {
    config.limits.report_burst = 3;
    config.limits.reports_per_second = 1;
    config.limits.max_report_error_bytes = 300;
    config.limits.context.sandbox_id_bytes = 20;
    config.limits.context.attributes = 1;
  });
  REQUIRE(a.Report(std::string(1000, 'e')).ok());
  auto info = a.t.core->GetSandbox("sb-1");
  REQUIRE(info.ok());
  CHECK(info->load_error().size() < 300 + 64);
  CHECK(absl::EndsWith(info->load_error(), "…[truncated, 1000 bytes]"));
  CHECK(a.Report("x").ok());
  CHECK(a.Report("x").ok());
  const absl::Status limited = a.Report("x");
  CHECK(absl::IsResourceExhausted(limited));
  CHECK(limited.message() == "rate_limited: at most 1 reports a second per sandbox (bursts of 3)");
  a.t.clock.AdvanceSeconds(1);
  CHECK(a.Report("x").ok());
  CHECK(absl::IsResourceExhausted(a.Report("x")));

  auto too_long = a.t.core->Admit(Context(std::string(21, 'i')));
  CHECK(absl::IsInvalidArgument(too_long.status()));
  CHECK(absl::StartsWith(too_long.status().message(), "context.sandbox_id: 21 bytes, at most 20"));
  drv::RuntimeContext two = Context("sb-2");
  (*two.mutable_attributes())["a"] = "1";
  (*two.mutable_attributes())["b"] = "2";
  CHECK(absl::StartsWith(a.t.core->Admit(two).status().message(), "context.attributes: 2 entries, at most 1"));
  two.mutable_attributes()->erase("b");
  CHECK(a.t.core->Admit(two).ok());
}

TEST_CASE("limits: with refresh off and nothing expiring, the refresh scan looks at no record", "[limits][core]") {
  // Issue 15 item 14: the scheduler used to copy every record each tick even with nothing to refresh.
  InProcessCore t;
  gw::SetPolicyRequest set;
  set.set_scope("default");
  *set.mutable_policy() = osh::policy::RestrictiveDefaultPolicy();
  REQUIRE(t.core->SetPolicy(set).ok());
  for (int i = 0; i < 50; ++i) REQUIRE(t.core->Admit(Context("sb-" + std::to_string(i))).ok());
  const auto lead = [](int64_t, int64_t) -> int64_t { return 30; };
  for (int tick = 0; tick < 100; ++tick) CHECK(t.registry.TakeDueForRefresh(InProcessCore::kStart + tick, 0, lead).empty());
  CHECK(t.registry.refresh_scan_visits() == 0);
  // With an interval every record is looked at (and is due once the interval has passed).
  CHECK(t.registry.TakeDueForRefresh(InProcessCore::kStart + 3600, 60, lead).size() == 50);
  CHECK(t.registry.refresh_scan_visits() == 50);
}

TEST_CASE("limits: audit pages are bounded by bytes as well as by count", "[limits][core]") {
  Admitted a;
  // 1.6 MB of events: 400 reports of 4000 bytes (the clock moves on whenever the rate limit bites).
  for (int i = 0; i < 400; ++i) {
    if (!a.Report(std::string(4000, 'a' + i % 26)).ok()) {
      a.t.clock.AdvanceSeconds(10);
      REQUIRE(a.Report(std::string(4000, 'a' + i % 26)).ok());
    }
  }
  gw::ListAuditEventsRequest request;
  request.set_limit(1000);
  uint64_t seen = 0;
  int pages = 0;
  while (true) {
    auto page = a.t.core->ListAuditEvents(request);
    REQUIRE(page.ok());
    if (page->events().empty()) break;
    ++pages;
    CHECK(page->ByteSizeLong() <= osh::gateway::kMaxAuditPageBytes + 8192);
    for (const auto& e : page->events()) CHECK(e.seq() == ++seen);
    request.set_after_seq(seen);
  }
  CHECK(seen == a.t.store->AuditChainHead().seq);
  CHECK(pages >= 2);
}

TEST_CASE("limits: a trust store is bounded in size and nesting before it is parsed", "[limits][trust]") {
  // 200 KB of nesting took the JSON parser over 11 minutes; now it is refused before parsing.
  const std::string nested = "{\"keys\": " + std::string(100000, '[') + std::string(100000, ']') + "}";
  auto deep = osh::trust::TrustStore::Parse(nested);
  REQUIRE_FALSE(deep.ok());
  CHECK_THAT(std::string(deep.status().message()), Catch::Contains("nested more than 16 levels deep"));
  // Brackets inside strings do not count.
  auto quoted = osh::trust::TrustStore::Parse("{\"keys\": [], \"revoked_key_ids\": [\"" + std::string(100, '[') + "\"]}");
  CHECK_FALSE(absl::StrContains(quoted.status().message(), "nested"));
  auto huge = osh::trust::TrustStore::Parse("{\"keys\": [], \"x\": \"" + std::string(2 << 20, 'a') + "\"}");
  REQUIRE_FALSE(huge.ok());
  CHECK_THAT(std::string(huge.status().message()), Catch::Contains("a trust store may have"));
}

TEST_CASE("limits: files the gateway trusts are checked like OpenSSH's StrictModes", "[limits][trust]") {
  osh::test::TempDir dir;  // under /tmp: root-owned and sticky, which is allowed
  const std::string folder = dir / "etc";
  std::filesystem::create_directory(folder);
  ::chmod(folder.c_str(), 0755);
  const std::string file = folder + "/trust.json";
  osh::test::WriteFile(file, "{}");
  ::chmod(file.c_str(), 0644);
  CHECK(osh::trust::CheckNoOneElseCanWrite(file, "trust store").ok());

  ::chmod(file.c_str(), 0664);
  auto loose_file = osh::trust::CheckNoOneElseCanWrite(file, "trust store");
  CHECK(absl::IsPermissionDenied(loose_file));
  CHECK_THAT(std::string(loose_file.message()), Catch::Contains(file + " is writable by group or others"));
  ::chmod(file.c_str(), 0644);
  // A folder its group may write, as Kubernetes leaves a volume's root under fsGroup (review 110): refused,
  // unless that group is the one the gateway's fs_group names; a file its group may write, always refused.
  ::chmod(folder.c_str(), 02775);
  CHECK(absl::IsPermissionDenied(osh::trust::CheckNoOneElseCanWrite(file, "trust store")));
  osh::trust::AcceptGroupWritableFolders(::getegid());
  CHECK(osh::trust::CheckNoOneElseCanWrite(file, "trust store").ok());
  ::chmod(file.c_str(), 0664);
  CHECK(absl::IsPermissionDenied(osh::trust::CheckNoOneElseCanWrite(file, "trust store")));
  ::chmod(file.c_str(), 0644);
  if (::geteuid() == 0) {  // another group's folder stays refused
    REQUIRE(::chown(folder.c_str(), static_cast<uid_t>(-1), 65534) == 0);
    CHECK(absl::IsPermissionDenied(osh::trust::CheckNoOneElseCanWrite(file, "trust store")));
    REQUIRE(::chown(folder.c_str(), static_cast<uid_t>(-1), ::getegid()) == 0);
  }
  osh::trust::AcceptGroupWritableFolders(std::nullopt);
  CHECK(absl::IsPermissionDenied(osh::trust::CheckNoOneElseCanWrite(file, "trust store")));
  ::chmod(folder.c_str(), 0755);

  ::chmod(folder.c_str(), 0777);  // a world-writable parent: anyone could swap the file
  auto loose_folder = osh::trust::CheckNoOneElseCanWrite(file, "trust store");
  CHECK(absl::IsPermissionDenied(loose_folder));
  CHECK_THAT(std::string(loose_folder.message()), Catch::Contains(folder + " is writable by group or others"));
  if (::geteuid() != 0) {
    ::chmod(folder.c_str(), 01777);  // sticky, but not root's: still refused
    CHECK_FALSE(osh::trust::CheckNoOneElseCanWrite(file, "trust store").ok());
  }
  ::chmod(folder.c_str(), 0755);

  // A symlink is judged by what it points to.
  const std::string link = dir / "link.json";
  REQUIRE(::symlink(file.c_str(), link.c_str()) == 0);
  CHECK(osh::trust::CheckNoOneElseCanWrite(link, "trust store").ok());
  // And a trust store behind one loads (review 106: lstat refused it — the Kubernetes manifest mounts the
  // trust store from a Secret, whose files are links).
  auto key = osh::trust::PrivateKey::Generate("ed25519");
  REQUIRE(key.ok());
  const std::string real = folder + "/real-trust.json";
  osh::test::WriteFile(real, osh::test::TrustStoreJson({{"k1", key->PublicKeyPem()}}), 0644);
  const std::string store_link = dir / "store-link.json";
  REQUIRE(::symlink(real.c_str(), store_link.c_str()) == 0);
  auto linked = osh::trust::TrustStore::Load(store_link);
  INFO(linked.status());
  CHECK(linked.ok());
  // But a link in a folder others may write is refused, wherever it points (review 107: they could point
  // it at any root-owned file — an older trust store, the system's CA bundle).
  const std::string loose_links = dir / "loose-links";
  REQUIRE(::mkdir(loose_links.c_str(), 0755) == 0);
  REQUIRE(::symlink(real.c_str(), (loose_links + "/trust.json").c_str()) == 0);
  REQUIRE(::chmod(loose_links.c_str(), 0777) == 0);
  auto through_loose = osh::trust::TrustStore::Load(loose_links + "/trust.json");
  REQUIRE_FALSE(through_loose.ok());
  CHECK_THAT(std::string(through_loose.status().message()), Catch::Contains(loose_links + " is writable by group or others"));
  ::chmod(loose_links.c_str(), 0755);

  if (::geteuid() == 0) {  // ownership by another user can only be set up as root
    REQUIRE(::chown(file.c_str(), 65534, 65534) == 0);
    auto foreign = osh::trust::CheckNoOneElseCanWrite(file, "trust store");
    CHECK(absl::IsPermissionDenied(foreign));
    CHECK_THAT(std::string(foreign.message()), Catch::Contains("is owned by uid 65534, neither root nor this user"));
    REQUIRE(::chown(file.c_str(), 0, 0) == 0);
    REQUIRE(::chown(folder.c_str(), 65534, 65534) == 0);
    CHECK_THAT(std::string(osh::trust::CheckNoOneElseCanWrite(file, "trust store").message()),
               Catch::Contains(folder + " is owned by uid 65534"));
    REQUIRE(::chown(folder.c_str(), 0, 0) == 0);
  }
  CHECK(absl::IsNotFound(osh::trust::CheckNoOneElseCanWrite(dir / "missing.json", "trust store")));
}

TEST_CASE("limits: private keys no one else may read are read, any other is refused naming the fix", "[limits][trust]") {
  osh::test::TempDir dir;
  const std::string key = dir / "log.key";
  osh::test::WriteFile(key, "-----BEGIN PRIVATE KEY-----\n", 0600);
  auto read = osh::trust::ReadPrivateKeyFile(key, "log_signing_key");
  REQUIRE(read.ok());
  CHECK(*read == "-----BEGIN PRIVATE KEY-----\n");
  ::chmod(key.c_str(), 0400);
  CHECK(osh::trust::ReadPrivateKeyFile(key, "log_signing_key").ok());

  for (const mode_t mode : {0604, 0644, 0606, 0601, 0620, 0610}) {
    INFO("mode " << std::oct << mode);
    ::chmod(key.c_str(), mode);
    auto refused = osh::trust::ReadPrivateKeyFile(key, "log_signing_key");
    CHECK(absl::IsPermissionDenied(refused.status()));
    CHECK_THAT(std::string(refused.status().message()), Catch::StartsWith("log_signing_key " + key + ": "));
  }
  ::chmod(key.c_str(), 0604);
  CHECK_THAT(std::string(osh::trust::ReadPrivateKeyFile(key, "k").status().message()),
             Catch::Contains("not be accessible to others") && Catch::Contains("chmod o-rwx"));

  // Group read: only for a group this process is in (a Kubernetes Secret mounted 0440 under the fsGroup).
  ::chmod(key.c_str(), 0640);
  REQUIRE(::chown(key.c_str(), ::geteuid(), ::getegid()) == 0);
  CHECK(osh::trust::ReadPrivateKeyFile(key, "k").ok());
  if (::geteuid() == 0) {  // another group can only be set up as root
    REQUIRE(::chown(key.c_str(), 0, 54321) == 0);
    auto foreign = osh::trust::ReadPrivateKeyFile(key, "k");
    CHECK(absl::IsPermissionDenied(foreign.status()));
    CHECK_THAT(std::string(foreign.status().message()),
               Catch::Contains("readable by group 54321, which this process is not in") && Catch::Contains("chmod g-r"));
  }

  // A symlink is judged by what it points to; a folder, or nothing, is not a key.
  ::chmod(key.c_str(), 0600);
  const std::string link = dir / "link.key";
  REQUIRE(::symlink(key.c_str(), link.c_str()) == 0);
  CHECK(osh::trust::ReadPrivateKeyFile(link, "k").ok());
  CHECK(absl::IsPermissionDenied(osh::trust::ReadPrivateKeyFile(dir.path(), "k").status()));
  CHECK(absl::IsNotFound(osh::trust::ReadPrivateKeyFile(dir / "missing.key", "k").status()));
}

TEST_CASE("limits: storage errors reach clients as a stable message, the SQL only in the log", "[limits][core]") {
  // A real SQLite failure (the store marks it as a storage error; the text does not decide: issue 26).
  osh::test::TempDir dir;
  auto db = osh::store::Db::Open(dir / "full.db");
  REQUIRE(db.ok());
  REQUIRE(db->Exec("CREATE TABLE sandboxes (id TEXT PRIMARY KEY, handle_sha256 BLOB)").ok());
  REQUIRE(db->Exec("INSERT INTO sandboxes (id, handle_sha256) VALUES ('a', x'00')").ok());
  const absl::Status failed = db->Exec("INSERT INTO sandboxes (id, handle_sha256) VALUES ('a', x'00')");
  REQUIRE_THAT(std::string(failed.message()), Catch::StartsWith("sqlite: ") && Catch::Contains("sandboxes.id"));
  const grpc::Status answered = osh::gateway::ToGrpc(failed);
  CHECK(answered.error_code() == grpc::StatusCode::ALREADY_EXISTS);
  CHECK(answered.error_message() ==
        "storage_error: the gateway's database could not complete the operation (ALREADY_EXISTS); details are in the "
        "gateway's log");
  CHECK_FALSE(absl::StrContains(answered.error_message(), "sandboxes"));
  // Everything else passes through as it is.
  const grpc::Status refused = osh::gateway::ToGrpc(absl::InvalidArgumentError("context.sandbox_id: required"));
  CHECK(refused.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK(refused.error_message() == "context.sandbox_id: required");
}
