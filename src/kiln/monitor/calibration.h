#pragma once

// How well a classifier's confidence matches how often it is right: the expected calibration
// error, shared by training's metrics (train/metrics.h) and live monitoring of labelled
// feedback (serve/live_monitor.h). Torch-free.

#include <cstdint>
#include <vector>

namespace kiln::monitor {

/// Guo et al.'s bin count, used throughout Kiln.
inline constexpr int64_t kCalibrationBins = 15;

/// The bin of (0, 1] a confidence falls into among `bins` equal-width ones: bin b holds
/// (b/bins, (b+1)/bins]; 0 and below go to bin 0, above 1 to the last. Pure.
int64_t calibration_bin(double confidence, int64_t bins = kCalibrationBins);

/// Expected calibration error of top-1 confidences (in [0, 1]) and whether each prediction was
/// right: the rows fall into `bins` equal-width bins of (0, 1] (bin b holds (b/bins, (b+1)/bins])
/// and ECE = Σ_b |B_b|/N · |accuracy(B_b) − mean confidence(B_b)| (Guo et al. 2017, 15 bins).
/// 0 for no rows. The two vectors have the same length; bins >= 1. Pure; thread-safe.
double expected_calibration_error(const std::vector<double>& confidence,
                                  const std::vector<bool>& correct,
                                  int64_t bins = kCalibrationBins);

}  // namespace kiln::monitor
