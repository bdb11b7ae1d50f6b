// Shared helpers for the test suite: test data paths, JSON loading, temp folders.
#pragma once

#include "trust/audit_chain.h"

#include <filesystem>
#include <functional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <google/protobuf/struct.pb.h>

#include "openshell/policy/driver/v1/driver.pb.h"

namespace osh::test {

// The folder of the project's test data (tests/data), fixed at build time.
std::filesystem::path DataDir();

// Parses a JSON file into a Struct; fails the test on error.
google::protobuf::Struct LoadJson(const std::filesystem::path& path);

// Bytes from lowercase hex.
std::string FromHex(const std::string& hex);

// A fresh 0700 temp folder, removed with the object.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::filesystem::path& path() const { return path_; }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// Runs SQL against a SQLite database file, also while a gateway has it open (WAL allows a second writer);
// fails the test on an error.
void EditDatabase(const std::string& path, const std::string& sql);

// The whole file (fails the test when unreadable).
std::string ReadFile(const std::string& path);

// A Unix datagram socket bound at `path` that a test reads what the gateway sends it (sd_notify, syslog).
// Next() is the next datagram, or "" when none came within `timeout_s`. Closed when destroyed.
class DatagramListener {
 public:
  explicit DatagramListener(const std::string& path, int timeout_s = 10);
  ~DatagramListener();
  DatagramListener(const DatagramListener&) = delete;
  DatagramListener& operator=(const DatagramListener&) = delete;
  std::string Next();

 private:
  int fd_ = -1;
};

// Writes `text` to `path` with `mode`.
void WriteFile(const std::string& path, const std::string& text, int mode = 0600);
// A 0600 file holding `handle` (policyctl takes a sandbox handle from a file or the environment, never
// argv), in a folder that lives as long as the test process.
std::string HandleFile(const std::string& handle);

}  // namespace osh::test

namespace osh::test {

// An audit event of type `type` with outcome ok, its type held as a store reads it back (any name).
osh::trust::AuditEvent StoredEvent(const std::string& type);

// A trust-store JSON document (SPEC §4) with the given (key id, public key PEM) pairs.
std::string TrustStoreJson(const std::vector<std::pair<std::string, std::string>>& keys, int threshold = 1,
                           bool require_context_binding = false);

// A runtime context with the given sandbox id and the tests' usual subject.
openshell::policy::driver::v1::RuntimeContext ContextFor(const std::string& sandbox_id,
                                                         const std::string& subject = "alice@example.com");

// Calls `stop` and joins `thread` when it goes out of scope, however the test ends: a failed REQUIRE throws
// past the test's own stop, and a joinable std::thread destroyed ends the test binary.
class StopAndJoin {
 public:
  StopAndJoin(std::function<void()> stop, std::thread* thread) : stop_(std::move(stop)), thread_(thread) {}
  ~StopAndJoin() {
    stop_();
    if (thread_->joinable()) thread_->join();
  }
  StopAndJoin(const StopAndJoin&) = delete;
  StopAndJoin& operator=(const StopAndJoin&) = delete;

 private:
  std::function<void()> stop_;
  std::thread* thread_;
};

}  // namespace osh::test
