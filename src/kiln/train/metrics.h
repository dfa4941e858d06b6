#pragma once

#include <torch/types.h>

#include <string>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"

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

/// Regression metrics {"mse", "mae", "r2"} of predictions vs targets (any float dtype, same
/// number of elements N > 0). R² = 1 − SSE/SST; 0 when the targets are constant. Pure.
Expected<Json> regression_metrics(const torch::Tensor& predicted, const torch::Tensor& target);

}  // namespace kiln::train
