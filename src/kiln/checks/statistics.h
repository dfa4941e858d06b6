#pragma once
// Significance tests for comparing models on the same labelled rows (champion/challenger, a
// model against its trivial baseline). Torch-free and pure.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace kiln::checks {

/// P[X <= k] for X ~ Binomial(n, p), summed in log space (exact to double rounding for any n).
double binomial_cdf(int64_t k, int64_t n, double p);
/// P[X >= k] for X ~ Binomial(n, p).
double binomial_sf(int64_t k, int64_t n, double p);
/// P[χ²₁ >= x], the upper tail of the chi-square distribution with one degree of freedom.
double chi2_sf_1dof(double x);

/// McNemar's test on the discordant pairs of two classifiers scored on the same rows:
/// `b` = rows model A got right and model B wrong, `c` = the reverse.
struct McNemarResult {
  int64_t b = 0;
  int64_t c = 0;
  bool exact = false;      ///< exact binomial (b + c < 25) or corrected chi-square
  double statistic = 0.0;  ///< exact: min(b, c) (as statsmodels); else (|b − c| − 1)² / (b + c)
  double p_value = 1.0;    ///< two-sided
};

/// Exact two-sided binomial test p = min(1, 2·BinomCDF(min(b, c); b + c, ½)) when b + c <
/// `exact_below` (25, mlxtend's advice), otherwise the chi-square test with Edwards' continuity
/// correction. b = c = 0 gives p = 1.
McNemarResult mcnemar(int64_t b, int64_t c, int64_t exact_below = 25);

/// A paired bootstrap (Koehn 2004) of `metric(rows, model)` for model 0 (champion) and 1
/// (challenger) on resamples of the same row indices.
struct BootstrapResult {
  double champion = 0.0;      ///< metric on all rows
  double challenger = 0.0;    ///< metric on all rows
  double p_not_better = 1.0;  ///< share of resamples where challenger <= champion
  double p_not_worse = 1.0;   ///< share of resamples where challenger >= champion
  double ci_low = 0.0;        ///< 2.5th percentile of challenger − champion
  double ci_high = 0.0;       ///< 97.5th percentile
};

/// `rows` resamples drawn with kiln::Rng(seed); metric must be "greater is better" (negate an
/// error). Calls metric 2·(resamples + 1) times from the caller's thread.
BootstrapResult paired_bootstrap(
    int64_t rows, const std::function<double(const std::vector<int64_t>&, int)>& metric,
    int64_t resamples = 1000, uint64_t seed = 0);

/// "better", "worse" or "inconclusive" for a challenger at significance `alpha`.
std::string mcnemar_verdict(const McNemarResult& r, double alpha);
std::string bootstrap_verdict(const BootstrapResult& r, double alpha);

}  // namespace kiln::checks
