// The SQLite catalogue: ROOT/registry.db in WAL mode. Writers take BEGIN IMMEDIATE (waiting the
// busy timeout for other processes); there are no change notifications, so servers poll.

#include <sqlite3.h>

#include <thread>
#include <unordered_map>

#include "kiln/core/sqlite.h"
#include "kiln/registry/catalogue.h"

namespace kiln::registry {
namespace {

const char* kSqliteSchema = R"sql(
CREATE TABLE IF NOT EXISTS models (
  name TEXT PRIMARY KEY,
  next_version INTEGER NOT NULL,
  created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS versions (
  name TEXT NOT NULL,
  version INTEGER NOT NULL,
  bundle_sha256 TEXT NOT NULL,
  task TEXT NOT NULL,
  description TEXT NOT NULL,
  created_at TEXT NOT NULL,
  size_bytes INTEGER NOT NULL,
  manifest TEXT NOT NULL,
  snapshot_hash TEXT NOT NULL,
  config_hash TEXT NOT NULL,
  parent_name TEXT NOT NULL,
  parent_version INTEGER NOT NULL,
  kiln_version TEXT NOT NULL,
  git_commit TEXT NOT NULL,
  PRIMARY KEY (name, version));
CREATE TABLE IF NOT EXISTS version_files (
  name TEXT NOT NULL,
  version INTEGER NOT NULL,
  file TEXT NOT NULL,
  sha256 TEXT NOT NULL,
  size INTEGER NOT NULL,
  PRIMARY KEY (name, version, file));
CREATE INDEX IF NOT EXISTS version_files_sha256 ON version_files (sha256);
CREATE TABLE IF NOT EXISTS tags (
  name TEXT NOT NULL,
  version INTEGER NOT NULL,
  key TEXT NOT NULL,
  value TEXT NOT NULL,
  PRIMARY KEY (name, version, key));
CREATE TABLE IF NOT EXISTS aliases (
  name TEXT NOT NULL,
  alias TEXT NOT NULL,
  version INTEGER NOT NULL,
  updated_at TEXT NOT NULL,
  PRIMARY KEY (name, alias));
CREATE INDEX IF NOT EXISTS aliases_target ON aliases (name, version);
CREATE TABLE IF NOT EXISTS alias_history (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  name TEXT NOT NULL,
  alias TEXT NOT NULL,
  action TEXT NOT NULL,
  version INTEGER NOT NULL,
  at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS alias_history_by_alias ON alias_history (name, alias, id);
)sql";

class SqliteCatalogue : public Catalogue {
 public:
  SqliteCatalogue(std::filesystem::path path, sqlite3* db) : path_(std::move(path)), db_(db) {}
  ~SqliteCatalogue() override {
    for (auto& [sql, s] : statements_) sqlite3_finalize(s);
    if (db_) sqlite3_close(db_);
  }

  Expected<SqlRows> execute(const std::string& sql, const std::vector<SqlParam>& params) override {
    sqlite3_stmt* stmt = nullptr;
    auto it = statements_.find(sql);
    if (it != statements_.end()) {
      stmt = it->second;
    } else {
      int rc = sqlite3_prepare_v2(db_, sql.c_str(), -1, &stmt, nullptr);
      if (rc != SQLITE_OK) return error("prepare " + sql.substr(0, 40), rc);
      statements_[sql] = stmt;
    }
    struct Reset {
      sqlite3_stmt* s;
      ~Reset() {
        sqlite3_reset(s);
        sqlite3_clear_bindings(s);
      }
    } reset{stmt};
    for (size_t i = 0; i < params.size(); ++i) {
      const int index = static_cast<int>(i + 1);
      if (const auto* text = std::get_if<std::string>(&params[i]))
        sqlite3_bind_text(stmt, index, text->data(), static_cast<int>(text->size()),
                          SQLITE_TRANSIENT);
      else
        sqlite3_bind_int64(stmt, index, std::get<int64_t>(params[i]));
    }
    SqlRows out;
    const int columns = sqlite3_column_count(stmt);
    for (;;) {
      const int rc = sqlite3_step(stmt);
      if (rc == SQLITE_DONE) break;
      if (rc != SQLITE_ROW) return error("query " + sql.substr(0, 40), rc);
      auto& row = out.rows.emplace_back();
      row.reserve(static_cast<size_t>(columns));
      for (int c = 0; c < columns; ++c) {
        if (sqlite3_column_type(stmt, c) == SQLITE_NULL) {
          row.emplace_back(std::nullopt);
          continue;
        }
        const unsigned char* t = sqlite3_column_text(stmt, c);
        row.emplace_back(std::string(reinterpret_cast<const char*>(t),
                                     static_cast<size_t>(sqlite3_column_bytes(stmt, c))));
      }
    }
    return out;
  }

  Status exec(const std::string& sql) {
    char* err = nullptr;
    int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err);
    if (err) sqlite3_free(err);
    if (rc != SQLITE_OK) return error(sql.substr(0, 40), rc);
    return Status::Ok();
  }

  Status begin_write() override { return exec("BEGIN IMMEDIATE"); }
  Status commit() override { return exec("COMMIT"); }
  Status rollback() override { return exec("ROLLBACK"); }
  Status notify(const std::string&) override { return Status::Ok(); }
  bool notifies_changes() const override { return false; }
  Expected<bool> wait_for_change(std::chrono::milliseconds timeout) override {
    std::this_thread::sleep_for(timeout);
    return false;
  }

  Status check_integrity(std::vector<std::string>* problems) override {
    KILN_ASSIGN_OR_RETURN(SqlRows r, execute("PRAGMA quick_check", {}));
    if (!r.rows.empty() && r.rows[0][0].value_or("") != "ok")
      problems->push_back(path_.string() + ": " + r.rows[0][0].value_or(""));
    return Status::Ok();
  }

  std::string location() const override { return path_.string(); }
  std::string engine() const override { return "sqlite"; }

  Status error(const std::string& what, int rc) const {
    std::string msg =
        path_.string() + ": " + what + ": " + (db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc));
    if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED)
      return Status::Unavailable(msg + " (another process holds the registry; try again)");
    return Status::IoError(msg);
  }

 private:
  std::filesystem::path path_;
  sqlite3* db_;
  std::unordered_map<std::string, sqlite3_stmt*> statements_;
};

}  // namespace

Expected<std::unique_ptr<Catalogue>> open_sqlite_catalogue(const std::filesystem::path& db_path,
                                                           int busy_timeout_ms) {
  SqliteOpenOptions open_options;
  open_options.busy_timeout_ms = busy_timeout_ms;
  open_options.full_sync = true;
  open_options.serialized = true;
  KILN_ASSIGN_OR_RETURN(SqliteConnection db, open_sqlite_wal(db_path, open_options));
  auto catalogue = std::make_unique<SqliteCatalogue>(db_path, db.release());
  KILN_ASSIGN_OR_RETURN(SqlRows version, catalogue->execute("PRAGMA user_version", {}));
  const int64_t have = version.rows.empty() ? 0 : std::stoll(version.rows[0][0].value_or("0"));
  if (have > kCatalogueSchemaVersion)
    return Status::FailedPrecondition(db_path.string() + ": registry schema version " +
                                      std::to_string(have) + " is newer than this Kiln's (" +
                                      std::to_string(kCatalogueSchemaVersion) + ")");
  if (have < kCatalogueSchemaVersion) {
    KILN_RETURN_IF_ERROR(catalogue->begin_write());
    Status created = catalogue->exec(kSqliteSchema);
    if (created.ok())
      created = catalogue->exec("PRAGMA user_version=" + std::to_string(kCatalogueSchemaVersion));
    if (!created.ok()) {
      (void)catalogue->rollback();
      return created;
    }
    KILN_RETURN_IF_ERROR(catalogue->commit());
  }
  return std::unique_ptr<Catalogue>(std::move(catalogue));
}

}  // namespace kiln::registry
