#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"
#include "kiln/tune/space.h"
#include "kiln/tune/trial.h"

namespace kiln::tune {

/// Proposes the parameters of the next trial from the study's history. Implementations are
/// deterministic: the same seed, history and trial number give the same parameters. Not
/// thread-safe (the tuner asks from one thread).
class Sampler {
 public:
  virtual ~Sampler() = default;
  /// Parameters for trial `number`: a JSON object name → value holding exactly the active
  /// parameters. `history` holds every earlier trial (running ones too). NotFound when the
  /// sampler has nothing left to propose (an exhausted grid): the study stops.
  virtual Expected<Json> sample(const SearchSpace& space, const std::vector<TrialRecord>& history,
                                int64_t number) = 0;
};

/// Optuna's TPE defaults (lifecycle.md §1.1): 10 random start-up trials, 24 EI candidates,
/// gamma(n) = min(ceil(0.1 n), 25), weights: 1 for n < 25, else a linear ramp 1/n..1 over the
/// older n-25 observations and 1 for the newest 25; prior weight 1, magic clip, no endpoints.
struct TpeOptions {
  int64_t n_startup_trials = 10;
  int64_t n_ei_candidates = 24;
  double prior_weight = 1.0;
  int64_t gamma_cap = 25;
  double gamma_fraction = 0.1;
  /// Joint Parzen estimator over the unconditional parameters (Optuna's multivariate TPE, the
  /// default for one objective on Optuna's master, lifecycle.md §1.1); conditional parameters
  /// are sampled univariately. false: Optuna 3.x/4.x's univariate default.
  bool multivariate = true;
  TpeOptions& startup(int64_t n) {
    n_startup_trials = n;
    return *this;
  }
  TpeOptions& joint(bool on) {
    multivariate = on;
    return *this;
  }
  TpeOptions& ei_candidates(int64_t n) {
    n_ei_candidates = n;
    return *this;
  }
};

/// Uniform independent sampling (log-uniform for log ranges). The draw for trial n depends only on
/// (seed, n), so parallel workers change nothing.
std::unique_ptr<Sampler> make_random_sampler(uint64_t seed);

/// Every combination of the discrete parameters, floats cut into `float_points` values (log-spaced
/// on log ranges), in an order shuffled by the seed; combinations already tried (running ones
/// too) are skipped; NotFound once all are used.
std::unique_ptr<Sampler> make_grid_sampler(uint64_t seed, int64_t float_points = 5);

/// Univariate Tree-structured Parzen Estimator (Bergstra et al. 2011, Optuna's TPESampler).
/// Complete trials rank by value, pruned ones after them by (deeper step first, then last
/// intermediate value); the best gamma(n) form l(x), the rest g(x); the candidate drawn from l
/// with the largest l(x)/g(x) wins. `maximize` says which values are better.
std::unique_ptr<Sampler> make_tpe_sampler(uint64_t seed, bool maximize,
                                          const TpeOptions& options = {});

/// "random" | "grid" | "tpe"; InvalidArgument otherwise.
Expected<std::unique_ptr<Sampler>> make_sampler(const std::string& name, uint64_t seed,
                                                bool maximize);

/// Optuna's default_gamma and default_weights, exposed for tests.
int64_t tpe_gamma(int64_t n, const TpeOptions& options = {});
std::vector<double> tpe_weights(int64_t n);

}  // namespace kiln::tune
