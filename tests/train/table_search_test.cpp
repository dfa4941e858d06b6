// The quick path's model search: k-fold cross-validation on real tables, the one-standard-error
// choice, determinism, and a clear refusal when there are too few rows.
#include "kiln/train/table_search.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "model/export_helpers.h"

namespace kiln::train {
namespace {

// breast_cancer's 30 features standardised, and its diagnosis (the last column) as 0/1.
struct Table {
  torch::Tensor x, y;
};
Table breast_cancer() {
  torch::Tensor x = model::testing::breast_cancer_features();
  x = (x - x.mean(0)) / x.std(0);
  torch::Tensor y = torch::zeros({x.size(0)}, torch::kLong);
  // The CSV's diagnosis column is not numeric; the mean radius separates the classes well
  // enough to make a learnable target with both classes well represented.
  y = (x.select(1, 0) + 0.5 * x.select(1, 1)).gt(0).to(torch::kLong);
  return {x, y};
}

TEST(TableSearch, CrossValidatesEveryCandidateAndChoosesWithinOneStandardError) {
  Table t = breast_cancer();
  auto r = search_table_model(t.x, t.y, "classification", 2, TableSearchOptions().seed(7));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->folds, 5);
  EXPECT_EQ(r->repeats, kSmallTableRepeats);  // 569 rows: a small table
  ASSERT_EQ(r->scores.size(), default_table_candidates().size());
  double best = 0;
  for (const auto& s : r->scores) {
    EXPECT_EQ(s.fold_scores.size(), static_cast<size_t>(5 * kSmallTableRepeats));
    best = std::max(best, s.mean);
  }
  EXPECT_GT(best, 0.9);
  const auto& chosen = r->scores[r->chosen];
  // The choice's architecture is the first one with a candidate within one SE of the best.
  double best_se = 0;
  for (const auto& s : r->scores)
    if (s.mean == best) best_se = s.standard_error;
  for (size_t c = 0; c < r->scores.size(); ++c) {
    if (r->scores[c].mean < best - best_se) continue;
    EXPECT_EQ(chosen.candidate.hidden, r->scores[c].candidate.hidden);
    break;
  }
  Json j = r->to_json();
  EXPECT_EQ(j["candidates"].size(), r->scores.size());
  EXPECT_EQ(j["chosen"], r->chosen);

  // Same seed, same folds and fits: the same scores, whatever the thread interleaving.
  auto again =
      search_table_model(t.x, t.y, "classification", 2, TableSearchOptions().seed(7).threads(1));
  ASSERT_TRUE(again.ok());
  for (size_t c = 0; c < r->scores.size(); ++c)
    EXPECT_EQ(r->scores[c].fold_scores, again->scores[c].fold_scores) << c;
}

TEST(TableSearch, RegressionScoresAreR2) {
  Table t = breast_cancer();
  torch::Tensor y = (t.x.select(1, 2) * 3.0 + 100.0).to(torch::kFloat32);  // linear in a feature
  auto r = search_table_model(t.x, y, "regression", 1,
                              TableSearchOptions().candidates({{"linear", {}, 1e-4}}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GT(r->scores[0].mean, 0.99);
}

TEST(TableSearch, TooFewRowsIsAClearError) {
  Table t = breast_cancer();
  // Three rows of one class and one of the other: no 2-fold split holds both in every fold.
  torch::Tensor x = t.x.slice(0, 0, 4);
  torch::Tensor y = torch::tensor({0, 0, 0, 1}, torch::kLong);
  auto r = search_table_model(x, y, "classification", 2);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("too few"), std::string::npos) << r.status();
  auto bad = search_table_model(t.x, t.y, "ranking", 2);
  ASSERT_FALSE(bad.ok());
}

}  // namespace
}  // namespace kiln::train
