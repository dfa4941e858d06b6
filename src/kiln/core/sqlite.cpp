#include "kiln/core/sqlite.h"

#include <sqlite3.h>

#include <chrono>
#include <string>
#include <thread>

namespace kiln {

void SqliteCloser::operator()(sqlite3* db) const { sqlite3_close(db); }

Expected<SqliteConnection> open_sqlite_wal(const std::filesystem::path& path,
                                           const SqliteOpenOptions& options) {
  sqlite3* raw = nullptr;
  int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
  if (options.serialized) flags |= SQLITE_OPEN_FULLMUTEX;
  const int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
  SqliteConnection db(raw);
  if (rc != SQLITE_OK)
    return Status::IoError(path.string() +
                           ": cannot open: " + (raw ? sqlite3_errmsg(raw) : sqlite3_errstr(rc)));
  sqlite3_busy_timeout(raw, options.busy_timeout_ms);
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(options.busy_timeout_ms);
  auto exec = [&](const char* sql) { return sqlite3_exec(raw, sql, nullptr, nullptr, nullptr); };
  for (;;) {
    const int wal = exec("PRAGMA journal_mode=WAL");
    if (wal == SQLITE_OK) break;
    const bool locked = wal == SQLITE_BUSY || wal == SQLITE_LOCKED;
    if (!locked)
      return Status::IoError(path.string() + ": cannot switch to WAL: " + sqlite3_errmsg(raw));
    if (std::chrono::steady_clock::now() > deadline)
      return Status::Unavailable(path.string() + ": database is locked (another process holds " +
                                 "it; try again)");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (exec(options.full_sync ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL") !=
      SQLITE_OK)
    return Status::IoError(path.string() + ": " + sqlite3_errmsg(raw));
  return db;
}

}  // namespace kiln
