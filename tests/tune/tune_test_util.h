#pragma once

#include <cmath>
#include <functional>
#include <vector>

#include "kiln/tune/sampler.h"

namespace kiln::tune::testing {

/// Runs `n` sequential trials of `f` with `sampler` in process; returns the trials.
inline std::vector<TrialRecord> optimise(Sampler& sampler, const SearchSpace& space,
                                         const std::function<double(const Json&)>& f, int n) {
  std::vector<TrialRecord> trials;
  for (int i = 0; i < n; ++i) {
    auto p = sampler.sample(space, trials, i);
    if (!p.ok()) break;
    TrialRecord t;
    t.id = i + 1;
    t.number = i;
    t.params = *p;
    t.value = f(*p);
    t.state = TrialState::kComplete;
    trials.push_back(t);
  }
  return trials;
}

inline double best_min(const std::vector<TrialRecord>& trials) {
  double b = INFINITY;
  for (const auto& t : trials) b = std::min(b, t.value);
  return b;
}

/// Branin on x1 in [-5, 10], x2 in [0, 15]; global minimum 0.397887.
inline double branin(double x1, double x2) {
  const double pi = 3.14159265358979323846;
  const double b = 5.1 / (4 * pi * pi), c = 5 / pi, t = 1 / (8 * pi);
  const double y = x2 - b * x1 * x1 + c * x1 - 6;
  return y * y + 10 * (1 - t) * std::cos(x1) + 10;
}

}  // namespace kiln::tune::testing
