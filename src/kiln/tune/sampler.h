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

/// How a kernel's density is evaluated when l(x)/g(x) is scored. kExact: the truncated normal
/// density (integrates to 1; Optuna >= 3.5, after optuna#5109). kOptuna31: Optuna 3.1-3.4's
/// `_truncnorm.logpdf`, which omits the 1/sigma factor, so each kernel counts with weight
/// w_i * sigma_i in the score (candidates are still drawn with weights w_i). Stepped values are
/// scored by bin mass in both modes.
enum class TpeDensity { kExact, kOptuna31 };

/// The bandwidths of the joint (multivariate) estimator. kScott: sigma = 0.2 n^(-1/(d+4)) range
/// in every dimension for every kernel (Optuna's multivariate=True). kNeighbour: per dimension
/// and kernel, the univariate rule (larger gap to the sorted neighbours, magic clip), so that
/// kernels narrow where observations crowd.
enum class TpeBandwidth { kScott, kNeighbour };

/// Kiln's TPE. Optuna's defaults (lifecycle.md §1.1): 10 random start-up trials, 24 EI
/// candidates, gamma(n) = min(ceil(0.1 n), 25), weights 1 for n < 25, else a linear ramp 1/n..1
/// over the older n-25 observations and 1 for the newest 25; prior weight 1. Where Kiln's
/// default differs, it follows Watanabe 2023 ("Tree-structured Parzen estimator: understanding
/// its algorithm components and their roles for better empirical performance", arXiv
/// 2304.11127): a joint (multivariate) estimator whose bandwidths come from the neighbour rule
/// with the range ends counted as neighbours (its "hyperopt" bandwidth, consider_endpoints), the
/// exact kernel density (as Optuna >= 3.5), and for l(x) a magic clip that shrinks faster with
/// the number of kernels (its b_magic_exponent: 1.5 instead of Optuna's 1), so that l's few
/// kernels can narrow onto an optimum. docs/benchmarks.md has the comparisons with Optuna 3.1
/// that chose these. `TpeOptions().joint(false).bandwidth(kScott).endpoints(false)
/// .kernel_density(kOptuna31).magic_clip(1, 1, 0.01)` is Optuna 3.1's default univariate TPE;
/// `.joint(true)` with kScott is its multivariate=True.
struct TpeOptions {
  int64_t n_startup_trials = 10;
  int64_t n_ei_candidates = 24;
  double prior_weight = 1.0;
  int64_t gamma_cap = 25;
  double gamma_fraction = 0.1;
  /// Joint Parzen estimator over the unconditional parameters (one product kernel per
  /// observation, candidates drawn and scored jointly, as Optuna's multivariate=True);
  /// conditional parameters are sampled univariately. false: Optuna 3.x/4.x's univariate mode.
  bool multivariate = true;
  TpeDensity density = TpeDensity::kExact;
  TpeBandwidth joint_bandwidth = TpeBandwidth::kNeighbour;
  /// The neighbour rule counts the range ends as neighbours of the outermost kernels too
  /// (Optuna's consider_endpoints, false there; true in Watanabe 2023's recommended setting).
  bool consider_endpoints = true;
  /// The magic clip's floor on a kernel's bandwidth, as a fraction of the range:
  /// max(min_bandwidth_factor, 1 / (n + 2)^exponent) for an estimator of n observations and the
  /// prior kernel (Watanabe 2023's b_magic_exponent; 1 with floor 0.01 is Optuna's
  /// range / min(100, n + 2)). Kiln's l(x) uses 1.5, so that its few kernels (gamma(n) of the n
  /// trials) can narrow onto an optimum; g(x) keeps Optuna's 1.
  double clip_exponent_below = 1.5;
  double clip_exponent_above = 1.0;
  double min_bandwidth_factor = 0.01;
  TpeOptions& magic_clip(double below, double above, double min_factor) {
    clip_exponent_below = below;
    clip_exponent_above = above;
    min_bandwidth_factor = min_factor;
    return *this;
  }
  TpeOptions& endpoints(bool on) {
    consider_endpoints = on;
    return *this;
  }
  TpeOptions& kernel_density(TpeDensity d) {
    density = d;
    return *this;
  }
  TpeOptions& bandwidth(TpeBandwidth b) {
    joint_bandwidth = b;
    return *this;
  }
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

/// Tree-structured Parzen Estimator (Bergstra et al. 2011, Optuna's TPESampler; TpeOptions for
/// the variant). Complete trials rank by value, pruned ones after them by (deeper step first,
/// then last intermediate value); the best gamma(n) form l(x), the rest g(x); of the candidates
/// drawn from l (jointly over the unconditional parameters by default, conditional ones one by
/// one) the one with the largest l(x)/g(x) wins. `maximize` says which values are better.
std::unique_ptr<Sampler> make_tpe_sampler(uint64_t seed, bool maximize,
                                          const TpeOptions& options = {});

/// "random" | "grid" | "tpe"; InvalidArgument otherwise.
Expected<std::unique_ptr<Sampler>> make_sampler(const std::string& name, uint64_t seed,
                                                bool maximize);

/// log l(x) of the univariate Parzen estimator TPE builds for numeric parameter `p` from
/// `observations` (values as the user sees them, oldest first, Optuna's weights, the prior
/// kernel, l's magic clip), at each of `points`; exposed so tests can compare it with Optuna's
/// own numbers.
std::vector<double> tpe_log_density(const ParamSpec& p, const std::vector<double>& observations,
                                    const std::vector<double>& points,
                                    const TpeOptions& options = {});

/// Optuna's default_gamma and default_weights, exposed for tests.
int64_t tpe_gamma(int64_t n, const TpeOptions& options = {});
std::vector<double> tpe_weights(int64_t n);

}  // namespace kiln::tune
