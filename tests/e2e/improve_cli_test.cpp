// `kiln improve` end to end on a small budget: bench/improve_loop.py trains a Fashion-MNIST
// champion on clean images, serves it behind a route with --prediction-log inputs, switches live
// traffic to shifted images with feedback, and runs `kiln improve --watch`; the loop must detect
// the degradation, beat the champion on held-out production rows, canary and promote the
// challenger with no failed request, and live accuracy on the shifted traffic must rise by 5
// points. A breast-cancer table model goes through a whole cycle too (its production rows join
// the table snapshot through the champion's fitted transforms). Then the error paths of the
// command itself.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <thread>

#include "serve_helpers.h"
#include "support/test_support.h"

namespace kiln {
namespace {

using testing::CommandResult;
using testing::HttpClient;
using testing::run_kiln;
using testing::ServerProcess;
using testing::TempDir;
using Json = nlohmann::json;
namespace fs = std::filesystem;

TEST(ImproveCliTest, TheLoopPromotesABetterChallengerOnShiftedTraffic) {
  TempDir dir;
  const std::string report = (dir / "report.json").string();
  const std::string cmd = "/usr/bin/python3 " +
                          (testing::source_dir() / "bench" / "improve_loop.py").string() +
                          " --kiln " + testing::kiln_binary().string() +
                          " --budget small --check --min-gain 0.02 --json " + report + " > " +
                          (dir / "out.txt").string() + " 2> " + (dir / "err.txt").string();
  const int rc = std::system(cmd.c_str());
  const std::string err = testing::read_text(dir / "err.txt");
  ASSERT_EQ(rc, 0) << err.substr(err.size() > 4000 ? err.size() - 4000 : 0);
  const Json r = Json::parse(testing::read_text(dir / "report.json"));
  const Json& d = r["decision"];
  EXPECT_EQ(d["decision"], "promoted") << d.dump(1);
  EXPECT_EQ(r["failed_requests"], 0);
  // The bench (--budget full) holds the 5 points; here 600 rows a side leave ~2.6 points of
  // noise on a gain of 8-10, so the test asks for 2 (and McNemar already gated the promotion).
  EXPECT_GE(r["accuracy"]["gain_points"].get<double>(), 2.0) << r["accuracy"].dump();
  // The cycle's record: what fired, the comparison on held-out rows, the versions.
  ASSERT_FALSE(d["triggers"].empty());
  EXPECT_LT(d["holdout"]["p_value"].get<double>(), 0.05);
  EXPECT_GT(d["holdout"]["challenger_accuracy"].get<double>(),
            d["holdout"]["champion_accuracy"].get<double>());
  EXPECT_GE(d["holdout"]["rows"].get<int>(), 50);
  EXPECT_EQ(d["champion"]["version"], 1);
  EXPECT_EQ(d["challenger"]["version"], 2);
  for (const char* phase :
       {"collect_s", "snapshot_s", "train_s", "compare_s", "push_s", "rollout_s", "promote_s"})
    EXPECT_TRUE(d["phases"].contains(phase)) << phase;
  // History: the same decision, recorded once.
  ASSERT_EQ(r["history"].size(), 1u) << r["history"].dump(1);
  EXPECT_EQ(r["history"][0]["decision"], "promoted");
}

// A table model: every breast-cancer row served by id through the route, with its diagnosis as
// feedback; `kiln improve --force` builds a table snapshot from the base train split and the
// production rows (raw columns kept, transformed by the champion's fitted transforms), trains a
// challenger, and compares the two on the held-out production rows.
TEST(ImproveCliTest, ATableModelGoesThroughACycle) {
  TempDir home;
  CommandResult trained =
      run_kiln({"train", "--data", (testing::shared_datasets_dir() / "breast_cancer.csv").string(),
                "--target", "diagnosis", "--out", (home / "run").string()},
               home.path(), {"KILN_THREADS=1"});
  ASSERT_EQ(trained.exit_code, 0) << trained.err;
  ASSERT_EQ(run_kiln({"registry", "push", (home / "run" / "bundle").string(), "--name", "bc"},
                     home.path())
                .exit_code,
            0);
  for (const char* alias : {"production", "candidate"})
    ASSERT_EQ(run_kiln({"registry", "alias", "set", "bc", alias, "1"}, home.path()).exit_code, 0);
  ServerProcess srv({"--model", "stable=bc@production", "--model", "canary=bc@candidate", "--route",
                     "bc=stable:100,canary:0", "--prediction-log", "inputs", "--poll-interval-ms",
                     "200", "--threads", "1"},
                    home.path(), home / "serve.log");
  ASSERT_TRUE(srv.ready()) << srv.log();
  HttpClient c(srv.port());
  const std::vector<testing::BreastCancerRow> rows = testing::breast_cancer_rows();
  Json feedback = Json::array();
  for (size_t i = 0; i < rows.size(); ++i) {
    const std::string id = "row-" + std::to_string(i);
    ASSERT_EQ(
        c.post("/v2/models/bc/infer", testing::breast_cancer_infer_body(rows[i].features, 1.0, id))
            .status,
        200);
    feedback.push_back({{"id", id}, {"truth", rows[i].diagnosis}});
  }
  ASSERT_EQ(c.post("/v2/models/bc/feedback", feedback.dump()).status, 200);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // the log's writer flushes

  CommandResult r =
      run_kiln({"improve", "bc", "--server", "http://127.0.0.1:" + std::to_string(srv.port()),
                "--route", "bc", "--champion-target", "stable", "--candidate-target", "canary",
                "--force", "--steps", "100", "--interval", "1s", "--min-requests", "1", "--json"},
               home.path());
  ASSERT_EQ(r.exit_code == 0 || r.exit_code == 1, true) << r.out << r.err;
  const Json d = Json::parse(r.out);
  // Rejected (the usual outcome: the champion is already at ~96%), or better and then canaried.
  EXPECT_TRUE(d["decision"] == "rejected" || d["decision"] == "rolled_back" ||
              d["decision"] == "promoted")
      << d.dump(1);
  if (d["decision"] == "rejected")
    EXPECT_NE(d["why"].get<std::string>().find("held-out rows"), std::string::npos) << d["why"];
  const int64_t held = d["holdout"]["rows"].get<int64_t>();
  EXPECT_GT(held, 100);
  EXPECT_LT(held, 250);  // ~30% of 569
  EXPECT_GT(d["holdout"]["champion_accuracy"].get<double>(), 0.85) << d.dump(1);
  EXPECT_GT(d["holdout"]["challenger_accuracy"].get<double>(), 0.85) << d.dump(1);
  // The snapshot: the base train rows plus the production training rows, raw columns beside
  // the transformed ones; the held-out production rows as its test split.
  const fs::path dir = d["snapshot"]["dir"].get<std::string>();
  const Json m = Json::parse(testing::read_text(dir / "manifest.json"));
  EXPECT_EQ(m["kind"], "table");
  const int64_t repeat = d["snapshot"]["production_repeat"].get<int64_t>();
  const int64_t production_train = static_cast<int64_t>(rows.size()) - held;
  EXPECT_EQ(m["splits"]["train"]["rows"], 456 + repeat * production_train);
  EXPECT_EQ(m["splits"]["test"]["rows"], held);
  ASSERT_TRUE(m["files"].contains("train_raw_x.npy")) << m["files"].dump();
  // The last training row is a production row: its raw columns (float32, row-major, after the
  // .npy header) are a CSV row's, as served.
  const std::string npy = testing::read_text(dir / "train_raw_x.npy");
  ASSERT_GT(npy.size(), 10u);
  const size_t header =
      10 + static_cast<unsigned char>(npy[8]) + 256 * static_cast<unsigned char>(npy[9]);
  const size_t width = 30;
  ASSERT_EQ((npy.size() - header) % (4 * width), 0u);
  EXPECT_EQ((npy.size() - header) / (4 * width), m["splits"]["train"]["rows"].get<size_t>());
  std::vector<float> last(width);
  std::memcpy(last.data(), npy.data() + npy.size() - 4 * width, 4 * width);
  bool found = false;
  for (const auto& row : rows) {
    bool same = true;
    for (size_t k = 0; k < width && same; ++k)
      same = std::abs(static_cast<float>(row.features[k]) - last[k]) <=
             1e-6f * std::max(1.0f, std::abs(last[k]));
    found = found || same;
  }
  EXPECT_TRUE(found);
}

TEST(ImproveCliTest, BadInputAndMissingLogsAreClearErrors) {
  TempDir home;
  auto r = run_kiln({"improve", "fmnist", "--route", "fmnist"}, home.path());
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--server is required"), std::string::npos) << r.err;
  r = run_kiln({"improve", "fmnist", "--server", "http://127.0.0.1:1", "--route", "r",
                "--champion-target", "a", "--candidate-target", "b", "--trigger", "sometimes"},
               home.path());
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--trigger: 'sometimes'"), std::string::npos) << r.err;
  r = run_kiln({"improve", "fmnist", "--server", "http://127.0.0.1:1", "--route", "r",
                "--champion-target", "a", "--candidate-target", "b", "--force"},
               home.path());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--prediction-log inputs"), std::string::npos) << r.err;
  r = run_kiln({"improve", "history", "fmnist"}, home.path());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("no improvement decisions"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace kiln
