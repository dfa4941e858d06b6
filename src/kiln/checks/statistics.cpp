#include "kiln/checks/statistics.h"

#include <algorithm>
#include <cmath>

#include "kiln/core/random.h"

namespace kiln::checks {
namespace {

double log_binomial_pmf(int64_t k, int64_t n, double p) {
  const double dn = static_cast<double>(n), dk = static_cast<double>(k);
  double log_choose = std::lgamma(dn + 1) - std::lgamma(dk + 1) - std::lgamma(dn - dk + 1);
  double lp = p <= 0 ? (k == 0 ? 0.0 : -INFINITY) : dk * std::log(p);
  double lq = p >= 1 ? (k == n ? 0.0 : -INFINITY) : (dn - dk) * std::log1p(-p);
  return log_choose + lp + lq;
}

/// log(sum(exp(terms))) of log_binomial_pmf over [lo, hi].
double log_pmf_sum(int64_t lo, int64_t hi, int64_t n, double p) {
  double peak = -INFINITY;
  for (int64_t i = lo; i <= hi; ++i) peak = std::max(peak, log_binomial_pmf(i, n, p));
  if (!std::isfinite(peak)) return -INFINITY;
  double sum = 0.0;
  for (int64_t i = lo; i <= hi; ++i) sum += std::exp(log_binomial_pmf(i, n, p) - peak);
  return peak + std::log(sum);
}

}  // namespace

double binomial_cdf(int64_t k, int64_t n, double p) {
  if (k < 0) return 0.0;
  if (k >= n) return 1.0;
  return std::min(1.0, std::exp(log_pmf_sum(0, k, n, p)));
}

double binomial_sf(int64_t k, int64_t n, double p) {
  if (k <= 0) return 1.0;
  if (k > n) return 0.0;
  return std::min(1.0, std::exp(log_pmf_sum(k, n, n, p)));
}

double chi2_sf_1dof(double x) { return x <= 0 ? 1.0 : std::erfc(std::sqrt(x / 2.0)); }

McNemarResult mcnemar(int64_t b, int64_t c, int64_t exact_below) {
  McNemarResult r;
  r.b = b;
  r.c = c;
  const int64_t n = b + c;
  r.exact = n < exact_below;
  if (n == 0) {
    r.statistic = 0;
    r.p_value = 1.0;
    return r;
  }
  if (r.exact) {
    r.statistic = static_cast<double>(std::min(b, c));
    r.p_value = std::min(1.0, 2.0 * binomial_cdf(std::min(b, c), n, 0.5));
  } else {
    const double d = std::abs(static_cast<double>(b - c)) - 1.0;
    r.statistic = d * d / static_cast<double>(n);
    r.p_value = chi2_sf_1dof(r.statistic);
  }
  return r;
}

BootstrapResult paired_bootstrap(
    int64_t rows, const std::function<double(const std::vector<int64_t>&, int)>& metric,
    int64_t resamples, uint64_t seed) {
  BootstrapResult r;
  std::vector<int64_t> all(static_cast<size_t>(rows));
  for (int64_t i = 0; i < rows; ++i) all[static_cast<size_t>(i)] = i;
  r.champion = metric(all, 0);
  r.challenger = metric(all, 1);
  if (rows == 0 || resamples <= 0) return r;
  Rng rng(seed);
  std::vector<double> deltas;
  deltas.reserve(static_cast<size_t>(resamples));
  int64_t not_better = 0, not_worse = 0;
  std::vector<int64_t> sample(static_cast<size_t>(rows));
  for (int64_t s = 0; s < resamples; ++s) {
    for (auto& i : sample) i = static_cast<int64_t>(rng.below(static_cast<uint64_t>(rows)));
    const double d = metric(sample, 1) - metric(sample, 0);
    deltas.push_back(d);
    not_better += d <= 0;
    not_worse += d >= 0;
  }
  r.p_not_better = static_cast<double>(not_better) / static_cast<double>(resamples);
  r.p_not_worse = static_cast<double>(not_worse) / static_cast<double>(resamples);
  std::sort(deltas.begin(), deltas.end());
  auto at = [&](double q) {
    size_t i = static_cast<size_t>(q * static_cast<double>(deltas.size() - 1) + 0.5);
    return deltas[std::min(i, deltas.size() - 1)];
  };
  r.ci_low = at(0.025);
  r.ci_high = at(0.975);
  return r;
}

std::string mcnemar_verdict(const McNemarResult& r, double alpha) {
  if (r.p_value >= alpha || r.b == r.c) return "inconclusive";
  return r.c > r.b ? "better" : "worse";
}

std::string bootstrap_verdict(const BootstrapResult& r, double alpha) {
  if (r.p_not_better < alpha) return "better";
  if (r.p_not_worse < alpha) return "worse";
  return "inconclusive";
}

}  // namespace kiln::checks
