#include "kiln/monitor/calibration.h"

#include <algorithm>
#include <cmath>

namespace kiln::monitor {

int64_t calibration_bin(double confidence, int64_t bins) {
  return std::clamp(static_cast<int64_t>(std::ceil(confidence * static_cast<double>(bins))) - 1,
                    int64_t{0}, bins - 1);
}

double expected_calibration_error(const std::vector<double>& confidence,
                                  const std::vector<bool>& correct, int64_t bins) {
  const size_t n = std::min(confidence.size(), correct.size());
  if (n == 0 || bins < 1) return 0.0;
  // Per bin, Σ (right − confidence): |B|·|accuracy − confidence| is its absolute value.
  std::vector<double> gap(static_cast<size_t>(bins), 0.0);
  for (size_t i = 0; i < n; ++i)
    gap[static_cast<size_t>(calibration_bin(confidence[i], bins))] +=
        (correct[i] ? 1.0 : 0.0) - confidence[i];
  double total = 0;
  for (double g : gap) total += std::abs(g);
  return total / static_cast<double>(n);
}

}  // namespace kiln::monitor
