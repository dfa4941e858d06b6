#include "kiln/tune/pruner.h"

#include <algorithm>
#include <cmath>

namespace kiln::tune {
namespace {

class MedianPruner : public Pruner {
 public:
  MedianPruner(bool maximize, MedianPrunerOptions o) : maximize_(maximize), o_(o) {}
  bool should_prune(const TrialRecord& trial, int64_t step,
                    const std::vector<TrialRecord>& all) const override {
    if (step < o_.n_warmup_steps) return false;
    int64_t complete = 0;
    std::vector<double> at_step;
    for (const auto& t : all) {
      if (t.state != TrialState::kComplete || t.id == trial.id) continue;
      ++complete;
      auto it = t.intermediate.find(step);
      if (it != t.intermediate.end() && std::isfinite(it->second)) at_step.push_back(it->second);
    }
    if (complete < o_.n_startup_trials) return false;
    double best = NAN;
    for (const auto& [s, v] : trial.intermediate) {
      if (s > step || !std::isfinite(v)) continue;
      if (!std::isfinite(best) || (maximize_ ? v > best : v < best)) best = v;
    }
    if (!std::isfinite(best)) return true;
    if (static_cast<int64_t>(at_step.size()) < o_.n_min_trials) return false;
    std::sort(at_step.begin(), at_step.end());
    const size_t m = at_step.size();
    const double median = m % 2 ? at_step[m / 2] : 0.5 * (at_step[m / 2 - 1] + at_step[m / 2]);
    return maximize_ ? best < median : best > median;
  }

 private:
  bool maximize_;
  MedianPrunerOptions o_;
};

class AshaPruner : public Pruner {
 public:
  AshaPruner(bool maximize, AshaOptions o) : maximize_(maximize), o_(o) {}
  bool should_prune(const TrialRecord& trial, int64_t step,
                    const std::vector<TrialRecord>& all) const override {
    auto mine = trial.intermediate.find(step);
    if (mine == trial.intermediate.end()) return false;
    if (!std::isfinite(mine->second)) return true;
    // Is `step` a rung?
    int64_t rung_step = o_.min_resource;
    while (rung_step < step) rung_step *= o_.reduction_factor;
    if (rung_step != step) return false;
    if (o_.max_resource > 0 && step * o_.reduction_factor > o_.max_resource) return false;
    std::vector<double> competing{mine->second};
    for (const auto& t : all) {
      if (t.id == trial.id) continue;
      auto it = t.intermediate.find(step);
      if (it != t.intermediate.end() && std::isfinite(it->second)) competing.push_back(it->second);
    }
    int64_t idx = static_cast<int64_t>(competing.size()) / o_.reduction_factor - 1;
    if (idx < 0) idx = 0;
    std::sort(competing.begin(), competing.end());
    const double value = mine->second;
    const bool promotable = maximize_ ? value >= competing[competing.size() - 1 - idx]
                                      : value <= competing[static_cast<size_t>(idx)];
    return !promotable;
  }

 private:
  bool maximize_;
  AshaOptions o_;
};

}  // namespace

std::unique_ptr<Pruner> make_median_pruner(bool maximize, const MedianPrunerOptions& o) {
  return std::make_unique<MedianPruner>(maximize, o);
}
std::unique_ptr<Pruner> make_asha_pruner(bool maximize, const AshaOptions& o) {
  return std::make_unique<AshaPruner>(maximize, o);
}

Expected<std::unique_ptr<Pruner>> make_pruner(const std::string& name, bool maximize,
                                              const AshaOptions& asha) {
  if (name == "none") return std::unique_ptr<Pruner>();
  if (name == "median") return make_median_pruner(maximize);
  if (name == "asha") {
    if (asha.min_resource < 1 || asha.reduction_factor < 2)
      return Status::InvalidArgument(
          "--min-resource must be >= 1 and --reduction-factor >= 2 for asha");
    return make_asha_pruner(maximize, asha);
  }
  return Status::InvalidArgument("--pruner " + name + ": expected none, median or asha");
}

}  // namespace kiln::tune
