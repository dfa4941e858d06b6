#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace kiln {

/// Kiln's one random generator (splitmix64): every random decision Kiln makes (splits, loader
/// shuffles, augmentation, samplers) draws from it. Unlike std::shuffle or
/// std::uniform_int_distribution, whose algorithms vary between standard libraries, its outputs
/// are fixed by the seed alone, so splits, snapshots and runs reproduce bit for bit everywhere.
/// Value type, cheap to copy; not thread-safe (give each thread its own).
///
///   Rng rng = Rng::from_key(seed, epoch, batch);  // an independent stream per (seed, epoch, batch)
///   double u = rng.uniform();                      // [0, 1)
///   int64_t k = rng.uniform_int(-2, 2);            // inclusive
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  /// A stream for a tuple of keys: different tuples give unrelated streams.
  static Rng from_key(uint64_t a, uint64_t b = 0, uint64_t c = 0, uint64_t d = 0) {
    uint64_t h = 0x6b696c6e2d726e67ULL;  // "kiln-rng"
    for (uint64_t k : {a, b, c, d}) h = finalise(h ^ k) + kGolden;
    return Rng(h);
  }

  uint64_t next() { return finalise(state_ += kGolden); }
  /// Uniform integer in [0, n), n > 0 (Lemire's multiply-shift with rejection: unbiased).
  uint64_t below(uint64_t n);
  /// Uniform integer in [lo, hi] (inclusive); lo when hi <= lo. Unbiased.
  int64_t uniform_int(int64_t lo, int64_t hi) {
    if (hi <= lo) return lo;
    const uint64_t span = static_cast<uint64_t>(hi) - static_cast<uint64_t>(lo) + 1;
    return span == 0 ? static_cast<int64_t>(next())  // the whole int64 range
                     : lo + static_cast<int64_t>(below(span));
  }
  /// Uniform double in [0, 1), 53 random bits.
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  /// Uniform float in [lo, hi), 24 random bits.
  float uniform(float lo, float hi) {
    return lo + (hi - lo) * (static_cast<float>(next() >> 40) * 0x1.0p-24f);
  }
  /// True with probability p.
  bool bernoulli(float p) { return p > 0.f && static_cast<float>(next() >> 40) * 0x1.0p-24f < p; }
  /// Two independent standard normal values (Box–Muller) from one draw.
  void normal_pair(float* a, float* b) {
    const uint64_t bits = next();
    // u1 in (0, 1] so log() is finite; u2 in [0, 1).
    const float u1 = (static_cast<float>(bits >> 40) + 1.f) * 0x1.0p-24f;
    const float u2 = static_cast<float>((bits >> 8) & 0xFFFFFFu) * 0x1.0p-24f;
    const float r = std::sqrt(-2.f * std::log(u1));
    const float theta = 6.2831853071795864769f * u2;
    *a = r * std::cos(theta);
    *b = r * std::sin(theta);
  }

 private:
  static constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ULL;
  static uint64_t finalise(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  uint64_t state_;
};

/// Mixes several values into one seed (e.g. seed, epoch, batch index).
uint64_t mix_seed(uint64_t a, uint64_t b, uint64_t c = 0);

/// Fisher–Yates shuffle driven by Rng: the same seed gives the same order everywhere.
template <typename T>
void deterministic_shuffle(std::vector<T>& items, uint64_t seed) {
  Rng rng(seed);
  for (size_t i = items.size(); i > 1; --i) {
    size_t j = static_cast<size_t>(rng.below(i));
    std::swap(items[i - 1], items[j]);
  }
}

}  // namespace kiln
