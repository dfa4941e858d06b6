#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace kiln::loadtest {

/// A latency histogram with HdrHistogram's log-linear bucket scheme: values from 1 to
/// `highest` are kept to `significant_digits` (1..5) significant decimal digits, i.e. the value a
/// percentile reports is within 10^-digits (relative) of a recorded one. Memory is fixed at
/// construction (about 265 kB for 3 digits up to an hour in nanoseconds); record() never
/// allocates. Values above `highest` are clamped to it (and counted in saturated()).
///
///   Histogram h(3'600'000'000'000, 3);  // 1 ns .. 1 h, 3 digits
///   h.record(1234);
///   int64_t p99 = h.value_at_percentile(99.0);
///
/// Not thread-safe: give each thread its own and add() them (additive merge).
class Histogram {
 public:
  explicit Histogram(int64_t highest = 3'600'000'000'000, int significant_digits = 3);

  /// Counts `value` (negative values count as 0) `count` times. O(1), no allocation.
  void record(int64_t value, int64_t count = 1);
  /// Adds every count of `other` (same highest and digits); returns false (nothing added) if
  /// the layouts differ.
  bool add(const Histogram& other);
  void reset();

  int64_t total_count() const { return total_; }
  int64_t saturated() const { return saturated_; }
  /// Exact smallest / largest recorded value (0 when empty).
  int64_t min() const { return total_ ? min_ : 0; }
  int64_t max() const { return max_; }
  double mean() const;
  /// The value at or below which `percentile` (0..100) of the recorded values fall, as the
  /// highest value equivalent to that bucket (HdrHistogram's convention). 0 when empty.
  int64_t value_at_percentile(double percentile) const;

  int64_t highest() const { return highest_; }
  int significant_digits() const { return digits_; }
  /// Number of counters (memory is 8 bytes each).
  size_t bucket_slots() const { return counts_.size(); }

  /// Bucket geometry, exposed for tests: lowest / highest value sharing `value`'s counter.
  int64_t lowest_equivalent(int64_t value) const;
  int64_t highest_equivalent(int64_t value) const;

 private:
  size_t counts_index(int64_t value) const;
  int64_t value_from_index(size_t index) const;
  int64_t equivalent_range(int64_t value) const;

  int64_t highest_;
  int digits_;
  int sub_bucket_half_count_magnitude_ = 0;
  int64_t sub_bucket_count_ = 0;
  int64_t sub_bucket_half_count_ = 0;
  int64_t sub_bucket_mask_ = 0;
  int bucket_count_ = 0;
  std::vector<int64_t> counts_;
  int64_t total_ = 0;
  int64_t saturated_ = 0;
  int64_t min_ = INT64_MAX;
  int64_t max_ = 0;
  double sum_ = 0;
};

}  // namespace kiln::loadtest
