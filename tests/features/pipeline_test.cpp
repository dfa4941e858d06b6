#include "kiln/features/pipeline.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <limits>
#include <thread>

#include "datasets.h"
#include "kiln/features/imputer.h"
#include "kiln/features/pca.h"
#include "kiln/features/scalers.h"
#include "kiln/features/selection.h"

namespace kiln::features {
namespace {

using testing::breast_cancer;
using testing::diabetes;
using testing::reparse;
using testing::split;

/// diabetes features with a few NaN planted.
torch::Tensor diabetes_features() {
  torch::Tensor x = diabetes().x.narrow(1, 0, 10).clone();
  for (int64_t r = 0; r < x.size(0); r += 9) {
    x.index_put_({r, r % 10}, std::numeric_limits<float>::quiet_NaN());
  }
  return x;
}

Pipeline make_pipeline() {
  Pipeline p;
  p.add(std::make_unique<Imputer>(ImputerOptions().strategy(ImputeStrategy::kMedian)))
      .add(std::make_unique<VarianceThreshold>())
      .add(std::make_unique<StandardScaler>())
      .add(std::make_unique<Pca>(PcaOptions().n_components(4)));
  return p;
}

TEST(Pipeline, FitsStepsInOrderOnTrainAndAppliesToTest) {
  auto [train, test] = split(diabetes_features());
  Pipeline p = make_pipeline();
  EXPECT_FALSE(p.fitted());
  ASSERT_TRUE(p.fit(train).ok());
  EXPECT_EQ(p.input_features(), 10);
  EXPECT_EQ(p.output_features(), 4);
  auto z = p.apply(test);
  ASSERT_TRUE(z.ok()) << z.status();
  EXPECT_EQ(z->sizes(), (std::vector<int64_t>{test.size(0), 4}));
  EXPECT_FALSE(torch::isnan(*z).any().item<bool>());
  // Same as applying the steps by hand.
  torch::Tensor manual = test;
  for (size_t i = 0; i < p.size(); ++i) manual = *p.step(i).apply(manual);
  EXPECT_TRUE(testing::bit_equal(manual, *z));
  // The scaler inside was fitted on the imputed training data: train output is centred.
  auto zt = p.apply(train);
  ASSERT_TRUE(zt.ok());
  EXPECT_LT(testing::col_mean(*zt).abs().max().item<double>(), 1e-5);
}

TEST(Pipeline, JsonRoundTripIsBitIdentical) {
  auto [train, test] = split(diabetes_features());
  Pipeline p = make_pipeline();
  ASSERT_TRUE(p.fit(train).ok());
  Json j = p.to_json();
  EXPECT_EQ(j["kind"], "pipeline");
  EXPECT_EQ(j["version"], 1);
  ASSERT_EQ(j["steps"].size(), 4u);
  EXPECT_EQ(j["steps"][3]["kind"], "pca");
  auto loaded = transform_from_json(reparse(j));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE(testing::bit_equal(*(*loaded)->apply(test), *p.apply(test)));
  EXPECT_EQ((*loaded)->to_json(), j);
  // A copy is independent and equal.
  Pipeline copy = p;
  EXPECT_TRUE(testing::bit_equal(*copy.apply(test), *p.apply(test)));
}

TEST(Pipeline, UnfittedConfigRoundTripsAndFitsLater) {
  Json config = make_pipeline().to_json();
  EXPECT_EQ(config["fitted"], false);
  auto loaded = transform_from_json(reparse(config));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_FALSE((*loaded)->fitted());
  auto [train, test] = split(diabetes_features());
  ASSERT_TRUE((*loaded)->fit(train).ok());
  Pipeline direct = make_pipeline();
  ASSERT_TRUE(direct.fit(train).ok());
  EXPECT_TRUE(testing::bit_equal(*(*loaded)->apply(test), *direct.apply(test)));

  // A hand-written config: options default when absent.
  Json hand = Json::parse(R"({"kind": "pipeline", "version": 1, "fitted": false, "steps": [
      {"kind": "imputer", "version": 1, "fitted": false, "options": {"strategy": "mean"}},
      {"kind": "pca", "version": 1, "fitted": false, "options": {"n_components": 2}}]})");
  auto from_hand = transform_from_json(hand);
  ASSERT_TRUE(from_hand.ok()) << from_hand.status();
  ASSERT_TRUE((*from_hand)->fit(train).ok());
  EXPECT_EQ((*from_hand)->output_features(), 2);
}

TEST(Pipeline, ErrorsNameTheStep) {
  auto [train, test] = split(diabetes_features());
  Pipeline p;
  p.add(std::make_unique<StandardScaler>())
      .add(std::make_unique<Pca>(PcaOptions().n_components(2)));
  Status s = p.fit(train);  // NaN reaches pca
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("pipeline step 1 (pca)"), std::string::npos) << s;
  EXPECT_FALSE(p.fitted());

  Pipeline ok = make_pipeline();
  ASSERT_TRUE(ok.fit(train).ok());
  auto z = ok.apply(test.narrow(1, 0, 8));
  ASSERT_FALSE(z.ok());
  EXPECT_EQ(z.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(z.status().message().find("expected 10 features, got 8"), std::string::npos)
      << z.status();
}

TEST(Pipeline, CreateChecksFittedStepsChain) {
  torch::Tensor x = breast_cancer().x;
  auto scaler = std::make_unique<StandardScaler>();
  ASSERT_TRUE(scaler->fit(x).ok());
  auto pca = std::make_unique<Pca>(PcaOptions().n_components(3));
  ASSERT_TRUE(pca->fit(x.narrow(1, 0, 20)).ok());
  std::vector<std::unique_ptr<Transform>> steps;
  steps.push_back(std::move(scaler));
  steps.push_back(std::move(pca));
  auto p = Pipeline::Create(std::move(steps));
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("expects 20 features but the previous step produces 30"),
            std::string::npos)
      << p.status();

  std::vector<std::unique_ptr<Transform>> unfitted;
  unfitted.push_back(std::make_unique<StandardScaler>());
  EXPECT_FALSE(Pipeline::Create(std::move(unfitted)).ok());
}

TEST(Pipeline, ApplyIsSafeConcurrently) {
  auto [train, test] = split(breast_cancer().x);
  Pipeline p;
  p.add(std::make_unique<StandardScaler>())
      .add(std::make_unique<Pca>(PcaOptions().n_components(6)));
  ASSERT_TRUE(p.fit(train).ok());
  const torch::Tensor expected = *p.apply(test);
  std::vector<std::thread> threads;
  std::vector<int> same(8, 0);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      bool all = true;
      for (int i = 0; i < 20; ++i) {
        auto z = p.apply(test);
        all = all && z.ok() && testing::bit_equal(*z, expected);
      }
      same[t] = all;
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < 8; ++t) EXPECT_TRUE(same[t]) << "thread " << t;
}

// ---- transform_from_json on bad input

Json fitted_scaler_json() {
  StandardScaler s;
  EXPECT_TRUE(s.fit(breast_cancer().x).ok());
  return s.to_json();
}

void expect_bad(const Json& j, const std::string& fragment) {
  auto t = transform_from_json(j);
  ASSERT_FALSE(t.ok()) << "accepted: " << j.dump();
  EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(t.status().message().find(fragment), std::string::npos)
      << "message: " << t.status().message() << "\nexpected to contain: " << fragment;
}

TEST(TransformFromJson, MissingFieldIsNamed) {
  Json j = fitted_scaler_json();
  j.erase("scale");
  expect_bad(j, "'scale' is missing");
  j = fitted_scaler_json();
  j.erase("kind");
  expect_bad(j, "'kind' is missing");
  j = fitted_scaler_json();
  j.erase("version");
  expect_bad(j, "'version' is missing");
}

TEST(TransformFromJson, WrongKindVersionAndValues) {
  Json j = fitted_scaler_json();
  j["kind"] = "standard_scalar";
  expect_bad(j, "unknown kind 'standard_scalar'");
  j = fitted_scaler_json();
  j["version"] = 2;
  expect_bad(j, "unsupported version 2");
  j = fitted_scaler_json();
  j["shift"].erase(0);
  expect_bad(j, "'shift' has 29 values, expected 30");
  j = fitted_scaler_json();
  j["scale"][3] = "1.0";
  expect_bad(j, "'scale[3]' must be a number");
  j = fitted_scaler_json();
  j["options"]["with_men"] = true;
  expect_bad(j, "unknown field 'with_men'");
  j = fitted_scaler_json();
  j["input_features"] = 29;
  expect_bad(j, "input_features");
  expect_bad(Json::array(), "expected an object");
  expect_bad(Json{{"kind", 3}}, "'kind' must be a string");

  // A kind-specific reader refuses another kind.
  auto pca = Pca::from_json(fitted_scaler_json());
  ASSERT_FALSE(pca.ok());
  EXPECT_NE(pca.status().message().find("expected 'pca'"), std::string::npos) << pca.status();
}

TEST(TransformFromJson, BadStepInPipelineNamesIt) {
  auto [train, test] = split(diabetes_features());
  Pipeline p = make_pipeline();
  ASSERT_TRUE(p.fit(train).ok());
  Json j = p.to_json();
  j["steps"][2].erase("mean");
  expect_bad(j, "steps[2]");
  j = p.to_json();
  j["steps"].erase(3);  // without the pca the steps map 10 -> 10, not the recorded 10 -> 4
  expect_bad(j, "records 10 -> 4");
  j = p.to_json();
  j["output_features"] = 5;
  expect_bad(j, "records 10 -> 5");
}

}  // namespace
}  // namespace kiln::features
