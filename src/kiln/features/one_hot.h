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
/// Thread-safety: as Transform (immutable once fitted; codes/encode/apply are safe concurrently).
/// JSON adds "categories": K strings, sorted.
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
  /// N x K float32 one-hot rows: apply(codes(column)).
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
};

}  // namespace kiln::features
