#pragma once

#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <string>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"

namespace kiln::features {

/// A fitted feature transform: fit() learns parameters from training data only; apply() then maps
/// any N x input_features() floating tensor to N x output_features() with plain tensor ops
/// (affine, index_select, matmul, comparison) so a later stage can fold it into TorchScript.
/// Missing values are NaN. Fitting statistics are computed in float64 on the CPU; apply() keeps the
/// input's dtype (float32 or float64) and device.
///
/// Serialised form (to_json / transform_from_json):
///   {"kind": "...", "version": 1, "fitted": true, "input_features": F, "output_features": K,
///    "options": {...}, <fitted state: arrays of JSON numbers, which round-trip doubles exactly>}
/// An unfitted transform serialises as {"kind", "version", "fitted": false, "options"}, so configs
/// can describe a pipeline before it is fitted.
///
/// Thread-safety: fit() mutates and is not thread-safe. A fitted transform is immutable; apply(),
/// to_json() and the accessors may be called concurrently from any number of threads.
///
///   StandardScaler scaler;
///   KILN_RETURN_IF_ERROR(scaler.fit(train));           // train: N x F float32
///   KILN_ASSIGN_OR_RETURN(auto z, scaler.apply(test));
///   Json saved = scaler.to_json();
///   KILN_ASSIGN_OR_RETURN(auto again, transform_from_json(saved));  // apply() is bit-identical
class Transform {
 public:
  virtual ~Transform() = default;

  /// Stable name used as "kind" in JSON, e.g. "standard_scaler".
  virtual std::string kind() const = 0;

  /// Learns the parameters from `x` (N x F, float32/float64, NaN = missing). Refitting replaces
  /// the previous state. InvalidArgument names the column at fault (e.g. all-missing, infinite).
  virtual Status fit(const torch::Tensor& x) = 0;

  /// Applies the fitted transform. FailedPrecondition before fit(); InvalidArgument when `x` is
  /// not 2-D floating or has the wrong number of columns ("expected 30 features, got 29").
  virtual Expected<torch::Tensor> apply(const torch::Tensor& x) const = 0;

  /// fit(x) then apply(x).
  Expected<torch::Tensor> fit_apply(const torch::Tensor& x);

  virtual Json to_json() const = 0;

  /// A deep copy (fitted state included).
  virtual std::unique_ptr<Transform> clone() const = 0;

  bool fitted() const { return fitted_; }
  /// Columns apply() expects; 0 before fit().
  int64_t input_features() const { return input_features_; }
  /// Columns apply() returns; 0 before fit().
  int64_t output_features() const { return output_features_; }

 protected:
  Transform() = default;
  Transform(const Transform&) = default;
  Transform& operator=(const Transform&) = default;

  /// Marks the transform fitted with these shapes.
  void set_fitted(int64_t input_features, int64_t output_features);
  void reset_fitted();

  /// Checks an apply() input: fitted, defined, 2-D, float32/float64, input_features() columns.
  Status check_apply_input(const torch::Tensor& x) const;
  /// Checks a fit() input: defined, 2-D, float32/float64, >= min_rows rows, >= 1 column, and no
  /// infinite values (NaN is allowed: missing). Names the first infinite column.
  Status check_fit_input(const torch::Tensor& x, int64_t min_rows = 1) const;

  /// {"kind", "version", "fitted"[, "input_features", "output_features"], "options": options}.
  Json json_header(Json options) const;

 private:
  bool fitted_ = false;
  int64_t input_features_ = 0;
  int64_t output_features_ = 0;
};

/// Builds any transform (pipelines included) from its to_json() form, dispatching on "kind":
/// "imputer", "standard_scaler", "min_max_scaler", "robust_scaler", "one_hot_encoder",
/// "variance_threshold", "pca", "pipeline". InvalidArgument names the missing or bad field, an
/// unknown kind, or an unsupported version.
///
///   KILN_ASSIGN_OR_RETURN(std::unique_ptr<Transform> t, transform_from_json(j));
Expected<std::unique_ptr<Transform>> transform_from_json(const Json& j);

}  // namespace kiln::features
