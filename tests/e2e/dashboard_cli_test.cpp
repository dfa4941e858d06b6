// The monitoring dashboard of a real `kiln serve`, loaded in a real browser (headless Chromium):
// the page is served under the API key rule, renders the server's live numbers (throughput,
// latency, memory, live accuracy, drift share, one row per feature, one bar per class), and shows
// a planted drift.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <regex>
#include <sstream>
#include <thread>

#include "serve_helpers.h"
#include "support/test_support.h"

namespace kiln {
namespace {

using testing::breast_cancer_infer_body;
using testing::breast_cancer_rows;
using testing::BreastCancerRow;
using testing::HttpClient;
using testing::HttpResult;
using testing::read_text;
using testing::ServerProcess;
using testing::TempDir;
using testing::write_text;
using Json = nlohmann::json;
namespace fs = std::filesystem;

/// The DOM headless Chromium renders for `url` after `budget_ms` of (virtual) time, the page's
/// scripts and fetches included, without the script's own text (so a match is rendered markup).
/// Chromium's profile and HOME live in `dir` (hermetic).
std::string rendered_dom(const std::string& url, const fs::path& dir, int budget_ms = 6000) {
  const fs::path dom = dir / "dom.html", log = dir / "chromium.log";
  const std::string command = "env HOME=" + dir.string() +
                              " chromium --headless --no-sandbox --disable-gpu "
                              "--disable-dev-shm-usage --no-first-run --user-data-dir=" +
                              (dir / "profile").string() +
                              " --virtual-time-budget=" + std::to_string(budget_ms) +
                              " --dump-dom '" + url + "' > " + dom.string() + " 2> " + log.string();
  const int rc = std::system(command.c_str());
  EXPECT_EQ(rc, 0) << "chromium failed (scripts/install-deps.sh installs it): " << command << "\n"
                   << read_text(log);
  std::string html = read_text(dom);
  const size_t script = html.find("<script>"), end = html.find("</script>");
  if (script != std::string::npos && end != std::string::npos) html.erase(script, end - script);
  return html;
}

/// The data-value attribute of the element with `id` (the number the page rendered), or NaN.
double rendered_value(const std::string& dom, const std::string& attribute_match) {
  std::smatch m;
  const std::regex re(attribute_match + "[^>]*data-value=\"([^\"]+)\"");
  if (!std::regex_search(dom, m, re)) return std::nan("");
  return std::stod(m[1].str());
}

size_t count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

TEST(DashboardCliTest, HeadlessChromiumRendersLiveNumbersAndAPlantedDrift) {
  TempDir home;
  const auto bundle = testing::train_breast_cancer_bundle(home.path(), home / "bundle-run");
  write_text(home / "key", "dashboard-key\n");
  ServerProcess srv({"--model", bundle.string(), "--monitor-window", "100", "--api-key-file",
                     (home / "key").string()},
                    home.path(), home / "log");
  ASSERT_TRUE(srv.ready()) << srv.log();
  const std::string auth = "Authorization: Bearer dashboard-key";
  HttpClient c(srv.port());

  // The page: under the API key rule (header, or ?key= for a browser), self-contained.
  EXPECT_EQ(c.get("/dashboard").status, 401);
  EXPECT_EQ(c.get("/dashboard?key=wrong").status, 401);
  EXPECT_EQ(c.get("/v2/monitor").status, 401);
  HttpResult page = c.get("/dashboard", {auth});
  ASSERT_EQ(page.status, 200);
  EXPECT_NE(page.body.find("<title>Kiln serve"), std::string::npos);
  EXPECT_EQ(page.body.find("src=\"http"), std::string::npos) << "no CDN: every byte is served";
  EXPECT_EQ(page.body.find("href=\"http"), std::string::npos);
  EXPECT_EQ(c.get("/dashboard?key=dashboard-key").status, 200);
  EXPECT_EQ(c.post("/dashboard", "{}", {auth}).status, 405);

  // A clean stream with ground truth for most of it.
  const std::vector<BreastCancerRow> rows = breast_cancer_rows();
  Json feedback = Json::array();
  for (size_t i = 0; i < 150; ++i) {
    const std::string id = "clean-" + std::to_string(i);
    ASSERT_EQ(c.post("/v2/models/bundle/infer", breast_cancer_infer_body(rows[i].features, 1.0, id),
                     {auth})
                  .status,
              200);
    if (i < 120) feedback.push_back({{"id", id}, {"truth", rows[i].diagnosis}});
  }
  ASSERT_EQ(c.post("/v2/models/bundle/feedback", feedback.dump(), {auth}).status, 200);
  const Json monitor = Json::parse(c.get("/v2/models/bundle/monitor", {auth}).body);
  const double live_accuracy = monitor["live"]["accuracy"].get<double>();
  ASSERT_GT(live_accuracy, 0.8);
  const double live_calibration = monitor["live"]["calibration_error"].get<double>();
  const double test_calibration = monitor["live"]["reference_calibration_error"].get<double>();

  // Traffic keeps flowing while the browser watches, so the rates are live.
  std::atomic<bool> stop{false};
  // In a shuffled order: the CSV's rows come in runs (by diagnosis, by source), so a drift window
  // of 100 consecutive rows could differ from the training rows for real, depending on where the
  // load thread happens to be when the page renders.
  std::vector<size_t> order(rows.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::shuffle(order.begin(), order.end(), std::mt19937(7));
  std::thread load([&] {
    HttpClient lc(srv.port());
    for (size_t k = 0; !stop.load(); k = (k + 1) % order.size())
      lc.post("/v2/models/bundle/infer", breast_cancer_infer_body(rows[order[k]].features, 1.0),
              {auth});
  });
  const std::string url =
      "http://127.0.0.1:" + std::to_string(srv.port()) + "/dashboard?key=dashboard-key";
  const std::string clean = rendered_dom(url, home.path());
  stop = true;
  load.join();
  write_text(home / "clean.html", clean);
  ASSERT_FALSE(clean.empty());

  std::smatch updates;
  ASSERT_TRUE(std::regex_search(clean, updates, std::regex("data-updates=\"([0-9]+)\"")))
      << clean.substr(0, 2000);
  EXPECT_GE(std::stoi(updates[1].str()), 2) << "the page refreshed itself";
  EXPECT_EQ(clean.find("class=\"error\""), std::string::npos) << clean.substr(0, 2000);
  EXPECT_GT(rendered_value(clean, "id=\"throughput\""), 0.0);
  EXPECT_GE(rendered_value(clean, "id=\"requests-total\""), 150.0);
  EXPECT_GT(rendered_value(clean, "id=\"latency-p50\""), 0.0);
  EXPECT_GE(rendered_value(clean, "id=\"latency-p99\""),
            rendered_value(clean, "id=\"latency-p50\""));
  EXPECT_EQ(rendered_value(clean, "id=\"error-rate\""), 0.0);
  EXPECT_GT(rendered_value(clean, "id=\"rss\""), 10.0);  // MiB
  EXPECT_GE(rendered_value(clean, "id=\"batch-size\""), 1.0);
  // The model's section: live accuracy as the server computed it (no feedback came since), drift
  // share low, every feature in the drift table, both classes in the live-vs-reference bars.
  EXPECT_NE(clean.find("data-model=\"bundle\""), std::string::npos);
  EXPECT_NEAR(rendered_value(clean, "class=\"live-accuracy\""), live_accuracy, 1e-9);
  EXPECT_NEAR(rendered_value(clean, "class=\"live-calibration\""), live_calibration, 1e-9);
  EXPECT_NEAR(rendered_value(clean, "class=\"reference-calibration\""), test_calibration, 1e-9);
  EXPECT_LT(rendered_value(clean, "class=\"drift-share\""), 0.5);
  EXPECT_NE(clean.find("no drift"), std::string::npos);
  EXPECT_EQ(count(clean, "<tr data-feature="), 30u);
  EXPECT_NE(clean.find("data-feature=\"mean_radius\""), std::string::npos);
  EXPECT_EQ(count(clean, "class=\"row class-bar\""), 2u);
  EXPECT_NE(clean.find("data-class=\"malignant\""), std::string::npos);
  EXPECT_GE(count(clean, "<rect "), 30u) << "the PSI-over-time heatmap: a row a feature";

  // A planted shift fills the window: the page shows the drift (the full render budget: with 3 s
  // a loaded CI machine once rendered the page before its first refresh).
  for (size_t i = 250; i < 360; ++i)
    ASSERT_EQ(
        c.post("/v2/models/bundle/infer", breast_cancer_infer_body(rows[i].features, 1.5), {auth})
            .status,
        200);
  const std::string shifted = rendered_dom(url, home.path());
  write_text(home / "shifted.html", shifted);
  EXPECT_NE(shifted.find("drift detected"), std::string::npos);
  EXPECT_GT(rendered_value(shifted, "class=\"drift-share\""), 0.5);
  EXPECT_NE(shifted.find("<tr data-feature=\"mean_radius\" class=\"drifted\""), std::string::npos);
  // The key never reaches the access log or stays in the page's address.
  EXPECT_EQ(srv.log().find("dashboard-key"), std::string::npos);
}

// A regressor's section: live MAE beside the bundle's test MAE (not percentages), and its
// history line as live MAE over test MAE, so it shares the drift share's 0-1 axis.
TEST(DashboardCliTest, ARegressorShowsLiveAndTestMae) {
  TempDir home;
  testing::CommandResult trained = testing::run_kiln(
      {"train", "--data", (testing::shared_datasets_dir() / "diabetes.csv").string(), "--target",
       "disease_progression", "--out", (home / "run").string()},
      home.path(), {"KILN_THREADS=1"});
  ASSERT_EQ(trained.exit_code, 0) << trained.err;
  ServerProcess srv({"--model", "reg=" + (home / "run" / "bundle").string()}, home.path(),
                    home / "log");
  ASSERT_TRUE(srv.ready()) << srv.log();
  HttpClient c(srv.port());
  const std::vector<std::string> lines = [&] {
    std::vector<std::string> out;
    std::istringstream in(read_text(testing::shared_datasets_dir() / "diabetes.csv"));
    for (std::string l; std::getline(in, l);) out.push_back(l);
    return out;
  }();
  Json feedback = Json::array();
  for (size_t i = 1; i <= 60; ++i) {  // age,sex,bmi,bp,s1..s6,disease_progression
    std::vector<double> v;
    std::istringstream cells(lines[i]);
    for (std::string cell; std::getline(cells, cell, ',');) v.push_back(std::stod(cell));
    const double truth = v.back();
    v.pop_back();
    const Json body = {
        {"id", "r" + std::to_string(i)},
        {"inputs", {{{"name", "input"}, {"shape", {1, 10}}, {"datatype", "FP32"}, {"data", v}}}}};
    ASSERT_EQ(c.post("/v2/models/reg/infer", body.dump()).status, 200);
    feedback.push_back({{"id", "r" + std::to_string(i)}, {"truth", truth}});
  }
  ASSERT_EQ(c.post("/v2/models/reg/feedback", feedback.dump()).status, 200);
  const Json live = Json::parse(c.get("/v2/models/reg/monitor").body)["live"];
  ASSERT_TRUE(live.contains("mae") && live.contains("reference_mae")) << live.dump();
  const std::string dom = rendered_dom(
      "http://127.0.0.1:" + std::to_string(srv.port()) + "/dashboard", home.path(), 3000);
  write_text(home / "dom.html", dom);
  EXPECT_NE(dom.find("live MAE: <b"), std::string::npos) << dom.substr(0, 3000);
  EXPECT_NE(dom.find("test MAE (bundle): <b"), std::string::npos);
  EXPECT_EQ(dom.find("test accuracy (bundle)"), std::string::npos);
  EXPECT_EQ(dom.find("calibration error"), std::string::npos);  // a classifier's figure
  EXPECT_NEAR(rendered_value(dom, "class=\"live-accuracy\""), live["mae"].get<double>(), 1e-9);
  EXPECT_NEAR(rendered_value(dom, "class=\"reference-accuracy\""),
              live["reference_mae"].get<double>(), 1e-9);
  EXPECT_NE(dom.find("live MAE ÷ test MAE"), std::string::npos);
  // The chart's title names what it plots: no "live accuracy" anywhere on a regressor's page.
  EXPECT_NE(dom.find("Drift share and <span class=\"live-title\">live MAE ÷ test MAE</span>"),
            std::string::npos);
  EXPECT_EQ(dom.find("live accuracy"), std::string::npos);
}

}  // namespace
}  // namespace kiln
