// `kiln pipeline` end to end with shell stages: the cache (an edited input re-runs exactly its
// downstream), parallel stages, a failure blocking only its dependants, kill -9 of the runner,
// a gate, status/show/dag and file errors; and the real breast-cancer example pipeline. Each test
// has its own KILN_HOME.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "kiln/core/hash.h"
#include "support/test_support.h"

namespace kiln {
namespace {

using testing::CommandResult;
using testing::example;
using testing::run_kiln;
using testing::spawn_kiln;
using testing::TempDir;
using testing::write_text;
using Json = nlohmann::json;
namespace fs = std::filesystem;

class PipelineCliTest : public ::testing::Test {
 protected:
  fs::path pipeline(const std::string& yaml) {
    write_text(work_ / "pipeline.yaml", yaml);
    return work_ / "pipeline.yaml";
  }
  CommandResult kiln(std::vector<std::string> args) { return run_kiln(args, home_.path()); }
  /// `pipeline run --json`: stage -> record; the exit code in *exit_code.
  std::map<std::string, Json> run(std::vector<std::string> extra = {}, int* exit_code = nullptr) {
    std::vector<std::string> args = {"pipeline", "run", (work_ / "pipeline.yaml").string(),
                                     "--json"};
    args.insert(args.end(), extra.begin(), extra.end());
    CommandResult r = kiln(args);
    if (exit_code) *exit_code = r.exit_code;
    std::map<std::string, Json> out;
    Json j = Json::parse(r.out, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << r.out << r.err;
    if (j.is_discarded()) return out;
    for (const Json& s : j["stages"]) out[s["stage"]] = s;
    return out;
  }
  std::map<std::string, Json> show() {
    CommandResult r = kiln({"pipeline", "show", (work_ / "pipeline.yaml").string(), "--json"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    std::map<std::string, Json> out;
    Json j = Json::parse(r.out, nullptr, false);
    if (j.is_discarded()) return out;
    last_show_ = j;
    for (const Json& s : j["stages"]) out[s["stage"]] = s;
    return out;
  }
  TempDir home_;
  TempDir work_;
  Json last_show_;
};

TEST_F(PipelineCliTest, CacheRerunsExactlyTheStagesDownstreamOfAnEditedInput) {
  write_text(work_ / "raw.txt", "1\n");
  write_text(work_ / "other.txt", "x\n");
  pipeline(R"(stages:
  clean:  {kind: shell, cmd: "cat raw.txt > clean.txt", deps: [raw.txt], outs: [clean.txt]}
  model:  {kind: shell, cmd: "cat clean.txt > model.txt", deps: [clean.txt], needs: [clean], outs: [model.txt]}
  report: {kind: shell, cmd: "cat model.txt > report.txt", needs: [model], outs: [report.txt]}
  side:   {kind: shell, cmd: "cat other.txt > side.txt", deps: [other.txt], outs: [side.txt]}
)");
  int code = -1;
  auto first = run({}, &code);
  EXPECT_EQ(code, 0);
  for (const char* s : {"clean", "model", "report", "side"}) {
    EXPECT_EQ(first[s]["status"], "done") << s;
    EXPECT_EQ(first[s]["reason"], "never run") << s;
  }
  auto second = run();
  for (const char* s : {"clean", "model", "report", "side"})
    EXPECT_EQ(second[s]["status"], "skipped") << s;

  write_text(work_ / "raw.txt", "2\n");
  CommandResult status = kiln({"pipeline", "status", (work_ / "pipeline.yaml").string()});
  EXPECT_NE(status.out.find("clean   changed (raw.txt)"), std::string::npos) << status.out;
  EXPECT_NE(status.out.find("side    up to date"), std::string::npos) << status.out;
  CommandResult dry = kiln({"pipeline", "run", (work_ / "pipeline.yaml").string(), "--dry-run"});
  EXPECT_NE(dry.err.find("would run clean: changed: raw.txt"), std::string::npos) << dry.err;
  EXPECT_NE(dry.err.find("skip side"), std::string::npos) << dry.err;

  auto third = run();
  EXPECT_EQ(third["clean"]["status"], "done");
  EXPECT_EQ(third["clean"]["reason"], "changed: raw.txt");
  EXPECT_EQ(third["model"]["status"], "done");
  EXPECT_EQ(third["report"]["status"], "done");
  EXPECT_EQ(third["side"]["status"], "skipped");
  EXPECT_EQ(testing::read_text(work_ / "report.txt"), "2\n");

  // --force takes one stage per occurrence: the file after it stays the positional.
  CommandResult forced =
      kiln({"pipeline", "run", "--force", "side", (work_ / "pipeline.yaml").string(), "--dry-run"});
  EXPECT_EQ(forced.exit_code, 0) << forced.err;
  EXPECT_NE(forced.err.find("would run side: forced"), std::string::npos) << forced.err;
  EXPECT_NE(forced.err.find("skip clean"), std::string::npos) << forced.err;
  fs::remove(work_ / "report.txt");
  auto restored = run();
  EXPECT_EQ(restored["report"]["status"], "done");
  EXPECT_EQ(restored["report"]["reason"].get<std::string>().rfind("outputs missing", 0), 0u);
}

TEST_F(PipelineCliTest, IndependentStagesRunInParallelUnderJobs) {
  pipeline(R"(stages:
  left:  {kind: shell, cmd: "sleep 1"}
  right: {kind: shell, cmd: "sleep 1"}
)");
  const auto t0 = std::chrono::steady_clock::now();
  int code = -1;
  auto r = run({"--jobs", "2"}, &code);
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(code, 0);
  EXPECT_LT(elapsed, 1.8);
  const double a = r["left"]["started"], b = r["right"]["started"];
  const double da = r["left"]["duration_s"], db = r["right"]["duration_s"];
  EXPECT_GE(da, 0.9);
  EXPECT_GE(db, 0.9);
  EXPECT_LT(std::max(a, b), std::min(a + da, b + db)) << "the two sleeps did not overlap";
}

TEST_F(PipelineCliTest, FailedStageBlocksItsDependantsOnly) {
  pipeline(R"(stages:
  broken:   {kind: shell, cmd: "echo 'cannot open input' >&2; exit 4"}
  after:    {kind: shell, cmd: "touch after.txt", needs: [broken]}
  separate: {kind: shell, cmd: "touch separate.txt", outs: [separate.txt]}
  then:     {kind: shell, cmd: "touch then.txt", needs: [separate], outs: [then.txt]}
)");
  int code = -1;
  auto r = run({"--jobs", "2"}, &code);
  EXPECT_EQ(code, 1);
  EXPECT_EQ(r["broken"]["status"], "failed");
  EXPECT_EQ(r["broken"]["exit_code"], 4);
  EXPECT_EQ(r["after"]["status"], "blocked");
  EXPECT_EQ(r["after"]["reason"], "upstream broken failed");
  EXPECT_FALSE(fs::exists(work_ / "after.txt"));
  EXPECT_EQ(r["separate"]["status"], "done");
  EXPECT_EQ(r["then"]["status"], "done");
  CommandResult status = kiln({"pipeline", "status", (work_ / "pipeline.yaml").string()});
  EXPECT_NE(status.out.find("broken    failed"), std::string::npos) << status.out;
}

TEST_F(PipelineCliTest, KillMinus9LeavesNoStageDoneThatWasNotAndRunResumes) {
  pipeline(R"(stages:
  quick: {kind: shell, cmd: "echo q > quick.txt", outs: [quick.txt]}
  slow:  {kind: shell, cmd: "sleep 5 && echo s > slow.txt", needs: [quick], outs: [slow.txt]}
  last:  {kind: shell, cmd: "cat slow.txt > last.txt", needs: [slow], outs: [last.txt]}
)");
  const pid_t pid =
      spawn_kiln({"pipeline", "run", (work_ / "pipeline.yaml").string()}, home_.path());
  for (int i = 0; i < 100 && !fs::exists(work_ / "quick.txt"); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  std::this_thread::sleep_for(std::chrono::milliseconds(700));  // slow is sleeping now
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  int wstatus = 0;
  ::waitpid(pid, &wstatus, 0);
  auto shown = show();
  EXPECT_EQ(last_show_["status"], "unfinished");
  EXPECT_EQ(shown["quick"]["status"], "done");
  EXPECT_EQ(shown["slow"]["status"], "not recorded");
  EXPECT_EQ(shown["last"]["status"], "not recorded");

  int code = -1;
  auto resumed = run({}, &code);
  EXPECT_EQ(code, 0);
  EXPECT_EQ(resumed["quick"]["status"], "skipped");
  EXPECT_EQ(resumed["slow"]["status"], "done");
  EXPECT_EQ(resumed["slow"]["reason"], "never run");
  EXPECT_EQ(resumed["last"]["status"], "done");
  EXPECT_EQ(testing::read_text(work_ / "last.txt"), "s\n");
}

TEST_F(PipelineCliTest, ASecondRunOfTheSamePipelineIsRefusedWhileOneRuns) {
  pipeline("stages:\n  wait: {kind: shell, cmd: \"touch started.txt; sleep 2\"}\n");
  const pid_t pid =
      spawn_kiln({"pipeline", "run", (work_ / "pipeline.yaml").string()}, home_.path());
  for (int i = 0; i < 100 && !fs::exists(work_ / "started.txt"); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  CommandResult second = kiln({"pipeline", "run", (work_ / "pipeline.yaml").string()});
  EXPECT_EQ(second.exit_code, 1);
  EXPECT_NE(second.err.find("another `kiln pipeline run` is running it"), std::string::npos)
      << second.err;
  int wstatus = 0;
  ::waitpid(pid, &wstatus, 0);
  EXPECT_TRUE(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0);
}

TEST_F(PipelineCliTest, FailedGateBlocksThePushWithNotBlessed) {
  pipeline(R"(stages:
  test: {kind: shell, cmd: "echo 'check accuracy: FAILED (0.61 < 0.99)'; exit 1"}
  push: {kind: shell, cmd: "touch pushed.txt", gate: test}
)");
  int code = -1;
  auto r = run({}, &code);
  EXPECT_EQ(code, 1);
  EXPECT_EQ(r["test"]["status"], "failed");
  EXPECT_EQ(r["push"]["status"], "blocked");
  EXPECT_EQ(r["push"]["reason"], "not blessed: test failed (check accuracy: FAILED (0.61 < 0.99))");
  EXPECT_FALSE(fs::exists(work_ / "pushed.txt"));
  CommandResult shown = kiln({"pipeline", "show", (work_ / "pipeline.yaml").string()});
  EXPECT_NE(shown.out.find("not blessed: test failed"), std::string::npos) << shown.out;
}

TEST_F(PipelineCliTest, BadPipelineFilesExitTwoNamingFileLineAndStage) {
  const fs::path p =
      pipeline("stages:\n  a: {kind: shell, cmd: x}\n  b: {kind: shell, cmd: y, needs: [c]}\n");
  CommandResult r = kiln({"pipeline", "run", p.string()});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("pipeline.yaml:3: stage 'b': needs 'c'"), std::string::npos) << r.err;
  pipeline(
      "stages:\n  a: {kind: shell, cmd: x, needs: [b]}\n  b: {kind: shell, cmd: y, needs: [a]}\n");
  r = kiln({"pipeline", "dag", p.string()});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("pipeline.yaml:2: stage 'a' is on a cycle"), std::string::npos) << r.err;
  pipeline("stages:\n  a: {kind: deploy}\n");
  r = kiln({"pipeline", "status", p.string()});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("unknown kind 'deploy'"), std::string::npos) << r.err;
}

TEST_F(PipelineCliTest, DagDrawsTextAndSvg) {
  const fs::path p = pipeline(R"(stages:
  a: {kind: shell, cmd: x}
  b: {kind: shell, cmd: y, needs: [a]}
  c: {kind: shell, cmd: z, needs: [a], gate: b}
)");
  CommandResult r = kiln({"pipeline", "dag", p.string(), "--svg", (work_ / "g.svg").string()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("<- a"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("(gate: b)"), std::string::npos) << r.out;
  const std::string svg = testing::read_text(work_ / "g.svg");
  EXPECT_NE(svg.find("<svg"), std::string::npos);
  EXPECT_NE(svg.find(">c</text>"), std::string::npos);
}

/// The real breast-cancer pipeline (examples/breast-cancer/pipeline.yaml), about 12 s: prepare ->
/// train -> test -> push -> promote into a temp registry, then a second run that skips every
/// stage.
std::map<std::string, Json> stages_of(const CommandResult& r) {
  std::map<std::string, Json> out;
  Json j = Json::parse(r.out, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << r.out << r.err;
  if (!j.is_discarded())
    for (const Json& s : j["stages"]) out[s["stage"]] = s;
  return out;
}

TEST(PipelineExampleTest, BreastCancerRunsEndToEndThenSkipsEveryStage) {
  TempDir home;
  const std::string file = example("breast-cancer/pipeline.yaml");
  CommandResult first = run_kiln({"pipeline", "run", file, "--json"}, home.path());
  ASSERT_EQ(first.exit_code, 0) << first.err;
  auto ran = stages_of(first);
  for (const char* s : {"prepare", "train", "test", "push", "promote"})
    EXPECT_EQ(ran[s]["status"], "done") << s;
  EXPECT_EQ(ran["push"]["outputs"]["ref"], "breast-cancer@1");
  EXPECT_EQ(ran["promote"]["outputs"]["alias"], "breast-cancer@production");
  CommandResult shown = run_kiln({"registry", "show", "breast-cancer@production"}, home.path());
  EXPECT_EQ(shown.exit_code, 0) << shown.err;
  EXPECT_NE(shown.out.find("test.result"), std::string::npos) << shown.out;

  CommandResult second = run_kiln({"pipeline", "run", file, "--json"}, home.path());
  ASSERT_EQ(second.exit_code, 0) << second.err;
  for (const auto& [name, s] : stages_of(second)) EXPECT_EQ(s["status"], "skipped") << name;
  CommandResult status = run_kiln({"pipeline", "status", file}, home.path());
  EXPECT_EQ(status.exit_code, 0);
  EXPECT_EQ(status.out.find("changed"), std::string::npos) << status.out;
  EXPECT_EQ(status.out.find("never run"), std::string::npos) << status.out;
}

TEST(PipelineExampleTest, ATuneStageHandsItsBestTrialsBundleToThePush) {
  TempDir home;
  TempDir work;
  write_text(work / "space.yaml",
             "params:\n  optimizer.lr: {type: float, low: 0.001, high: 0.01, log: true}\n");
  write_text(work / "pipeline.yaml",
             "stages:\n  prepare: {kind: prepare, spec: " + example("breast-cancer/dataset.yaml") +
                 "}\n  search: {kind: tune, config: " + example("breast-cancer/train.yaml") +
                 ", space: space.yaml, args: [--trials, 2, --set, "
                 "epochs=4], needs: [prepare]}\n  push: {kind: push, "
                 "name: tuned, needs: [search]}\n");
  const std::string file = (work / "pipeline.yaml").string();
  CommandResult first = run_kiln({"pipeline", "run", file, "--json"}, home.path());
  ASSERT_EQ(first.exit_code, 0) << first.out << first.err;
  auto ran = stages_of(first);
  for (const char* s : {"prepare", "search", "push"}) EXPECT_EQ(ran[s]["status"], "done") << s;
  const std::string bundle = ran["search"]["outputs"]["bundle"];
  EXPECT_TRUE(fs::exists(fs::path(bundle) / "manifest.json")) << bundle;
  EXPECT_FALSE(ran["search"]["outputs"]["study"].get<std::string>().empty());
  EXPECT_EQ(ran["push"]["outputs"]["ref"], "tuned@1");
  // The pushed version is the best trial's bundle.
  CommandResult shown = run_kiln({"registry", "show", "tuned@1", "--json"}, home.path());
  ASSERT_EQ(shown.exit_code, 0) << shown.err;
  EXPECT_EQ(Json::parse(shown.out)["bundle_sha256"],
            *sha256_file(fs::path(bundle) / "manifest.json"));
  // Unchanged: nothing runs again; the space edited: the search and the push run again.
  CommandResult second = run_kiln({"pipeline", "run", file, "--json"}, home.path());
  for (const auto& [name, st] : stages_of(second)) EXPECT_EQ(st["status"], "skipped") << name;
  write_text(work / "space.yaml",
             "params:\n  optimizer.lr: {type: float, low: 0.002, high: 0.01, log: true}\n");
  CommandResult third = run_kiln({"pipeline", "run", file, "--json"}, home.path());
  ASSERT_EQ(third.exit_code, 0) << third.err;
  auto again = stages_of(third);
  EXPECT_EQ(again["prepare"]["status"], "skipped") << third.out;
  EXPECT_EQ(again["search"]["status"], "done");
  EXPECT_EQ(again["push"]["outputs"]["ref"], "tuned@2");
}

TEST(PipelineExampleTest, EveryExamplePipelineParses) {
  TempDir home;
  int seen = 0;
  for (const auto& dir : fs::directory_iterator(testing::source_dir() / "examples")) {
    const fs::path file = dir.path() / "pipeline.yaml";
    if (!fs::exists(file)) continue;
    ++seen;
    CommandResult r = run_kiln({"pipeline", "dag", file.string()}, home.path());
    EXPECT_EQ(r.exit_code, 0) << file << ": " << r.err;
  }
  EXPECT_GE(seen, 2);
}

}  // namespace
}  // namespace kiln
