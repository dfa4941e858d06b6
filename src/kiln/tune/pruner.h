#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/tune/trial.h"

namespace kiln::tune {

/// Decides, after a trial reports its metric for a step (an epoch, counted from 1), whether to
/// stop it. Stateless: every decision is made from the stored trials alone, so a resumed study
/// prunes exactly as an uninterrupted one. Thread-compatible.
class Pruner {
 public:
  virtual ~Pruner() = default;
  /// True when `trial` (running, its intermediate values up to `step` recorded) should stop.
  /// `all` holds every trial of the study (this one included).
  virtual bool should_prune(const TrialRecord& trial, int64_t step,
                            const std::vector<TrialRecord>& all) const = 0;
};

/// Optuna's MedianPruner (lifecycle.md §1.2): no pruning until `n_startup_trials` trials are
/// complete or before `n_warmup_steps`; then prune when the trial's best value so far is worse
/// than the median of the complete trials' values at the same step (at least `n_min_trials`
/// of them). A trial whose values are all NaN is pruned.
struct MedianPrunerOptions {
  int64_t n_startup_trials = 5;
  int64_t n_warmup_steps = 0;
  int64_t n_min_trials = 1;
};

/// Asynchronous successive halving (Optuna's SuccessiveHalvingPruner, min_early_stopping_rate 0):
/// rung k sits at step min_resource·η^k; a trial reaching a rung continues only if its value is
/// in the top 1/η of all trials' values at that rung (when fewer than η have reached it, only if
/// it is the best so far).
struct AshaOptions {
  int64_t min_resource = 1;      ///< epochs
  int64_t reduction_factor = 4;  ///< η
  /// The epochs a trial trains in all (R; 0: unknown). Rungs are min_resource · η^k; one from
  /// which a promoted trial could not reach the next rung (rung · η > R) is the top rung, where
  /// trials finish rather than being stopped a few epochs before the end (ASHA's s_max; Optuna's
  /// SuccessiveHalvingPruner, which has no R, prunes there).
  int64_t max_resource = 0;
};

std::unique_ptr<Pruner> make_median_pruner(bool maximize, const MedianPrunerOptions& o = {});
std::unique_ptr<Pruner> make_asha_pruner(bool maximize, const AshaOptions& o = {});

/// "none" (nullptr) | "median" | "asha"; InvalidArgument otherwise.
Expected<std::unique_ptr<Pruner>> make_pruner(const std::string& name, bool maximize,
                                              const AshaOptions& asha = {});

}  // namespace kiln::tune
