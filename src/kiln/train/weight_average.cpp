#include "kiln/train/weight_average.h"

#include <torch/torch.h>

#include <algorithm>

namespace kiln::train {

WeightAverage::WeightAverage(torch::nn::Module& net, double decay, bool warmup)
    : decay_(decay), warmup_(warmup) {
  torch::NoGradGuard no_grad;
  for (const torch::Tensor& p : net.parameters()) live_.push_back(p);
  for (const torch::Tensor& b : net.buffers())
    if (b.is_floating_point()) live_.push_back(b);
  averages_.reserve(live_.size());
  for (const torch::Tensor& t : live_) averages_.push_back(t.detach().clone());
}

double WeightAverage::decay_at(int64_t step) const {
  if (!warmup_) return decay_;
  const double t = static_cast<double>(step);
  return std::min(decay_, (1.0 + t) / (10.0 + t));
}

void WeightAverage::update(int64_t step) {
  if (live_.empty()) return;
  torch::NoGradGuard no_grad;
  const double d = decay_at(step);
  // Two fused passes over every tensor: average *= d, then average += (1 - d) * weight.
  torch::_foreach_mul_(averages_, d);
  torch::_foreach_add_(averages_, live_, 1.0 - d);
}

void WeightAverage::swap() {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < live_.size(); ++i) {
    torch::Tensor held = live_[i].detach().clone();
    live_[i].detach().copy_(averages_[i]);
    averages_[i].copy_(held);
  }
}

}  // namespace kiln::train
