// The PostgreSQL catalogue (libpqxx 6.4). Readers run each statement on its own (autocommit);
// writers open a transaction and take one transaction-level advisory lock first, so version
// numbers are allocated one writer at a time across every host, exactly as SQLite's BEGIN
// IMMEDIATE does on one machine. Changes are announced with NOTIFY kiln_registry, which
// PostgreSQL delivers when (and only if) the transaction commits.

#include <mutex>
#include <pqxx/pqxx>
#include <regex>
#include <unordered_map>

#include "kiln/registry/catalogue.h"

namespace kiln::registry {
namespace {

constexpr const char* kChannel = "kiln_registry";
/// pg_advisory_xact_lock key of the registry's writers ("kiln" in ASCII).
constexpr const char* kWriterLock = "SELECT pg_advisory_xact_lock(1802071150)";

// Text columns compare and sort bytewise (COLLATE "C"), as SQLite does, whatever the server's
// locale: listings come back in the same order on both engines.
const char* kPostgresSchema = R"sql(
CREATE TABLE IF NOT EXISTS models (
  name TEXT COLLATE "C" PRIMARY KEY,
  next_version BIGINT NOT NULL,
  created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS versions (
  name TEXT COLLATE "C" NOT NULL,
  version BIGINT NOT NULL,
  bundle_sha256 TEXT NOT NULL,
  task TEXT NOT NULL,
  description TEXT NOT NULL,
  created_at TEXT NOT NULL,
  size_bytes BIGINT NOT NULL,
  manifest TEXT NOT NULL,
  snapshot_hash TEXT NOT NULL,
  config_hash TEXT NOT NULL,
  parent_name TEXT NOT NULL,
  parent_version BIGINT NOT NULL,
  kiln_version TEXT NOT NULL,
  git_commit TEXT NOT NULL,
  PRIMARY KEY (name, version));
CREATE TABLE IF NOT EXISTS version_files (
  name TEXT COLLATE "C" NOT NULL,
  version BIGINT NOT NULL,
  file TEXT COLLATE "C" NOT NULL,
  sha256 TEXT COLLATE "C" NOT NULL,
  size BIGINT NOT NULL,
  PRIMARY KEY (name, version, file));
CREATE INDEX IF NOT EXISTS version_files_sha256 ON version_files (sha256);
CREATE TABLE IF NOT EXISTS tags (
  name TEXT COLLATE "C" NOT NULL,
  version BIGINT NOT NULL,
  key TEXT COLLATE "C" NOT NULL,
  value TEXT NOT NULL,
  PRIMARY KEY (name, version, key));
CREATE TABLE IF NOT EXISTS aliases (
  name TEXT COLLATE "C" NOT NULL,
  alias TEXT COLLATE "C" NOT NULL,
  version BIGINT NOT NULL,
  updated_at TEXT NOT NULL,
  PRIMARY KEY (name, alias));
CREATE INDEX IF NOT EXISTS aliases_target ON aliases (name, version);
CREATE TABLE IF NOT EXISTS alias_history (
  id BIGSERIAL PRIMARY KEY,
  name TEXT COLLATE "C" NOT NULL,
  alias TEXT COLLATE "C" NOT NULL,
  action TEXT NOT NULL,
  version BIGINT NOT NULL,
  at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS alias_history_by_alias ON alias_history (name, alias, id);
)sql";

/// ?N placeholders to PostgreSQL's $N (the registry's SQL holds no '?' inside literals).
std::string to_dollar_placeholders(const std::string& sql) {
  std::string out;
  out.reserve(sql.size());
  for (char c : sql) out += c == '?' ? '$' : c;
  return out;
}

/// Sets a flag when a notification arrives on the channel.
class ChangeReceiver : public pqxx::notification_receiver {
 public:
  ChangeReceiver(pqxx::connection_base& c, bool* flag)
      : pqxx::notification_receiver(c, kChannel), flag_(flag) {}
  void operator()(const std::string&, int) override { *flag_ = true; }

 private:
  bool* flag_;
};

class PostgresCatalogue : public Catalogue {
 public:
  PostgresCatalogue(std::string url, std::unique_ptr<pqxx::connection> conn)
      : url_(std::move(url)), conn_(std::move(conn)) {}
  ~PostgresCatalogue() override {
    txn_.reset();
    receiver_.reset();
  }

  Expected<SqlRows> execute(const std::string& sql, const std::vector<SqlParam>& params) override {
    std::vector<std::string> values;
    values.reserve(params.size());
    for (const SqlParam& p : params)
      values.push_back(std::holds_alternative<std::string>(p)
                           ? std::get<std::string>(p)
                           : std::to_string(std::get<int64_t>(p)));
    if (txn_ == nullptr) KILN_RETURN_IF_ERROR(reconnect_if_broken());
    try {
      auto it = prepared_.find(sql);
      if (it == prepared_.end()) {
        const std::string name = "kiln_" + std::to_string(prepared_.size() + 1);
        conn_->prepare(name, to_dollar_placeholders(sql));
        it = prepared_.emplace(sql, name).first;
      }
      pqxx::result result;
      if (txn_) {
        result = txn_->exec_prepared(it->second, pqxx::prepare::make_dynamic_params(values));
      } else {
        pqxx::nontransaction autocommit(*conn_);
        result = autocommit.exec_prepared(it->second, pqxx::prepare::make_dynamic_params(values));
      }
      SqlRows out;
      out.rows.reserve(result.size());
      for (const auto& row : result) {
        auto& r = out.rows.emplace_back();
        r.reserve(row.size());
        for (const auto& field : row)
          r.emplace_back(field.is_null() ? std::nullopt
                                         : std::optional<std::string>(field.c_str()));
      }
      return out;
    } catch (const std::exception& e) {
      return failed("query " + sql.substr(0, 40), e);
    }
  }

  Status begin_write() override {
    if (txn_) return Status::Internal(location() + ": nested write transaction");
    KILN_RETURN_IF_ERROR(reconnect_if_broken());
    try {
      txn_ = std::make_unique<pqxx::work>(*conn_);
      txn_->exec(kWriterLock);
      return Status::Ok();
    } catch (const std::exception& e) {
      txn_.reset();
      return failed("begin", e);
    }
  }

  Status commit() override {
    if (!txn_) return Status::Internal(location() + ": commit without a transaction");
    try {
      txn_->commit();
      txn_.reset();
      return Status::Ok();
    } catch (const std::exception& e) {
      txn_.reset();
      return failed("commit", e);
    }
  }

  Status rollback() override {
    if (!txn_) return Status::Ok();
    try {
      txn_->abort();
    } catch (const std::exception&) {  // a broken connection rolls back by itself
    }
    txn_.reset();
    return Status::Ok();
  }

  Status notify(const std::string& payload) override {
    return execute("SELECT pg_notify('kiln_registry', ?1)", {payload}).status();
  }

  bool notifies_changes() const override { return true; }

  Expected<bool> wait_for_change(std::chrono::milliseconds timeout) override {
    std::lock_guard<std::mutex> lock(listen_mu_);
    try {
      if (!listener_) {
        listener_ = std::make_unique<pqxx::connection>(url_);
        receiver_ = std::make_unique<ChangeReceiver>(*listener_, &changed_);
      }
      changed_ = false;
      const auto us = std::chrono::duration_cast<std::chrono::microseconds>(timeout).count();
      listener_->await_notification(static_cast<long>(us / 1000000),
                                    static_cast<long>(us % 1000000));
      return changed_;
    } catch (const std::exception& e) {
      receiver_.reset();
      listener_.reset();  // reconnect (and LISTEN again) on the next call
      return error("listen", e);
    }
  }

  Status check_integrity(std::vector<std::string>* problems) override {
    // Every version below its model's next number, and every alias on an existing version.
    const std::pair<const char*, const char*> checks[] = {
        {"SELECT v.name, v.version FROM versions v LEFT JOIN models m ON m.name = v.name "
         "WHERE m.name IS NULL OR m.next_version <= v.version",
         ": version %s is not below its model's next version number"},
        {"SELECT a.name, a.alias FROM aliases a LEFT JOIN versions v ON v.name = a.name "
         "AND v.version = a.version WHERE v.name IS NULL",
         ": alias %s points at a missing version"}};
    for (const auto& [sql, what] : checks) {
      KILN_ASSIGN_OR_RETURN(SqlRows rows, execute(sql, {}));
      for (const auto& r : rows.rows) {
        std::string message = what;
        message.replace(message.find("%s"), 2, r[0].value_or("") + "@" + r[1].value_or(""));
        problems->push_back(location() + message);
      }
    }
    return Status::Ok();
  }

  std::string location() const override { return redact_url(url_); }
  std::string engine() const override { return "postgresql"; }

  /// error(), and a broken connection marked for a new one before the next statement: the
  /// server may have restarted, and a long-lived process (kiln serve) must not stay cut off.
  Status failed(const std::string& what, const std::exception& e) {
    if (dynamic_cast<const pqxx::broken_connection*>(&e) != nullptr) broken_ = true;
    return error(what, e);
  }

  /// Outside a transaction: replaces a connection that broke with a new one (its prepared
  /// statements are prepared again on first use).
  Status reconnect_if_broken() {
    if (!broken_) return Status::Ok();
    try {
      auto fresh = std::make_unique<pqxx::connection>(url_);
      conn_ = std::move(fresh);
      prepared_.clear();
      broken_ = false;
      return Status::Ok();
    } catch (const std::exception& e) {
      return error("reconnect", e);
    }
  }

  Status error(const std::string& what, const std::exception& e) const {
    std::string detail = e.what();
    while (!detail.empty() && (detail.back() == '\n' || detail.back() == ' ')) detail.pop_back();
    const std::string msg = location() + ": " + what + ": " + detail;
    if (dynamic_cast<const pqxx::broken_connection*>(&e) != nullptr)
      return Status::Unavailable(msg + " (the PostgreSQL server is unreachable; try again)");
    return Status::IoError(msg);
  }

  /// Creates the schema, or checks its version, under the writers' lock.
  Status ensure_schema() {
    try {
      pqxx::work w(*conn_);
      w.exec(kWriterLock);
      w.exec("CREATE TABLE IF NOT EXISTS kiln_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)");
      pqxx::result have = w.exec("SELECT value FROM kiln_meta WHERE key = 'schema_version'");
      if (!have.empty()) {
        const int64_t version = have[0][0].as<int64_t>();
        if (version > kCatalogueSchemaVersion)
          return Status::FailedPrecondition(
              location() + ": registry schema version " + std::to_string(version) +
              " is newer than this Kiln's (" + std::to_string(kCatalogueSchemaVersion) + ")");
        return Status::Ok();
      }
      w.exec(kPostgresSchema);
      w.exec("INSERT INTO kiln_meta (key, value) VALUES ('schema_version', '" +
             std::to_string(kCatalogueSchemaVersion) + "')");
      w.commit();
      return Status::Ok();
    } catch (const std::exception& e) {
      return error("create schema", e);
    }
  }

 private:
  std::string url_;
  std::unique_ptr<pqxx::connection> conn_;
  std::unique_ptr<pqxx::work> txn_;
  bool broken_ = false;  ///< conn_ broke: reconnect before the next statement
  std::unordered_map<std::string, std::string> prepared_;  // sql -> statement name
  std::mutex listen_mu_;
  std::unique_ptr<pqxx::connection> listener_;
  std::unique_ptr<ChangeReceiver> receiver_;
  bool changed_ = false;
};

}  // namespace

std::string redact_url(const std::string& url) {
  static const std::regex password(R"(^([a-z]+://[^:/@]*):[^@/]*@)");
  return std::regex_replace(url, password, "$1:***@");
}

Expected<std::unique_ptr<Catalogue>> open_postgres_catalogue(const std::string& url) {
  std::unique_ptr<pqxx::connection> conn;
  try {
    conn = std::make_unique<pqxx::connection>(url);
  } catch (const std::exception& e) {
    std::string detail = e.what();
    while (!detail.empty() && (detail.back() == '\n' || detail.back() == ' ')) detail.pop_back();
    return Status::Unavailable("cannot connect to the registry at " + redact_url(url) + ": " +
                               detail);
  }
  auto catalogue = std::make_unique<PostgresCatalogue>(url, std::move(conn));
  KILN_RETURN_IF_ERROR(catalogue->ensure_schema());
  return std::unique_ptr<Catalogue>(std::move(catalogue));
}

}  // namespace kiln::registry
