// The audit chain's published form (docs/audit.md): canonical bytes and hash pinned by an independent
// computation (Python's hashlib/struct), the JSON line round trip, and the offline verifier's verdicts.
#include <catch2/catch.hpp>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "trust/audit_chain.h"
#include "trust/audit_vocabulary.h"

using osh::trust::AuditEvent;
namespace audit = osh::trust::audit;

namespace {

AuditEvent Admission() {
  AuditEvent e;
  e.seq = 1;
  e.time_unix_ms = 1700000000000;
  e.type = audit::Type::kAdmission;
  e.sandbox_id = "sb-1";
  e.surface_id = "openshell.sandbox.v1";
  e.policy_digest = std::string(32 * 2, ' ');
  for (int i = 0; i < 32; ++i) e.policy_digest.replace(i * 2, 2, "ab");
  e.policy_version = 3;
  e.key_ids = {"k1"};
  e.outcome = audit::Outcome::kOk;
  e.audit_context = {{"b", "2"}, {"a", "1"}};
  e.prev_hash = osh::trust::kGenesisHash;
  return e;
}

AuditEvent Refusal(const AuditEvent& previous) {
  AuditEvent e;
  e.seq = 2;
  e.time_unix_ms = 1700000000001;
  e.type = audit::Type::kRefusal;
  e.sandbox_id = "sb-2";
  e.outcome = audit::Outcome::kRefused;
  e.reason = "unsigned: the projection carries no signature";
  e.prev_hash = previous.hash;
  return e;
}

// A chain of `n` events, exported as JSON lines.
std::vector<std::string> ExportedChain(int n) {
  std::vector<std::string> lines;
  std::string prev = osh::trust::kGenesisHash;
  for (int i = 1; i <= n; ++i) {
    AuditEvent e = Admission();
    e.seq = i;
    e.sandbox_id = "sb-" + std::to_string(i);
    e.prev_hash = prev;
    e.hash = osh::trust::ChainHash(prev, e);
    prev = e.hash;
    lines.push_back(osh::trust::ToJsonLine(e));
  }
  return lines;
}

osh::trust::ChainVerdict Verify(const std::vector<std::string>& lines, const std::string& anchor = "") {
  std::istringstream in(absl::StrJoin(lines, "\n") + (lines.empty() ? "" : "\n"));
  return osh::trust::VerifyExport(in, anchor);
}

}  // namespace

TEST_CASE("audit: canonical bytes and chain hashes match an independent computation", "[audit]") {
  AuditEvent first = Admission();
  first.hash = osh::trust::ChainHash(osh::trust::kGenesisHash, first);
  CHECK(first.hash == "c0cd30703c10e5e806ff04215624559b7e95cf7b295e7b1ed15a768798bf1281");
  const AuditEvent second = Refusal(first);
  CHECK(osh::trust::ChainHash(first.hash, second) == "1dea5cba6bfbc85b2efad1bdc88659f09de93ab09f1f9ef052f3d74c77562627");
  // Every field is covered: changing any one changes the hash.
  const std::string base = osh::trust::ChainHash(osh::trust::kGenesisHash, first);
  std::vector<std::function<void(AuditEvent&)>> edits = {
      [](AuditEvent& e) { e.seq = 9; },           [](AuditEvent& e) { e.time_unix_ms += 1; },
      [](AuditEvent& e) { e.type = audit::Type::kRefusal; },  [](AuditEvent& e) { e.sandbox_id = "sb-9"; },
      [](AuditEvent& e) { e.surface_id = "x"; },  [](AuditEvent& e) { e.policy_digest[0] = 'c'; },
      [](AuditEvent& e) { e.policy_version = 4; }, [](AuditEvent& e) { e.key_ids.push_back("k2"); },
      [](AuditEvent& e) { e.outcome = audit::Outcome::kRefused; }, [](AuditEvent& e) { e.reason = "r"; },
      [](AuditEvent& e) { e.audit_context["a"] = "9"; }, [](AuditEvent& e) { e.actor = "uid:0"; },
  };
  for (size_t i = 0; i < edits.size(); ++i) {
    AuditEvent edited = first;
    edits[i](edited);
    CHECK(osh::trust::ChainHash(osh::trust::kGenesisHash, edited) != base);
  }
  CHECK(osh::trust::ChainHash(std::string(63, '0') + "1", first) != base);  // and the link
  // An actor is appended only when there is one: events without (all earlier ones) hash as before.
  AuditEvent with_actor = first;
  with_actor.actor = "uid:1000";
  const std::string plain = osh::trust::CanonicalAuditBytes(first);
  CHECK(osh::trust::CanonicalAuditBytes(with_actor).substr(0, plain.size()) == plain);
  CHECK(osh::trust::CanonicalAuditBytes(with_actor).size() > plain.size());
}

TEST_CASE("audit: a JSON line round-trips every field, and invalid UTF-8 is escaped before hashing", "[audit]") {
  AuditEvent e = Admission();
  e.hash = osh::trust::ChainHash(e.prev_hash, e);
  const std::string line = osh::trust::ToJsonLine(e);
  CHECK(line.find('\n') == std::string::npos);
  // Map keys in sorted order, so one event always prints the same line (exports are byte-identical).
  CHECK_THAT(line, Catch::Contains("\"seq\":\"1\"") && Catch::Contains("\"audit_context\":{\"a\":\"1\",\"b\":\"2\"}"));
  AuditEvent many = e;
  for (int i = 0; i < 50; ++i) many.audit_context["k" + std::to_string(10 + i * 41 % 50)] = "v";  // 10..59
  const std::string first = osh::trust::ToJsonLine(many);
  CHECK_THAT(first, Catch::Contains("{\"a\":\"1\",\"b\":\"2\",\"k10\":\"v\",\"k11\":\"v\",\"k12\":\"v\""));
  for (int i = 0; i < 5; ++i) CHECK(osh::trust::ToJsonLine(many) == first);
  std::istringstream in(line + "\n");
  const auto verdict = osh::trust::VerifyExport(in);
  CHECK(verdict.whole);
  CHECK(verdict.head_hash == e.hash);

  AuditEvent bad = Refusal(e);
  bad.reason = std::string("driver said \xff\xfe");
  bad.audit_context = {{"k\xc3", "v"}};
  osh::trust::MakeTextUtf8(&bad);
  CHECK(bad.reason == "driver said \\xff\\xfe");
  CHECK(bad.audit_context.count("k\\xc3") == 1);
  bad.hash = osh::trust::ChainHash(bad.prev_hash, bad);
  std::istringstream two(line + "\n" + osh::trust::ToJsonLine(bad) + "\n");
  CHECK(osh::trust::VerifyExport(two).whole);
  // The actor travels in the export and is covered by the hash.
  AuditEvent by_operator = Refusal(e);
  by_operator.actor = "x509:CN=operator";
  by_operator.hash = osh::trust::ChainHash(by_operator.prev_hash, by_operator);
  const std::string actor_line = osh::trust::ToJsonLine(by_operator);
  CHECK_THAT(actor_line, Catch::Contains("\"actor\":\"x509:CN=operator\""));
  std::istringstream three(line + "\n" + actor_line + "\n");
  CHECK(osh::trust::VerifyExport(three).whole);
  std::string forged = actor_line;
  forged.replace(forged.find("CN=operator"), 11, "CN=someone!");
  std::istringstream four(line + "\n" + forged + "\n");
  CHECK_FALSE(osh::trust::VerifyExport(four).whole);

  // A line other JSON readers read differently from the protobuf parser (review 106): a field given twice,
  // under its name and its JSON name, keeps the last for protobuf — the hashed one — and the named one for
  // jq and Python. Only the export's own form verifies.
  std::string doubled = line;
  doubled.replace(doubled.find("\"sandbox_id\":\"sb-1\""), std::string("\"sandbox_id\":\"sb-1\"").size(),
                  "\"sandbox_id\":\"forged\"");
  doubled.insert(doubled.size() - 1, ",\"sandboxId\":\"sb-1\"");
  std::istringstream five(doubled + "\n");
  const auto refused = osh::trust::VerifyExport(five);
  CHECK_FALSE(refused.whole);
  CHECK_THAT(refused.detail, Catch::Contains("not written as `audit export` writes an event"));
  std::istringstream spaced(absl::StrReplaceAll(line, {{"\":\"", "\": \""}}) + "\n");
  CHECK_FALSE(osh::trust::VerifyExport(spaced).whole);
  // What genuine exports differ by still verifies (review 107): CRLF line ends, and no "actor" in exports
  // made before the field existed, for an event without one.
  std::istringstream crlf(line + "\r\n" + actor_line + "\r\n");
  CHECK(osh::trust::VerifyExport(crlf).whole);
  REQUIRE(line.find(",\"actor\":\"\"") != std::string::npos);
  std::istringstream older(absl::StrReplaceAll(line, {{",\"actor\":\"\"", ""}}) + "\n");
  CHECK(osh::trust::VerifyExport(older).whole);
}

TEST_CASE("audit verify: a whole chain passes, and each kind of break names the first broken seq", "[audit]") {
  const auto lines = ExportedChain(6);
  auto whole = Verify(lines);
  CHECK(whole.whole);
  CHECK(whole.events == 6);
  CHECK(whole.head_seq == 6);
  CHECK(Verify({}).whole);  // an empty chain is whole

  SECTION("an edited field") {
    auto edited = lines;
    edited[2] = absl::StrReplaceAll(edited[2], {{"\"sb-3\"", "\"sb-X\""}});
    auto v = Verify(edited);
    CHECK_FALSE(v.whole);
    CHECK(v.first_broken_seq == 3);
    CHECK(v.line == 3);
    CHECK_THAT(v.detail, Catch::Contains("does not match its contents"));
    CHECK(v.events == 2);
  }
  SECTION("an edited event whose hash was recomputed breaks the next link") {
    auto edited = lines;
    AuditEvent e = Admission();
    e.seq = 3;
    e.sandbox_id = "sb-X";
    auto ok = Verify({lines[0], lines[1]});
    e.prev_hash = ok.head_hash;
    e.hash = osh::trust::ChainHash(e.prev_hash, e);
    edited[2] = osh::trust::ToJsonLine(e);
    auto v = Verify(edited);
    CHECK(v.first_broken_seq == 4);
    CHECK_THAT(v.detail, Catch::Contains("does not link to seq 3's hash"));
  }
  SECTION("a deleted line") {
    auto cut = lines;
    cut.erase(cut.begin() + 3);
    auto v = Verify(cut);
    CHECK(v.first_broken_seq == 4);
    CHECK(v.line == 4);
    CHECK_THAT(v.detail, Catch::Contains("seq 4 missing: line 4 has seq 5"));
  }
  SECTION("the first line deleted") {
    auto v = Verify({lines.begin() + 1, lines.end()});
    CHECK(v.first_broken_seq == 1);
  }
  SECTION("two lines swapped") {
    auto swapped = lines;
    std::swap(swapped[1], swapped[2]);
    CHECK(Verify(swapped).first_broken_seq == 2);
  }
  SECTION("a line repeated") {
    auto repeated = lines;
    repeated.insert(repeated.begin() + 2, lines[1]);
    auto v = Verify(repeated);
    CHECK(v.first_broken_seq == 3);
    CHECK_THAT(v.detail, Catch::Contains("repeated or reordered"));
  }
  SECTION("garbage, an unknown field, a blank line") {
    for (const std::string junk : {"not json", "{\"seq\":\"3\",\"surprise\":1}", ""}) {
      auto broken = lines;
      broken[2] = junk;
      auto v = Verify(broken);
      CHECK(v.first_broken_seq == 3);
      CHECK_THAT(v.detail, Catch::Contains("line 3 is not an audit event"));
    }
  }
  SECTION("a truncated tail passes alone, and fails against an anchor") {
    const std::vector<std::string> truncated(lines.begin(), lines.begin() + 4);
    CHECK(Verify(truncated).whole);
    auto v = Verify(truncated, whole.head_hash);
    CHECK_FALSE(v.whole);
    CHECK(v.first_broken_seq == 5);
    CHECK_THAT(v.detail, Catch::Contains("anchor"));
    CHECK(Verify(lines, Verify({lines[0], lines[1]}).head_hash).whole);  // an older anchor is contained
  }
}

TEST_CASE("audit: the documented event types and outcomes are exactly the ones the gateway writes", "[audit]") {
  // docs/audit.md's table: `type` (or `a` / `b`) | `outcome` (or `a` / `b`) | when — one row per type.
  std::ifstream doc(std::string(OSH_SOURCE_DIR) + "/docs/audit.md");
  REQUIRE(doc.good());
  std::set<std::string> types, outcomes;
  const std::regex row(R"(^\| (`[a-z_]+`(?: / `[a-z_]+`)*) \| (`[a-z_]+`(?: / `[a-z_]+`)*) \|)"), name("`([a-z_]+)`");
  auto names = [&](const std::string& column, std::set<std::string>* into) {
    for (std::sregex_iterator it(column.begin(), column.end(), name), end; it != end; ++it) into->insert((*it)[1].str());
  };
  for (std::string line; std::getline(doc, line);) {
    std::smatch m;
    if (!std::regex_search(line, m, row) || m[1] == "`type`") continue;  // the header row names the columns
    names(m[1], &types);
    names(m[2], &outcomes);
  }
  // Every enumerator's name, from its one table.
  std::set<std::string> named_types, named_outcomes;
  for (const auto& [type, name] : audit::kTypeNames) named_types.emplace(name);
  for (const auto& [outcome, name] : audit::kOutcomeNames) named_outcomes.emplace(name);
  CHECK(types == named_types);
  CHECK(outcomes == named_outcomes);
}

TEST_CASE("audit: each vocabulary table names every enumerator once, in order, and reads back", "[audit]") {
  // In enum order, so the last enumerator's value + 1 entries cover them all (a new enumerator without a
  // name, or a name out of place, fails here).
  int i = 0;
  std::set<absl::string_view> names;
  for (const auto& [type, name] : audit::kTypeNames) {
    CHECK(static_cast<int>(type) == i++);
    CHECK(names.insert(name).second);
    CHECK(audit::kTypeNames.Parse(name) == type);
    CHECK(audit::TypeWord(type).name() == name);
    CHECK(audit::TypeWord::FromStored(std::string(name)).value() == type);
  }
  CHECK(static_cast<size_t>(audit::Type::kInterception) + 1 == audit::kTypeNames.size());
  i = 0;
  names.clear();
  for (const auto& [outcome, name] : audit::kOutcomeNames) {
    CHECK(static_cast<int>(outcome) == i++);
    CHECK(names.insert(name).second);
    CHECK(audit::OutcomeWord(outcome) == audit::OutcomeWord::FromStored(std::string(name)));
  }
  CHECK(static_cast<size_t>(audit::Outcome::kUnavailable) + 1 == audit::kOutcomeNames.size());
  // A name a newer gateway wrote is kept verbatim (the chain hashes it), known to be unknown.
  const auto newer = audit::TypeWord::FromStored("written_by_a_newer_gateway");
  CHECK(newer.name() == "written_by_a_newer_gateway");
  CHECK_FALSE(newer.value().has_value());
  CHECK_FALSE(newer == audit::Type::kAdmission);
}

TEST_CASE("audit chain: canonical bytes decode to the event they encode, and nothing else decodes", "[audit]") {
  osh::trust::AuditEvent e;
  e.seq = 42;
  e.time_unix_ms = -5;
  e.type = osh::trust::audit::Type::kAdmission;
  e.outcome = osh::trust::audit::Outcome::kOk;
  e.sandbox_id = "sb-1";
  e.surface_id = "openshell.sandbox.v1";
  e.policy_digest = std::string(64, 'c');
  e.policy_version = 9;
  e.key_ids = {"k1", "k2"};
  e.reason = std::string("with a NUL \0 inside", 19);
  e.audit_context = {{"a", "1"}, {"b", ""}};
  for (const std::string actor : {"", "admin:alice"}) {
    e.actor = actor;
    const std::string bytes = osh::trust::CanonicalAuditBytes(e);
    auto parsed = osh::trust::ParseCanonicalAuditBytes(bytes);
    REQUIRE(parsed.ok());
    CHECK(osh::trust::CanonicalAuditBytes(*parsed) == bytes);
    CHECK(parsed->seq == 42);
    CHECK(parsed->reason == e.reason);
    CHECK(parsed->actor == actor);
    // Cut anywhere (but where the event without its actor ends: that one is whole), or with a byte
    // more: not an event.
    osh::trust::AuditEvent without_actor = e;
    without_actor.actor.clear();
    const size_t whole_without_actor = osh::trust::CanonicalAuditBytes(without_actor).size();
    for (size_t cut = 0; cut < bytes.size(); ++cut) {
      if (cut == whole_without_actor) continue;
      CHECK_FALSE(osh::trust::ParseCanonicalAuditBytes(bytes.substr(0, cut)).ok());
    }
    CHECK_FALSE(osh::trust::ParseCanonicalAuditBytes(bytes + "x").ok());
  }
  CHECK_FALSE(osh::trust::ParseCanonicalAuditBytes("{\"seq\": 1}").ok());
  CHECK_FALSE(osh::trust::ParseCanonicalAuditBytes(std::string(4, '\xff')).ok());  // a length past the end
}

TEST_CASE("audit: every sealed event fits a verifiable-log entry, cut at a character with a marker", "[audit]") {
  // Review finding (helper 80): one event over 65,535 bytes in canonical form (a 1 MiB report error, the
  // summary of a re-projection moving thousands of digests) could not be framed in an entry bundle, so the
  // log stopped for good and the gateway could not start again.
  osh::trust::ChainSealer sealer;
  AuditEvent big;
  big.type = osh::trust::audit::Type::kReport;
  big.outcome = osh::trust::audit::Outcome::kOk;
  big.sandbox_id = "sb-1";
  for (int i = 0; i < 100000; ++i) big.reason += "\xc3\xa9";  // "é": two bytes, cut only between characters
  sealer.Seal(&big, 1);
  const std::string bytes = osh::trust::CanonicalAuditBytes(big);
  CHECK(bytes.size() <= osh::trust::kMaxCanonicalAuditBytes);
  CHECK(bytes.size() > osh::trust::kMaxCanonicalAuditBytes - 8);
  CHECK(absl::StrContains(big.reason, "an audit event is a verifiable-log entry of at most 65535 bytes"));
  CHECK(absl::StartsWith(big.reason, "\xc3\xa9\xc3\xa9"));
  CHECK(big.hash == osh::trust::ChainHash(big.prev_hash, big));  // hashed as cut
  auto parsed = osh::trust::ParseCanonicalAuditBytes(bytes);
  CHECK(parsed.ok());

  AuditEvent wide;  // thousands of small context values
  wide.type = osh::trust::audit::Type::kAdmission;
  wide.outcome = osh::trust::audit::Outcome::kOk;
  for (int i = 0; i < 3000; ++i) wide.audit_context["k" + std::to_string(i)] = std::string(100, 'v');
  sealer.Seal(&wide, 2);
  CHECK(osh::trust::CanonicalAuditBytes(wide).size() <= osh::trust::kMaxCanonicalAuditBytes);
  CHECK(wide.audit_context.contains("openshell.truncated"));

  // An identifying field no caller bounded (review 114: a refused SetCeiling recorded the caller's 70 KB
  // digest): cut too, a backstop, so the log always takes the event.
  AuditEvent unbounded;
  unbounded.type = osh::trust::audit::Type::kCeilingSet;
  unbounded.outcome = osh::trust::audit::Outcome::kRefused;
  unbounded.policy_digest = std::string(70000, 'a');
  unbounded.sandbox_id = std::string(70000, 'b');
  sealer.Seal(&unbounded, 3);
  CHECK(osh::trust::CanonicalAuditBytes(unbounded).size() <= osh::trust::kMaxCanonicalAuditBytes);
  CHECK(absl::StartsWith(unbounded.policy_digest, "aaaa"));
  CHECK(osh::trust::ParseCanonicalAuditBytes(osh::trust::CanonicalAuditBytes(unbounded)).ok());

  AuditEvent small;  // untouched
  small.type = osh::trust::audit::Type::kAdmission;
  small.outcome = osh::trust::audit::Outcome::kOk;
  small.reason = "fine";
  sealer.Seal(&small, 3);
  CHECK(small.reason == "fine");
}
