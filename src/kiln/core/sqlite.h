#pragma once

#include <filesystem>
#include <memory>

#include "kiln/core/expected.h"

struct sqlite3;

namespace kiln {

/// Closes an SQLite connection (sqlite3_close).
struct SqliteCloser {
  void operator()(sqlite3* db) const;
};
/// An owned SQLite connection.
using SqliteConnection = std::unique_ptr<sqlite3, SqliteCloser>;

/// How open_sqlite_wal opens a database.
struct SqliteOpenOptions {
  int busy_timeout_ms = 10000;  ///< lock waits, and the whole retry of the switch to WAL
  bool full_sync = false;       ///< synchronous=FULL (every commit durable) instead of NORMAL
  bool serialized = false;      ///< SQLITE_OPEN_FULLMUTEX: one connection shared by threads
};

/// Opens (creating) the database at `path` in WAL mode, with the busy timeout set. Switching a
/// brand-new file to WAL needs a moment alone with it, and SQLite does not wait for that through
/// the busy handler, so the switch is retried until the timeout while other processes or threads
/// open the same file. Errors name the path: IoError when the file cannot be opened, Unavailable
/// when the database stayed locked. Thread-safe (distinct connections).
Expected<SqliteConnection> open_sqlite_wal(const std::filesystem::path& path,
                                           const SqliteOpenOptions& options = {});

}  // namespace kiln
