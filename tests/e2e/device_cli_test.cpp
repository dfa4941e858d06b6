// `--device` end to end, on whatever machine runs the suite: `kiln devices` says what `auto`
// picks; train, eval, predict and serve run on the CPU when told to, and on a machine without a
// usable GPU refuse `cuda` at start with a clear error (on the GPU machine they run there);
// serve places models one by one, reports each model's device, and exposes GPU metrics from
// the driver's NVML (here a stand-in library with its C ABI) or none at all.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <nlohmann/json.hpp>

#include "serve_helpers.h"
#include "support/test_support.h"

namespace kiln {
namespace {

using testing::CommandResult;
using testing::example;
using testing::HttpClient;
using testing::HttpResult;
using testing::read_text;
using testing::run_kiln;
using testing::ServerProcess;
using testing::shared_datasets_dir;
using testing::TempDir;
using Json = nlohmann::json;
namespace fs = std::filesystem;

// What `kiln devices --json` reports: whether a CUDA device is usable here.
bool have_gpu(const fs::path& home) {
  CommandResult r = run_kiln({"devices", "--json"}, home);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  const Json devices = Json::parse(r.out);
  EXPECT_EQ(devices["auto"], devices["cuda"].empty() ? "cpu" : "cuda:0") << r.out;
  return !devices["cuda"].empty();
}

TEST(DeviceCliTest, DevicesSaysWhatAutoPicksAndRefusesUnknownFlags) {
  TempDir home;
  CommandResult r = run_kiln({"devices"}, home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("cpu ", 0), 0u) << r.out;
  EXPECT_NE(r.out.find("auto -> "), std::string::npos) << r.out;
  r = run_kiln({"devices", "--help"}, home.path());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("--json"), std::string::npos) << r.out;
  r = run_kiln({"devices", "--gpu"}, home.path());
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--gpu"), std::string::npos) << r.err;
}

TEST(DeviceCliTest, TrainEvalAndPredictRunWhereTold) {
  TempDir home;
  const bool gpu = have_gpu(home.path());
  const std::string config = example("breast-cancer/train.yaml");
  const std::string csv = (shared_datasets_dir() / "breast_cancer.csv").string();
  CommandResult r = run_kiln(
      {"train", config, "--out", (home / "cpu").string(), "--device", "cpu", "--set", "epochs=3"},
      home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find(", cpu, "), std::string::npos) << r.err;
  const Json manifest = Json::parse(read_text(home / "cpu" / "bundle" / "manifest.json"));
  EXPECT_EQ(manifest["trained_on"], "cpu");
  EXPECT_EQ(manifest["training"]["device"], "cpu");

  r = run_kiln(
      {"train", config, "--out", (home / "gpu").string(), "--device", "cuda", "--set", "epochs=3"},
      home.path());
  if (gpu) {
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(Json::parse(read_text(home / "gpu" / "bundle" / "manifest.json"))["trained_on"],
              "cuda:0");
  } else {
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_NE(r.err.find("device: cuda: no CUDA device here"), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(home / "gpu" / "bundle"));
  }
  r = run_kiln({"train", config, "--device", "tpu"}, home.path());
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--device: \"tpu\" is not a device; expected auto, cpu, cuda or cuda:N"),
            std::string::npos)
      << r.err;

  const std::string bundle = (home / "cpu").string();
  r = run_kiln({"eval", bundle, "--data", csv, "--device", "cpu", "--json"}, home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const double cpu_accuracy = Json::parse(r.out)["accuracy"].get<double>();
  r = run_kiln({"eval", bundle, "--data", csv, "--device", "cuda", "--json"}, home.path());
  if (gpu) {
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NEAR(Json::parse(r.out)["accuracy"].get<double>(), cpu_accuracy, 0.005);
  } else {
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_NE(r.err.find("--device: cuda: no CUDA device here"), std::string::npos) << r.err;
  }
  r = run_kiln({"predict", bundle, "--input", csv, "--device", "cpu"}, home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("row,prediction", 0), 0u) << r.out.substr(0, 200);
}

TEST(DeviceCliTest, ServePlacesEachModelAndReportsGpusFromNvml) {
  TempDir home;
  const bool gpu = have_gpu(home.path());
  const auto bundle = testing::train_breast_cancer_bundle(home.path(), home / "bc");
  ServerProcess unknown({"--model", "bc=" + bundle.string(), "--device", "other=cpu"}, home.path(),
                        home / "unknown.log");
  EXPECT_FALSE(unknown.ready());
  EXPECT_NE(unknown.log().find("--device other=cpu: no model is served as \"other\""),
            std::string::npos)
      << unknown.log();
  if (!gpu) {
    ServerProcess refused({"--model", "bc=" + bundle.string(), "--device", "bc=cuda:0"},
                          home.path(), home / "refused.log");
    EXPECT_FALSE(refused.ready());
    EXPECT_NE(refused.log().find("--device bc=cuda:0: cuda:0: no CUDA device here"),
              std::string::npos)
        << refused.log();
  }
  // Two names for one bundle, each placed on its own; GPU readings from a stand-in NVML.
  ::setenv("KILN_NVML_LIBRARY", KILN_FAKE_NVML, 1);
  ServerProcess server({"--model", "a=" + bundle.string(), "--model", "b=" + bundle.string(),
                        "--device", gpu ? "cuda" : "auto", "--device", "b=cpu"},
                       home.path(), home / "serve.log");
  ::unsetenv("KILN_NVML_LIBRARY");
  ASSERT_TRUE(server.ready()) << server.log();
  HttpClient client(server.port());
  EXPECT_EQ(Json::parse(client.get("/v2/models/a").body)["parameters"]["device"],
            gpu ? "cuda:0" : "cpu");
  EXPECT_EQ(Json::parse(client.get("/v2/models/b").body)["parameters"]["device"], "cpu");
  const std::vector<double> row = testing::breast_cancer_rows().front().features;
  for (const char* model : {"a", "b"}) {
    HttpResult r = client.post(std::string("/v2/models/") + model + "/infer",
                               testing::breast_cancer_infer_body(row, 1.0));
    EXPECT_EQ(r.status, 200) << model << ": " << r.body;
  }
  const std::string metrics = client.get("/metrics").body;
  EXPECT_NE(metrics.find("kiln_gpu_utilization_ratio{gpu=\"0\",name=\"Test GPU 80GB\"} 0.87"),
            std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("kiln_gpu_memory_total_bytes{gpu=\"1\""), std::string::npos);
}

TEST(DeviceCliTest, WithoutNvmlTheGpuFamiliesAreAbsent) {
  TempDir home;
  const auto bundle = testing::train_breast_cancer_bundle(home.path(), home / "bc");
  ::setenv("KILN_NVML_LIBRARY", (home / "no-such-libnvidia-ml.so.1").c_str(), 1);
  ServerProcess server({"--model", "bc=" + bundle.string()}, home.path(), home / "serve.log");
  ::unsetenv("KILN_NVML_LIBRARY");
  ASSERT_TRUE(server.ready()) << server.log();
  const std::string metrics = HttpClient(server.port()).get("/metrics").body;
  EXPECT_NE(metrics.find("process_resident_memory_bytes"), std::string::npos) << metrics;
  EXPECT_EQ(metrics.find("kiln_gpu_"), std::string::npos) << metrics;
}

}  // namespace
}  // namespace kiln
