#pragma once

// Internal to kiln::features: float64 column statistics with NaN as missing, and conversions
// between tensors and the std::vector<double> state that transforms serialise.

#include <torch/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "kiln/core/expected.h"

namespace kiln::features::internal {

/// `x` as a contiguous float64 CPU tensor (a copy when it is not one already).
torch::Tensor to_cpu_double(const torch::Tensor& x);

/// A 1-D float64 tensor holding `v` (owns its memory).
torch::Tensor to_tensor(const std::vector<double>& v);
/// A rows x cols float64 tensor from row-major `v`.
torch::Tensor to_tensor(const std::vector<double>& v, int64_t rows, int64_t cols);
/// The elements of a float64-convertible tensor, row-major.
std::vector<double> to_vector(const torch::Tensor& t);

/// Per-column statistics of an N x F float64 tensor ignoring NaN. Variance is the population
/// (ddof = 0) variance, computed in two passes.
struct ColumnStats {
  std::vector<int64_t> count;  ///< non-missing values
  std::vector<double> mean, var, min, max;
};
ColumnStats column_stats(const torch::Tensor& x64);

/// InvalidArgument "<kind>: column i has no non-missing training values" for the first column with
/// count 0.
Status require_present(const ColumnStats& stats, const std::string& kind);

/// Non-missing values of each column, sorted ascending (for quantiles and modes).
std::vector<std::vector<double>> sorted_columns(const torch::Tensor& x64);

/// Quantile q in [0, 1] of sorted non-empty `v` with numpy's default linear interpolation.
double quantile_sorted(const std::vector<double>& v, double q);
/// Most frequent value of sorted non-empty `v`; ties go to the smallest.
double mode_sorted(const std::vector<double>& v);

}  // namespace kiln::features::internal
