// Live monitoring in a real `kiln serve`: drift of a clean and a shifted stream against the
// bundle's reference profile, feedback joined to predictions by id, live accuracy, input quality
// counts, and the metrics on /metrics (checked by promtool).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <nlohmann/json.hpp>

#include "serve_helpers.h"
#include "support/test_support.h"

namespace kiln {
namespace {

using testing::HttpClient;
using testing::HttpResult;
using testing::read_text;
using testing::ServerProcess;
using testing::TempDir;
using testing::write_text;
using Json = nlohmann::json;

using Row = testing::BreastCancerRow;
using testing::breast_cancer_infer_body;
using testing::breast_cancer_rows;

TEST(ServeMonitorCliTest, DriftFeedbackLiveAccuracyAndQualityOnARealServer) {
  TempDir home;
  const auto bundle = testing::train_breast_cancer_bundle(home.path(), home / "bundle-run");
  ServerProcess srv({"--model", bundle.string(), "--monitor-window", "200"}, home.path(),
                    home / "log");
  ASSERT_TRUE(srv.ready()) << srv.log();
  HttpClient c(srv.port());
  const std::vector<Row> rows = breast_cancer_rows();
  ASSERT_EQ(rows.size(), 569u);

  // A clean stream: every response carries an id; ground truth for them comes back later, out of
  // order, one of them twice.
  std::vector<std::pair<std::string, std::string>> answered;
  std::vector<double> confidence;  // each answer's top-1 probability
  std::vector<bool> right;
  for (size_t i = 0; i < 250; ++i) {
    Json body = Json::parse(breast_cancer_infer_body(rows[i].features, 1.0));
    body["outputs"] = {{{"name", "probabilities"}}, {{"name", "labels"}}};
    HttpResult r = c.post("/v2/models/bundle/infer", body.dump());
    ASSERT_EQ(r.status, 200) << r.body;
    const Json answer = Json::parse(r.body);
    answered.push_back({answer["id"].get<std::string>(), rows[i].diagnosis});
    for (const Json& o : answer["outputs"]) {
      if (o["name"] == "probabilities")
        confidence.push_back(std::max(o["data"][0].get<double>(), o["data"][1].get<double>()));
      if (o["name"] == "labels") right.push_back(o["data"][0] == rows[i].diagnosis);
    }
  }
  ASSERT_EQ(confidence.size(), 250u);
  ASSERT_EQ(right.size(), 250u);
  EXPECT_NE(answered[0].first, answered[1].first);
  Json feedback = Json::array();
  for (size_t i = answered.size(); i-- > 0;)
    feedback.push_back({{"id", answered[i].first}, {"truth", answered[i].second}});
  HttpResult r = c.post("/v2/models/bundle/feedback", feedback.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Json::parse(r.body)["joined"], 250);
  r = c.post("/v2/models/bundle/feedback",
             Json{{"id", answered[3].first}, {"truth", answered[3].second}}.dump());
  EXPECT_EQ(Json::parse(r.body)["duplicate"], 1);
  r = c.post("/v2/models/bundle/feedback", Json{{"id", "nosuch"}, {"truth", "benign"}}.dump());
  EXPECT_EQ(Json::parse(r.body)["unknown"], 1);
  r = c.post("/v2/models/bundle/feedback",
             Json{{"id", answered[4].first}, {"truth", "purple"}}.dump());
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(c.post("/v2/models/bundle/feedback", "{not json").status, 400);

  r = c.get("/v2/models/bundle/monitor");
  ASSERT_EQ(r.status, 200) << r.body;
  Json m = Json::parse(r.body);
  EXPECT_EQ(m["rows_total"], 250);
  EXPECT_TRUE(m["drift"]["available"].get<bool>());
  EXPECT_EQ(m["drift"]["rows"], 200);  // the window
  EXPECT_FALSE(m["drift"]["dataset_drift"].get<bool>()) << m["drift"].dump();
  EXPECT_LT(m["drift"]["drift_share"].get<double>(), 0.5);
  EXPECT_EQ(m["live"]["labelled_rows"], 200);  // the last `window` labelled rows
  EXPECT_EQ(m["live"]["labelled_total"], 250);
  EXPECT_GT(m["live"]["accuracy"].get<double>(), 0.9);
  EXPECT_GT(m["live"]["reference_accuracy"].get<double>(), 0.9);
  // The calibration error of the window's answers (feedback came last-first: rows 0..199),
  // worked out here from the probabilities the responses gave (15 bins of (0, 1]).
  {
    std::vector<double> gap(15, 0.0);
    for (size_t i = 0; i < 200; ++i)
      gap[static_cast<size_t>(std::clamp(std::ceil(confidence[i] * 15) - 1, 0.0, 14.0))] +=
          (right[i] ? 1.0 : 0.0) - confidence[i];
    double want = 0;
    for (double g : gap) want += std::abs(g);
    want /= 200;
    EXPECT_NEAR(m["live"]["calibration_error"].get<double>(), want, 1e-5) << m["live"].dump();
  }
  EXPECT_GE(m["live"]["reference_calibration_error"].get<double>(), 0.0);

  // A shifted stream (20 features x1.5): the window fills with it and drift is flagged.
  for (size_t i = 250; i < 450; ++i)
    ASSERT_EQ(
        c.post("/v2/models/bundle/infer", breast_cancer_infer_body(rows[i].features, 1.5)).status,
        200);
  m = Json::parse(c.get("/v2/models/bundle/monitor").body);
  EXPECT_TRUE(m["drift"]["dataset_drift"].get<bool>()) << m["drift"].dump();
  EXPECT_GT(m["drift"]["drift_share"].get<double>(), 0.5);
  EXPECT_GT(m["quality"]["out_of_range"].get<int>(), 100);

  // A refused Infinity is counted as a quality issue.
  std::string header =
      R"({"inputs":[{"name":"input","shape":[1,30],"datatype":"FP32","parameters":{"binary_data_size":120}}]})";
  std::string raw = header;
  for (int j = 0; j < 30; ++j) {
    float f = j == 0 ? std::numeric_limits<float>::infinity() : 1.0f;
    raw.append(reinterpret_cast<const char*>(&f), 4);
  }
  EXPECT_EQ(c.post("/v2/models/bundle/infer", raw,
                   {"Content-Type: application/octet-stream",
                    "Inference-Header-Content-Length: " + std::to_string(header.size())})
                .status,
            400);

  r = c.get("/metrics");
  ASSERT_EQ(r.status, 200);
  for (const char* line :
       {"kiln_drift_share{model=\"bundle\",version=\"1\"}", "kiln_feature_psi{model=\"bundle\"",
        "kiln_live_accuracy{model=\"bundle\",version=\"1\"}",
        "kiln_live_labelled_rows{model=\"bundle\",version=\"1\"} 200",
        "kiln_reference_accuracy{model=\"bundle\",version=\"1\"}",
        "kiln_live_calibration_error{model=\"bundle\",version=\"1\"}",
        "kiln_reference_calibration_error{model=\"bundle\",version=\"1\"}",
        "kiln_input_quality_issues_total{model=\"bundle\",version=\"1\",kind=\"non_finite\"} 1",
        "kiln_input_quality_issues_total{model=\"bundle\",version=\"1\",kind=\"out_of_range\"}",
        "kiln_feedback_total{model=\"bundle\",version=\"1\"} 250"})
    EXPECT_NE(r.body.find(line), std::string::npos) << line;
  if (std::system("promtool --version >/dev/null 2>&1") == 0) {
    write_text(home / "metrics.txt", r.body);
    EXPECT_EQ(std::system(("promtool check metrics < " + (home / "metrics.txt").string()).c_str()),
              0);
  }
}

TEST(ServeMonitorCliTest, MonitoringOffAnswers404AndServingIsUnchanged) {
  TempDir home;
  const auto bundle = testing::train_breast_cancer_bundle(home.path(), home / "bundle-run");
  ServerProcess srv({"--model", bundle.string(), "--monitor-window", "0"}, home.path(),
                    home / "log");
  ASSERT_TRUE(srv.ready()) << srv.log();
  HttpClient c(srv.port());
  const std::vector<Row> rows = breast_cancer_rows();
  HttpResult r = c.post("/v2/models/bundle/infer", breast_cancer_infer_body(rows[0].features, 1.0));
  ASSERT_EQ(r.status, 200);
  EXPECT_TRUE(Json::parse(r.body).contains("id"));
  EXPECT_EQ(c.get("/v2/models/bundle/monitor").status, 404);
  EXPECT_EQ(c.post("/v2/models/bundle/feedback", "{}").status, 404);
}

}  // namespace
}  // namespace kiln
