#include "kiln/train/optim.h"

#include <torch/optim.h>

#include <algorithm>
#include <cmath>

namespace kiln::train {

Expected<std::unique_ptr<torch::optim::Optimizer>> make_optimizer(
    const std::vector<torch::Tensor>& params, const OptimizerConfig& c) {
  if (params.empty()) return Status::InvalidArgument("optimizer: the model has no parameters");
  std::unique_ptr<torch::optim::Optimizer> opt;
  if (c.name == "sgd") {
    opt = std::make_unique<torch::optim::SGD>(params, torch::optim::SGDOptions(c.lr)
                                                          .momentum(c.momentum)
                                                          .nesterov(c.nesterov)
                                                          .weight_decay(c.weight_decay));
  } else if (c.name == "adam") {
    opt = std::make_unique<torch::optim::Adam>(params,
                                               torch::optim::AdamOptions(c.lr)
                                                   .betas(std::make_tuple(c.betas[0], c.betas[1]))
                                                   .eps(c.eps)
                                                   .weight_decay(c.weight_decay));
  } else if (c.name == "adamw") {
    opt = std::make_unique<torch::optim::AdamW>(params,
                                                torch::optim::AdamWOptions(c.lr)
                                                    .betas(std::make_tuple(c.betas[0], c.betas[1]))
                                                    .eps(c.eps)
                                                    .weight_decay(c.weight_decay));
  } else if (c.name == "lbfgs") {
    opt = std::make_unique<torch::optim::LBFGS>(params, torch::optim::LBFGSOptions(c.lr)
                                                            .max_iter(kLbfgsIterationsPerStep)
                                                            .history_size(20)
                                                            .tolerance_grad(1e-6)
                                                            .tolerance_change(1e-9)
                                                            .line_search_fn("strong_wolfe"));
  } else {
    return Status::InvalidArgument("optimizer.name: '" + c.name +
                                   "' is not one of: sgd, adam, adamw, lbfgs");
  }
  return opt;
}

torch::Tensor l2_penalty(const std::vector<torch::Tensor>& params, double coefficient) {
  torch::Tensor sum = torch::zeros({});
  if (coefficient == 0) return sum;
  for (const auto& p : params)
    if (p.dim() >= 2) sum = sum + p.pow(2).sum();
  return sum * (0.5 * coefficient);
}

torch::Tensor lbfgs_step(torch::optim::Optimizer& optimizer,
                         const std::function<torch::Tensor()>& objective) {
  auto closure = [&]() -> torch::Tensor {
    optimizer.zero_grad();
    torch::Tensor loss = objective();
    loss.backward();
    return loss;
  };
  return static_cast<torch::optim::LBFGS&>(optimizer).step(closure).detach();
}

void set_learning_rate(torch::optim::Optimizer& optimizer, double lr,
                       const std::vector<double>& scales) {
  auto& groups = optimizer.param_groups();
  for (size_t k = 0; k < groups.size(); ++k)
    groups[k].options().set_lr(k < scales.size() ? lr * scales[k] : lr);
}

LrSchedule::LrSchedule(const ScheduleConfig& config, double base_lr, int64_t steps_per_epoch,
                       int64_t total_steps)
    : config_(config),
      base_(base_lr),
      steps_per_epoch_(std::max<int64_t>(1, steps_per_epoch)),
      total_(std::max<int64_t>(1, total_steps)),
      warmup_(config.name == "one_cycle"
                  ? 0
                  : config.warmup_steps +
                        config.warmup_epochs * std::max<int64_t>(1, steps_per_epoch)) {}

double LrSchedule::lr(int64_t step) const {
  constexpr double kPi = 3.14159265358979323846;
  step = std::max<int64_t>(0, step);
  const auto& c = config_;
  if (c.name == "one_cycle") {
    const double peak = c.max_lr > 0 ? c.max_lr : base_;
    const double start = peak / c.div_factor;
    const double end = peak / c.final_div;
    const double up = std::max(1.0, std::round(c.pct_start * static_cast<double>(total_)));
    const double s = static_cast<double>(std::min(step, total_ - 1));
    if (s < up) return start + (peak - start) * (s / up);
    const double down = std::max(1.0, static_cast<double>(total_ - 1) - up);
    const double t = std::min(1.0, (s - up) / down);
    if (c.anneal == "linear") return peak + (end - peak) * t;
    return end + (peak - end) * 0.5 * (1.0 + std::cos(kPi * t));
  }
  if (step < warmup_) return base_ * static_cast<double>(step + 1) / static_cast<double>(warmup_);
  if (c.name == "step") {
    const int64_t period = c.step_size * steps_per_epoch_;
    return base_ * std::pow(c.gamma, static_cast<double>(step / period));
  }
  if (c.name == "cosine") {
    const double span = std::max<double>(1.0, static_cast<double>(total_ - warmup_));
    const double t = std::min(1.0, static_cast<double>(step - warmup_) / span);
    return c.min_lr + (base_ - c.min_lr) * 0.5 * (1.0 + std::cos(kPi * t));
  }
  return base_;
}

}  // namespace kiln::train
