#include "kiln/loadtest/histogram.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

namespace kiln::loadtest {
namespace {

/// The exact value at a percentile, with the same rank rule as Histogram (ceil(p/100 * n)).
int64_t exact_percentile(const std::vector<int64_t>& sorted, double p) {
  auto rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(sorted.size())));
  rank = std::clamp<size_t>(rank, 1, sorted.size());
  return sorted[rank - 1];
}

TEST(LoadtestHistogram, LayoutMatchesHdrHistogramForThreeDigits) {
  Histogram h(3'600'000'000'000, 3);
  // sub_bucket_count = roundUpPow2(2 * 10^3) = 2048; half of it per bucket after the first.
  EXPECT_EQ(h.highest_equivalent(2047), 2047);
  EXPECT_EQ(h.lowest_equivalent(2048), 2048);
  EXPECT_EQ(h.highest_equivalent(2048), 2049);  // steps of 2 in the second bucket
  EXPECT_EQ(h.lowest_equivalent(4097), 4096);
  EXPECT_EQ(h.highest_equivalent(4096), 4099);
  // 1 ns .. 1 h: ceil(log2(3.6e12 / 2048)) + 1 = 32 buckets, (32 + 1) * 1024 counters (264 kB).
  EXPECT_EQ(h.bucket_slots(), 33u * 1024u);
}

TEST(LoadtestHistogram, PercentilesWithinATenthOfAPercentOfExact) {
  std::mt19937_64 rng(42);
  // A long-tailed mix: log-normal around 200 us plus rare multi-second stalls.
  std::lognormal_distribution<double> body(std::log(200'000.0), 0.8);
  std::vector<int64_t> values;
  Histogram h;
  for (int i = 0; i < 200'000; ++i) {
    int64_t v = static_cast<int64_t>(body(rng));
    if (i % 997 == 0) v = 1'000'000'000 + static_cast<int64_t>(rng() % 3'000'000'000ULL);
    values.push_back(v);
    h.record(v);
  }
  std::sort(values.begin(), values.end());
  EXPECT_EQ(h.total_count(), 200'000);
  EXPECT_EQ(h.min(), values.front());
  EXPECT_EQ(h.max(), values.back());
  for (double p : {1.0, 10.0, 50.0, 90.0, 99.0, 99.5, 99.9, 99.99, 100.0}) {
    const double exact = static_cast<double>(exact_percentile(values, p));
    const double got = static_cast<double>(h.value_at_percentile(p));
    EXPECT_LE(std::abs(got - exact) / exact, 0.001)
        << "p" << p << " exact " << exact << " got " << got;
  }
}

TEST(LoadtestHistogram, SmallValuesAreExact) {
  Histogram h;
  for (int64_t v = 0; v < 2048; ++v) h.record(v);
  EXPECT_EQ(h.value_at_percentile(50), 1023);
  EXPECT_EQ(h.value_at_percentile(100), 2047);
  EXPECT_EQ(h.min(), 0);
}

TEST(LoadtestHistogram, MergeIsAdditive) {
  Histogram a, b, both;
  std::mt19937_64 rng(7);
  for (int i = 0; i < 50'000; ++i) {
    const int64_t v = static_cast<int64_t>(rng() % 50'000'000);
    (i % 3 ? a : b).record(v);
    both.record(v);
  }
  Histogram merged;
  ASSERT_TRUE(merged.add(a));
  ASSERT_TRUE(merged.add(b));
  EXPECT_EQ(merged.total_count(), both.total_count());
  EXPECT_EQ(merged.min(), both.min());
  EXPECT_EQ(merged.max(), both.max());
  for (double p : {50.0, 90.0, 99.0, 99.9})
    EXPECT_EQ(merged.value_at_percentile(p), both.value_at_percentile(p)) << p;
  EXPECT_NEAR(merged.mean(), both.mean(), 1e-6 * both.mean());
  // Different layouts do not merge.
  Histogram coarse(1'000'000'000, 2);
  EXPECT_FALSE(coarse.add(a));
  EXPECT_EQ(coarse.total_count(), 0);
}

TEST(LoadtestHistogram, ClampsAboveHighestAndCountsIt) {
  Histogram h(1'000'000, 3);
  h.record(5'000'000);
  h.record(-3);
  EXPECT_EQ(h.saturated(), 1);
  EXPECT_EQ(h.max(), 1'000'000);
  EXPECT_EQ(h.min(), 0);
  EXPECT_EQ(h.value_at_percentile(100), 1'000'000);
}

TEST(LoadtestHistogram, EmptyReportsZero) {
  Histogram h;
  EXPECT_EQ(h.value_at_percentile(99), 0);
  EXPECT_EQ(h.min(), 0);
  EXPECT_EQ(h.max(), 0);
  EXPECT_EQ(h.mean(), 0);
}

}  // namespace
}  // namespace kiln::loadtest
