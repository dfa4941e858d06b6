// `kiln monitor drift` and `kiln monitor rules` through the real binary: a bundle trained here
// records its reference profile; a clean CSV shows no drift, a shifted one does.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "support/test_support.h"

namespace kiln {
namespace {

using testing::CommandResult;
using testing::read_text;
using testing::run_kiln;
using testing::TempDir;
using testing::write_text;
using Json = nlohmann::json;
namespace fs = std::filesystem;

/// breast_cancer.csv with every value of the first `columns` feature columns multiplied by
/// `factor` (a planted covariate shift), CRLF line ends kept as they are.
std::string scaled_csv(int columns, double factor) {
  std::istringstream in(read_text(testing::shared_datasets_dir() / "breast_cancer.csv"));
  std::string line, out;
  std::getline(in, line);
  out += line + "\n";
  while (std::getline(in, line)) {
    std::istringstream cells(line);
    std::string cell, row;
    for (int i = 0; std::getline(cells, cell, ','); ++i) {
      if (i < columns) cell = std::to_string(std::stod(cell) * factor);
      row += (i ? "," : "") + cell;
    }
    out += row + "\n";
  }
  return out;
}

TEST(MonitorCliTest, DriftOnACsvCleanAndShifted) {
  TempDir home;
  const fs::path bundle = testing::train_breast_cancer_bundle(home.path(), home / "run");
  ASSERT_TRUE(fs::exists(bundle / "reference_profile.json"));
  Json manifest = Json::parse(read_text(bundle / "manifest.json"));
  EXPECT_TRUE(manifest["files"].contains("reference_profile.json"));
  // The penultimate layer of the mlp (hidden [100]: linear, relu, linear) is the relu's output.
  const Json profile = Json::parse(read_text(bundle / "reference_profile.json"));
  const Json& embedding = profile["embedding"];
  EXPECT_EQ(embedding["layer_type"], "relu") << embedding.dump().substr(0, 300);
  EXPECT_EQ(embedding["units"], 100);
  EXPECT_GT(embedding["rows"].get<int>(), 50);
  ASSERT_EQ(embedding["q50"].size(), 100u);
  for (size_t u = 0; u < 100; ++u) {
    EXPECT_GE(embedding["q05"][u].get<double>(), 0.0) << "a relu's output";
    EXPECT_LE(embedding["q05"][u].get<double>(), embedding["q50"][u].get<double>());
    EXPECT_LE(embedding["q50"][u].get<double>(), embedding["q95"][u].get<double>());
  }
  EXPECT_GT(embedding["norm"]["mean"].get<double>(), 0.0);
  EXPECT_EQ(profile["features"][0]["name"], "mean_radius");

  const std::string clean = (testing::shared_datasets_dir() / "breast_cancer.csv").string();
  CommandResult r =
      run_kiln({"monitor", "drift", bundle.string(), "--data", clean, "--json", "--fail-on-drift"},
               home.path());
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  Json report = Json::parse(r.out);
  EXPECT_EQ(report["rows"], 569);
  EXPECT_EQ(report["features"].size(), 30u);
  EXPECT_FALSE(report["dataset_drift"].get<bool>());
  EXPECT_LT(report["drift_share"].get<double>(), 0.1);

  write_text(home / "shifted.csv", scaled_csv(20, 1.5));
  r = run_kiln(
      {"monitor", "drift", bundle.string(), "--data", (home / "shifted.csv").string(), "--report",
       (home / "drift.json").string(), "--html", (home / "drift.html").string(), "--fail-on-drift"},
      home.path());
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.out.find("DATASET DRIFT"), std::string::npos) << r.out;
  report = Json::parse(read_text(home / "drift.json"));
  EXPECT_TRUE(report["dataset_drift"].get<bool>());
  int drifted = 0, out_of_range = 0;
  for (const auto& f : report["features"]) {
    drifted += f["drifted"].get<bool>();
    out_of_range += f["out_of_range"].get<int>();
  }
  EXPECT_GE(drifted, 15);
  EXPECT_GT(out_of_range, 0);
  EXPECT_GT(report["prediction_psi"].get<double>(), 0.1);  // the shifted rows look malignant
  const std::string html = read_text(home / "drift.html");
  EXPECT_NE(html.find("<svg"), std::string::npos);
  EXPECT_NE(html.find("mean_radius"), std::string::npos);

  // A bundle without a profile (an older Kiln's): a clear error, not a crash.
  fs::copy(bundle, home / "old", fs::copy_options::recursive);
  manifest["files"].erase("reference_profile.json");
  fs::remove(home / "old" / "reference_profile.json");
  testing::write_sealed_manifest(home / "old", manifest);
  r = run_kiln({"monitor", "drift", (home / "old").string(), "--data", clean}, home.path());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("no reference profile"), std::string::npos) << r.err;
}

TEST(MonitorCliTest, NewVerbsHaveHelpAndDriftRefusesBadInput) {
  TempDir home;
  for (std::vector<std::string> verb : {std::vector<std::string>{"test"},
                                        {"monitor", "drift"},
                                        {"monitor", "rules"},
                                        {"loadtest"}}) {
    verb.push_back("--help");
    CommandResult r = run_kiln(verb, home.path());
    EXPECT_EQ(r.exit_code, 0) << verb[0] << r.err;
    EXPECT_NE(r.out.find("Usage"), std::string::npos) << verb[0] << r.out;
  }
  CommandResult r = run_kiln({"monitor", "drift", (home / "nosuch").string(), "--data",
                              (testing::shared_datasets_dir() / "breast_cancer.csv").string()},
                             home.path());
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("nosuch"), std::string::npos) << r.err;
  r = run_kiln({"monitor", "drift", (home / "nosuch").string()}, home.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--data is required"), std::string::npos) << r.err;
}

TEST(MonitorCliTest, RulesPassPromtoolCheckAndTheirTests) {
  if (std::system("promtool --version >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "promtool is not installed (apt-get install prometheus)";
  TempDir t;
  CommandResult r =
      run_kiln({"monitor", "rules", "--slo-p99-ms", "20", "--out", (t / "alerts.yml").string(),
                "--tests", (t / "tests" / "alerts_test.yml").string()},
               t.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(read_text(t / "alerts.yml").find("KilnDataDrift"), std::string::npos);
  EXPECT_EQ(
      std::system(("promtool check rules " + (t / "alerts.yml").string() + " >/dev/null").c_str()),
      0);
  EXPECT_EQ(std::system(("promtool test rules " + (t / "tests" / "alerts_test.yml").string() +
                         " >/dev/null")
                            .c_str()),
            0);
  r = run_kiln({"monitor", "rules", "--error-rate", "2"}, t.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("error_rate"), std::string::npos) << r.err;
  // The calibration alert: on by default, its margin from the flag; out of range refused.
  EXPECT_NE(read_text(t / "alerts.yml").find("KilnCalibrationDrift"), std::string::npos);
  r = run_kiln(
      {"monitor", "rules", "--calibration-margin", "0.9", "--out", (t / "refused.yml").string()},
      t.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("calibration_margin 0.9 must be in [0, 0.5]"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(t / "refused.yml"));
}

}  // namespace
}  // namespace kiln
