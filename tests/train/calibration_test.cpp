// Temperature scaling: the fitted T minimises the NLL and recovers the temperature that made a
// calibrated model's logits overconfident; folding T into the last layer divides the network's
// outputs by it; layers a scale does not pass through are refused by index. And the expected
// calibration error against values worked out by hand.
#include "kiln/train/calibration.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "kiln/model/bundle.h"
#include "kiln/model/export.h"
#include "kiln/model/network.h"
#include "kiln/model/spec.h"
#include "kiln/train/metrics.h"

namespace kiln::train {
namespace {

/// N rows of K-class logits whose labels are drawn from softmax(logits): calibrated at T = 1.
std::pair<torch::Tensor, torch::Tensor> calibrated_rows(int64_t n, int64_t k, uint64_t seed) {
  torch::manual_seed(seed);
  const torch::Tensor logits = torch::randn({n, k}, torch::kFloat64) * 2.0;
  const torch::Tensor labels = torch::multinomial(torch::softmax(logits, 1), 1).reshape({-1});
  return {logits, labels};
}

TEST(CalibrationTest, FittedTemperatureRecoversTheOverconfidence) {
  const auto [logits, labels] = calibrated_rows(20000, 5, 11);
  for (double made : {0.5, 1.0, 3.0}) {
    auto t = fit_temperature(logits * made, labels);  // logits made `made` times sharper
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_NEAR(*t, made, 0.06 * made) << made;
    // A minimum: either side is worse.
    const double at = temperature_nll(logits * made, labels, *t);
    EXPECT_LT(at, temperature_nll(logits * made, labels, *t * 1.02));
    EXPECT_LT(at, temperature_nll(logits * made, labels, *t / 1.02));
    EXPECT_LE(at, temperature_nll(logits * made, labels, 1.0));
  }
}

TEST(CalibrationTest, SeparatedRowsGetTheLowerBoundAndBadShapesAreRefused) {
  const torch::Tensor logits = torch::tensor({{2.0, -2.0}, {-1.0, 3.0}, {4.0, 0.0}});
  const torch::Tensor labels = torch::tensor({0, 1, 0});
  auto t = fit_temperature(logits, labels);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(*t, kMinTemperature);
  EXPECT_FALSE(fit_temperature(torch::zeros({3, 1}), labels).ok());
  EXPECT_FALSE(fit_temperature(logits, torch::tensor({0, 1})).ok());
}

TEST(CalibrationTest, FoldingDividesTheOutputsByTheTemperature) {
  auto spec = model::parse_model_spec(Json::parse(
      R"({"layers": [{"type": "linear", "out": 16}, {"type": "batchnorm1d"}, {"type": "relu"},
                     {"type": "linear", "out": "outputs"}, {"type": "dropout", "p": 0.2}]})"));
  ASSERT_TRUE(spec.ok()) << spec.status();
  auto net = model::NetworkImpl::Create(*spec, {6}, 3, 5);
  ASSERT_TRUE(net.ok()) << net.status();
  (*net)->eval();
  const torch::Tensor x = torch::randn({8, 6});
  const torch::Tensor before = (*net)->forward(x).detach();
  model::TensorMap state = model::network_state(**net);
  const torch::Tensor original_weight = state.at("layers.0.weight").clone();
  ASSERT_TRUE(fold_temperature(*spec, &state, 2.5).ok());
  EXPECT_TRUE(torch::equal(state.at("layers.0.weight"), original_weight));  // only the last
  ASSERT_TRUE(model::load_network_state(**net, state).ok());
  EXPECT_TRUE(torch::allclose((*net)->forward(x), before / 2.5, 1e-5, 1e-6));

  // A squashing layer after the last weights: refused, naming it.
  auto squashed = model::parse_model_spec(
      Json::parse(R"({"layers": [{"type": "linear", "out": "outputs"}, {"type": "tanh"}]})"));
  ASSERT_TRUE(squashed.ok());
  model::TensorMap unused;
  const Status refused = fold_temperature(*squashed, &unused, 2.0);
  EXPECT_EQ(refused.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(refused.message().find("layer 1 (tanh)"), std::string::npos) << refused;
  EXPECT_FALSE(fold_temperature(*spec, &state, 0.0).ok());
}

TEST(CalibrationTest, ExpectedCalibrationErrorMatchesHandComputedBins) {
  // Confidences 0.9, 0.9, 0.6, 0.6 (two classes: softmax of [log c, log(1-c)]), the first and
  // third right: bin (0.8667, 0.9333] holds 2 rows at accuracy 0.5 and confidence 0.9, bin
  // (0.5333, 0.6] 2 rows at accuracy 0.5 and confidence 0.6. ECE = 0.5·0.4 + 0.5·0.1 = 0.25.
  auto row = [](double c) { return std::vector<double>{std::log(c), std::log(1 - c)}; };
  std::vector<double> flat;
  for (double c : {0.9, 0.9, 0.6, 0.6})
    for (double v : row(c)) flat.push_back(v);
  const torch::Tensor logits = torch::tensor(flat, torch::kFloat64).reshape({4, 2});
  const torch::Tensor labels = torch::tensor({0, 1, 0, 1});
  auto ece = expected_calibration_error(logits, labels);
  ASSERT_TRUE(ece.ok()) << ece.status();
  EXPECT_NEAR(*ece, 0.25, 1e-12);
  // One bin: |mean accuracy − mean confidence| = |0.5 − 0.75|.
  EXPECT_NEAR(*expected_calibration_error(logits, labels, 1), 0.25, 1e-12);
  // Labels drawn from the probabilities: nearly calibrated; three times sharper: far from it.
  const auto [drawn, drawn_labels] = calibrated_rows(20000, 4, 3);
  EXPECT_LT(*expected_calibration_error(drawn, drawn_labels), 0.02);
  EXPECT_GT(*expected_calibration_error(drawn * 3, drawn_labels), 0.08);
  EXPECT_FALSE(expected_calibration_error(logits, labels, 0).ok());
  EXPECT_FALSE(expected_calibration_error(logits.slice(1, 0, 1), labels).ok());
}

}  // namespace
}  // namespace kiln::train
