// bf16 serving end to end: a convolutional bundle trained on a CPU with avx512_bf16 records a bf16
// module with its own test metrics; `kiln serve` picks it by default (--precision auto), says so,
// reports it in the model metadata and answers with logits close to the fp32 module's;
// --precision fp32 opts out; --precision bf16 on a bundle without one is refused at start.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "kiln/core/threads.h"
#include "serve_helpers.h"
#include "support/test_support.h"

namespace kiln {
namespace {

using testing::example;
using testing::HttpClient;
using testing::HttpResult;
using testing::run_kiln;
using testing::ServerProcess;
using testing::TempDir;
using Json = nlohmann::json;

/// Eight Fashion-MNIST-sized images with pixel values 0..255 as an OIP request body.
std::string image_body() {
  Json data = Json::array();
  for (int i = 0; i < 8 * 784; ++i) data.push_back(static_cast<float>((i * 37 + i / 784) % 256));
  return Json{
      {"inputs",
       Json::array({Json{
           {"name", "input"}, {"shape", {8, 1, 28, 28}}, {"datatype", "FP32"}, {"data", data}}})}}
      .dump();
}

TEST(ServePrecisionCliTest, ConvBundleServesItsMeasuredBf16ModuleByDefault) {
  TempDir home;
  auto trained = run_kiln({"train", example("fashion-mnist/cnn.yaml"), "--out",
                           (home / "cnn").string(), "--set", "data.limit=2000", "--set", "epochs=1",
                           "--set", "model.width=8", "--set", "model.hidden=16"},
                          home.path(), {"KILN_THREADS=1"});
  ASSERT_EQ(trained.exit_code, 0) << trained.err;
  const auto bundle = home / "cnn" / "bundle";
  const Json manifest = Json::parse(testing::read_text(bundle / "manifest.json"));

  if (!cpu_supports_bf16()) {
    EXPECT_FALSE(manifest.contains("precisions"));
    ServerProcess refused({"--model", bundle.string(), "--precision", "bf16"}, home.path(),
                          home / "refused.log");
    EXPECT_FALSE(refused.ready());
    EXPECT_NE(refused.log().find("records no bf16 module"), std::string::npos) << refused.log();
    GTEST_SKIP() << "this CPU has no avx512_bf16: bundles record no bf16 module";
  }

  // The bundle records the bf16 module and its own metrics on the same test split.
  ASSERT_TRUE(manifest.contains("precisions")) << manifest.dump();
  const Json bf16 = manifest["precisions"]["bf16"];
  EXPECT_EQ(bf16["file"], "model_bf16.pt");
  EXPECT_TRUE(manifest["files"].contains("model_bf16.pt"));
  const double fp32_accuracy = manifest["metrics"]["test"]["accuracy"].get<double>();
  const double bf16_accuracy = bf16["metrics"]["test"]["accuracy"].get<double>();
  EXPECT_EQ(bf16["metrics"]["test"]["samples"], manifest["metrics"]["test"]["samples"]);
  EXPECT_NEAR(bf16_accuracy, fp32_accuracy, 0.02);
  EXPECT_NE(trained.err.find("bf16 module (served where the CPU has avx512_bf16): accuracy"),
            std::string::npos)
      << trained.err;

  ServerProcess automatic({"--model", "fm=" + bundle.string()}, home.path(), home / "auto.log");
  ServerProcess fp32({"--model", "fm=" + bundle.string(), "--precision", "fp32"}, home.path(),
                     home / "fp32.log");
  ASSERT_TRUE(automatic.ready()) << automatic.log();
  ASSERT_TRUE(fp32.ready()) << fp32.log();
  EXPECT_NE(automatic.log().find("serving the bf16 module (test accuracy"), std::string::npos)
      << automatic.log();
  EXPECT_EQ(fp32.log().find("bf16"), std::string::npos) << fp32.log();

  HttpResult meta = HttpClient(automatic.port()).get("/v2/models/fm");
  ASSERT_EQ(meta.status, 200) << meta.body;
  EXPECT_EQ(Json::parse(meta.body)["parameters"]["precision"], "bf16") << meta.body;
  meta = HttpClient(fp32.port()).get("/v2/models/fm");
  EXPECT_EQ(Json::parse(meta.body)["parameters"]["precision"], "fp32") << meta.body;

  // The same 8 images through both: float32 logits within bf16 rounding, mostly the same class.
  std::vector<std::vector<float>> logits;
  for (ServerProcess* srv : {&automatic, &fp32}) {
    HttpResult r = HttpClient(srv->port()).post("/v2/models/fm/infer", image_body());
    ASSERT_EQ(r.status, 200) << r.body;
    const Json out = Json::parse(r.body)["outputs"][0];
    EXPECT_EQ(out["datatype"], "FP32");
    logits.push_back(out["data"].get<std::vector<float>>());
  }
  ASSERT_EQ(logits[0].size(), 80u);
  ASSERT_EQ(logits[1].size(), 80u);
  float scale = 0;
  for (float v : logits[1]) scale = std::max(scale, std::abs(v));
  for (size_t i = 0; i < 80; ++i) EXPECT_NEAR(logits[0][i], logits[1][i], 0.05 * scale + 0.05) << i;

  // The live monitor's reference accuracy is the served module's.
  HttpResult metrics = HttpClient(automatic.port()).get("/metrics");
  ASSERT_EQ(metrics.status, 200);
  char want[96];
  std::snprintf(want, sizeof(want), "kiln_reference_accuracy{model=\"fm\",version=\"1\"} %g",
                bf16_accuracy);
  EXPECT_NE(metrics.body.find(want), std::string::npos) << want << "\n" << metrics.body;
}

TEST(ServePrecisionCliTest, Bf16IsRefusedForABundleWithoutOne) {
  TempDir home;
  const auto bundle = testing::train_breast_cancer_bundle(home.path(), home / "bc");
  ServerProcess refused({"--model", bundle.string(), "--precision", "bf16"}, home.path(),
                        home / "refused.log");
  EXPECT_FALSE(refused.ready());
  EXPECT_NE(refused.log().find("--precision bf16: the bundle records no bf16 module"),
            std::string::npos)
      << refused.log();
  // auto serves it in fp32 without a word about bf16.
  ServerProcess automatic({"--model", "bc=" + bundle.string()}, home.path(), home / "auto.log");
  ASSERT_TRUE(automatic.ready()) << automatic.log();
  HttpResult meta = HttpClient(automatic.port()).get("/v2/models/bc");
  EXPECT_EQ(Json::parse(meta.body)["parameters"]["precision"], "fp32") << meta.body;
}

}  // namespace
}  // namespace kiln
