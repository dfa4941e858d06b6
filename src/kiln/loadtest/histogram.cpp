#include "kiln/loadtest/histogram.h"

#include <algorithm>
#include <cmath>

namespace kiln::loadtest {
namespace {

int bit_length(uint64_t v) { return v == 0 ? 0 : 64 - __builtin_clzll(v); }

}  // namespace

// The layout follows HdrHistogram_c (hdr_histogram.c) with lowest_discernible_value 1 (so
// unit_magnitude is 0): bucket 0 counts [0, sub_bucket_count) in steps of 1; bucket b > 0 counts
// [sub_bucket_count << (b-1), sub_bucket_count << b) in steps of 2^b.
Histogram::Histogram(int64_t highest, int significant_digits)
    : highest_(std::max<int64_t>(highest, 2)), digits_(std::clamp(significant_digits, 1, 5)) {
  int64_t largest_single_unit = 2;
  for (int i = 0; i < digits_; ++i) largest_single_unit *= 10;
  const int sub_bucket_count_magnitude = bit_length(static_cast<uint64_t>(largest_single_unit - 1));
  sub_bucket_half_count_magnitude_ = std::max(sub_bucket_count_magnitude, 1) - 1;
  sub_bucket_count_ = int64_t{1} << (sub_bucket_half_count_magnitude_ + 1);
  sub_bucket_half_count_ = sub_bucket_count_ / 2;
  sub_bucket_mask_ = sub_bucket_count_ - 1;
  int64_t smallest_untrackable = sub_bucket_count_;
  bucket_count_ = 1;
  while (smallest_untrackable <= highest_) {
    if (smallest_untrackable > INT64_MAX / 2) {
      ++bucket_count_;
      break;
    }
    smallest_untrackable <<= 1;
    ++bucket_count_;
  }
  counts_.assign(static_cast<size_t>((bucket_count_ + 1) * sub_bucket_half_count_), 0);
}

size_t Histogram::counts_index(int64_t value) const {
  const int pow2ceiling = bit_length(static_cast<uint64_t>(value | sub_bucket_mask_));
  const int bucket = pow2ceiling - (sub_bucket_half_count_magnitude_ + 1);
  const int64_t sub_bucket = value >> bucket;
  return static_cast<size_t>(
      ((static_cast<int64_t>(bucket) + 1) << sub_bucket_half_count_magnitude_) +
      (sub_bucket - sub_bucket_half_count_));
}

int64_t Histogram::value_from_index(size_t index) const {
  int64_t bucket = static_cast<int64_t>(index >> sub_bucket_half_count_magnitude_) - 1;
  int64_t sub_bucket =
      static_cast<int64_t>(index & static_cast<size_t>(sub_bucket_half_count_ - 1)) +
      sub_bucket_half_count_;
  if (bucket < 0) {
    sub_bucket -= sub_bucket_half_count_;
    bucket = 0;
  }
  return sub_bucket << bucket;
}

int64_t Histogram::equivalent_range(int64_t value) const {
  const int pow2ceiling = bit_length(static_cast<uint64_t>(value | sub_bucket_mask_));
  int bucket = pow2ceiling - (sub_bucket_half_count_magnitude_ + 1);
  const int64_t sub_bucket = value >> bucket;
  if (sub_bucket >= sub_bucket_count_) ++bucket;
  return int64_t{1} << bucket;
}

int64_t Histogram::lowest_equivalent(int64_t value) const {
  const int pow2ceiling = bit_length(static_cast<uint64_t>(value | sub_bucket_mask_));
  const int bucket = pow2ceiling - (sub_bucket_half_count_magnitude_ + 1);
  return (value >> bucket) << bucket;
}

int64_t Histogram::highest_equivalent(int64_t value) const {
  return lowest_equivalent(value) + equivalent_range(value) - 1;
}

void Histogram::record(int64_t value, int64_t count) {
  if (value < 0) value = 0;
  if (value > highest_) {
    value = highest_;
    saturated_ += count;
  }
  counts_[counts_index(value)] += count;
  total_ += count;
  min_ = std::min(min_, value);
  max_ = std::max(max_, value);
  sum_ += static_cast<double>(value) * static_cast<double>(count);
}

bool Histogram::add(const Histogram& other) {
  if (other.counts_.size() != counts_.size() || other.digits_ != digits_ ||
      other.highest_ != highest_)
    return false;
  for (size_t i = 0; i < counts_.size(); ++i) counts_[i] += other.counts_[i];
  total_ += other.total_;
  saturated_ += other.saturated_;
  min_ = std::min(min_, other.min_);
  max_ = std::max(max_, other.max_);
  sum_ += other.sum_;
  return true;
}

void Histogram::reset() {
  std::fill(counts_.begin(), counts_.end(), 0);
  total_ = saturated_ = max_ = 0;
  min_ = INT64_MAX;
  sum_ = 0;
}

double Histogram::mean() const { return total_ ? sum_ / static_cast<double>(total_) : 0.0; }

int64_t Histogram::value_at_percentile(double percentile) const {
  if (total_ == 0) return 0;
  const double p = std::clamp(percentile, 0.0, 100.0);
  int64_t target = static_cast<int64_t>(std::ceil(p / 100.0 * static_cast<double>(total_)));
  target = std::clamp<int64_t>(target, 1, total_);
  int64_t seen = 0;
  for (size_t i = 0; i < counts_.size(); ++i) {
    seen += counts_[i];
    if (seen >= target) {
      // The bucket's highest equivalent value, but never past the exact extremes.
      const int64_t v = highest_equivalent(value_from_index(i));
      return std::clamp(v, min_, max_);
    }
  }
  return max_;
}

}  // namespace kiln::loadtest
