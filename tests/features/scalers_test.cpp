#include "kiln/features/scalers.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "datasets.h"

namespace kiln::features {
namespace {

using testing::breast_cancer;
using testing::col_mean;
using testing::col_std;
using testing::reparse;
using testing::split;

/// to_json -> text -> transform_from_json, then the same apply() output to the bit.
void expect_round_trip_identical(const Transform& t, const torch::Tensor& x) {
  auto loaded = transform_from_json(reparse(t.to_json()));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->kind(), t.kind());
  EXPECT_EQ((*loaded)->input_features(), t.input_features());
  EXPECT_EQ((*loaded)->output_features(), t.output_features());
  auto a = t.apply(x);
  auto b = (*loaded)->apply(x);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(testing::bit_equal(*a, *b))
      << t.kind() << ": apply() differs after the JSON round trip";
  EXPECT_EQ((*loaded)->to_json(), t.to_json());
}

TEST(StandardScaler, TrainColumnsGetMeanZeroStdOne) {
  auto data = breast_cancer();
  auto [train, test] = split(data.x);
  StandardScaler scaler;
  ASSERT_TRUE(scaler.fit(train).ok());
  EXPECT_EQ(scaler.input_features(), 30);
  EXPECT_EQ(scaler.output_features(), 30);
  auto z = scaler.apply(train);
  ASSERT_TRUE(z.ok()) << z.status();
  EXPECT_EQ(z->scalar_type(), torch::kFloat32);
  EXPECT_TRUE(torch::allclose(col_mean(*z), torch::zeros({30}, torch::kFloat64), 0, 1e-5));
  EXPECT_TRUE(torch::allclose(col_std(*z), torch::ones({30}, torch::kFloat64), 0, 1e-5));
}

TEST(StandardScaler, FitsOnTrainOnly) {
  auto data = breast_cancer();
  auto [train, test] = split(data.x);
  StandardScaler scaler;
  ASSERT_TRUE(scaler.fit(train).ok());
  // The learned statistics are the training set's, not the whole file's or the test set's.
  auto train_mean = testing::col_mean(train);
  for (int64_t c = 0; c < 30; ++c) {
    EXPECT_NEAR(scaler.mean()[c], train_mean[c].item<double>(),
                1e-9 * std::abs(train_mean[c].item<double>()));
  }
  auto z = scaler.apply(test);
  ASSERT_TRUE(z.ok());
  const double max_abs_mean = col_mean(*z).abs().max().item<double>();
  EXPECT_GT(max_abs_mean, 1e-3) << "test statistics should differ from the training ones";
  EXPECT_LT(max_abs_mean, 0.5);
  // Fitting on test instead gives different parameters.
  StandardScaler on_test;
  ASSERT_TRUE(on_test.fit(test).ok());
  EXPECT_NE(on_test.mean(), scaler.mean());
}

TEST(StandardScaler, ConstantColumnGetsScaleOne) {
  auto data = breast_cancer();
  torch::Tensor x = torch::cat({data.x, torch::full({data.x.size(0), 1}, 0.1f)}, 1);
  StandardScaler scaler;
  ASSERT_TRUE(scaler.fit(x).ok());
  EXPECT_EQ(scaler.scale()[30], 1.0);
  auto z = scaler.apply(x);
  ASSERT_TRUE(z.ok());
  EXPECT_TRUE(torch::isfinite(*z).all().item<bool>());
  EXPECT_LT(z->select(1, 30).abs().max().item<float>(), 1e-6f);
}

TEST(StandardScaler, OptionsAndNanHandling) {
  auto data = breast_cancer();
  torch::Tensor x = data.x.clone();
  x.index_put_({0, 0}, std::numeric_limits<float>::quiet_NaN());
  StandardScaler no_mean(StandardScalerOptions().with_mean(false));
  ASSERT_TRUE(no_mean.fit(x).ok());
  EXPECT_EQ(no_mean.shift()[0], 0.0);
  EXPECT_NE(no_mean.scale()[0], 1.0);
  EXPECT_TRUE(std::isfinite(no_mean.mean()[0]));  // NaN ignored while fitting
  auto z = no_mean.apply(x);
  ASSERT_TRUE(z.ok());
  EXPECT_TRUE(std::isnan(z->index({0, 0}).item<float>()));  // and kept when applying
  expect_round_trip_identical(no_mean, x);
}

TEST(StandardScaler, AllMissingColumnNamesIt) {
  torch::Tensor x = torch::rand({10, 4});
  x.select(1, 2).fill_(std::numeric_limits<float>::quiet_NaN());
  StandardScaler scaler;
  Status s = scaler.fit(x);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("column 2"), std::string::npos) << s;
}

TEST(StandardScaler, InfiniteTrainingValueIsAnError) {
  torch::Tensor x = torch::rand({10, 4});
  x.index_put_({3, 1}, std::numeric_limits<float>::infinity());
  Status s = StandardScaler().fit(x);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("column 1"), std::string::npos) << s;
}

TEST(StandardScaler, Float64InputStaysFloat64) {
  auto data = breast_cancer();
  torch::Tensor x = data.x.to(torch::kFloat64);
  StandardScaler scaler;
  auto z = scaler.fit_apply(x);
  ASSERT_TRUE(z.ok());
  EXPECT_EQ(z->scalar_type(), torch::kFloat64);
  EXPECT_TRUE(torch::allclose(col_mean(*z), torch::zeros({30}, torch::kFloat64), 0, 1e-12));
}

TEST(Scalers, JsonRoundTripIsBitIdentical) {
  auto data = breast_cancer();
  auto [train, test] = split(data.x);
  StandardScaler standard;
  MinMaxScaler minmax(MinMaxScalerOptions().range(-1, 1));
  RobustScaler robust(RobustScalerOptions().quantile_range(10, 90));
  for (Transform* t : std::initializer_list<Transform*>{&standard, &minmax, &robust}) {
    ASSERT_TRUE(t->fit(train).ok()) << t->kind();
    expect_round_trip_identical(*t, test);
    Json j = t->to_json();
    EXPECT_EQ(j["kind"], t->kind());
    EXPECT_EQ(j["version"], 1);
    EXPECT_EQ(j["fitted"], true);
    EXPECT_EQ(j["shift"].size(), 30u);
  }
}

TEST(Scalers, WrongFeatureCountNamesExpectedAndActual) {
  auto data = breast_cancer();
  StandardScaler standard;
  MinMaxScaler minmax;
  RobustScaler robust;
  for (Transform* t : std::initializer_list<Transform*>{&standard, &minmax, &robust}) {
    ASSERT_TRUE(t->fit(data.x).ok());
    auto z = t->apply(data.x.narrow(1, 0, 29));
    ASSERT_FALSE(z.ok());
    EXPECT_EQ(z.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(z.status().message().find("expected 30 features, got 29"), std::string::npos)
        << z.status();
    EXPECT_FALSE(t->apply(data.x.to(torch::kInt32)).ok());
    EXPECT_FALSE(t->apply(data.x.reshape({-1})).ok());
  }
}

TEST(Scalers, ApplyBeforeFitIsFailedPrecondition) {
  StandardScaler scaler;
  auto z = scaler.apply(torch::rand({3, 2}));
  ASSERT_FALSE(z.ok());
  EXPECT_EQ(z.status().code(), StatusCode::kFailedPrecondition);
}

TEST(MinMaxScaler, MapsTrainRangeAndClips) {
  auto data = breast_cancer();
  auto [train, test] = split(data.x);
  MinMaxScaler mm;
  auto z = mm.fit_apply(train);
  ASSERT_TRUE(z.ok());
  EXPECT_TRUE(torch::allclose(std::get<0>(z->min(0)), torch::zeros({30}), 0, 1e-6));
  EXPECT_TRUE(torch::allclose(std::get<0>(z->max(0)), torch::ones({30}), 0, 1e-6));
  // Test rows may fall outside the training range unless clipped.
  auto zt = mm.apply(test);
  ASSERT_TRUE(zt.ok());
  MinMaxScaler clipped(MinMaxScalerOptions().range(-1, 1).clip(true));
  ASSERT_TRUE(clipped.fit(train).ok());
  auto zc = clipped.apply(test);
  ASSERT_TRUE(zc.ok());
  EXPECT_GE(zc->min().item<float>(), -1.0f);
  EXPECT_LE(zc->max().item<float>(), 1.0f);
  EXPECT_DOUBLE_EQ(clipped.data_min()[0], std::get<0>(train.min(0))[0].item<float>());
}

TEST(MinMaxScaler, ConstantColumnMapsToFeatureMinAndBadRangeFails) {
  torch::Tensor x = torch::cat({torch::rand({20, 2}), torch::full({20, 1}, 7.0f)}, 1);
  MinMaxScaler mm(MinMaxScalerOptions().range(2, 3));
  auto z = mm.fit_apply(x);
  ASSERT_TRUE(z.ok());
  EXPECT_TRUE(torch::allclose(z->select(1, 2), torch::full({20}, 2.0f)));
  MinMaxScaler bad(MinMaxScalerOptions().range(1, 1));
  EXPECT_EQ(bad.fit(x).code(), StatusCode::kInvalidArgument);
}

TEST(RobustScaler, CentresOnMedianAndScalesByIqr) {
  auto data = breast_cancer();
  auto [train, test] = split(data.x);
  RobustScaler rs;
  ASSERT_TRUE(rs.fit(train).ok());
  // Reference median / quartiles with numpy's linear interpolation, via torch.quantile.
  torch::Tensor q = torch::tensor({0.25, 0.5, 0.75}, torch::kFloat64);
  torch::Tensor ref = torch::quantile(train.to(torch::kFloat64), q, 0);
  for (int64_t c = 0; c < 30; ++c) {
    EXPECT_NEAR(rs.center()[c], ref[1][c].item<double>(), 1e-12 * std::abs(rs.center()[c]));
    EXPECT_NEAR(rs.range()[c], (ref[2][c] - ref[0][c]).item<double>(), 1e-9 * rs.range()[c]);
  }
  auto z = rs.apply(train);
  ASSERT_TRUE(z.ok());
  torch::Tensor med = std::get<0>(z->to(torch::kFloat64).median(0));
  EXPECT_LT(med.abs().max().item<double>(), 0.01);
  // A wider range shrinks the output.
  RobustScaler wide(RobustScalerOptions().quantile_range(5, 95));
  ASSERT_TRUE(wide.fit(train).ok());
  EXPECT_GT(wide.range()[0], rs.range()[0]);
  EXPECT_EQ(RobustScaler(RobustScalerOptions().quantile_range(80, 20)).fit(train).code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kiln::features
