// `kiln serve` with registry references: NAME@ALIAS hot reload when the alias moves (under load,
// no failed request), and a model saved by Python's torch.jit.save pushed with
// `kiln registry push --format torchscript` and served end to end.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "serve_helpers.h"
#include "support/test_support.h"

namespace kiln {
namespace {

using testing::CommandResult;
using testing::HttpClient;
using testing::HttpResult;
using testing::run_kiln;
using testing::ServerProcess;
using testing::shared_datasets_dir;
using testing::TempDir;
using testing::write_text;
using Json = nlohmann::json;
namespace fs = std::filesystem;

std::string cancer_body(int n) {
  Json data = Json::array();
  for (int i = 0; i < n; ++i) data.push_back(std::vector<double>(30, 1.0 + i));
  return Json{{"inputs",
               Json::array({Json{
                   {"name", "input"}, {"shape", {n, 30}}, {"datatype", "FP32"}, {"data", data}}})}}
      .dump();
}

void kiln_ok(const std::vector<std::string>& args, const fs::path& home) {
  CommandResult r = run_kiln(args, home, {"KILN_THREADS=1"});
  ASSERT_EQ(r.exit_code, 0) << args[0] << " " << args[1] << ": " << r.err;
}

TEST(ServeRegistryTest, AliasMoveIsHotReloadedUnderLoadWithoutAFailedRequest) {
  TempDir home;
  for (int seed : {1, 2})
    kiln_ok({"train", "--data", (shared_datasets_dir() / "breast_cancer.csv").string(), "--target",
             "diagnosis", "--set", "seed=" + std::to_string(seed), "--out",
             (home / ("run" + std::to_string(seed))).string()},
            home.path());
  kiln_ok({"registry", "push", (home / "run1" / "bundle").string(), "--name", "cancer"},
          home.path());
  kiln_ok({"registry", "alias", "set", "cancer", "production", "1"}, home.path());

  ServerProcess srv({"--model", "cancer@production", "--poll-interval-ms", "100"}, home.path(),
                    home / "log");
  ASSERT_TRUE(srv.ready()) << srv.log();
  EXPECT_NE(srv.ready_line().find("(models: cancer:1)"), std::string::npos) << srv.ready_line();

  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0};
  std::mutex mu;
  std::set<std::string> versions;
  std::string first_failure;
  std::vector<std::thread> load;
  for (int k = 0; k < 4; ++k)
    load.emplace_back([&] {
      HttpClient c(srv.port());
      while (!stop) {
        HttpResult r = c.post("/v2/models/cancer/infer", cancer_body(2));
        std::lock_guard<std::mutex> lock(mu);
        if (r.status != 200) {
          if (first_failure.empty()) first_failure = std::to_string(r.status) + " " + r.body;
          ++failed;
          continue;
        }
        ++ok;
        versions.insert(Json::parse(r.body)["model_version"].get<std::string>());
      }
    });
  // Push version 2 (the alias stays: nothing changes), then move the alias.
  kiln_ok({"registry", "push", (home / "run2" / "bundle").string(), "--name", "cancer"},
          home.path());
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_EQ(versions, (std::set<std::string>{"1"}));
  }
  kiln_ok({"registry", "alias", "set", "cancer", "production", "2"}, home.path());
  bool switched = false;
  for (int i = 0; i < 200 && !switched; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    std::lock_guard<std::mutex> lock(mu);
    switched = versions.count("2") > 0;
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  stop = true;
  for (auto& th : load) th.join();
  EXPECT_TRUE(switched) << srv.log();
  EXPECT_EQ(failed.load(), 0) << first_failure;
  EXPECT_GT(ok.load(), 20);
  HttpClient c(srv.port());
  EXPECT_EQ(Json::parse(c.get("/v2/models/cancer").body)["versions"], Json::array({"2"}));
  EXPECT_EQ(c.get("/v2/models/cancer/versions/1/ready").status, 404);
  EXPECT_EQ(c.get("/v2/models/cancer/versions/2/ready").status, 200);
}

TEST(ServeRegistryTest, ServesAPythonTorchJitSaveModelPushedToTheRegistry) {
  if (std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "/usr/bin/python3 cannot import torch (install python3-torch)";
  TempDir home;
  write_text(home / "save.py",
             "import sys, torch\n"
             "class M(torch.nn.Module):\n"
             "    def __init__(self):\n"
             "        super().__init__()\n"
             "        self.lin = torch.nn.Linear(4, 3)\n"
             "        with torch.no_grad():\n"
             "            self.lin.weight.copy_(torch.eye(3, 4)); self.lin.bias.zero_()\n"
             "    def forward(self, x):\n"
             "        return self.lin(x) * 2\n"
             "torch.jit.save(torch.jit.script(M()), sys.argv[1])\n");
  ASSERT_EQ(std::system(
                ("/usr/bin/python3 " + (home / "save.py").string() + " " + (home / "m.pt").string())
                    .c_str()),
            0);
  kiln_ok(
      {"registry", "push", (home / "m.pt").string(), "--name", "pyclf", "--format", "torchscript",
       "--input", "input:FP32:-1,4", "--output", "logits:FP32:-1,3", "--labels", "a,b,c"},
      home.path());
  ServerProcess srv({"--model", "pyclf@latest"}, home.path(), home / "log");
  ASSERT_TRUE(srv.ready()) << srv.log();
  HttpClient c(srv.port());
  HttpResult r = c.post(
      "/v2/models/pyclf/infer",
      R"({"id": "py", "inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP64",)"
      R"( "data": [[1, 0, 5, 0], [0, 7, 0, 0]]}], "outputs": [{"name": "logits"}, {"name": "labels"}]})");
  ASSERT_EQ(r.status, 200) << r.body;
  Json j = Json::parse(r.body);
  EXPECT_EQ(j["model_version"], "1");
  EXPECT_EQ(j["id"], "py");
  EXPECT_EQ(j["outputs"][0]["data"], Json::parse("[2.0, 0.0, 10.0, 0.0, 14.0, 0.0]"));
  EXPECT_EQ(j["outputs"][1]["data"], Json::parse(R"(["c", "b"])"));
}

}  // namespace
}  // namespace kiln
