// L1-norm structured pruning (prune_l1): the weakest filters go, with their batch-norm
// statistics and the next layer's inputs (through flatten); pruning filters that are exactly
// zero leaves the network's function unchanged, and FLOPs and parameters fall as the widths do.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "kiln/compress/compress.h"
#include "kiln/model/bundle.h"
#include "kiln/model/export.h"
#include "kiln/model/network.h"

namespace kiln::compress {
namespace {

constexpr const char* kCnn = R"({"layers": [
    {"type": "conv2d", "out": 8, "kernel": 3, "padding": 1, "bias": false},
    {"type": "batchnorm2d"}, {"type": "relu"}, {"type": "maxpool2d", "kernel": 2},
    {"type": "conv2d", "out": 16, "kernel": 3, "padding": 1, "bias": false},
    {"type": "batchnorm2d"}, {"type": "relu"}, {"type": "maxpool2d", "kernel": 2},
    {"type": "flatten"}, {"type": "linear", "out": 12}, {"type": "relu"},
    {"type": "dropout", "p": 0.1}, {"type": "linear", "out": "outputs"}]})";

std::shared_ptr<model::NetworkImpl> make_net() {
  auto spec = model::parse_model_spec(Json::parse(kCnn));
  EXPECT_TRUE(spec.ok()) << spec.status();
  auto net = model::NetworkImpl::Create(*spec, {1, 12, 12}, 4, 3);
  EXPECT_TRUE(net.ok()) << net.status();
  (*net)->eval();
  return *net;
}

/// Makes half of each hidden layer's output channels exactly dead (zero weights, zero batch-norm
/// shift and mean): they contribute nothing downstream, so pruning them changes nothing.
void kill_odd_channels(model::NetworkImpl& net) {
  torch::NoGradGuard no_grad;
  auto state = model::network_state(net);
  for (int layer : {0, 4}) {
    const std::string p = "layers." + std::to_string(layer) + ".";
    const std::string bn = "layers." + std::to_string(layer + 1) + ".";
    state[bn + "running_mean"].uniform_(-0.5, 0.5);
    state[bn + "running_var"].uniform_(0.5, 2.0);
    state[bn + "bias"].uniform_(-0.2, 0.2);
    for (int64_t c = 1; c < state[p + "weight"].size(0); c += 2) {
      state[p + "weight"][c].zero_();
      state[bn + "running_mean"][c] = 0;
      state[bn + "bias"][c] = 0;
    }
  }
  for (int64_t r = 1; r < 12; r += 2) {
    state["layers.9.weight"][r].zero_();
    state["layers.9.bias"][r] = -1;  // dead after the ReLU
  }
}

TEST(PruneL1, RemovingDeadChannelsKeepsTheFunction) {
  auto net = make_net();
  kill_odd_channels(*net);
  auto pruned = prune_l1(net->spec(), model::network_state(*net), {1, 12, 12}, 4, 0.5);
  ASSERT_TRUE(pruned.ok()) << pruned.status();
  EXPECT_EQ(pruned->spec.layers[0].params["out"], 4);
  EXPECT_EQ(pruned->spec.layers[4].params["out"], 8);
  EXPECT_EQ(pruned->spec.layers[9].params["out"], 6);
  EXPECT_EQ(pruned->spec.layers[12].params["out"], "outputs");
  EXPECT_EQ(pruned->state.at("layers.4.weight").sizes(), (c10::IntArrayRef{8, 4, 3, 3}));
  EXPECT_EQ(pruned->state.at("layers.5.running_var").size(0), 8);
  EXPECT_EQ(pruned->state.at("layers.9.weight").sizes(), (c10::IntArrayRef{6, 8 * 3 * 3}));
  EXPECT_EQ(pruned->state.at("layers.12.weight").sizes(), (c10::IntArrayRef{4, 6}));
  ASSERT_EQ(pruned->report.size(), 3u);
  EXPECT_EQ(pruned->report[1]["kept"], 8);
  auto small = model::NetworkImpl::Create(pruned->spec, {1, 12, 12}, 4, 0);
  ASSERT_TRUE(small.ok()) << small.status();
  ASSERT_TRUE(model::load_network_state(**small, pruned->state).ok());
  (*small)->eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor x = torch::randn({16, 1, 12, 12});
  const torch::Tensor want = net->forward(x), got = (*small)->forward(x);
  EXPECT_LT((want - got).abs().max().item<double>(), 1e-5);
  // Half the channels: conv FLOPs fall to about a quarter (inputs and outputs both halve).
  EXPECT_LT(pruned->flops_after, pruned->flops_before / 2);
  EXPECT_LT(pruned->params_after, pruned->params_before / 2);
}

TEST(PruneL1, KeepsTheStrongestFiltersAndRefusesWhatItCannotPrune) {
  auto net = make_net();
  auto state = model::network_state(*net);
  {
    torch::NoGradGuard no_grad;
    state["layers.0.weight"][6].mul_(100);  // the strongest filter of the first layer
  }
  auto pruned = prune_l1(net->spec(), state, {1, 12, 12}, 4, 0.75);
  ASSERT_TRUE(pruned.ok()) << pruned.status();
  EXPECT_EQ(pruned->spec.layers[0].params["out"], 2);
  const torch::Tensor kept = pruned->state.at("layers.0.weight");
  EXPECT_TRUE(torch::equal(kept[1], state["layers.0.weight"][6]) ||
              torch::equal(kept[0], state["layers.0.weight"][6]));
  auto bad_ratio = prune_l1(net->spec(), state, {1, 12, 12}, 4, 1.0);
  EXPECT_FALSE(bad_ratio.ok());
  auto resnet_spec = model::parse_model_spec(Json::parse(R"({"layers": [
      {"type": "conv2d", "out": 4, "kernel": 3, "padding": 1},
      {"type": "residual", "body": [{"type": "conv2d", "out": 4, "kernel": 3, "padding": 1}]},
      {"type": "flatten"}, {"type": "linear", "out": "outputs"}]})"));
  ASSERT_TRUE(resnet_spec.ok());
  auto resnet = model::NetworkImpl::Create(*resnet_spec, {1, 6, 6}, 2, 0);
  ASSERT_TRUE(resnet.ok());
  auto refused = prune_l1(*resnet_spec, model::network_state(**resnet), {1, 6, 6}, 2, 0.5);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("layers.1 (residual)"), std::string::npos)
      << refused.status();
}

}  // namespace
}  // namespace kiln::compress
