// A throw-away PostgreSQL cluster for the benchmarks (Debian's postgresql: initdb in a temp folder, the
// server on a Unix socket there; as user nobody when we are root, since PostgreSQL refuses root).
#pragma once

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <libpq-fe.h>

#include "bench/bench_process.h"

namespace osh::bench {

// `argv` as user nobody when we are root (PostgreSQL refuses root).
inline std::vector<std::string> AsServerUser(std::vector<std::string> argv) {
  if (::geteuid() != 0) return argv;
  argv.insert(argv.begin(), {"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"});
  return argv;
}

inline std::string PostgresBinDir() {
  std::string best;
  int best_version = 0;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator("/usr/lib/postgresql", error)) {
    const int version = std::atoi(entry.path().filename().c_str());
    if (version > best_version && std::filesystem::exists(entry.path() / "bin/postgres")) {
      best_version = version;
      best = (entry.path() / "bin").string();
    }
  }
  return best;
}

inline int RunWait(const std::vector<std::string>& argv, const std::string& log) {
  const pid_t pid = Spawn(argv, log);
  int status = 0;
  if (pid < 0 || ::waitpid(pid, &status, 0) < 0) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// A throw-away cluster in `dir`; Url(name) of a database created on demand.
class Cluster {
 public:
  // `dir`: an empty folder of its own (given to the server's user when we are root).
  explicit Cluster(const std::string& dir) : dir_(dir) {
    const std::string bin = PostgresBinDir();
    if (bin.empty()) return;
    if (::geteuid() == 0 && ::chown(dir_.c_str(), 65534, 65534) != 0) return;
    if (RunWait(AsServerUser({bin + "/initdb", "-D", dir_ + "/data", "-U", "postgres", "--auth=trust", "--no-sync"}),
                dir_ + "/initdb.log") != 0) {
      return;
    }
    server_ = Spawn(AsServerUser({bin + "/postgres", "-D", dir_ + "/data", "-k", dir_, "-p", "5432", "-c",
                                  "listen_addresses=", "-c", "max_connections=200"}),
                    dir_ + "/postgres.log");
    for (int i = 0; i < 1500 && PQping(Conninfo("postgres").c_str()) != PQPING_OK; ++i) ::usleep(20000);
    ok_ = PQping(Conninfo("postgres").c_str()) == PQPING_OK;
  }
  ~Cluster() {
    if (server_ > 0) {
      ::kill(server_, SIGINT);
      ::waitpid(server_, nullptr, 0);
    }
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  bool ok() const { return ok_; }
  std::string Conninfo(const std::string& db) const { return "host=" + dir_ + " port=5432 user=postgres dbname=" + db; }
  // postgresql://postgres@<socket folder, percent-encoded>:5432/<db>
  std::string CreateDatabase(const std::string& name) {
    PGconn* conn = PQconnectdb(Conninfo("postgres").c_str());
    PQclear(PQexec(conn, ("CREATE DATABASE " + name).c_str()));
    PQfinish(conn);
    std::string host;
    for (char c : dir_) host += c == '/' ? std::string("%2F") : std::string(1, c);
    return "postgresql://postgres@" + host + ":5432/" + name;
  }

 private:
  std::string dir_;
  pid_t server_ = -1;
  bool ok_ = false;
};

}  // namespace osh::bench
