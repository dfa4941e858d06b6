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

TEST(TorchScriptRunnerTest, RunsLargeBatchesInChunksAndReturnsFloat32OnTheCpu) {
  // A float64 result comes back float32, chunked or not (model::forward_in_chunks is tested with
  // the model stage); a failing chunk is the run's error.
  torch::jit::Module m("m");
  m.define(R"(
def forward(self, x):
    return x.double() * 3.0
)");
  const torch::Tensor x = torch::randn({11, 2});
  TorchScriptRunner chunked(m, 4);
  EXPECT_EQ(chunked.rows_per_forward(), 4);
  auto out = chunked.run(x);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ((*out)[0].scalar_type(), torch::kFloat32);
  EXPECT_TRUE(torch::allclose((*out)[0], x * 3.0));
  torch::jit::Module failing("f");
  failing.define(R"(
def forward(self, x):
    return x.sum(1)
)");
  Expected<std::vector<torch::Tensor>> failed =
      TorchScriptRunner(failing, 4).run(torch::randn({12}));  // no dim 1
  ASSERT_FALSE(failed.ok());
  EXPECT_NE(failed.status().message().find("model forward failed"), std::string::npos);
}

}  // namespace
}  // namespace kiln::serve
