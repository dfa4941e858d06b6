#pragma once

#include <torch/types.h>

#include <memory>
#include <string>
#include <vector>

#include "kiln/features/options.h"
#include "kiln/features/transform.h"

namespace kiln::features {

/// Replaces missing cells (NaN) with a per-column value learned from training data: the mean,
/// median, most frequent value, or a constant (see ImputeStrategy). apply() is
/// torch::where(isnan(x), fill, x). For every strategy except kConstant, a column that is missing
/// in every training row is an InvalidArgument naming the column index. Infinite training values
/// are rejected.
/// Thread-safety: as Transform (immutable once fitted; apply() is safe concurrently).
/// JSON adds "fill": F numbers.
///
///   Imputer imp(ImputerOptions().strategy(ImputeStrategy::kMedian));
///   KILN_RETURN_IF_ERROR(imp.fit(train));
///   KILN_ASSIGN_OR_RETURN(torch::Tensor filled, imp.apply(test));  // no NaN left
class Imputer : public Transform {
 public:
  static constexpr const char* kKind = "imputer";

  explicit Imputer(ImputerOptions options = {}) : options_(options) {}

  std::string kind() const override { return kKind; }
  Status fit(const torch::Tensor& x) override;
  Expected<torch::Tensor> apply(const torch::Tensor& x) const override;
  Json to_json() const override;
  std::unique_ptr<Transform> clone() const override;
  static Expected<std::unique_ptr<Imputer>> from_json(const Json& j);

  const ImputerOptions& options() const { return options_; }
  /// The value that replaces NaN in each column; empty before fit().
  const std::vector<double>& fill() const { return fill_; }

 private:
  void set_fill(std::vector<double> fill);

  ImputerOptions options_;
  std::vector<double> fill_;
  torch::Tensor fill_t_;  // float64 CPU copy of fill_
};

}  // namespace kiln::features
