// `kiln export REF --format onnx`: the graph a registered model exports passes Python's onnx
// checker (full check), and ONNX Runtime's class probabilities on every row of the real CSV equal
// `kiln predict`'s; what cannot be exported (a TorchScript-only bundle, an unknown format or
// opset) is a clear error that writes nothing.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "support/test_support.h"

namespace kiln {
namespace {

using testing::run_kiln;
using testing::run_program;
using testing::TempDir;
using Json = nlohmann::json;
namespace fs = std::filesystem;

/// breast_cancer.csv's 30 feature columns as raw float32 rows (what the bundle's signature takes).
std::vector<float> breast_cancer_rows() {
  std::ifstream in(testing::shared_datasets_dir() / "breast_cancer.csv");
  std::string line;
  std::getline(in, line);
  std::vector<float> values;
  while (std::getline(in, line)) {
    std::istringstream is(line);
    std::string cell;
    for (int c = 0; c < 30 && std::getline(is, cell, ','); ++c) values.push_back(std::stof(cell));
  }
  return values;
}

TEST(ExportCliTest, OnnxFromTheRegistryMatchesKilnPredict) {
  TempDir home;
  const fs::path bundle = testing::train_breast_cancer_bundle(home.path(), home / "bc");
  ASSERT_EQ(run_kiln({"registry", "push", bundle.string(), "--name", "bc"}, home.path()).exit_code,
            0);
  const fs::path onnx = home / "out" / "bc.onnx";
  fs::create_directories(onnx.parent_path());
  auto r = run_kiln({"export", "bc@1", "--format", "onnx", "--out", onnx.string(), "--json"},
                    home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Json summary = Json::parse(r.out);
  EXPECT_EQ(summary["opset"], 17);
  EXPECT_EQ(summary["input"]["shape"], Json::parse("[-1, 30]"));
  EXPECT_EQ(summary["output"]["name"], "logits");
  EXPECT_EQ(summary["bytes"].get<uint64_t>(), fs::file_size(onnx));

  auto check = run_program(
      {"/usr/bin/python3", "-c",
       "import sys, onnx; m = onnx.load(sys.argv[1]); onnx.checker.check_model(m, "
       "full_check=True); print(m.opset_import[0].version, dict((p.key, p.value) for p in "
       "m.metadata_props)['kiln.task'])",
       onnx.string()});
  ASSERT_EQ(check.exit_code, 0) << check.err;
  EXPECT_EQ(check.out, "17 classification\n");

  // ONNX Runtime on every row of the CSV vs `kiln predict` on the same file.
  const std::vector<float> rows = breast_cancer_rows();
  ASSERT_EQ(rows.size(), 569u * 30);
  std::ofstream(home / "x.f32", std::ios::binary)
      .write(reinterpret_cast<const char*>(rows.data()),
             static_cast<std::streamsize>(rows.size() * sizeof(float)));
  auto ort = run_program({"node", (testing::source_dir() / "tools/onnxruntime/run.js").string(),
                          onnx.string(), "--input", (home / "x.f32").string(), "--shape", "30",
                          "--output", (home / "y.f32").string()});
  ASSERT_EQ(ort.exit_code, 0) << "ONNX Runtime (scripts/install-deps.sh installs it): " << ort.err;
  EXPECT_EQ(Json::parse(ort.out)["output_dims"], Json::parse("[569, 2]"));
  const std::string logits = testing::read_text(home / "y.f32");
  ASSERT_EQ(logits.size(), 569u * 2 * sizeof(float));
  auto predicted =
      run_kiln({"predict", "bc@1", "--input",
                (testing::shared_datasets_dir() / "breast_cancer.csv").string(), "--json"},
               home.path());
  ASSERT_EQ(predicted.exit_code, 0) << predicted.err;
  const Json predictions = Json::parse(predicted.out);
  ASSERT_EQ(predictions.size(), 569u);
  const Json labels =
      Json::parse(testing::read_text(bundle / "manifest.json"))["labels"];  // output order
  double worst = 0;
  for (size_t i = 0; i < 569; ++i) {
    float y[2];
    std::memcpy(y, logits.data() + i * sizeof(y), sizeof(y));
    const double m = std::max(y[0], y[1]);
    const double e0 = std::exp(y[0] - m), e1 = std::exp(y[1] - m);
    const double p[2] = {e0 / (e0 + e1), e1 / (e0 + e1)};
    for (int k = 0; k < 2; ++k)
      worst = std::max(
          worst,
          std::abs(p[k] -
                   predictions[i]["probabilities"][labels[k].get<std::string>()].get<double>()));
  }
  EXPECT_LE(worst, 1e-4);
}

TEST(ExportCliTest, WhatCannotBeExportedIsAClearErrorThatWritesNothing) {
  TempDir home;
  const fs::path bundle = testing::train_breast_cancer_bundle(home.path(), home / "bc");
  // A TorchScript file registered as is: no model spec or weights to build a graph from.
  auto pushed =
      run_kiln({"registry", "push", (bundle / "model.pt").string(), "--name", "ts", "--format",
                "torchscript", "--input", "input:FP32:-1,30", "--output", "logits:FP32:-1,2"},
               home.path());
  ASSERT_EQ(pushed.exit_code, 0) << pushed.err;
  const fs::path out = home / "m.onnx";
  auto r = run_kiln({"export", "ts@1", "--format", "onnx", "--out", out.string()}, home.path());
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("TorchScript-only bundle has no Kiln model spec"), std::string::npos)
      << r.err;
  r = run_kiln({"export", bundle.string(), "--format", "tflite", "--out", out.string()},
               home.path());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("'tflite' is not supported (torchscript, onnx)"), std::string::npos)
      << r.err;
  r = run_kiln(
      {"export", bundle.string(), "--format", "onnx", "--opset", "18", "--out", out.string()},
      home.path());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--opset"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(out));
  // An older opset is a choice.
  r = run_kiln({"export", bundle.string(), "--format", "onnx", "--opset", "13", "--out",
                out.string(), "--json"},
               home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Json::parse(r.out)["opset"], 13);
}

}  // namespace
}  // namespace kiln
