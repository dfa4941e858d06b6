#include "kiln/data/profile.h"

#include <gtest/gtest.h>

#include "kiln/core/csv.h"
#include "kiln/data/spec.h"
#include "support/test_support.h"

namespace kiln::data {
namespace {

using kiln::testing::shared_datasets_dir;
using kiln::testing::source_dir;

Json profile_csv(const std::string& file, const std::string& target) {
  auto spec = resolve_dataset((shared_datasets_dir() / file).string(), target);
  EXPECT_TRUE(spec.ok()) << spec.status();
  auto report = profile_dataset(*spec);
  EXPECT_TRUE(report.ok()) << report.status();
  return *report;
}

// Every planted fault of the dirty twin, found exactly (counts checked independently against
// a diff with the clean file).
TEST(ProfileTest, DirtyBreastCancerFaultsAreFoundExactly) {
  Json r = profile_csv("breast_cancer_dirty.csv", "diagnosis");
  const Json& issues = r["issues"];
  EXPECT_EQ(issues["missing_cells"], 18);     // empty and NA cells
  EXPECT_EQ(issues["non_numeric_cells"], 3);  // "n/a?" in mean_radius, lines 223, 393, 435
  EXPECT_EQ(issues["duplicate_rows"], 7);     // the 7 rows appended at the end
  EXPECT_EQ(issues["duplicate_lines"], Json({572, 573, 574, 575, 576, 577, 578}));
  EXPECT_EQ(issues["ragged_lines"], Json({226}));
  ASSERT_EQ(issues["outliers"].size(), 2u) << issues["outliers"].dump();
  EXPECT_EQ(issues["outliers"][0]["line"], 31);
  EXPECT_EQ(issues["outliers"][0]["column"], "mean_texture");
  EXPECT_EQ(issues["outliers"][1]["line"], 543);
  EXPECT_EQ(issues["outliers"][1]["column"], "mean_texture");
  EXPECT_EQ(r["splits"]["all"]["rows"], 576);  // 577 records less the ragged one
  EXPECT_EQ(r["verdict"]["status"], "needs_cleaning");
}

TEST(ProfileTest, CleanBreastCancerHasNoIssues) {
  Json r = profile_csv("breast_cancer.csv", "diagnosis");
  EXPECT_EQ(r["task"], "classification");
  EXPECT_EQ(r["splits"]["all"]["rows"], 569);
  EXPECT_EQ(r["splits"]["all"]["class_counts"]["benign"], 357);
  EXPECT_EQ(r["splits"]["all"]["class_counts"]["malignant"], 212);
  EXPECT_NEAR(r["splits"]["all"]["imbalance_ratio"].get<double>(), 357.0 / 212.0, 1e-12);
  EXPECT_EQ(r["issues"]["missing_cells"], 0);
  EXPECT_EQ(r["issues"]["duplicate_rows"], 0);
  EXPECT_TRUE(r["issues"]["outliers"].empty());
  EXPECT_EQ(r["verdict"]["status"], "clean");
  ASSERT_EQ(r["features"].size(), 30u);
  const Json& radius = r["features"][0];
  EXPECT_EQ(radius["name"], "mean_radius");
  EXPECT_NEAR(radius["min"].get<double>(), 6.981, 1e-9);
  EXPECT_NEAR(radius["max"].get<double>(), 28.11, 1e-9);
  EXPECT_NEAR(radius["mean"].get<double>(), 14.127291739894552, 1e-9);
  // Strongly correlated pairs (numpy.corrcoef: 15 pairs at |r| >= 0.95, the strongest
  // mean_radius ~ mean_perimeter at 0.9978552814938105); information, not an issue.
  const Json& pairs = r["correlated_pairs"];
  ASSERT_EQ(pairs.size(), 15u) << pairs.dump();
  EXPECT_EQ(pairs[0]["columns"], Json({"mean_radius", "mean_perimeter"}));
  EXPECT_NEAR(pairs[0]["r"].get<double>(), 0.9978552814938105, 1e-12);
  EXPECT_NE(render_profile(r).find("correlated pairs (|r| >= 0.95"), std::string::npos);
}

TEST(ProfileTest, LowerThresholdFindsMoreOutliers) {
  auto spec = resolve_dataset((shared_datasets_dir() / "breast_cancer.csv").string(), "diagnosis");
  auto report = profile_dataset(*spec, ProfileOptions().outlier_z(5));
  ASSERT_TRUE(report.ok());
  EXPECT_GT((*report)["issues"]["outliers"].size(), 0u);
}

TEST(ProfileTest, DiabetesIsRegression) {
  Json r = profile_csv("diabetes.csv", "disease_progression");
  EXPECT_EQ(r["task"], "regression");
  EXPECT_EQ(r["splits"]["all"]["rows"], 442);
  EXPECT_TRUE(r["splits"]["all"]["class_counts"].empty());
  EXPECT_TRUE(r["splits"]["all"].contains("target_stats"));
  std::string text = render_profile(r);
  EXPECT_NE(text.find("verdict"), std::string::npos);
}

TEST(ProfileTest, ColumnsNamedInCategoriesColumnsAreCategorical) {
  auto spec =
      resolve_dataset((shared_datasets_dir() / "diabetes.csv").string(), "disease_progression");
  ASSERT_TRUE(spec.ok());
  spec->categorical_columns = {"sex"};
  auto report = profile_dataset(*spec);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ((*report)["features"][1]["name"], "sex");
  EXPECT_EQ((*report)["features"][1]["type"], "categorical");
  EXPECT_EQ((*report)["features"][1]["unique"], 2);
  EXPECT_EQ((*report)["features"][0]["type"], "numeric");
  spec->categorical_columns = {"gender"};
  auto bad = profile_dataset(*spec);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("categories.columns names 'gender', which is not a column"),
            std::string::npos)
      << bad.status();
}

// A text column with a distinct value in every row (a patient id) is named as identifier-like,
// and the verdict says to drop it; once drop_columns lists it, it is no longer an issue.
TEST(ProfileTest, AnIdentifierLikeTextColumnIsNamed) {
  kiln::testing::TempDir dir;
  auto table = read_csv(shared_datasets_dir() / "breast_cancer.csv");
  ASSERT_TRUE(table.ok());
  std::string csv = "patient,site";
  for (const auto& h : table->header) csv += "," + h;
  csv += "\n";
  for (size_t r = 0; r < table->rows.size(); ++r) {
    csv += "p" + std::to_string(1000 + r) + "," + (r % 3 ? "north" : "south");
    for (const auto& cell : table->rows[r]) csv += "," + cell;
    csv += "\n";
  }
  kiln::testing::write_text(dir / "ids.csv", csv);
  auto spec = resolve_dataset((dir / "ids.csv").string(), "diagnosis");
  ASSERT_TRUE(spec.ok());
  auto report = profile_dataset(*spec);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ((*report)["issues"]["identifier_columns"], Json({"patient"}));
  EXPECT_EQ((*report)["verdict"]["status"], "needs_cleaning");
  EXPECT_NE((*report)["verdict"]["reasons"].dump().find("drop_columns"), std::string::npos);
  EXPECT_NE(render_profile(*report).find("identifier columns:  1  [\"patient\"]"),
            std::string::npos);
  spec->drop_columns = {"patient"};
  report = profile_dataset(*spec);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_TRUE((*report)["issues"]["identifier_columns"].empty());
  EXPECT_EQ((*report)["verdict"]["status"], "clean");
}

TEST(ProfileTest, MissingTargetColumnNamesFileAndColumns) {
  auto spec = resolve_dataset((shared_datasets_dir() / "diabetes.csv").string(), "nope");
  ASSERT_TRUE(spec.ok());
  auto report = profile_dataset(*spec);
  ASSERT_FALSE(report.ok());
  EXPECT_EQ(report.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(report.status().message().find("diabetes.csv"), std::string::npos);
  EXPECT_NE(report.status().message().find("'nope'"), std::string::npos);
  EXPECT_NE(report.status().message().find("bmi"), std::string::npos);
}

TEST(ProfileTest, FashionMnistSubset) {
  auto spec = load_dataset_spec(source_dir() / "examples/fashion-mnist/dataset.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  auto report = profile_dataset(*spec, ProfileOptions().limit(2000));
  ASSERT_TRUE(report.ok()) << report.status();
  const Json& s = (*report)["splits"];
  EXPECT_EQ(s["train"]["rows"], 2000);
  EXPECT_EQ(s["test"]["rows"], 2000);
  EXPECT_EQ(s["train"]["shape"], Json({2000, 1, 28, 28}));
  EXPECT_EQ(s["train"]["class_counts"].size(), 10u);
  EXPECT_TRUE(s["train"]["class_counts"].contains("Ankle boot"));
  EXPECT_GT(s["train"]["pixel_mean"].get<double>(), 50);
  EXPECT_LT(s["train"]["pixel_mean"].get<double>(), 100);
}

}  // namespace
}  // namespace kiln::data
