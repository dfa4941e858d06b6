#include "kiln/features/imputer.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

#include "datasets.h"

namespace kiln::features {
namespace {

using testing::diabetes;
using testing::reparse;
using testing::split;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

/// diabetes features (10 columns) with NaN planted in about one cell in seven, deterministically.
torch::Tensor diabetes_with_holes() {
  torch::Tensor x = diabetes().x.narrow(1, 0, 10).clone();
  auto a = x.accessor<float, 2>();
  for (int64_t r = 0; r < x.size(0); ++r) {
    for (int64_t c = 0; c < 10; ++c) {
      if ((r * 7 + c * 3) % 7 == 0 && (r + c) % 2 == 0) a[r][c] = kNaN;
    }
  }
  return x;
}

/// Non-missing values of column c, sorted.
std::vector<double> present(const torch::Tensor& x, int64_t c) {
  std::vector<double> v;
  auto col = x.select(1, c);
  for (int64_t r = 0; r < x.size(0); ++r) {
    float f = col[r].item<float>();
    if (!std::isnan(f)) v.push_back(f);
  }
  std::sort(v.begin(), v.end());
  return v;
}

TEST(Imputer, MeanFillsHolesAndKeepsOtherCells) {
  torch::Tensor x = diabetes_with_holes();
  ASSERT_GT(torch::isnan(x).sum().item<int64_t>(), 100);
  auto [train, test] = split(x);
  Imputer imp;  // mean
  ASSERT_TRUE(imp.fit(train).ok());
  for (int64_t c = 0; c < 10; ++c) {
    auto v = present(train, c);
    double sum = 0;
    for (double d : v) sum += d;
    EXPECT_NEAR(imp.fill()[c], sum / v.size(), 1e-9 * std::abs(sum / v.size())) << "column " << c;
  }
  auto y = imp.apply(test);
  ASSERT_TRUE(y.ok());
  EXPECT_FALSE(torch::isnan(*y).any().item<bool>());
  torch::Tensor holes = torch::isnan(test);
  EXPECT_TRUE(torch::equal(y->masked_select(~holes), test.masked_select(~holes)));
  // Each hole holds its column's training mean (as float32).
  auto ya = y->accessor<float, 2>();
  auto ha = holes.accessor<bool, 2>();
  for (int64_t r = 0; r < test.size(0); ++r) {
    for (int64_t c = 0; c < 10; ++c) {
      if (ha[r][c]) {
        EXPECT_EQ(ya[r][c], static_cast<float>(imp.fill()[c]));
      }
    }
  }
}

TEST(Imputer, MedianMostFrequentAndConstant) {
  torch::Tensor x = diabetes_with_holes();
  auto [train, test] = split(x);

  Imputer median(ImputerOptions().strategy(ImputeStrategy::kMedian));
  ASSERT_TRUE(median.fit(train).ok());
  for (int64_t c = 0; c < 10; ++c) {
    auto v = present(train, c);
    const size_t n = v.size();
    const double expected = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
    EXPECT_DOUBLE_EQ(median.fill()[c], expected) << "column " << c;
  }

  // Column 1 is `sex` (values 1 and 2): the most frequent value is whichever occurs more often.
  Imputer mode(ImputerOptions().strategy(ImputeStrategy::kMostFrequent));
  ASSERT_TRUE(mode.fit(train).ok());
  std::map<double, int> counts;
  for (double d : present(train, 1)) counts[d]++;
  ASSERT_EQ(counts.size(), 2u);
  const double expected_mode = counts.begin()->second >= counts.rbegin()->second
                                   ? counts.begin()->first
                                   : counts.rbegin()->first;
  EXPECT_EQ(mode.fill()[1], expected_mode);

  Imputer constant(ImputerOptions().strategy(ImputeStrategy::kConstant).fill_value(-1));
  ASSERT_TRUE(constant.fit(train).ok());
  auto y = constant.apply(test);
  ASSERT_TRUE(y.ok());
  EXPECT_EQ(y->masked_select(torch::isnan(test)).eq(-1).all().item<bool>(), true);

  for (const Imputer* imp : {&median, &mode, &constant}) {
    auto loaded = transform_from_json(reparse(imp->to_json()));
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_TRUE(testing::bit_equal(*imp->apply(test), *(*loaded)->apply(test)));
  }
}

TEST(Imputer, MostFrequentTieGoesToSmallest) {
  torch::Tensor x = torch::tensor({3.0f, 1.0f, 3.0f, 1.0f, kNaN, 2.0f}).reshape({6, 1});
  Imputer mode(ImputerOptions().strategy(ImputeStrategy::kMostFrequent));
  ASSERT_TRUE(mode.fit(x).ok());
  EXPECT_EQ(mode.fill()[0], 1.0);
}

TEST(Imputer, AllMissingColumnIsAnErrorNamingIt) {
  torch::Tensor x = diabetes_with_holes();
  x.select(1, 3).fill_(kNaN);
  for (auto s : {ImputeStrategy::kMean, ImputeStrategy::kMedian, ImputeStrategy::kMostFrequent}) {
    Imputer imp(ImputerOptions().strategy(s));
    Status st = imp.fit(x);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << impute_strategy_name(s);
    EXPECT_NE(st.message().find("column 3"), std::string::npos) << st;
    EXPECT_FALSE(imp.fitted());
  }
  // A constant needs no training values.
  Imputer constant(ImputerOptions().strategy(ImputeStrategy::kConstant));
  EXPECT_TRUE(constant.fit(x).ok());
}

TEST(Imputer, WrongFeatureCountAndBadOptions) {
  torch::Tensor x = diabetes_with_holes();
  Imputer imp;
  ASSERT_TRUE(imp.fit(x).ok());
  auto y = imp.apply(x.narrow(1, 0, 9));
  ASSERT_FALSE(y.ok());
  EXPECT_NE(y.status().message().find("expected 10 features, got 9"), std::string::npos);

  auto bad = ImputerOptions::from_json(Json{{"strategy", "mode"}});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("mode"), std::string::npos);
  EXPECT_FALSE(ImputerOptions::from_json(Json{{"stratgey", "mean"}}).ok());  // typo: unknown key
  auto good = ImputerOptions::from_json(Json{{"strategy", "median"}});
  ASSERT_TRUE(good.ok());
  EXPECT_EQ(good->strategy_, ImputeStrategy::kMedian);
  EXPECT_EQ(good->fill_value_, 0.0);
}

}  // namespace
}  // namespace kiln::features
