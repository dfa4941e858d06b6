#pragma once

// How well a classifier's confidence matches how often it is right: reliability bins and the
// expected calibration error, shared by training's metrics (train/metrics.h) and live
// monitoring of labelled feedback (serve/live_monitor.h). Torch-free.

#include <cstdint>
#include <vector>

namespace kiln::monitor {

/// Guo et al.'s bin count, used throughout Kiln.
inline constexpr int64_t kCalibrationBins = 15;

/// The bin of (0, 1] a confidence falls into among `bins` equal-width ones: bin b holds
/// (b/bins, (b+1)/bins]; 0 and below go to bin 0, above 1 to the last. Pure.
int64_t calibration_bin(double confidence, int64_t bins = kCalibrationBins);

/// A reliability diagram's data: per bin, its rows, their mean top-1 confidence and the share
/// of them predicted right (both 0 for an empty bin). Plain value.
struct ReliabilityBins {
  std::vector<int64_t> count;
  std::vector<double> confidence, accuracy;
  /// Σ_b |B_b|/N · |accuracy(B_b) − confidence(B_b)|; 0 for no rows.
  double expected_calibration_error() const;
};

/// Bins top-1 confidences (in [0, 1]) and whether each prediction was right (same length;
/// bins >= 1). Pure; thread-safe.
ReliabilityBins reliability_bins(const std::vector<double>& confidence,
                                 const std::vector<bool>& correct, int64_t bins = kCalibrationBins);

/// Expected calibration error (Guo et al. 2017, 15 bins): reliability_bins(...)'s. 0 is
/// calibrated: of the rows predicted with 80% confidence, 80% are right. Pure; thread-safe.
double expected_calibration_error(const std::vector<double>& confidence,
                                  const std::vector<bool>& correct,
                                  int64_t bins = kCalibrationBins);

}  // namespace kiln::monitor
