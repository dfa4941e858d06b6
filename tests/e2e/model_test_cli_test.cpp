// `kiln test`: suites run by the real binary against real bundles, a real `kiln serve` for the
// serve-skew check, a real registry for baselines and --push.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "support/test_support.h"

namespace kiln {
namespace {

using testing::CommandResult;
using testing::example;
using testing::read_text;
using testing::run_kiln;
using testing::TempDir;
using testing::write_text;
using Json = nlohmann::json;
namespace fs = std::filesystem;

/// The checks of a --json report, by name.
std::map<std::string, Json> checks_by_name(const Json& report) {
  std::map<std::string, Json> out;
  for (const auto& c : report["checks"]) out[c["name"].get<std::string>()] = c;
  return out;
}

/// A copy of `bundle` whose class names are permuted (the model now answers the wrong class for
/// every row), resealed so that it still reads as a valid bundle.
fs::path permuted_labels_copy(const fs::path& bundle, const fs::path& out) {
  fs::copy(bundle, out, fs::copy_options::recursive);
  Json m = Json::parse(read_text(out / "manifest.json"));
  std::vector<std::string> labels = m["labels"];
  std::rotate(labels.begin(), labels.begin() + 1, labels.end());
  m["labels"] = labels;
  testing::write_sealed_manifest(out, m);
  return out;
}

class ModelTestCliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    home_ = new TempDir();
    bundle_ = testing::train_breast_cancer_bundle(home_->path(), home_->path() / "a");
    CommandResult r = run_kiln({"train", example("breast-cancer/train.yaml"), "--set", "seed=7",
                                "--out", (home_->path() / "b").string(), "--json"},
                               home_->path());
    ASSERT_EQ(r.exit_code, 0) << r.err;
    other_ = home_->path() / "b" / "bundle";
  }
  static void TearDownTestSuite() { delete home_; }
  static TempDir* home_;
  static fs::path bundle_, other_;
};
TempDir* ModelTestCliTest::home_ = nullptr;
fs::path ModelTestCliTest::bundle_, ModelTestCliTest::other_;

TEST_F(ModelTestCliTest, GoodBundlePassesItsDefaultSuiteWithServeSkewAndJunit) {
  TempDir t;
  CommandResult r = run_kiln({"test", bundle_.string(), "--junit", (t / "junit.xml").string(),
                              "--report", (t / "report.json").string()},
                             home_->path());
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("PASSED"), std::string::npos) << r.out;
  Json report = Json::parse(read_text(t / "report.json"));
  EXPECT_TRUE(report["passed"].get<bool>());
  std::map<std::string, Json> checks = checks_by_name(report);
  for (const char* name : {"smoke", "trivial_baseline", "recorded_metrics", "boundary",
                           "invariance/jitter", "serve", "latency"})
    ASSERT_EQ(checks.count(name), 1u) << name << report.dump(2);
  // The serve check went through a real server and got the offline module's answers.
  EXPECT_EQ(checks["serve"]["result"], "pass");
  EXPECT_GT(checks["serve"]["details"]["port"].get<int>(), 0);
  EXPECT_GT(checks["serve"]["details"]["rows"].get<int>(), 50);
  EXPECT_LE(checks["serve"]["details"]["max_abs_diff"].get<double>(), 1e-4);
  EXPECT_EQ(checks["serve"]["details"]["same_class"], 1.0);
  // Non-finite inputs: Inf refused, NaN imputed (this table pipeline has an imputer).
  EXPECT_NE(checks["boundary"]["details"]["inf_refused"].get<std::string>().find("Infinity"),
            std::string::npos);
  EXPECT_EQ(checks["boundary"]["details"]["nan_imputed_finite"], true);
  EXPECT_LT(checks["trivial_baseline"]["details"]["p_value"].get<double>(), 1e-6);
  // JUnit XML that a CI system reads: one testcase per check, no failures.
  const std::string cmd =
      "/usr/bin/python3 -c \"import sys, xml.etree.ElementTree as ET; s = "
      "ET.parse(sys.argv[1]).getroot().find('testsuite'); "
      "assert s.get('failures') == '0' and len(s.findall('testcase')) == int(sys.argv[2])\" " +
      (t / "junit.xml").string() + " " + std::to_string(report["checks"].size());
  EXPECT_EQ(std::system(cmd.c_str()), 0) << read_text(t / "junit.xml");
}

TEST_F(ModelTestCliTest, TheShippedExampleSuitePasses) {
  CommandResult r = run_kiln(
      {"test", bundle_.string(), "--suite", example("breast-cancer/suite.yaml"), "--json"},
      home_->path());
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  Json report = Json::parse(r.out);
  EXPECT_EQ(report["suite"], "breast-cancer-release");
  EXPECT_EQ(report["counts"]["pass"].get<int>(), static_cast<int>(report["checks"].size()));
}

TEST_F(ModelTestCliTest, PermutedLabelsFailWithTheFailingChecksNamed) {
  TempDir t;
  const fs::path broken = permuted_labels_copy(bundle_, t / "broken");
  CommandResult r = run_kiln({"test", broken.string(), "--json"}, home_->path());
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  Json report = Json::parse(r.out);
  EXPECT_FALSE(report["passed"].get<bool>());
  std::map<std::string, Json> checks = checks_by_name(report);
  EXPECT_EQ(checks["trivial_baseline"]["result"], "fail");
  EXPECT_EQ(checks["recorded_metrics"]["result"], "fail");
  EXPECT_NE(checks["recorded_metrics"]["message"].get<std::string>().find("far below"),
            std::string::npos);
  // The software still works: smoke and the serving path pass; the model is what is wrong.
  EXPECT_EQ(checks["smoke"]["result"], "pass");
  EXPECT_EQ(checks["serve"]["result"], "pass");
  // The terminal table names the failures.
  r = run_kiln({"test", broken.string(), "--quiet"}, home_->path());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("fail: trivial_baseline:"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("FAILED"), std::string::npos) << r.out;
}

TEST_F(ModelTestCliTest, SuiteWithSlicesEnsembleChampionChallengerAndPush) {
  TempDir t;
  ASSERT_EQ(
      run_kiln({"registry", "push", bundle_.string(), "--name", "cancer"}, home_->path()).exit_code,
      0);
  ASSERT_EQ(
      run_kiln({"registry", "alias", "set", "cancer", "production", "1"}, home_->path()).exit_code,
      0);
  const fs::path broken = permuted_labels_copy(bundle_, t / "broken");
  write_text(t / "suite.yaml",
             "name: cancer-release\n"
             "checks:\n"
             "  - {kind: model, metric: accuracy, threshold: 0.9}\n"
             "  - {kind: model, metric: recall, class: malignant, threshold: 0.8}\n"
             "  - {kind: model, metric: ece, threshold: 0.2}\n"
             "  - {kind: model, name: near-certain, metric: nll, threshold: 0.000001}\n"
             "  - {kind: model, metric: accuracy, per_class: true, threshold: 0.8}\n"
             "  - {kind: model, metric: accuracy, slice: {column: mean_radius, min: 15}, "
             "threshold: 0.8}\n"
             "  - {kind: model, name: not-worse-than-prod, metric: accuracy, "
             "min_absolute_change: 0.5, baseline: cancer@production}\n"
             "  - {kind: ensemble, members: [" +
                 bundle_.string() +
                 "]}\n"
                 "  - {kind: compare, name: vs-production, baseline: cancer@production}\n"
                 "  - {kind: compare, name: vs-broken, baseline: " +
                 broken.string() +
                 ", expect: better}\n"
                 "  - {kind: compare, name: f1-vs-broken, baseline: " +
                 broken.string() +
                 ", metric: macro_f1, expect: better}\n"
                 "  - {kind: directional, feature: mean_radius, expect: increasing, output: "
                 "malignant, min_pass: 0.7}\n"
                 "  - {kind: boundary, noise: [{sigma: 0.05, min_accuracy: 0.8}], few_per_class: "
                 "{samples: 5, min_accuracy: 0.6}}\n"
                 "  - {kind: latency, batch_sizes: [1, 16], p99_ms: 1000}\n");
  CommandResult r = run_kiln(
      {"test", other_.string(), "--suite", (t / "suite.yaml").string(), "--json"}, home_->path());
  ASSERT_EQ(r.exit_code, 1) << r.out << r.err;  // the +0.5 accuracy demand cannot be met
  Json report = Json::parse(r.out);
  std::map<std::string, Json> checks = checks_by_name(report);
  EXPECT_EQ(report["suite"], "cancer-release");
  for (const char* name : {"model/accuracy", "model/recall/malignant", "model/accuracy#2",
                           "model/accuracy#3", "ensemble", "vs-broken", "f1-vs-broken",
                           "directional/mean_radius", "boundary", "latency", "smoke"})
    EXPECT_EQ(checks[name]["result"], "pass") << name << " " << checks[name].dump(2);
  // The probabilities' quality: lower is better, so a calibration error of at most 0.2 passes
  // and a log loss of at most 1e-6 (certainty on every row) does not.
  EXPECT_EQ(checks["model/ece"]["result"], "pass") << checks["model/ece"].dump(2);
  EXPECT_EQ(checks["model/ece"]["threshold"], "<= 0.2");
  EXPECT_EQ(checks["near-certain"]["result"], "fail") << checks["near-certain"].dump(2);
  EXPECT_EQ(checks["not-worse-than-prod"]["result"], "fail");
  EXPECT_NE(checks["not-worse-than-prod"]["message"].get<std::string>().find("does not beat"),
            std::string::npos);
  // Two seeds of one recipe: McNemar finds no significant difference.
  const Json& prod = checks["vs-production"];
  EXPECT_TRUE(prod["result"] == "inconclusive" || prod["result"] == "pass") << prod.dump(2);
  EXPECT_GE(prod["details"]["p_value"].get<double>(), 0.0);
  // Against the broken copy: significantly better, with the discordant counts behind it.
  const Json& vs_broken = checks["vs-broken"]["details"];
  EXPECT_EQ(vs_broken["verdict"], "better");
  EXPECT_LT(vs_broken["p_value"].get<double>(), 1e-6);
  EXPECT_GT(vs_broken["c_candidate_only_right"].get<int>(),
            vs_broken["b_baseline_only_right"].get<int>());
  EXPECT_EQ(checks["f1-vs-broken"]["details"]["test"], "paired_bootstrap");
  EXPECT_GT(checks["ensemble"]["details"]["members"].size(), 1u);

  // --push records the outcome on the registry version; `registry show` says so.
  write_text(t / "passing.yaml",
             "name: cancer-gate\nchecks:\n  - {kind: model, metric: accuracy, threshold: 0.9}\n");
  r = run_kiln({"test", "cancer@1", "--suite", (t / "passing.yaml").string(), "--push", "--quiet"},
               home_->path());
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  r = run_kiln({"registry", "show", "cancer@1", "--json"}, home_->path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Json shown = Json::parse(r.out);
  EXPECT_EQ(shown["tags"]["test.result"], "passed") << shown["tags"].dump();
  EXPECT_EQ(shown["tags"]["test.suite"].get<std::string>().rfind("cancer-gate@", 0), 0u);
  // --push needs a registry version.
  r = run_kiln({"test", bundle_.string(), "--push"}, home_->path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--push"), std::string::npos) << r.err;
}

TEST_F(ModelTestCliTest, BadInputExitsTwoNamingFileAndLine) {
  TempDir t;
  write_text(t / "suite.yaml", "checks:\n  - {kind: smoke}\n  - {kind: vibes}\n");
  CommandResult r =
      run_kiln({"test", bundle_.string(), "--suite", (t / "suite.yaml").string()}, home_->path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("suite.yaml:3: unknown check kind 'vibes'"), std::string::npos) << r.err;
  // A baseline that does not resolve: the check errors (exit 2), the others still run.
  write_text(t / "suite.yaml", "checks:\n  - {kind: compare, baseline: nosuch@production}\n");
  r = run_kiln({"test", bundle_.string(), "--suite", (t / "suite.yaml").string(), "--json"},
               home_->path());
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  Json report = Json::parse(r.out);
  EXPECT_EQ(checks_by_name(report)["compare/nosuch@production"]["result"], "error");
  EXPECT_EQ(checks_by_name(report)["smoke"]["result"], "pass");
  // No rows: a bundle whose training snapshot is gone, and no --data.
  TempDir empty_home;
  r = run_kiln({"test", bundle_.string()}, empty_home.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--data"), std::string::npos) << r.err;
  // --data given as the CSV the bundle was trained from works in any home.
  r = run_kiln({"test", bundle_.string(), "--data",
                (testing::shared_datasets_dir() / "breast_cancer.csv").string(), "--quiet"},
               empty_home.path());
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
}

}  // namespace
}  // namespace kiln
