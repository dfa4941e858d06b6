// ONNX export: graphs built from Kiln specs pass the onnx checker (C++ and Python, full check)
// and ONNX Runtime computes what Kiln's TorchScript module computes, for every layer type, the
// folded preprocessing and flip TTA, and for trained bundles on their whole test split.
#include "kiln/interop/onnx_export.h"

#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>
#include <torch/torch.h>

#include <map>
#include <set>

#include "kiln/core/files.h"
#include "kiln/features/imputer.h"
#include "kiln/features/pca.h"
#include "kiln/features/pipeline.h"
#include "kiln/features/scalers.h"
#include "kiln/features/selection.h"
#include "kiln/model/bundle.h"
#include "kiln/model/export_plan.h"
#include "kiln/model/zoo.h"
#include "kiln/train/eval_inputs.h"
#include "model/export_helpers.h"
#include "onnx_runtime.h"
#include "support/test_support.h"

namespace kiln::interop {
namespace {

namespace fs = std::filesystem;
namespace mt = kiln::model::testing;
using kiln::testing::TempDir;

/// ONNX Runtime's outputs vs Kiln's: within 1e-4, relative to the outputs' scale above 1.
void expect_close(const torch::Tensor& onnx, const torch::Tensor& kiln) {
  ASSERT_TRUE(onnx.defined());
  ASSERT_EQ(onnx.sizes(), kiln.sizes());
  const double scale = std::max(1.0, kiln.abs().max().item<double>());
  EXPECT_LE(mt::max_abs_diff(onnx, kiln) / scale, 1e-4) << "outputs up to " << scale;
}

/// Exports `net` (with `pre` and `tta`) both ways and compares them on `x` through ONNX Runtime;
/// the graph also passes Python's full check. Returns the parsed model.
onnx::ModelProto check_against_torchscript(model::NetworkImpl& net, const torch::Tensor& x,
                                           const Json& pre = Json(),
                                           const std::string& tta = model::kTtaNone) {
  auto ts = model::export_torchscript(net, pre, tta);
  EXPECT_TRUE(ts.ok()) << ts.status();
  auto exported = export_onnx(net.spec(), model::network_state(net), net.input_shape(),
                              net.outputs(), pre, tta);
  EXPECT_TRUE(exported.ok()) << exported.status();
  onnx::ModelProto proto;
  if (!ts.ok() || !exported.ok()) return proto;
  TempDir dir;
  const fs::path path = dir / "model.onnx";
  EXPECT_TRUE(write_file_atomic(path, exported->bytes).ok());
  EXPECT_EQ(testing::python_onnx_check(path), "");
  torch::NoGradGuard no_grad;
  expect_close(testing::run_onnxruntime(path, x, dir / "ort"), ts->forward({x}).toTensor());
  EXPECT_TRUE(proto.ParseFromString(exported->bytes));
  return proto;
}

TEST(OnnxExport, ConvBatchNormPoolingAndDenseLayers) {
  auto net = mt::build_net(mt::kBatchNormCnn, {3, 12, 12}, 4);
  ASSERT_TRUE(net);
  onnx::ModelProto m = check_against_torchscript(*net, torch::randn({33, 3, 12, 12}) * 3);
  // A dynamic batch axis in and out, the opset asked for, every intermediate shape inferred.
  ASSERT_EQ(m.graph().input_size(), 1);
  const auto& in = m.graph().input(0).type().tensor_type().shape();
  ASSERT_EQ(in.dim_size(), 4);
  EXPECT_EQ(in.dim(0).dim_param(), "batch");
  EXPECT_EQ(in.dim(1).dim_value(), 3);
  const auto& out = m.graph().output(0).type().tensor_type().shape();
  EXPECT_EQ(out.dim(0).dim_param(), "batch");
  EXPECT_EQ(out.dim(1).dim_value(), 4);
  EXPECT_EQ(m.graph().output(0).name(), "logits");
  EXPECT_EQ(m.opset_import(0).version(), kOnnxMaxOpset);
  EXPECT_GT(m.graph().value_info_size(), 10);
  EXPECT_EQ(m.producer_name(), "kiln");
}

TEST(OnnxExport, ResidualBlocksWithAndWithoutProjection) {
  auto net = mt::build_net(mt::kResidualNet, {3, 11, 9}, 5);
  ASSERT_TRUE(net);
  check_against_torchscript(*net, torch::randn({9, 3, 11, 9}));

  auto spec = model::zoo_model("resnet-small", Json{{"width", 8}, {"depth", 2}, {"stages", 3}});
  ASSERT_TRUE(spec.ok()) << spec.status();
  auto resnet = mt::build_net(spec->to_json().dump(), {3, 16, 16}, 10);
  ASSERT_TRUE(resnet);
  check_against_torchscript(*resnet, torch::randn({5, 3, 16, 16}));
}

TEST(OnnxExport, EveryActivationAndPool) {
  auto net = mt::build_net(mt::kActivationsAndPools, {2, 15, 13}, 3);
  ASSERT_TRUE(net);
  check_against_torchscript(*net, torch::randn({7, 2, 15, 13}) * 2);
}

TEST(OnnxExport, ImageNormalizationAndFlipFoldedIn) {
  auto net = mt::build_net(mt::kPeerCnn, {1, 28, 28}, 10);
  ASSERT_TRUE(net);
  const Json pre = mt::image_normalize({0.2860}, {0.3530});
  const torch::Tensor raw = torch::randint(0, 256, {70, 1, 28, 28}).to(torch::kFloat32);
  onnx::ModelProto m = check_against_torchscript(*net, raw, pre, model::kTtaFlip);
  // The mirror is part of the answer: without it the outputs differ.
  auto plain = model::export_torchscript(*net, pre);
  ASSERT_TRUE(plain.ok());
  torch::NoGradGuard no_grad;
  auto flip = model::export_torchscript(*net, pre, model::kTtaFlip);
  EXPECT_GT(mt::max_abs_diff(flip->forward({raw}).toTensor(), plain->forward({raw}).toTensor()),
            1e-3);
  int slices = 0;
  for (const auto& node : m.graph().node()) slices += node.op_type() == "Slice";
  EXPECT_EQ(slices, 1);
}

TEST(OnnxExport, TablePipelinesFoldedIn) {
  mt::Tables t = mt::breast_cancer_with_gaps();
  {
    features::Pipeline pipe;
    pipe.add(std::make_unique<features::Imputer>())
        .add(std::make_unique<features::StandardScaler>());
    ASSERT_TRUE(pipe.fit(t.train).ok());
    auto net = mt::build_net(R"({"layers": [{"type": "linear", "out": 16}, {"type": "relu"},
        {"type": "linear", "out": "outputs"}]})",
                             {30}, 2);
    ASSERT_TRUE(net);
    ASSERT_GT(torch::isnan(t.test).sum().item<int64_t>(), 0);  // NaN is "missing" in the graph
    check_against_torchscript(*net, t.test, Json::parse(pipe.to_json().dump()));
  }
  features::Pipeline pipe = mt::selection_pca_pipeline(&t);
  ASSERT_TRUE(pipe.fit(t.train).ok());
  auto net = mt::build_net(R"({"layers": [{"type": "linear", "out": 8}, {"type": "gelu"},
      {"type": "linear", "out": "outputs"}]})",
                           {6}, 1);
  ASSERT_TRUE(net);
  onnx::ModelProto m = check_against_torchscript(*net, t.test, Json::parse(pipe.to_json().dump()));
  std::set<std::string> ops;
  for (const auto& node : m.graph().node()) ops.insert(node.op_type());
  for (const char* op : {"IsNaN", "Where", "Gather", "Clip", "MatMul"})
    EXPECT_TRUE(ops.count(op)) << op;
}

/// The breast-cancer table (with gaps, imputed and scaled) plus two categorical code columns,
/// site (3 categories) and shift (4), encoded by `encoders`, into a 16-unit MLP taking `width`
/// inputs with `classes` outputs: checked against TorchScript on the test rows, some of whose
/// codes are unknown (-1, 7). Returns the ONNX graph's op types.
std::set<std::string> check_categorical_table(const Json& encoders, int64_t width,
                                              int64_t classes) {
  mt::Tables t = mt::breast_cancer_with_gaps();
  features::Pipeline pipe;
  pipe.add(std::make_unique<features::Imputer>()).add(std::make_unique<features::StandardScaler>());
  EXPECT_TRUE(pipe.fit(t.train).ok());
  auto net = mt::build_net(R"({"layers": [{"type": "linear", "out": 16}, {"type": "relu"},
      {"type": "linear", "out": "outputs"}]})",
                           {width}, classes);
  EXPECT_TRUE(net);
  if (!net) return {};
  const int64_t n = t.test.size(0);
  torch::Tensor codes =
      torch::stack({torch::arange(n) % 3, (torch::arange(n) * 7) % 4}, 1).to(torch::kFloat32);
  codes[0][0] = -1;  // unknown categories: all zeros in both
  codes[1][1] = 7;
  codes[2][1] = -1;
  onnx::ModelProto m = check_against_torchscript(
      *net, torch::cat({t.test, codes}, 1), model::table_preprocessing(pipe.to_json(), encoders));
  std::set<std::string> ops;
  for (const auto& node : m.graph().node()) ops.insert(node.op_type());
  return ops;
}

TEST(OnnxExport, CategoricalCodesAreOneHotEncodedAsInTorchScript) {
  const Json encoders = Json::parse(R"([
      {"column": "site", "encoder": {"categories": ["a", "b", "c"]}},
      {"column": "shift", "encoder": {"categories": ["<missing>", "day", "late", "night"]}}])");
  const std::set<std::string> ops = check_categorical_table(encoders, 37, 2);
  for (const char* op : {"Slice", "Equal", "Cast", "Concat"}) EXPECT_TRUE(ops.count(op)) << op;
}

TEST(OnnxExport, TargetEncodedCodesMultiplyTheirTableAsInTorchScript) {
  // "shift" target-encoded for three classes: 4 categories x 3 columns.
  const Json encoders = Json::parse(R"([
      {"column": "site", "encoder": {"categories": ["a", "b", "c"]}},
      {"column": "shift", "encoder": {"categories": ["<missing>", "day", "late", "night"],
       "target_encoding": {"table": [[0.5, -1, 2], [0, 0.25, -0.5], [1.5, 1, 0], [-2, 0.5, 1]],
                           "mean": [0.3, 0.3, 0.4], "std": [0.46, 0.46, 0.49]}}}])");
  EXPECT_TRUE(check_categorical_table(encoders, 36, 3).count("MatMul"));
}

TEST(OnnxExport, WhatCannotBeExportedIsNamed) {
  auto expect_error = [](const Expected<OnnxModel>& r, const std::string& words) {
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(words), std::string::npos) << r.status();
  };
  // Adaptive pooling to a size that does not divide the input has no ONNX operator.
  auto uneven = mt::build_net(R"({"layers": [{"type": "conv2d", "out": 2, "kernel": 3},
      {"type": "adaptive_avgpool2d", "output_size": 3}, {"type": "flatten"},
      {"type": "linear", "out": "outputs"}]})",
                              {1, 9, 9}, 2);
  ASSERT_TRUE(uneven);
  expect_error(export_onnx(uneven->spec(), model::network_state(*uneven), {1, 9, 9}, 2, Json(),
                           model::kTtaNone),
               "layers.1 (adaptive_avgpool2d): output size [3,3] does not divide input [2,7,7]");
  auto mlp = mt::build_net(R"({"layers": [{"type": "linear", "out": "outputs"}]})", {3}, 1);
  ASSERT_TRUE(mlp);
  const model::TensorMap state = model::network_state(*mlp);
  expect_error(export_onnx(mlp->spec(), state, {3}, 1, Json(), model::kTtaFlip),
               "'flip' needs image inputs");
  OnnxExportOptions opset18;
  opset18.opset = 18;
  expect_error(export_onnx(mlp->spec(), state, {3}, 1, Json(), model::kTtaNone, opset18),
               "opset 18 is not in 13..17");
  model::TensorMap extra = state;
  extra["layers.7.weight"] = torch::ones({2});
  expect_error(export_onnx(mlp->spec(), extra, {3}, 1, Json(), model::kTtaNone),
               "\"layers.7.weight\" is not used");
  Json one_hot = {{"kind", "pipeline"},
                  {"fitted", true},
                  {"input_features", 1},
                  {"steps", {{{"kind", "one_hot_encoder"}, {"fitted", true}}}}};
  expect_error(export_onnx(mlp->spec(), state, {3}, 1, one_hot, model::kTtaNone),
               "preprocessing step 0 (one_hot_encoder): not supported");
}

// ---- Trained bundles, through the real `kiln` binary.

/// The trained bundle's test split, Kiln's model.pt outputs on it and ONNX Runtime's on the
/// exported graph: within 1e-4, and the same accuracy as the bundle records.
void check_bundle_on_test_split(const fs::path& bundle_dir, const fs::path& work) {
  auto bundle = model::read_bundle(bundle_dir);
  ASSERT_TRUE(bundle.ok()) << bundle.status();
  auto exported = export_bundle_onnx(*bundle);
  ASSERT_TRUE(exported.ok()) << exported.status();
  const fs::path path = work / "model.onnx";
  ASSERT_TRUE(write_file_atomic(path, exported->bytes).ok());
  EXPECT_EQ(testing::python_onnx_check(path), "");
  auto rows =
      train::read_labelled_rows(*bundle, train::lineage_snapshot_dir(*bundle).string(), "test");
  ASSERT_TRUE(rows.ok()) << rows.status();
  auto module = model::load_bundle_module(*bundle);
  ASSERT_TRUE(module.ok()) << module.status();
  torch::NoGradGuard no_grad;
  const torch::Tensor kiln = module->forward({rows->x}).toTensor();
  const torch::Tensor ort = testing::run_onnxruntime(path, rows->x, work / "ort");
  expect_close(ort, kiln);
  if (!ort.defined() || bundle->task() != "classification") return;
  const double accuracy = ort.argmax(1).eq(rows->targets).to(torch::kFloat64).mean().item<double>();
  EXPECT_NEAR(accuracy, bundle->test_metrics(model::kPrecisionFp32)["accuracy"].get<double>(),
              1e-9);
  onnx::ModelProto proto;
  ASSERT_TRUE(proto.ParseFromString(exported->bytes));
  std::map<std::string, std::string> meta;
  for (const auto& e : proto.metadata_props()) meta[e.key()] = e.value();
  EXPECT_EQ(Json::parse(meta["kiln.labels"]), Json(bundle->labels()));
  EXPECT_EQ(meta["kiln.manifest_sha256"], bundle->manifest[model::kManifestHashKey]);
}

TEST(OnnxBundle, TrainedCnnAndTableModelMatchKilnOnTheTestSplit) {
  TempDir home;
  auto trained =
      kiln::testing::run_kiln({"train", kiln::testing::example("fashion-mnist/cnn.yaml"), "--out",
                               (home / "cnn").string(), "--set", "data.limit=2000", "--set",
                               "epochs=1", "--set", "model.width=8", "--set", "model.hidden=16"},
                              home.path(), {"KILN_THREADS=1"});
  ASSERT_EQ(trained.exit_code, 0) << trained.err;
  ::setenv("KILN_HOME", home.path().c_str(), 1);  // the snapshot lives there
  check_bundle_on_test_split(home / "cnn" / "bundle", home / "cnn-onnx");
  const fs::path table = kiln::testing::train_breast_cancer_bundle(home.path(), home / "bc");
  check_bundle_on_test_split(table, home / "bc-onnx");
  ::unsetenv("KILN_HOME");
}

TEST(OnnxBundle, TorchScriptOnlyAndInt8BundlesAreRefused) {
  TempDir home;
  const fs::path table = kiln::testing::train_breast_cancer_bundle(home.path(), home / "bc");
  auto bundle = model::read_bundle(table);
  ASSERT_TRUE(bundle.ok()) << bundle.status();

  auto bytes = read_file(table / model::kBundleModuleFile);
  ASSERT_TRUE(bytes.ok());
  Json manifest = {{"task", model::kCustomTask},
                   {"signature", model::bundle_signature("regression", {30}, 2)}};
  auto written = model::write_module_bundle(home / "ts", manifest, *bytes);
  ASSERT_TRUE(written.ok()) << written.status();
  auto ts = model::read_bundle(*written);
  ASSERT_TRUE(ts.ok()) << ts.status();
  auto refused = export_bundle_onnx(*ts);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("TorchScript-only bundle has no Kiln model spec"),
            std::string::npos)
      << refused.status();

  fs::copy(table, home / "int8", fs::copy_options::recursive);
  Json m = bundle->manifest;
  m["compression"] = {{"quantize", "int8"}, {"parent", "bc@1"}};
  kiln::testing::write_sealed_manifest(home / "int8", m);
  auto int8 = model::read_bundle(home / "int8");
  ASSERT_TRUE(int8.ok()) << int8.status();
  refused = export_bundle_onnx(*int8);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("export its parent (bc@1)"), std::string::npos)
      << refused.status();
}

}  // namespace
}  // namespace kiln::interop
