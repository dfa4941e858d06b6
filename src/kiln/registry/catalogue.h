#pragma once

// The registry's catalogue: the SQL database that holds versions, files, tags and aliases. One
// interface, two engines: SQLite (one machine: ROOT/registry.db) and PostgreSQL (many hosts
// sharing one server). SqlModelStore speaks portable SQL through it; each engine owns its DDL,
// its write lock and its change notifications.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "kiln/core/expected.h"

namespace kiln::registry {

/// The catalogue schema this Kiln writes; a newer one is refused (FailedPrecondition).
constexpr int kCatalogueSchemaVersion = 1;

/// A bound parameter: text or a 64-bit integer.
using SqlParam = std::variant<std::string, int64_t>;

/// A fully read result: rows of text values (integers in decimal; NULL as nullopt).
struct SqlRows {
  std::vector<std::vector<std::optional<std::string>>> rows;
};

/// A connection to the catalogue. Not thread-safe: SqlModelStore serialises every call (except
/// wait_for_change(), which uses its own connection and may run beside the others).
class Catalogue {
 public:
  virtual ~Catalogue() = default;

  /// Runs one statement. Placeholders are ?1..?N (rewritten for engines that spell them
  /// otherwise). Errors name the catalogue; Unavailable when it is locked or unreachable.
  virtual Expected<SqlRows> execute(const std::string& sql,
                                    const std::vector<SqlParam>& params) = 0;

  /// Starts a write transaction that excludes every other writer, in any process on any host,
  /// until commit() or rollback(): version numbers are allocated inside it.
  virtual Status begin_write() = 0;
  virtual Status commit() = 0;
  virtual Status rollback() = 0;

  /// Announces a change (payload: "NAME@ALIAS" or "NAME") to listeners when the current write
  /// transaction commits. A no-op for engines without notifications.
  virtual Status notify(const std::string& payload) = 0;

  /// True when wait_for_change() delivers other processes' changes as they commit.
  virtual bool notifies_changes() const = 0;
  /// Blocks up to `timeout` for a committed change by anyone; true when one arrived. Engines
  /// without notifications sleep the timeout and return false. Thread-safe against the other
  /// calls (a separate listening connection).
  virtual Expected<bool> wait_for_change(std::chrono::milliseconds timeout) = 0;

  /// The engine's own consistency check; each problem found is appended.
  virtual Status check_integrity(std::vector<std::string>* problems) = 0;

  /// Where the catalogue is, for messages: a file path or a postgresql:// URL without password.
  virtual std::string location() const = 0;
  /// "sqlite" or "postgresql".
  virtual std::string engine() const = 0;
};

/// The SQLite catalogue at `db_path` (WAL, synchronous=FULL, busy timeout), schema created or
/// checked. Thread-compatible.
Expected<std::unique_ptr<Catalogue>> open_sqlite_catalogue(const std::filesystem::path& db_path,
                                                           int busy_timeout_ms);

/// The PostgreSQL catalogue at `url` (postgresql://[user[:password]@]host[:port]/dbname[?...],
/// libpq syntax), schema created or checked under an advisory lock. Writers serialise on a
/// transaction-level advisory lock; changes are announced with NOTIFY kiln_registry.
Expected<std::unique_ptr<Catalogue>> open_postgres_catalogue(const std::string& url);

/// The URL with any password replaced by "***".
std::string redact_url(const std::string& url);

}  // namespace kiln::registry
