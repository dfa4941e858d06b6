// The shipped default recipe (examples/fashion-mnist/cnn.yaml, with flip test-time augmentation):
// Python's torch.jit.load runs the bundle's model.pt on the 10,000 raw test images and counts
// exactly the correct answers the manifest claims; the default keeps >= 92% on that figure. (This
// is also the suite's full-data training run: it replaced a 3-epoch trainer test.)
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "support/test_support.h"

namespace kiln {
namespace {

using testing::CommandResult;
using testing::example;
using testing::read_text;
using testing::run_kiln;
using testing::TempDir;
using testing::write_text;
using Json = nlohmann::json;
namespace fs = std::filesystem;

TEST(ServedMetricsSlowTest, DefaultFashionMnistRecipeClaimsWhatItsModuleServes) {
  if (std::system("/usr/bin/python3 -c 'import torch, numpy' >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "/usr/bin/python3 lacks torch (apt-get install python3-torch)";
  TempDir home;
  CommandResult r = run_kiln(
      {"train", example("fashion-mnist/cnn.yaml"), "--out", (home / "run").string(), "--json"},
      home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Json manifest = Json::parse(read_text(home / "run" / "bundle" / "manifest.json"));
  EXPECT_EQ(manifest["test_time_augmentation"], "flip");
  const Json& test = manifest["metrics"]["test"];
  EXPECT_EQ(test["samples"], 10000);
  EXPECT_GE(test["accuracy"].get<double>(), 0.92) << test["accuracy"];
  write_text(home / "check.py", R"(
import gzip, json, sys, numpy as np, torch
bundle = sys.argv[1]
with gzip.open("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz") as f:
    x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
with gzip.open("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz") as f:
    y = np.frombuffer(f.read(), np.uint8, offset=8)
model = torch.jit.load(bundle + "/model.pt")
correct = 0
with torch.no_grad():
    for i in range(0, len(x), 500):
        out = model(torch.from_numpy(x[i:i + 500].astype(np.float32)))
        correct += int((out.argmax(1).numpy() == y[i:i + 500]).sum())
test = json.load(open(bundle + "/manifest.json"))["metrics"]["test"]
claimed = round(test["accuracy"] * test["samples"])
print("python:", correct, "manifest:", claimed)
sys.exit(0 if correct == claimed else 1)
)");
  std::string cmd =
      "/usr/bin/python3 " + (home / "check.py").string() + " " + (home / "run" / "bundle").string();
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  // kiln eval of the run directory runs the same module: the same figure.
  r = run_kiln(
      {"eval", (home / "run").string(), "--data", example("fashion-mnist/dataset.yaml"), "--json"},
      home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Json::parse(r.out)["accuracy"], test["accuracy"]);
  // The default model-test suite (what `make demo` runs before registering) passes on it, image
  // checks included, on the 10,000 test images of the training snapshot.
  // The latency check's budget is wall-clock time, which a machine shared with the rest of the
  // suite can miss (48 ms at batch 1 once, under ctest -j2): it must run and measure, and every
  // other check must pass.
  r = run_kiln({"test", (home / "run").string(), "--json"}, home.path());
  ASSERT_TRUE(r.exit_code == 0 || r.exit_code == 1) << r.out << r.err;
  Json report = Json::parse(r.out);
  EXPECT_EQ(report["rows"], 10000);
  std::set<std::string> names;
  for (const auto& c : report["checks"]) {
    names.insert(c["name"].get<std::string>());
    if (c["name"] == "latency")
      EXPECT_NE(c["result"], "error") << c.dump();
    else
      EXPECT_EQ(c["result"], "pass") << c.dump();
  }
  for (const char* name :
       {"smoke", "trivial_baseline", "recorded_metrics", "boundary", "invariance/shift",
        "invariance/brightness", "invariance/flip", "serve", "latency"})
    EXPECT_EQ(names.count(name), 1u) << name;
}

}  // namespace
}  // namespace kiln
