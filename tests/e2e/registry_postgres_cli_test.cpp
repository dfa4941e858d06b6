// The registry on a real throwaway PostgreSQL through the `kiln` binary: concurrent pushers in
// separate processes get gap-free numbers, `kiln serve` learns of an alias move at once
// (LISTEN/NOTIFY, with polling every 10 minutes), and `kiln registry migrate` copies an SQLite
// registry over; a 2-replica cluster whose cluster file names the PostgreSQL registry converges
// on a moved alias without polling; a server rides out a PostgreSQL crash and restart.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <nlohmann/json.hpp>
#include <thread>

#include "kiln/core/ports.h"
#include "serve_helpers.h"
#include "support/postgres_server.h"
#include "support/test_support.h"

namespace kiln {
namespace {

using testing::CommandResult;
using testing::HttpClient;
using testing::run_kiln;
using testing::ServerProcess;
using testing::shared_datasets_dir;
using testing::TempDir;
using Json = nlohmann::json;
namespace fs = std::filesystem;

/// Trains the breast-cancer quick path with `seed` into home/run<seed>; the bundle directory.
fs::path train_cancer(const fs::path& home, int seed) {
  const fs::path out = home / ("run" + std::to_string(seed));
  CommandResult r = run_kiln(
      {"train", "--data", (shared_datasets_dir() / "breast_cancer.csv").string(), "--target",
       "diagnosis", "--set", "seed=" + std::to_string(seed), "--out", out.string()},
      home, {"KILN_THREADS=1"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return out / "bundle";
}

/// Versions 1 and 2 of "bc" (the quick path with seeds 1 and 2) in the registry at `url`, with
/// bc@production at 1.
void push_two_versions_of_bc(const fs::path& home, const std::string& url) {
  for (int seed : {1, 2}) {
    CommandResult pushed =
        run_kiln({"registry", "push", train_cancer(home, seed).string(), "--name", "bc"}, home,
                 {"KILN_REGISTRY=" + url});
    ASSERT_EQ(pushed.exit_code, 0) << pushed.err;
  }
  CommandResult aliased = run_kiln({"registry", "alias", "set", "bc", "production", "1"}, home,
                                   {"KILN_REGISTRY=" + url});
  ASSERT_EQ(aliased.exit_code, 0) << aliased.err;
}

TEST(RegistryPostgresTest, ConcurrentPushersInSeparateProcessesGetGapFreeNumbers) {
  TempDir home;
  const std::string url = testing::fresh_postgres_database();
  const fs::path bundle = train_cancer(home.path(), 1);
  // 4 processes x 5 pushes, all at once, each its own connection (as separate hosts would).
  constexpr int kPushers = 4, kPushes = 5;
  std::vector<std::thread> pushers;
  std::atomic<int> failures{0};
  for (int p = 0; p < kPushers; ++p)
    pushers.emplace_back([&, p] {
      for (int i = 0; i < kPushes; ++i) {
        CommandResult r = run_kiln({"registry", "push", bundle.string(), "--name", "cancer",
                                    "--tag", "pusher=" + std::to_string(p)},
                                   home.path(), {"KILN_REGISTRY=" + url});
        if (r.exit_code != 0) {
          ++failures;
          ADD_FAILURE() << r.err;
        }
      }
    });
  for (auto& t : pushers) t.join();
  ASSERT_EQ(failures.load(), 0);
  CommandResult list =
      run_kiln({"registry", "list", "cancer", "--json"}, home.path(), {"KILN_REGISTRY=" + url});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  Json versions = Json::parse(list.out);
  ASSERT_EQ(versions.size(), static_cast<size_t>(kPushers * kPushes));
  std::map<std::string, int> per_pusher;
  for (size_t i = 0; i < versions.size(); ++i) {
    EXPECT_EQ(versions[i]["version"], static_cast<int>(i + 1));
    ++per_pusher[versions[i]["tags"]["pusher"].get<std::string>()];
  }
  for (int p = 0; p < kPushers; ++p) EXPECT_EQ(per_pusher[std::to_string(p)], kPushes);
  // The SQLite registry in the same KILN_HOME was never touched.
  EXPECT_FALSE(fs::exists(home / "registry.db"));
}

TEST(RegistryPostgresTest, ServerLearnsOfAnAliasMoveAtOnceAndMigrateCopiesSqliteOver) {
  TempDir home;
  // An SQLite registry with two versions and an alias...
  const fs::path b1 = train_cancer(home.path(), 1);
  const fs::path b2 = train_cancer(home.path(), 2);
  for (const fs::path& b : {b1, b2})
    ASSERT_EQ(run_kiln({"registry", "push", b.string(), "--name", "cancer"}, home.path()).exit_code,
              0);
  ASSERT_EQ(
      run_kiln({"registry", "alias", "set", "cancer", "production", "1"}, home.path()).exit_code,
      0);
  // ... migrated into PostgreSQL (same KILN_HOME: the artifacts are shared as they are).
  const std::string url = testing::fresh_postgres_database();
  CommandResult migrated = run_kiln({"registry", "migrate", "--to", url, "--json"}, home.path());
  ASSERT_EQ(migrated.exit_code, 0) << migrated.err;
  Json report = Json::parse(migrated.out);
  EXPECT_EQ(report["versions"], 2);
  EXPECT_EQ(report["aliases"], 1);
  EXPECT_EQ(report["artifacts_copied"], 0);
  EXPECT_EQ(report["to"], url);
  CommandResult again = run_kiln({"registry", "migrate", "--to", url}, home.path());
  EXPECT_NE(again.exit_code, 0);
  EXPECT_NE(again.err.find("already holds model cancer"), std::string::npos) << again.err;
  CommandResult bad = run_kiln({"registry", "migrate", "--to", "mysql://db/x"}, home.path());
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("unknown catalogue 'mysql://db/x'"), std::string::npos) << bad.err;
  // Refused migrations from a home without a registry write nothing there.
  for (const std::string& to : {std::string("mysql://db/x"), url}) {
    TempDir empty;
    CommandResult refused = run_kiln({"registry", "migrate", "--to", to}, empty.path());
    EXPECT_NE(refused.exit_code, 0) << to;
    EXPECT_FALSE(fs::exists(empty / "registry.db")) << to << ": " << refused.err;
  }
  CommandResult nothing = run_kiln({"registry", "migrate", "--to", url}, (home / "none"));
  EXPECT_NE(nothing.err.find("no SQLite registry at"), std::string::npos) << nothing.err;

  // A server on the PostgreSQL registry, polling only every 10 minutes.
  ::setenv("KILN_REGISTRY", url.c_str(), 1);
  ServerProcess srv({"--model", "cancer@production", "--poll-interval-ms", "600000"}, home.path(),
                    home / "serve.log");
  ::unsetenv("KILN_REGISTRY");
  ASSERT_TRUE(srv.ready()) << srv.log();
  EXPECT_NE(srv.ready_line().find("(models: cancer:1)"), std::string::npos) << srv.ready_line();
  CommandResult moved = run_kiln({"registry", "alias", "set", "cancer", "production", "2"},
                                 home.path(), {"KILN_REGISTRY=" + url});
  ASSERT_EQ(moved.exit_code, 0) << moved.err;
  HttpClient c(srv.port());
  Json served;
  for (int i = 0; i < 300; ++i) {  // up to 30 s; it takes a notification and a model load
    served = Json::parse(c.get("/v2/models/cancer").body);
    if (served["versions"] == Json::array({"2"})) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(served["versions"], Json::array({"2"})) << srv.log();
  // The SQLite registry still says 1: the server followed PostgreSQL.
  CommandResult sqlite = run_kiln({"registry", "show", "cancer@production", "--json"}, home.path(),
                                  {"KILN_REGISTRY=sqlite"});
  ASSERT_EQ(sqlite.exit_code, 0) << sqlite.err;
  EXPECT_EQ(Json::parse(sqlite.out)["version"], 1);
}

TEST(RegistryPostgresTest, ClusterReplicasConvergeOnAMovedAliasAtOnce) {
  TempDir home;
  const std::string url = testing::fresh_postgres_database();
  ASSERT_NO_FATAL_FAILURE(push_two_versions_of_bc(home.path(), url));
  // The replicas get the registry from the cluster file (this environment has none), and poll
  // only every 10 minutes.
  const int port = free_loopback_port();
  const fs::path cluster = home / "cluster.yaml";
  testing::write_text(cluster, "name: pg\nport: " + std::to_string(port) +
                                   "\nreplicas: 2\nmodels: [bc@production]\nregistry: " + url +
                                   "\nserve_args: [--threads, 1, --poll-interval-ms, 600000]\n");
  CommandResult up = run_kiln({"deploy", "up", cluster.string()}, home.path());
  const testing::ClusterDownAtExit down_at_exit{cluster, home.path()};
  ASSERT_EQ(up.exit_code, 0) << up.out << up.err;
  auto versions = [&] {
    std::vector<Json> out;
    CommandResult st = run_kiln({"deploy", "status", cluster.string(), "--json"}, home.path());
    EXPECT_EQ(st.exit_code, 0) << st.out << st.err;
    if (st.exit_code != 0) return out;
    const Json state = Json::parse(st.out);
    for (const Json& r : state["replicas"]) out.push_back(r["models"][0]["versions"]);
    return out;
  };
  const std::vector<Json> before = versions();
  EXPECT_EQ(before, std::vector<Json>(2, Json::array({"1"})));
  ASSERT_EQ(run_kiln({"registry", "alias", "set", "bc", "production", "2"}, home.path(),
                     {"KILN_REGISTRY=" + url})
                .exit_code,
            0);
  std::vector<Json> after;
  for (int i = 0; i < 60; ++i) {  // up to 30 s: a notification and a model load per replica
    after = versions();
    if (after == std::vector<Json>(2, Json::array({"2"}))) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  EXPECT_EQ(after, std::vector<Json>(2, Json::array({"2"})));
  CommandResult down = run_kiln({"deploy", "down", cluster.string()}, home.path());
  EXPECT_EQ(down.exit_code, 0) << down.err;
}

// PostgreSQL crashes and comes back under a running server: the server answers from the model
// it holds throughout, its registry connections reconnect by themselves, and an alias moved
// after the restart is followed (LISTEN again, then a resync; polling only every 10 minutes).
TEST(RegistryPostgresTest, ServerRidesOutAPostgresRestartAndFollowsAliasesAfter) {
  TempDir home;
  std::unique_ptr<testing::PostgresServer> pg = testing::PostgresServer::Start();
  ASSERT_TRUE(pg);
  const std::string url = pg->create_database("restart");
  ASSERT_NO_FATAL_FAILURE(push_two_versions_of_bc(home.path(), url));
  ::setenv("KILN_REGISTRY", url.c_str(), 1);
  ServerProcess srv({"--model", "bc@production", "--poll-interval-ms", "600000"}, home.path(),
                    home / "serve.log");
  ::unsetenv("KILN_REGISTRY");
  ASSERT_TRUE(srv.ready()) << srv.log();
  HttpClient c(srv.port());
  const std::string body =
      testing::breast_cancer_infer_body(testing::breast_cancer_rows()[0].features, 1.0);
  ASSERT_EQ(c.post("/v2/models/bc/infer", body).status, 200);

  ASSERT_TRUE(pg->crash_and_restart(std::chrono::milliseconds(1500)));
  // While it was down and since: the held model answers.
  EXPECT_EQ(c.post("/v2/models/bc/infer", body).status, 200) << srv.log();
  EXPECT_EQ(c.get("/v2/health/ready").status, 200);

  CommandResult moved = run_kiln({"registry", "alias", "set", "bc", "production", "2"}, home.path(),
                                 {"KILN_REGISTRY=" + url});
  ASSERT_EQ(moved.exit_code, 0) << moved.err;
  Json served;
  for (int i = 0; i < 300; ++i) {  // up to 30 s: a reconnect, a resync and a model load
    served = Json::parse(c.get("/v2/models/bc").body);
    if (served["versions"] == Json::array({"2"})) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(served["versions"], Json::array({"2"})) << srv.log() << pg->log();
  EXPECT_EQ(c.post("/v2/models/bc/infer", body).status, 200);
  // The outage was said once, and its end.
  const std::string log = srv.log();
  EXPECT_NE(log.find("registry unreachable; serving the versions loaded"), std::string::npos)
      << log;
  EXPECT_NE(log.find("registry reachable again"), std::string::npos) << log;
}

}  // namespace
}  // namespace kiln
