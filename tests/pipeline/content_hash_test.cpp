#include "kiln/pipeline/content_hash.h"

#include <gtest/gtest.h>

#include "support/test_support.h"

namespace kiln::pipeline {
namespace {

using kiln::testing::TempDir;
using kiln::testing::write_text;

TEST(ContentHashTest, DirectoriesHashByContentNotTime) {
  TempDir dir;
  write_text(dir / "d/a.txt", "a");
  write_text(dir / "d/sub/b.txt", "b");
  auto first = hash_path(dir / "d");
  ASSERT_TRUE(first.ok()) << first.status();
  fs::last_write_time(dir / "d/a.txt", fs::file_time_type::clock::now() - std::chrono::hours(1));
  EXPECT_EQ(*hash_path(dir / "d"), *first);
  write_text(dir / "d/sub/b.txt", "B");
  EXPECT_NE(*hash_path(dir / "d"), *first);
  EXPECT_EQ(hash_path(dir / "none").status().code(), StatusCode::kNotFound);
}

TEST(ContentHashTest, KindStagesHashTheFilesTheirYamlNames) {
  TempDir dir;
  write_text(dir / "data.csv", "x,y\n1,0\n");
  write_text(dir / "dataset.yaml", "name: d\nsources: [data.csv]\ntarget: y\n");
  write_text(dir / "train.yaml", "data: dataset.yaml\nepochs: 1\n");
  write_text(dir / "p.yaml", "stages:\n  train: {kind: train, config: train.yaml}\n");
  auto file = read_pipeline_file(dir / "p.yaml");
  ASSERT_TRUE(file.ok()) << file.status();
  auto inputs = stage_inputs(*file, file->stages[0], {});
  ASSERT_TRUE(inputs.ok()) << inputs.status();
  EXPECT_TRUE(inputs->count("train.yaml"));
  EXPECT_TRUE(inputs->count("dataset.yaml"));
  EXPECT_TRUE(inputs->count("data.csv"));
  EXPECT_TRUE(inputs->count("stage config"));
  EXPECT_TRUE(inputs->count("kiln version"));
  const std::string before = dependency_hash(*inputs);
  write_text(dir / "data.csv", "x,y\n2,1\n");
  auto after = stage_inputs(*file, file->stages[0], {});
  EXPECT_NE(dependency_hash(*after), before);
}

TEST(ContentHashTest, ImageSpecsHashTheirSplitFilesUnderRoot) {
  TempDir dir;
  write_text(dir / "raw/train-images.gz", "i");
  write_text(dir / "raw/train-labels.gz", "l");
  write_text(dir / "dataset.yaml",
             "name: d\nkind: images\nroot: raw\nsplits:\n  train: {images: train-images.gz, "
             "labels: train-labels.gz}\n");
  write_text(dir / "p.yaml", "stages:\n  prepare: {kind: prepare, spec: dataset.yaml}\n");
  auto file = read_pipeline_file(dir / "p.yaml");
  ASSERT_TRUE(file.ok()) << file.status();
  auto inputs = stage_inputs(*file, file->stages[0], {});
  ASSERT_TRUE(inputs.ok()) << inputs.status();
  EXPECT_TRUE(inputs->count("raw/train-images.gz"));
  EXPECT_TRUE(inputs->count("raw/train-labels.gz"));
}

TEST(ContentHashTest, ATuneStageHashesItsSearchSpace) {
  TempDir dir;
  write_text(dir / "train.yaml", "data: d.csv\nepochs: 1\n");
  write_text(dir / "space.yaml", "params:\n  lr: {type: float, low: 0.1, high: 1}\n");
  write_text(dir / "p.yaml", "stages:\n  s: {kind: tune, config: train.yaml, space: space.yaml}\n");
  auto file = read_pipeline_file(dir / "p.yaml");
  ASSERT_TRUE(file.ok()) << file.status();
  auto before = stage_inputs(*file, file->stages[0], {});
  ASSERT_TRUE(before.ok()) << before.status();
  ASSERT_TRUE(before->count("space.yaml"));
  write_text(dir / "space.yaml", "params:\n  lr: {type: float, low: 0.2, high: 1}\n");
  EXPECT_NE(stage_inputs(*file, file->stages[0], {})->at("space.yaml"), before->at("space.yaml"));
}

TEST(ContentHashTest, UpstreamHashIsAnInput) {
  TempDir dir;
  write_text(dir / "p.yaml",
             "stages:\n  a: {kind: shell, cmd: x}\n  b: {kind: shell, cmd: y, needs: [a]}\n");
  auto file = read_pipeline_file(dir / "p.yaml");
  ASSERT_TRUE(file.ok()) << file.status();
  auto one = stage_inputs(*file, *file->find("b"), {{"a", "h1"}});
  auto two = stage_inputs(*file, *file->find("b"), {{"a", "h2"}});
  EXPECT_EQ(one->at("upstream a"), "h1");
  EXPECT_NE(dependency_hash(*one), dependency_hash(*two));
}

TEST(CacheDecisionTest, SaysWhyAStageRuns) {
  const std::map<std::string, std::string> now = {{"a.txt", "1"}, {"stage config", "c"}};
  EXPECT_EQ(decide(now, std::nullopt, false, {}).reason, "never run");
  EXPECT_EQ(decide(now, now, true, {}).reason, "forced");
  const CacheDecision same = decide(now, now, false, {});
  EXPECT_FALSE(same.run);
  EXPECT_EQ(same.reason, "up to date");
  auto old = now;
  old["a.txt"] = "0";
  const CacheDecision changed = decide(now, old, false, {});
  EXPECT_TRUE(changed.run);
  EXPECT_EQ(changed.reason, "changed: a.txt");
  const CacheDecision lost = decide(now, now, false, {"/x/out"});
  EXPECT_TRUE(lost.run);
  EXPECT_EQ(lost.reason, "outputs missing: /x/out");
}

}  // namespace
}  // namespace kiln::pipeline
