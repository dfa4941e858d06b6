#include "support/postgres_server.h"

#include <gtest/gtest.h>
#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <pqxx/pqxx>
#include <thread>

#include "kiln/core/ports.h"
#include "support/test_support.h"

namespace kiln::testing {

namespace {

/// The newest /usr/lib/postgresql/<major>/bin.
std::filesystem::path postgres_bin_dir() {
  std::filesystem::path best;
  std::error_code ec;
  int best_major = -1;
  for (const auto& e : std::filesystem::directory_iterator("/usr/lib/postgresql", ec)) {
    const int major = std::atoi(e.path().filename().c_str());
    if (major > best_major && std::filesystem::exists(e.path() / "bin" / "initdb", ec)) {
      best_major = major;
      best = e.path() / "bin";
    }
  }
  return best;
}

/// argv run as the postgres user when we are root (runuser), as ourselves otherwise.
std::vector<std::string> as_postgres(std::vector<std::string> argv) {
  if (::geteuid() != 0) return argv;
  argv.insert(argv.begin(), {"/usr/sbin/runuser", "-u", "postgres", "--"});
  return argv;
}

}  // namespace

std::unique_ptr<PostgresServer> PostgresServer::Start() {
  std::unique_ptr<PostgresServer> server(new PostgresServer());
  server->bin_ = postgres_bin_dir();
  if (server->bin_.empty()) {
    ADD_FAILURE() << "no PostgreSQL under /usr/lib/postgresql (scripts/install-deps.sh installs "
                     "Debian's postgresql)";
    return nullptr;
  }
  char pattern[] = "/tmp/kiln-pg-XXXXXX";
  if (::mkdtemp(pattern) == nullptr) {
    ADD_FAILURE() << "mkdtemp failed";
    return nullptr;
  }
  server->dir_ = pattern;
  if (::geteuid() == 0) {
    const struct passwd* pw = ::getpwnam("postgres");
    if (pw == nullptr) {
      ADD_FAILURE() << "running as root, and there is no postgres user to run PostgreSQL as";
      return nullptr;
    }
    if (::chown(pattern, pw->pw_uid, pw->pw_gid) != 0) {
      ADD_FAILURE() << "chown " << pattern << " failed";
      return nullptr;
    }
  }
  const std::string data = (server->dir_ / "data").string();
  // initdb takes ~3 s and every PostgreSQL test process needs a cluster: the first one's fresh
  // cluster is published (copied, then renamed into place: all or nothing) as a template per
  // PostgreSQL version, and later processes copy it. A failed copy falls back to initdb.
  const std::filesystem::path tmpl = "/tmp/kiln-pg-template-" +
                                     server->bin_.parent_path().filename().string() + "-" +
                                     std::to_string(::geteuid());
  std::error_code ec;
  const bool copied = std::filesystem::exists(tmpl / "PG_VERSION", ec) &&
                      run_program({"cp", "-a", tmpl.string(), data}).exit_code == 0;
  if (!copied) {
    std::filesystem::remove_all(data, ec);
    CommandResult init =
        run_program(as_postgres({(server->bin_ / "initdb").string(), "-D", data, "-U", "postgres",
                                 "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"}));
    if (init.exit_code != 0) {
      ADD_FAILURE() << "initdb failed:\n" << init.out << init.err;
      return nullptr;
    }
    const std::string staging = tmpl.string() + ".staging-" + std::to_string(::getpid());
    if (run_program({"cp", "-a", data, staging}).exit_code != 0 ||
        ::rename(staging.c_str(), tmpl.c_str()) != 0)
      std::filesystem::remove_all(staging, ec);  // another process published it first
  }
  for (int attempt = 0; attempt < 3 && !server->started_; ++attempt) {
    server->port_ = free_loopback_port();
    server->start_options_ = "-p " + std::to_string(server->port_) + " -k " +
                             server->dir_.string() +
                             " -c listen_addresses=127.0.0.1 -c max_connections=200";
    server->started_ = server->pg_ctl_start().exit_code == 0;
  }
  if (!server->started_) {
    ADD_FAILURE() << "PostgreSQL did not start:\n" << server->log();
    return nullptr;
  }
  return server;
}

PostgresServer::~PostgresServer() {
  if (started_)
    (void)run_program(as_postgres({(bin_ / "pg_ctl").string(), "-D", (dir_ / "data").string(), "-m",
                                   "immediate", "-w", "stop"}));
  std::error_code ec;
  if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
}

std::string PostgresServer::log() const { return read_text(dir_ / "server.log"); }

CommandResult PostgresServer::pg_ctl_start() const {
  return run_program(
      as_postgres({(bin_ / "pg_ctl").string(), "-D", (dir_ / "data").string(), "-o", start_options_,
                   "-l", (dir_ / "server.log").string(), "-w", "-t", "60", "start"}));
}

bool PostgresServer::crash_and_restart(std::chrono::milliseconds down_for) {
  CommandResult stop =
      run_program(as_postgres({(bin_ / "pg_ctl").string(), "-D", (dir_ / "data").string(), "-m",
                               "immediate", "-w", "stop"}));
  if (stop.exit_code != 0) {
    ADD_FAILURE() << "pg_ctl stop failed:\n" << stop.out << stop.err;
    return false;
  }
  started_ = false;
  std::this_thread::sleep_for(down_for);
  CommandResult start = pg_ctl_start();
  started_ = start.exit_code == 0;
  if (!started_) ADD_FAILURE() << "PostgreSQL did not restart:\n" << start.err << log();
  return started_;
}

std::string PostgresServer::create_database(const std::string& name) {
  const std::string base = "postgresql://postgres@127.0.0.1:" + std::to_string(port_) + "/";
  try {
    pqxx::connection admin(base + "postgres");
    pqxx::nontransaction w(admin);
    w.exec("DROP DATABASE IF EXISTS " + w.quote_name(name));
    w.exec("CREATE DATABASE " + w.quote_name(name));
  } catch (const std::exception& e) {
    ADD_FAILURE() << "CREATE DATABASE " << name << ": " << e.what();
  }
  return base + name;
}

PostgresServer& shared_postgres() {
  static std::unique_ptr<PostgresServer> server = [] {
    auto s = PostgresServer::Start();
    if (!s) std::abort();  // the failure is already reported
    return s;
  }();
  return *server;
}

std::string fresh_postgres_database() {
  static std::atomic<int> counter{0};
  std::string name = "kiln_test_" + std::to_string(::getpid()) + "_" + std::to_string(++counter);
  return shared_postgres().create_database(name);
}

}  // namespace kiln::testing
