#pragma once

// What every exporter of a Kiln network reads the same way: a layer's parameters from its spec
// JSON, window arithmetic, and the fitted preprocessing parsed into tensor steps. The TorchScript
// generator (export.cpp) and the ONNX graph builder (kiln/export) both start from these, so a
// module and a graph exported from one bundle compute the same function.

#include <torch/types.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"

namespace kiln::model {

/// "[a,b,c]".
std::string shape_str(const std::vector<int64_t>& shape);

/// params[key] as an int (both axes) or an [h, w] pair; `fallback` when absent or null.
/// InvalidArgument names `where` and the key.
Expected<std::pair<int64_t, int64_t>> layer_pair_param(const Json& params, const std::string& key,
                                                       std::pair<int64_t, int64_t> fallback,
                                                       const std::string& where);

/// params[key] as a finite number; `fallback` when absent or null.
Expected<double> layer_double_param(const Json& params, const std::string& key, double fallback,
                                    const std::string& where);

/// Output size of a convolution or pooling window along one axis (floor mode).
inline int64_t window_out(int64_t in, int64_t kernel, int64_t stride, int64_t padding) {
  return (in + 2 * padding - kernel) / stride + 1;
}

/// The stride of a residual block's 1x1 shortcut projection `weight` [C', C, 1, 1] mapping `in`
/// [C,H,W] onto the body's output `out` [C',H',W'], per axis: the smallest s with
/// ceil(H / s) == H' (and likewise for W). InvalidArgument naming `where` when the weight does
/// not map `in` to `out` or no stride does.
Expected<std::pair<int64_t, int64_t>> projection_stride(const torch::Tensor& weight,
                                                        const std::vector<int64_t>& in,
                                                        const std::vector<int64_t>& out,
                                                        const std::string& where);

/// A layer's output shape has no empty axis; InvalidArgument naming `where` ("input too small").
Status check_output_shape(const std::vector<int64_t>& shape, const std::string& where);

/// A linear layer's `weight` [O, I] takes input [..., I]; InvalidArgument naming `where` else.
Status check_linear_weight(const torch::Tensor& weight, const std::vector<int64_t>& in,
                           const std::string& where);

/// A batch norm's `running_mean` [C] matches input [C, ...]; InvalidArgument naming `where` else.
Status check_batch_norm_stats(const torch::Tensor& running_mean, const std::vector<int64_t>& in,
                              const std::string& where);

/// A 2-D window over [C,H,W]: params' stride and padding, and the output shape. Plain value.
struct Window2d {
  std::pair<int64_t, int64_t> kernel, stride, padding;
  std::vector<int64_t> out_shape;
};

/// A conv2d layer's window: `weight` [O, C, kh, kw] must take input `in` [C,H,W] (the caller
/// checks the rank); "stride" (1) and "padding" (0) from `params`. InvalidArgument naming
/// `where` and the weight or parameter that does not fit.
Expected<Window2d> conv2d_window(const Json& params, const torch::Tensor& weight,
                                 const std::vector<int64_t>& in, const std::string& where);

/// A max or average pooling layer's window over `in` [C,H,W]: "kernel" (2), "stride" (the
/// kernel), "padding" (0) from `params`.
Expected<Window2d> pool2d_window(const Json& params, const std::vector<int64_t>& in,
                                 const std::string& where);

/// One step of the preprocessing an exported model applies to raw inputs before its network.
/// Tensors are float32 (kSelect's `a`: int64 column indices) on the CPU. Plain value.
struct PrologueStep {
  enum class Kind {
    kImageNormalize,  ///< x = (x * input_scale - a) / b; a, b: [1, C, 1, 1]
    kImpute,          ///< x = where(isnan(x), a, x); a: [features]
    kShiftScale,      ///< x = (x - a) * b (standard, min-max and robust scalers)
    kClamp,           ///< x = clamp(x, lo, hi) (a min-max scaler with clip)
    kSelect,          ///< x = x[:, a] (variance threshold's kept columns)
    kProject,         ///< x = (x - a) @ b; b: [in, k] (PCA, whitening folded in)
  };
  Kind kind = Kind::kShiftScale;
  /// "preprocessing step 2 (pca)" or "preprocessing (image_normalize)", for errors and comments.
  std::string where;
  /// The flattened pipeline step this comes from (a scaler and its clamp share one).
  size_t index = 0;
  double input_scale = 1.0, lo = 0.0, hi = 1.0;
  torch::Tensor a, b;
};

/// A table's categorical columns, one-hot encoded inside the module: the raw input's last
/// `columns.size()` columns hold category codes (0..K-1 into the column's sorted categories;
/// anything else, NaN included, encodes as all zeros: a category training never saw). They are
/// split off before the numeric steps and appended after them, K one-hot columns each. Plain
/// value; empty when the table has no categorical column.
struct CategoricalTail {
  std::vector<std::string> columns;
  std::vector<int64_t> sizes;  ///< K per column
  /// Per column: undefined for one-hot, or a target encoding's K x d table (float32), which the
  /// column's one-hot row is multiplied by (d columns instead of K).
  std::vector<torch::Tensor> target_tables;
  /// The columns the tail appends: K per one-hot column, d per target-encoded one.
  int64_t width() const;
};

/// A bundle's preprocessing as steps, and the raw per-sample input shape they take.
struct Prologue {
  std::vector<PrologueStep> steps;
  std::vector<int64_t> raw_shape;
  CategoricalTail categorical;
};

/// The preprocessing of a table with categorical columns, as a bundle records it:
/// {"kind": "table", "numeric": NUMERIC (a fitted pipeline; null when there are no numeric
/// columns), "categorical": [{"column": NAME, "categories": [sorted strings], "target_table":
/// K rows of d (target-encoded columns only)}, ...]}, from a snapshot's "transforms" and
/// "categorical_encoders" ([{"column", "encoder": {"categories", "target_encoding"}}]).
/// Without categorical encoders it is `numeric` itself (the format every older bundle has).
Json table_preprocessing(const Json& numeric, const Json& categorical_encoders);

/// Parses `preprocessing` (null or {}: identity; {"kind": "image_normalize", ...}; a fitted
/// kiln::features pipeline or single transform; {"kind": "table", ...} as table_preprocessing
/// writes it) for a network taking `model_shape`.
/// InvalidArgument names the step for an unsupported or malformed one, or a feature count that
/// does not reach `model_shape` ("preprocessing step 2 (one_hot_encoder): not supported ...").
/// Pure; thread-safe.
Expected<Prologue> parse_prologue(const Json& preprocessing,
                                  const std::vector<int64_t>& model_shape);

}  // namespace kiln::model
