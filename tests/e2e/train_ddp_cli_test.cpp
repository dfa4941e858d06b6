// `kiln train --nproc 2`: data-parallel training with two real processes (Gloo over loopback) on
// Fashion-MNIST reaches what one process reaches; a rank killed mid-run makes the launcher
// restart the job from its last checkpoint and finish; accumulated batches all-reduce once a
// step and train as one batch of their rows; bad launch options are clear errors.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "support/test_support.h"

namespace kiln {
namespace {

using testing::example;
using testing::run_kiln;
using testing::TempDir;
using Json = nlohmann::json;
namespace fs = std::filesystem;

const std::vector<std::string> kSmallCnn = {"--set", "data.limit=6000", "--set", "epochs=3",
                                            "--set", "model.width=8",   "--set", "model.hidden=32"};

std::vector<std::string> train_args(const fs::path& out, std::vector<std::string> extra) {
  std::vector<std::string> args = {"train", example("fashion-mnist/cnn.yaml"), "--out",
                                   out.string(), "--json"};
  args.insert(args.end(), kSmallCnn.begin(), kSmallCnn.end());
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

TEST(TrainDdpCliTest, TwoProcessesReachWhatOneReaches) {
  TempDir home;
  auto one = run_kiln(train_args(home / "one", {}), home.path(), {"KILN_THREADS=2"});
  ASSERT_EQ(one.exit_code, 0) << one.err;
  auto two = run_kiln(train_args(home / "two", {"--nproc", "2"}), home.path());
  ASSERT_EQ(two.exit_code, 0) << two.err;
  EXPECT_NE(two.err.find("data-parallel: 2 ranks (Gloo), each computing 128 of every 256-row"),
            std::string::npos)
      << two.err;
  const Json a = Json::parse(one.out), b = Json::parse(two.out);  // rank 0 alone prints
  EXPECT_EQ(b["distributed"]["world_size"], 2);
  EXPECT_GT(b["distributed"]["allreduce_calls_rank0"].get<int64_t>(), b["steps"].get<int64_t>());
  EXPECT_EQ(a["steps"], b["steps"]);  // the same global batches
  const double acc1 = a["test_metrics"]["accuracy"], acc2 = b["test_metrics"]["accuracy"];
  EXPECT_GT(acc2, 0.70);
  EXPECT_NEAR(acc2, acc1, 0.02);
  const Json manifest = Json::parse(testing::read_text(home / "two" / "bundle" / "manifest.json"));
  EXPECT_EQ(manifest["distributed"]["world_size"], 2);
  EXPECT_EQ(manifest["metrics"]["history"].size(), 3u);
  // Only rank 0 wrote: one invocation, one checkpoint, no stray files of rank 1.
  EXPECT_TRUE(fs::exists(home / "two" / "checkpoint.pt"));
}

TEST(TrainDdpCliTest, AccumulatedBatchesTrainAsOneBatchOfTheirRows) {
  // Two ranks with batches of 32 accumulated in twos take each step on the same 64 rows as two
  // ranks with batches of 64 (each rank's share of a global batch is contiguous): with SGD and
  // no dropout, the same run. A reducer that all-reduced every batch, or dropped the batches
  // before a step's last, would not give it.
  TempDir home;
  const std::vector<std::string> sgd = {"train",
                                        example("breast-cancer/train.yaml"),
                                        "--json",
                                        "--nproc",
                                        "2",
                                        "--set",
                                        "epochs=3",
                                        "--set",
                                        "optimizer={name: sgd, lr: 0.05}",
                                        "--set",
                                        "schedule.name=constant"};
  auto run = [&](const std::string& name, std::vector<std::string> extra) {
    std::vector<std::string> args = sgd;
    args.insert(args.end(), {"--out", (home / name).string()});
    args.insert(args.end(), extra.begin(), extra.end());
    return run_kiln(args, home.path());
  };
  auto whole = run("whole", {"--set", "batch_size=64"});
  ASSERT_EQ(whole.exit_code, 0) << whole.err;
  auto accumulated =
      run("accumulated", {"--set", "batch_size=32", "--set", "accumulate_batches=2"});
  ASSERT_EQ(accumulated.exit_code, 0) << accumulated.err;
  EXPECT_NE(accumulated.err.find("the ranks all-reduce once a step, after its last batch"),
            std::string::npos)
      << accumulated.err;
  const Json a = Json::parse(whole.out), b = Json::parse(accumulated.out);
  EXPECT_EQ(b["steps"], a["steps"]);
  EXPECT_NEAR(b["test_metrics"]["loss"].get<double>(), a["test_metrics"]["loss"].get<double>(),
              1e-5);
  auto history = [&](const std::string& name) {
    return Json::parse(
        testing::read_text(home / name / "bundle" / "manifest.json"))["metrics"]["history"];
  };
  const Json ha = history("whole"), hb = history("accumulated");
  ASSERT_EQ(ha.size(), 3u);
  ASSERT_EQ(hb.size(), 3u);
  for (size_t e = 0; e < 3; ++e) {
    EXPECT_NEAR(hb[e]["train_loss"].get<double>(), ha[e]["train_loss"].get<double>(), 1e-5) << e;
    EXPECT_NEAR(hb[e]["val_loss"].get<double>(), ha[e]["val_loss"].get<double>(), 1e-5) << e;
  }
}

TEST(TrainDdpCliTest, WeightAveragingWithTwoRanks) {
  // ema: every rank averages; at each epoch end the ranks' averaged batch-norm statistics are
  // all-reduced with the network's own, and rank 0 validates and bundles the average.
  TempDir home;
  auto r = run_kiln(
      train_args(home / "ema", {"--nproc", "2", "--set", "epochs=2", "--set", "ema={decay: 0.99}"}),
      home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("ema: weights averaged with decay 0.99"), std::string::npos) << r.err;
  const Json out = Json::parse(r.out);
  EXPECT_GT(out["test_metrics"]["accuracy"].get<double>(), 0.6);
  const Json manifest = Json::parse(testing::read_text(home / "ema" / "bundle" / "manifest.json"));
  EXPECT_EQ(manifest["training"]["ema"]["decay"], 0.99);
  EXPECT_EQ(manifest["distributed"]["world_size"], 2);
}

/// Child pids of `pid` (the launcher's ranks).
std::vector<pid_t> children_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
  std::vector<pid_t> out;
  pid_t child;
  while (in >> child) out.push_back(child);
  return out;
}

TEST(TrainDdpCliTest, AKilledRankRestartsTheJobFromItsCheckpoint) {
  TempDir home;
  const fs::path out = home / "run";
  const fs::path err_path = home / "stderr";
  const pid_t launcher = ::fork();
  if (launcher == 0) {
    const int fd = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 2);
    const int null_fd = ::open("/dev/null", O_WRONLY);
    ::dup2(null_fd, 1);
    ::setenv("KILN_HOME", home.path().c_str(), 1);
    const std::string bin = testing::kiln_binary().string();
    std::vector<std::string> args = {bin,
                                     "train",
                                     example("fashion-mnist/cnn.yaml"),
                                     "--out",
                                     out.string(),
                                     "--nproc",
                                     "2",
                                     "--set",
                                     "data.limit=20000",
                                     "--set",
                                     "epochs=4",
                                     "--set",
                                     "model.width=16",
                                     "--set",
                                     "model.hidden=32",
                                     "--set",
                                     "checkpoint_every=5"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(bin.c_str(), argv.data());
    ::_exit(127);
  }
  // Once the first epoch is done (a checkpoint past step 0), kill rank 1 outright.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  bool killed = false;
  while (!killed && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (!fs::exists(out / "metrics.jsonl") || testing::read_text(out / "metrics.jsonl").empty())
      continue;
    const std::vector<pid_t> ranks = children_of(launcher);
    if (ranks.size() != 2) continue;
    // The launcher starts rank 0 first; kill the other.
    ASSERT_EQ(::kill(ranks[1], SIGKILL), 0);
    killed = true;
  }
  ASSERT_TRUE(killed) << testing::read_text(err_path);
  int status = 0;
  ASSERT_EQ(::waitpid(launcher, &status, 0), launcher);
  const std::string err = testing::read_text(err_path);
  ASSERT_TRUE(WIFEXITED(status)) << err;
  EXPECT_EQ(WEXITSTATUS(status), 0) << err;
  EXPECT_NE(err.find("was killed by signal 9; stopping the other ranks"), std::string::npos) << err;
  EXPECT_NE(err.find("restarting every rank from"), std::string::npos) << err;
  EXPECT_NE(err.find("resuming"), std::string::npos) << err;
  const Json manifest = Json::parse(testing::read_text(out / "bundle" / "manifest.json"));
  EXPECT_EQ(manifest["metrics"]["history"].size(), 4u);
  EXPECT_GT(manifest["metrics"]["test"]["accuracy"].get<double>(), 0.7);
}

TEST(TrainDdpCliTest, BadLaunchOptionsAreClearErrors) {
  TempDir home;
  auto r = run_kiln(train_args(home / "a", {"--nproc", "2", "--nnodes", "2"}), home.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--nnodes > 1 needs --master ADDR:PORT"), std::string::npos) << r.err;
  r = run_kiln({"train", "--data", (testing::shared_datasets_dir() / "breast_cancer.csv").string(),
                "--target", "diagnosis", "--nproc", "2"},
               home.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("the quick path (--data)"), std::string::npos) << r.err;
  r = run_kiln(train_args(home / "b", {}), home.path(),
               {"WORLD_SIZE=2", "RANK=5", "MASTER_ADDR=127.0.0.1", "MASTER_PORT=1"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("RANK=5 is outside WORLD_SIZE=2"), std::string::npos) << r.err;
  for (const char* bucket : {"KILN_DDP_BUCKET_KB=0", "KILN_DDP_BUCKET_KB=lots"}) {
    r = run_kiln(train_args(home / "c", {}), home.path(),
                 {"WORLD_SIZE=2", "RANK=0", "MASTER_ADDR=127.0.0.1", "MASTER_PORT=1", bucket});
    EXPECT_EQ(r.exit_code, 2) << bucket;
    EXPECT_NE(r.err.find("KILN_DDP_BUCKET_KB="), std::string::npos) << r.err;
  }
}

}  // namespace
}  // namespace kiln
