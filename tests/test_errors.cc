// Errors as values (common/errors.h, common/grpc_status.h; issue 26 §3): the reason code travels as a
// google.rpc.ErrorInfo payload and in the gRPC error details; storage errors of both backends are marked
// by their payload and scrubbed at the gRPC edge whatever their text.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/errors.h"
#include "common/grpc_status.h"
#include "gateway/core/driver_handles.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "store/pg_conn.h"
#include "tests/pg_cluster.h"
#include "trust/projection_check.h"
#include "policy/containment.h"
#include "policy/validation.h"

using osh::common::FromGrpc;
using osh::common::IsStorageError;
using osh::common::ReasonOf;
using osh::common::Refused;
using osh::common::StorageError;
using osh::common::ToGrpc;

namespace {

std::vector<std::string> logged;
void Remember(absl::string_view text) { logged.emplace_back(text); }

google::rpc::ErrorInfo DetailsInfo(const grpc::Status& status) {
  google::rpc::Status details;
  REQUIRE(details.ParseFromString(status.error_details()));
  CHECK(details.code() == static_cast<int>(status.error_code()));
  CHECK(details.message() == status.error_message());
  REQUIRE(details.details_size() == 1);
  CHECK(details.details(0).type_url() == "type.googleapis.com/google.rpc.ErrorInfo");
  google::rpc::ErrorInfo info;
  REQUIRE(details.details(0).UnpackTo(&info));
  return info;
}

}  // namespace

TEST_CASE("errors: Refused keeps the SPEC message and carries the reason as a payload", "[errors]") {
  const absl::Status refused = Refused(absl::StatusCode::kFailedPrecondition, "unknown_key", "no trusted key 'k9'");
  CHECK(refused.code() == absl::StatusCode::kFailedPrecondition);
  CHECK(refused.message() == "unknown_key: no trusted key 'k9'");
  CHECK(ReasonOf(refused) == "unknown_key");
  CHECK_FALSE(IsStorageError(refused));
  // The payload decides, not the text: a reason whose detail names another code.
  CHECK(ReasonOf(Refused(absl::StatusCode::kFailedPrecondition, "rollback", "expired: no")) == "rollback");
  CHECK(ReasonOf(osh::common::WithReason(absl::InternalError("anything: at all"), "driver_error")) == "driver_error");
  // A projection check's refusal is one.
  osh::trust::CheckResult result;
  result.reason = "digest_mismatch";
  result.detail = "the digest is not SHA-256(body)";
  CHECK(result.ToStatus().message() == result.Message());
  CHECK(ReasonOf(result.ToStatus()) == "digest_mismatch");
}

TEST_CASE("errors: the policy layer's refusals carry their reason as a payload, not only as text", "[errors]") {
  // What gateway code asks ReasonOf about must not depend on a message prefix (issue 26).
  auto has_payload = [](const absl::Status& status, const std::string& reason) {
    absl::Status stripped(status.code(), "no prefix here");  // the message alone would give no reason
    CHECK(osh::common::ReasonOf(stripped) != reason);
    return osh::common::ReasonOf(status) == reason && status.GetPayload(osh::common::kErrorInfoTypeUrl).has_value();
  };
  openshell::sandbox::v1::SandboxPolicy bad;
  bad.set_version(1);
  bad.mutable_filesystem()->add_read_only("relative/path");
  const absl::Status invalid = osh::policy::ValidatePolicy(bad);
  REQUIRE_FALSE(invalid.ok());
  CHECK(has_payload(invalid, "invalid_policy"));
  osh::policy::ContainmentResult outside;
  outside.verdict = osh::policy::Containment::kOutside;
  outside.detail = "network: a wider endpoint";
  CHECK(has_payload(outside.ToStatus(), "exceeds_ceiling"));
  CHECK(outside.ToStatus().message() == "exceeds_ceiling: network: a wider endpoint");
  osh::policy::ContainmentResult unknown;
  unknown.verdict = osh::policy::Containment::kUnknown;
  CHECK(has_payload(unknown.ToStatus(), "containment_unknown"));
}

TEST_CASE("errors: ReasonOf reads the message prefix only for statuses without a payload", "[errors]") {
  CHECK(ReasonOf(absl::OkStatus()).empty());
  CHECK(ReasonOf(absl::FailedPreconditionError("digest_mismatch: the digest is not SHA-256(body)")) == "digest_mismatch");
  CHECK(ReasonOf(absl::AlreadyExistsError("sandbox 'x' is already admitted")).empty());
  CHECK(ReasonOf(absl::InternalError("Digest: x")).empty());
  CHECK(ReasonOf(absl::InternalError("boom")).empty());
}

TEST_CASE("errors: a storage error is marked by its payload, scrubbed by ToGrpc and logged in full", "[errors]") {
  logged.clear();
  const absl::Status storage = StorageError(absl::StatusCode::kInternal, "postgresql",
                                            "postgresql: ERROR:  new row for relation \"sandboxes\" violates check constraint \"c\"");
  CHECK(IsStorageError(storage));
  CHECK(ReasonOf(storage) == "storage_error");
  const grpc::Status answered = ToGrpc(storage, &Remember);
  CHECK(answered.error_code() == grpc::StatusCode::INTERNAL);
  CHECK(answered.error_message() ==
        "storage_error: the gateway's database could not complete the operation (INTERNAL); details are in the "
        "gateway's log");
  for (const char* leak : {"sandboxes", "relation", "constraint", "postgresql", "ERROR"}) {
    CHECK_FALSE(absl::StrContains(answered.error_message(), leak));
    CHECK_FALSE(absl::StrContains(answered.error_details(), leak));
  }
  const google::rpc::ErrorInfo info = DetailsInfo(answered);
  CHECK(info.reason() == "storage_error");
  CHECK(info.domain() == "policy-gateway.openshell");
  CHECK(info.metadata().empty());  // the backend is named in the log only
  REQUIRE(logged.size() == 1);
  CHECK_THAT(logged[0], Catch::Contains("violates check constraint") && Catch::Contains("INTERNAL"));

  // Whatever its text: not the prefix but the payload makes it a storage error.
  CHECK(ToGrpc(StorageError(absl::StatusCode::kUnavailable, "sqlite", "table audit: locked")).error_message() ==
        "storage_error: the gateway's database could not complete the operation (UNAVAILABLE); details are in the "
        "gateway's log");
  const grpc::Status plain = ToGrpc(absl::InvalidArgumentError("sqlite: is only a word here"), &Remember);
  CHECK(plain.error_message() == "sqlite: is only a word here");
  CHECK(plain.error_details().empty());
  CHECK(logged.size() == 1);
}

TEST_CASE("errors: ToGrpc and FromGrpc round-trip code, message and reason", "[errors]") {
  const absl::Status refused = Refused(absl::StatusCode::kUnavailable, "driver_unavailable", "GetProjection: down");
  const grpc::Status wire = ToGrpc(refused);
  CHECK(wire.error_code() == grpc::StatusCode::UNAVAILABLE);
  CHECK(wire.error_message() == "driver_unavailable: GetProjection: down");
  CHECK(DetailsInfo(wire).reason() == "driver_unavailable");
  const absl::Status back = FromGrpc(wire);
  CHECK(back == refused);  // code, message and payload
  CHECK(ReasonOf(back) == "driver_unavailable");

  const absl::Status storage = FromGrpc(ToGrpc(StorageError(absl::StatusCode::kAborted, "sqlite", "sqlite: busy")));
  CHECK(storage.code() == absl::StatusCode::kAborted);
  CHECK(ReasonOf(storage) == "storage_error");
  CHECK(IsStorageError(storage));  // a client sees the kind; the text was scrubbed before it left

  CHECK(ToGrpc(absl::OkStatus()).ok());
  CHECK(FromGrpc(grpc::Status::OK).ok());
  // A peer that sends no details (or details that are not a google.rpc.Status): the text stands.
  const absl::Status peer = FromGrpc(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "expired: at 5"));
  CHECK(peer == absl::FailedPreconditionError("expired: at 5"));
  CHECK(ReasonOf(peer) == "expired");
  CHECK(ReasonOf(FromGrpc(grpc::Status(grpc::StatusCode::INTERNAL, "x", "\xff\xff not a proto"))).empty());
  // A plain status without a reason sends no details.
  CHECK(ToGrpc(absl::NotFoundError("no sandbox 'a'")).error_details().empty());
}

// SQLite's: "limits: storage errors reach clients as a stable message" (test_limits.cc).
TEST_CASE("errors: PostgreSQL's own failures are storage errors", "[errors][store][postgres]") {
  auto conn = osh::store::PgConn::Connect(osh::test::PgCluster::Shared().CreateDatabase());
  REQUIRE(conn.ok());
  REQUIRE(conn->Exec("CREATE TABLE t (id TEXT PRIMARY KEY)").ok());
  REQUIRE(conn->Exec("INSERT INTO t VALUES ('a')").ok());
  const absl::Status pg_dup = conn->Exec("INSERT INTO t VALUES ('a')");
  CHECK(absl::IsAlreadyExists(pg_dup));
  CHECK(IsStorageError(pg_dup));
  CHECK_THAT(std::string(pg_dup.message()), Catch::StartsWith("postgresql: "));  // in full, for the log
  CHECK(IsStorageError(conn->Exec("SELECT nope FROM nothing")));
  const auto refused = osh::store::PgConn::Connect("postgresql:///nodb?host=/nonexistent&connect_timeout=1");
  CHECK(IsStorageError(refused.status()));
}

TEST_CASE("store: a PostgreSQL statement prepared once keeps answering, and errors, as an unprepared one",
          "[store][postgres]") {
  using osh::store::PgConn;
  using osh::store::PgParams;
  auto conn = PgConn::Connect(osh::test::PgCluster::Shared().CreateDatabase());
  REQUIRE(conn.ok());
  REQUIRE(conn->Exec("CREATE TABLE t (id TEXT PRIMARY KEY, n BIGINT)").ok());
  const std::string insert = "INSERT INTO t (id, n) VALUES ($1, $2)";
  const std::string count = "SELECT COUNT(*), COALESCE(SUM(n), 0)::bigint FROM t WHERE id LIKE $1";
  for (int i = 0; i < 12; ++i) REQUIRE(conn->Query(insert, PgParams().Add(absl::StrCat("a", i)).Add(int64_t{i})).ok());
  // The server holds it prepared (a statement of this text, parsed once).
  auto held = conn->Query("SELECT COUNT(*) FROM pg_prepared_statements WHERE statement = $1", PgParams().Add(insert));
  REQUIRE(held.ok());
  CHECK(held->Int(0, 0) == 1);
  // A unique violation of the prepared statement is still ALREADY_EXISTS, a storage error.
  const absl::Status dup = conn->Query(insert, PgParams().Add("a3").Add(int64_t{0})).status();
  CHECK(absl::IsAlreadyExists(dup));
  CHECK(osh::common::IsStorageError(dup));
  // Inside a transaction an error aborts it; a statement prepared there stays usable after the rollback.
  REQUIRE(conn->Exec("BEGIN").ok());
  REQUIRE(conn->Query(count, PgParams().Add("a%")).ok());
  CHECK(!conn->Query("SELECT 1/0").ok());
  CHECK(!conn->Query(count, PgParams().Add("a%")).ok());  // the transaction is aborted: refused, not hidden
  REQUIRE(conn->Exec("ROLLBACK").ok());
  auto sum = conn->Query(count, PgParams().Add("a%"));
  REQUIRE(sum.ok());
  CHECK(sum->Int(0, 0) == 12);
  CHECK(sum->Int(0, 1) == 66);
  // The session dropped every prepared statement behind the connection's back: each runs unprepared,
  // then is prepared again.
  REQUIRE(conn->Exec("DEALLOCATE ALL").ok());
  REQUIRE(conn->Query(insert, PgParams().Add("b").Add(int64_t{100})).ok());
  sum = conn->Query(count, PgParams().Add("%"));
  REQUIRE(sum.ok());
  CHECK(sum->Int(0, 0) == 13);
  CHECK(sum->Int(0, 1) == 166);
  // Inside a transaction: a statement the server refuses to prepare fails with its own error (not "the
  // transaction is aborted", which running it unprepared would say); a prepared statement the session lost
  // there is ABORTED, a storage error a write is led again for; and a COMMIT the server answers with
  // ROLLBACK is no success.
  REQUIRE(conn->Exec("BEGIN").ok());
  const absl::Status missing = conn->Query("SELECT n FROM no_such_table WHERE id = $1", PgParams().Add("x")).status();
  CHECK_THAT(std::string(missing.message()), Catch::Contains("no_such_table"));
  REQUIRE(conn->Exec("ROLLBACK").ok());
  REQUIRE(conn->Exec("BEGIN").ok());
  REQUIRE(conn->Query(count, PgParams().Add("%")).ok());
  REQUIRE(conn->Exec("DEALLOCATE ALL").ok());
  const absl::Status lost = conn->Query(count, PgParams().Add("%")).status();
  CHECK(absl::IsAborted(lost));
  CHECK(osh::common::IsStorageError(lost));
  REQUIRE(conn->Exec("ROLLBACK").ok());
  REQUIRE(conn->Query(count, PgParams().Add("%")).ok());
  REQUIRE(conn->Exec("BEGIN").ok());
  REQUIRE(conn->Query(insert, PgParams().Add("c").Add(int64_t{1})).ok());
  CHECK(!conn->Exec("SELECT 1/0").ok());  // the transaction fails; its caller goes on regardless
  CHECK(conn->Exec("COMMIT").ok());       // what a plain Exec reports: the server's tag is ROLLBACK
  REQUIRE(conn->Exec("BEGIN").ok());
  REQUIRE(conn->Query(insert, PgParams().Add("c").Add(int64_t{1})).ok());
  CHECK(!conn->Exec("SELECT 1/0").ok());
  const absl::Status committed = conn->ExecCommit("COMMIT");
  CHECK(absl::IsAborted(committed));
  CHECK_THAT(std::string(committed.message()), Catch::Contains("rolled the transaction back"));
  sum = conn->Query(count, PgParams().Add("c"));
  REQUIRE(sum.ok());
  CHECK(sum->Int(0, 0) == 0);  // neither committed
  // A text with more parameters than kMaxPreparedParams is never kept (a batch's VALUES list varies).
  std::string wide = "SELECT 0";
  PgParams many;
  for (size_t i = 1; i <= PgConn::kMaxPreparedParams + 1; ++i) {
    absl::StrAppend(&wide, " + $", i, "::int");
    many.Add(int64_t{1});
  }
  auto added = conn->Query(wide, many);
  REQUIRE(added.ok());
  CHECK(added->Int(0, 0) == static_cast<int64_t>(PgConn::kMaxPreparedParams + 1));
  held = conn->Query("SELECT COUNT(*) FROM pg_prepared_statements WHERE statement = $1", PgParams().Add(wide));
  REQUIRE(held.ok());
  CHECK(held->Int(0, 0) == 0);
}

TEST_CASE("errors: a storage error wrapped by a caller stays one, and is still scrubbed", "[errors]") {
  const absl::Status storage =
      StorageError(absl::StatusCode::kInternal, "postgresql", "postgresql: ERROR:  relation \"policy_revisions\" does not exist");
  const absl::Status wrapped = osh::common::Annotated(storage, "policy scope default changed on another replica and cannot be re-read",
                                                      absl::StatusCode::kUnavailable);
  CHECK(wrapped.code() == absl::StatusCode::kUnavailable);
  CHECK_THAT(std::string(wrapped.message()), Catch::StartsWith("policy scope default changed") && Catch::Contains("policy_revisions"));
  CHECK(IsStorageError(wrapped));
  // The builtin driver's store failing under GetProjection: not "driver_unavailable: …" with the SQL in it.
  const grpc::Status answered = ToGrpc(osh::gateway::DriverError(wrapped, "GetProjection"));
  CHECK_THAT(answered.error_message(), Catch::StartsWith("storage_error: "));
  CHECK_FALSE(absl::StrContains(answered.error_message(), "policy_revisions"));
  // A driver's own failure keeps its reason; a refusal wrapped keeps its reason too.
  CHECK(ReasonOf(osh::gateway::DriverError(absl::UnavailableError("connection refused"), "GetProjection")) == "driver_unavailable");
  CHECK(ReasonOf(osh::common::Annotated(Refused(absl::StatusCode::kFailedPrecondition, "expired", "at 5"), "refresh")) == "expired");
  CHECK(osh::common::Annotated(absl::OkStatus(), "x").ok());
}
