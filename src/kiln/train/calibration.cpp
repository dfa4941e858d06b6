#include "kiln/train/calibration.h"

#include <torch/torch.h>

#include <cmath>
#include <set>
#include <string>

namespace kiln::train {
namespace {

/// d NLL / d beta at beta = 1/T: mean over rows of E_softmax(beta z)[z] − z_y (increasing in beta).
double nll_slope(const torch::Tensor& z, const torch::Tensor& z_true, double beta) {
  const torch::Tensor p = torch::softmax(z * beta, 1);
  return ((p * z).sum(1) - z_true).mean().item<double>();
}

}  // namespace

Status check_classifier_logits(const torch::Tensor& logits, const torch::Tensor& target,
                               const std::string& what) {
  if (!logits.defined() || logits.dim() != 2 || logits.size(1) < 2 || logits.size(0) == 0 ||
      !target.defined() || target.numel() != logits.size(0))
    return Status::InvalidArgument(what + ": needs N×K logits (K >= 2) and N class indices, N > 0");
  return Status::Ok();
}

double temperature_nll(const torch::Tensor& logits, const torch::Tensor& target,
                       double temperature) {
  torch::NoGradGuard no_grad;
  const torch::Tensor z = logits.to(torch::kFloat64) / temperature;
  return torch::nll_loss(torch::log_softmax(z, 1), target.reshape({-1}).to(torch::kLong))
      .item<double>();
}

Expected<double> fit_temperature(const torch::Tensor& logits, const torch::Tensor& target) {
  KILN_RETURN_IF_ERROR(check_classifier_logits(logits, target, "calibration"));
  torch::NoGradGuard no_grad;
  const torch::Tensor z = logits.to(torch::kFloat64);
  const torch::Tensor z_true = z.gather(1, target.reshape({-1, 1}).to(torch::kLong)).reshape({-1});
  // beta = 1/T in [1/kMax, 1/kMin]; bisect on log beta while the slope changes sign.
  double lo = std::log(1.0 / kMaxTemperature), hi = std::log(1.0 / kMinTemperature);
  if (nll_slope(z, z_true, std::exp(lo)) >= 0) return kMaxTemperature;
  if (nll_slope(z, z_true, std::exp(hi)) <= 0) return kMinTemperature;
  while (hi - lo > 1e-9) {
    const double mid = 0.5 * (lo + hi);
    (nll_slope(z, z_true, std::exp(mid)) < 0 ? lo : hi) = mid;
  }
  return 1.0 / std::exp(0.5 * (lo + hi));
}

Status fold_temperature(const model::ModelSpec& spec, model::TensorMap* state, double temperature) {
  if (!(temperature > 0) || !std::isfinite(temperature))
    return Status::InvalidArgument("calibration: temperature must be a positive number, got " +
                                   std::to_string(temperature));
  static const std::set<std::string> kScaled = {"linear", "conv2d", "batchnorm1d", "batchnorm2d"};
  static const std::set<std::string> kCommuting = {
      "dropout", "flatten", "relu", "leaky_relu", "maxpool2d", "avgpool2d", "adaptive_avgpool2d"};
  for (size_t i = spec.layers.size(); i-- > 0;) {
    const std::string& type = spec.layers[i].type;
    const std::string where = "layer " + std::to_string(i) + " (" + type + ")";
    if (kScaled.count(type)) {
      const std::string prefix = "layers." + std::to_string(i) + ".";
      auto weight = state->find(prefix + "weight");
      if (weight == state->end())
        return Status::InvalidArgument("calibration: " + where + " has no weight to scale");
      torch::NoGradGuard no_grad;
      weight->second = weight->second / temperature;
      if (auto bias = state->find(prefix + "bias"); bias != state->end())
        bias->second = bias->second / temperature;
      return Status::Ok();
    }
    if (!kCommuting.count(type))
      return Status::InvalidArgument(
          "calibration: temperature scaling folds into the last layer with weights, and " + where +
          " comes after it or is one that a scale does not pass through (it must be linear, "
          "conv2d or batch norm, followed only by dropout, flatten, relu, leaky_relu or pooling)");
  }
  return Status::InvalidArgument("calibration: the model has no layer with weights to scale");
}

}  // namespace kiln::train
