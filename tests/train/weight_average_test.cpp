#include "kiln/train/weight_average.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "kiln/train/checkpoint.h"
#include "support/test_support.h"

namespace kiln::train {
namespace {

using kiln::testing::TempDir;

/// Linear then batch norm: parameters, floating buffers (running statistics) and an integer one.
struct Net : torch::nn::Module {
  Net() {
    linear = register_module("linear", torch::nn::Linear(3, 2));
    norm = register_module("norm", torch::nn::BatchNorm1d(2));
  }
  torch::Tensor forward(const torch::Tensor& x) { return norm(linear(x)); }
  torch::nn::Linear linear{nullptr};
  torch::nn::BatchNorm1d norm{nullptr};
};

void fill(Net& net, float value) {
  torch::NoGradGuard no_grad;
  for (auto& p : net.parameters()) p.fill_(value);
  for (auto& b : net.buffers())
    if (b.is_floating_point()) b.fill_(value);
}

TEST(WeightAverageTest, AveragesParametersAndFloatingBuffersAtTheGivenDecay) {
  Net net;
  fill(net, 1.0f);
  WeightAverage ema(net, 0.75, /*warmup=*/false);
  // Parameters (weight, bias, gamma, beta) and running mean and variance; not the batch count.
  ASSERT_EQ(ema.averages().size(), 6u);
  fill(net, 5.0f);
  ema.update(0);  // 0.75 * 1 + 0.25 * 5 = 2
  fill(net, 10.0f);
  ema.update(1);  // 0.75 * 2 + 0.25 * 10 = 4
  for (const auto& a : ema.averages()) EXPECT_TRUE(torch::allclose(a, torch::full_like(a, 4.0)));
  // swap: the network holds the averages, the averages the network's values; again: back.
  ema.swap();
  EXPECT_TRUE(torch::allclose(net.linear->weight, torch::full({2, 3}, 4.0)));
  EXPECT_TRUE(torch::allclose(net.norm->running_var, torch::full({2}, 4.0)));
  for (const auto& a : ema.averages()) EXPECT_TRUE(torch::allclose(a, torch::full_like(a, 10.0)));
  ema.swap();
  EXPECT_TRUE(torch::allclose(net.linear->weight, torch::full({2, 3}, 10.0)));
  for (const auto& a : ema.averages()) EXPECT_TRUE(torch::allclose(a, torch::full_like(a, 4.0)));
}

TEST(WeightAverageTest, WarmupFollowsTensorFlowsScheduleUpToTheDecay) {
  Net net;
  WeightAverage warm(net, 0.999, /*warmup=*/true);
  EXPECT_DOUBLE_EQ(warm.decay_at(0), 0.1);
  EXPECT_DOUBLE_EQ(warm.decay_at(90), 91.0 / 100.0);
  EXPECT_DOUBLE_EQ(warm.decay_at(1000000), 0.999);
  WeightAverage cold(net, 0.999, /*warmup=*/false);
  EXPECT_DOUBLE_EQ(cold.decay_at(0), 0.999);
  // At step 0 with warmup, the average is mostly the network after its first step.
  fill(net, 0.0f);
  WeightAverage first(net, 0.999, /*warmup=*/true);
  fill(net, 1.0f);
  first.update(0);
  EXPECT_NEAR(first.averages()[0].mean().item<double>(), 0.9, 1e-6);
}

TEST(WeightAverageTest, CheckpointKeepsTheAveragesAndRefusesOneWithout) {
  TempDir dir;
  Net net;
  fill(net, 2.0f);
  auto optimizer = torch::optim::SGD(net.parameters(), 0.1);
  WeightAverage ema(net, 0.5, /*warmup=*/false);
  fill(net, 4.0f);
  ema.update(0);  // 3
  TrainState state;
  state.step = 1;
  ASSERT_TRUE(save_checkpoint(dir / "with.pt", net, optimizer, state, ema.averages()).ok());
  ASSERT_TRUE(save_checkpoint(dir / "without.pt", net, optimizer, state).ok());

  Net other;
  auto other_optimizer = torch::optim::SGD(other.parameters(), 0.1);
  WeightAverage restored(other, 0.5, /*warmup=*/false);
  auto loaded =
      load_checkpoint(dir / "with.pt", other, &other_optimizer, false, &restored.averages());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE(torch::allclose(other.linear->weight, torch::full({2, 3}, 4.0)));
  for (const auto& a : restored.averages())
    EXPECT_TRUE(torch::allclose(a, torch::full_like(a, 3.0)));

  auto refused =
      load_checkpoint(dir / "without.pt", other, &other_optimizer, false, &restored.averages());
  EXPECT_EQ(refused.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(refused.status().message().find("no weight averages"), std::string::npos)
      << refused.status().message();
}

}  // namespace
}  // namespace kiln::train
