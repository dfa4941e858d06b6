#include "kiln/checks/statistics.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace kiln::checks {
namespace {

// scipy's answers for planted discordant counts, computed by scipy itself on this machine:
// binomtest(min(b, c), b + c, 0.5) two-sided for the exact test, chi2.sf of the corrected
// statistic for the large-sample one.
std::vector<double> scipy_p_values(const std::vector<std::pair<int, int>>& counts) {
  std::string pairs;
  for (const auto& [b, c] : counts)
    pairs += "(" + std::to_string(b) + "," + std::to_string(c) + "),";
  const std::string script =
      "from scipy.stats import binomtest, chi2\n"
      "for b, c in [" +
      pairs +
      "]:\n"
      "    n = b + c\n"
      "    if n < 25:\n"
      "        print(repr(binomtest(min(b, c), n, 0.5).pvalue))\n"
      "    else:\n"
      "        print(repr(chi2.sf((abs(b - c) - 1) ** 2 / n, 1)))\n";
  std::FILE* f = ::popen(("/usr/bin/python3 -c '" + script + "' 2>/dev/null").c_str(), "r");
  std::vector<double> out;
  if (!f) return out;
  char line[128];
  while (std::fgets(line, sizeof line, f)) out.push_back(std::stod(line));
  ::pclose(f);
  return out;
}

TEST(McNemarTest, EqualsScipyOnPlantedDisagreementCounts) {
  const std::vector<std::pair<int, int>> counts = {{0, 1},    {1, 0},   {3, 9},    {15, 5},
                                                   {12, 12},  {0, 24},  {20, 4},   {30, 15},
                                                   {100, 80}, {7, 300}, {250, 251}};
  std::vector<double> scipy = scipy_p_values(counts);
  if (scipy.empty()) GTEST_SKIP() << "/usr/bin/python3 lacks scipy (apt-get install python3-scipy)";
  ASSERT_EQ(scipy.size(), counts.size());
  for (size_t i = 0; i < counts.size(); ++i) {
    McNemarResult r = mcnemar(counts[i].first, counts[i].second);
    EXPECT_EQ(r.exact, counts[i].first + counts[i].second < 25);
    EXPECT_NEAR(r.p_value, scipy[i], 1e-12 + 1e-9 * scipy[i])
        << "b=" << counts[i].first << " c=" << counts[i].second;
  }
}

TEST(McNemarTest, MatchesTheReferenceWorkedNumbers) {
  // ../shared/reference/pipelines.md §4: b=15, c=5 -> exact p = 0.0414, corrected chi2 = 4.05,
  // p = 0.0442; b=30, c=15 -> exact 0.0357, chi2 4.36, p 0.0369.
  EXPECT_NEAR(mcnemar(15, 5).p_value, 0.0414, 5e-5);
  McNemarResult chi = mcnemar(15, 5, /*exact_below=*/0);
  EXPECT_NEAR(chi.statistic, 4.05, 1e-9);
  EXPECT_NEAR(chi.p_value, 0.0442, 5e-5);
  EXPECT_NEAR(mcnemar(30, 15, 1000).p_value, 0.0357, 5e-5);
  EXPECT_NEAR(mcnemar(30, 15).p_value, 0.0369, 5e-5);
  EXPECT_EQ(mcnemar(0, 0).p_value, 1.0);
  EXPECT_EQ(mcnemar_verdict(mcnemar(2, 40), 0.05), "better");
  EXPECT_EQ(mcnemar_verdict(mcnemar(40, 2), 0.05), "worse");
  EXPECT_EQ(mcnemar_verdict(mcnemar(10, 12), 0.05), "inconclusive");
}

TEST(BinomialTest, TailsSumToOneAndMatchSmallCases) {
  EXPECT_NEAR(binomial_cdf(0, 3, 0.5), 0.125, 1e-15);
  EXPECT_NEAR(binomial_sf(3, 3, 0.5), 0.125, 1e-15);
  EXPECT_NEAR(binomial_cdf(4, 10, 0.3) + binomial_sf(5, 10, 0.3), 1.0, 1e-12);
  // Large n stays finite and ordered (log-space sums).
  const double p = binomial_sf(9000, 10000, 0.1);
  EXPECT_GE(p, 0.0);
  EXPECT_LT(p, 1e-300 + 1e-200);
  EXPECT_EQ(binomial_sf(0, 10, 0.3), 1.0);
}

TEST(PairedBootstrapTest, SeparatesAClearWinnerAndNotATie) {
  // Per-row correctness: the challenger is right on 90 of 100 rows, the champion on 60.
  std::vector<int> champion(100), challenger(100);
  for (int i = 0; i < 100; ++i) {
    champion[i] = i < 60;
    challenger[i] = i < 90;
  }
  auto accuracy = [&](const std::vector<int64_t>& rows, int which) {
    double s = 0;
    for (int64_t r : rows) s += which == 1 ? challenger[r] : champion[r];
    return s / static_cast<double>(rows.size());
  };
  BootstrapResult r = paired_bootstrap(100, accuracy, 1000, 7);
  EXPECT_DOUBLE_EQ(r.challenger, 0.9);
  EXPECT_DOUBLE_EQ(r.champion, 0.6);
  EXPECT_LT(r.p_not_better, 0.01);
  EXPECT_EQ(bootstrap_verdict(r, 0.05), "better");
  EXPECT_GT(r.ci_low, 0.15);
  EXPECT_LT(r.ci_high, 0.45);
  BootstrapResult tie = paired_bootstrap(
      100, [&](const std::vector<int64_t>& rows, int) { return accuracy(rows, 0); }, 200, 7);
  EXPECT_EQ(bootstrap_verdict(tie, 0.05), "inconclusive");
}

}  // namespace
}  // namespace kiln::checks
