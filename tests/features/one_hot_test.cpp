#include "kiln/features/one_hot.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "datasets.h"
#include "kiln/features/pipeline.h"
#include "kiln/features/scalers.h"

namespace kiln::features {
namespace {

using testing::breast_cancer;
using testing::reparse;

TEST(OneHotEncoder, EncodesDiagnosisWithSortedCategories) {
  auto data = breast_cancer();
  const auto& diagnosis = data.text.at(0);
  ASSERT_EQ(diagnosis.size(), 569u);
  OneHotEncoder enc;
  ASSERT_TRUE(enc.fit_categories(diagnosis).ok());
  EXPECT_EQ(enc.categories(), (std::vector<std::string>{"benign", "malignant"}));
  EXPECT_EQ(enc.input_features(), 1);
  EXPECT_EQ(enc.output_features(), 2);
  auto y = enc.encode(diagnosis);
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_EQ(y->sizes(), (std::vector<int64_t>{569, 2}));
  EXPECT_EQ(y->scalar_type(), torch::kFloat32);
  EXPECT_TRUE(torch::equal(y->sum(1), torch::ones({569})));
  int64_t malignant = 0;
  for (const auto& d : diagnosis) malignant += d == "malignant";
  EXPECT_EQ(y->select(1, 1).sum().item<float>(), static_cast<float>(malignant));
  EXPECT_EQ(y->index({0, 1}).item<float>(), diagnosis[0] == "malignant" ? 1.0f : 0.0f);
}

TEST(OneHotEncoder, UnknownCategoryErrorNamesTheValue) {
  OneHotEncoder enc;
  ASSERT_TRUE(enc.fit_categories({"red", "green", "red", "blue"}).ok());
  EXPECT_EQ(enc.categories(), (std::vector<std::string>{"blue", "green", "red"}));
  auto y = enc.encode({"green", "mauve"});
  ASSERT_FALSE(y.ok());
  EXPECT_EQ(y.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(y.status().message().find("'mauve'"), std::string::npos) << y.status();
  EXPECT_NE(y.status().message().find("row 1"), std::string::npos) << y.status();
  // The tensor layer rejects codes that are not categories.
  auto bad = enc.apply(torch::tensor({0.0f, 3.0f}).reshape({2, 1}));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("row 1"), std::string::npos) << bad.status();
  EXPECT_FALSE(enc.apply(torch::tensor({0.5f}).reshape({1, 1})).ok());
}

TEST(OneHotEncoder, IgnoreGivesAllZeros) {
  OneHotEncoder enc(OneHotEncoderOptions().handle_unknown(UnknownCategory::kIgnore));
  ASSERT_TRUE(enc.fit_categories({"red", "green", "red", "blue"}).ok());
  auto codes = enc.codes({"green", "mauve", "blue"});
  ASSERT_TRUE(codes.ok());
  EXPECT_TRUE(torch::equal(*codes, torch::tensor({1.0f, -1.0f, 0.0f}).reshape({3, 1})));
  auto y = enc.encode({"green", "mauve", "blue"});
  ASSERT_TRUE(y.ok());
  EXPECT_TRUE(torch::equal(
      *y, torch::tensor({0.0f, 1.0f, 0.0f, 0.0f, 0.0f, 0.0f, 1.0f, 0.0f, 0.0f}).reshape({3, 3})));
}

TEST(OneHotEncoder, JsonRoundTripAndFactory) {
  OneHotEncoder enc(OneHotEncoderOptions().handle_unknown(UnknownCategory::kIgnore));
  ASSERT_TRUE(enc.fit_categories({"b", "a", "c", "a"}).ok());
  Json j = enc.to_json();
  EXPECT_EQ(j["categories"], (Json{"a", "b", "c"}));
  EXPECT_EQ(j["options"]["handle_unknown"], "ignore");
  auto loaded = transform_from_json(reparse(j));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto* typed = dynamic_cast<OneHotEncoder*>(loaded->get());
  ASSERT_NE(typed, nullptr);
  EXPECT_EQ(typed->categories(), enc.categories());
  EXPECT_TRUE(torch::equal(*typed->encode({"c", "zz", "a"}), *enc.encode({"c", "zz", "a"})));

  Json unsorted = j;
  unsorted["categories"] = Json{"b", "a", "c"};
  auto bad = transform_from_json(unsorted);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("categories"), std::string::npos);
}

// Reference figures: scikit-learn's TargetEncoder formula for smooth="auto" in NumPy
// (encoding = λ·mean_c + (1 − λ)·mean, λ = n_c·var / (n_c·var + var_c)), then standardised by
// the training targets' mean and std; cross-fitted rows from the other fold's table.
TEST(OneHotEncoder, TargetEncodingMatchesTheEmpiricalBayesFormulaAndCrossFits) {
  OneHotEncoder enc(OneHotEncoderOptions().handle_unknown(UnknownCategory::kIgnore));
  ASSERT_TRUE(enc.fit_categories({"a", "b", "c", "d"}).ok());  // "d": no training row
  const torch::Tensor codes =
      torch::tensor({0.f, 0.f, 0.f, 1.f, 1.f, 2.f, 2.f, 1.f}).reshape({8, 1});
  const torch::Tensor y =
      torch::tensor({1.f, 2.f, 3.f, 10.f, 14.f, 5.f, 7.f, 12.f}).reshape({8, 1});
  auto own = enc.fit_target(codes, y, {0, 1, 0, 1, 0, 1, 0, 1});
  ASSERT_TRUE(own.ok()) << own.status();
  EXPECT_TRUE(enc.target_encoded());
  EXPECT_EQ(enc.output_features(), 1);
  const torch::Tensor expected_own =
      torch::tensor({-1.0507024, -1.03204032, -1.0507024, 1.60370366, 0.91448047, 0.05530013,
                     -0.38710088, 1.60370366})
          .reshape({8, 1})
          .to(torch::kFloat32);
  EXPECT_TRUE(torch::allclose(*own, expected_own, 1e-5, 1e-5)) << *own;
  const torch::Tensor expected_table = torch::tensor({-1.03940073, 1.11289929, -0.16193858, 0.0})
                                           .reshape({4, 1})
                                           .to(torch::kFloat32);
  EXPECT_TRUE(torch::allclose(enc.target_table(), expected_table, 1e-5, 1e-5))
      << enc.target_table();
  // apply(): the category's row of the table; an unknown category (-1) is 0, the overall mean.
  auto applied = enc.encode({"b", "zz", "d", "a"});
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_TRUE(torch::allclose(
      *applied, torch::tensor({1.11289929f, 0.f, 0.f, -1.03940073f}).reshape({4, 1}), 1e-5, 1e-5))
      << *applied;

  // The JSON keeps the table; reloaded, it encodes the same.
  Json j = enc.to_json();
  ASSERT_TRUE(j.contains("target_encoding"));
  EXPECT_NEAR(j["target_encoding"]["mean"][0].get<double>(), 6.75, 1e-9);
  auto loaded = OneHotEncoder::from_json(reparse(j));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE(torch::equal(*(*loaded)->encode({"b", "zz", "d", "a"}), *applied));
  Json short_table = j;
  short_table["target_encoding"]["table"].erase(0);
  auto bad = OneHotEncoder::from_json(short_table);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("a row per category (4)"), std::string::npos)
      << bad.status().message();

  // Classes: one indicator column per class gives d columns per category.
  OneHotEncoder three(OneHotEncoderOptions().handle_unknown(UnknownCategory::kIgnore));
  ASSERT_TRUE(three.fit_categories({"x", "y"}).ok());
  const torch::Tensor labels = torch::tensor({0, 1, 2, 0, 1, 2}, torch::kLong);
  auto per_class =
      three.fit_target(torch::tensor({0.f, 0.f, 0.f, 1.f, 1.f, 1.f}).reshape({6, 1}),
                       torch::one_hot(labels, 3).to(torch::kFloat32), {0, 1, 2, 0, 1, 2});
  ASSERT_TRUE(per_class.ok()) << per_class.status();
  EXPECT_EQ(per_class->sizes(), (std::vector<int64_t>{6, 3}));
  EXPECT_EQ(three.target_table().sizes(), (std::vector<int64_t>{2, 3}));
  auto mismatched =
      three.fit_target(torch::zeros({6, 1}), torch::zeros({5, 1}), {0, 1, 2, 0, 1, 2});
  EXPECT_EQ(mismatched.status().code(), StatusCode::kInvalidArgument);
}

TEST(OneHotEncoder, ANumericSmoothShrinksByItsCountOfRows) {
  // scikit-learn's smooth=m: λ = n / (n + m). With m = 2 (y's mean 6.75): a (3 rows, mean 2)
  // 0.6·2 + 0.4·6.75 = 3.9; b (3 rows, mean 12) 9.9; c (2 rows, mean 6) 6.375; d (none) 6.75;
  // then standardised by y's population std. m = 0: each category's own mean.
  const torch::Tensor codes =
      torch::tensor({0.f, 0.f, 0.f, 1.f, 1.f, 2.f, 2.f, 1.f}).reshape({8, 1});
  const torch::Tensor y =
      torch::tensor({1.f, 2.f, 3.f, 10.f, 14.f, 5.f, 7.f, 12.f}).reshape({8, 1});
  const double sd = y.to(torch::kFloat64).std(/*unbiased=*/false).item<double>();
  for (const auto& [smooth, raw] :
       {std::pair<double, std::vector<double>>{2, {3.9, 9.9, 6.375, 6.75}},
        {0, {2, 12, 6, 6.75}}}) {
    OneHotEncoder enc(OneHotEncoderOptions().handle_unknown(UnknownCategory::kIgnore));
    ASSERT_TRUE(enc.fit_categories({"a", "b", "c", "d"}).ok());
    ASSERT_TRUE(enc.fit_target(codes, y, {0, 1, 0, 1, 0, 1, 0, 1}, smooth).ok());
    std::vector<double> want;
    for (double v : raw) want.push_back((v - 6.75) / sd);
    EXPECT_TRUE(torch::allclose(
        enc.target_table(), torch::tensor(want).reshape({4, 1}).to(torch::kFloat32), 1e-5, 1e-5))
        << "smooth " << smooth << ": " << enc.target_table();
  }
}

TEST(OneHotEncoder, TensorFitIsRefusedButFittedEncoderComposes) {
  OneHotEncoder enc;
  EXPECT_EQ(enc.fit(torch::zeros({3, 1})).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(enc.codes({"x"}).status().code(), StatusCode::kFailedPrecondition);
  auto data = breast_cancer();
  ASSERT_TRUE(enc.fit_categories(data.text.at(0)).ok());
  auto onehot = enc.encode(data.text.at(0));
  ASSERT_TRUE(onehot.ok());
  auto scaler = std::make_unique<StandardScaler>();
  ASSERT_TRUE(scaler->fit(*onehot).ok());
  std::vector<std::unique_ptr<Transform>> steps;
  steps.push_back(enc.clone());
  steps.push_back(std::move(scaler));
  auto p = Pipeline::Create(std::move(steps));
  ASSERT_TRUE(p.ok()) << p.status();
  auto codes = enc.codes(data.text.at(0));
  ASSERT_TRUE(codes.ok());
  auto z = (*p)->apply(*codes);
  ASSERT_TRUE(z.ok()) << z.status();
  EXPECT_EQ(z->size(1), 2);
  auto loaded = transform_from_json(reparse((*p)->to_json()));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE(testing::bit_equal(*(*loaded)->apply(*codes), *z));
}

}  // namespace
}  // namespace kiln::features
