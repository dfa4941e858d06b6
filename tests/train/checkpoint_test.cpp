#include "kiln/train/checkpoint.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "kiln/model/network.h"
#include "kiln/model/spec.h"
#include "kiln/train/optim.h"
#include "support/test_support.h"

namespace kiln::train {
namespace {

using kiln::testing::TempDir;

std::shared_ptr<model::NetworkImpl> make_net(uint64_t seed) {
  auto spec = model::zoo_model("mlp", {{"hidden", {8}}, {"dropout", 0.2}});
  EXPECT_TRUE(spec.ok()) << spec.status();
  auto net = model::NetworkImpl::Create(*spec, {5}, 3, seed);
  EXPECT_TRUE(net.ok()) << net.status();
  return *net;
}

void step(model::NetworkImpl& net, torch::optim::Optimizer& opt, int64_t i) {
  torch::manual_seed(100 + i);
  torch::Tensor x = torch::randn({4, 5});
  torch::Tensor y = torch::tensor({0, 1, 2, 1}, torch::kInt64);
  opt.zero_grad();
  torch::nn::functional::cross_entropy(net.forward(x), y).backward();
  opt.step();
}

void expect_same_tensors(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i], b[i])) << i;
}

TEST(CheckpointTest, RoundTripIsBitIdenticalAndTrainingContinuesIdentically) {
  TempDir dir;
  OptimizerConfig oc;
  oc.name = "adamw";
  auto net = make_net(1);
  auto opt = make_optimizer(net->parameters(), oc).value();
  for (int i = 0; i < 3; ++i) step(*net, *opt, i);
  TrainState state;
  state.step = 3;
  state.epoch = 1;
  state.batch = 2;
  state.epoch_loss_sum = 1.25;
  state.epoch_correct = 7;
  state.epoch_samples = 12;
  state.best_metric = 0.75;
  state.best_epoch = 1;
  state.bad_epochs = 0;
  state.history.push_back({{"epoch", 1}, {"val_accuracy", 0.75}});
  state.config_hash = "abc";
  torch::manual_seed(42);
  ASSERT_TRUE(save_checkpoint(dir / "ck.pt", *net, *opt, state).ok());
  const torch::Tensor expected_draw = torch::rand({4});

  auto other = make_net(2);  // different init: every value must come from the file
  auto other_opt = make_optimizer(other->parameters(), oc).value();
  torch::manual_seed(7);
  auto loaded = load_checkpoint(dir / "ck.pt", *other, other_opt.get());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE(torch::equal(torch::rand({4}), expected_draw));  // RNG restored
  EXPECT_EQ(loaded->to_json(), state.to_json());
  expect_same_tensors(net->parameters(), other->parameters());
  expect_same_tensors(net->buffers(), other->buffers());

  // The optimizer state came along: one more identical step on each stays identical.
  net->train();
  other->train();
  step(*net, *opt, 9);
  step(*other, *other_opt, 9);
  expect_same_tensors(net->parameters(), other->parameters());
}

TEST(CheckpointTest, MissingAndCorruptFilesAreReported) {
  TempDir dir;
  auto net = make_net(1);
  auto opt = make_optimizer(net->parameters(), OptimizerConfig()).value();
  auto missing = load_checkpoint(dir / "none.pt", *net, opt.get());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  kiln::testing::write_text(dir / "bad.pt", "not a zip archive");
  auto bad = load_checkpoint(dir / "bad.pt", *net, opt.get());
  EXPECT_EQ(bad.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(bad.status().message().find("bad.pt"), std::string::npos);
}

TEST(CheckpointTest, SavingOverAnExistingCheckpointReplacesItWhole) {
  TempDir dir;
  auto net = make_net(1);
  auto opt = make_optimizer(net->parameters(), OptimizerConfig()).value();
  TrainState a;
  a.step = 1;
  ASSERT_TRUE(save_checkpoint(dir / "ck.pt", *net, *opt, a).ok());
  TrainState b;
  b.step = 2;
  ASSERT_TRUE(save_checkpoint(dir / "ck.pt", *net, *opt, b).ok());
  auto loaded = load_checkpoint(dir / "ck.pt", *net, opt.get(), false);
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(loaded->step, 2);
  // No temp files are left behind.
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir.path())) files += e.is_regular_file();
  EXPECT_EQ(files, 1);
}

TEST(CheckpointTest, WeightsOnlyRoundTrip) {
  TempDir dir;
  auto a = make_net(1);
  auto b = make_net(2);
  ASSERT_TRUE(save_weights(dir / "w.pt", *a).ok());
  ASSERT_TRUE(load_weights(dir / "w.pt", *b).ok());
  expect_same_tensors(a->parameters(), b->parameters());
}

}  // namespace
}  // namespace kiln::train
