// SQLite's group commit: concurrent writes share one transaction, and one failing write leaves the
// others and the audit chain whole. (The registry following the store is in test_store_contract.cc.)
#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>
#include <sqlite3.h>

#include "policy/digest.h"
#include "store/sqlite_store.h"
#include "tests/test_support.h"

using osh::store::AuditEvent;
using osh::store::SqliteStore;

namespace {

osh::store::SandboxRecord Sandbox(osh::store::Database& store, const std::string& id) {
  osh::store::SandboxRecord r;
  r.context.set_sandbox_id(id);
  r.context.set_user_subject("alice");
  r.handle_sha256 = osh::policy::Sha256("handle-" + id);
  r.driver_handle = "dh-" + id;
  openshell::policy::driver::v1::Projection p;
  p.set_surface_id("openshell.sandbox.v1");
  p.set_body("body");
  p.set_policy_digest(osh::policy::Sha256Hex("body"));
  r.envelope = store.sandboxes().envelopes().Intern(p);
  r.verification = osh::store::Verification::kNone;
  return r;
}

AuditEvent AdmissionEvent(const std::string& id) {
  AuditEvent e;
  e.type = osh::trust::audit::Type::kAdmission;
  e.sandbox_id = id;
  e.outcome = osh::trust::audit::Outcome::kOk;
  return e;
}

// Holds the first committed batch's listener call until every other writer has queued up behind it.
class HoldFirstCommit final : public osh::store::ChangeListener {
 public:
  explicit HoldFirstCommit(int others) : others_(others) {}
  void OnCommitted(const osh::store::ChangeBatch&, const osh::store::CommitResult&) override {
    std::unique_lock<std::mutex> lock(mu_);
    if (calls_++ > 0) return;
    entered_ = true;
    cv_.notify_all();
    cv_.wait_for(lock, std::chrono::seconds(10), [this] { return queued_ == others_; });
    lock.unlock();
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // from "about to commit" to queued
  }
  void WaitEntered() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return entered_; });
  }
  void Queued() {
    std::lock_guard<std::mutex> lock(mu_);
    ++queued_;
    cv_.notify_all();
  }

 private:
  const int others_;
  std::mutex mu_;
  std::condition_variable cv_;
  int calls_ = 0, queued_ = 0;
  bool entered_ = false;
};

}  // namespace

TEST_CASE("store: concurrent writes share one commit, and a failing one leaves the others and the chain whole",
          "[store][commit]") {
  osh::test::TempDir dir;
  auto store = SqliteStore::Open(dir / "g.db");
  REQUIRE(store.ok());
  constexpr int kOthers = 8;
  HoldFirstCommit hold(kOthers);
  (*store)->sandboxes().SetChangeListener(&hold);

  // Catch's assertions are not thread-safe: each thread keeps its outcome, checked once it is joined.
  absl::Status first_status;
  std::thread first([&] { first_status = (*store)->sandboxes().InsertSandbox(Sandbox(**store, "sb-0"), AdmissionEvent("sb-0")); });
  hold.WaitEntered();  // sb-0 is committed; its leader is still busy
  std::vector<std::thread> others;
  std::vector<absl::Status> results(kOthers);
  for (int i = 0; i < kOthers; ++i) {
    others.emplace_back([&, i] {
      // Writer 3 re-admits sb-0: refused, alone.
      const std::string id = i == 3 ? "sb-0" : "sb-" + std::to_string(i + 1);
      hold.Queued();
      results[i] = (*store)->sandboxes().InsertSandbox(Sandbox(**store, id), AdmissionEvent(id));
    });
  }
  first.join();
  for (auto& t : others) t.join();
  REQUIRE(first_status.ok());
  (*store)->sandboxes().SetChangeListener(nullptr);

  for (int i = 0; i < kOthers; ++i) {
    INFO("writer " << i);
    const bool expected = i == 3 ? absl::IsAlreadyExists(results[i]) : results[i].ok();
    CHECK(expected);
  }
  const auto counters = (*store)->Stats();
  CHECK(counters.writes == kOthers);         // sb-0 plus seven others; the refused one is not counted
  // sb-0 alone, then the queued writers together (normally in one commit; a writer that reached the
  // queue late on a loaded machine may need a third). Without group commit this would be 9.
  CHECK(counters.transactions >= 2);
  CHECK(counters.transactions <= 3);
  auto loaded = (*store)->sandboxes().LoadSandboxes();
  REQUIRE(loaded.ok());
  CHECK(loaded->size() == kOthers);
  // The chain has one event per successful write, linked without gaps.
  auto events = (*store)->audit().ListAuditEvents(0, 100);
  REQUIRE(events.ok());
  REQUIRE(events->size() == kOthers);
  std::string prev = osh::trust::kGenesisHash;
  for (size_t i = 0; i < events->size(); ++i) {
    CHECK((*events)[i].seq == i + 1);
    CHECK((*events)[i].prev_hash == prev);
    CHECK((*events)[i].hash == osh::trust::ChainHash(prev, (*events)[i]));
    prev = (*events)[i].hash;
  }
  CHECK((*store)->audit().AuditChainHead().hash == prev);
}

// Counts the batches committed (called by the group's leader, inside the commit).
class CountCommits final : public osh::store::ChangeListener {
 public:
  void OnCommitted(const osh::store::ChangeBatch&, const osh::store::CommitResult&) override {
    std::lock_guard<std::mutex> lock(mu_);
    ++commits_;
    cv_.notify_all();
  }
  bool WaitFor(int commits, std::chrono::seconds limit) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, limit, [&] { return commits_ >= commits; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int commits_ = 0;
};

TEST_CASE("store: the committer leads the next group while the last group's callbacks still run", "[store][commit]") {
  osh::test::TempDir dir;
  auto store = SqliteStore::Open(dir / "g.db");
  REQUIRE(store.ok());
  CountCommits commits;
  (*store)->sandboxes().SetChangeListener(&commits);
  auto admit = [&](const std::string& id) {
    osh::store::ChangeBatch batch;
    batch.changes.push_back(osh::store::change::AdmitSandbox{Sandbox(**store, id)});
    batch.events.push_back(AdmissionEvent(id));
    return batch;
  };
  std::mutex mu;
  std::condition_variable cv;
  bool a_called = false, a_saw_b_durable = false;
  // Recorded on the store's completion thread, checked here (Catch's assertions are not thread-safe).
  bool a_ok = false, b_ok = false, b_in_order = false;
  int answered = 0;
  // A's callback (slow, as one answering a client over a congested socket would be) waits for B, which is
  // submitted only once A's callback runs: B must be committed meanwhile, not after it.
  (*store)->sandboxes().CommitAsync(admit("sb-a"), [&](absl::StatusOr<osh::store::CommitResult> r) {
    {
      std::lock_guard<std::mutex> lock(mu);
      a_ok = r.ok();
      a_called = true;
      cv.notify_all();
    }
    const bool saw = commits.WaitFor(2, std::chrono::seconds(5));
    std::lock_guard<std::mutex> lock(mu);
    a_saw_b_durable = saw;
    ++answered;
    cv.notify_all();
  });
  {
    std::unique_lock<std::mutex> lock(mu);
    REQUIRE(cv.wait_for(lock, std::chrono::seconds(20), [&] { return a_called; }));
  }
  (*store)->sandboxes().CommitAsync(admit("sb-b"), [&](absl::StatusOr<osh::store::CommitResult> r) {
    std::lock_guard<std::mutex> lock(mu);
    b_ok = r.ok();
    b_in_order = answered == 1;  // callbacks still run in commit order
    ++answered;
    cv.notify_all();
  });
  {
    std::unique_lock<std::mutex> lock(mu);
    REQUIRE(cv.wait_for(lock, std::chrono::seconds(20), [&] { return answered == 2; }));
    CHECK(a_ok);
    CHECK(b_ok);
    CHECK(b_in_order);
  }
  CHECK(a_saw_b_durable);
  (*store)->sandboxes().SetChangeListener(nullptr);
}

TEST_CASE("store: asynchronous writes return at once, share a commit, and each hears of it only once it is durable",
          "[store][commit]") {
  osh::test::TempDir dir;
  auto store = SqliteStore::Open(dir / "g.db");
  REQUIRE(store.ok());
  constexpr int kOthers = 8;
  HoldFirstCommit hold(kOthers);
  (*store)->sandboxes().SetChangeListener(&hold);

  // Catch's assertions are not thread-safe: each thread keeps its outcome, checked once it is joined.
  absl::Status first_status;
  std::thread first([&] { first_status = (*store)->sandboxes().InsertSandbox(Sandbox(**store, "sb-0"), AdmissionEvent("sb-0")); });
  hold.WaitEntered();  // sb-0 is committed; its leader is still busy, so nothing queued now can commit yet
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::optional<absl::StatusOr<osh::store::CommitResult>>> results(kOthers + 1);
  int answered = 0;
  for (int i = 0; i < kOthers + 1; ++i) {
    // Writer 3 re-admits sb-0: refused, alone. The last one is an admission note (ReleaseQueue).
    osh::store::ChangeBatch batch;
    const std::string id = i == 3 ? "sb-0" : "sb-" + std::to_string(i + 1);
    if (i < kOthers) {
      batch.changes.push_back(osh::store::change::AdmitSandbox{Sandbox(**store, id)});
      batch.events.push_back(AdmissionEvent(id));
      (*store)->sandboxes().CommitAsync(std::move(batch), [&, i](absl::StatusOr<osh::store::CommitResult> r) {
        std::lock_guard<std::mutex> lock(mu);
        results[i] = std::move(r);
        ++answered;
        cv.notify_all();
      });
      hold.Queued();
    } else {
      osh::store::RuntimeContext context;
      context.set_sandbox_id("sb-note");
      (*store)->releases().RecordAdmissionIntentAsync(context, "key", [&, i](absl::StatusOr<int64_t> id) {
        std::lock_guard<std::mutex> lock(mu);
        if (id.ok()) {
          results[i] = osh::store::CommitResult{};
        } else {
          results[i] = id.status();
        }
        ++answered;
        cv.notify_all();
      });
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    CHECK(answered == 0);  // every call returned before anything it asked for was committed
  }
  first.join();
  REQUIRE(first_status.ok());
  {
    std::unique_lock<std::mutex> lock(mu);
    REQUIRE(cv.wait_for(lock, std::chrono::seconds(20), [&] { return answered == kOthers + 1; }));
  }
  (*store)->sandboxes().SetChangeListener(nullptr);
  for (int i = 0; i < kOthers + 1; ++i) {
    INFO("writer " << i);
    REQUIRE(results[i].has_value());
    const bool expected = i == 3 ? absl::IsAlreadyExists(results[i]->status()) : results[i]->ok();
    CHECK(expected);
  }
  const auto counters = (*store)->Stats();
  CHECK(counters.writes == kOthers + 1);  // sb-0, seven admissions, the note; the refused one is not counted
  CHECK(counters.transactions >= 2);     // sb-0 alone, then the queued writes (a third on a loaded machine)
  CHECK(counters.transactions <= 3);
  auto loaded = (*store)->sandboxes().LoadSandboxes();
  REQUIRE(loaded.ok());
  CHECK(loaded->size() == kOthers);
  // Durable: a store opened again on the file (this one closed) holds them all, and the note.
  store->reset();
  auto again = SqliteStore::Open(dir / "g.db");
  REQUIRE(again.ok());
  auto reloaded = (*again)->sandboxes().LoadSandboxes();
  REQUIRE(reloaded.ok());
  CHECK(reloaded->size() == kOthers);
  auto pending = (*again)->releases().PendingReleases();
  REQUIRE(pending.ok());
  CHECK(pending->size() == 1);  // the note left in flight became a due release on opening
}

TEST_CASE("store: SQLite's log is copied into the database file in the background, not by the writers",
          "[store][commit]") {
  osh::test::TempDir dir;
  auto store = SqliteStore::Open(dir / "g.db");
  REQUIRE(store.ok());
  const auto size = [&] { return std::filesystem::file_size(dir / "g.db"); };
  const auto before = size();
  for (int i = 0; i < 40; ++i) {
    const std::string id = "sb-" + std::to_string(i);
    REQUIRE((*store)->sandboxes().InsertSandbox(Sandbox(**store, id), AdmissionEvent(id)).ok());
  }
  // 40 commits write far fewer log pages than SQLite's own checkpoint threshold (1000): only the store's
  // checkpoint thread moves them into the database file, while the store stays open.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (size() <= before && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  CHECK(size() > before);
  auto loaded = (*store)->sandboxes().LoadSandboxes();
  REQUIRE(loaded.ok());
  CHECK(loaded->size() == 40);
}

namespace {

// The write-ahead log's checkpoint sequence number (header bytes 12..15, big-endian): SQLite adds one
// each time the log starts over from its top. 0 when there is no log (yet).
uint32_t WalRestarts(const std::filesystem::path& wal) {
  std::ifstream in(wal, std::ios::binary);
  unsigned char header[16] = {};
  if (!in.read(reinterpret_cast<char*>(header), sizeof header)) return 0;
  return (uint32_t{header[12]} << 24) | (uint32_t{header[13]} << 16) | (uint32_t{header[14]} << 8) | header[15];
}

}  // namespace

TEST_CASE("store: under writes that never pause, SQLite's log still starts over after each copy instead of growing",
          "[store][commit]") {
  osh::test::TempDir dir;
  auto store = SqliteStore::Open(dir / "g.db");
  REQUIRE(store.ok());
  const std::filesystem::path wal = dir / "g.db-wal";
  // Two writers, one commit after another with no pause between them: a copy of the log always has
  // commits landing beside it. Before the mend the log was never copied whole while they ran, so it never
  // started over and grew for as long as they wrote.
  std::atomic<bool> stop{false};
  std::atomic<int> written{0};
  std::atomic<int> failed{0};
  std::vector<std::thread> writers;
  for (int w = 0; w < 2; ++w) {
    writers.emplace_back([&, w] {
      for (int i = 0; !stop.load(); ++i) {
        const std::string id = "sb-" + std::to_string(w) + "-" + std::to_string(i);
        if ((*store)->sandboxes().InsertSandbox(Sandbox(**store, id), AdmissionEvent(id)).ok()) {
          ++written;
        } else {
          ++failed;
        }
      }
    });
  }
  // Three restarts: each needs a copy (the store copies once the log holds 1000 frames), so the log
  // started over three times while both writers kept writing.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);  // without the mend: GBs
  uint32_t restarts = 0;
  while (std::chrono::steady_clock::now() < deadline && (restarts = WalRestarts(wal)) < 3) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const int written_then = written.load();
  bool still_writing = false;  // a commit more within 5 s (one flush, or the held copy's, on a loaded machine)
  for (int i = 0; i < 500 && !(still_writing = written.load() > written_then); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  stop = true;
  for (auto& t : writers) t.join();
  INFO("commits " << written.load() << ", log restarts " << restarts << ", log bytes "
                  << std::filesystem::file_size(wal));
  CHECK(failed.load() == 0);
  CHECK(restarts >= 3);
  CHECK(still_writing);  // the writers were not waiting on the copies
  auto loaded = (*store)->sandboxes().LoadSandboxes();
  REQUIRE(loaded.ok());
  CHECK(static_cast<int>(loaded->size()) == written.load());
}

TEST_CASE("store: a log left over 64 MiB (a release before the checkpoint mend) is cut back once the store has copied it",
          "[store][commit]") {
  // Stop 69's mend bounds the log from its start; a database whose log grew to gigabytes before it must
  // come back to journal_size_limit (64 MiB) once the store copies it and the log starts over.
  osh::test::TempDir dir;
  const std::filesystem::path db_path = dir / "g.db", wal = dir / "g.db-wal";
  {
    auto store = SqliteStore::Open(db_path);
    REQUIRE(store.ok());
    REQUIRE((*store)->sandboxes().InsertSandbox(Sandbox(**store, "sb-0"), AdmissionEvent("sb-0")).ok());
  }
  {
    // 80 MiB through the log with no checkpoint, the log kept as it is at close: as a process that ended
    // with its log grown.
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(db_path.c_str(), &db) == SQLITE_OK);
    REQUIRE(sqlite3_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr) == SQLITE_OK);
    REQUIRE(sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0; PRAGMA journal_size_limit=-1; "
                             "CREATE TABLE operator_bulk (b BLOB); BEGIN",
                         nullptr, nullptr, nullptr) == SQLITE_OK);
    for (int i = 0; i < 80; ++i) {
      REQUIRE(sqlite3_exec(db, "INSERT INTO operator_bulk VALUES (randomblob(1048576))", nullptr, nullptr, nullptr) == SQLITE_OK);
    }
    REQUIRE(sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr) == SQLITE_OK);
    REQUIRE(sqlite3_close(db) == SQLITE_OK);
  }
  const auto grown = std::filesystem::file_size(wal);
  REQUIRE(grown > (std::uintmax_t{80} << 20));
  auto store = SqliteStore::Open(db_path);
  REQUIRE(store.ok());
  // Writes go on: the store copies the log, the next commit starts it over and it is cut to the limit.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  int i = 1;
  while (std::filesystem::file_size(wal) > (std::uintmax_t{64} << 20) && std::chrono::steady_clock::now() < deadline) {
    const std::string id = "sb-" + std::to_string(i++);
    REQUIRE((*store)->sandboxes().InsertSandbox(Sandbox(**store, id), AdmissionEvent(id)).ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  INFO("log bytes " << grown << " -> " << std::filesystem::file_size(wal) << " after " << i << " commits");
  CHECK(std::filesystem::file_size(wal) <= (std::uintmax_t{64} << 20));
  auto loaded = (*store)->sandboxes().LoadSandboxes();
  REQUIRE(loaded.ok());
  CHECK(static_cast<int>(loaded->size()) == i);  // sb-0 and every one written since
}
