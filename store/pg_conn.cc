#include "store/pg_conn.h"

#include <arpa/inet.h>

#include <cstdlib>
#include <cstring>
#include <string_view>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "store/storage_error.h"

namespace osh::store {
namespace {

constexpr unsigned kBoolOid = 16, kInt8Oid = 20, kInt2Oid = 21, kInt4Oid = 23;

std::string Trimmed(const char* message) {
  return std::string(absl::StripTrailingAsciiWhitespace(message == nullptr ? "" : message));
}

}  // namespace

PgParams& PgParams::Add(const std::string& text) {
  if (!first_nul_text_ && text.find('\0') != std::string::npos) first_nul_text_ = values_.size();
  values_.push_back(text);
  formats_.push_back(0);
  return *this;
}
PgParams& PgParams::AddBytes(const std::string& bytes) {
  values_.push_back(bytes);
  formats_.push_back(1);
  return *this;
}
PgParams& PgParams::Add(int64_t value) { return Add(std::to_string(value)); }

int64_t PgResult::affected() const {
  const char* tuples = Pq().PQcmdTuples(result_.get());
  return (tuples == nullptr || *tuples == '\0') ? 0 : std::strtoll(tuples, nullptr, 10);
}

std::string PgResult::Bytes(int row, int column) const {
  return std::string(Pq().PQgetvalue(result_.get(), row, column), Pq().PQgetlength(result_.get(), row, column));
}

int64_t PgResult::Int(int row, int column) const {
  if (IsNull(row, column)) return 0;
  const auto* bytes = reinterpret_cast<const unsigned char*>(Pq().PQgetvalue(result_.get(), row, column));
  uint64_t value = 0;
  switch (Pq().PQftype(result_.get(), column)) {
    case kBoolOid:
      return bytes[0] != 0;
    case kInt2Oid:
      return static_cast<int16_t>((bytes[0] << 8) | bytes[1]);
    case kInt4Oid:
      for (int i = 0; i < 4; ++i) value = (value << 8) | bytes[i];
      return static_cast<int32_t>(value);
    case kInt8Oid:
      for (int i = 0; i < 8; ++i) value = (value << 8) | bytes[i];
      return static_cast<int64_t>(value);
    default:
      return 0;  // not an integer column: a programming error the contract tests catch
  }
}

absl::StatusOr<PgConn> PgConn::Connect(const std::string& conninfo) {
  if (auto loaded = LoadLibPq(); !loaded.ok()) return loaded.status();
  // `conninfo` first (expanded: a connection string or URL), then the TCP defaults it does not set. None
  // when it names a service (its file's values would be overridden: libpq fills in only what is not
  // given) or says whether to use keepalives at all; none this libpq does not know (tcp_user_timeout
  // came with libpq 12).
  std::vector<const char*> keywords{"dbname"}, values{conninfo.c_str()};
  char* parse_error = nullptr;
  PQconninfoOption* given = Pq().PQconninfoParse(conninfo.c_str(), &parse_error);
  if (given == nullptr) Pq().PQfreemem(parse_error);  // PQconnectdbParams reports it below
  auto option = [&](std::string_view keyword) -> const PQconninfoOption* {
    for (const PQconninfoOption* o = given; o != nullptr && o->keyword != nullptr; ++o) {
      if (std::string_view(o->keyword) == keyword) return o;
    }
    return nullptr;
  };
  auto is_set = [&](std::string_view keyword) {
    const PQconninfoOption* o = option(keyword);
    return o != nullptr && o->val != nullptr && *o->val != '\0';
  };
  const char* service_variable = std::getenv("PGSERVICE");
  if (given != nullptr && !is_set("service") && !is_set("keepalives") &&
      (service_variable == nullptr || *service_variable == '\0')) {
    for (const auto& [keyword, value] : kDefaultTcpOptions) {
      if (option(keyword) != nullptr && !is_set(keyword)) {
        keywords.push_back(keyword);
        values.push_back(value);
      }
    }
  }
  if (given != nullptr) Pq().PQconninfoFree(given);
  keywords.push_back(nullptr);
  values.push_back(nullptr);
  PgConn conn(Pq().PQconnectdbParams(keywords.data(), values.data(), /*expand_dbname=*/1));
  if (conn.conn_ == nullptr) return PostgresStorageError(absl::StatusCode::kResourceExhausted, ": out of memory");
  if (Pq().PQstatus(conn.raw()) != CONNECTION_OK) {
    return PostgresStorageError(absl::StatusCode::kUnavailable, absl::StrCat(" (", RedactedConninfo(conninfo), "): ",
                                                                            Trimmed(Pq().PQerrorMessage(conn.raw()))));
  }
  // The server's NOTICEs ("relation ... already exists, skipping") are not errors: not printed.
  Pq().PQsetNoticeProcessor(conn.raw(), [](void*, const char*) {}, nullptr);
  return conn;
}

absl::Status PgConn::Reconnect() {
  prepared_.clear();
  Pq().PQreset(conn_.get());
  if (Pq().PQstatus(conn_.get()) != CONNECTION_OK) {
    return PostgresStorageError(absl::StatusCode::kUnavailable, absl::StrCat(": ", Trimmed(Pq().PQerrorMessage(conn_.get()))));
  }
  return absl::OkStatus();
}

absl::Status PgConn::ErrorOf(const PGresult* result) const {
  const char* state = result == nullptr ? nullptr : Pq().PQresultErrorField(result, PG_DIAG_SQLSTATE);
  const std::string message =
      absl::StrCat(": ", Trimmed(result == nullptr ? Pq().PQerrorMessage(conn_.get()) : Pq().PQresultErrorMessage(result)));
  const std::string code = state == nullptr ? "" : state;
  if (Pq().PQstatus(conn_.get()) != CONNECTION_OK || absl::StartsWith(code, "08") || code == "57P01" ||
      code == "57P02" || code == "57P03") {
    return PostgresStorageError(absl::StatusCode::kUnavailable, message);
  }
  if (code == "23505") return PostgresStorageError(absl::StatusCode::kAlreadyExists, message);
  // A serialization failure, a deadlock's victim, and a foreign key whose row another replica's
  // transaction dropped meanwhile (an envelope or body no longer used): the write may be led again.
  if (code == "40001" || code == "40P01" || code == "23503") {
    return PostgresStorageError(absl::StatusCode::kAborted, message);
  }
  return PostgresStorageError(absl::StatusCode::kInternal, message);
}

absl::Status PgConn::Exec(const std::string& sql) {
  PGresult* result = Pq().PQexec(conn_.get(), sql.c_str());
  const ExecStatusType status = result == nullptr ? PGRES_FATAL_ERROR : Pq().PQresultStatus(result);
  absl::Status out = (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) ? absl::OkStatus() : ErrorOf(result);
  Pq().PQclear(result);
  return out;
}

absl::Status PgConn::ExecCommit(const std::string& sql) {
  PGresult* result = Pq().PQexec(conn_.get(), sql.c_str());
  const ExecStatusType status = result == nullptr ? PGRES_FATAL_ERROR : Pq().PQresultStatus(result);
  absl::Status out = (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) ? absl::OkStatus() : ErrorOf(result);
  if (out.ok() && std::string_view(Pq().PQcmdStatus(result)) != "COMMIT") {
    out = PostgresStorageError(absl::StatusCode::kAborted,
                               absl::StrCat(": the server rolled the transaction back at COMMIT (",
                                            Pq().PQcmdStatus(result), ")"));
  }
  Pq().PQclear(result);
  return out;
}

absl::StatusOr<PgResult> PgConn::Query(const std::string& sql, const PgParams& params) {
  if (params.first_nul_text_) {
    // libpq sends text parameters NUL-terminated: the server would store the value cut at the NUL while
    // the audit chain hashed it whole. Refused instead, before anything is sent.
    return absl::InvalidArgumentError(absl::StrCat("text parameter $", *params.first_nul_text_ + 1,
                                                   " holds a NUL byte, which PostgreSQL text cannot store"));
  }
  std::vector<const char*> values;
  std::vector<int> lengths;
  for (const auto& v : params.values_) {
    values.push_back(v.data());
    lengths.push_back(static_cast<int>(v.size()));
  }
  const int count = static_cast<int>(values.size());
  PGresult* result = nullptr;
  auto name = PreparedName(sql, count);
  if (!name.ok()) return name.status();
  if (*name != nullptr) {
    result = Pq().PQexecPrepared(conn_.get(), (*name)->c_str(), count, values.data(), lengths.data(),
                                 params.formats_.data(), /*resultFormat=*/1);
    const char* state = result == nullptr ? nullptr : Pq().PQresultErrorField(result, PG_DIAG_SQLSTATE);
    if (state != nullptr && std::string_view(state) == "26000") {  // the session lost it (DEALLOCATE)
      prepared_.clear();  // DEALLOCATE ALL and DISCARD lose every one: prepared again as each is next run
      Pq().PQclear(result);
      result = nullptr;
      if (Pq().PQtransactionStatus(conn_.get()) == PQTRANS_INERROR) {
        // The failed execution aborted the open transaction: the write is led again (prepared anew).
        return PostgresStorageError(absl::StatusCode::kAborted, ": a prepared statement was lost by the session");
      }
    }
  }
  if (result == nullptr) {
    result = Pq().PQexecParams(conn_.get(), sql.c_str(), count, nullptr, values.data(), lengths.data(),
                               params.formats_.data(), /*resultFormat=*/1);
  }
  const ExecStatusType status = result == nullptr ? PGRES_FATAL_ERROR : Pq().PQresultStatus(result);
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
    absl::Status error = ErrorOf(result);
    Pq().PQclear(result);
    return error;
  }
  return PgResult(result);
}

absl::StatusOr<const std::string*> PgConn::PreparedName(const std::string& sql, int params) {
  if (auto it = prepared_.find(sql); it != prepared_.end()) return &it->second;
  if (prepared_.size() >= kMaxPrepared || static_cast<size_t>(params) > kMaxPreparedParams) return nullptr;
  std::string name = absl::StrCat("osh_", prepared_count_++);
  PGresult* prepared = Pq().PQprepare(conn_.get(), name.c_str(), sql.c_str(), params, nullptr);
  if (prepared == nullptr) return ErrorOf(nullptr);  // out of memory, or the connection is gone
  const bool ok = Pq().PQresultStatus(prepared) == PGRES_COMMAND_OK;
  absl::Status error = ok ? absl::OkStatus() : ErrorOf(prepared);
  Pq().PQclear(prepared);
  if (!ok) return error;
  return &prepared_.emplace(sql, std::move(name)).first->second;
}

std::string RedactedConninfo(const std::string& conninfo) {
  if (!LoadLibPq().ok()) return "a PostgreSQL database (libpq is not installed)";
  char* error = nullptr;
  PQconninfoOption* options = Pq().PQconninfoParse(conninfo.c_str(), &error);
  if (options == nullptr) {
    Pq().PQfreemem(error);
    return "an unparsable connection string";
  }
  std::vector<std::string> parts;
  for (PQconninfoOption* o = options; o->keyword != nullptr; ++o) {
    const std::string keyword = o->keyword;
    if (o->val != nullptr && *o->val != '\0' &&
        (keyword == "host" || keyword == "hostaddr" || keyword == "port" || keyword == "dbname" || keyword == "user")) {
      parts.push_back(absl::StrCat(keyword, "=", o->val));
    }
  }
  Pq().PQconninfoFree(options);
  return parts.empty() ? "defaults from PG* variables" : absl::StrJoin(parts, " ");
}

}  // namespace osh::store
