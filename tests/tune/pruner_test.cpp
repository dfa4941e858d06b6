#include "kiln/tune/pruner.h"

#include <gtest/gtest.h>

#include <cmath>

namespace kiln::tune {
namespace {

// A synthetic learning curve: accuracy rising to `final` with rate `k` per epoch.
TrialRecord curve(int64_t id, double final, double k, int64_t epochs, TrialState state) {
  TrialRecord t;
  t.id = id;
  t.number = id;
  t.state = state;
  for (int64_t e = 1; e <= epochs; ++e) t.intermediate[e] = final * (1 - std::exp(-k * e));
  if (state == TrialState::kComplete) t.value = t.intermediate.rbegin()->second;
  return t;
}

TEST(PrunerTest, MedianWaitsForStartupTrialsThenPrunesBelowTheMedian) {
  auto p = make_median_pruner(/*maximize=*/true);
  std::vector<TrialRecord> all;
  for (int i = 0; i < 4; ++i)
    all.push_back(curve(i, 0.8 + 0.02 * i, 0.5, 10, TrialState::kComplete));
  TrialRecord bad = curve(100, 0.5, 0.5, 3, TrialState::kRunning);
  all.push_back(bad);
  EXPECT_FALSE(p->should_prune(bad, 3, all)) << "only 4 complete trials: no pruning yet";
  all.insert(all.begin(), curve(4, 0.9, 0.5, 10, TrialState::kComplete));
  EXPECT_TRUE(p->should_prune(bad, 3, all));
  TrialRecord good = curve(101, 0.95, 0.5, 3, TrialState::kRunning);
  EXPECT_FALSE(p->should_prune(good, 3, all));
  // Minimising (a loss): the trial's lowest value so far is compared with the median.
  auto m = make_median_pruner(/*maximize=*/false);
  std::vector<TrialRecord> losses;
  for (int i = 0; i < 5; ++i) {
    TrialRecord t;
    t.id = 200 + i;
    t.state = TrialState::kComplete;
    t.intermediate = {{1, 0.9}, {2, 0.6}, {3, 0.4 + 0.01 * i}};
    losses.push_back(t);
  }
  TrialRecord high_loss, low_loss;
  high_loss.id = 300;
  high_loss.intermediate = {{1, 0.95}, {2, 0.8}, {3, 0.7}};
  low_loss.id = 301;
  low_loss.intermediate = {{1, 0.9}, {2, 0.5}, {3, 0.3}};
  EXPECT_TRUE(m->should_prune(high_loss, 3, losses));
  EXPECT_FALSE(m->should_prune(low_loss, 3, losses));
  // Warm-up steps never prune.
  MedianPrunerOptions warm;
  warm.n_warmup_steps = 5;
  EXPECT_FALSE(make_median_pruner(false, warm)->should_prune(high_loss, 3, losses));
  // All NaN: pruned.
  TrialRecord nan = bad;
  for (auto& [s, v] : nan.intermediate) v = NAN;
  EXPECT_TRUE(p->should_prune(nan, 3, all));
}

TEST(PrunerTest, AshaPromotesTheTopQuarterAtEachRung) {
  AshaOptions o;
  o.min_resource = 1;
  o.reduction_factor = 4;
  auto p = make_asha_pruner(true, o);
  std::vector<TrialRecord> all;
  // Eight trials at rung 1 (step 1) with values 0.1..0.8.
  for (int i = 0; i < 8; ++i) {
    TrialRecord t;
    t.id = i;
    t.state = TrialState::kComplete;
    t.intermediate[1] = 0.1 * (i + 1);
    all.push_back(t);
  }
  TrialRecord t;
  t.id = 99;
  t.intermediate[1] = 0.75;  // 9 competitors → top 9/4 = 2: 0.8 and 0.75 pass
  all.push_back(t);
  EXPECT_FALSE(p->should_prune(t, 1, all));
  all.back().intermediate[1] = 0.65;
  t.intermediate[1] = 0.65;
  EXPECT_TRUE(p->should_prune(t, 1, all));
  // Steps between rungs never prune; the next rung is at 4.
  t.intermediate[2] = 0.0;
  EXPECT_FALSE(p->should_prune(t, 2, all));
  // The first trial at a rung is promoted (it is the best so far).
  t.intermediate[4] = 0.1;
  EXPECT_FALSE(p->should_prune(t, 4, all));
}

TEST(PrunerTest, AshaDoesNotStopTrialsAtTheTopRung) {
  // 20-epoch trials, rungs 2, 6 and 18: a trial promoted at 18 could not reach a next rung, so
  // 18 is the top rung and trials there finish their last two epochs.
  AshaOptions o;
  o.min_resource = 2;
  o.reduction_factor = 3;
  o.max_resource = 20;
  auto p = make_asha_pruner(true, o);
  std::vector<TrialRecord> all;
  for (int i = 0; i < 6; ++i)
    all.push_back(curve(i, 0.9 + 0.01 * i, 0.5, 20, TrialState::kComplete));
  TrialRecord worst = curve(99, 0.5, 0.5, 18, TrialState::kRunning);
  all.push_back(worst);
  EXPECT_TRUE(p->should_prune(worst, 2, all));
  EXPECT_TRUE(p->should_prune(worst, 6, all));
  EXPECT_FALSE(p->should_prune(worst, 18, all));
  o.max_resource = 0;  // unknown: Optuna's behaviour, 18 is a rung like the others
  EXPECT_TRUE(make_asha_pruner(true, o)->should_prune(worst, 18, all));
}

TEST(PrunerTest, AshaOnSyntheticCurvesStopsMostOfTheWorstTrials) {
  AshaOptions o;
  o.min_resource = 1;
  o.reduction_factor = 3;
  auto p = make_asha_pruner(true, o);
  std::vector<TrialRecord> done;
  int pruned_bad = 0, pruned_good = 0;
  for (int i = 0; i < 30; ++i) {
    // Alternate good (final 0.9+) and bad (final 0.5..0.6) curves; run epoch by epoch.
    const bool good = i % 3 == 0;
    const double final = good ? 0.9 + 0.002 * i : 0.5 + 0.003 * i;
    TrialRecord t = curve(i, final, 0.7, 9, TrialState::kRunning);
    TrialRecord live = t;
    live.intermediate.clear();
    bool pruned = false;
    for (int64_t e = 1; e <= 9 && !pruned; ++e) {
      live.intermediate[e] = t.intermediate[e];
      std::vector<TrialRecord> all = done;
      all.push_back(live);
      pruned = p->should_prune(live, e, all);
    }
    live.state = pruned ? TrialState::kPruned : TrialState::kComplete;
    if (pruned) (good ? pruned_good : pruned_bad)++;
    done.push_back(live);
  }
  EXPECT_GE(pruned_bad, 15);
  EXPECT_LE(pruned_good, 2);
}

TEST(PrunerTest, FactoryRejectsUnknownNames) {
  EXPECT_FALSE(make_pruner("sometimes", true).ok());
  auto none = make_pruner("none", true);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->get(), nullptr);
}

}  // namespace
}  // namespace kiln::tune
