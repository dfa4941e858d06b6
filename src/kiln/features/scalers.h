#pragma once

#include <torch/types.h>

#include <memory>
#include <string>
#include <vector>

#include "kiln/features/options.h"
#include "kiln/features/transform.h"

namespace kiln::features {

/// A per-column affine map, apply(x) = (x - shift) * scale, the form every scaler reduces to.
/// shift/scale are float64, cast to the input's dtype and device at apply(); NaN cells stay NaN.
/// Later stages fold a scaler into TorchScript from shift() and scale() alone.
/// Thread-safety: as Transform (immutable once fitted; apply() is safe concurrently).
///
///   if (auto* a = dynamic_cast<const AffineTransform*>(&t)) emit_affine(a->shift(), a->scale());
class AffineTransform : public Transform {
 public:
  Expected<torch::Tensor> apply(const torch::Tensor& x) const override;

  /// Per-column shift and multiplier; empty before fit().
  const std::vector<double>& shift() const { return shift_; }
  const std::vector<double>& scale() const { return scale_; }

 protected:
  /// Installs the parameters and marks the transform fitted (F -> F).
  void set_affine(std::vector<double> shift, std::vector<double> scale);
  /// Adds "shift" and "scale" to a fitted transform's JSON.
  void write_affine(Json* j) const;
  /// Reads "shift" and "scale" (F values each) and installs them.
  Status read_affine(const Json& j, const std::string& kind, int64_t features);

 private:
  std::vector<double> shift_, scale_;
  torch::Tensor shift_t_, scale_t_;  // float64 CPU copies of shift_/scale_
};

/// Standardises each column: (x - mean) / std with the population std of the training data (NaN
/// ignored). A column whose std is zero (constant, up to float64 rounding) gets scale 1, so it maps
/// to 0 rather than inf/NaN. A column with no non-missing training value is an error.
/// Thread-safety: as Transform. JSON adds "mean", "var", "shift", "scale" (F numbers each).
///
///   StandardScaler scaler;                        // or StandardScaler(StandardScalerOptions()...)
///   KILN_RETURN_IF_ERROR(scaler.fit(train));
///   KILN_ASSIGN_OR_RETURN(torch::Tensor z, scaler.apply(test));
class StandardScaler : public AffineTransform {
 public:
  static constexpr const char* kKind = "standard_scaler";

  explicit StandardScaler(StandardScalerOptions options = {}) : options_(options) {}

  std::string kind() const override { return kKind; }
  Status fit(const torch::Tensor& x) override;
  Json to_json() const override;
  std::unique_ptr<Transform> clone() const override;
  static Expected<std::unique_ptr<StandardScaler>> from_json(const Json& j);

  const StandardScalerOptions& options() const { return options_; }
  /// Training mean and population variance per column; empty before fit().
  const std::vector<double>& mean() const { return mean_; }
  const std::vector<double>& var() const { return var_; }

 private:
  StandardScalerOptions options_;
  std::vector<double> mean_, var_;
};

/// Maps each column's training [min, max] linearly onto [feature_min, feature_max] (default
/// [0, 1]); a constant column maps to feature_min. With clip(true) the output is clamped to the
/// range. NaN ignored in fit, kept in apply.
/// Thread-safety: as Transform. JSON adds "data_min", "data_max", "shift", "scale".
///
///   MinMaxScaler mm(MinMaxScalerOptions().range(-1, 1));
///   KILN_RETURN_IF_ERROR(mm.fit(train));
class MinMaxScaler : public AffineTransform {
 public:
  static constexpr const char* kKind = "min_max_scaler";

  explicit MinMaxScaler(MinMaxScalerOptions options = {}) : options_(options) {}

  std::string kind() const override { return kKind; }
  Status fit(const torch::Tensor& x) override;
  Expected<torch::Tensor> apply(const torch::Tensor& x) const override;
  Json to_json() const override;
  std::unique_ptr<Transform> clone() const override;
  static Expected<std::unique_ptr<MinMaxScaler>> from_json(const Json& j);

  const MinMaxScalerOptions& options() const { return options_; }
  const std::vector<double>& data_min() const { return data_min_; }
  const std::vector<double>& data_max() const { return data_max_; }

 private:
  MinMaxScalerOptions options_;
  std::vector<double> data_min_, data_max_;
};

/// Centres on the median and divides by the inter-quantile range (default 25th..75th percentile,
/// numpy's linear interpolation), which outliers barely move. A zero range gets scale 1.
/// Thread-safety: as Transform. JSON adds "center", "range", "shift", "scale".
///
///   RobustScaler rs(RobustScalerOptions().quantile_range(10, 90));
///   KILN_RETURN_IF_ERROR(rs.fit(train));
class RobustScaler : public AffineTransform {
 public:
  static constexpr const char* kKind = "robust_scaler";

  explicit RobustScaler(RobustScalerOptions options = {}) : options_(options) {}

  std::string kind() const override { return kKind; }
  Status fit(const torch::Tensor& x) override;
  Json to_json() const override;
  std::unique_ptr<Transform> clone() const override;
  static Expected<std::unique_ptr<RobustScaler>> from_json(const Json& j);

  const RobustScalerOptions& options() const { return options_; }
  /// Training median and quantile range per column; empty before fit().
  const std::vector<double>& center() const { return center_; }
  const std::vector<double>& range() const { return range_; }

 private:
  RobustScalerOptions options_;
  std::vector<double> center_, range_;
};

}  // namespace kiln::features
