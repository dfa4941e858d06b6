#pragma once

#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/features/options.h"
#include "kiln/features/transform.h"

namespace kiln::features {

/// One-hot encoding of one string column. Categories are learned with fit_categories() and kept
/// sorted (byte order) so the same data always gives the same columns. Every string is a category,
/// the empty string included: deciding what counts as missing belongs to the data stage.
///
/// Two layers, so the tensor part stays plain torch ops for TorchScript:
///  - strings -> codes: codes() maps each string to its category index as an N x 1 float32
///    tensor; an unknown string is an InvalidArgument naming the value and row
///    (UnknownCategory::kError) or code -1 (kIgnore). encode() = apply(codes()).
///  - As a Transform over codes: input_features() == 1, output_features() == K, and
///    apply(codes) = (codes == arange(K)) as the input's dtype. With kError, a code that is not an
///    integer in [0, K) (NaN included) is an InvalidArgument; with kIgnore its row is all zeros.
/// Transform::fit(tensor) cannot learn string categories and returns FailedPrecondition; a
/// Pipeline holding an encoder must be built from fitted steps (Pipeline::Create).
/// Target encoding (fit_target(), scikit-learn's TargetEncoder with smooth="auto"): each category
/// becomes d numbers instead of K columns, the mean of each target column over the category's
/// training rows shrunk toward the overall mean by the empirical-Bayes weight
/// λ = n·σ² / (n·σ² + σ_c²) (n the category's rows, σ² the target's variance, σ_c² its variance
/// within the category), then standardised, (value − mean) / std over all training rows, so an
/// unknown category (code -1) is 0: the overall mean. apply() is then the one-hot rows times that
/// K x d table, which the bundle's module and ONNX export compute the same way.
/// Thread-safety: as Transform (immutable once fitted; codes/encode/apply are safe concurrently).
/// JSON adds "categories": K strings, sorted; target-encoded, "target_encoding": {"table": K rows
/// of d, "mean": d, "std": d}.
///
///   OneHotEncoder enc(OneHotEncoderOptions().handle_unknown(UnknownCategory::kIgnore));
///   KILN_RETURN_IF_ERROR(enc.fit_categories({"red", "green", "red", "blue"}));
///   KILN_ASSIGN_OR_RETURN(torch::Tensor y, enc.encode({"green", "mauve"}));
///   // y = [[0, 1, 0], [0, 0, 0]]: columns blue, green, red
class OneHotEncoder : public Transform {
 public:
  static constexpr const char* kKind = "one_hot_encoder";

  explicit OneHotEncoder(OneHotEncoderOptions options = {}) : options_(options) {}

  std::string kind() const override { return kKind; }

  /// Learns the sorted distinct values of `column`. InvalidArgument when it is empty.
  Status fit_categories(const std::vector<std::string>& column);
  /// Category index of every value as an N x 1 float32 tensor (-1: unknown, kIgnore only).
  Expected<torch::Tensor> codes(const std::vector<std::string>& column) const;
  /// Fits the target encoding on the training rows whose codes() are `codes` (N x 1) and whose
  /// targets are `targets` (N x d: a regression target, a binary task's positive-class
  /// indicator, or one indicator column per class), after fit_categories(). Returns those rows'
  /// own encodings cross-fitted (N x d): row i is encoded by a table fitted on the rows of the
  /// other folds (`fold_of[i]` in 0..folds-1), so no row's target reaches its own features; the
  /// table apply() uses is fitted on all rows. `smooth` >= 0 replaces the automatic weight by
  /// scikit-learn's numeric `smooth` m: λ = n / (n + m) (0: the category's own mean).
  /// InvalidArgument on mismatched sizes.
  Expected<torch::Tensor> fit_target(const torch::Tensor& codes, const torch::Tensor& targets,
                                     const std::vector<int64_t>& fold_of, double smooth = -1);
  /// True once fit_target() ran (or the JSON held a target encoding).
  bool target_encoded() const { return target_width_ > 0; }
  /// K x d float32 table of standardised encodings (undefined when not target-encoded).
  torch::Tensor target_table() const;

  /// N x K float32 one-hot rows (target-encoded: N x d): apply(codes(column)).
  Expected<torch::Tensor> encode(const std::vector<std::string>& column) const;

  /// Always FailedPrecondition: categories are strings, learned by fit_categories().
  Status fit(const torch::Tensor& x) override;
  Expected<torch::Tensor> apply(const torch::Tensor& x) const override;
  Json to_json() const override;
  std::unique_ptr<Transform> clone() const override;
  static Expected<std::unique_ptr<OneHotEncoder>> from_json(const Json& j);

  const OneHotEncoderOptions& options() const { return options_; }
  /// Sorted categories; output column i is categories()[i]. Empty before fitting.
  const std::vector<std::string>& categories() const { return categories_; }
  /// Index of `value` in categories(), or -1.
  int64_t index_of(std::string_view value) const;

 private:
  void set_categories(std::vector<std::string> categories);

  OneHotEncoderOptions options_;
  std::vector<std::string> categories_;
  int64_t target_width_ = 0;          ///< d; 0: plain one-hot
  std::vector<double> target_table_;  ///< K x d, row-major, standardised
  std::vector<double> target_mean_;   ///< d: the training rows' target means
  std::vector<double> target_std_;    ///< d: and standard deviations
};

}  // namespace kiln::features
