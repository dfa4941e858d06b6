#pragma once

#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"
#include "kiln/data/snapshot.h"

namespace kiln::model {
class NetworkImpl;
}  // namespace kiln::model

namespace kiln::train {

/// Maps a batch of prepared inputs to logits (classification, B×K) or predictions (regression,
/// B or B×1). Called in evaluation mode under NoGradGuard.
using Predictor = std::function<torch::Tensor(const torch::Tensor&)>;
/// Loss of a batch (outputs, targets), averaged over the batch; optional in EvalOptions.
using LossFn = std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&)>;

/// How evaluate() feeds a split to a model and what it reports.
///
///   auto opts = EvalOptions("classification").labels(classes).tta("flip").normalize(mean, std);
struct EvalOptions {
  explicit EvalOptions(std::string task) : task_(std::move(task)) {}

  /// Class names (classification); their count is the class count.
  EvalOptions& labels(std::vector<std::string> l) {
    labels_ = std::move(l);
    return *this;
  }
  /// "none" or "flip" (images: the mean of the logits of x and its horizontal mirror).
  EvalOptions& tta(std::string t) {
    tta_ = std::move(t);
    return *this;
  }
  EvalOptions& batch_size(int64_t n) {
    batch_size_ = n;
    return *this;
  }
  /// uint8 inputs: divide by 255 (true, for eager networks) or pass 0..255 floats (false, for
  /// exported modules that fold the preprocessing).
  EvalOptions& scale_uint8(bool on) {
    scale_uint8_ = on;
    return *this;
  }
  /// Per-channel (images) `(x - mean) / std` after scaling; empty: none.
  EvalOptions& normalize(std::vector<float> mean, std::vector<float> stdev) {
    mean_ = std::move(mean);
    std_ = std::move(stdev);
    return *this;
  }
  /// Image batches in channels_last memory format.
  EvalOptions& channels_last(bool on) {
    channels_last_ = on;
    return *this;
  }
  /// Adds "loss" (the sample-weighted mean of `fn` over batches) to the result.
  EvalOptions& loss(LossFn fn) {
    loss_ = std::move(fn);
    return *this;
  }

  std::string task_;  ///< "classification" | "regression"
  std::vector<std::string> labels_;
  std::string tta_ = "none";
  int64_t batch_size_ = 512;
  bool scale_uint8_ = true;
  std::vector<float> mean_;
  std::vector<float> std_;
  bool channels_last_ = false;
  LossFn loss_;
};

/// Flip test-time augmentation as the exported module serves it: one pass of `predict` over the
/// images `x` (N×C×H×W) and their horizontal mirrors stacked, returning the mean of the two
/// halves' outputs in float32. Keeps x's memory format (channels_last stays channels_last).
torch::Tensor predict_with_mirror(const Predictor& predict, const torch::Tensor& x);

/// Runs `predict` over `split` in batches (in order, no shuffling, no augmentation) and returns
/// the metrics of metrics.h — classification {"accuracy", "macro_f1", "per_class",
/// "confusion_matrix"}, regression {"mse", "mae", "r2"} — plus "samples" and, with a loss
/// function, "loss". Errors: InvalidArgument for an unknown task or tta, flip TTA on a table,
/// outputs whose shape does not fit the task and labels, or an exception from `predict`
/// (message included). Blocks; uses the caller's thread and LibTorch's intra-op threads.
/// Thread-safe when `predict` is.
///
///   KILN_ASSIGN_OR_RETURN(Json m, evaluate([&](const torch::Tensor& x) { return net->forward(x);
///   },
///                                          snapshot.splits.at("test"),
///                                          EvalOptions("classification").labels(classes)));
Expected<Json> evaluate(const Predictor& predict, const data::SplitTensors& split,
                        const EvalOptions& options);

/// evaluate() of an eager network, switched to eval mode for the call (its previous mode is
/// restored). Inputs are prepared as `options` says (scaled, normalised: what training fed it).
/// Not thread-safe against other users of `net`.
Expected<Json> evaluate(model::NetworkImpl& net, const data::SplitTensors& split,
                        const EvalOptions& options);

/// Evaluation options matching a snapshot: task, class names, image normalisation from the
/// manifest's "transforms" (tables: none, their features are already transformed).
EvalOptions eval_options_for(const data::Snapshot& snapshot);

}  // namespace kiln::train
