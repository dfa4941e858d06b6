#pragma once

// A throwaway PostgreSQL server for tests: Debian's postgresql binaries, a temp data directory, a
// free loopback port, run as the `postgres` user when the tests run as root (initdb refuses
// root). Each test process starts at most one, on first use, and stops it at exit.

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>

#include "support/test_support.h"

namespace kiln::testing {

/// A running PostgreSQL server, stopped (immediate shutdown) and deleted by the destructor.
/// Thread-compatible.
class PostgresServer {
 public:
  /// initdb + start; fails the calling test (and returns null) when it cannot.
  static std::unique_ptr<PostgresServer> Start();
  ~PostgresServer();

  int port() const { return port_; }
  /// Creates database `name` (fresh: dropped first when it exists) and returns its URL,
  /// postgresql://postgres@127.0.0.1:PORT/NAME.
  std::string create_database(const std::string& name);
  /// The server's log (for failure messages).
  std::string log() const;
  /// Stops the server as a crash would (immediate shutdown: every connection cut) and, after
  /// `down_for`, starts it again on the same port and data; false (reported) when it cannot.
  bool crash_and_restart(std::chrono::milliseconds down_for);

 private:
  PostgresServer() = default;
  CommandResult pg_ctl_start() const;
  std::filesystem::path dir_;
  std::filesystem::path bin_;
  std::string start_options_;  ///< pg_ctl -o: port, socket directory, limits
  int port_ = 0;
  bool started_ = false;
};

/// The test process's server, started on first use and stopped when the process exits.
PostgresServer& shared_postgres();

/// A fresh database on shared_postgres() named after the running test; its URL.
std::string fresh_postgres_database();

}  // namespace kiln::testing
