#pragma once

#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/train/config.h"

namespace torch::optim {
class Optimizer;
}  // namespace torch::optim

namespace kiln::train {

/// Inner iterations of one L-BFGS step (one epoch of a full-batch lbfgs run).
inline constexpr int64_t kLbfgsIterationsPerStep = 20;

/// Builds torch::optim SGD, Adam, AdamW or LBFGS (strong-Wolfe line search, history 20,
/// kLbfgsIterationsPerStep iterations a step) over `params` from the config (lr as configured;
/// the trainer overwrites it every step from the LrSchedule). InvalidArgument for an unknown name
/// or no parameters.
///
///   KILN_ASSIGN_OR_RETURN(auto opt, make_optimizer(net->parameters(), cfg.optimizer));
Expected<std::unique_ptr<torch::optim::Optimizer>> make_optimizer(
    const std::vector<torch::Tensor>& params, const OptimizerConfig& config);

/// Sets the learning rate of every parameter group (SGD, Adam, AdamW, LBFGS).
/// Group k gets lr × scales[k] (1 where scales is shorter): per-group rates follow the schedule.
void set_learning_rate(torch::optim::Optimizer& optimizer, double lr,
                       const std::vector<double>& scales = {});

/// The L2 penalty a full-batch L-BFGS fit adds to its mean loss: coefficient/2 × Σ‖W‖² over the
/// weight tensors (2-D and up; biases and batch-norm scales are not penalised), as scikit-learn's
/// `alpha` and LogisticRegression's 1/C do. 0 when coefficient is 0.
torch::Tensor l2_penalty(const std::vector<torch::Tensor>& params, double coefficient);

/// One step of a full-batch L-BFGS optimizer (made by make_optimizer with name "lbfgs"):
/// minimises `objective()` (which must compute the loss with gradients enabled) over up to
/// kLbfgsIterationsPerStep iterations; returns the objective at the start of the step. Used
/// by the trainer and by the quick path's model search, so both fit the same way. Blocks;
/// not thread-safe against other users of the optimizer.
torch::Tensor lbfgs_step(torch::optim::Optimizer& optimizer,
                         const std::function<torch::Tensor()>& objective);

/// The learning rate as a pure function of the global optimizer step (0-based), so a resumed run
/// continues exactly: no hidden state. Warmup (constant, step, cosine) rises linearly from
/// base/warmup to base over `warmup_steps + warmup_epochs × steps_per_epoch` steps; then
///  - constant:  base
///  - step:      base × gamma^floor(step / (step_size × steps_per_epoch))
///  - cosine:    min_lr + (base − min_lr) × ½(1 + cos(π t)), t from 0 to 1 after warmup
///  - one_cycle: linear rise from peak/div_factor to peak over pct_start of the steps, then a
///               cos (or linear) anneal to peak/final_div at the last step; peak = max_lr or base.
/// Immutable; thread-safe.
///
///   LrSchedule s(cfg.schedule, cfg.optimizer.lr, loader->batches_per_epoch(), total_steps);
///   set_learning_rate(*opt, s.lr(step));
class LrSchedule {
 public:
  LrSchedule(const ScheduleConfig& config, double base_lr, int64_t steps_per_epoch,
             int64_t total_steps);
  double lr(int64_t step) const;
  int64_t warmup_steps() const { return warmup_; }
  int64_t total_steps() const { return total_; }

 private:
  ScheduleConfig config_;
  double base_;
  int64_t steps_per_epoch_;
  int64_t total_;
  int64_t warmup_;
};

}  // namespace kiln::train
