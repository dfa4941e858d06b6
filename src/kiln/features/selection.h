#pragma once

#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kiln/features/options.h"
#include "kiln/features/transform.h"

namespace kiln::features {

/// Keeps the columns whose training variance (population, NaN ignored) is strictly greater than
/// the threshold; apply() is x.index_select(1, kept). A column whose training min equals its max
/// counts as variance 0 exactly. fit() fails with InvalidArgument when no column survives.
/// Thread-safety: as Transform (immutable once fitted; apply() is safe concurrently).
/// JSON adds "variances" (F numbers) and "kept" (K column indices, ascending).
///
///   VarianceThreshold vt;                      // threshold 0: drops constant columns
///   KILN_RETURN_IF_ERROR(vt.fit(train));
///   KILN_ASSIGN_OR_RETURN(torch::Tensor kept, vt.apply(test));  // N x vt.kept().size()
class VarianceThreshold : public Transform {
 public:
  static constexpr const char* kKind = "variance_threshold";

  explicit VarianceThreshold(VarianceThresholdOptions options = {}) : options_(options) {}

  std::string kind() const override { return kKind; }
  Status fit(const torch::Tensor& x) override;
  Expected<torch::Tensor> apply(const torch::Tensor& x) const override;
  Json to_json() const override;
  std::unique_ptr<Transform> clone() const override;
  static Expected<std::unique_ptr<VarianceThreshold>> from_json(const Json& j);

  const VarianceThresholdOptions& options() const { return options_; }
  /// Training variance of every input column; empty before fit().
  const std::vector<double>& variances() const { return variances_; }
  /// Input column indices apply() keeps, ascending; empty before fit().
  const std::vector<int64_t>& kept() const { return kept_; }

 private:
  void set_state(std::vector<double> variances, std::vector<int64_t> kept);

  VarianceThresholdOptions options_;
  std::vector<double> variances_;
  std::vector<int64_t> kept_;
  torch::Tensor kept_t_;  // int64 CPU copy of kept_
};

}  // namespace kiln::features
