#include "kiln/rollout/live_metrics.h"

#include <gtest/gtest.h>

#include <cmath>

#include "kiln/rollout/rollout.h"

namespace kiln::rollout {
namespace {

/// A /metrics body as `kiln serve` writes it, for two served models, with the canary's counters,
/// buckets (le 1 ms, 2 ms, 4 ms, +Inf) and gauges as given: two calls give a start and an end.
std::string planted_metrics(double ok, double server_errors, double timeouts,
                            const std::vector<double>& canary_buckets, double accuracy,
                            double labelled) {
  std::string t =
      "# HELP kiln_inference_requests_total Inference requests.\n"
      "# TYPE kiln_inference_requests_total counter\n"
      "kiln_inference_requests_total{model=\"stable\",version=\"1\",outcome=\"success\"} 5000\n"
      "kiln_inference_requests_total{model=\"stable\",version=\"1\",outcome=\"server_error\"} 9\n";
  t += "kiln_inference_requests_total{model=\"canary\",version=\"1\",outcome=\"success\"} " +
       std::to_string(ok) + "\n";
  t += "kiln_inference_requests_total{model=\"canary\",version=\"1\",outcome=\"client_error\"} 3\n";
  t += "kiln_inference_requests_total{model=\"canary\",version=\"1\",outcome=\"server_error\"} " +
       std::to_string(server_errors) + "\n";
  t += "kiln_inference_requests_total{model=\"canary\",version=\"1\",outcome=\"timeout\"} " +
       std::to_string(timeouts) + "\n";
  const char* les[] = {"0.001", "0.002", "0.004", "+Inf"};
  for (size_t i = 0; i < 4; ++i) {
    t += std::string(
             "kiln_inference_request_duration_seconds_bucket{model=\"canary\",version="
             "\"1\",le=\"") +
         les[i] + "\"} " + std::to_string(canary_buckets[i]) + "\n";
    t += std::string(
             "kiln_inference_request_duration_seconds_bucket{model=\"stable\",version="
             "\"1\",le=\"") +
         les[i] + "\"} 100000\n";
  }
  t += "kiln_live_accuracy{model=\"canary\",version=\"1\"} " + std::to_string(accuracy) + "\n";
  t += "kiln_live_labelled_rows{model=\"canary\",version=\"1\"} " + std::to_string(labelled) + "\n";
  t += "kiln_route_requests_total{route=\"cancer\",target=\"canary\"} 12\n";
  return t;
}

TEST(HistogramQuantileTest, InterpolatesLinearlyLikePrometheus) {
  // 100 observations: 50 <= 1, 40 in (1, 2], 10 in (2, 4].
  const std::map<double, double> b = {{1, 50}, {2, 90}, {4, 100}, {INFINITY, 100}};
  EXPECT_DOUBLE_EQ(histogram_quantile(0.5, b), 1.0);   // rank 50: top of the first bucket
  EXPECT_DOUBLE_EQ(histogram_quantile(0.25, b), 0.5);  // from 0 in the first bucket
  EXPECT_DOUBLE_EQ(histogram_quantile(0.7, b), 1.5);   // rank 70: half-way into (1, 2]
  EXPECT_DOUBLE_EQ(histogram_quantile(0.99, b), 3.8);  // rank 99: 9/10 into (2, 4]
  // In the +Inf bucket: the highest finite bound.
  EXPECT_DOUBLE_EQ(histogram_quantile(0.99, {{1, 50}, {2, 90}, {INFINITY, 100}}), 2.0);
  EXPECT_TRUE(std::isnan(histogram_quantile(0.99, {{1, 0}, {INFINITY, 0}})));
  EXPECT_TRUE(std::isnan(histogram_quantile(0.99, {})));
}

TEST(ModelSnapshotTest, DiffOfTwoScrapesGivesTheStepsErrorRateAndP99) {
  const auto start =
      parse_model_snapshot(planted_metrics(1000, 2, 1, {900, 990, 1000, 1006}, 0.9, 10), "canary");
  // Over the step: 196 successes, 3 server errors, 1 timeout (200 requests); latencies: 100 in
  // the first bucket, 80 in (1, 2] ms, 20 in (2, 4] ms.
  const auto end = parse_model_snapshot(
      planted_metrics(1196, 5, 2, {1000, 1170, 1200, 1206}, 0.95, 40), "canary");
  ASSERT_TRUE(start.ok()) << start.status().message();
  ASSERT_TRUE(end.ok());
  EXPECT_DOUBLE_EQ(end->requests_by_outcome.at("success"), 1196);
  const WindowStats w = diff_window(*start, *end);
  EXPECT_DOUBLE_EQ(w.requests, 200);
  EXPECT_DOUBLE_EQ(w.errors, 4);
  EXPECT_DOUBLE_EQ(w.error_rate, 0.02);
  // Δ cumulative buckets 100, 180, 200, 200: rank 198 lies 18/20 into (2, 4] ms.
  EXPECT_NEAR(w.p99_ms, 3.8, 1e-9);
  EXPECT_DOUBLE_EQ(w.live_accuracy, 0.95);
  EXPECT_DOUBLE_EQ(w.labelled_rows, 40);
}

TEST(ModelSnapshotTest, ReplicasAddUpAndTheirAccuracyIsWeightedByLabelledRows) {
  const auto a =
      parse_model_snapshot(planted_metrics(100, 1, 0, {50, 90, 100, 101}, 0.9, 30), "canary");
  const auto b =
      parse_model_snapshot(planted_metrics(300, 0, 2, {200, 280, 300, 302}, 0.5, 10), "canary");
  ASSERT_TRUE(a.ok() && b.ok());
  const ModelSnapshot sum = sum_snapshots({*a, *b});
  EXPECT_DOUBLE_EQ(sum.requests_by_outcome.at("success"), 400);
  EXPECT_DOUBLE_EQ(sum.requests_by_outcome.at("client_error"), 6);
  EXPECT_DOUBLE_EQ(sum.requests_by_outcome.at("timeout"), 2);
  EXPECT_DOUBLE_EQ(sum.duration_buckets.at(0.002), 370);
  EXPECT_DOUBLE_EQ(sum.labelled_rows, 40);
  EXPECT_DOUBLE_EQ(sum.live_accuracy, (0.9 * 30 + 0.5 * 10) / 40);
  // A replica that exposes no accuracy adds its counters, not its (absent) accuracy.
  ModelSnapshot quiet = *b;
  quiet.live_accuracy = -1;
  quiet.labelled_rows = 0;
  EXPECT_DOUBLE_EQ(sum_snapshots({*a, quiet}).live_accuracy, 0.9);
  EXPECT_DOUBLE_EQ(sum_snapshots({quiet}).live_accuracy, -1);
  EXPECT_TRUE(sum_snapshots({}).requests_by_outcome.empty());
}

TEST(ModelSnapshotTest, P99InsideAFiniteBucket) {
  const auto start = parse_model_snapshot(planted_metrics(0, 0, 0, {0, 0, 0, 0}, 1, 0), "canary");
  const auto end =
      parse_model_snapshot(planted_metrics(100, 0, 0, {50, 90, 100, 100}, 1, 0), "canary");
  // (the start's 3 client errors are in both scrapes: the Δ has 100 requests)
  ASSERT_TRUE(start.ok() && end.ok());
  const WindowStats w = diff_window(*start, *end);
  EXPECT_DOUBLE_EQ(w.requests, 100);
  EXPECT_DOUBLE_EQ(w.error_rate, 0);
  EXPECT_NEAR(w.p99_ms, 3.8, 1e-12);  // rank 99: 9/10 into (2, 4] ms
}

TEST(ModelSnapshotTest, AnUnknownModelIsEmptyAndABadLineIsNamed) {
  const auto none = parse_model_snapshot(planted_metrics(1, 0, 0, {1, 1, 1, 1}, 1, 1), "nosuch");
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->requests_by_outcome.empty());
  EXPECT_EQ(none->live_accuracy, -1);
  const auto bad = parse_model_snapshot("# ok\nkiln_x{model=\"a\" 1\n", "a");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("line 2"), std::string::npos);
}

TEST(CheckWindowTest, EachCheckNamesItsFlagAndNumbers) {
  RolloutOptions o("cancer", "http://127.0.0.1:1", "canary");
  o.max_error_rate(0.01).max_p99_ms(5).min_requests(50);
  WindowStats w;
  w.requests = 200;
  w.errors = 1;
  w.error_rate = 0.005;
  w.p99_ms = 3;
  bool inconclusive = true;
  EXPECT_EQ(check_window(o, w, &inconclusive), "");
  EXPECT_FALSE(inconclusive);
  w.p99_ms = 7;
  EXPECT_EQ(check_window(o, w, &inconclusive), "p99 7.000 ms > --max-p99-ms 5");
  w.errors = 4;
  w.error_rate = 0.02;
  EXPECT_EQ(check_window(o, w, &inconclusive),
            "error rate 0.0200 (4 of 200) > --max-error-rate 0.01");
  w.requests = 10;
  EXPECT_NE(check_window(o, w, &inconclusive).find("--min-requests 50"), std::string::npos);
  EXPECT_TRUE(inconclusive);
  w = WindowStats{200, 0, 0, 1, 0.8, 100};
  o.min_live_accuracy(0.9);
  EXPECT_EQ(check_window(o, w, &inconclusive), "live accuracy 0.8000 < --min-live-accuracy 0.9");
  EXPECT_FALSE(inconclusive);
  w.labelled_rows = 3;
  EXPECT_NE(check_window(o, w, &inconclusive).find("inconclusive"), std::string::npos);
  EXPECT_TRUE(inconclusive);
}

}  // namespace
}  // namespace kiln::rollout
