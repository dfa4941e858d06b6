#pragma once

// Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks"): one scalar
// T > 0 fitted on held-out logits so that softmax(z / T) gives probabilities that mean what they
// say, without moving any prediction (argmax(z / T) = argmax(z)). The trainer folds T into the
// network's last layer, so every module built from the bundle's weights (model.pt, ONNX, bf16,
// int8, a pruned copy) serves calibrated probabilities with no extra operator.

#include <torch/types.h>

#include <string>

#include "kiln/core/expected.h"
#include "kiln/model/export.h"
#include "kiln/model/spec.h"

namespace kiln::train {

/// Ok when `logits` is N×K (K >= 2, N > 0) and `target` holds N class indices; otherwise
/// InvalidArgument starting with `what`. Pure.
Status check_classifier_logits(const torch::Tensor& logits, const torch::Tensor& target,
                               const std::string& what);

/// Mean negative log-likelihood of softmax(logits / temperature) (N×K, any float dtype) at the
/// true class indices, computed in float64. Pure; thread-safe.
double temperature_nll(const torch::Tensor& logits, const torch::Tensor& target,
                       double temperature = 1.0);

/// The temperature T in [kMinTemperature, kMaxTemperature] that minimises
/// temperature_nll(logits, target, T): NLL is convex in 1/T, so bisection on the sign of its
/// derivative, mean(E_softmax(z/T)[z] − z_y), finds it to 1e-9 relative. A split the model
/// separates perfectly wants T → 0 and gets kMinTemperature. InvalidArgument on shapes that are
/// not N×K logits (K >= 2) and N class indices. Pure; thread-safe.
inline constexpr double kMinTemperature = 0.05;
inline constexpr double kMaxTemperature = 20.0;
Expected<double> fit_temperature(const torch::Tensor& logits, const torch::Tensor& target);

/// Divides the network's outputs by `temperature` by scaling its last layer with parameters
/// (linear, conv2d or batch norm: weight and bias / T) in `state` ("layers.<i>.weight"...),
/// replacing those entries with new tensors. Every layer after it must commute with a positive
/// scale (dropout, flatten, relu, leaky_relu, max/avg pooling); otherwise, or when the last such
/// layer is residual, InvalidArgument names the layer. Not thread-safe for one `state`.
Status fold_temperature(const model::ModelSpec& spec, model::TensorMap* state, double temperature);

}  // namespace kiln::train
