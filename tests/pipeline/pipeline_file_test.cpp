#include "kiln/pipeline/pipeline_file.h"

#include <gtest/gtest.h>

#include "kiln/pipeline/dag_render.h"

namespace kiln::pipeline {
namespace {

Status parse_error(const std::string& text) {
  auto p = parse_pipeline(text, "p.yaml");
  return p.ok() ? Status::Ok() : p.status();
}

TEST(PipelineFileTest, StagesComeInTopologicalOrderWithFileOrderAmongReadyOnes) {
  auto p = parse_pipeline(R"(stages:
  push:    {kind: push, name: cancer, needs: [test], gate: test}
  test:    {kind: test, suite: suite.yaml, needs: [train]}
  train:   {kind: train, config: train.yaml, needs: [prepare]}
  prepare: {kind: prepare, spec: dataset.yaml}
  report:  {kind: shell, cmd: "echo done > report.txt", deps: [a.txt], outs: [report.txt]}
)",
                          "p.yaml");
  ASSERT_TRUE(p.ok()) << p.status();
  std::vector<std::string> order;
  for (const StageSpec& s : p->stages) order.push_back(s.name);
  EXPECT_EQ(order, (std::vector<std::string>{"prepare", "report", "train", "test", "push"}));
  EXPECT_EQ(p->find("push")->gate, "test");
  EXPECT_EQ(p->find("push")->push_name, "cancer");
  EXPECT_EQ(p->find("report")->outs, std::vector<std::string>{"report.txt"});
  EXPECT_EQ(p->downstream("train"), (std::vector<std::string>{"test", "push"}));
  EXPECT_EQ(p->layers().at("push"), 3);
  EXPECT_EQ(p->layers().at("report"), 0);
}

TEST(PipelineFileTest, UnknownKindNamesFileLineAndStage) {
  const Status s = parse_error("stages:\n  a: {kind: shell, cmd: x}\n  b:\n    kind: deploy\n");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("p.yaml:4"), std::string::npos) << s;
  EXPECT_NE(s.message().find("stage 'b'"), std::string::npos) << s;
  EXPECT_NE(s.message().find("deploy"), std::string::npos) << s;
}

TEST(PipelineFileTest, UnknownFieldForTheKindIsRefused) {
  const Status s = parse_error("stages:\n  t:\n    kind: train\n    confg: train.yaml\n");
  EXPECT_NE(s.message().find("p.yaml:4"), std::string::npos) << s;
  EXPECT_NE(s.message().find("unknown field 'confg'"), std::string::npos) << s;
  const Status missing = parse_error("stages:\n  t: {kind: shell}\n");
  EXPECT_NE(missing.message().find("needs `cmd:`"), std::string::npos) << missing;
}

TEST(PipelineFileTest, MissingNeedsAndGatesAreRefused) {
  const Status s = parse_error("stages:\n  a: {kind: shell, cmd: x, needs: [nope]}\n");
  EXPECT_NE(s.message().find("p.yaml:2"), std::string::npos) << s;
  EXPECT_NE(s.message().find("'nope'"), std::string::npos) << s;
  const Status g = parse_error("stages:\n  a: {kind: shell, cmd: x, gate: nope}\n");
  EXPECT_NE(g.message().find("gate 'nope'"), std::string::npos) << g;
  const Status t = parse_error("stages:\n  t: {kind: test}\n");
  EXPECT_NE(t.message().find("needs a train stage upstream"), std::string::npos) << t;
  const Status pr = parse_error("stages:\n  p: {kind: promote, alias: production}\n");
  EXPECT_NE(pr.message().find("needs a push stage upstream"), std::string::npos) << pr;
}

TEST(PipelineFileTest, CycleNamesAStageOnIt) {
  const Status s = parse_error(
      "stages:\n  after: {kind: shell, cmd: x, needs: [b]}\n  a: {kind: shell, cmd: x, needs: "
      "[b]}\n  b: {kind: shell, cmd: x, needs: [a]}\n");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("p.yaml:3: stage 'a' is on a cycle"), std::string::npos) << s;
}

TEST(PipelineFileTest, DagDrawsEveryStageAndEdge) {
  auto p = parse_pipeline(
      "stages:\n  a: {kind: shell, cmd: x}\n  b: {kind: shell, cmd: y, needs: [a]}\n", "p.yaml");
  ASSERT_TRUE(p.ok()) << p.status();
  const std::string text = dag_text(*p);
  EXPECT_NE(text.find("a "), std::string::npos);
  EXPECT_NE(text.find("b "), std::string::npos);
  EXPECT_NE(text.find("<- a"), std::string::npos) << text;
  const std::string svg = dag_svg(*p);
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("<line"), std::string::npos);
  EXPECT_NE(svg.find(">b</text>"), std::string::npos);
}

TEST(PipelineFileTest, TuneAndRolloutStagesTakeTheirFieldsAndArgs) {
  auto p = parse_pipeline(R"(stages:
  search: {kind: tune, config: train.yaml, space: space.yaml, args: [--trials, 4, --pruner, asha]}
  test: {kind: test, needs: [search]}
  push: {kind: push, name: m, needs: [test], gate: test}
  canary: {kind: rollout, route: m, server: "http://127.0.0.1:1", candidate: c, alias: production, needs: [push]}
)",
                          "p.yaml");
  ASSERT_TRUE(p.ok()) << p.status();
  const StageSpec* search = p->find("search");
  EXPECT_EQ(search->kind, StageKind::kTune);
  EXPECT_EQ(search->space, "space.yaml");
  EXPECT_EQ(search->args, (std::vector<std::string>{"--trials", "4", "--pruner", "asha"}));
  const StageSpec* canary = p->find("canary");
  EXPECT_EQ(canary->kind, StageKind::kRollout);
  EXPECT_EQ(canary->route, "m");
  EXPECT_EQ(canary->candidate, "c");
  EXPECT_EQ(canary->alias, "production");
  EXPECT_STREQ(stage_kind_name(StageKind::kRollout), "rollout");
}

TEST(PipelineFileTest, TuneAndRolloutStagesMissingWhatTheyNeedAreRefused) {
  EXPECT_NE(parse_error("stages:\n  s: {kind: tune, config: t.yaml}\n")
                .message()
                .find("kind tune needs `space:`"),
            std::string::npos);
  EXPECT_NE(parse_error("stages:\n  r: {kind: rollout, route: m, server: http://x:1}\n")
                .message()
                .find("needs `server:` and `candidate:`"),
            std::string::npos);
  // Promoting at the end of a rollout needs the version a push registered.
  const Status s = parse_error(
      "stages:\n  r: {kind: rollout, route: m, server: http://x:1, candidate: c, alias: prod}\n");
  EXPECT_NE(s.message().find("needs a push stage upstream"), std::string::npos) << s;
  // A rollout without an alias moves weights only and needs nothing upstream.
  EXPECT_TRUE(
      parse_error("stages:\n  r: {kind: rollout, route: m, server: http://x:1, candidate: c}\n")
          .ok());
}

}  // namespace
}  // namespace kiln::pipeline
