#include "kiln/tune/storage.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <thread>
#include <vector>

#include "kiln/tune/report.h"
#include "kiln/tune/space.h"
#include "support/test_support.h"

namespace kiln::tune {
namespace {

using kiln::testing::TempDir;

Json space_json(double high) {
  return Json::parse(R"({"params": {"x": {"type": "float", "low": 0.0, "high": )" +
                     std::to_string(high) + R"(, "log": false}}})");
}

StudyInfo info(const std::string& name, double high) {
  StudyInfo s;
  s.name = name;
  s.direction = "minimize";
  s.space = parse_space(space_json(high))->to_json();
  s.sampler = "tpe";
  s.pruner = "none";
  return s;
}

TEST(StorageTest, StoresTrialsIntermediateValuesAndReloads) {
  TempDir dir;
  int64_t study_id = 0;
  {
    auto db = StudyStorage::Open(dir / "studies.db");
    ASSERT_TRUE(db.ok()) << db.status();
    auto s = (*db)->create_or_load_study(info("s1", 1));
    ASSERT_TRUE(s.ok()) << s.status();
    study_id = s->id;
    auto t0 = (*db)->create_trial(study_id, Json{{"x", 0.5}}, ::getpid(), "");
    auto t1 = (*db)->create_trial(study_id, Json{{"x", 0.25}}, ::getpid(), "");
    ASSERT_TRUE(t0.ok() && t1.ok());
    EXPECT_EQ(t0->number, 0);
    EXPECT_EQ(t1->number, 1);
    ASSERT_TRUE((*db)->report(t0->id, 1, 0.9).ok());
    ASSERT_TRUE((*db)->report(t0->id, 2, 0.7).ok());
    ASSERT_TRUE((*db)->finish(t0->id, TrialState::kComplete, 0.7, "").ok());
    ASSERT_TRUE((*db)->finish(t1->id, TrialState::kPruned, NAN, "pruned at epoch 1").ok());
  }
  auto db = StudyStorage::Open(dir / "studies.db");
  ASSERT_TRUE(db.ok());
  auto s = (*db)->create_or_load_study(info("s1", 1));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->id, study_id);
  auto trials = (*db)->trials(study_id);
  ASSERT_TRUE(trials.ok());
  ASSERT_EQ(trials->size(), 2u);
  EXPECT_EQ((*trials)[0].state, TrialState::kComplete);
  EXPECT_DOUBLE_EQ((*trials)[0].value, 0.7);
  EXPECT_EQ((*trials)[0].params["x"], 0.5);
  ASSERT_EQ((*trials)[0].intermediate.size(), 2u);
  EXPECT_DOUBLE_EQ((*trials)[0].intermediate.at(1), 0.9);
  EXPECT_EQ((*trials)[1].state, TrialState::kPruned);
  EXPECT_TRUE(std::isnan((*trials)[1].value));
  EXPECT_GE((*trials)[0].duration, 0.0);

  Json j = study_json(*s, *trials);
  EXPECT_EQ(j["study"], "s1");
  EXPECT_EQ(j["direction"], "minimize");
  EXPECT_EQ(j["best"]["number"], 0);
  EXPECT_EQ(j["trials"][1]["state"], "pruned");
  EXPECT_TRUE(j["trials"][1]["value"].is_null());
}

TEST(StorageTest, ReusedNameWithAnotherSpaceIsRefusedShowingTheDifference) {
  TempDir dir;
  auto db = StudyStorage::Open(dir / "studies.db");
  ASSERT_TRUE(db.ok());
  ASSERT_TRUE((*db)->create_or_load_study(info("s", 1)).ok());
  auto again = (*db)->create_or_load_study(info("s", 2));
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(again.status().message().find("x:"), std::string::npos) << again.status().message();
  EXPECT_NE(again.status().message().find("\"high\":2"), std::string::npos)
      << again.status().message();
}

TEST(StorageTest, RunningTrialsOfADeadTunerBecomeOrphanedFailures) {
  TempDir dir;
  auto db = StudyStorage::Open(dir / "studies.db");
  ASSERT_TRUE(db.ok());
  auto s = (*db)->create_or_load_study(info("s", 1));
  ASSERT_TRUE(s.ok());
  // A pid that cannot be alive (above pid_max) stands for a killed tuner.
  auto dead = (*db)->create_trial(s->id, Json{{"x", 0.1}}, 1 << 30, "");
  auto mine = (*db)->create_trial(s->id, Json{{"x", 0.2}}, ::getppid(), "");
  ASSERT_TRUE(dead.ok() && mine.ok());
  auto n = (*db)->fail_orphans(s->id);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 1);
  auto trials = (*db)->trials(s->id);
  EXPECT_EQ((*trials)[0].state, TrialState::kFailed);
  EXPECT_TRUE((*trials)[0].orphaned);
  EXPECT_EQ((*trials)[1].state, TrialState::kRunning);  // its tuner (our parent) is alive
}

// Two tuners on one study (two connections, two threads claiming at once) never claim more
// than --trials N between them; orphaned failures free their place.
TEST(StorageTest, ProcessesOpeningOneFreshDatabaseAtOnceAllSucceed) {
  // Two tuners started together on a fresh KILN_HOME race to create studies.db; switching a new
  // file to WAL is not retried by SQLite's busy handler, so Open must retry it itself.
  for (int round = 0; round < 5; ++round) {
    TempDir dir;
    const auto path = dir / "studies.db";
    std::vector<pid_t> children;
    for (int k = 0; k < 8; ++k) {
      const pid_t pid = ::fork();
      ASSERT_GE(pid, 0);
      if (pid == 0) {
        auto db = StudyStorage::Open(path);
        if (!db.ok()) {
          std::fprintf(stderr, "child %d: %s\n", k, db.status().message().c_str());
          ::_exit(1);
        }
        auto s = (*db)->create_or_load_study(info("s", 1));
        if (!s.ok()) std::fprintf(stderr, "child %d: %s\n", k, s.status().message().c_str());
        ::_exit(s.ok() ? 0 : 1);
      }
      children.push_back(pid);
    }
    for (pid_t pid : children) {
      int status = 0;
      ASSERT_EQ(::waitpid(pid, &status, 0), pid);
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "round " << round;
    }
  }
}

TEST(StorageTest, ClaimsFromSeveralConnectionsNeverOvershootTheTrialCount) {
  TempDir dir;
  int64_t study_id = 0;
  {
    auto db = StudyStorage::Open(dir / "studies.db");
    ASSERT_TRUE(db.ok());
    auto s = (*db)->create_or_load_study(info("s", 1));
    ASSERT_TRUE(s.ok());
    study_id = s->id;
  }
  // Claims carry our parent's pid: a live tuner that is not this process (fail_orphans fails
  // running trials of this process, as a resumed tuner's own leftovers).
  std::atomic<int> claimed{0}, refused{0};
  std::vector<std::thread> tuners;
  for (int k = 0; k < 2; ++k)
    tuners.emplace_back([&, k] {
      auto db = StudyStorage::Open(dir / "studies.db");
      ASSERT_TRUE(db.ok());
      for (int i = 0; i < 10; ++i) {
        auto t = (*db)->create_trial(study_id, Json{{"x", 0.1 * k}}, ::getppid(), "", 7);
        if (t.ok()) {
          ++claimed;
        } else {
          EXPECT_EQ(t.status().code(), StatusCode::kFailedPrecondition) << t.status();
          ++refused;
        }
      }
    });
  for (auto& t : tuners) t.join();
  EXPECT_EQ(claimed.load(), 7);
  EXPECT_EQ(refused.load(), 13);
  auto db = StudyStorage::Open(dir / "studies.db");
  ASSERT_TRUE(db.ok());
  auto trials = (*db)->trials(study_id);
  ASSERT_TRUE(trials.ok());
  ASSERT_EQ(trials->size(), 7u);
  for (size_t i = 0; i < trials->size(); ++i) EXPECT_EQ((*trials)[i].number, int64_t(i));
  // A running trial of a dead tuner becomes an orphaned failure: it no longer counts.
  auto full = (*db)->create_trial(study_id, Json{{"x", 0.5}}, ::getppid(), "", 8);
  ASSERT_TRUE(full.ok());
  auto dead = (*db)->create_trial(study_id, Json{{"x", 0.5}}, 1 << 30, "", 9);
  ASSERT_TRUE(dead.ok());
  EXPECT_FALSE((*db)->create_trial(study_id, Json{{"x", 0.5}}, ::getppid(), "", 9).ok());
  ASSERT_EQ(*(*db)->fail_orphans(study_id), 1);
  EXPECT_TRUE((*db)->create_trial(study_id, Json{{"x", 0.5}}, ::getppid(), "", 9).ok());
}

TEST(StorageTest, ImportanceFindsTheParameterThatMatters) {
  auto space = parse_space(Json::parse(R"({"params": {
      "a": {"type": "float", "low": 0, "high": 1},
      "b": {"type": "categorical", "choices": ["p", "q"]}}})"));
  ASSERT_TRUE(space.ok());
  std::vector<TrialRecord> trials;
  for (int i = 0; i < 40; ++i) {
    TrialRecord t;
    t.number = i;
    t.state = TrialState::kComplete;
    const double a = (i % 10) / 10.0;
    t.params = {{"a", a}, {"b", i % 2 ? "p" : "q"}};
    t.value = 10 * a + 0.01 * (i % 2);
    trials.push_back(t);
  }
  auto imp = param_importance(*space, trials);
  ASSERT_EQ(imp.size(), 2u);
  EXPECT_EQ(imp[0].first, "a");
  EXPECT_GT(imp[0].second, 0.9);
  // With few trials a numeric parameter still gets two bins: it is not outranked by a
  // categorical one that does not matter just because it has groups.
  trials.resize(kMinTrialsForImportance);
  imp = param_importance(*space, trials);
  ASSERT_EQ(imp.size(), 2u);
  EXPECT_EQ(imp[0].first, "a");
  trials.resize(kMinTrialsForImportance - 1);
  EXPECT_TRUE(param_importance(*space, trials).empty());
}

}  // namespace
}  // namespace kiln::tune
