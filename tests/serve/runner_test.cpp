// Preparing a bundle's TorchScript module for CPU serving: XNNPACK prepacked linear layers with
// the outputs checked against the saved module; convolutional models stay as saved.
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
  EXPECT_TRUE(torch::allclose(first_output(prepared.module, x), first_output(*saved, x), 1e-4,
                              1e-5));
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

}  // namespace
}  // namespace kiln::serve
