#pragma once

#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"

namespace kiln::model {

/// Which loss a model trains with, and its settings. Options print and serialise (to_json /
/// from_json; from_json fills absent keys with defaults and rejects unknown keys).
///
/// kinds and targets (output is N x outputs logits / predictions):
///   cross_entropy    target: N class indices (any integer dtype); label_smoothing in [0, 1);
///                    class_weights: one per output (or empty); needs outputs >= 2
///   bce_with_logits  target: N x outputs (or N when outputs == 1) of 0/1 (or soft) labels
///   mse              target: N x outputs (or N when outputs == 1)
///   huber            as mse; huber_delta > 0 (quadratic within delta, linear beyond)
/// Settings that the kind ignores must keep their defaults (a typo'd config is an error).
///
///   auto loss = make_loss(LossOptions().kind("cross_entropy").label_smoothing(0.1), 10);
///   torch::Tensor l = (*loss)(logits, labels);   // scalar, mean over the batch
struct LossOptions {
  LossOptions& kind(std::string k) {
    kind_ = std::move(k);
    return *this;
  }
  LossOptions& label_smoothing(double s) {
    label_smoothing_ = s;
    return *this;
  }
  LossOptions& class_weights(std::vector<double> w) {
    class_weights_ = std::move(w);
    return *this;
  }
  LossOptions& huber_delta(double d) {
    huber_delta_ = d;
    return *this;
  }

  /// Checks the settings that do not depend on the number of outputs.
  Status validate() const;
  /// {"kind", "label_smoothing", "class_weights", "huber_delta"}.
  Json to_json() const;
  static Expected<LossOptions> from_json(const Json& j);

  std::string kind_ = "cross_entropy";
  double label_smoothing_ = 0.0;
  std::vector<double> class_weights_;
  double huber_delta_ = 1.0;
};

/// "cross_entropy", "mse", "huber", "bce_with_logits".
const std::vector<std::string>& loss_kinds();

using LossFn =
    std::function<torch::Tensor(const torch::Tensor& output, const torch::Tensor& target)>;

/// A loss function for a model with `outputs` outputs: scalar mean over the batch. Half/bf16
/// outputs (autocast) are computed in float32. InvalidArgument for bad options (naming the
/// setting). The function throws (TORCH_CHECK) on targets of the wrong shape. Thread-safe.
Expected<LossFn> make_loss(const LossOptions& options, int64_t outputs);

}  // namespace kiln::model
