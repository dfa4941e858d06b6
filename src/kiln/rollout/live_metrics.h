#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "kiln/core/expected.h"

namespace kiln::rollout {

/// One served model's counters as `kiln serve` exposes them on /metrics at one moment, summed
/// over its versions. Two snapshots, diffed, give what happened in between. Plain value.
struct ModelSnapshot {
  std::map<std::string, double> requests_by_outcome;  ///< kiln_inference_requests_total
  std::map<double, double> duration_buckets;  ///< le (seconds, +inf included) -> cumulative count
  double live_accuracy = -1;                  ///< kiln_live_accuracy; -1 when not exposed
  double labelled_rows = 0;                   ///< kiln_live_labelled_rows of that version
};

/// Reads `model`'s samples out of a Prometheus text exposition (the /metrics body). A model the
/// text does not mention gives an empty snapshot. Errors name the line that does not parse.
Expected<ModelSnapshot> parse_model_snapshot(const std::string& text, const std::string& model);

/// One snapshot of several servers (a cluster's replicas): counters and buckets added, live
/// accuracy the mean of theirs weighted by labelled rows (-1 when none exposes one).
ModelSnapshot sum_snapshots(const std::vector<ModelSnapshot>& snapshots);

/// What the candidate did between two snapshots.
struct WindowStats {
  double requests = 0;    ///< Δ of every outcome
  double errors = 0;      ///< Δ(server_error + timeout)
  double error_rate = 0;  ///< errors / requests (0 when no request)
  double p99_ms = -1;     ///< histogram_quantile(0.99) of the Δ buckets; -1 without requests
  double live_accuracy = -1;
  double labelled_rows = 0;
};
WindowStats diff_window(const ModelSnapshot& start, const ModelSnapshot& end);

/// Prometheus' histogram_quantile on cumulative buckets (le -> count, +inf last): linear
/// interpolation inside the bucket holding rank q·total (from 0 for the first bucket); a rank in
/// the +Inf bucket gives the highest finite bound. NaN for an empty histogram.
double histogram_quantile(double q, const std::map<double, double>& cumulative);

}  // namespace kiln::rollout
