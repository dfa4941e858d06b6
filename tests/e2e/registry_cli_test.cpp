// Drives `kiln registry <verb>` on bundles trained by the real binary: every verb, references in
// eval/predict/export, bad names and references, tampering, and a TorchScript file saved by
// Python. The concurrent-push and kill -9 loops are in registry_cli_slow_test.cpp.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "support/test_support.h"

namespace kiln {
namespace {

using testing::CommandResult;
using testing::example;
using testing::read_text;
using testing::run_kiln;
using testing::train_breast_cancer_bundle;
using testing::shared_datasets_dir;
using testing::TempDir;
using testing::write_text;
using Json = nlohmann::json;
namespace fs = std::filesystem;


void flip_byte(const fs::path& path) {
  ::chmod(path.c_str(), 0644);
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  const auto mid = static_cast<std::streamoff>(fs::file_size(path) / 2);
  char c;
  f.seekg(mid);
  f.read(&c, 1);
  c = static_cast<char>(c ^ 0x5a);
  f.seekp(mid);
  f.write(&c, 1);
}

TEST(RegistryCliTest, EveryVerbOnATrainedBundle) {
  TempDir home;
  const fs::path bundle = train_breast_cancer_bundle(home.path(), home / "run");
  const std::string csv = (shared_datasets_dir() / "breast_cancer.csv").string();

  CommandResult r = run_kiln({"registry", "push", bundle.string(), "--name", "cancer", "--tag",
                              "stage=dev", "--description", "first", "--json"},
                             home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Json v1 = Json::parse(r.out);
  EXPECT_EQ(v1["name"], "cancer");
  EXPECT_EQ(v1["version"], 1);
  EXPECT_EQ(v1["tags"]["stage"], "dev");
  EXPECT_TRUE(fs::exists(home / "registry.db"));
  r = run_kiln({"registry", "push", bundle.string(), "--name", "cancer", "--parent", "cancer@1"},
               home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("pushed cancer@2"), std::string::npos) << r.out;

  // list, with --where and --sort
  r = run_kiln({"registry", "list", "--json"}, home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Json::parse(r.out).size(), 2u);
  r = run_kiln({"registry", "list", "cancer", "--where", "metrics.accuracy>0.5", "--where",
                "tags.stage=dev", "--json"},
               home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_EQ(Json::parse(r.out).size(), 1u);
  EXPECT_EQ(Json::parse(r.out)[0]["version"], 1);
  r = run_kiln({"registry", "list", "--sort", "-version", "--json"}, home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Json::parse(r.out)[0]["version"], 2);
  r = run_kiln({"registry", "list"}, home.path());  // the table
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("stage=dev"), std::string::npos) << r.out;
  EXPECT_EQ(run_kiln({"registry", "list", "--where", "accuracy"}, home.path()).exit_code, 2);

  // alias, show, and the reference in eval / predict / export
  r = run_kiln({"registry", "alias", "set", "cancer", "production", "1"}, home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_kiln({"registry", "show", "cancer@production", "--json"}, home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Json shown = Json::parse(r.out);
  EXPECT_EQ(shown["version"], 1);
  EXPECT_EQ(shown["aliases"], Json::array({"production"}));
  EXPECT_GT(shown["size_bytes"].get<int64_t>(), 0);
  EXPECT_FALSE(shown["lineage"]["snapshot_hash"].get<std::string>().empty());
  EXPECT_FALSE(shown["lineage"]["config_hash"].get<std::string>().empty());
  EXPECT_TRUE(shown["manifest"].contains("signature"));
  EXPECT_TRUE(shown["created_at"].is_string());
  r = run_kiln({"registry", "show", "cancer@2", "--lineage"}, home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("parent cancer@1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("lineage chain"), std::string::npos);
  r = run_kiln({"eval", "cancer@production", "--data", csv, "--json"}, home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_GT(Json::parse(r.out)["accuracy"].get<double>(), 0.9);
  r = run_kiln({"predict", "cancer@1", "--input", csv, "--output", (home / "p.csv").string()},
               home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_kiln({"export", "cancer@latest", "--out", (home / "m.pt").string()}, home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(read_text(home / "m.pt"), read_text(bundle / "model.pt"));

  // tag, diff, rollback, alias history/rm
  ASSERT_EQ(run_kiln({"registry", "tag", "cancer@2", "stage=prod"}, home.path()).exit_code, 0);
  r = run_kiln({"registry", "diff", "cancer@1", "cancer@2", "--json"}, home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Json d = Json::parse(r.out);
  EXPECT_TRUE(d["same_content"].get<bool>());
  EXPECT_EQ(d["tags"]["stage"]["b"], "prod");
  EXPECT_EQ(d["lineage"]["parent"]["b"], "cancer@1");
  EXPECT_TRUE(d["config"].empty());
  ASSERT_EQ(
      run_kiln({"registry", "alias", "set", "cancer", "production", "2"}, home.path()).exit_code,
      0);
  r = run_kiln({"registry", "rollback", "cancer", "production"}, home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("-> 1"), std::string::npos);
  r = run_kiln({"registry", "rollback", "cancer", "production"}, home.path());
  EXPECT_EQ(r.exit_code, 1) << r.err;  // no earlier target
  r = run_kiln({"registry", "alias", "history", "cancer", "production", "--json"}, home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Json::parse(r.out).size(), 3u);

  // delete: refused under an alias, then allowed; pull; gc; verify
  r = run_kiln({"registry", "delete", "cancer@1"}, home.path());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("production"), std::string::npos) << r.err;
  r = run_kiln({"registry", "pull", "cancer@production", "--out", (home / "pulled").string()},
               home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(read_text(home / "pulled" / "weights.pt"), read_text(bundle / "weights.pt"));
  ASSERT_EQ(run_kiln({"eval", (home / "pulled").string(), "--data", csv}, home.path()).exit_code,
            0);
  ASSERT_EQ(run_kiln({"registry", "alias", "rm", "cancer", "production"}, home.path()).exit_code,
            0);
  ASSERT_EQ(run_kiln({"registry", "delete", "cancer@1"}, home.path()).exit_code, 0);
  EXPECT_EQ(run_kiln({"registry", "show", "cancer@1"}, home.path()).exit_code, 2);
  r = run_kiln({"registry", "gc", "--grace", "0", "--json"}, home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Json::parse(r.out)["artifacts_removed"], 0);  // v2 shares every artifact
  ASSERT_EQ(run_kiln({"registry", "delete", "cancer@2"}, home.path()).exit_code, 0);
  r = run_kiln({"registry", "gc", "--grace", "0", "--json"}, home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_GE(Json::parse(r.out)["artifacts_removed"].get<int>(), 3);
  r = run_kiln({"registry", "verify"}, home.path());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = run_kiln({"registry", "push", bundle.string(), "--name", "cancer", "--json"}, home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Json::parse(r.out)["version"], 3);  // numbers are never reused
}

TEST(RegistryCliTest, BadNamesAndReferencesAreClearErrors) {
  TempDir home;
  const fs::path bundle = train_breast_cancer_bundle(home.path(), home / "run");
  for (const char* bad : {"../x", "a/b", "", ".hidden", "has space"}) {
    CommandResult r = run_kiln({"registry", "push", bundle.string(), "--name", bad}, home.path());
    EXPECT_EQ(r.exit_code, 2) << bad;
    EXPECT_NE(r.err.find("model name"), std::string::npos) << r.err;
  }
  EXPECT_EQ(
      run_kiln({"registry", "push", bundle.string(), "--name", std::string(129, 'x')}, home.path())
          .exit_code,
      2);
  EXPECT_FALSE(fs::exists(home / "x"));
  ASSERT_EQ(
      run_kiln({"registry", "push", bundle.string(), "--name", "cancer"}, home.path()).exit_code,
      0);
  CommandResult r = run_kiln({"registry", "show", "nope@1"}, home.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("models: cancer"), std::string::npos) << r.err;
  r = run_kiln({"registry", "show", "cancer@9"}, home.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("versions: 1"), std::string::npos) << r.err;
  r = run_kiln({"eval", "cancer@staging", "--data", "x.csv"}, home.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("no alias 'staging'"), std::string::npos) << r.err;
  r = run_kiln({"predict", "cancer", "--input", "x.csv"}, home.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("NAME@VERSION"), std::string::npos) << r.err;
  r = run_kiln({"registry", "alias", "set", "cancer", "production", "4"}, home.path());
  EXPECT_EQ(r.exit_code, 2);
  r = run_kiln({"registry", "push", (home / "missing").string(), "--name", "cancer"}, home.path());
  EXPECT_EQ(r.exit_code, 2);
}

TEST(RegistryCliTest, FlippedByteIsNamedByVerifyAndRefusedEverywhere) {
  TempDir home;
  const fs::path bundle = train_breast_cancer_bundle(home.path(), home / "run");
  CommandResult r =
      run_kiln({"registry", "push", bundle.string(), "--name", "cancer", "--json"}, home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string sha = Json::parse(r.out)["files"]["weights.pt"];
  ASSERT_EQ(run_kiln({"registry", "verify"}, home.path()).exit_code, 0);
  // Materialise it first, so the damage happens under a warm cache too.
  ASSERT_EQ(
      run_kiln({"export", "cancer@1", "--out", (home / "m.pt").string()}, home.path()).exit_code,
      0);
  flip_byte(home / "artifacts" / sha.substr(0, 2) / sha);
  r = run_kiln({"registry", "verify"}, home.path());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find(sha), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("cancer@1 weights.pt"), std::string::npos) << r.err;
  r = run_kiln({"registry", "pull", "cancer@1", "--out", (home / "out").string()}, home.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_FALSE(fs::exists(home / "out"));
  const std::string csv = (shared_datasets_dir() / "breast_cancer.csv").string();
  r = run_kiln({"eval", "cancer@1", "--data", csv}, home.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("sha256"), std::string::npos) << r.err;
}

// A model trained in Python (torch.jit.save of a scripted module) is pushed with its declared
// signature, predicted by Kiln with Python's outputs; a wrong declaration is exit 2.
TEST(RegistryCliTest, PushesATorchScriptFileSavedByPython) {
  if (std::system("/usr/bin/python3 -c 'import torch, numpy' >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "/usr/bin/python3 lacks torch (apt-get install python3-torch)";
  TempDir home;
  write_text(home / "save.py",
             "import sys, json, numpy as np, torch\n"
             "torch.manual_seed(0)\n"
             "class Net(torch.nn.Module):\n"
             "    def __init__(self):\n"
             "        super().__init__()\n"
             "        self.fc1 = torch.nn.Linear(784, 32)\n"
             "        self.fc2 = torch.nn.Linear(32, 10)\n"
             "    def forward(self, x):\n"
             "        return self.fc2(torch.relu(self.fc1(x)))\n"
             "m = Net().eval()\n"
             "torch.jit.save(torch.jit.script(m), sys.argv[1])\n"
             "x = np.random.RandomState(0).rand(5, 784).astype(np.float32) * 255\n"
             "np.save(sys.argv[2], x)\n"
             "with torch.no_grad(): y = m(torch.from_numpy(x)).numpy()\n"
             "json.dump(y.tolist(), open(sys.argv[3], 'w'))\n");
  const std::string cmd = "/usr/bin/python3 " + (home / "save.py").string() + " " +
                          (home / "model.pt").string() + " " + (home / "x.npy").string() + " " +
                          (home / "y.json").string();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  CommandResult r = run_kiln(
      {"registry", "push", (home / "model.pt").string(), "--name", "pyfmnist", "--format",
       "torchscript", "--input", "input:FP32:-1,784", "--output", "logits:FP32:-1,10", "--json"},
      home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Json v = Json::parse(r.out);
  EXPECT_EQ(v["task"], "custom");
  EXPECT_EQ(v["files"].size(), 2u);  // manifest.json and model.pt
  r = run_kiln({"registry", "show", "pyfmnist@1", "--json"}, home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Json m = Json::parse(r.out)["manifest"];
  EXPECT_EQ(m["signature"]["inputs"][0]["shape"], Json::parse("[-1,784]"));
  EXPECT_EQ(m["signature"]["outputs"][0]["name"], "logits");
  r = run_kiln({"predict", "pyfmnist@1", "--input", (home / "x.npy").string(), "--json"},
               home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Json rows = Json::parse(r.out), want = Json::parse(read_text(home / "y.json"));
  ASSERT_EQ(rows.size(), 5u);
  for (size_t i = 0; i < 5; ++i)
    for (size_t j = 0; j < 10; ++j)
      EXPECT_NEAR(rows[i]["outputs"][j].get<double>(), want[i][j].get<double>(), 1e-3);
  // eval of a custom bundle is a clear error; a classifier push with labels is accepted.
  r = run_kiln({"eval", "pyfmnist@1", "--data", "x.csv"}, home.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("custom"), std::string::npos) << r.err;
  r = run_kiln({"registry", "push", (home / "model.pt").string(), "--name", "pyfmnist", "--format",
                "torchscript", "--input", "input:FP32:-1,784", "--output", "logits:FP32:-1,10",
                "--labels", "0,1,2,3,4,5,6,7,8,9", "--json"},
               home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Json::parse(r.out)["task"], "classification");
  // Declarations that do not match the module: exit 2, nothing registered.
  for (const std::vector<std::string>& bad :
       {std::vector<std::string>{"--input", "input:FP32:-1,784", "--output", "logits:FP32:-1,5"},
        std::vector<std::string>{"--input", "input:FP32:-1,100", "--output", "logits:FP32:-1,10"},
        std::vector<std::string>{"--input", "input:FP32:-1,784", "--output", "logits:INT64:-1,10"},
        std::vector<std::string>{"--input", "input:FLOAT:-1,784", "--output", "logits:FP32:-1,10"},
        std::vector<std::string>{"--input", "input", "--output", "logits:FP32:-1,10"}}) {
    std::vector<std::string> args = {"registry",   "push",     (home / "model.pt").string(),
                                     "--name",     "pyfmnist", "--format",
                                     "torchscript"};
    args.insert(args.end(), bad.begin(), bad.end());
    r = run_kiln(args, home.path());
    EXPECT_EQ(r.exit_code, 2) << bad[1] << " " << bad[3] << "\n" << r.err;
  }
  write_text(home / "junk.pt", "not a model");
  r = run_kiln({"registry", "push", (home / "junk.pt").string(), "--name", "pyfmnist", "--format",
                "torchscript", "--input", "input:FP32:-1,784", "--output", "logits:FP32:-1,10"},
               home.path());
  EXPECT_EQ(r.exit_code, 2);
  r = run_kiln({"registry", "list", "pyfmnist", "--json"}, home.path());
  EXPECT_EQ(Json::parse(r.out).size(), 2u);
}

}  // namespace
}  // namespace kiln
