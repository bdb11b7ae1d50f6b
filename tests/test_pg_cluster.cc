// The PostgreSQL test cluster itself (tests/pg_cluster.h), the ground the PostgreSQL store's tests will
// stand on (issue 11): it starts, libpq reaches it by connection string and by URL, a transaction
// commits, and it is gone afterwards.
#include <libpq-fe.h>

#include <filesystem>
#include <memory>

#include <catch2/catch.hpp>

#include "tests/pg_cluster.h"

namespace osh::test {
namespace {

using Connection = std::unique_ptr<PGconn, decltype(&PQfinish)>;
using Result = std::unique_ptr<PGresult, decltype(&PQclear)>;

Result Exec(PGconn* connection, const char* sql) { return Result(PQexec(connection, sql), &PQclear); }

}  // namespace

TEST_CASE("postgres: a throw-away cluster starts, libpq commits to it, and it is removed", "[postgres]") {
  std::string dir;
  {
    PgCluster cluster;
    dir = cluster.dir();
    for (const std::string& target : {cluster.ConnectionString(), cluster.Url()}) {
      INFO(target);
      Connection connection(PQconnectdb(target.c_str()), &PQfinish);
      REQUIRE(PQstatus(connection.get()) == CONNECTION_OK);
    }
    Connection connection(PQconnectdb(cluster.ConnectionString().c_str()), &PQfinish);
    REQUIRE(PQstatus(connection.get()) == CONNECTION_OK);
    CHECK(PQresultStatus(Exec(connection.get(), "CREATE TABLE t (k TEXT PRIMARY KEY, v BIGINT)").get()) == PGRES_COMMAND_OK);
    CHECK(PQresultStatus(Exec(connection.get(), "BEGIN").get()) == PGRES_COMMAND_OK);
    CHECK(PQresultStatus(Exec(connection.get(), "INSERT INTO t VALUES ('a', 1), ('b', 2)").get()) == PGRES_COMMAND_OK);
    CHECK(PQresultStatus(Exec(connection.get(), "COMMIT").get()) == PGRES_COMMAND_OK);
    // A second connection sees the committed rows; a duplicate key is refused with its SQLSTATE.
    Connection other(PQconnectdb(cluster.ConnectionString().c_str()), &PQfinish);
    Result sum = Exec(other.get(), "SELECT sum(v) FROM t");
    REQUIRE(PQresultStatus(sum.get()) == PGRES_TUPLES_OK);
    CHECK(std::string(PQgetvalue(sum.get(), 0, 0)) == "3");
    Result duplicate = Exec(other.get(), "INSERT INTO t VALUES ('a', 9)");
    CHECK(PQresultStatus(duplicate.get()) == PGRES_FATAL_ERROR);
    CHECK(std::string(PQresultErrorField(duplicate.get(), PG_DIAG_SQLSTATE)) == "23505");  // unique_violation
  }
  CHECK_FALSE(std::filesystem::exists(dir));
}

}  // namespace osh::test
