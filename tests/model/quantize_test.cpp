// int8 post-training static quantisation (export_int8): the quantised module tracks the float
// network within int8 rounding, folds batch norm and TTA like the float export, survives
// save/load (repacked on the oneDNN engine), and refuses layers it cannot quantise by name.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <sstream>

#include "export_helpers.h"
#include "kiln/model/export.h"

namespace kiln::model {
namespace {

using testing::build_net;

constexpr const char* kBatchNormCnn = R"({"layers": [
    {"type": "conv2d", "out": 16, "kernel": 3, "padding": 1, "bias": false},
    {"type": "batchnorm2d"}, {"type": "relu"}, {"type": "maxpool2d", "kernel": 2},
    {"type": "conv2d", "out": 32, "kernel": 3, "padding": 1}, {"type": "batchnorm2d"},
    {"type": "relu"}, {"type": "maxpool2d", "kernel": 2},
    {"type": "flatten"}, {"type": "linear", "out": 64}, {"type": "relu"},
    {"type": "dropout", "p": 0.1}, {"type": "linear", "out": "outputs"}]})";

torch::Tensor images(int64_t n, uint64_t seed) {
  torch::manual_seed(seed);
  // Smooth-ish images: low-frequency blobs plus noise, 0..255.
  torch::Tensor base = torch::rand({n, 1, 7, 7});
  torch::Tensor up = torch::upsample_bilinear2d(base, {28, 28}, false);
  return ((up * 0.8 + torch::rand({n, 1, 28, 28}) * 0.2) * 255).to(torch::kFloat32);
}

/// The TorchScript graphs of every method of `m`, as text.
std::string graph_text(const torch::jit::Module& m) {
  std::string text;
  for (const torch::jit::Method& method : m.get_methods())
    text += torch::jit::toGraphFunction(method.function()).graph()->toString();
  return text;
}

TEST(ExportInt8, TracksTheFloatNetworkAndFoldsPreprocessingAndFlip) {
  auto net = build_net(kBatchNormCnn, {1, 28, 28}, 10);
  ASSERT_TRUE(net);
  const Json pre = testing::image_normalize({0.45}, {0.25});
  for (const char* tta : {kTtaNone, kTtaFlip}) {
    auto fp32 = export_torchscript(*net, pre, tta);
    ASSERT_TRUE(fp32.ok()) << fp32.status();
    Int8Report report;
    auto int8 = export_int8(net->spec(), network_state(*net), net->input_shape(), net->outputs(),
                            pre, tta, images(512, 1), &report);
    ASSERT_TRUE(int8.ok()) << int8.status();
    EXPECT_EQ(report.quantised_layers, 4);
    EXPECT_EQ(report.calibration_rows, 512);
    EXPECT_EQ(report.ranges.size(), 5u);
    torch::NoGradGuard no_grad;
    const torch::Tensor x = images(256, 2);
    const torch::Tensor want = fp32->forward({x}).toTensor();
    const torch::Tensor got = int8->forward({x}).toTensor();
    ASSERT_EQ(got.sizes(), want.sizes());
    EXPECT_EQ(got.scalar_type(), torch::kFloat32);
    const double spread = want.std().item<double>();
    const double err = (got - want).abs().mean().item<double>();
    EXPECT_LT(err, 0.1 * spread) << tta << ": mean |int8 - fp32| " << err << ", spread " << spread;
    const double agree = got.argmax(1).eq(want.argmax(1)).to(torch::kFloat64).mean().item<double>();
    EXPECT_GE(agree, 0.85) << tta;
    // The source runs on quantised operators, and save/load gives the same outputs.
    std::stringstream saved;
    int8->save(saved);
    torch::jit::Module loaded = torch::jit::load(saved);
    EXPECT_TRUE(torch::equal(loaded.forward({x}).toTensor(), got)) << tta;
    EXPECT_LT(saved.str().size(), 600000u);  // 4x smaller weights than fp32's ~1 MB
    // One grey mean/std: the pixels are the quint8 input (no quantize pass), and the flatten
    // and the first linear layer run as one convolution over the whole 32x7x7 map.
    const std::string graphs = graph_text(*int8);
    EXPECT_NE(graphs.find("aten::_make_per_tensor_quantized_tensor"), std::string::npos) << tta;
    EXPECT_EQ(graphs.find("aten::quantize_per_tensor"), std::string::npos) << tta;
    auto count = [&](const std::string& op) {
      size_t n = 0;
      for (size_t at = graphs.find(op); at != std::string::npos; at = graphs.find(op, at + 1)) ++n;
      return n;
    };
    EXPECT_EQ(count("quantized::conv2d_relu("), 3u) << graphs;
    EXPECT_EQ(count("quantized::linear("), 1u) << graphs;
    EXPECT_EQ(count("quantized::linear_relu("), 0u) << graphs;
  }
}

TEST(ExportInt8, PerChannelNormalisationQuantisesItsInput) {
  // RGB with a mean and std per channel: no single quint8 scale holds the pixels, so the
  // float prologue runs and its output is quantised; the module still tracks the float one.
  auto net = build_net(kBatchNormCnn, {3, 28, 28}, 10);
  ASSERT_TRUE(net);
  const Json pre = testing::image_normalize({0.45, 0.5, 0.4}, {0.25, 0.3, 0.2});
  const torch::Tensor calibration = images(512 * 3, 3).reshape({512, 3, 28, 28});
  auto fp32 = export_torchscript(*net, pre, kTtaFlip);
  ASSERT_TRUE(fp32.ok()) << fp32.status();
  auto int8 = export_int8(net->spec(), network_state(*net), net->input_shape(), net->outputs(), pre,
                          kTtaFlip, calibration, nullptr);
  ASSERT_TRUE(int8.ok()) << int8.status();
  torch::NoGradGuard no_grad;
  const torch::Tensor x = images(256 * 3, 4).reshape({256, 3, 28, 28});
  const torch::Tensor want = fp32->forward({x}).toTensor();
  const torch::Tensor got = int8->forward({x}).toTensor();
  const double spread = want.std().item<double>();
  EXPECT_LT((got - want).abs().mean().item<double>(), 0.1 * spread);
  const std::string graphs = graph_text(*int8);
  EXPECT_NE(graphs.find("aten::quantize_per_tensor"), std::string::npos);
  EXPECT_EQ(graphs.find("aten::_make_per_tensor_quantized_tensor"), std::string::npos);
}

TEST(ExportInt8, UnsupportedLayersAndBadCalibrationAreNamed) {
  auto net = build_net(R"({"layers": [{"type": "linear", "out": 16}, {"type": "tanh"},
      {"type": "linear", "out": "outputs"}]})",
                       {8}, 3);
  ASSERT_TRUE(net);
  auto bad = export_int8(net->spec(), network_state(*net), {8}, 3, Json(), kTtaNone,
                         torch::randn({32, 8}));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("layers.1 (tanh): not supported by int8"),
            std::string::npos)
      << bad.status();
  auto mlp = build_net(R"({"layers": [{"type": "linear", "out": 16}, {"type": "relu"},
      {"type": "linear", "out": "outputs"}]})",
                       {8}, 3);
  ASSERT_TRUE(mlp);
  auto none =
      export_int8(mlp->spec(), network_state(*mlp), {8}, 3, Json(), kTtaNone, torch::Tensor());
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("no calibration rows"), std::string::npos);
  auto ok = export_int8(mlp->spec(), network_state(*mlp), {8}, 3, Json(), kTtaNone,
                        torch::randn({64, 8}));
  ASSERT_TRUE(ok.ok()) << ok.status();
}

}  // namespace
}  // namespace kiln::model
