// `kiln rollout` against a real `kiln serve` route under steady load: a healthy candidate is
// promoted (registry alias moved), one that fails a check is rolled back at once, and a runner
// killed mid-step leaves a running state that refuses a plain rerun and is aborted or resumed.
// Throughout, the client sees no failed request.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <nlohmann/json.hpp>
#include <thread>

#include "serve_helpers.h"
#include "support/test_support.h"

namespace kiln {
namespace {

using testing::breast_cancer_infer_body;
using testing::breast_cancer_rows;
using testing::HttpClient;
using testing::HttpResult;
using testing::run_kiln;
using testing::ServerProcess;
using testing::TempDir;
using Json = nlohmann::json;

/// Two served copies of one trained breast-cancer bundle, "stable" and "canary", behind route
/// "cancer" (stable 100 %), and a client thread that sends one request after another to the
/// route until the test ends, counting the answers that are not 200.
class RolloutCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    bundle_ = testing::train_breast_cancer_bundle(home_.path(), home_ / "bundle-run");
    server_ = std::make_unique<ServerProcess>(serve_args(), home_.path(), home_ / "serve.log");
    ASSERT_TRUE(server_->ready()) << server_->log();
    url_ = "http://127.0.0.1:" + std::to_string(server_->port());
    load_ = std::thread([this] {
      const auto rows = breast_cancer_rows();
      HttpClient c(server_->port());
      for (size_t i = 0; !stop_.load(); i = (i + 1) % rows.size()) {
        HttpResult r =
            c.post("/v2/models/cancer/infer", breast_cancer_infer_body(rows[i].features, 1.0));
        ++sent_;
        if (r.status != 200) ++failed_;
      }
    });
  }
  void TearDown() override {
    stop_ = true;
    if (load_.joinable()) load_.join();
  }
  /// `kiln serve`'s arguments: both targets served from the bundle's directory.
  virtual std::vector<std::string> serve_args() {
    return {"--model", "stable=" + bundle_.string(), "--model", "canary=" + bundle_.string(),
            "--route", "cancer=stable:100,canary:0"};
  }
  testing::CommandResult kiln(const std::vector<std::string>& args) {
    return run_kiln(args, home_.path());
  }

  /// The canary's weight on the route now.
  int canary_weight() {
    HttpClient c(server_->port());
    const Json route = Json::parse(c.get("/v2/routes/cancer").body);
    for (const auto& t : route["targets"])
      if (t["model"] == "canary") return t["weight"].get<int>();
    return -1;
  }
  Json state() { return Json::parse(testing::read_text(home_ / "rollouts" / "cancer.json")); }

  TempDir home_;
  std::filesystem::path bundle_;
  std::unique_ptr<ServerProcess> server_;
  std::string url_;
  std::thread load_;
  std::atomic<bool> stop_{false};
  std::atomic<int> sent_{0}, failed_{0};
};

TEST_F(RolloutCliTest, AHealthyCandidateIsPromotedWithoutAFailedRequest) {
  for (int i = 0; i < 2; ++i)
    ASSERT_EQ(
        run_kiln({"registry", "push", bundle_.string(), "--name", "bc"}, home_.path()).exit_code,
        0);
  ASSERT_EQ(run_kiln({"registry", "alias", "set", "bc", "production", "1"}, home_.path()).exit_code,
            0);
  const testing::CommandResult r =
      run_kiln({"rollout", "cancer", "--server", url_, "--candidate", "canary", "--steps",
                "25,50,100", "--interval", "1s", "--max-error-rate", "0.01", "--max-p99-ms", "1000",
                "--promote", "bc@production=2"},
               home_.path());
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("step 1/3 stable:75,canary:25"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("step 3/3 stable:0,canary:100"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("promoted: bc@production -> 2"), std::string::npos) << r.out;
  EXPECT_EQ(canary_weight(), 100);
  const Json s = state();
  EXPECT_EQ(s["status"], "promoted");
  EXPECT_EQ(s["current_step"], 3);
  ASSERT_EQ(s["history"].size(), 4u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(s["history"][i]["verdict"], "pass") << s.dump(2);
    EXPECT_GE(s["history"][i]["requests"].get<double>(), 20);
  }
  const testing::CommandResult alias =
      run_kiln({"registry", "alias", "history", "bc", "production"}, home_.path());
  EXPECT_EQ(alias.exit_code, 0) << alias.err;
  const testing::CommandResult show =
      run_kiln({"registry", "show", "bc@production", "--json"}, home_.path());
  ASSERT_EQ(show.exit_code, 0) << show.err;
  EXPECT_EQ(Json::parse(show.out)["version"], 2);
  stop_ = true;
  load_.join();
  EXPECT_GT(sent_.load(), 100);
  EXPECT_EQ(failed_.load(), 0);
}

TEST_F(RolloutCliTest, AFailedCheckRollsBackAtOnce) {
  // No candidate answers a request within a microsecond: the p99 check fails honestly.
  const testing::CommandResult r =
      run_kiln({"rollout", "cancer", "--server", url_, "--candidate", "canary", "--steps", "50,100",
                "--interval", "1s", "--max-p99-ms", "0.001"},
               home_.path());
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.err.find("--max-p99-ms 0.001"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("rolled back: stable:100,canary:0"), std::string::npos) << r.out;
  EXPECT_EQ(canary_weight(), 0);
  const Json s = state();
  EXPECT_EQ(s["status"], "rolled_back");
  ASSERT_EQ(s["history"].size(), 1u);
  EXPECT_EQ(s["history"][0]["verdict"], "fail");
  stop_ = true;
  load_.join();
  EXPECT_EQ(failed_.load(), 0);
}

TEST_F(RolloutCliTest, AKilledRunnerLeavesARunningStateToAbortOrResume) {
  const std::vector<std::string> args{"rollout",     "cancer", "--server", url_,
                                      "--candidate", "canary", "--steps",  "25,50,100",
                                      "--interval",  "1s"};
  for (const std::string how : {"--abort", "--resume"}) {
    const pid_t pid = testing::spawn_kiln(args, home_.path());
    // Kill it mid-step: once the first step's weights are on the route.
    for (int i = 0; i < 200 && canary_weight() != 25; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    ASSERT_EQ(canary_weight(), 25) << how;
    // While the runner lives, nothing else may drive the route.
    const testing::CommandResult busy = run_kiln({"rollout", "cancer", how}, home_.path());
    EXPECT_EQ(busy.exit_code, 2) << busy.out << busy.err;
    EXPECT_NE(busy.err.find("another runner drives it now"), std::string::npos) << busy.err;
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    ::waitpid(pid, nullptr, 0);
    EXPECT_EQ(state()["status"], "running");
    const int left_at = canary_weight();  // 25, or 50 if the first step ended meanwhile
    EXPECT_TRUE(left_at == 25 || left_at == 50) << left_at;

    const testing::CommandResult again = run_kiln(args, home_.path());
    EXPECT_EQ(again.exit_code, 2) << again.out << again.err;
    EXPECT_NE(again.err.find("in progress"), std::string::npos) << again.err;
    EXPECT_EQ(canary_weight(), left_at);

    const testing::CommandResult r = run_kiln({"rollout", "cancer", how}, home_.path());
    EXPECT_EQ(r.exit_code, 0) << how << ": " << r.out << r.err;
    if (how == "--abort") {
      EXPECT_EQ(canary_weight(), 0);
      EXPECT_EQ(state()["status"], "rolled_back");
      EXPECT_EQ(state()["history"].back()["verdict"], "aborted");
    } else {
      EXPECT_NE(r.out.find("resuming cancer at step "), std::string::npos) << r.out;
      EXPECT_EQ(canary_weight(), 100);
      EXPECT_EQ(state()["status"], "promoted");
    }
  }
  stop_ = true;
  load_.join();
  EXPECT_EQ(failed_.load(), 0);
}

TEST_F(RolloutCliTest, BadInputNamesTheFlag) {
  struct Case {
    std::vector<std::string> args;
    int exit_code;
    std::string says;
  };
  const std::vector<Case> cases = {
      {{"nosuch", "--server", url_, "--candidate", "canary"}, 2, "nosuch"},
      {{"cancer", "--server", url_, "--candidate", "other"}, 2, "--candidate"},
      {{"cancer", "--server", url_, "--candidate", "canary", "--steps", "10,5,100"}, 2, "--steps"},
      {{"cancer", "--server", url_, "--candidate", "canary", "--steps", "10,150"}, 2, "--steps"},
      {{"cancer", "--server", url_, "--candidate", "canary", "--interval", "5"}, 2, "--interval"},
      {{"cancer", "--server", url_, "--candidate", "canary", "--reload-timeout", "soon"},
       2,
       "--reload-timeout"},
      {{"cancer", "--server", url_, "--candidate", "canary", "--follow-timeout", "10"},
       2,
       "--follow-timeout"},
      {{"cancer", "--server", "http://127.0.0.1:1", "--candidate", "canary"}, 1, "--server"},
      {{"cancer", "--server", url_, "--candidate", "canary", "--metrics-from", "ftp://x"},
       2,
       "--metrics-from"},
      {{"cancer", "--candidate", "canary"}, 2, "--server"},
      {{"cancer", "--resume"}, 2, "--resume"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args{"rollout"};
    args.insert(args.end(), c.args.begin(), c.args.end());
    const testing::CommandResult r = run_kiln(args, home_.path());
    EXPECT_EQ(r.exit_code, c.exit_code) << c.args[0] << " " << c.args.back() << ": " << r.err;
    EXPECT_NE(r.err.find(c.says), std::string::npos) << r.err;
  }
  EXPECT_EQ(canary_weight(), 0);
}

TEST_F(RolloutCliTest, APipelineRolloutStagePromotesTheVersionItsPushRegistered) {
  const std::filesystem::path dir = home_ / "pipeline";
  testing::write_text(
      dir / "pipeline.yaml",
      "stages:\n  train: {kind: train, config: " + testing::example("breast-cancer/train.yaml") +
          "}\n  push: {kind: push, name: bc, needs: [train]}\n  canary: {kind: rollout, "
          "route: cancer, server: \"" +
          url_ +
          "\", candidate: canary, alias: production, args: [--steps, \"50,100\", --interval, "
          "1s, --min-requests, 5], needs: [push]}\n");
  auto r = run_kiln({"pipeline", "run", (dir / "pipeline.yaml").string(), "--json"}, home_.path());
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const Json out = Json::parse(r.out);
  for (const Json& s : out["stages"]) EXPECT_EQ(s["status"], "done") << s.dump();
  EXPECT_EQ(state()["status"], "promoted");
  EXPECT_EQ(canary_weight(), 100);
  auto shown = run_kiln({"registry", "show", "bc@production", "--json"}, home_.path());
  ASSERT_EQ(shown.exit_code, 0) << shown.err;
  EXPECT_EQ(Json::parse(shown.out)["version"], 1);
  EXPECT_EQ(failed_.load(), 0);
  // A candidate that is no target of the route: the stage fails, nothing moves.
  testing::write_text(dir / "bad.yaml",
                      "stages:\n  canary: {kind: rollout, route: cancer, "
                      "server: \"" +
                          url_ + "\", candidate: nobody}\n");
  r = run_kiln({"pipeline", "run", (dir / "bad.yaml").string(), "--json"}, home_.path());
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_EQ(Json::parse(r.out)["stages"][0]["status"], "failed");
}

TEST_F(RolloutCliTest, SigtermMidStepRollsBackAtOnce) {
  const pid_t pid = testing::spawn_kiln({"rollout", "cancer", "--server", url_, "--candidate",
                                         "canary", "--steps", "25,100", "--interval", "30s"},
                                        home_.path());
  for (int i = 0; i < 200 && canary_weight() != 25; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_EQ(canary_weight(), 25);
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(::kill(pid, SIGTERM), 0);
  int status = 0;
  ::waitpid(pid, &status, 0);
  // Within a poll, not at the end of the 30 s step.
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 1);
  EXPECT_EQ(canary_weight(), 0);
  EXPECT_EQ(state()["status"], "rolled_back");
  EXPECT_NE(state()["history"].back().dump().find("interrupted"), std::string::npos)
      << state().dump(1);
  stop_ = true;
  load_.join();
  EXPECT_EQ(failed_.load(), 0);
}

/// The same route with both targets served from the registry (stable = bc@production, canary =
/// bc@candidate, both version 1 at start), re-resolved every 3 s.
class RolloutFromRegistryTest : public RolloutCliTest {
 protected:
  std::vector<std::string> serve_args() override {
    EXPECT_EQ(kiln({"registry", "push", bundle_.string(), "--name", "bc"}).exit_code, 0);
    EXPECT_EQ(kiln({"registry", "alias", "set", "bc", "production", "1"}).exit_code, 0);
    EXPECT_EQ(kiln({"registry", "alias", "set", "bc", "candidate", "1"}).exit_code, 0);
    return {"--model",
            "stable=bc@production",
            "--model",
            "canary=bc@candidate",
            "--route",
            "cancer=stable:100,canary:0",
            "--poll-interval-ms",
            "3000"};
  }
};

// A just-moved candidate alias is served only after the server reloads it: a rollout that is to
// promote VERSION waits for the candidate to serve it, and refuses (nothing changed) when it does
// not within --reload-timeout.
TEST_F(RolloutFromRegistryTest, TheCandidateMustServeThePromotedVersionFirst) {
  ASSERT_EQ(kiln({"registry", "push", bundle_.string(), "--name", "bc"}).exit_code, 0);
  ASSERT_EQ(kiln({"registry", "alias", "set", "bc", "candidate", "2"}).exit_code, 0);
  const std::vector<std::string> rollout = {
      "rollout", "cancer", "--server",   url_, "--candidate", "canary",
      "--steps", "100",    "--interval", "2s", "--promote",   "bc@production=2"};
  std::vector<std::string> impatient = rollout;
  impatient.insert(impatient.end(), {"--reload-timeout", "200ms"});
  testing::CommandResult r = kiln(impatient);
  if (r.out.find("serves version 2") == std::string::npos) {  // the usual case: not reloaded yet
    EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
    EXPECT_NE(r.err.find("does not serve that version"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("still serves version 1"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("nothing was changed"), std::string::npos) << r.err;
    EXPECT_EQ(canary_weight(), 0);
    EXPECT_FALSE(std::filesystem::exists(home_ / "rollouts" / "cancer.json"));
  }
  // Patient: waits for the reload (within 3 s), then canaries version 2 and promotes it.
  r = kiln(rollout);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("candidate canary serves version 2"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("promoted: bc@production -> 2"), std::string::npos) << r.out;
  stop_ = true;
  load_.join();
  EXPECT_EQ(failed_.load(), 0);
}

/// The canary's request counter on one server's /metrics (every outcome), 0 when absent.
double canary_requests(int port) {
  HttpClient c(port);
  const std::string text = c.get("/metrics").body;
  double total = 0;
  for (size_t at = text.find("kiln_inference_requests_total{model=\"canary\"");
       at != std::string::npos;
       at = text.find("kiln_inference_requests_total{model=\"canary\"", at + 1))
    total += std::stod(text.substr(text.find("} ", at) + 2));
  return total;
}

TEST(RolloutClusterTest, ChecksAddUpEveryReplicaAndTheSplitMovesThemAll) {
  // Two replicas on one KILN_HOME; all the traffic goes to the second, while the rollout POSTs
  // to the first. Reading the first alone, every step would see no canary request (inconclusive,
  // rolled back); with --metrics-from both, the second's requests count, and there are some only
  // because the second follows the split through the kept file.
  TempDir home;
  const auto bundle = testing::train_breast_cancer_bundle(home.path(), home / "bundle-run");
  testing::TwoRouteReplicas replicas(bundle, home.path());
  ASSERT_TRUE(replicas.ready()) << replicas.logs();
  ServerProcess &a = replicas.a, &b = replicas.b;
  std::atomic<bool> stop{false};
  std::atomic<int> failed{0};
  std::thread client([&] {
    const auto rows = breast_cancer_rows();
    HttpClient c(b.port());
    for (size_t i = 0; !stop.load(); i = (i + 1) % rows.size())
      if (c.post("/v2/models/cancer/infer", breast_cancer_infer_body(rows[i].features, 1.0))
              .status != 200)
        ++failed;
  });
  const std::string url_a = "http://127.0.0.1:" + std::to_string(a.port());
  const std::string url_b = "http://127.0.0.1:" + std::to_string(b.port());
  const testing::CommandResult r =
      run_kiln({"rollout", "cancer", "--server", url_a, "--metrics-from", url_a, "--metrics-from",
                url_b, "--candidate", "canary", "--steps", "50,100", "--interval", "1500ms"},
               home.path());
  stop = true;
  client.join();
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(canary_requests(a.port()), 0);
  HttpClient cb(b.port());
  EXPECT_EQ(Json::parse(cb.get("/v2/routes/cancer").body)["spec"], "cancer=stable:0,canary:100")
      << b.log();
  const Json s = Json::parse(testing::read_text(home / "rollouts" / "cancer.json"));
  double counted = 0;
  for (const auto& step : s["history"]) counted += step.value("requests", 0.0);
  EXPECT_GE(counted, 40) << s.dump(2);
  EXPECT_LE(counted, canary_requests(b.port()));
}

TEST(RolloutClusterTest, ADeployClusterIsRolledOutByNamingItsFile) {
  // `kiln deploy up` two replicas serving the route; the client goes through nginx, and
  // `--cluster` alone tells the rollout where to POST and whose /metrics to add up.
  TempDir home;
  const auto bundle = testing::train_breast_cancer_bundle(home.path(), home / "bundle-run");
  const int port = testing::free_loopback_port();
  const auto cluster = home / "cluster.yaml";
  testing::write_text(cluster, "name: canary\nport: " + std::to_string(port) +
                                   "\nreplicas: 2\nmodels: [\"stable=" + bundle.string() +
                                   "\", \"canary=" + bundle.string() +
                                   "\"]\nserve_args: [--route, \"cancer=stable:100,canary:0\", "
                                   "--poll-interval-ms, \"200\", --threads, \"1\"]\n");
  const auto up = run_kiln({"deploy", "up", cluster.string()}, home.path());
  const testing::ClusterDownAtExit down_at_exit{cluster, home.path()};
  ASSERT_EQ(up.exit_code, 0) << up.out << up.err;
  std::atomic<bool> stop{false};
  std::atomic<int> failed{0};
  std::thread client([&] {
    const auto rows = breast_cancer_rows();
    HttpClient c(port);
    for (size_t i = 0; !stop.load(); i = (i + 1) % rows.size())
      if (c.post("/v2/models/cancer/infer", breast_cancer_infer_body(rows[i].features, 1.0))
              .status != 200)
        ++failed;
  });
  const testing::CommandResult r =
      run_kiln({"rollout", "cancer", "--cluster", cluster.string(), "--candidate", "canary",
                "--steps", "50,100", "--interval", "1500ms"},
               home.path());
  stop = true;
  client.join();
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(failed.load(), 0);
  const auto status = run_kiln({"deploy", "status", cluster.string(), "--json"}, home.path());
  ASSERT_EQ(status.exit_code, 0) << status.err;
  std::vector<std::string> replicas;
  const Json cluster_status = Json::parse(status.out);
  for (const Json& replica : cluster_status["replicas"]) {
    const int replica_port = replica["port"].get<int>();
    replicas.push_back("http://127.0.0.1:" + std::to_string(replica_port));
    EXPECT_EQ(replica["routes"], Json::parse(R"(["cancer=stable:0,canary:100"])"))
        << replica.dump();
  }
  const Json s = Json::parse(testing::read_text(home / "rollouts" / "cancer.json"));
  EXPECT_EQ(s["status"], "promoted") << s.dump(2);
  EXPECT_EQ(s["cluster"], cluster.string());
  EXPECT_EQ(s["metrics_from"], Json(replicas));
  EXPECT_EQ(s["server"], replicas.front());
  // --cluster names the servers itself.
  const auto both = run_kiln({"rollout", "cancer", "--cluster", cluster.string(), "--server",
                              replicas.front(), "--candidate", "canary"},
                             home.path());
  EXPECT_EQ(both.exit_code, 2);
  EXPECT_NE(both.err.find("--cluster names the servers"), std::string::npos) << both.err;
  EXPECT_EQ(run_kiln({"deploy", "down", cluster.string()}, home.path()).exit_code, 0);
  const auto gone = run_kiln(
      {"rollout", "cancer", "--cluster", cluster.string(), "--candidate", "canary"}, home.path());
  EXPECT_NE(gone.exit_code, 0);
  EXPECT_NE(gone.err.find("is not up"), std::string::npos) << gone.err;
}

TEST(RolloutClusterTest, AMetricsServerThatDoesNotFollowTheSplitRollsBackEverywhere) {
  // Two servers on separate KILN_HOMEs: the second never sees the first's kept split, so the
  // first step is an error, and the roll back is POSTed to both.
  TempDir home, other_home;
  const auto bundle = testing::train_breast_cancer_bundle(home.path(), home / "bundle-run");
  const auto args = testing::TwoRouteReplicas::args(bundle);
  ServerProcess a(args, home.path(), home / "log-a");
  ServerProcess b(args, other_home.path(), other_home / "log-b");
  ASSERT_TRUE(a.ready() && b.ready()) << a.log() << b.log();
  HttpClient cb(b.port());
  // b routes a split of its own before the rollout: the roll back must reach it too.
  ASSERT_EQ(cb.post("/v2/routes/cancer", R"({"weights": {"stable": 90, "canary": 10}})").status,
            200);
  const std::string url_a = "http://127.0.0.1:" + std::to_string(a.port());
  const std::string url_b = "http://127.0.0.1:" + std::to_string(b.port());
  const testing::CommandResult r =
      run_kiln({"rollout", "cancer", "--server", url_a, "--metrics-from", url_a, "--metrics-from",
                url_b, "--candidate", "canary", "--steps", "50,100", "--interval", "500ms",
                "--follow-timeout", "1s"},
               home.path());
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.err.find(url_b + " still routes stable:90,canary:10, not stable:50,canary:50"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("does not share the route's kept split"), std::string::npos) << r.err;
  for (ServerProcess* s : {&a, &b}) {
    HttpClient c(s->port());
    EXPECT_EQ(Json::parse(c.get("/v2/routes/cancer").body)["spec"], "cancer=stable:100,canary:0");
  }
  const Json s = Json::parse(testing::read_text(home / "rollouts" / "cancer.json"));
  EXPECT_EQ(s["status"], "rolled_back") << s.dump(2);
}

}  // namespace
}  // namespace kiln
