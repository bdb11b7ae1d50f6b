#include "tests/pg_cluster.h"

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cctype>
#include <filesystem>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>
#include <libpq-fe.h>

#include "tests/test_support.h"

namespace osh::test {
namespace {

constexpr int kPort = 5432;  // names the socket file only: the server listens on no TCP address
constexpr uid_t kUnprivileged = 65534;  // nobody

// `argv` run as this user, or as nobody when we are root.
std::vector<std::string> AsServerUser(std::vector<std::string> argv) {
  if (::geteuid() != 0) return argv;
  argv.insert(argv.begin(), {"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"});
  return argv;
}

std::string PercentEncode(const std::string& text) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

}  // namespace

int PgCluster::Psql(const std::string& url, const std::string& sql, std::string* out) {
  std::string ignored, err;
  const int code = RunCommand({BinDir() + "/psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql},
                              out != nullptr ? out : &ignored, &err);
  INFO(err);
  return code;
}

std::string PgCluster::BinDir() {
  std::vector<std::filesystem::path> found;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator("/usr/lib/postgresql", error)) {
    if (std::filesystem::exists(entry.path() / "bin" / "postgres")) found.push_back(entry.path() / "bin");
  }
  if (found.empty()) return "";
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) {
    return std::stoi(a.parent_path().filename().string()) < std::stoi(b.parent_path().filename().string());
  });
  return found.back().string();
}

PgCluster::PgCluster() {
  const std::string bin = BinDir();
  REQUIRE_FALSE(bin.empty());  // ./scripts/bootstrap.sh installs postgresql
  char path[] = "/tmp/osh-pg-XXXXXX";
  REQUIRE(::mkdtemp(path) != nullptr);
  dir_ = path;
  if (::geteuid() == 0) REQUIRE(::chown(dir_.c_str(), kUnprivileged, kUnprivileged) == 0);
  std::string out, err;
  const int initialized = RunCommand(AsServerUser({bin + "/initdb", "-D", dir_ + "/data", "-U", "postgres",
                                                   "--auth=trust", "-E", "UTF8", "--no-sync"}),
                                     &out, &err);
  INFO(out << err);
  REQUIRE(initialized == 0);
  StartServer();
}

void PgCluster::StartServer() {
  const std::string bin = BinDir();
  server_ = std::make_unique<Process>(
      AsServerUser({bin + "/postgres", "-D", dir_ + "/data", "-k", dir_, "-p", std::to_string(kPort), "-c",
                    "listen_addresses=", "-c", "max_connections=200"}),
      dir_ + "/server.log");
  // Up once it accepts a connection, not merely once the socket exists ("the database system is starting up").
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (PQping(ConnectionString().c_str()) != PQPING_OK && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  INFO(ReadAll(dir_ + "/server.log"));
  REQUIRE(PQping(ConnectionString().c_str()) == PQPING_OK);
}

void PgCluster::StopServer() {
  if (server_ == nullptr) return;
  server_->Signal(SIGINT);  // fast shutdown
  server_->Wait(std::chrono::seconds(30));
  server_.reset();
}

void PgCluster::Restart() {
  StopServer();
  StartServer();
}

PgCluster::~PgCluster() {
  StopServer();
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

std::string PgCluster::CreateDatabase() {
  const std::string name = "t" + std::to_string(++databases_);
  PGconn* conn = PQconnectdb(ConnectionString().c_str());
  PGresult* result = PQexec(conn, ("CREATE DATABASE " + name).c_str());
  const bool created = PQresultStatus(result) == PGRES_COMMAND_OK;
  INFO(PQerrorMessage(conn));
  PQclear(result);
  PQfinish(conn);
  REQUIRE(created);
  return Url(name);
}

PgCluster& PgCluster::Shared() {
  static PgCluster* shared = new PgCluster();  // stopped by the atexit below, after every test
  static const bool registered = [] {
    std::atexit([] { delete shared; });
    return true;
  }();
  (void)registered;
  return *shared;
}

std::string PgCluster::ConnectionString(const std::string& dbname) const {
  return "host=" + dir_ + " port=" + std::to_string(kPort) + " user=postgres dbname=" + dbname;
}

HeldRows::HeldRows(const std::string& url, const std::string& select_for_update) {
  conn_ = PQconnectdb(url.c_str());
  REQUIRE(PQstatus(conn_) == CONNECTION_OK);
  PGresult* begun = PQexec(conn_, "BEGIN");
  REQUIRE(PQresultStatus(begun) == PGRES_COMMAND_OK);
  PQclear(begun);
  PGresult* locked = PQexec(conn_, select_for_update.c_str());
  INFO(select_for_update << ": " << PQerrorMessage(conn_));
  REQUIRE(PQresultStatus(locked) == PGRES_TUPLES_OK);
  const int rows = PQntuples(locked);
  PQclear(locked);
  REQUIRE(rows > 0);
}

void HeldRows::Release() {
  if (conn_ == nullptr) return;
  PQclear(PQexec(conn_, "ROLLBACK"));
  PQfinish(conn_);
  conn_ = nullptr;
}

void HeldRows::CommitWith(const std::string& sql) {
  REQUIRE(conn_ != nullptr);
  PGresult* done = PQexec(conn_, sql.c_str());
  INFO(sql << ": " << PQerrorMessage(conn_));
  REQUIRE(PQresultStatus(done) == PGRES_COMMAND_OK);
  PQclear(done);
  PGresult* committed = PQexec(conn_, "COMMIT");
  REQUIRE(PQresultStatus(committed) == PGRES_COMMAND_OK);
  PQclear(committed);
  PQfinish(conn_);
  conn_ = nullptr;
}

int WaitingOnLock(const std::string& url, const std::string& query_start) {
  std::string out;
  std::string escaped;
  for (char c : query_start) escaped += c == '\'' ? std::string("''") : std::string(1, c);
  REQUIRE(PgCluster::Psql(url, "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND "
                               "wait_event_type = 'Lock' AND starts_with(query, '" + escaped + "')", &out) == 0);
  return std::stoi(out);
}

std::string PgCluster::Url(const std::string& dbname) const {
  return "postgresql://postgres@" + PercentEncode(dir_) + ":" + std::to_string(kPort) + "/" + dbname;
}

PgProxy::PgProxy(const PgCluster& cluster) {
  char tmpl[] = "/tmp/osh-pgproxy-XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  dir_ = tmpl;
  ::chmod(dir_.c_str(), 0755);
  link_ = std::make_unique<LinkProxy>(cluster.dir() + "/.s.PGSQL." + std::to_string(kPort),
                                      dir_ + "/.s.PGSQL." + std::to_string(kPort));
}

PgProxy::~PgProxy() {
  link_.reset();
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

std::string PgProxy::Url(const std::string& dbname) const {
  return "postgresql://postgres@" + PercentEncode(dir_) + ":" + std::to_string(kPort) + "/" + dbname;
}

}  // namespace osh::test
