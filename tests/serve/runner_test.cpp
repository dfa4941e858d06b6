// Preparing a bundle's TorchScript module for CPU serving: XNNPACK prepacked linear layers with
// the outputs checked against the saved module; convolutional models stay as saved; large
// batches split into smaller forwards give the whole batch's outputs.
#include "kiln/serve/runner.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "kiln/model/export.h"
#include "model/export_helpers.h"

namespace kiln::serve {
namespace {

torch::Tensor first_output(torch::jit::Module& m, const torch::Tensor& x) {
  TorchScriptRunner runner(m);
  auto out = runner.run(x);
  EXPECT_TRUE(out.ok()) << out.status();
  return out.ok() ? (*out)[0] : torch::Tensor();
}

TEST(PrepackForCpuServing, MlpGetsXnnpackLinearsWithTheSameOutputs) {
  auto net = model::testing::build_net(R"({"layers": [{"type": "linear", "out": 64},
      {"type": "relu"}, {"type": "dropout", "p": 0.3}, {"type": "linear", "out": "outputs"}]})",
                                       {20}, 3);
  ASSERT_TRUE(net);
  auto saved = model::export_torchscript(*net);
  ASSERT_TRUE(saved.ok()) << saved.status();
  saved->eval();
  ServingModule prepared = prepack_for_cpu_serving(*saved, torch::rand({3, 20}));
  ASSERT_TRUE(prepared.prepacked) << prepared.note;
  const std::string graph = prepared.module.get_method("forward").graph()->toString();
  EXPECT_NE(graph.find("prepacked::linear_clamp_run"), std::string::npos) << graph;
  const torch::Tensor x = torch::randn({17, 20});  // not the probe, another batch size
  EXPECT_TRUE(
      torch::allclose(first_output(prepared.module, x), first_output(*saved, x), 1e-4, 1e-5));
}

TEST(PrepackForCpuServing, ConvolutionalModelsAreServedAsSaved) {
  auto net = model::testing::build_net(model::testing::kPeerCnn, {1, 28, 28}, 10);
  ASSERT_TRUE(net);
  auto saved = model::export_torchscript(*net);
  ASSERT_TRUE(saved.ok()) << saved.status();
  saved->eval();
  ServingModule prepared = prepack_for_cpu_serving(*saved, torch::rand({3, 1, 28, 28}));
  EXPECT_FALSE(prepared.prepacked);
  EXPECT_NE(prepared.note.find("convolutions"), std::string::npos) << prepared.note;
  const torch::Tensor x = torch::randn({2, 1, 28, 28});
  EXPECT_TRUE(torch::equal(first_output(prepared.module, x), first_output(*saved, x)));
}

TEST(ForwardChunking, ChunkedForwardsGiveTheWholeBatchsOutputsInOrder) {
  // Two outputs (a tuple), one of them per-row dependent on the row's position in nothing but
  // its own values: concatenated chunks must line up row for row.
  torch::jit::Module m("m");
  m.define(R"(
def forward(self, x):
    return (x * 2.0 + 1.0, x.sum(1, keepdim=True))
)");
  const torch::Tensor x = torch::randn({23, 4});
  TorchScriptRunner whole(m), chunked(m, 5);
  EXPECT_EQ(chunked.rows_per_forward(), 5);
  auto a = whole.run(x);
  auto b = chunked.run(x);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_EQ(b->size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ((*b)[i].size(0), 23);
    EXPECT_TRUE(torch::equal((*a)[i], (*b)[i])) << i;
  }
  // A batch no larger than the chunk is one forward; an error in a chunk is the run's error.
  auto small = chunked.run(x.slice(0, 0, 5));
  ASSERT_TRUE(small.ok());
  EXPECT_TRUE(torch::equal((*small)[0], (*a)[0].slice(0, 0, 5)));
  Expected<std::vector<torch::Tensor>> failed = chunked.run(torch::randn({12}));  // no dim 1
  ASSERT_FALSE(failed.ok());
  EXPECT_NE(failed.status().message().find("model forward failed"), std::string::npos);
}

}  // namespace
}  // namespace kiln::serve
