#include "kiln/features/tensor_utils.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace kiln::features::internal {

torch::Tensor to_cpu_double(const torch::Tensor& x) {
  return x.to(torch::kCPU, torch::kFloat64).contiguous();
}

torch::Tensor to_tensor(const std::vector<double>& v) {
  return torch::tensor(torch::ArrayRef<double>(v), torch::kFloat64);
}

torch::Tensor to_tensor(const std::vector<double>& v, int64_t rows, int64_t cols) {
  return to_tensor(v).reshape({rows, cols});
}

std::vector<double> to_vector(const torch::Tensor& t) {
  torch::Tensor c = t.to(torch::kCPU, torch::kFloat64).contiguous().reshape({-1});
  const double* p = c.data_ptr<double>();
  return std::vector<double>(p, p + c.numel());
}

ColumnStats column_stats(const torch::Tensor& x64) {
  torch::Tensor present = ~torch::isnan(x64);
  torch::Tensor zeros = torch::zeros_like(x64);
  torch::Tensor count = present.sum(0, /*keepdim=*/false, torch::kFloat64);
  torch::Tensor mean = torch::where(present, x64, zeros).sum(0) / count;
  torch::Tensor diff = torch::where(present, x64 - mean, zeros);
  torch::Tensor var = (diff * diff).sum(0) / count;
  const double inf = std::numeric_limits<double>::infinity();
  torch::Tensor min = torch::where(present, x64, torch::full_like(x64, inf)).amin(0);
  torch::Tensor max = torch::where(present, x64, torch::full_like(x64, -inf)).amax(0);

  ColumnStats s;
  for (double c : to_vector(count)) s.count.push_back(static_cast<int64_t>(c));
  s.mean = to_vector(mean);
  s.var = to_vector(var);
  s.min = to_vector(min);
  s.max = to_vector(max);
  return s;
}

Status require_present(const ColumnStats& stats, const std::string& kind) {
  for (size_t i = 0; i < stats.count.size(); ++i) {
    if (stats.count[i] == 0) {
      return Status::InvalidArgument(kind + ": column " + std::to_string(i) +
                                     " has no non-missing training values");
    }
  }
  return Status::Ok();
}

std::vector<std::vector<double>> sorted_columns(const torch::Tensor& x64) {
  torch::Tensor t = x64.t().contiguous();
  const int64_t cols = t.size(0), rows = t.size(1);
  const double* p = t.data_ptr<double>();
  std::vector<std::vector<double>> out(static_cast<size_t>(cols));
  for (int64_t c = 0; c < cols; ++c) {
    auto& col = out[static_cast<size_t>(c)];
    col.reserve(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) {
      double v = p[c * rows + r];
      if (!std::isnan(v)) col.push_back(v);
    }
    std::sort(col.begin(), col.end());
  }
  return out;
}

double quantile_sorted(const std::vector<double>& v, double q) {
  const double pos = q * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, v.size() - 1);
  const double frac = pos - static_cast<double>(lo);
  return frac == 0.0 ? v[lo] : v[lo] + (v[hi] - v[lo]) * frac;
}

double mode_sorted(const std::vector<double>& v) {
  double best = v.front();
  size_t best_run = 0;
  for (size_t i = 0; i < v.size();) {
    size_t j = i;
    while (j < v.size() && v[j] == v[i]) ++j;
    if (j - i > best_run) {
      best_run = j - i;
      best = v[i];
    }
    i = j;
  }
  return best;
}

}  // namespace kiln::features::internal
