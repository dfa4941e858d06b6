#pragma once

#include <functional>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/loadtest/generator.h"
#include "kiln/loadtest/slo.h"

namespace kiln::loadtest {

/// How `--find-max` searches: stages of `stage_s` seconds at start_rate, start_rate*factor, ...
/// until a stage breaks the SLO (or falls short of its rate), then `bisect_steps` stages between
/// the last rate that held and the first that did not.
struct FindMaxOptions {
  double start_rate = 1000;
  double factor = 1.5;
  double stage_s = 3;
  int bisect_steps = 4;
  double max_rate = 2'000'000;
  /// A stage holds only if it answered at least this share of its intended rate.
  double min_achieved_share = 0.9;
};

struct FindMaxStage {
  double rate = 0;
  double achieved_rate = 0;
  int64_t p99_ns = 0;
  double error_ratio = 0;
  std::vector<SloCheck> checks;
  bool ok = false;
  std::string why;  ///< when not ok: which term or "achieved N req/s"
};

struct FindMaxResult {
  double best_rate = 0;  ///< 0: not even the start rate held
  std::vector<FindMaxStage> stages;
};

/// Runs the search with `base` (its rate and duration are set per stage). Blocks for the whole
/// search; `on_stage` (may be null) sees each stage as it ends.
Expected<FindMaxResult> find_max(const LoadOptions& base, const std::vector<SloTerm>& slo,
                                 const FindMaxOptions& options,
                                 const std::function<void(const FindMaxStage&)>& on_stage);

}  // namespace kiln::loadtest
