// A thin RAII layer over the SQLite C API: a connection, prepared statements, transactions.
// Not thread-safe by itself; SqliteStore serialises access (the statement cache alone is thread-safe,
// for a connection opened with SQLITE_OPEN_FULLMUTEX that several readers share).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

struct sqlite3;
struct sqlite3_stmt;

namespace osh::store {

class StatementCache;

// A prepared statement (made by Db::Prepare). It goes back to the connection's cache when it is
// destroyed (reset, bindings cleared), so the same SQL is compiled once per connection, not per use.
class Stmt {
 public:
  Stmt(sqlite3* db, sqlite3_stmt* stmt, StatementCache* cache) : db_(db), stmt_(stmt), cache_(cache) {}
  Stmt(Stmt&& other) noexcept : db_(other.db_), stmt_(other.stmt_), cache_(other.cache_) { other.stmt_ = nullptr; }
  Stmt(const Stmt&) = delete;
  ~Stmt();

  // Binds by 1-based index; returns *this for chaining.
  Stmt& Bind(int index, const std::string& text);
  Stmt& BindBlob(int index, const std::string& bytes);
  Stmt& Bind(int index, int64_t value);
  Stmt& BindNull(int index);

  // Steps once: true with a row, false when done. Errors carry SQLite's message.
  absl::StatusOr<bool> Step();
  // Steps to completion, expecting no rows.
  absl::Status Run();

  std::string Text(int column) const;
  std::string Blob(int column) const;
  int64_t Int(int column) const;
  bool IsNull(int column) const;

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_;
  StatementCache* cache_;
};

class Db {
 public:
  // Opens (creating with mode 0600) the database file.
  static absl::StatusOr<Db> Open(const std::string& path);
  Db(Db&& other) noexcept;
  Db(const Db&) = delete;
  ~Db();  // every Stmt of this connection must be gone by then

  // Any SQL, several statements allowed (schema, pragmas); compiled every time.
  absl::Status Exec(const std::string& sql);
  // One statement, from the cache when it was prepared before on this connection.
  absl::StatusOr<Stmt> Prepare(const std::string& sql);
  // Prepare(sql) and run it to completion (transaction control, savepoints).
  absl::Status Run(const std::string& sql);
  int64_t Changes() const;
  int64_t LastInsertRowId() const;
  // After each commit on this connection, stores the frames then in the write-ahead log into *frames
  // (sqlite3_wal_hook: this replaces SQLite's own automatic checkpoint, as wal_autocheckpoint=0 does, and a
  // later wal_autocheckpoint pragma replaces this). `frames` must outlive the connection.
  void CountWalFrames(std::atomic<int>* frames);

 private:
  explicit Db(sqlite3* db);
  sqlite3* db_;
  std::unique_ptr<StatementCache> cache_;  // stable across moves: statements point at it
};

// BEGIN IMMEDIATE on construction; ROLLBACK on destruction unless Commit() succeeded.
class Transaction {
 public:
  explicit Transaction(Db& db);
  ~Transaction();
  const absl::Status& begin_status() const { return begin_status_; }
  absl::Status Commit();

 private:
  Db& db_;
  absl::Status begin_status_;
  bool done_ = false;
};

}  // namespace osh::store
