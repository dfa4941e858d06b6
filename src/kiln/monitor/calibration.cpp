#include "kiln/monitor/calibration.h"

#include <algorithm>
#include <cmath>

namespace kiln::monitor {

int64_t calibration_bin(double confidence, int64_t bins) {
  return std::clamp(static_cast<int64_t>(std::ceil(confidence * static_cast<double>(bins))) - 1,
                    int64_t{0}, bins - 1);
}

double ReliabilityBins::expected_calibration_error() const {
  int64_t n = 0;
  double total = 0;
  for (size_t b = 0; b < count.size(); ++b) {
    n += count[b];
    total += static_cast<double>(count[b]) * std::abs(accuracy[b] - confidence[b]);
  }
  return n > 0 ? total / static_cast<double>(n) : 0.0;
}

ReliabilityBins reliability_bins(const std::vector<double>& confidence,
                                 const std::vector<bool>& correct, int64_t bins) {
  bins = std::max<int64_t>(1, bins);
  ReliabilityBins r;
  r.count.assign(static_cast<size_t>(bins), 0);
  r.confidence.assign(static_cast<size_t>(bins), 0.0);
  r.accuracy.assign(static_cast<size_t>(bins), 0.0);
  const size_t n = std::min(confidence.size(), correct.size());
  for (size_t i = 0; i < n; ++i) {
    const auto b = static_cast<size_t>(calibration_bin(confidence[i], bins));
    ++r.count[b];
    r.confidence[b] += confidence[i];
    r.accuracy[b] += correct[i] ? 1.0 : 0.0;
  }
  for (size_t b = 0; b < r.count.size(); ++b)
    if (r.count[b] > 0) {
      r.confidence[b] /= static_cast<double>(r.count[b]);
      r.accuracy[b] /= static_cast<double>(r.count[b]);
    }
  return r;
}

double expected_calibration_error(const std::vector<double>& confidence,
                                  const std::vector<bool>& correct, int64_t bins) {
  return reliability_bins(confidence, correct, bins).expected_calibration_error();
}

}  // namespace kiln::monitor
