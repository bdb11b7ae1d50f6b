#include "store/sqlite_db.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "store/storage_error.h"

namespace osh::store {

// Idle prepared statements of one connection, by SQL text. Bounded: SQL built with a variable number of
// parameters would otherwise grow it without end; past the bound a statement is finalized, not kept.
class StatementCache {
 public:
  ~StatementCache() {
    for (auto& [sql, statements] : idle_) {
      for (sqlite3_stmt* stmt : statements) sqlite3_finalize(stmt);
    }
  }
  sqlite3_stmt* Take(const std::string& sql) {
    absl::MutexLock lock(&mu_);
    auto it = idle_.find(sql);
    if (it == idle_.end() || it->second.empty()) return nullptr;
    sqlite3_stmt* stmt = it->second.back();
    it->second.pop_back();
    return stmt;
  }
  void Give(sqlite3_stmt* stmt) {
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    {
      absl::MutexLock lock(&mu_);
      auto it = idle_.find(sqlite3_sql(stmt));
      if (it == idle_.end() && idle_.size() < kMaxTexts) it = idle_.try_emplace(sqlite3_sql(stmt)).first;
      if (it != idle_.end() && it->second.size() < kMaxPerText) {
        it->second.push_back(stmt);
        return;
      }
    }
    sqlite3_finalize(stmt);
  }

 private:
  static constexpr size_t kMaxTexts = 256, kMaxPerText = 4;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::vector<sqlite3_stmt*>> idle_ ABSL_GUARDED_BY(mu_);
};

namespace {

absl::Status SqliteError(sqlite3* db, int rc, const std::string& what) {
  const std::string message = absl::StrCat(what, ": ", db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
  absl::StatusCode code = absl::StatusCode::kInternal;
  if ((rc & 0xff) == SQLITE_CONSTRAINT) code = absl::StatusCode::kAlreadyExists;
  if ((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED) code = absl::StatusCode::kUnavailable;
  if ((rc & 0xff) == SQLITE_CORRUPT || (rc & 0xff) == SQLITE_NOTADB) code = absl::StatusCode::kDataLoss;
  return SqliteStorageError(code, message);
}

}  // namespace

Stmt::~Stmt() {
  if (stmt_ != nullptr) cache_->Give(stmt_);
}

Stmt& Stmt::Bind(int index, const std::string& text) {
  sqlite3_bind_text(stmt_, index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
  return *this;
}
Stmt& Stmt::BindBlob(int index, const std::string& bytes) {
  sqlite3_bind_blob(stmt_, index, bytes.data(), static_cast<int>(bytes.size()), SQLITE_TRANSIENT);
  return *this;
}
Stmt& Stmt::Bind(int index, int64_t value) {
  sqlite3_bind_int64(stmt_, index, value);
  return *this;
}
Stmt& Stmt::BindNull(int index) {
  sqlite3_bind_null(stmt_, index);
  return *this;
}

absl::StatusOr<bool> Stmt::Step() {
  const int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return SqliteError(db_, rc, sqlite3_sql(stmt_));
}

absl::Status Stmt::Run() {
  for (;;) {
    auto row = Step();
    if (!row.ok()) return row.status();
    if (!*row) return absl::OkStatus();
  }
}

std::string Stmt::Text(int column) const {
  const auto* text = sqlite3_column_text(stmt_, column);
  return text ? std::string(reinterpret_cast<const char*>(text), sqlite3_column_bytes(stmt_, column)) : std::string();
}
std::string Stmt::Blob(int column) const {
  const void* blob = sqlite3_column_blob(stmt_, column);
  return blob ? std::string(static_cast<const char*>(blob), sqlite3_column_bytes(stmt_, column)) : std::string();
}
int64_t Stmt::Int(int column) const { return sqlite3_column_int64(stmt_, column); }
bool Stmt::IsNull(int column) const { return sqlite3_column_type(stmt_, column) == SQLITE_NULL; }

absl::StatusOr<Db> Db::Open(const std::string& path) {
  // Create the file ourselves so it is 0600 from the first byte; SQLite gives -wal/-shm the same mode.
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return SqliteStorageError(absl::StatusCode::kInternal, absl::StrCat("database ", path, ": ", std::strerror(errno)));
  fchmod(fd, 0600);
  ::close(fd);
  sqlite3* db = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    absl::Status status = SqliteError(db, rc, absl::StrCat("open ", path));
    sqlite3_close(db);
    return status;
  }
  sqlite3_busy_timeout(db, 5000);
  return Db(db);
}

Db::Db(sqlite3* db) : db_(db), cache_(std::make_unique<StatementCache>()) {}

Db::Db(Db&& other) noexcept : db_(other.db_), cache_(std::move(other.cache_)) { other.db_ = nullptr; }

Db::~Db() {
  cache_.reset();  // its statements are finalized before the connection closes
  if (db_ != nullptr) sqlite3_close_v2(db_);
}

absl::Status Db::Exec(const std::string& sql) {
  char* error = nullptr;
  const int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &error);
  if (rc != SQLITE_OK) {
    std::string message = error ? error : sqlite3_errstr(rc);
    sqlite3_free(error);
    return SqliteError(nullptr, rc, message);
  }
  return absl::OkStatus();
}

absl::StatusOr<Stmt> Db::Prepare(const std::string& sql) {
  if (sqlite3_stmt* cached = cache_->Take(sql)) return Stmt(db_, cached, cache_.get());
  sqlite3_stmt* stmt = nullptr;
  const int rc = sqlite3_prepare_v3(db_, sql.c_str(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT, &stmt,
                                    nullptr);
  if (rc != SQLITE_OK) return SqliteError(db_, rc, absl::StrCat("prepare ", sql));
  if (stmt == nullptr) return SqliteStorageError(absl::StatusCode::kInvalidArgument, absl::StrCat("prepare: no statement in '", sql, "'"));
  return Stmt(db_, stmt, cache_.get());
}

absl::Status Db::Run(const std::string& sql) {
  auto stmt = Prepare(sql);
  if (!stmt.ok()) return stmt.status();
  return stmt->Run();
}

int64_t Db::Changes() const { return sqlite3_changes64(db_); }

void Db::CountWalFrames(std::atomic<int>* frames) {
  sqlite3_wal_hook(
      db_,
      [](void* arg, sqlite3*, const char*, int n) {
        static_cast<std::atomic<int>*>(arg)->store(n, std::memory_order_relaxed);
        return SQLITE_OK;
      },
      frames);
}
int64_t Db::LastInsertRowId() const { return sqlite3_last_insert_rowid(db_); }

Transaction::Transaction(Db& db) : db_(db) { begin_status_ = db_.Run("BEGIN IMMEDIATE"); }

Transaction::~Transaction() {
  if (!done_ && begin_status_.ok()) db_.Run("ROLLBACK").IgnoreError();
}

absl::Status Transaction::Commit() {
  absl::Status status = db_.Run("COMMIT");
  if (status.ok()) done_ = true;
  return status;
}

}  // namespace osh::store
