#include "kiln/monitor/drift.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <numeric>
#include <random>
#include <sstream>

#include "support/test_support.h"

namespace kiln::monitor {
namespace {

/// The numeric columns of a CSV in ../shared/datasets (all but `target`), by name, in file order.
std::vector<std::pair<std::string, std::vector<double>>> read_columns(const std::string& file,
                                                                      const std::string& target) {
  std::ifstream in(testing::shared_datasets_dir() / file);
  std::string line;
  auto read_line = [&](std::string& l) {
    if (!std::getline(in, l)) return false;
    if (!l.empty() && l.back() == '\r') l.pop_back();  // the files have CRLF line ends
    return true;
  };
  read_line(line);
  std::vector<std::string> header;
  std::stringstream hs(line);
  for (std::string cell; std::getline(hs, cell, ',');) header.push_back(cell);
  std::vector<std::pair<std::string, std::vector<double>>> columns;
  for (const auto& h : header) columns.push_back({h, {}});
  while (read_line(line)) {
    std::stringstream ls(line);
    size_t i = 0;
    for (std::string cell; std::getline(ls, cell, ','); ++i)
      if (header[i] != target) columns[i].second.push_back(std::stod(cell));
  }
  columns.erase(std::remove_if(columns.begin(), columns.end(),
                               [&](const auto& c) { return c.first == target; }),
                columns.end());
  return columns;
}

/// Profiles the first `reference_rows` rows of `file` as the trainer profiles a table (integer
/// columns with few codes categorical), compares the rest (column `shifted` × `factor`) with
/// it, and checks every feature's test, PSI, statistic and p-value against
/// tests/monitor/drift_reference.py (numpy/scipy). Returns the report.
DriftReport check_against_python(const std::string& file, const std::string& target,
                                 const std::string& shifted, double factor) {
  const int kReferenceRows = 300;
  auto columns = read_columns(file, target);
  const size_t f = columns.size();
  ReferenceProfile ref;
  std::vector<std::string> names;
  for (const auto& c : columns) names.push_back(c.first);
  ref.schema = feature_schema({static_cast<int64_t>(f)}, names);
  const size_t rows = columns[0].second.size();
  const size_t current_rows = rows - kReferenceRows;
  std::vector<double> current(current_rows * f);
  for (size_t k = 0; k < f; ++k) {
    const auto& values = columns[k].second;
    ref.features.push_back(numeric_reference(
        columns[k].first, std::vector<double>(values.begin(), values.begin() + kReferenceRows),
        1000, 0, kMaxCategories));
    for (size_t r = 0; r < current_rows; ++r)
      current[r * f + k] =
          values[kReferenceRows + r] * (columns[k].first == shifted ? factor : 1.0);
  }
  DriftReport report = compare_to_reference(ref, current, {}, {}, {}, {});
  EXPECT_EQ(report.features.size(), f);

  const std::string cmd =
      "/usr/bin/python3 " + (testing::source_dir() / "tests/monitor/drift_reference.py").string() +
      " " + (testing::shared_datasets_dir() / file).string() + " " +
      std::to_string(kReferenceRows) + " " + shifted + " " + std::to_string(factor) + " " + target;
  std::FILE* p = ::popen(cmd.c_str(), "r");
  EXPECT_NE(p, nullptr);
  if (!p) return report;
  std::string text;
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof buf, p)) text.append(buf, n);
  EXPECT_EQ(::pclose(p), 0) << cmd << " (/usr/bin/python3 with numpy and scipy is needed)";
  if (text.empty()) return report;
  Json python = Json::parse(text);
  for (const auto& d : report.features) {
    const Json& want = python[d.name];
    EXPECT_EQ(d.test, want["test"].get<std::string>()) << d.name;
    EXPECT_NEAR(d.psi, want["psi"].get<double>(), 1e-6) << d.name;
    EXPECT_NEAR(d.statistic, want["statistic"].get<double>(), 1e-9) << d.name;
    EXPECT_NEAR(d.p_value, want["p_value"].get<double>(), 1e-6) << d.name;
    if (d.test == "ks") {
      EXPECT_NEAR(d.statistic, want["scipy_ks_statistic"].get<double>(), 1e-12) << d.name;
    }
  }
  return report;
}

const FeatureDrift& feature(const DriftReport& report, const std::string& name) {
  return *std::find_if(report.features.begin(), report.features.end(),
                       [&](const FeatureDrift& d) { return d.name == name; });
}

TEST(DriftTest, PsiAndKsMatchAnIndependentPythonComputation) {
  const DriftReport report =
      check_against_python("breast_cancer.csv", "diagnosis", "mean_radius", 1.3);
  ASSERT_EQ(report.features.size(), 30u);
  // The planted shift is found (the file is not shuffled, so other columns drift too: the later
  // rows hold a different mix of diagnoses).
  EXPECT_TRUE(feature(report, "mean_radius").drifted);
  EXPECT_GT(feature(report, "mean_radius").psi, 0.25);
}

TEST(DriftTest, ChiSquareForACategoricalColumnMatchesScipy) {
  // diabetes.csv's sex (codes 1 and 2) is categorical: χ², as scipy.stats.chisquare.
  const DriftReport report =
      check_against_python("diabetes.csv", "disease_progression", "bmi", 1.2);
  ASSERT_EQ(report.features.size(), 10u);
  EXPECT_EQ(feature(report, "sex").test, "chi_square");
  EXPECT_FALSE(feature(report, "sex").drifted);
  EXPECT_TRUE(feature(report, "bmi").drifted);
}

// Windows drawn from the reference itself must not drift more often than alpha says, however
// many rare categories a column has: 1,000 Zipf-distributed categories in 1,000-row windows
// (unpooled χ² false-alarms in ~19% of them), and a real shift is still found.
TEST(DriftTest, ChiSquareKeepsItsFalseAlarmRateWithManyRareCategories) {
  const int k = 1000, n = 1000, windows = 300;
  std::vector<double> shares(k);
  for (int i = 0; i < k; ++i) shares[static_cast<size_t>(i)] = 1.0 / std::pow(i + 1, 1.1);
  const double total = std::accumulate(shares.begin(), shares.end(), 0.0);
  for (double& s : shares) s /= total;
  std::mt19937_64 rng(7);
  std::discrete_distribution<int> draw(shares.begin(), shares.end());
  int alarms = 0;
  ChiSquareResult last;
  for (int w = 0; w < windows; ++w) {
    std::vector<double> counts(k, 0.0);
    for (int r = 0; r < n; ++r) ++counts[static_cast<size_t>(draw(rng))];
    last = chi_square_test(shares, counts);
    alarms += last.p_value <= 0.05;
  }
  EXPECT_GT(last.pooled_categories, 900);
  EXPECT_LE(alarms, windows / 10) << alarms << " of " << windows;  // ~5% expected
  EXPECT_GE(alarms, 3);
  // The two commonest categories swap: found.
  std::vector<double> shifted = shares;
  std::swap(shifted[0], shifted[1]);
  std::discrete_distribution<int> draw_shifted(shifted.begin(), shifted.end());
  std::vector<double> counts(k, 0.0);
  for (int r = 0; r < n; ++r) ++counts[static_cast<size_t>(draw_shifted(rng))];
  EXPECT_LT(chi_square_test(shares, counts).p_value, 0.01);
  // Every category expected often enough: the plain statistic (scipy.stats.chisquare([60, 40],
  // [50, 50]) = 4.0, p = 0.0455).
  const ChiSquareResult plain = chi_square_test({0.5, 0.5}, {60, 40});
  EXPECT_EQ(plain.pooled_categories, 0);
  EXPECT_NEAR(plain.statistic, 4.0, 1e-12);
  EXPECT_NEAR(plain.p_value, 0.04550026389635842, 1e-9);
}

TEST(DriftTest, CategoricalDriftAndUnseenCodes) {
  // 70/30 in training; 30/70 live drifts, a code never seen is counted and weighs in the PSI.
  std::vector<double> train(700, 1.0);
  train.resize(1000, 2.0);
  ReferenceProfile ref;
  ref.schema = feature_schema({1}, {"plan"});
  ref.features = {numeric_reference("plan", train, 1000, 0, kMaxCategories)};
  ASSERT_TRUE(ref.features[0].categorical());
  EXPECT_EQ(ref.features[0].categories, (std::vector<double>{1.0, 2.0}));
  std::vector<double> live(30, 1.0);
  live.resize(100, 2.0);
  DriftReport r = compare_to_reference(ref, live, {}, {}, {}, {});
  EXPECT_TRUE(r.features[0].drifted);
  EXPECT_LT(r.features[0].p_value, 1e-6);
  std::vector<double> same(70, 1.0);
  same.resize(97, 2.0);
  same.resize(100, 7.0);  // 3 rows of an unseen code
  r = compare_to_reference(ref, same, {}, {}, {}, {});
  EXPECT_FALSE(r.features[0].drifted);
  EXPECT_EQ(r.features[0].out_of_vocabulary, 3);
  EXPECT_GT(r.features[0].psi, 0.05);
  // χ² survival on known points: P(χ²(1) ≥ 3.841459) = 0.05, P(χ²(4) ≥ 9.487729) = 0.05.
  EXPECT_NEAR(chi_square_survival(3.841458820694124, 1), 0.05, 1e-9);
  EXPECT_NEAR(chi_square_survival(9.487729036781154, 4), 0.05, 1e-9);
  EXPECT_NEAR(chi_square_survival(0.5, 3), 0.9188914116, 1e-9);
  // Few codes but not integers, or too many codes: numeric.
  EXPECT_FALSE(numeric_reference("x", {0.5, 1.5, 0.5, 1.5}, 1000, 0, kMaxCategories).categorical());
  std::vector<double> many;
  for (int i = 0; i < 50; ++i) many.push_back(i % 20);
  EXPECT_FALSE(numeric_reference("x", many, 1000, 0, kMaxCategories).categorical());
  EXPECT_FALSE(numeric_reference("x", {1, 2, 1, 2}).categorical()) << "off by default";
}

TEST(DriftTest, ImageFeaturesSeeBrightnessAndTranslation) {
  FeatureSchema schema = feature_schema({1, 8, 8}, {});
  ASSERT_EQ(schema.kind, "image");
  ASSERT_EQ(schema.names.size(), 18u);  // mean, std, 16 cells
  // A bright square in the top-left corner of each image.
  std::vector<float> img(64, 0.0f), moved(64, 0.0f);
  for (int y = 0; y < 2; ++y)
    for (int x = 0; x < 2; ++x) {
      img[y * 8 + x] = 200.0f;
      moved[(y + 4) * 8 + (x + 4)] = 200.0f;  // translated by 4 pixels each way
    }
  std::vector<double> a, b, counts;
  extract_features(schema, img.data(), 1, &a, &counts);
  extract_features(schema, moved.data(), 1, &b, nullptr);
  ASSERT_EQ(a.size(), 18u);
  EXPECT_DOUBLE_EQ(a[0], 4 * 200.0 / 64);  // mean unchanged by a translation...
  EXPECT_DOUBLE_EQ(a[0], b[0]);
  EXPECT_DOUBLE_EQ(a[2], 200.0);  // ...but cell (0, 0) empties and cell (2, 2) fills
  EXPECT_DOUBLE_EQ(b[2], 0.0);
  EXPECT_DOUBLE_EQ(b[2 + 2 * 4 + 2], 200.0);
  EXPECT_DOUBLE_EQ(counts[0], 60.0);  // intensity bin of 0
  EXPECT_DOUBLE_EQ(counts[25], 4.0);  // 200 * 32 / 256 = 25
}

TEST(DriftTest, StatisticsOnKnownCases) {
  EXPECT_DOUBLE_EQ(population_stability_index({0.5, 0.5}, {0.5, 0.5}), 0.0);
  EXPECT_NEAR(population_stability_index({0.5, 0.5}, {0.9, 0.1}),
              0.4 * std::log(0.9 / 0.5) - 0.4 * std::log(0.1 / 0.5), 1e-12);
  // An empty current bin takes 1e-4, not an infinite PSI.
  EXPECT_TRUE(std::isfinite(population_stability_index({0.5, 0.5}, {1.0, 0.0})));
  EXPECT_EQ(bin_shares({1.0, 2.0}, {0.5, 1.0, 1.5, 2.0, 3.0, NAN}),
            (std::vector<double>{0.2, 0.4, 0.4}));
  EXPECT_DOUBLE_EQ(ks_two_sample({1, 2, 3}, {1, 2, 3}).statistic, 0.0);
  EXPECT_DOUBLE_EQ(ks_two_sample({1, 2, 3}, {4, 5, 6}).statistic, 1.0);
  EXPECT_NEAR(kolmogorov_sf(1.36), 0.0494, 5e-4);  // the 5% critical value
  EXPECT_EQ(kolmogorov_sf(0.0), 1.0);
  EXPECT_DOUBLE_EQ(jensen_shannon_distance({1, 0}, {1, 0}), 0.0);
  EXPECT_NEAR(jensen_shannon_distance({1, 0}, {0, 1}), std::sqrt(std::log(2.0)), 1e-12);
}

TEST(DriftTest, EmbeddingSummaryPerUnitQuantilesAndNorms) {
  // 5 rows × 2 units: unit 0 = 0..4, unit 1 = 10 × unit 0.
  std::vector<double> e;
  for (int r = 0; r < 5; ++r) {
    e.push_back(r);
    e.push_back(10.0 * r);
  }
  const EmbeddingSummary s = summarize_embedding("layers.1", "relu", e, 5, 2);
  ASSERT_EQ(s.mean.size(), 2u);
  EXPECT_DOUBLE_EQ(s.mean[0], 2.0);
  EXPECT_DOUBLE_EQ(s.mean[1], 20.0);
  EXPECT_DOUBLE_EQ(s.q50[1], 20.0);
  EXPECT_DOUBLE_EQ(s.q25[0], 1.0);  // numpy.quantile([0..4], 0.25)
  EXPECT_NEAR(s.q05[0], 0.2, 1e-12);
  EXPECT_NEAR(s.q95[1], 38.0, 1e-12);
  EXPECT_NEAR(s.norm.max, 4.0 * std::sqrt(101.0), 1e-9);
  Expected<EmbeddingSummary> back = EmbeddingSummary::from_json(s.to_json());
  ASSERT_TRUE(back.ok()) << back.status().to_string();
  EXPECT_EQ(back->to_json(), s.to_json());
  Json broken = s.to_json();
  broken["q95"] = Json::array({1.0});
  EXPECT_FALSE(EmbeddingSummary::from_json(broken).ok());
  EXPECT_TRUE(summarize_embedding("x", "y", e, 3, 2).empty()) << "size mismatch";
}

TEST(DriftTest, ProfileRoundTripsThroughJsonAndRejectsDamage) {
  ReferenceProfile p;
  p.schema = feature_schema({2}, {"a", "b"});
  p.rows = 4;
  p.features = {numeric_reference("a", {1, 2, 3, NAN}),
                numeric_reference("b", {5, 5, 5, 6}, 1000, 0, kMaxCategories)};
  ASSERT_TRUE(p.features[1].categorical());
  p.labels = {"x", "y"};
  p.class_prior = {0.5, 0.5};
  p.predicted_shares = {0.25, 0.75};
  p.confidence = numeric_reference("confidence", {0.9, 0.8, 0.99, 0.6});
  EXPECT_NEAR(p.features[0].missing_rate, 0.25, 1e-12);
  Expected<ReferenceProfile> back = ReferenceProfile::from_json(p.to_json());
  ASSERT_TRUE(back.ok()) << back.status().to_string();
  EXPECT_EQ(back->to_json(), p.to_json());
  Json broken = p.to_json();
  broken["features"][1]["shares"] = Json::array({1.0});
  EXPECT_FALSE(ReferenceProfile::from_json(broken).ok());
  broken = p.to_json();
  broken["features"][1]["categories"] = Json::array({5.0, 6.0, 7.0});
  EXPECT_FALSE(ReferenceProfile::from_json(broken).ok()) << "a share per category";
  broken = p.to_json();
  broken["features"].erase(1);
  EXPECT_FALSE(ReferenceProfile::from_json(broken).ok());
  EXPECT_FALSE(ReferenceProfile::from_json(Json{{"format", "other"}}).ok());
}

}  // namespace
}  // namespace kiln::monitor
