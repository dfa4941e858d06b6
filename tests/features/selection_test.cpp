#include "kiln/features/selection.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "datasets.h"

namespace kiln::features {
namespace {

using testing::breast_cancer;
using testing::reparse;
using testing::split;

/// breast_cancer features with a constant column inserted at index 5 (31 columns).
torch::Tensor with_constant_column() {
  torch::Tensor x = breast_cancer().x;
  return torch::cat({x.narrow(1, 0, 5), torch::full({x.size(0), 1}, 0.3f), x.narrow(1, 5, 25)}, 1);
}

TEST(VarianceThreshold, DropsConstantColumn) {
  torch::Tensor x = with_constant_column();
  auto [train, test] = split(x);
  VarianceThreshold vt;
  ASSERT_TRUE(vt.fit(train).ok());
  EXPECT_EQ(vt.input_features(), 31);
  EXPECT_EQ(vt.output_features(), 30);
  EXPECT_EQ(vt.variances()[5], 0.0);
  EXPECT_EQ(std::find(vt.kept().begin(), vt.kept().end(), 5), vt.kept().end());
  auto y = vt.apply(test);
  ASSERT_TRUE(y.ok());
  EXPECT_TRUE(torch::equal(*y, torch::cat({test.narrow(1, 0, 5), test.narrow(1, 6, 25)}, 1)));
}

TEST(VarianceThreshold, ThresholdKeepsHighVarianceColumnsOnly) {
  torch::Tensor x = breast_cancer().x;
  VarianceThreshold vt(VarianceThresholdOptions().threshold(1.0));
  ASSERT_TRUE(vt.fit(x).ok());
  torch::Tensor var = x.to(torch::kFloat64).var(0, /*unbiased=*/false);
  for (int64_t c = 0; c < 30; ++c) {
    const bool kept = std::find(vt.kept().begin(), vt.kept().end(), c) != vt.kept().end();
    EXPECT_EQ(kept, var[c].item<double>() > 1.0) << "column " << c;
  }
  EXPECT_LT(vt.output_features(), 30);
  EXPECT_GT(vt.output_features(), 0);
}

TEST(VarianceThreshold, NothingSurvivingIsAnError) {
  torch::Tensor x = breast_cancer().x;
  VarianceThreshold vt(VarianceThresholdOptions().threshold(1e12));
  Status s = vt.fit(x);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("no column"), std::string::npos) << s;
  EXPECT_FALSE(vt.fitted());
}

TEST(VarianceThreshold, JsonRoundTripAndWrongFeatureCount) {
  torch::Tensor x = with_constant_column();
  auto [train, test] = split(x);
  VarianceThreshold vt;
  ASSERT_TRUE(vt.fit(train).ok());
  Json j = vt.to_json();
  EXPECT_EQ(j["kept"].size(), 30u);
  auto loaded = transform_from_json(reparse(j));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE(testing::bit_equal(*(*loaded)->apply(test), *vt.apply(test)));
  auto bad = vt.apply(test.narrow(1, 0, 30));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("expected 31 features, got 30"), std::string::npos);

  Json out_of_range = j;
  out_of_range["kept"][0] = 31;
  EXPECT_FALSE(transform_from_json(out_of_range).ok());
}

}  // namespace
}  // namespace kiln::features
