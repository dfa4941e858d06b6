// Drives `kiln tune` and `kiln tune show`: black-box mode on a shell objective, parallel
// workers, crash isolation, kill -9 of the tuner and resume, a small training-config study on
// the breast-cancer example with pruning, and bad input (exit 2).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "support/test_support.h"

namespace kiln {
namespace {

using testing::CommandResult;
using testing::example;
using testing::read_text;
using testing::run_kiln;
using testing::spawn_kiln;
using testing::TempDir;
using testing::write_text;
using Json = nlohmann::json;
namespace fs = std::filesystem;

const char* kQuadraticSpace =
    "params:\n"
    "  x: {type: float, low: -5, high: 5}\n"
    "  y: {type: float, low: -5, high: 5}\n";
// (x-2)^2 + (y+1)^2, minimum 0 at (2, -1).
const char* kQuadraticCmd = "awk 'BEGIN { print ({x} - 2)^2 + ({y} + 1)^2 }'";

Json show(const fs::path& home, const std::string& study) {
  CommandResult r = run_kiln({"tune", "show", study, "--json"}, home);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return Json::parse(r.out);
}

int count_state(const Json& s, const std::string& state, bool orphaned = false) {
  int n = 0;
  for (const auto& t : s["trials"])
    if (t["state"] == state && t.value("orphaned", false) == orphaned) ++n;
  return n;
}

// `kiln tune --objective-cmd CMD --space SPACE --study STUDY`, then `rest`.
std::vector<std::string> objective_study(const std::string& cmd, const fs::path& space,
                                         const std::string& study,
                                         std::initializer_list<std::string> rest) {
  std::vector<std::string> args = {"tune",         "--objective-cmd", cmd,  "--space",
                                   space.string(), "--study",         study};
  args.insert(args.end(), rest);
  return args;
}

TEST(TuneCliTest, BlackBoxTpeMinimisesAQuadraticAndShowPrintsTheStudy) {
  TempDir home;
  write_text(home / "space.yaml", kQuadraticSpace);
  CommandResult r =
      run_kiln({"tune", "--objective-cmd", kQuadraticCmd, "--space", (home / "space.yaml").string(),
                "--trials", "30", "--direction", "minimize", "--seed", "3", "--study", "quad"},
               home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Json s = show(home.path(), "quad");
  EXPECT_EQ(s["study"], "quad");
  EXPECT_EQ(s["direction"], "minimize");
  ASSERT_EQ(s["trials"].size(), 30u);
  EXPECT_EQ(count_state(s, "complete"), 30);
  const Json& best = s["best"];
  EXPECT_LT(best["value"].get<double>(), 1.0) << s.dump();
  const double x = best["params"]["x"], y = best["params"]["y"];
  EXPECT_NEAR(best["value"].get<double>(), (x - 2) * (x - 2) + (y + 1) * (y + 1), 1e-4);
  for (const auto& t : s["trials"]) {
    EXPECT_TRUE(t["params"].contains("x"));
    EXPECT_GE(t["params"]["x"].get<double>(), -5);
    EXPECT_LE(t["params"]["x"].get<double>(), 5);
  }
  for (const char* f : {"history.svg", "parallel_coordinates.svg", "importance.svg"})
    EXPECT_NE(read_text(home / "studies" / "quad" / "plots" / f).find("<svg"), std::string::npos)
        << f;
  // The human table names the best trial.
  r = run_kiln({"tune", "show", "quad"}, home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("best: trial " + std::to_string(best["number"].get<int>())),
            std::string::npos)
      << r.out;
  // Seeded: the same study again (another name) samples the same parameters.
  r = run_kiln({"tune", "--objective-cmd", kQuadraticCmd, "--space", (home / "space.yaml").string(),
                "--trials", "30", "--direction", "minimize", "--seed", "3", "--study", "quad2"},
               home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Json s2 = show(home.path(), "quad2");
  for (size_t i = 0; i < 30; ++i) EXPECT_EQ(s2["trials"][i]["params"], s["trials"][i]["params"]);
}

TEST(TuneCliTest, WorkersRunTrialsAtOnceAndCrashesAreIsolated) {
  TempDir home;
  write_text(home / "space.yaml", "params:\n  k: {type: int, low: 0, high: 5}\n");
  // Each trial logs start/end; k = 0 exits 3, k = 1 kills itself (as an OOM kill would).
  const std::string log = (home / "events").string();
  const std::string cmd = "echo start >> " + log + "; sleep 0.5; echo end >> " + log +
                          "; if [ {k} = 0 ]; then exit 3; fi; if [ {k} = 1 ]; then kill -9 $$; "
                          "fi; echo {k}";
  // The grid gives every k exactly once.
  CommandResult r = run_kiln(
      {"tune", "--objective-cmd", cmd, "--space", (home / "space.yaml").string(), "--trials", "6",
       "--workers", "3", "--sampler", "grid", "--direction", "maximize", "--study", "w"},
      home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // Some moment had more than one trial running.
  int live = 0, most = 0;
  std::istringstream in(read_text(home / "events"));
  for (std::string l; std::getline(in, l);) {
    live += l == "start" ? 1 : -1;
    most = std::max(most, live);
  }
  EXPECT_GE(most, 2);
  EXPECT_LE(most, 3);
  Json s = show(home.path(), "w");
  ASSERT_EQ(s["trials"].size(), 6u);
  int failed = 0;
  for (const auto& t : s["trials"]) {
    const int k = t["params"]["k"];
    if (k <= 1) {
      EXPECT_EQ(t["state"], "failed") << t.dump();
      ++failed;
    } else {
      EXPECT_EQ(t["state"], "complete") << t.dump();
      EXPECT_EQ(t["value"].get<double>(), k);
    }
  }
  EXPECT_EQ(failed, 2);
  EXPECT_EQ(s["best"]["value"].get<double>(), 5.0) << s.dump();
}

TEST(TuneCliTest, KillMinus9ThenTheSameCommandResumesAndEndsWithNTrials) {
  TempDir home;
  write_text(home / "space.yaml", kQuadraticSpace);
  const std::string cmd = std::string("sleep 0.4; ") + kQuadraticCmd;
  const std::vector<std::string> args = objective_study(
      cmd, home / "space.yaml", "resume",
      {"--trials", "10", "--workers", "2", "--direction", "minimize", "--seed", "1"});
  pid_t pid = spawn_kiln(args, home.path());
  // Wait for a few finished trials (the DB is readable while the tuner writes).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  int finished = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    CommandResult r = run_kiln({"tune", "show", "resume", "--json"}, home.path());
    if (r.exit_code == 0) {
      Json s = Json::parse(r.out);
      finished = count_state(s, "complete");
      if (finished >= 3) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_GE(finished, 3);
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  CommandResult r = run_kiln(args, home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Json s = show(home.path(), "resume");
  EXPECT_EQ(count_state(s, "complete"), 10) << s.dump();
  EXPECT_EQ(count_state(s, "running"), 0);
  // Trials the killed tuner left running were marked failed (orphaned) and re-run.
  const int orphans = count_state(s, "failed", /*orphaned=*/true);
  EXPECT_GE(orphans, 1) << s.dump();
  EXPECT_EQ(s["trials"].size(), 10u + orphans);
  EXPECT_NE(r.err.find("marked failed"), std::string::npos) << r.err;
}

TEST(TuneCliTest, TrainingConfigStudyOnBreastCancerWithPruning) {
  TempDir home;
  write_text(home / "space.yaml",
             "params:\n"
             "  optimizer.lr: {type: float, low: 1.0e-4, high: 3.0e-2, log: true}\n"
             "  model.dropout: {type: float, low: 0.0, high: 0.5}\n"
             "  batch_size: {type: categorical, choices: [16, 64]}\n");
  CommandResult r = run_kiln({"tune",
                              example("breast-cancer/train.yaml"),
                              "--space",
                              (home / "space.yaml").string(),
                              "--set",
                              "epochs=4",
                              "--set",
                              "early_stopping.patience=0",
                              "--trials",
                              "4",
                              "--workers",
                              "2",
                              "--pruner",
                              "asha",
                              "--reduction-factor",
                              "2",
                              "--seed",
                              "0",
                              "--study",
                              "bc",
                              "--push",
                              "bc-best",
                              "--json"},
                             home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Json out = Json::parse(r.out);
  EXPECT_EQ(out["direction"], "maximize");
  ASSERT_EQ(out["trials"].size(), 4u);
  int complete = 0;
  for (const auto& t : out["trials"]) {
    EXPECT_NE(t["state"], "failed") << t.dump();
    ASSERT_TRUE(t.contains("intermediate")) << t.dump();
    if (t["state"] == "complete") {
      ++complete;
      EXPECT_EQ(t["intermediate"].size(), 4u) << t.dump();
    }
  }
  EXPECT_GE(complete, 1);
  EXPECT_GT(out["best"]["value"].get<double>(), 0.85);
  const int n = out["best"]["number"];
  const fs::path bundle =
      home / "studies" / "bc" / ("trial-" + std::to_string(n)) / "run" / "bundle";
  ASSERT_TRUE(fs::exists(bundle / "manifest.json"));
  // A trial's value is its bundle's: model.pt's validation accuracy, not the best epoch's.
  Json manifest = Json::parse(testing::read_text(bundle / "manifest.json"));
  EXPECT_DOUBLE_EQ(out["best"]["value"].get<double>(),
                   manifest["metrics"]["val"]["accuracy"].get<double>());
  // --keep-trials best (the default): the other trials keep their logs and metrics only.
  for (const auto& t : out["trials"]) {
    if (t["number"] == n) continue;
    const fs::path dir =
        home / "studies" / "bc" / ("trial-" + std::to_string(t["number"].get<int>()));
    EXPECT_TRUE(fs::exists(dir / "train.log")) << dir;
    EXPECT_FALSE(fs::exists(dir / "run" / "bundle")) << dir;
    EXPECT_FALSE(fs::exists(dir / "run" / "checkpoint.pt")) << dir;
    EXPECT_TRUE(fs::exists(dir / "run" / "metrics.jsonl")) << dir;
  }
  // --push: the best trial's bundle becomes version 1 of bc-best in the registry.
  CommandResult shown = run_kiln({"registry", "show", "bc-best@latest", "--json"}, home.path());
  ASSERT_EQ(shown.exit_code, 0) << shown.err;
  Json entry = Json::parse(shown.out);
  EXPECT_EQ(entry["version"], 1) << shown.out;
  EXPECT_EQ(entry["tags"]["tune_study"], "bc") << shown.out;
  EXPECT_EQ(entry["tags"]["tune_trial"], std::to_string(n)) << shown.out;
}

TEST(TuneCliTest, KeepTrialsAllKeepsEveryBundleAndNoneKeepsOnlyLogsAndMetrics) {
  TempDir home;
  write_text(home / "space.yaml",
             "params:\n  optimizer.lr: {type: float, low: 1.0e-4, high: 3.0e-2, log: true}\n");
  for (const std::string keep : {"all", "none"}) {
    CommandResult r =
        run_kiln({"tune", example("breast-cancer/train.yaml"), "--space",
                  (home / "space.yaml").string(), "--set", "epochs=2", "--trials", "2", "--study",
                  keep, "--keep-trials", keep, "--push", "bc-" + keep, "--json"},
                 home.path());
    ASSERT_EQ(r.exit_code, 0) << r.err;
    // The pushed version is reported; the bundle's path only while it still exists.
    const Json pushed = Json::parse(r.out)["pushed"];
    EXPECT_EQ(pushed["name"], "bc-" + keep) << r.out;
    EXPECT_EQ(pushed["version"], 1) << r.out;
    EXPECT_EQ(pushed.contains("bundle"), keep == "all") << r.out;
    if (keep == "all") {
      EXPECT_TRUE(fs::exists(pushed["bundle"].get<std::string>()));
    }
    EXPECT_EQ(run_kiln({"registry", "show", "bc-" + keep + "@1"}, home.path()).exit_code, 0);
    for (int n = 0; n < 2; ++n) {
      const fs::path dir = home / "studies" / keep / ("trial-" + std::to_string(n));
      EXPECT_TRUE(fs::exists(dir / "train.log")) << dir;
      EXPECT_TRUE(fs::exists(dir / "run" / "metrics.jsonl")) << dir;
      EXPECT_EQ(fs::exists(dir / "run" / "bundle" / "manifest.json"), keep == "all") << dir;
    }
  }
  CommandResult bad = run_kiln({"tune", example("breast-cancer/train.yaml"), "--space",
                                (home / "space.yaml").string(), "--keep-trials", "some"},
                               home.path());
  EXPECT_EQ(bad.exit_code, 2);
}

// Two tuners started at once on the same study end with exactly --trials N between them: the
// claim of a trial number checks the count in the same transaction.
TEST(TuneCliTest, TwoTunersOnOneStudyNeverOvershootTheTrialCount) {
  TempDir home;
  write_text(home / "space.yaml", "params:\n  x: {type: int, low: 0, high: 99}\n");
  const std::vector<std::string> args = objective_study(
      "sleep 0.3; echo {x}", home / "space.yaml", "shared",
      {"--trials", "6", "--workers", "3", "--sampler", "random", "--direction", "maximize"});
  pid_t other = spawn_kiln(args, home.path());
  CommandResult r = run_kiln(args, home.path());
  int status = 0;
  ::waitpid(other, &status, 0);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  Json s = show(home.path(), "shared");
  EXPECT_EQ(s["trials"].size(), 6u) << s.dump();
  EXPECT_EQ(count_state(s, "complete"), 6) << s.dump();
}

// A tuner that finds the study full waits for the other tuners' trials: when one of them is
// killed, its running trials become orphaned failures and the survivor runs them again, so the
// study still ends with N complete trials without a rerun.
TEST(TuneCliTest, ASurvivingTunerRerunsTheTrialsOfOneKilledMidStudy) {
  TempDir home;
  write_text(home / "space.yaml", "params:\n  x: {type: int, low: 0, high: 99}\n");
  const fs::path gate = home / "gate";  // trials run until it exists
  const std::vector<std::string> args = objective_study(
      "while [ ! -e " + gate.string() + " ]; do sleep 0.05; done; echo {x}", home / "space.yaml",
      "s", {"--trials", "4", "--workers", "2", "--sampler", "random", "--direction", "maximize"});
  auto wait_running = [&](int n) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < deadline) {
      CommandResult r = run_kiln({"tune", "show", "s", "--json"}, home.path());
      if (r.exit_code == 0 && count_state(Json::parse(r.out), "running") == n) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  };
  pid_t doomed = spawn_kiln(args, home.path());
  ASSERT_TRUE(wait_running(2));
  pid_t survivor = spawn_kiln(args, home.path());
  ASSERT_TRUE(wait_running(4));  // the survivor found the study full after two claims
  ::kill(doomed, SIGKILL);
  int status = 0;
  ::waitpid(doomed, &status, 0);
  write_text(gate, "");
  ASSERT_EQ(::waitpid(survivor, &status, 0), survivor);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  Json s = show(home.path(), "s");
  EXPECT_EQ(count_state(s, "complete"), 4) << s.dump();
  EXPECT_EQ(count_state(s, "failed", /*orphaned=*/true), 2) << s.dump();
  EXPECT_EQ(count_state(s, "running"), 0) << s.dump();
}

TEST(TuneCliTest, TimeoutStopsStartingTrialsAndARerunContinuesTheStudy) {
  TempDir home;
  write_text(home / "space.yaml", "params:\n  x: {type: int, low: 0, high: 9}\n");
  const std::vector<std::string> args =
      objective_study("sleep 0.3; echo {x}", home / "space.yaml", "t",
                      {"--trials", "40", "--timeout", "1", "--direction", "maximize"});
  CommandResult r = run_kiln(args, home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Json s = show(home.path(), "t");
  const size_t first = s["trials"].size();
  EXPECT_GE(first, 1u);
  EXPECT_LT(first, 10u);
  EXPECT_EQ(count_state(s, "complete"), static_cast<int>(first));
  // Same command again: the finished trials are kept and more are added.
  r = run_kiln(args, home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_GT(show(home.path(), "t")["trials"].size(), first);
}

TEST(TuneCliTest, BadInputExits2WithAClearMessage) {
  TempDir home;
  write_text(home / "ok.yaml", "params:\n  optimizer.lr: {type: float, low: 0.001, high: 0.1}\n");
  write_text(home / "unknown.yaml",
             "params:\n  optimizer.lrr: {type: float, low: 0.001, high: 0.1}\n");
  write_text(home / "empty.yaml", "params:\n  optimizer.lr: {type: float, low: 0.1, high: 0.1}\n");
  write_text(home / "log0.yaml",
             "params:\n  optimizer.lr: {type: float, low: 0, high: 0.1, log: true}\n");
  write_text(home / "other.yaml",
             "params:\n  optimizer.lr: {type: float, low: 0.001, high: 0.2}\n");
  const std::string cfg = example("breast-cancer/train.yaml");
  auto tune = [&](const std::string& space, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"tune",     cfg, "--space", (home / space).string(),
                                     "--trials", "1"};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_kiln(args, home.path());
  };
  CommandResult r = tune("unknown.yaml");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("optimizer.lrr"), std::string::npos) << r.err;
  r = tune("empty.yaml");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("empty range"), std::string::npos) << r.err;
  r = tune("log0.yaml");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("low > 0"), std::string::npos) << r.err;
  // Black-box mode needs --direction.
  r = run_kiln(
      {"tune", "--objective-cmd", "echo {optimizer.lr}", "--space", (home / "ok.yaml").string()},
      home.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--direction"), std::string::npos) << r.err;
  // A study name reused with another space: refused, the difference shown.
  r = run_kiln(
      {"tune", "--objective-cmd", "echo {optimizer.lr}", "--space", (home / "ok.yaml").string(),
       "--direction", "maximize", "--study", "same", "--trials", "1"},
      home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_kiln(
      {"tune", "--objective-cmd", "echo {optimizer.lr}", "--space", (home / "other.yaml").string(),
       "--direction", "maximize", "--study", "same", "--trials", "1"},
      home.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("different search space"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("optimizer.lr"), std::string::npos) << r.err;
  r = run_kiln({"tune", "show", "nope"}, home.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("no study named 'nope'"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace kiln
