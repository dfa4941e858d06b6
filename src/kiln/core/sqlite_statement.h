#pragma once
// A prepared SQLite statement for code that runs a few statements per call (tune studies,
// pipeline runs). The registry keeps its own cache of prepared statements (sqlite_store.cpp).

#include <sqlite3.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "kiln/core/status.h"

namespace kiln {

/// One statement prepared on `db`, finalised on destruction. Doubles that are not finite are
/// bound as NULL, and a NULL column reads back as NaN from real(). `what` names the database in
/// errors ("studies.db"). Not copyable; use from one thread.
class SqliteStatement {
 public:
  SqliteStatement(sqlite3* db, const char* sql, std::string what = "sqlite")
      : db_(db), what_(std::move(what)) {
    rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr);
  }
  ~SqliteStatement() { sqlite3_finalize(stmt_); }
  SqliteStatement(const SqliteStatement&) = delete;
  SqliteStatement& operator=(const SqliteStatement&) = delete;

  bool ok() const { return rc_ == SQLITE_OK; }
  /// Ok, or IoError "WHAT: <sqlite message>" when the statement did not prepare.
  Status status() const { return ok() ? Status::Ok() : error(); }
  SqliteStatement& bind(int i, int64_t v) {
    sqlite3_bind_int64(stmt_, i, v);
    return *this;
  }
  SqliteStatement& bind(int i, double v) {
    if (std::isfinite(v))
      sqlite3_bind_double(stmt_, i, v);
    else
      sqlite3_bind_null(stmt_, i);
    return *this;
  }
  SqliteStatement& bind(int i, const std::string& v) {
    sqlite3_bind_text(stmt_, i, v.c_str(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  /// SQLITE_ROW, SQLITE_DONE or an error code.
  int step() { return sqlite3_step(stmt_); }
  /// One step that must not fail (a write): Ok on SQLITE_DONE or SQLITE_ROW.
  Status done() {
    const int rc = step();
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? Status::Ok() : error();
  }
  int64_t integer(int c) { return sqlite3_column_int64(stmt_, c); }
  double real(int c) {
    return sqlite3_column_type(stmt_, c) == SQLITE_NULL ? NAN : sqlite3_column_double(stmt_, c);
  }
  std::string text(int c) {
    const unsigned char* t = sqlite3_column_text(stmt_, c);
    return t ? reinterpret_cast<const char*>(t) : "";
  }

 private:
  Status error() const { return Status::IoError(what_ + ": " + sqlite3_errmsg(db_)); }

  sqlite3* db_;
  std::string what_;
  sqlite3_stmt* stmt_ = nullptr;
  int rc_;
};

}  // namespace kiln
