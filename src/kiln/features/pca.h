#pragma once

#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kiln/features/options.h"
#include "kiln/features/transform.h"

namespace kiln::features {

/// Principal component analysis fitted in float64: centres on the training mean, takes the SVD of
/// the centred data (torch::linalg_svd) and keeps n_components, or the fewest components whose
/// explained-variance ratios sum to more than variance_fraction, or all min(N, F). Signs follow
/// scikit-learn's svd_flip (u_based_decision=False): in each component the entry of largest
/// absolute value is positive, so refitting the same data gives the same components.
/// apply(x) = (x - mean) @ projection, projection = components^T (divided per component by
/// sqrt(explained_variance) when whitening). Training data must have no NaN (impute first) and at
/// least 2 rows; data where every column is constant is an error.
/// Thread-safety: as Transform (immutable once fitted; apply() is safe concurrently).
/// JSON adds "n_samples", "mean" (F), "components" (K arrays of F), "explained_variance" (K),
/// "explained_variance_ratio" (K), "singular_values" (K).
///
///   Pca pca(PcaOptions().variance_fraction(0.95));
///   KILN_RETURN_IF_ERROR(pca.fit(train));
///   KILN_ASSIGN_OR_RETURN(torch::Tensor z, pca.apply(test));    // N x pca.output_features()
class Pca : public Transform {
 public:
  static constexpr const char* kKind = "pca";

  explicit Pca(PcaOptions options = {}) : options_(options) {}

  std::string kind() const override { return kKind; }
  Status fit(const torch::Tensor& x) override;
  Expected<torch::Tensor> apply(const torch::Tensor& x) const override;
  Json to_json() const override;
  std::unique_ptr<Transform> clone() const override;
  static Expected<std::unique_ptr<Pca>> from_json(const Json& j);

  const PcaOptions& options() const { return options_; }
  int64_t n_samples() const { return n_samples_; }
  /// Training mean (F); empty before fit().
  const std::vector<double>& mean() const { return mean_; }
  /// Components as a fresh K x F float64 tensor, one principal axis per row.
  torch::Tensor components() const;
  /// The F x K float64 matrix apply() multiplies by (a fresh tensor).
  torch::Tensor projection() const;
  /// Variance along each kept component (S^2 / (N - 1)) and its share of the total variance.
  const std::vector<double>& explained_variance() const { return explained_variance_; }
  const std::vector<double>& explained_variance_ratio() const { return explained_variance_ratio_; }
  const std::vector<double>& singular_values() const { return singular_values_; }

 private:
  /// Installs the state and builds the cached tensors from it (the only path: fit and from_json
  /// produce bit-identical apply() output).
  void set_state();

  PcaOptions options_;
  int64_t n_samples_ = 0;
  std::vector<double> mean_;
  std::vector<double> components_;  // K x F row-major
  std::vector<double> explained_variance_, explained_variance_ratio_, singular_values_;
  torch::Tensor mean_t_, projection_t_;  // float64 CPU: F and F x K
};

}  // namespace kiln::features
