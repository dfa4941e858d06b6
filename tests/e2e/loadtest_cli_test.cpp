// `kiln loadtest` end to end: the real binary against a real `kiln serve` on a free loopback
// port. Covers --json counts and rates, --data rows, --model (the server started by loadtest
// itself), the coordinated-omission case (the server SIGSTOPped for 1 s: open loop sees it in
// p99, closed loop hides it), and the bad-input exits.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <thread>

#include "serve_helpers.h"
#include "support/test_support.h"

namespace kiln {
namespace {

using testing::CommandResult;
using testing::run_kiln;
using testing::ServerProcess;
using testing::shared_datasets_dir;
using testing::TempDir;
using Json = nlohmann::json;
namespace fs = std::filesystem;

/// One breast-cancer bundle trained for the suite.
class LoadtestCliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    home_ = new TempDir();
    bundle_ =
        new fs::path(testing::train_breast_cancer_bundle(home_->path(), home_->path() / "run"));
  }
  static void TearDownTestSuite() {
    delete bundle_;
    delete home_;
  }
  static std::unique_ptr<ServerProcess> serve(const std::string& name) {
    auto s = std::make_unique<ServerProcess>(std::vector<std::string>{"--model", bundle_->string()},
                                             home_->path(), home_->path() / (name + ".log"));
    EXPECT_TRUE(s->ready()) << s->log();
    return s;
  }
  /// "NAME" from "... (models: NAME:VERSION)".
  static std::string model_name(const ServerProcess& s) {
    const std::string& line = s.ready_line();
    const size_t m = line.find("(models: ") + 9;
    return line.substr(m, line.find(':', m) - m);
  }
  static Json parse(const CommandResult& r) {
    Json j = Json::parse(r.out, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << r.out << r.err;
    return j;
  }
  static TempDir* home_;
  static fs::path* bundle_;
};
TempDir* LoadtestCliTest::home_ = nullptr;
fs::path* LoadtestCliTest::bundle_ = nullptr;

TEST_F(LoadtestCliTest, OpenLoopInferFromCsvRowsReportsJson) {
  auto server = serve("rows");
  ASSERT_TRUE(server->ready());
  const std::string url = "http://127.0.0.1:" + std::to_string(server->port()) + "/v2/models/" +
                          model_name(*server) + "/infer";
  TempDir out;
  CommandResult r =
      run_kiln({"loadtest", url, "--data", (shared_datasets_dir() / "breast_cancer.csv").string(),
                "--drop-column", "diagnosis", "--rate", "300", "--duration", "2", "--json", "--svg",
                (out / "plot.svg").string()},
               home_->path());
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  Json j = parse(r);
  EXPECT_EQ(j["mode"], "open");
  EXPECT_EQ(j["requests"]["scheduled"], 600);
  EXPECT_EQ(j["requests"]["completed"], 600) << r.out;
  EXPECT_EQ(j["errors"]["total"], 0);
  EXPECT_EQ(j["status_codes"]["200"], 600);
  EXPECT_GT(j["achieved_rate_per_s"].get<double>(), 200);
  EXPECT_LT(j["achieved_rate_per_s"].get<double>(), 310);
  const Json& lat = j["latency"];
  EXPECT_GT(lat["p50_us"].get<double>(), 0);
  EXPECT_LE(lat["p50_us"].get<double>(), lat["p99_us"].get<double>());
  EXPECT_LE(lat["p99_us"].get<double>(), lat["max_us"].get<double>());
  ASSERT_GE(j["timeline"].size(), 2u);
  EXPECT_GT(j["timeline"][0]["requests"].get<int>(), 200);
  const std::string svg = testing::read_text(out / "plot.svg");
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("polyline"), std::string::npos);
}

TEST_F(LoadtestCliTest, ModelStartsItsOwnServerAndSendsZeros) {
  CommandResult r = run_kiln(
      {"loadtest", "--model", bundle_->string(), "--rate", "200", "--duration", "1", "--json"},
      home_->path());
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  Json j = parse(r);
  EXPECT_EQ(j["requests"]["completed"], 200);
  EXPECT_EQ(j["errors"]["total"], 0);
  EXPECT_NE(j["url"].get<std::string>().find("/infer"), std::string::npos);
}

TEST_F(LoadtestCliTest, AStallShowsInOpenLoopP99AndHidesInClosedLoop) {
  auto server = serve("stall");
  ASSERT_TRUE(server->ready());
  const std::string url = "http://127.0.0.1:" + std::to_string(server->port()) + "/v2/health/ready";
  // Runs loadtest for 3 s while the server is stopped from 0.8 s to 1.8 s.
  auto run_with_stall = [&](const std::vector<std::string>& mode) {
    std::vector<std::string> args{"loadtest", url, "--duration", "3", "--json"};
    args.insert(args.end(), mode.begin(), mode.end());
    CommandResult r;
    std::thread t([&] { r = run_kiln(args, home_->path()); });
    std::this_thread::sleep_for(std::chrono::milliseconds(800));
    server->signal(SIGSTOP);
    std::this_thread::sleep_for(std::chrono::seconds(1));
    server->signal(SIGCONT);
    t.join();
    return r;
  };
  CommandResult open = run_with_stall({"--rate", "500"});
  ASSERT_EQ(open.exit_code, 0) << open.out << open.err;
  CommandResult closed = run_with_stall({"--connections", "4"});
  ASSERT_EQ(closed.exit_code, 0) << closed.out << closed.err;
  const Json o = parse(open), c = parse(closed);
  EXPECT_EQ(c["mode"], "closed");
  // Open loop: ~500 requests were due during the stall and each counts from its intended
  // time, so about a third of all latencies are 0..1 s.
  const double open_p99 = o["latency"]["p99_us"].get<double>();
  EXPECT_GE(open_p99, 500'000) << open.out;
  EXPECT_GT(o["late_sends"].get<int>(), 100);
  // Closed loop: only the 4 requests in flight saw the stall (its max shows it), p99 does not.
  const double closed_p99 = c["latency"]["p99_us"].get<double>();
  EXPECT_GE(c["latency"]["max_us"].get<double>(), 500'000) << closed.out;
  EXPECT_GT(c["requests"]["completed"].get<int>(), 400) << closed.out;
  EXPECT_LT(closed_p99 * 4, open_p99) << "closed " << closed_p99 << " open " << open_p99;
}

TEST_F(LoadtestCliTest, SloFailureExitsOne) {
  auto server = serve("slo");
  ASSERT_TRUE(server->ready());
  const std::string url = "http://127.0.0.1:" + std::to_string(server->port()) + "/v2/health/ready";
  CommandResult r = run_kiln(
      {"loadtest", url, "--rate", "200", "--duration", "0.5", "--slo", "p50<1us,errors<1%"},
      home_->path());
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.out.find("FAIL  p50<1us"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("ok    errors<1%"), std::string::npos) << r.out;
}

TEST(LoadtestCli, RefusesRemoteTargetsAndBadInput) {
  TempDir home;
  CommandResult remote =
      run_kiln({"loadtest", "http://10.1.2.3:8000/", "--duration", "1"}, home.path());
  EXPECT_EQ(remote.exit_code, 2);
  EXPECT_NE(remote.err.find("--allow-remote"), std::string::npos) << remote.err;

  CommandResult slo = run_kiln({"loadtest", "http://127.0.0.1:9/", "--slo", "p99<5"}, home.path());
  EXPECT_EQ(slo.exit_code, 2);
  EXPECT_NE(slo.err.find("--slo"), std::string::npos) << slo.err;

  CommandResult find_max = run_kiln({"loadtest", "http://127.0.0.1:9/", "--find-max"}, home.path());
  EXPECT_EQ(find_max.exit_code, 2);
  EXPECT_NE(find_max.err.find("--slo"), std::string::npos) << find_max.err;

  CommandResult body = run_kiln(
      {"loadtest", "http://127.0.0.1:9/", "--body", (home / "missing.json").string()}, home.path());
  EXPECT_EQ(body.exit_code, 2);
  EXPECT_NE(body.err.find("missing.json"), std::string::npos) << body.err;

  CommandResult rate = run_kiln({"loadtest", "http://127.0.0.1:9/", "--rate", "0"}, home.path());
  EXPECT_EQ(rate.exit_code, 2);
  EXPECT_NE(rate.err.find("--rate"), std::string::npos) << rate.err;

  CommandResult none = run_kiln({"loadtest"}, home.path());
  EXPECT_EQ(none.exit_code, 2);
}

}  // namespace
}  // namespace kiln
