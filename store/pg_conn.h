// A thin RAII layer over libpq (Debian's libpq-dev): a connection, parameterised statements with binary
// results, and SQLSTATE-aware errors. Not thread-safe by itself; PostgresStore serialises access.
//
// Errors: UNAVAILABLE when the server cannot be reached or the connection broke (the caller may
// Reconnect()), ALREADY_EXISTS for a unique violation, ABORTED for serialization failures, deadlocks
// and foreign-key violations (a row another transaction dropped meanwhile), INTERNAL otherwise; messages carry the server's text, never the connection's password.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "store/libpq.h"

namespace osh::store {

// Statement parameters: text values go as text, bytes as binary (bytea), integers as decimal text. A text
// value holding a NUL byte makes the query INVALID_ARGUMENT (PostgreSQL text cannot hold one; libpq would
// cut it there), so nothing is ever stored other than as written.
class PgParams {
 public:
  PgParams& Add(const std::string& text);
  PgParams& Add(const char* text) { return Add(std::string(text)); }
  PgParams& AddBytes(const std::string& bytes);
  PgParams& Add(int64_t value);

 private:
  friend class PgConn;
  std::vector<std::string> values_;
  std::vector<int> formats_;  // 0 text, 1 binary
  std::optional<size_t> first_nul_text_;  // a text value with a NUL byte: PgConn::Query refuses it
};

// A query's result (binary format). Column accessors take 0-based row and column.
class PgResult {
 public:
  explicit PgResult(PGresult* result) : result_(result, Pq().PQclear) {}
  int rows() const { return Pq().PQntuples(result_.get()); }
  // Rows a command touched (UPDATE/DELETE/INSERT).
  int64_t affected() const;
  std::string Bytes(int row, int column) const;  // text and bytea columns alike
  int64_t Int(int row, int column) const;        // int2/int4/int8/bool columns
  bool IsNull(int row, int column) const { return Pq().PQgetisnull(result_.get(), row, column) != 0; }

 private:
  std::shared_ptr<PGresult> result_;
};

class PgConn {
 public:
  // Connects with a libpq connection string or postgresql:// URL (PG* environment variables fill in
  // what it leaves out).
  // A link lost without a reset (a host gone, a firewall dropping packets) fails a statement within about
  // 30 s instead of leaving it waiting forever: TCP keepalives start after 10 s idle and unacknowledged
  // data is given up after 30 s (kDefaultTcpOptions; libpq ignores them on a Unix socket) — each unless
  // `conninfo` sets it, and none when it sets `keepalives` or names a service (`service=`, PGSERVICE),
  // whose file then decides. A server that is alive but slow (a statement waiting for a lock) is not cut
  // off by them.
  static absl::StatusOr<PgConn> Connect(const std::string& conninfo);
  static constexpr const char* kDefaultTcpOptions[][2] = {
      {"keepalives_idle", "10"}, {"keepalives_interval", "5"}, {"keepalives_count", "3"}, {"tcp_user_timeout", "30000"}};
  PgConn(PgConn&&) noexcept = default;
  PgConn& operator=(PgConn&&) noexcept = default;

  // One or more statements without parameters or rows.
  absl::Status Exec(const std::string& sql);
  // Exec of statements ending with COMMIT; ABORTED (a storage error) when the server answered ROLLBACK
  // (the transaction had failed without this connection seeing the statement that failed it).
  absl::Status ExecCommit(const std::string& sql);
  // One statement with $1.. parameters. Prepared on the server the first time this connection runs its
  // text (parsed and planned once; up to kMaxPrepared statements of at most kMaxPreparedParams
  // parameters — a text built with a varying number of parameters is not kept), run unprepared otherwise.
  // Needs a session of its own on the server (a pooler in transaction mode would lose the statements, as
  // it would the store's LISTEN and advisory locks).
  absl::StatusOr<PgResult> Query(const std::string& sql, const PgParams& params = {});
  static constexpr size_t kMaxPrepared = 128;
  static constexpr size_t kMaxPreparedParams = 32;
  // Re-establishes a broken connection (UNAVAILABLE while the server stays unreachable) and forgets the
  // statements the old session had prepared.
  absl::Status Reconnect();
  bool healthy() const { return Pq().PQstatus(conn_.get()) == CONNECTION_OK; }
  PGconn* raw() const { return conn_.get(); }

 private:
  explicit PgConn(PGconn* conn) : conn_(conn, Pq().PQfinish) {}
  absl::Status ErrorOf(const PGresult* result) const;
  // The name the session prepared `sql` under, preparing it if it is new and may be kept; null if it is
  // not kept. A statement the server refuses to prepare is the statement's own error (inside a
  // transaction, the transaction is then aborted: running it unprepared would only say so).
  absl::StatusOr<const std::string*> PreparedName(const std::string& sql, int params);
  std::unique_ptr<PGconn, void (*)(PGconn*)> conn_;
  absl::flat_hash_map<std::string, std::string> prepared_;  // statement text → its name in this session
  uint64_t prepared_count_ = 0;                               // names are never reused: osh_<count>
};

// `conninfo` for messages and logs: host, port, database and user, never the password.
std::string RedactedConninfo(const std::string& conninfo);

}  // namespace osh::store
