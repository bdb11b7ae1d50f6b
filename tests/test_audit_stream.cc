// WatchAuditEvents and `policyctl audit tail` (issue 29, item 4) against the real gateway: the stream
// across a gateway restart with its cursor (no event lost or repeated), the printed formats (text, JSON,
// OCSF), and a reader that stops reading does not hold the gateway.
#include <sqlite3.h>

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/message_differencer.h>

#include <atomic>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "common/errors.h"
#include "common/grpc_status.h"
#include "tests/gateway_fixture.h"
#include "tests/stream_reader.h"
#include "trust/audit_chain.h"

namespace osh::test {
namespace {

uint64_t HeadSeq(GatewayFixture& g) {
  gw::ListAuditEventsRequest request;
  request.set_after_seq(UINT64_MAX);
  gw::ListAuditEventsResponse response;
  REQUIRE(g.admin().ListAuditEvents(GatewayFixture::Context().get(), request, &response).ok());
  return response.head_seq();
}

void AdmitOk(GatewayFixture& g, const std::string& id) {
  gw::AdmitSandboxResponse admitted;
  REQUIRE(g.Admit(id, &admitted).ok());
}

// The seqs of the JSON lines of `text` (other lines, e.g. stderr notes, skipped).
std::vector<uint64_t> JsonLineSeqs(const std::string& text) {
  std::vector<uint64_t> seqs;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!absl::StartsWith(line, "{")) continue;
    gw::AuditEvent event;
    REQUIRE(google::protobuf::util::JsonStringToMessage(std::string(line), &event).ok());
    seqs.push_back(event.seq());
  }
  return seqs;
}

// A report about a digest the sandbox was never given: refused, and audited (report, refused).
void RefusedReport(GatewayFixture& g, const std::string& handle) {
  gw::ReportPolicyStatusRequest report;
  report.set_policy_digest(std::string(64, '0'));
  report.set_status(gw::LOADED);
  gw::ReportPolicyStatusResponse ignored;
  REQUIRE(g.sandbox().ReportPolicyStatus(GatewayFixture::Context(handle).get(), report, &ignored).error_code() ==
          grpc::StatusCode::INVALID_ARGUMENT);
}

}  // namespace

TEST_CASE("audit stream: existing events, then new ones, resumed after a restart with its cursor, none lost or repeated",
          "[integration][audit_stream]") {
  GatewayFixture g;
  REQUIRE(g.SetPolicy("default", Example("github.yaml")).ok());
  AdmitOk(g, "sb-1");
  AdmitOk(g, "sb-2");
  const uint64_t head1 = HeadSeq(g);
  REQUIRE(head1 >= 3);

  // `policyctl audit tail -f -o json` follows the chain across the restart on its own.
  const std::string tail_log = g.dir() / "tail.log";
  Process tail({OSH_POLICYCTL_BINARY, "--admin-socket", g.admin_socket(), "--timeout", "5", "audit", "tail", "-f", "-o",
                "json"},
               tail_log);

  auto stream = std::make_unique<AuditStreamReader>(g, 0);
  REQUIRE(Eventually([&] { return stream->last_seq() == head1; }));
  AdmitOk(g, "sb-3");  // live, after the stream caught up
  const uint64_t head2 = HeadSeq(g);
  REQUIRE(Eventually([&] { return stream->last_seq() == head2; }));

  REQUIRE(Eventually([&] { return JsonLineSeqs(ReadAll(tail_log)).size() == head2; }));
  // The gateway stops: the stream ends UNAVAILABLE gateway_stopping; its last seq is the cursor.
  REQUIRE(g.Stop() == 0);
  REQUIRE(Eventually([&] { return stream->done(); }));
  CHECK(stream->status().error_code() == grpc::StatusCode::UNAVAILABLE);
  CHECK(common::ReasonOf(common::FromGrpc(stream->status())) == "gateway_stopping");
  const uint64_t cursor = stream->last_seq();
  std::vector<gw::AuditEvent> received = stream->events();

  g.Start();
  AdmitOk(g, "sb-4");
  REQUIRE(g.SetPolicy("default", Example("restrictive-default.yaml")).ok());
  const uint64_t head3 = HeadSeq(g);
  REQUIRE(head3 > cursor);
  auto resumed = std::make_unique<AuditStreamReader>(g, cursor);
  REQUIRE(Eventually([&] { return resumed->last_seq() == head3; }));
  for (const auto& e : resumed->events()) received.push_back(e);

  // Every event once, in order, exactly as ListAuditEvents pages them.
  const std::vector<gw::AuditEvent> listed = g.AuditEvents();
  REQUIRE(received.size() == listed.size());
  for (size_t i = 0; i < listed.size(); ++i) {
    CHECK(received[i].seq() == i + 1);
    CHECK(received[i].hash() == listed[i].hash());
    CHECK(google::protobuf::util::MessageDifferencer::Equals(received[i], listed[i]));
  }

  // The CLI's follow reconnected after the restart and printed each seq once.
  REQUIRE(Eventually([&] { return JsonLineSeqs(ReadAll(tail_log)).size() == head3; }, std::chrono::seconds(20)));
  tail.Signal(SIGTERM);
  tail.Wait();
  const std::string tailed = ReadAll(tail_log);
  INFO(tailed);
  const std::vector<uint64_t> seqs = JsonLineSeqs(tailed);
  REQUIRE(seqs.size() == head3);
  for (size_t i = 0; i < seqs.size(); ++i) CHECK(seqs[i] == i + 1);
  CHECK_THAT(tailed, Catch::Contains("resuming after seq " + std::to_string(head2)));

  // A cursor at the head: nothing old, then the next event.
  auto at_head = std::make_unique<AuditStreamReader>(g, head3);
  AdmitOk(g, "sb-5");
  REQUIRE(Eventually([&] { return at_head->last_seq() == head3 + 1; }));
  CHECK(at_head->events().size() == 1);
}

TEST_CASE("audit tail and events: stored fields reach the terminal escaped, a quote cannot forge a field",
          "[integration][audit_stream]") {
  // Review 114: the text lines printed every field raw. Whoever can edit the database (the threat model's
  // database-file attacker) could make `audit tail -f` write OSC 52 (the clipboard) or move the cursor on
  // the operator's terminal, and a reason `x" actor=uid:0` read as another actor.
  GatewayFixture g;
  REQUIRE(g.SetPolicy("default", Example("github.yaml")).ok());
  gw::AdmitSandboxResponse admitted;
  REQUIRE(g.Admit("sb-1", &admitted).ok());
  {
    sqlite3* db = nullptr;
    const std::string path = g.state_dir() + "/gateway.db";
    REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) == SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    REQUIRE(sqlite3_exec(db,
                         "UPDATE audit_events SET reason = 'x' || char(27) || ']52;c;QUJD' || char(7) || '\" actor=uid:0', "
                         "actor = 'uid:1' || char(27) || '[2J', sandbox_id = 'sb-1 actor=uid:0' "
                         "WHERE seq = (SELECT MAX(seq) FROM audit_events)",
                         nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);
  }
  std::string out, err;
  REQUIRE(Ctl(g, {"audit", "tail"}, &out, &err) == 0);
  CHECK(out.find('\x1b') == std::string::npos);
  CHECK(out.find('\x07') == std::string::npos);
  CHECK_THAT(out, Catch::Contains("reason=\"x\\033]52;c;QUJD\\007\\\" actor=uid:0\""));
  CHECK_THAT(out, Catch::Contains("actor=uid:1\\033[2J"));
  CHECK_THAT(out, Catch::Contains("sandbox=\"sb-1 actor=uid:0\""));  // quoted: it holds a space and an `=`
  CHECK(g.Stop() == 0);
}

TEST_CASE("audit tail: text, JSON and OCSF lines, --after", "[integration][audit_stream]") {
  GatewayFixture g;
  REQUIRE(g.SetPolicy("default", Example("github.yaml")).ok());
  gw::AdmitSandboxResponse admitted;
  REQUIRE(g.Admit("sb-1", &admitted).ok());
  RefusedReport(g, admitted.sandbox_handle());
  const std::vector<gw::AuditEvent> events = g.AuditEvents();
  REQUIRE(events.size() == 3);

  std::string out, err;
  REQUIRE(Ctl(g, {"audit", "tail"}, &out, &err) == 0);
  CHECK(CountLines(out, " ") == events.size());
  CHECK_THAT(out, Catch::Contains("admission ok sandbox=sb-1 digest=" + events.back().policy_digest().substr(0, 12)) ||
                      Catch::Contains("admission ok sandbox=sb-1"));
  REQUIRE(Ctl(g, {"audit", "tail", "--after", "1", "-o", "json"}, &out, &err) == 0);
  const std::vector<uint64_t> seqs = JsonLineSeqs(out);
  REQUIRE(seqs.size() == events.size() - 1);
  CHECK(seqs.front() == 2);
  // The global -o json works too.
  REQUIRE(Ctl(g, {"-o", "json", "audit", "tail"}, &out, &err) == 0);
  CHECK(JsonLineSeqs(out).size() == events.size());

  REQUIRE(Ctl(g, {"audit", "tail", "-o", "ocsf"}, &out, &err) == 0);
  std::vector<google::protobuf::Struct> ocsf;
  for (absl::string_view line : absl::StrSplit(out, '\n', absl::SkipEmpty())) {
    google::protobuf::Struct parsed;
    REQUIRE(google::protobuf::util::JsonStringToMessage(std::string(line), &parsed).ok());
    ocsf.push_back(parsed);
  }
  REQUIRE(ocsf.size() == events.size());
  for (size_t i = 0; i < events.size(); ++i) {
    const auto& f = ocsf[i].fields();
    INFO(events[i].type());
    CHECK(f.at("metadata").struct_value().fields().at("sequence").number_value() == static_cast<double>(events[i].seq()));
    CHECK(f.at("unmapped").struct_value().fields().at("openshell").struct_value().fields().at("hash").string_value() ==
          events[i].hash());
    // The chain can be checked from unmapped.openshell alone (review 114: time, reason and actor were missing).
    const auto& o = f.at("unmapped").struct_value().fields().at("openshell").struct_value().fields();
    gw::AuditEvent back;
    back.set_seq(std::stoull(o.at("seq").string_value()));
    back.set_time_unix_ms(std::stoll(o.at("time_unix_ms").string_value()));
    back.set_type(o.at("type").string_value());
    back.set_outcome(o.at("outcome").string_value());
    back.set_sandbox_id(o.at("sandbox_id").string_value());
    back.set_surface_id(o.at("surface_id").string_value());
    back.set_policy_digest(o.at("policy_digest").string_value());
    back.set_policy_version(std::stoull(o.at("policy_version").string_value()));
    for (const auto& key : o.at("key_ids").list_value().values()) back.add_key_ids(key.string_value());
    for (const auto& [k, v] : o.at("audit_context").struct_value().fields()) (*back.mutable_audit_context())[k] = v.string_value();
    back.set_reason(o.at("reason").string_value());
    back.set_actor(o.at("actor").string_value());
    back.set_prev_hash(o.at("prev_hash").string_value());
    CHECK(osh::trust::ChainHash(back.prev_hash(), osh::trust::FromProto(back)) == events[i].hash());
    const double class_uid = f.at("class_uid").number_value();
    CHECK(f.at("type_uid").number_value() == class_uid * 100 + f.at("activity_id").number_value());
    if (events[i].type() == "admission") {
      CHECK(class_uid == 3004);  // Entity Management, Create
      CHECK(f.at("activity_id").number_value() == 1);
      CHECK(f.at("entity").struct_value().fields().at("name").string_value() == "sb-1");
    }
    if (events[i].type() == "report") {
      CHECK(class_uid == 5019);  // Device Config State Change
      CHECK(f.at("status").string_value() == "Failure");
      CHECK(f.at("device").struct_value().fields().at("name").string_value() == "sb-1");
    }
  }
  CHECK(Ctl(g, {"audit", "tail", "-o", "yaml"}, &out, &err) == 2);
}

TEST_CASE("audit stream: a reader that stops reading is ended, and holds neither other streams nor the gateway",
          "[integration][audit_stream]") {
  // Large events (reports with 60 KB errors) quickly fill what the transport buffers for a stream nobody
  // reads; then 8 events wait for it, and a second later it is ended.
  GatewayFixture g({"--audit-stream-backlog", "8", "--audit-stream-stall-s", "1", "--max-report-error-bytes", "65536",
                    "--reports-per-second", "1000", "--report-burst", "100000"});
  REQUIRE(g.SetPolicy("default", Example("github.yaml")).ok());
  gw::AdmitSandboxResponse admitted;
  REQUIRE(g.Admit("sb-1", &admitted).ok());

  // Abandoned: the call is open but nothing reads it.
  auto stub = gw::PolicyGateway::NewStub(GatewayFixture::Channel(g.admin_socket()));
  grpc::ClientContext abandoned_context;
  gw::WatchAuditEventsRequest request;
  auto abandoned = stub->WatchAuditEvents(&abandoned_context, request);
  auto reading = std::make_unique<AuditStreamReader>(g, 0, /*resume=*/true);  // a reader that keeps reading

  constexpr int kReports = 300;
  const std::string big(60000, 'x');
  for (int i = 0; i < kReports; ++i) {
    gw::ReportPolicyStatusRequest report;
    report.set_policy_digest(admitted.policy_digest());
    report.set_status(gw::FAILED);
    report.set_error(big + std::to_string(i));
    gw::ReportPolicyStatusResponse ignored;
    REQUIRE(g.sandbox().ReportPolicyStatus(GatewayFixture::Context(admitted.sandbox_handle()).get(), report, &ignored).ok());
  }
  const uint64_t head = HeadSeq(g);
  // The gateway goes on: the reading stream gets everything, once each, and admin calls answer.
  REQUIRE(Eventually([&] { return reading->last_seq() == head; }, std::chrono::seconds(30)));
  const std::vector<gw::AuditEvent> read = reading->events();
  REQUIRE(read.size() == head);
  for (size_t i = 0; i < read.size(); ++i) CHECK(read[i].seq() == i + 1);
  const auto started = std::chrono::steady_clock::now();
  g.Status();
  CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(2));

  // The abandoned one was ended rather than buffered for (its reader took nothing for a second while events
  // waited): reading it now gives what the transport held, far from every event, then its end (the reason,
  // or a cancel once its write stayed stuck).
  std::this_thread::sleep_for(std::chrono::seconds(4));
  uint64_t got = 0;
  gw::AuditEvent event;
  while (abandoned->Read(&event)) ++got;
  const grpc::Status ended = abandoned->Finish();
  INFO(ended.error_code() << " " << ended.error_message());
  CHECK(got < head);
  const bool lagging = ended.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED &&
                       absl::StrContains(ended.error_message(), "audit_stream_lagging");
  CHECK((lagging || ended.error_code() == grpc::StatusCode::CANCELLED));

  // Another abandoned stream does not hold up a stop: the gateway ends it (its stuck write cancelled) and
  // exits within its drain bound (the servers' 5 s shutdown deadline).
  grpc::ClientContext second_context;
  auto second = stub->WatchAuditEvents(&second_context, request);
  gw::AuditEvent first_of_second;
  REQUIRE(second->Read(&first_of_second));  // it is being served (then nobody reads it)
  for (int i = 0; i < 40; ++i) {
    gw::ReportPolicyStatusRequest report;
    report.set_policy_digest(admitted.policy_digest());
    report.set_status(gw::LOADED);
    report.set_error(big + std::to_string(i));  // each one new: a repeated report writes no event
    gw::ReportPolicyStatusResponse ignored;
    REQUIRE(g.sandbox().ReportPolicyStatus(GatewayFixture::Context(admitted.sandbox_handle()).get(), report, &ignored).ok());
  }
  const auto stopping = std::chrono::steady_clock::now();
  CHECK(g.Stop() == 0);
  CHECK(std::chrono::steady_clock::now() - stopping < std::chrono::seconds(8));
  second_context.TryCancel();
  second->Finish().ok();
}

}  // namespace osh::test

namespace osh::test {

TEST_CASE("audit_syslog: each event committed while the gateway runs, one RFC 5424 line with structured data",
          "[integration][audit_stream]") {
  TempDir dir;
  const std::string path = dir / "syslog.sock";
  DatagramListener collector(path);
  GatewayFixture g({"--audit-syslog", "true", "--audit-syslog-socket", path});
  REQUIRE(g.SetPolicy("default", Example("github.yaml")).ok());
  gw::AdmitSandboxResponse admitted;
  REQUIRE(g.Admit("sb-1", &admitted).ok());
  RefusedReport(g, admitted.sandbox_handle());
  std::vector<std::string> lines;
  while (lines.size() < 3) {
    lines.push_back(collector.Next());
    REQUIRE_FALSE(lines.back().empty());
  }
  const std::vector<gw::AuditEvent> events = g.AuditEvents();
  REQUIRE(events.size() == 3);
  INFO(lines[0] << "\n" << lines[1] << "\n" << lines[2]);
  // <authpriv.info>1 TIME HOST policy-gateway PID audit [openshell@32473 seq=… type=… …] reason
  CHECK_THAT(lines[0], Catch::StartsWith("<86>1 ") && Catch::Contains(" policy-gateway ") &&
                           Catch::Contains(" audit [openshell@32473 seq=\"1\" type=\"mutation\" outcome=\"ok\""));
  CHECK_THAT(lines[1], Catch::Contains("seq=\"2\" type=\"admission\" outcome=\"ok\" sandbox_id=\"sb-1\" policy_digest=\"" +
                                       admitted.policy_digest() + "\""));
  CHECK_THAT(lines[1], Catch::Contains("hash=\"" + events[1].hash() + "\"] verification=none"));
  CHECK_THAT(lines[2], Catch::StartsWith("<84>1 ") && Catch::Contains("type=\"report\" outcome=\"refused\""));
}

}  // namespace osh::test

TEST_CASE("audit stream: a reader caught up on a quiet chain is not lagging, and a cursor past the head is refused",
          "[integration][audit_stream]") {
  // Review finding (helper 79): the stall was counted from the last event taken, so the first event after
  // a quiet spell longer than audit_stream_stall_s ended every caught-up stream as lagging; a cursor past
  // the head waited silently until the chain reached it.
  GatewayFixture g({"--audit-stream-stall-s", "1"});
  REQUIRE(g.SetPolicy("default", Example("github.yaml")).ok());
  AuditStreamReader reader(g, 0);  // does not resume: an end is final
  const uint64_t head = HeadSeq(g);
  REQUIRE(Eventually([&] { return reader.last_seq() == head; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));  // quiet, longer than the stall
  gw::AdmitSandboxResponse admitted;
  REQUIRE(g.Admit("sb-1", &admitted).ok());
  const uint64_t after = HeadSeq(g);
  REQUIRE(after > head);
  CHECK(Eventually([&] { return reader.last_seq() == after; }));
  INFO(reader.status().error_message());
  CHECK_FALSE(reader.done());

  auto stub = gw::PolicyGateway::NewStub(GatewayFixture::Channel(g.admin_socket()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));  // it used to wait for ever
  gw::WatchAuditEventsRequest ahead;
  ahead.set_after_seq(after + 1000);
  auto stream = stub->WatchAuditEvents(&context, ahead);
  gw::AuditEvent event;
  CHECK_FALSE(stream->Read(&event));
  const grpc::Status refused = stream->Finish();
  CHECK(refused.error_code() == grpc::StatusCode::OUT_OF_RANGE);
  CHECK(absl::StrContains(refused.error_message(), "audit_cursor_ahead"));
}
