#pragma once

#include <torch/types.h>

#include <string>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"
#include "kiln/monitor/calibration.h"

namespace kiln::train {

/// Classification metrics from predicted and true class indices (int64, same length N > 0):
///
///   {"accuracy": 0.91, "macro_f1": 0.90,
///    "per_class": {"cat": {"precision": .., "recall": .., "f1": .., "support": 12}, ...},
///    "confusion_matrix": [[..], ..]}   // rows: true class, columns: predicted class
///
/// `labels` names the classes (its size is the class count); an empty list uses "0".."K-1" with
/// K = 1 + the largest index seen. A class with no predictions (or no support) has precision
/// (recall) 0; macro-F1 averages over classes with support > 0 or predictions > 0.
/// InvalidArgument for mismatched lengths or indices outside the label list. Pure; thread-safe.
///
///   Json m = *classification_metrics(logits.argmax(1), y, {"neg", "pos"});
Expected<Json> classification_metrics(const torch::Tensor& predicted, const torch::Tensor& target,
                                      const std::vector<std::string>& labels = {});

/// Expected calibration error of classifier logits (N×K, any float dtype, K >= 2) against true
/// class indices: the top-1 confidences max softmax fall into `bins` equal-width bins of (0, 1]
/// (bin b holds (b/bins, (b+1)/bins]), and ECE = Σ_b |B_b|/N · |accuracy(B_b) − confidence(B_b)|
/// (Guo et al. 2017, 15 bins as there). 0 is calibrated: of the rows predicted with 80%
/// confidence, 80% are right. InvalidArgument on mismatched shapes or bins < 1. Pure;
/// thread-safe.
Expected<double> expected_calibration_error(const torch::Tensor& logits,
                                            const torch::Tensor& target,
                                            int64_t bins = monitor::kCalibrationBins);

/// The reliability diagram behind expected_calibration_error (same arguments and errors): per
/// bin, the rows, their mean top-1 confidence and the share predicted right.
Expected<monitor::ReliabilityBins> reliability(const torch::Tensor& logits,
                                               const torch::Tensor& target,
                                               int64_t bins = monitor::kCalibrationBins);

/// What Kiln reports for a classifier's outputs (N×K logits): classification_metrics of their
/// arg-max, and with K >= 2 the probabilities' quality from their softmax: "nll" (mean negative
/// log-likelihood), "ece" and "reliability" ({count, confidence, accuracy} per bin). Errors as
/// classification_metrics. Pure; thread-safe.
Expected<Json> classifier_metrics(const torch::Tensor& logits, const torch::Tensor& target,
                                  const std::vector<std::string>& labels = {});

/// Regression metrics {"mse", "mae", "r2"} of predictions vs targets (any float dtype, same
/// number of elements N > 0). R² = 1 − SSE/SST; 0 when the targets are constant. Pure.
Expected<Json> regression_metrics(const torch::Tensor& predicted, const torch::Tensor& target);

}  // namespace kiln::train
