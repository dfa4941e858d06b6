// TorchScript export: the generated module equals the eager network in eval mode, with the fitted
// preprocessing folded in, and survives save/load.
#include "kiln/model/export.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <limits>
#include <sstream>

#include "export_helpers.h"
#include "kiln/features/imputer.h"
#include "kiln/features/pca.h"
#include "kiln/features/pipeline.h"
#include "kiln/features/scalers.h"
#include "kiln/features/selection.h"
#include "kiln/model/export_plan.h"
#include "support/test_support.h"

namespace kiln::model {
namespace {

using testing::build_net;
using testing::max_abs_diff;

torch::Tensor run(torch::jit::Module& m, const torch::Tensor& x) {
  return m.forward({x}).toTensor();
}

/// Exports `net` without preprocessing and checks it against eager eval on `x`.
void expect_export_matches(NetworkImpl& net, const torch::Tensor& x) {
  auto m = export_torchscript(net);
  ASSERT_TRUE(m.ok()) << m.status();
  torch::NoGradGuard no_grad;
  torch::Tensor want = net.forward(x);
  torch::Tensor got = run(*m, x);
  EXPECT_LE(max_abs_diff(got, want), 1e-5);
}

TEST(Export, MlpMatchesEager) {
  auto net = build_net(R"({"layers": [{"type": "linear", "out": 64}, {"type": "relu"},
      {"type": "dropout", "p": 0.3}, {"type": "linear", "out": 32, "bias": false},
      {"type": "tanh"}, {"type": "linear", "out": "outputs"}]})",
                       {20}, 3);
  ASSERT_TRUE(net);
  expect_export_matches(*net, torch::randn({50, 20}));
}

TEST(Export, PeerCnnMatchesEager) {
  auto net = build_net(testing::kPeerCnn, {1, 28, 28}, 10);
  ASSERT_TRUE(net);
  expect_export_matches(*net, torch::randn({8, 1, 28, 28}));
}

TEST(Export, Fp32ConvolutionsRunChannelsLastAndMlpsDoNot) {
  // oneDNN's fp32 convolutions are 1.8x faster channels_last: the weights are stored so (even
  // the one-input-channel ones, whose strides are ambiguous) and the input is made so.
  auto cnn = build_net(testing::kPeerCnn, {1, 28, 28}, 10);
  ASSERT_TRUE(cnn);
  auto m = export_torchscript(*cnn);
  ASSERT_TRUE(m.ok()) << m.status();
  int four_d = 0;
  for (const auto& p : m->named_parameters()) {
    if (p.value.dim() != 4) continue;
    ++four_d;
    EXPECT_EQ(p.value.stride(1), 1) << p.name << " is not channels_last";
  }
  EXPECT_GT(four_d, 0);
  EXPECT_NE(m->get_method("forward").graph()->toString().find("aten::contiguous"),
            std::string::npos);
  auto mlp = build_net(R"({"layers": [{"type": "flatten"}, {"type": "linear", "out": "outputs"}]})",
                       {1, 28, 28}, 10);
  ASSERT_TRUE(mlp);
  auto flat = export_torchscript(*mlp);
  ASSERT_TRUE(flat.ok()) << flat.status();
  EXPECT_EQ(flat->get_method("forward").graph()->toString().find("aten::contiguous"),
            std::string::npos);
}

TEST(Export, CnnWithBatchNormUsesRunningStatistics) {
  auto net = build_net(testing::kBatchNormCnn, {3, 12, 12}, 4);
  ASSERT_TRUE(net);
  auto state = network_state(*net);
  ASSERT_TRUE(state.count("layers.1.running_mean"));
  EXPECT_GT(state["layers.1.running_mean"].abs().max().item<float>(), 0.05);
  EXPECT_GT((state["layers.1.running_var"] - 1).abs().max().item<float>(), 0.05);
  expect_export_matches(*net, torch::randn({6, 3, 12, 12}) * 3);
}

TEST(Export, ResidualBlocksWithAndWithoutProjection) {
  auto net = build_net(testing::kResidualNet, {3, 11, 9}, 5);
  ASSERT_TRUE(net);
  auto state = network_state(*net);
  EXPECT_TRUE(state.count("layers.4.shortcut.0.weight"));
  EXPECT_TRUE(state.count("layers.4.shortcut.1.running_var"));
  EXPECT_TRUE(state.count("layers.6.shortcut.0.weight"));
  EXPECT_FALSE(state.count("layers.6.shortcut.1.running_var"));
  expect_export_matches(*net, torch::randn({4, 3, 11, 9}));
}

TEST(Export, ZooResnetSmallMatchesEager) {
  auto spec = zoo_model("resnet-small", Json{{"width", 8}, {"depth", 2}, {"stages", 3}});
  ASSERT_TRUE(spec.ok()) << spec.status();
  auto net = build_net(spec->to_json().dump(), {3, 16, 16}, 10);
  ASSERT_TRUE(net);
  expect_export_matches(*net, torch::randn({4, 3, 16, 16}));
}

TEST(Export, ActivationsAndPools) {
  auto net = build_net(testing::kActivationsAndPools, {2, 15, 13}, 1);
  ASSERT_TRUE(net);
  expect_export_matches(*net, torch::randn({7, 2, 15, 13}) * 2);
}

TEST(Export, ImageNormalizationFoldedIn) {
  auto net = build_net(testing::kPeerCnn, {3, 12, 12}, 10);
  ASSERT_TRUE(net);
  const std::vector<double> mean{0.49, 0.48, 0.45}, stdev{0.25, 0.24, 0.26};
  auto m = export_torchscript(*net, testing::image_normalize(mean, stdev));
  ASSERT_TRUE(m.ok()) << m.status();
  torch::Tensor raw = torch::randint(0, 256, {5, 3, 12, 12}).to(torch::kFloat32);
  torch::NoGradGuard no_grad;
  torch::Tensor want = net->forward(testing::normalise_images(raw, mean, stdev));
  EXPECT_LE(max_abs_diff(run(*m, raw), want), 1e-5);

  // A single mean/std broadcasts over grayscale channels; channel-count mismatches are refused.
  auto gray = build_net(testing::kPeerCnn, {1, 28, 28}, 10);
  auto mg = export_torchscript(*gray, testing::image_normalize({0.2860}, {0.3530}));
  ASSERT_TRUE(mg.ok()) << mg.status();
  auto bad = export_torchscript(*net, testing::image_normalize({0.5, 0.5}, {0.2, 0.2}));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("image_normalize"), std::string::npos);
}

// Flip test-time augmentation folded into the module: the mean of the eager network's logits for
// the (normalised) image and its mirror, as the evaluator computes it; refused for tables.
TEST(Export, FlipTestTimeAugmentationFoldedIn) {
  auto net = build_net(testing::kPeerCnn, {1, 28, 28}, 10);
  ASSERT_TRUE(net);
  const std::vector<double> mean{0.2860}, stdev{0.3530};
  auto m = export_torchscript(*net, testing::image_normalize(mean, stdev), kTtaFlip);
  ASSERT_TRUE(m.ok()) << m.status();
  torch::Tensor raw = torch::randint(0, 256, {4, 1, 28, 28}).to(torch::kFloat32);
  torch::NoGradGuard no_grad;
  torch::Tensor x = testing::normalise_images(raw, mean, stdev);
  torch::Tensor want = (net->forward(x) + net->forward(x.flip({3}))) * 0.5;
  torch::Tensor plain = net->forward(x);
  torch::Tensor got = run(*m, raw);
  EXPECT_LE(max_abs_diff(got, want), 1e-5);
  EXPECT_GT(max_abs_diff(got, plain), 1e-4);  // the mirror really is part of the answer

  auto table = build_net(R"({"layers": [{"type": "linear", "out": 2}]})", {30}, 2);
  ASSERT_TRUE(table);
  auto bad = export_torchscript(*table, Json(), kTtaFlip);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("image inputs"), std::string::npos) << bad.status();
  auto unknown = export_torchscript(*net, Json(), "rotate");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("rotate"), std::string::npos) << unknown.status();
}

/// A bf16 export of `net` against the eager fp32 network on `x`: same shape, float32 logits,
/// close within bf16's 8-bit mantissa (relative to the logits' scale), same arg-max on nearly
/// every row.
void expect_bf16_export_close(NetworkImpl& net, const torch::Tensor& x, const Json& pre = Json(),
                              const torch::Tensor& eager_x = {}) {
  auto m = export_torchscript(net, pre, kTtaNone, kPrecisionBf16);
  ASSERT_TRUE(m.ok()) << m.status();
  torch::NoGradGuard no_grad;
  torch::Tensor want = net.forward(eager_x.defined() ? eager_x : x);
  torch::Tensor got = run(*m, x);
  EXPECT_EQ(got.scalar_type(), torch::kFloat32);
  const double scale = want.abs().max().item<double>();
  EXPECT_LE(max_abs_diff(got, want), 0.05 * scale + 0.02);
  const double agree = got.argmax(1).eq(want.argmax(1)).to(torch::kFloat64).mean().item<double>();
  EXPECT_GE(agree, 0.9);
}

TEST(ExportBf16, CnnBatchNormFoldedAndWeightsInBf16) {
  auto net = build_net(R"({"layers": [
      {"type": "conv2d", "out": 8, "kernel": 3, "padding": 1, "bias": false},
      {"type": "batchnorm2d", "eps": 0.001}, {"type": "relu"},
      {"type": "maxpool2d", "kernel": 2},
      {"type": "conv2d", "out": 16, "kernel": [3, 5], "stride": [2, 1], "padding": [1, 2]},
      {"type": "batchnorm2d"}, {"type": "relu"},
      {"type": "flatten"}, {"type": "linear", "out": 24}, {"type": "batchnorm1d"},
      {"type": "relu"}, {"type": "batchnorm1d"},
      {"type": "linear", "out": "outputs"}]})",
                       {3, 12, 12}, 4);
  ASSERT_TRUE(net);
  expect_bf16_export_close(*net, torch::randn({64, 3, 12, 12}) * 3);
  auto source = torchscript_source(net->spec(), network_state(*net), net->input_shape(),
                                   net->outputs(), Json(), kTtaNone, kPrecisionBf16);
  ASSERT_TRUE(source.ok()) << source.status();
  EXPECT_EQ(source->find("batch_norm"), std::string::npos) << *source;
  EXPECT_NE(source->find("folded into the layer above"), std::string::npos) << *source;
  EXPECT_NE(source->find("channels_last"), std::string::npos) << *source;
  EXPECT_NE(source->find("memory_format=2"), std::string::npos) << *source;
  auto m = export_torchscript(*net, Json(), kTtaNone, kPrecisionBf16);
  ASSERT_TRUE(m.ok()) << m.status();
  for (const auto& p : m->parameters()) EXPECT_EQ(p.scalar_type(), torch::kBFloat16);
  // Saved and loaded, it computes the same.
  std::stringstream saved;
  m->save(saved);
  torch::jit::Module loaded = torch::jit::load(saved);
  torch::Tensor x = torch::randn({5, 3, 12, 12});
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(run(*m, x), run(loaded, x)));
}

TEST(ExportBf16, ResidualsFlipAndImageNormalization) {
  auto spec = zoo_model("resnet-small", Json{{"width", 8}, {"depth", 2}, {"stages", 3}});
  ASSERT_TRUE(spec.ok()) << spec.status();
  auto net = build_net(spec->to_json().dump(), {1, 16, 16}, 10);
  ASSERT_TRUE(net);
  const std::vector<double> mean{0.2860}, stdev{0.3530};
  torch::Tensor raw = torch::randint(0, 256, {32, 1, 16, 16}).to(torch::kFloat32);
  expect_bf16_export_close(*net, raw, testing::image_normalize(mean, stdev),
                           testing::normalise_images(raw, mean, stdev));
  auto flip =
      export_torchscript(*net, testing::image_normalize(mean, stdev), kTtaFlip, kPrecisionBf16);
  ASSERT_TRUE(flip.ok()) << flip.status();
  EXPECT_EQ(run(*flip, raw).sizes(), (c10::IntArrayRef{32, 10}));
  auto bad = export_torchscript(*net, Json(), kTtaNone, "fp8");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("fp8"), std::string::npos) << bad.status();
}

/// breast_cancer features with some cells knocked out (NaN), and a train/test split.
TEST(Export, TablePipelineImputerScalerFoldedIn) {
  testing::Tables t = testing::breast_cancer_with_gaps();
  features::Pipeline pipe;
  pipe.add(std::make_unique<features::Imputer>()).add(std::make_unique<features::StandardScaler>());
  ASSERT_TRUE(pipe.fit(t.train).ok());
  auto net = build_net(R"({"layers": [{"type": "linear", "out": 16}, {"type": "relu"},
      {"type": "linear", "out": "outputs"}]})",
                       {30}, 2);
  ASSERT_TRUE(net);
  auto m = export_torchscript(*net, pipe.to_json());
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_GT(torch::isnan(t.test).sum().item<int64_t>(), 0);
  auto z = pipe.apply(t.test);
  ASSERT_TRUE(z.ok());
  torch::NoGradGuard no_grad;
  torch::Tensor want = net->forward(*z);
  torch::Tensor got = run(*m, t.test);
  EXPECT_FALSE(torch::isnan(got).any().item<bool>());
  EXPECT_LE(max_abs_diff(got, want), 1e-5);
  auto raw = raw_input_shape(pipe.to_json(), {30});
  ASSERT_TRUE(raw.ok());
  EXPECT_EQ(*raw, std::vector<int64_t>{30});
}

TEST(Export, TablePipelineWithSelectionPcaAndOtherScalers) {
  testing::Tables t = testing::breast_cancer_with_gaps();
  features::Pipeline pipe = testing::selection_pca_pipeline(&t);
  ASSERT_TRUE(pipe.fit(t.train).ok());
  ASSERT_EQ(pipe.output_features(), 6);
  auto net = build_net(R"({"layers": [{"type": "linear", "out": 8}, {"type": "gelu"},
      {"type": "linear", "out": "outputs"}]})",
                       {6}, 1);
  ASSERT_TRUE(net);
  // Through JSON text, as a bundle stores it.
  Json pre = Json::parse(pipe.to_json().dump());
  auto m = export_torchscript(*net, pre);
  ASSERT_TRUE(m.ok()) << m.status();
  auto z = pipe.apply(t.test);
  ASSERT_TRUE(z.ok());
  torch::NoGradGuard no_grad;
  EXPECT_LE(max_abs_diff(run(*m, t.test), net->forward(*z)), 1e-5);
  auto raw = raw_input_shape(pre, {6});
  ASSERT_TRUE(raw.ok()) << raw.status();
  EXPECT_EQ(*raw, std::vector<int64_t>{30});
}

/// Two categorical code columns (3 and 4 categories) after the 30 numeric ones, with codes
/// training never saw (-1, 7, NaN) in a few rows.
torch::Tensor with_codes(const torch::Tensor& numeric) {
  const int64_t n = numeric.size(0);
  torch::Tensor codes =
      torch::stack({torch::arange(n) % 3, (torch::arange(n) * 7) % 4}, 1).to(torch::kFloat32);
  codes[0][0] = -1;
  codes[1][1] = 7;
  codes[2][0] = std::numeric_limits<float>::quiet_NaN();
  return torch::cat({numeric, codes}, 1);
}

Json two_categorical_encoders() {
  return Json::parse(R"([
      {"column": "site", "encoder": {"kind": "one_hot_encoder", "categories": ["a", "b", "c"]}},
      {"column": "shift", "encoder": {"kind": "one_hot_encoder",
                                      "categories": ["<missing>", "day", "late", "night"]}}])");
}

TEST(Export, CategoricalCodesAreOneHotEncodedAfterTheNumericSteps) {
  testing::Tables t = testing::breast_cancer_with_gaps();
  features::Pipeline pipe;
  pipe.add(std::make_unique<features::Imputer>()).add(std::make_unique<features::StandardScaler>());
  ASSERT_TRUE(pipe.fit(t.train).ok());
  const Json pre = table_preprocessing(pipe.to_json(), two_categorical_encoders());
  ASSERT_EQ(pre["kind"], "table");
  auto net = build_net(R"({"layers": [{"type": "linear", "out": 16}, {"type": "relu"},
      {"type": "linear", "out": "outputs"}]})",
                       {37}, 2);
  ASSERT_TRUE(net);
  auto m = export_torchscript(*net, Json::parse(pre.dump()));
  ASSERT_TRUE(m.ok()) << m.status();
  const torch::Tensor x = with_codes(t.test);
  // What prepare gives the network: the scaled numeric block, then each one-hot block.
  auto z = pipe.apply(t.test);
  ASSERT_TRUE(z.ok());
  auto one_hot = [&](int64_t column, int64_t k) {
    return (x.slice(1, 30 + column, 31 + column) == torch::arange(k, torch::kFloat32))
        .to(torch::kFloat32);
  };
  torch::Tensor prepared = torch::cat({*z, one_hot(0, 3), one_hot(1, 4)}, 1);
  EXPECT_EQ(prepared[0].slice(0, 30, 33).sum().item<float>(), 0);  // -1: unknown
  EXPECT_EQ(prepared[1].slice(0, 33, 37).sum().item<float>(), 0);  // 7: unknown
  EXPECT_EQ(prepared[2].slice(0, 30, 33).sum().item<float>(), 0);  // NaN: unknown
  torch::NoGradGuard no_grad;
  EXPECT_LE(max_abs_diff(run(*m, x), net->forward(prepared)), 1e-5);
  auto raw = raw_input_shape(pre, {37});
  ASSERT_TRUE(raw.ok()) << raw.status();
  EXPECT_EQ(*raw, std::vector<int64_t>{32});
  EXPECT_TRUE(accepts_missing_values(pre));  // its numeric part imputes

  // Categorical columns alone: prepare's numeric pipeline is empty and never fitted.
  const Json codes_only =
      table_preprocessing(features::Pipeline().to_json(), two_categorical_encoders());
  EXPECT_TRUE(codes_only["numeric"].is_null());
  auto small = build_net(R"({"layers": [{"type": "linear", "out": "outputs"}]})", {7}, 2);
  auto mc = export_torchscript(*small, codes_only);
  ASSERT_TRUE(mc.ok()) << mc.status();
  const torch::Tensor c = x.slice(1, 30, 32);
  EXPECT_LE(
      max_abs_diff(run(*mc, c), small->forward(torch::cat({one_hot(0, 3), one_hot(1, 4)}, 1))),
      1e-6);
  EXPECT_FALSE(accepts_missing_values(codes_only));
  // Without encoders the numeric pipeline is the preprocessing, as every older bundle has it.
  EXPECT_EQ(table_preprocessing(pipe.to_json(), Json::array()), pipe.to_json());
  // Categories that do not fit the network's input are named.
  auto wrong =
      export_torchscript(*small, table_preprocessing(pipe.to_json(), two_categorical_encoders()));
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.status().message().find("preprocessing"), std::string::npos) << wrong.status();
}

TEST(Export, TargetEncodedCodesBecomeTheirTableRows) {
  testing::Tables t = testing::breast_cancer_with_gaps();
  features::Pipeline pipe;
  pipe.add(std::make_unique<features::Imputer>()).add(std::make_unique<features::StandardScaler>());
  ASSERT_TRUE(pipe.fit(t.train).ok());
  Json encoders = two_categorical_encoders();
  encoders[1]["encoder"]["target_encoding"] = {
      {"table", {{0.5}, {-1.0}, {2.0}, {0.25}}}, {"mean", {0.4}}, {"std", {0.49}}};
  const Json pre = table_preprocessing(pipe.to_json(), encoders);
  EXPECT_EQ(pre["categorical"][1]["target_table"].size(), 4u);
  auto net = build_net(R"({"layers": [{"type": "linear", "out": 16}, {"type": "relu"},
      {"type": "linear", "out": "outputs"}]})",
                       {34}, 2);  // 30 numeric + 3 one-hot + 1 target-encoded
  ASSERT_TRUE(net);
  auto m = export_torchscript(*net, pre);
  ASSERT_TRUE(m.ok()) << m.status();
  const torch::Tensor x = with_codes(t.test);
  auto z = pipe.apply(t.test);
  ASSERT_TRUE(z.ok());
  const torch::Tensor site =
      (x.slice(1, 30, 31) == torch::arange(3, torch::kFloat32)).to(torch::kFloat32);
  // The shift code's table row; an unknown code (7, -1, NaN) is 0.
  const torch::Tensor table = torch::tensor({0.5f, -1.0f, 2.0f, 0.25f});
  torch::Tensor shift = torch::zeros({x.size(0), 1});
  for (int64_t r = 0; r < x.size(0); ++r) {
    const float code = x[r][31].item<float>();
    if (code >= 0 && code < 4) shift[r][0] = table[static_cast<int64_t>(code)];
  }
  torch::NoGradGuard no_grad;
  EXPECT_LE(max_abs_diff(run(*m, x), net->forward(torch::cat({*z, site, shift}, 1))), 1e-5);
  // A table that is not a row per category is named.
  encoders[1]["encoder"]["target_encoding"]["table"] = {{0.5}, {-1.0}};
  auto wrong = export_torchscript(*net, table_preprocessing(pipe.to_json(), encoders));
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.status().message().find("\"target_table\" must hold 4 rows"), std::string::npos)
      << wrong.status();
}

TEST(Export, SingleTransformAndEmptyPreprocessing) {
  testing::Tables t = testing::breast_cancer_with_gaps();
  features::Imputer imp;
  ASSERT_TRUE(imp.fit(t.train).ok());
  auto net = build_net(R"({"layers": [{"type": "linear", "out": "outputs"}]})", {30}, 1);
  auto m = export_torchscript(*net, imp.to_json());
  ASSERT_TRUE(m.ok()) << m.status();
  torch::NoGradGuard no_grad;
  EXPECT_LE(max_abs_diff(run(*m, t.test), net->forward(*imp.apply(t.test))), 1e-5);
  for (const Json& identity : {Json(), Json::object()}) {
    auto mi = export_torchscript(*net, identity);
    ASSERT_TRUE(mi.ok()) << mi.status();
    torch::Tensor x = torch::randn({3, 30});
    EXPECT_LE(max_abs_diff(run(*mi, x), net->forward(x)), 1e-6);
  }
}

TEST(Export, UnsupportedOrUnfittedStepsAreNamed) {
  auto net = build_net(R"({"layers": [{"type": "linear", "out": "outputs"}]})", {3}, 1);
  Json one_hot = {{"kind", "pipeline"},
                  {"version", 1},
                  {"fitted", true},
                  {"input_features", 1},
                  {"output_features", 3},
                  {"steps",
                   {{{"kind", "one_hot_encoder"},
                     {"version", 1},
                     {"fitted", true},
                     {"input_features", 1},
                     {"output_features", 3},
                     {"categories", {"a", "b", "c"}}}}}};
  auto m = export_torchscript(*net, one_hot);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(m.status().message().find("step 0 (one_hot_encoder)"), std::string::npos) << m.status();

  features::StandardScaler unfitted;
  auto u = export_torchscript(*net, unfitted.to_json());
  ASSERT_FALSE(u.ok());
  EXPECT_NE(u.status().message().find("not fitted"), std::string::npos) << u.status();

  // A pipeline whose output does not match the network input.
  features::StandardScaler s;
  ASSERT_TRUE(s.fit(torch::randn({10, 4})).ok());
  auto w = export_torchscript(*net, s.to_json());
  ASSERT_FALSE(w.ok());
  EXPECT_NE(w.status().message().find("outputs 4 features"), std::string::npos) << w.status();
}

TEST(Export, StateMustMatchTheSpec) {
  auto net = build_net(testing::kPeerCnn, {1, 28, 28}, 10);
  ASSERT_TRUE(net);
  TensorMap state = network_state(*net);

  TensorMap missing = state;
  missing.erase("layers.3.weight");
  auto a = export_torchscript(net->spec(), missing, {1, 28, 28}, 10);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(a.status().message().find("layers.3.weight"), std::string::npos) << a.status();

  TensorMap extra = state;
  extra["layers.99.weight"] = torch::zeros({1});
  auto b = export_torchscript(net->spec(), extra, {1, 28, 28}, 10);
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("layers.99.weight"), std::string::npos) << b.status();

  auto c = export_torchscript(net->spec(), state, {1, 28, 28}, 7);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("expected [7]"), std::string::npos) << c.status();

  auto d = export_torchscript(net->spec(), state, {1, 20, 20}, 10);
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("layers.7 (linear)"), std::string::npos) << d.status();
}

TEST(Export, SaveLoadRoundTripIsExact) {
  auto net = build_net(testing::kPeerCnn, {1, 28, 28}, 10);
  ASSERT_TRUE(net);
  auto m = export_torchscript(*net, testing::image_normalize({0.286}, {0.353}));
  ASSERT_TRUE(m.ok()) << m.status();
  kiln::testing::TempDir tmp;
  const auto path = (tmp / "model.pt").string();
  m->save(path);
  torch::jit::Module loaded = torch::jit::load(path);
  loaded.eval();
  torch::Tensor raw = torch::randint(0, 256, {4, 1, 28, 28}).to(torch::kFloat32);
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(run(loaded, raw), run(*m, raw)));
  // Parameters keep their names (dots become underscores); batch statistics are buffers.
  bool found = false;
  for (const auto& p : loaded.named_parameters()) found |= p.name == "layers_0_weight";
  EXPECT_TRUE(found);
  // The source is inspectable.
  auto src = torchscript_source(net->spec(), network_state(*net), {1, 28, 28}, 10);
  ASSERT_TRUE(src.ok());
  EXPECT_NE(src->find("torch.conv2d"), std::string::npos);
  EXPECT_NE(src->find("torch.max_pool2d"), std::string::npos);
}

}  // namespace
}  // namespace kiln::model
