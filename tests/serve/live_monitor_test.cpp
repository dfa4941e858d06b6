#include "kiln/serve/live_monitor.h"

#include <gtest/gtest.h>

#include <cmath>

namespace kiln::serve {
namespace {

/// A table reference: "dose" numeric 0..99, "plan" categorical 1 (70 %) / 2 (30 %); classes a, b.
std::shared_ptr<const monitor::ReferenceProfile> table_reference() {
  auto p = std::make_shared<monitor::ReferenceProfile>();
  p->schema = monitor::feature_schema({2}, {"dose", "plan"});
  std::vector<double> dose, plan;
  for (int i = 0; i < 1000; ++i) {
    dose.push_back(i % 100);
    plan.push_back(i % 10 < 7 ? 1.0 : 2.0);
  }
  p->rows = 1000;
  p->features = {monitor::numeric_reference("dose", dose, 1000, 0, monitor::kMaxCategories),
                 monitor::numeric_reference("plan", plan, 1000, 0, monitor::kMaxCategories)};
  p->labels = {"a", "b"};
  p->class_prior = {0.5, 0.5};
  p->predicted_shares = {0.5, 0.5};
  p->confidence = monitor::numeric_reference("confidence", {0.9, 0.8, 0.7, 0.95});
  return p;
}

LiveMonitorOptions fast_options() {
  LiveMonitorOptions o;
  o.window = 50;
  o.recompute_interval = std::chrono::milliseconds(0);
  o.history_interval = std::chrono::milliseconds(0);
  o.history_points = 3;
  o.max_rows_per_second = 0;
  return o;
}

void send(LiveMonitor& m, const std::string& id, double dose, double plan, int64_t predicted) {
  m.record(id, {dose, plan}, {}, {predicted}, {0.9}, {});
}

TEST(LiveMonitorTest, CategoricalCodesHistoryAndLiveAccuracy) {
  const auto ref = table_reference();
  ASSERT_FALSE(ref->features[0].categorical());
  ASSERT_TRUE(ref->features[1].categorical());
  LiveMonitor m("m", "1", ref, {"a", "b"}, 0.9, LiveMonitorMetrics{}, fast_options());
  for (int i = 0; i < 50; ++i)
    send(m, "r" + std::to_string(i), i * 2 % 100, i % 10 < 7 ? 1 : 2, i % 2);
  Json r = m.report();
  EXPECT_FALSE(r["drift"]["dataset_drift"].get<bool>()) << r["drift"].dump();
  EXPECT_EQ(r["drift"]["features"][1]["test"], "chi_square");
  EXPECT_EQ(r["quality"]["out_of_vocabulary"], 0);
  // Codes training never saw, and doses beyond its range: counted apart.
  for (int i = 0; i < 50; ++i) send(m, "s" + std::to_string(i), 500, 5, 0);
  r = m.report();
  EXPECT_EQ(r["quality"]["out_of_vocabulary"], 50);
  EXPECT_EQ(r["quality"]["out_of_range"], 50);
  EXPECT_TRUE(r["drift"]["dataset_drift"].get<bool>());
  EXPECT_EQ(r["drift"]["features"][1]["out_of_vocabulary"], 50);

  // The history keeps the newest history_points points, with every feature's PSI per point.
  const Json& h = r["history"];
  ASSERT_EQ(h["t"].size(), 3u);
  EXPECT_EQ(h["features"], Json::array({"dose", "plan"}));
  ASSERT_EQ(h["feature_psi"].size(), 2u);
  EXPECT_EQ(h["feature_psi"][1].size(), 3u);
  EXPECT_DOUBLE_EQ(h["drift_share"][2].get<double>(), 1.0);
  EXPECT_EQ(h["rows_total"][2], 100);
  EXPECT_TRUE(h["live"][2].is_null()) << "no feedback yet";

  // Feedback: r0..r9 predicted i % 2; truth "a" for all: 5 of 10 right.
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(m.feedback("r" + std::to_string(i), "a").ok());
  EXPECT_EQ(*m.feedback("r0", "a"), "duplicate");
  EXPECT_FALSE(m.feedback("nosuch", "a").ok());
  EXPECT_FALSE(m.feedback("r11", "c").ok());
  send(m, "t", 10, 1, 0);  // a recompute appends a history point with the live accuracy
  r = m.report();
  EXPECT_DOUBLE_EQ(r["live"]["accuracy"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(r["history"]["live"][2].get<double>(), 0.5);
}

TEST(LiveMonitorTest, WithoutAProfileDriftIsUnavailableAndFeedbackStillWorks) {
  LiveMonitor m("m", "1", nullptr, {"a", "b"}, -1, LiveMonitorMetrics{}, fast_options());
  m.record("x", {}, {}, {1}, {0.8}, {});
  ASSERT_TRUE(m.feedback("x", "b").ok());
  const Json r = m.report();
  EXPECT_FALSE(r["drift"]["available"].get<bool>());
  EXPECT_DOUBLE_EQ(r["live"]["accuracy"].get<double>(), 1.0);
  EXPECT_TRUE(r["history"]["t"].empty());
}

TEST(LiveMonitorTest, CalibrationErrorOfTheLabelledWindowBesideTheBundles) {
  // Window 50: 60 rows predicted "a", the first 10 (forgotten by the window) at confidence 0.55
  // and right, then 40 at 0.9 of which 36 are right (bin (0.8667, 0.9333]: |0.9 − 0.9| = 0) and
  // 10 at 0.6 of which 9 are right (bin (0.5333, 0.6]: |0.9 − 0.6| = 0.3): ECE = 10/50·0.3.
  LiveMonitor m("m", "1", nullptr, {"a", "b"}, 0.9, LiveMonitorMetrics{}, fast_options(),
                /*reference_calibration_error=*/0.04);
  for (int i = 0; i < 60; ++i) {
    const std::string id = "r" + std::to_string(i);
    m.record(id, {}, {}, {0}, {i < 10 ? 0.55 : (i < 50 ? 0.9 : 0.6)}, {});
    const bool right = i < 10 || (i < 50 ? (i - 10) % 10 != 0 : i != 50);
    ASSERT_TRUE(m.feedback(id, right ? "a" : "b").ok());
  }
  const Json live = m.report()["live"];
  EXPECT_EQ(live["labelled_rows"], 50);
  EXPECT_NEAR(live["calibration_error"].get<double>(), 0.06, 1e-12) << live.dump();
  EXPECT_DOUBLE_EQ(live["reference_calibration_error"].get<double>(), 0.04);

  // A regressor has no calibration error, whatever it is given.
  LiveMonitor reg("r", "1", nullptr, {}, 2.0, LiveMonitorMetrics{}, fast_options(), 0.04);
  reg.record("x", {}, {}, {}, {}, {3.5});
  ASSERT_TRUE(reg.feedback("x", 3.0).ok());
  const Json reg_live = reg.report()["live"];
  EXPECT_FALSE(reg_live.contains("calibration_error")) << reg_live.dump();
  EXPECT_FALSE(reg_live.contains("reference_calibration_error"));
  EXPECT_DOUBLE_EQ(reg_live["mae"].get<double>(), 0.5);
}

}  // namespace
}  // namespace kiln::serve
