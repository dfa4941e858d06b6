#pragma once

#include <torch/types.h>

#include <cstdint>
#include <vector>

namespace torch::nn {
class Module;
}  // namespace torch::nn

namespace kiln::train {

/// An exponential moving average of a network's weights (Polyak averaging; timm's ModelEma,
/// PyTorch's AveragedModel with an EMA function): after every optimizer step t (0-based),
///
///     average = d_t · average + (1 − d_t) · weight,   d_t = decay, or with warmup
///     d_t = min(decay, (1 + t) / (10 + t))           (TensorFlow's ExponentialMovingAverage)
///
/// over every parameter and floating-point buffer (batch-norm running statistics), so the
/// averaged network is complete; integer buffers (num_batches_tracked) stay the network's own.
/// Warmup keeps the random initialisation from lingering in the average of a short run.
///
/// Holds references to the network's tensors (the network must outlive it) and its own copies
/// of the averages, on the network's device. Not thread-safe: call from the training thread,
/// between steps.
class WeightAverage {
 public:
  /// Starts the averages at the network's current values.
  WeightAverage(torch::nn::Module& net, double decay, bool warmup);

  /// The decay applied after optimizer step `step` (0-based).
  double decay_at(int64_t step) const;
  /// Folds the network's current values into the averages, after optimizer step `step`.
  void update(int64_t step);
  /// Exchanges the network's values with the averages: once to evaluate or save the averaged
  /// network, again to go on training.
  void swap();

  /// The averages, in the order of the network's parameters, then its floating buffers (what a
  /// checkpoint saves and restores in place).
  std::vector<torch::Tensor>& averages() { return averages_; }
  const std::vector<torch::Tensor>& averages() const { return averages_; }

 private:
  double decay_;
  bool warmup_;
  std::vector<torch::Tensor> live_;  ///< the network's tensors (shared storage)
  std::vector<torch::Tensor> averages_;
};

}  // namespace kiln::train
