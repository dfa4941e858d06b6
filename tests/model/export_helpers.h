#pragma once

// Shared by the export, bundle and Python export tests: networks built from JSON specs, batch
// norm statistics made non-trivial, the breast-cancer table, and tensor comparison.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>
#include <limits>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "kiln/core/json.h"
#include "kiln/features/imputer.h"
#include "kiln/features/pca.h"
#include "kiln/features/pipeline.h"
#include "kiln/features/scalers.h"
#include "kiln/features/selection.h"
#include "kiln/model/network.h"
#include "kiln/model/spec.h"
#include "support/test_support.h"

namespace kiln::model::testing {

inline ModelSpec parse_spec(const std::string& text) {
  Expected<ModelSpec> spec = parse_model_spec(Json::parse(text));
  EXPECT_TRUE(spec.ok()) << spec.status();
  return spec.ok() ? *spec : ModelSpec();
}

/// Builds the network and runs a few train-mode forwards on random data, so batch norm running
/// statistics are far from (0, 1); leaves it in eval mode.
inline std::shared_ptr<NetworkImpl> build_net(const std::string& spec_json,
                                              std::vector<int64_t> shape, int64_t outputs,
                                              uint64_t seed = 7) {
  auto net = NetworkImpl::Create(parse_spec(spec_json), shape, outputs, seed);
  EXPECT_TRUE(net.ok()) << net.status();
  if (!net.ok()) return nullptr;
  torch::manual_seed(static_cast<uint64_t>(seed));
  std::vector<int64_t> batch{16};
  batch.insert(batch.end(), shape.begin(), shape.end());
  (*net)->train();
  torch::NoGradGuard no_grad;
  for (int i = 0; i < 3; ++i) (*net)->forward(torch::randn(batch) * 2 + 0.5);
  (*net)->eval();
  return *net;
}

inline double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  if (a.sizes() != b.sizes()) return 1e30;
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

/// The first `columns` numeric columns of a shared CSV (plain, unquoted), N x columns float32.
inline torch::Tensor load_numeric_csv(const std::string& name, int64_t columns) {
  std::ifstream in(kiln::testing::shared_datasets_dir() / name);
  EXPECT_TRUE(in.good()) << "cannot open " << name;
  std::string line;
  std::getline(in, line);  // header
  std::vector<float> values;
  int64_t rows = 0;
  while (std::getline(in, line)) {
    if (line.empty() || line == "\r") continue;
    std::istringstream is(line);
    std::string cell;
    for (int64_t c = 0; c < columns && std::getline(is, cell, ','); ++c)
      values.push_back(std::stof(cell));
    ++rows;
  }
  return torch::tensor(values, torch::kFloat32).reshape({rows, columns});
}

/// breast_cancer.csv's 30 feature columns (569 rows).
inline torch::Tensor breast_cancer_features() { return load_numeric_csv("breast_cancer.csv", 30); }

/// breast_cancer.csv's features with 5% of the values NaN (seeded), split 400 / 169.
struct Tables {
  torch::Tensor train, test;
};
inline Tables breast_cancer_with_gaps() {
  torch::Tensor x = breast_cancer_features();
  EXPECT_EQ(x.sizes(), (c10::IntArrayRef{569, 30}));
  torch::manual_seed(3);
  torch::Tensor holes = torch::rand(x.sizes()) < 0.05;
  x = x.masked_fill(holes, std::numeric_limits<float>::quiet_NaN());
  return {x.slice(0, 0, 400), x.slice(0, 400)};
}

/// Every table step the exporters fold, unfitted: median imputer, robust scaler, variance
/// threshold, min-max to [-1, 1] with clip, whitened PCA to 6. Makes column 7 of `t` constant
/// (train and test) so the variance threshold has a column to drop.
inline features::Pipeline selection_pca_pipeline(Tables* t) {
  t->train.select(1, 7).fill_(1.5);
  t->test.select(1, 7).fill_(1.5);
  features::Pipeline pipe;
  pipe.add(std::make_unique<features::Imputer>(
               features::ImputerOptions().strategy(features::ImputeStrategy::kMedian)))
      .add(std::make_unique<features::RobustScaler>())
      .add(std::make_unique<features::VarianceThreshold>())
      .add(std::make_unique<features::MinMaxScaler>(
          features::MinMaxScalerOptions().range(-1, 1).clip(true)))
      .add(std::make_unique<features::Pca>(features::PcaOptions().n_components(6).whiten(true)));
  return pipe;
}

/// An image-normalize preprocessing record as `kiln data prepare` writes it.
inline Json image_normalize(const std::vector<double>& mean, const std::vector<double>& stdev) {
  return Json{{"kind", "image_normalize"},
              {"version", 1},
              {"input_scale", 1.0 / 255.0},
              {"mean", mean},
              {"std", stdev}};
}

/// What the trainer feeds the eager network for raw pixels: (x * scale - mean[c]) / std[c].
inline torch::Tensor normalise_images(const torch::Tensor& raw, const std::vector<double>& mean,
                                      const std::vector<double>& stdev) {
  const auto c = static_cast<int64_t>(mean.size());
  auto m = torch::tensor(mean, torch::kFloat64).to(torch::kFloat32).reshape({1, c, 1, 1});
  auto s = torch::tensor(stdev, torch::kFloat64).to(torch::kFloat32).reshape({1, c, 1, 1});
  return (raw * (1.0 / 255.0) - m) / s;
}

/// Conv + batch norm (no bias, custom eps/momentum), pooling, strided rectangular conv, dense
/// layers with batchnorm1d and dropout; input {3, 12, 12}, 4 outputs.
inline const char* kBatchNormCnn = R"({"layers": [
      {"type": "conv2d", "out": 8, "kernel": 3, "padding": 1, "bias": false},
      {"type": "batchnorm2d", "eps": 0.001, "momentum": 0.5}, {"type": "relu"},
      {"type": "maxpool2d", "kernel": 2},
      {"type": "conv2d", "out": 16, "kernel": [3, 5], "stride": [2, 1], "padding": [1, 2]},
      {"type": "batchnorm2d"}, {"type": "relu"},
      {"type": "flatten"}, {"type": "linear", "out": 24}, {"type": "batchnorm1d"},
      {"type": "relu"}, {"type": "dropout", "p": 0.5}, {"type": "linear", "out": "outputs"}]})";

/// Residual blocks: identity, projection with batch norm, projection without; adaptive pooling;
/// input {3, 11, 9}, 5 outputs.
inline const char* kResidualNet = R"({"layers": [
      {"type": "conv2d", "out": 8, "kernel": 3, "padding": 1}, {"type": "relu"},
      {"type": "residual", "body": [
          {"type": "conv2d", "out": 8, "kernel": 3, "padding": 1}, {"type": "batchnorm2d"},
          {"type": "relu"}, {"type": "conv2d", "out": 8, "kernel": 3, "padding": 1}]},
      {"type": "relu"},
      {"type": "residual", "body": [
          {"type": "conv2d", "out": 16, "kernel": 3, "stride": 2, "padding": 1, "bias": false},
          {"type": "batchnorm2d"}, {"type": "relu"},
          {"type": "conv2d", "out": 16, "kernel": 3, "padding": 1}]},
      {"type": "relu"},
      {"type": "residual", "projection_batchnorm": false, "body": [
          {"type": "conv2d", "out": 24, "kernel": 3, "stride": [2, 1], "padding": 1}]},
      {"type": "adaptive_avgpool2d", "output_size": 1}, {"type": "flatten"},
      {"type": "linear", "out": "outputs"}]})";

/// Every activation and pooling layer (gelu, elu, leaky_relu, silu, sigmoid, tanh; avg, max,
/// adaptive to [2, 3]); input {2, 15, 13}, 1 output.
inline const char* kActivationsAndPools = R"({"layers": [
      {"type": "conv2d", "out": 6, "kernel": 3}, {"type": "gelu"},
      {"type": "conv2d", "out": 6, "kernel": 1}, {"type": "elu", "alpha": 0.5},
      {"type": "avgpool2d", "kernel": 3, "stride": 2, "padding": 1},
      {"type": "conv2d", "out": 6, "kernel": 1}, {"type": "leaky_relu", "slope": 0.2},
      {"type": "maxpool2d", "kernel": [2, 3], "stride": 1, "padding": 1},
      {"type": "silu"}, {"type": "adaptive_avgpool2d", "output_size": [2, 3]},
      {"type": "flatten"}, {"type": "linear", "out": 10}, {"type": "sigmoid"},
      {"type": "linear", "out": 10}, {"type": "tanh"}, {"type": "linear", "out": "outputs"}]})";

inline const char* kPeerCnn = R"({"layers": [
    {"type": "conv2d", "out": 32, "kernel": 3, "padding": 1}, {"type": "relu"},
    {"type": "maxpool2d", "kernel": 2},
    {"type": "conv2d", "out": 64, "kernel": 3, "padding": 1}, {"type": "relu"},
    {"type": "maxpool2d", "kernel": 2},
    {"type": "flatten"}, {"type": "linear", "out": 128}, {"type": "relu"},
    {"type": "linear", "out": "outputs"}]})";

}  // namespace kiln::model::testing
