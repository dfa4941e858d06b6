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
