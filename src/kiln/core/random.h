#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace kiln {

/// A small, fast, portable PRNG (splitmix64). Unlike std::shuffle/std::uniform_int_distribution,
/// whose algorithms vary between standard libraries, its outputs are fixed by the seed alone,
/// so splits and snapshots are reproducible everywhere. Not thread-safe; one per thread.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  /// Uniform integer in [0, n), n > 0 (Lemire's multiply-shift with rejection: unbiased).
  uint64_t below(uint64_t n);
  /// Uniform double in [0, 1).
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

 private:
  uint64_t state_;
};

/// Mixes several values into one seed (e.g. seed, epoch, batch index).
uint64_t mix_seed(uint64_t a, uint64_t b, uint64_t c = 0);

/// Fisher–Yates shuffle driven by SplitMix64: the same seed gives the same order everywhere.
template <typename T>
void deterministic_shuffle(std::vector<T>& items, uint64_t seed) {
  SplitMix64 rng(seed);
  for (size_t i = items.size(); i > 1; --i) {
    size_t j = static_cast<size_t>(rng.below(i));
    std::swap(items[i - 1], items[j]);
  }
}

}  // namespace kiln
