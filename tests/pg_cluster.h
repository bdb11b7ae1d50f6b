// A throw-away PostgreSQL cluster for tests (Debian's `postgresql` package): initdb into a temp folder,
// the server on a Unix socket there (no TCP), removed at destruction. PostgreSQL refuses to run as root,
// so when the suite runs as root the cluster runs as user nobody (setpriv). Not thread-safe; one per test.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "tests/link_proxy.h"
#include "tests/process.h"

struct pg_conn;  // libpq's PGconn

namespace osh::test {

class PgCluster {
 public:
  // Starts the cluster; REQUIREs (Catch) that it came up. The newest installed PostgreSQL is used.
  PgCluster();
  ~PgCluster();  // fast shutdown, then the folder is removed
  PgCluster(const PgCluster&) = delete;

  // A libpq connection string for the superuser `postgres` and database `dbname`.
  std::string ConnectionString(const std::string& dbname = "postgres") const;
  // The same as a postgresql:// URL (the socket folder as the host, percent-encoded).
  std::string Url(const std::string& dbname = "postgres") const;
  // Stops the server (fast shutdown: every connection is cut) and starts it again on the same data.
  void Restart();
  // The two halves of Restart, for a test that works while the database is down.
  void StopServer();
  void StartServer();
  // A new, empty database in this cluster; its postgresql:// URL.
  std::string CreateDatabase();
  // One cluster for the whole test process (started on first use): tests that need a store only, not
  // a server to stop or restart, take a fresh database in it.
  static PgCluster& Shared();
  const std::string& dir() const { return dir_; }

  // The installed server's bin folder, or "" when PostgreSQL is not installed.
  static std::string BinDir();
  // Runs `sql` with the server's psql against `url` (stop at the first error; tuples only, unaligned, into
  // `out` when given). Returns psql's exit code (0: every statement succeeded).
  static int Psql(const std::string& url, const std::string& sql, std::string* out = nullptr);

 private:
  std::string dir_;
  std::unique_ptr<Process> server_;
  int databases_ = 0;
};

// Rows of a database held locked (`select_for_update`, run in a transaction of its own connection;
// REQUIREs that it locks at least one row) until Release() or destruction: a statement that updates them
// waits meanwhile, as behind a slow transaction. Not thread-safe.
class HeldRows {
 public:
  HeldRows(const std::string& url, const std::string& select_for_update);
  ~HeldRows() { Release(); }
  HeldRows(const HeldRows&) = delete;
  void Release();  // rolls back: the waiting statements go on
  // Runs `sql` in the transaction and commits it: the waiting statements go on and meet what it wrote.
  void CommitWith(const std::string& sql);

 private:
  pg_conn* conn_ = nullptr;
};

// A proxy in front of a cluster's Unix socket, on a socket of its own folder: every connection made
// through it can be cut at once (both directions shut down), as a link lost in the middle of a call; new
// connections are still accepted after. Thread-safe; stops its threads at destruction.
class PgProxy {
 public:
  explicit PgProxy(const PgCluster& cluster);
  ~PgProxy();
  PgProxy(const PgProxy&) = delete;
  // The postgresql:// URL of database `dbname` through the proxy.
  std::string Url(const std::string& dbname) const;
  // Cuts every connection open through the proxy now.
  void CutAll() { link_->CutAll(); }

 private:
  std::string dir_;
  std::unique_ptr<LinkProxy> link_;
};

// How many backends of the database at `url` wait on a lock in a statement starting with `query_start`.
int WaitingOnLock(const std::string& url, const std::string& query_start);

}  // namespace osh::test
