#include "kiln/pipeline/runner.h"

#include <gtest/gtest.h>

#include <sstream>

#include "support/test_support.h"

namespace kiln::pipeline {
namespace {

using kiln::testing::TempDir;
using kiln::testing::write_text;

/// Runs the pipeline at dir/p.yaml with its records in dir/home.
class RunnerTest : public ::testing::Test {
 protected:
  std::map<std::string, StageRecord> run(const std::string& yaml,
                                         std::vector<std::string> force = {}) {
    write_text(dir_ / "p.yaml", yaml);
    auto file = read_pipeline_file(dir_ / "p.yaml");
    EXPECT_TRUE(file.ok()) << file.status();
    auto store = RunStore::Open(dir_ / "home" / "pipelines.db");
    EXPECT_TRUE(store.ok()) << store.status();
    RunOptions options("/bin/false");
    options.home(dir_ / "home").force(std::move(force));
    std::ostringstream log;
    auto summary = run_pipeline(*file, **store, options, log);
    EXPECT_TRUE(summary.ok()) << summary.status();
    std::map<std::string, StageRecord> by_stage;
    for (const StageRecord& r : summary->stages) by_stage[r.stage] = r;
    return by_stage;
  }
  TempDir dir_;
};

constexpr const char* kChain = R"(stages:
  a: {kind: shell, cmd: "cat in.txt > a.txt", deps: [in.txt], outs: [a.txt]}
  b: {kind: shell, cmd: "cat a.txt > b.txt", deps: [a.txt], needs: [a], outs: [b.txt]}
  c: {kind: shell, cmd: "echo c > c.txt", outs: [c.txt]}
)";

TEST_F(RunnerTest, RunsChangedStagesAndTheirDownstreamOnly) {
  write_text(dir_ / "in.txt", "1");
  auto first = run(kChain);
  for (const char* s : {"a", "b", "c"}) {
    EXPECT_EQ(first[s].status, "done") << s;
    EXPECT_EQ(first[s].reason, "never run") << s;
  }
  auto second = run(kChain);
  for (const char* s : {"a", "b", "c"}) EXPECT_EQ(second[s].status, "skipped") << s;
  write_text(dir_ / "in.txt", "2");
  auto third = run(kChain);
  EXPECT_EQ(third["a"].status, "done");
  EXPECT_EQ(third["a"].reason, "changed: in.txt");
  EXPECT_EQ(third["b"].status, "done");
  EXPECT_NE(third["b"].reason.find("a.txt"), std::string::npos) << third["b"].reason;
  EXPECT_EQ(third["c"].status, "skipped");
  auto forced = run(kChain, {"c"});
  EXPECT_EQ(forced["c"].reason, "forced");
  EXPECT_EQ(forced["a"].status, "skipped");
}

TEST_F(RunnerTest, FailureBlocksDependantsOnly) {
  auto r = run(R"(stages:
  bad: {kind: shell, cmd: "exit 3"}
  after: {kind: shell, cmd: "true", needs: [bad]}
  other: {kind: shell, cmd: "true"}
)");
  EXPECT_EQ(r["bad"].status, "failed");
  EXPECT_EQ(r["bad"].exit_code, 3);
  EXPECT_EQ(r["after"].status, "blocked");
  EXPECT_EQ(r["after"].reason, "upstream bad failed");
  EXPECT_EQ(r["other"].status, "done");
}

TEST_F(RunnerTest, MissingDeclaredOutputFailsTheStage) {
  auto r = run("stages:\n  a: {kind: shell, cmd: \"true\", outs: [never.txt]}\n");
  EXPECT_EQ(r["a"].status, "failed");
  EXPECT_NE(r["a"].reason.find("never.txt"), std::string::npos);
}

TEST_F(RunnerTest, FailedGateBlocksWithNotBlessed) {
  auto r = run(R"(stages:
  check: {kind: shell, cmd: "echo 'accuracy 0.5 < 0.9: FAILED'; exit 1"}
  ship: {kind: shell, cmd: "true", gate: check}
)");
  EXPECT_EQ(r["ship"].status, "blocked");
  EXPECT_EQ(r["ship"].reason, "not blessed: check failed (accuracy 0.5 < 0.9: FAILED)");
}

}  // namespace
}  // namespace kiln::pipeline
