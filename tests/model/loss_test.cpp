// Losses against hand-computed values.
#include "kiln/model/loss.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

namespace kiln::model {
namespace {

LossFn make(const LossOptions& o, int64_t outputs) {
  Expected<LossFn> f = make_loss(o, outputs);
  EXPECT_TRUE(f.ok()) << f.status();
  return f.ok() ? *f : LossFn();
}

double value(const torch::Tensor& t) { return t.item<double>(); }

// -log softmax(row)[k]
double nll(const std::vector<double>& row, size_t k) {
  double m = 0;
  for (double v : row) m += std::exp(v);
  return std::log(m) - row[k];
}

TEST(LossTest, CrossEntropyPlainAndWithLabelSmoothing) {
  std::vector<double> r0 = {2, 1, 0}, r1 = {0.5, -1, 3};
  torch::Tensor logits = torch::tensor({2.f, 1.f, 0.f, 0.5f, -1.f, 3.f}).view({2, 3});
  torch::Tensor target = torch::tensor({0, 2}, torch::kLong);
  double plain = (nll(r0, 0) + nll(r1, 2)) / 2;
  EXPECT_NEAR(value(make(LossOptions(), 3)(logits, target)), plain, 1e-6);

  // (1 - e) * nll(target) + e / C * sum_c nll(c), averaged.
  double e = 0.1;
  auto smooth = [&](const std::vector<double>& r, size_t k) {
    return (1 - e) * nll(r, k) + e / 3 * (nll(r, 0) + nll(r, 1) + nll(r, 2));
  };
  double expected = (smooth(r0, 0) + smooth(r1, 2)) / 2;
  EXPECT_NEAR(value(make(LossOptions().label_smoothing(e), 3)(logits, target)), expected, 1e-6);
  // int32 targets and bf16 outputs are accepted (computed in float32).
  EXPECT_NEAR(value(make(LossOptions(), 3)(logits.to(torch::kBFloat16), target.to(torch::kInt))),
              plain, 2e-2);
}

TEST(LossTest, CrossEntropyClassWeights) {
  std::vector<double> r0 = {2, 1, 0}, r1 = {0.5, -1, 3}, r2 = {0, 0, 1};
  torch::Tensor logits =
      torch::tensor({2.f, 1.f, 0.f, 0.5f, -1.f, 3.f, 0.f, 0.f, 1.f}).view({3, 3});
  torch::Tensor target = torch::tensor({0, 2, 1}, torch::kLong);
  std::vector<double> w = {1.0, 3.0, 0.5};
  // sum_i w[y_i] * nll_i / sum_i w[y_i]
  double expected =
      (w[0] * nll(r0, 0) + w[2] * nll(r1, 2) + w[1] * nll(r2, 1)) / (w[0] + w[2] + w[1]);
  EXPECT_NEAR(value(make(LossOptions().class_weights(w), 3)(logits, target)), expected, 1e-6);
}

TEST(LossTest, HuberMseAndBce) {
  torch::Tensor out = torch::tensor({1.0f, 3.0f, -1.0f}).view({3, 1});
  torch::Tensor target = torch::tensor({1.5f, 1.0f, -1.0f});  // N targets for one output
  // |d| = 0.5, 2, 0 with delta 1: 0.5*0.25, 1*(2 - 0.5), 0
  EXPECT_NEAR(value(make(LossOptions().kind("huber"), 1)(out, target)), (0.125 + 1.5) / 3, 1e-6);
  // delta 2: all quadratic: 0.5*0.25, 0.5*4
  EXPECT_NEAR(value(make(LossOptions().kind("huber").huber_delta(2), 1)(out, target)),
              (0.125 + 2.0) / 3, 1e-6);
  EXPECT_NEAR(value(make(LossOptions().kind("mse"), 1)(out, target)), (0.25 + 4.0) / 3, 1e-6);

  torch::Tensor logits = torch::tensor({0.5f, -2.0f, 1.0f, 0.0f}).view({2, 2});
  torch::Tensor labels = torch::tensor({1.0f, 0.0f, 0.0f, 1.0f}).view({2, 2});
  auto bce = [](double x, double t) {
    return std::max(x, 0.0) - x * t + std::log1p(std::exp(-std::abs(x)));
  };
  double expected = (bce(0.5, 1) + bce(-2, 0) + bce(1, 0) + bce(0, 1)) / 4;
  EXPECT_NEAR(value(make(LossOptions().kind("bce_with_logits"), 2)(logits, labels)), expected,
              1e-6);
  EXPECT_THROW(make(LossOptions().kind("mse"), 2)(logits, torch::zeros({2, 3})), c10::Error);
}

TEST(LossTest, OptionsValidateAndRoundTrip) {
  EXPECT_NE(
      make_loss(LossOptions(), 1).status().message().find("cross_entropy needs at least 2 outputs"),
      std::string::npos);
  EXPECT_NE(make_loss(LossOptions().class_weights({1, 2}), 3)
                .status()
                .message()
                .find("loss.class_weights: expected 3 weights"),
            std::string::npos);
  EXPECT_NE(make_loss(LossOptions().kind("mse").label_smoothing(0.1), 1)
                .status()
                .message()
                .find("loss.label_smoothing: applies to cross_entropy only"),
            std::string::npos);
  EXPECT_NE(make_loss(LossOptions().kind("hinge"), 2)
                .status()
                .message()
                .find("loss.kind: unknown loss 'hinge' (valid: cross_entropy, mse, huber, "
                      "bce_with_logits)"),
            std::string::npos);
  EXPECT_FALSE(make_loss(LossOptions().label_smoothing(1.0), 3).ok());
  EXPECT_FALSE(make_loss(LossOptions().kind("huber").huber_delta(0), 1).ok());

  LossOptions o = LossOptions().label_smoothing(0.05).class_weights({1, 2, 3});
  Json j = o.to_json();
  EXPECT_EQ(
      j,
      Json::parse(
          R"({"kind": "cross_entropy", "label_smoothing": 0.05, "class_weights": [1.0, 2.0, 3.0], "huber_delta": 1.0})"));
  Expected<LossOptions> back = LossOptions::from_json(j);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->to_json(), j);
  Expected<LossOptions> partial =
      LossOptions::from_json(Json::parse(R"({"kind": "huber", "huber_delta": 0.5})"));
  ASSERT_TRUE(partial.ok()) << partial.status();
  EXPECT_EQ(partial->huber_delta_, 0.5);
  EXPECT_NE(LossOptions::from_json(Json::parse(R"({"kind": "mse", "smoothing": 0.1})"))
                .status()
                .message()
                .find("loss.smoothing: unknown key"),
            std::string::npos);
}

}  // namespace
}  // namespace kiln::model
