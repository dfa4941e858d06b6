// `calibration: temperature` through the CLI: `kiln train` fits T on the val split and says so,
// the bundle records it and reports the test split's calibration error, `kiln serve` names it in
// the model metadata and serves probabilities that are the softmax of the calibrated logits, and
// a regression dataset is refused before any training.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "serve_helpers.h"
#include "support/test_support.h"

namespace kiln {
namespace {

using testing::example;
using testing::HttpClient;
using testing::run_kiln;
using testing::ServerProcess;
using testing::TempDir;
using Json = nlohmann::json;
namespace fs = std::filesystem;

TEST(CalibrationCliTest, TrainFitsTheTemperatureAndServeNamesIt) {
  TempDir home;
  auto r = run_kiln({"train", example("breast-cancer/train.yaml"), "--out", (home / "run").string(),
                     "--set", "calibration=temperature", "--set", "epochs=20", "--json"},
                    home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("calibration: temperature "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(" fitted on val (NLL "), std::string::npos) << r.err;
  const Json summary = Json::parse(r.out);
  const double ece = summary["test_metrics"]["ece"];
  EXPECT_GE(ece, 0.0);
  EXPECT_LT(ece, 0.2);
  EXPECT_GT(summary["test_metrics"]["nll"].get<double>(), 0.0);
  const Json manifest = Json::parse(testing::read_text(home / "run" / "bundle" / "manifest.json"));
  const double t = manifest["calibration"]["temperature"];
  EXPECT_EQ(manifest["training"]["calibration"], "temperature");

  ServerProcess srv({"--model", (home / "run" / "bundle").string()}, home.path(), home / "log");
  ASSERT_TRUE(srv.ready()) << srv.log();
  HttpClient c(srv.port());
  auto meta = c.get("/v2/models/bundle");
  ASSERT_EQ(meta.status, 200) << meta.body;
  const Json calibration = Json::parse(meta.body)["parameters"]["calibration"];
  EXPECT_EQ(calibration["method"], "temperature");
  EXPECT_DOUBLE_EQ(calibration["temperature"].get<double>(), t);
  // One row: the probabilities are the softmax of the logits the module gives.
  Json row = Json::array();
  for (int i = 0; i < 30; ++i) row.push_back(i % 3 == 0 ? 1.0 : 0.1 * i);
  const Json body = {
      {"inputs", {{{"name", "input"}, {"datatype", "FP32"}, {"shape", {1, 30}}, {"data", row}}}},
      {"outputs", {{{"name", "logits"}}, {{"name", "probabilities"}}}}};
  auto infer = c.post("/v2/models/bundle/infer", body.dump());
  ASSERT_EQ(infer.status, 200) << infer.body;
  const Json outputs = Json::parse(infer.body)["outputs"];
  const Json logits = outputs[0]["data"], probabilities = outputs[1]["data"];
  const double z0 = logits[0], z1 = logits[1];
  EXPECT_NEAR(probabilities[0].get<double>(), 1.0 / (1.0 + std::exp(z1 - z0)), 1e-5);
}

TEST(CalibrationCliTest, ARegressionDatasetIsRefusedBeforeTraining) {
  TempDir home;
  auto r = run_kiln({"train", example("diabetes/train.yaml"), "--out", (home / "run").string(),
                     "--set", "calibration=temperature"},
                    home.path());
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("calibration: temperature scales class probabilities; this dataset's "
                       "task is regression"),
            std::string::npos)
      << r.err;
  EXPECT_FALSE(fs::exists(home / "run" / "checkpoint.pt"));
  EXPECT_FALSE(fs::exists(home / "run" / "bundle"));
  r = run_kiln({"train", example("breast-cancer/train.yaml"), "--out", (home / "x").string(),
                "--set", "calibration=platt"},
               home.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("calibration: 'platt' is not one of: none, temperature"), std::string::npos)
      << r.err;
}

}  // namespace
}  // namespace kiln
