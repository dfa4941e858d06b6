// `kiln improve` end to end on a small budget: bench/improve_loop.py trains a Fashion-MNIST
// champion on clean images, serves it behind a route with --prediction-log inputs, switches live
// traffic to shifted images with feedback, and runs `kiln improve --watch`; the loop must detect
// the degradation, beat the champion on held-out production rows, canary and promote the
// challenger with no failed request, and live accuracy on the shifted traffic must rise by 5
// points. Then the error paths of the command itself.
#include <gtest/gtest.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "support/test_support.h"

namespace kiln {
namespace {

using testing::run_kiln;
using testing::TempDir;
using Json = nlohmann::json;

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
