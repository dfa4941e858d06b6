#include "kiln/tune/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>

#include "kiln/core/random.h"

namespace kiln::tune {

const TrialRecord* best_trial(const std::vector<TrialRecord>& trials, bool maximize) {
  const TrialRecord* best = nullptr;
  for (const auto& t : trials) {
    if (t.state != TrialState::kComplete || !std::isfinite(t.value)) continue;
    if (!best || (maximize ? t.value > best->value : t.value < best->value)) best = &t;
  }
  return best;
}

const char* trial_state_name(TrialState s) {
  switch (s) {
    case TrialState::kRunning:
      return "running";
    case TrialState::kComplete:
      return "complete";
    case TrialState::kPruned:
      return "pruned";
    case TrialState::kFailed:
      return "failed";
  }
  return "failed";
}

TrialState trial_state_from_name(const std::string& name) {
  if (name == "running") return TrialState::kRunning;
  if (name == "complete") return TrialState::kComplete;
  if (name == "pruned") return TrialState::kPruned;
  return TrialState::kFailed;
}

namespace {

constexpr double kPi = 3.14159265358979323846;

// A standard normal draw (Box–Muller) from a Rng stream.
double normal(Rng& rng) {
  double u1 = rng.uniform();
  while (u1 <= 1e-300) u1 = rng.uniform();
  const double u2 = rng.uniform();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * kPi * u2);
}

double normal_cdf(double z) { return 0.5 * std::erfc(-z / std::sqrt(2.0)); }

// The internal (search) coordinate of a numeric parameter: log for log ranges; ints span
// [low - step/2, high + step/2] so that each value owns an equal interval.
struct Range {
  double lo, hi;
};
Range internal_range(const ParamSpec& p) {
  double lo = p.low, hi = p.high;
  if (p.type == ParamSpec::Type::kInt) {
    lo -= 0.5 * p.step;
    hi += 0.5 * p.step;
  }
  if (p.log) return {std::log(std::max(lo, p.low * 0.5 + 1e-300)), std::log(hi)};
  return {lo, hi};
}
double to_internal(const ParamSpec& p, double v) { return p.log ? std::log(v) : v; }
Json from_internal(const ParamSpec& p, double x) {
  double v = p.log ? std::exp(x) : x;
  if (p.type == ParamSpec::Type::kInt) {
    double k = std::round((v - p.low) / p.step);
    k = std::clamp(k, 0.0, static_cast<double>(p.cardinality() - 1));
    return static_cast<int64_t>(std::llround(p.low + k * p.step));
  }
  return std::clamp(v, p.low, p.high);
}

// The bin width of a stepped parameter in the internal coordinate (0: continuous).
double bin_width(const ParamSpec& p) {
  return p.type == ParamSpec::Type::kInt && !p.log ? p.step : 0.0;
}
// A candidate snapped to the value it stands for (ints), in the internal coordinate.
double snap(const ParamSpec& p, double x) {
  if (bin_width(p) <= 0) return x;
  return static_cast<double>(from_internal(p, x).get<int64_t>());
}

Json sample_uniform(const ParamSpec& p, Rng& rng) {
  if (p.type == ParamSpec::Type::kCategorical)
    return p.choices[static_cast<size_t>(rng.below(p.choices.size()))];
  if (p.type == ParamSpec::Type::kInt && !p.log)
    return p.value_at(static_cast<int64_t>(rng.below(static_cast<uint64_t>(p.cardinality()))));
  const Range r = internal_range(p);
  return from_internal(p, r.lo + (r.hi - r.lo) * rng.uniform());
}

class RandomSampler : public Sampler {
 public:
  explicit RandomSampler(uint64_t seed) : seed_(seed) {}
  Expected<Json> sample(const SearchSpace& space, const std::vector<TrialRecord>&,
                        int64_t number) override {
    Rng rng(mix_seed(seed_, static_cast<uint64_t>(number), 0x52414e44));
    Json out = Json::object();
    for (const auto& p : space.params)
      if (SearchSpace::active(p, out)) out[p.name] = sample_uniform(p, rng);
    return out;
  }

 private:
  uint64_t seed_;
};

class GridSampler : public Sampler {
 public:
  GridSampler(uint64_t seed, int64_t float_points) : seed_(seed), float_points_(float_points) {}
  Expected<Json> sample(const SearchSpace& space, const std::vector<TrialRecord>& history,
                        int64_t) override {
    if (grid_.empty()) build(space);
    std::set<std::string> used;
    for (const auto& t : history)
      if (!t.orphaned) used.insert(canonical_json(t.params));
    for (const auto& g : grid_)
      if (!used.count(canonical_json(g))) return g;
    return Status::NotFound("grid exhausted: all " + std::to_string(grid_.size()) +
                            " combinations were tried");
  }

 private:
  void build(const SearchSpace& space) {
    std::vector<std::vector<Json>> axes;
    for (const auto& p : space.params) {
      std::vector<Json> values;
      if (p.type == ParamSpec::Type::kFloat) {
        const Range r = internal_range(p);
        for (int64_t i = 0; i < float_points_; ++i) {
          const double t = float_points_ == 1 ? 0.5 : static_cast<double>(i) / (float_points_ - 1);
          values.push_back(from_internal(p, r.lo + t * (r.hi - r.lo)));
        }
      } else {
        for (int64_t i = 0; i < p.cardinality(); ++i) values.push_back(p.value_at(i));
      }
      axes.push_back(std::move(values));
    }
    std::vector<size_t> idx(axes.size(), 0);
    std::set<std::string> seen;
    while (true) {
      Json point = Json::object();
      for (size_t k = 0; k < axes.size(); ++k)
        if (SearchSpace::active(space.params[k], point))
          point[space.params[k].name] = axes[k][idx[k]];
      if (seen.insert(canonical_json(point)).second) grid_.push_back(point);
      size_t k = axes.size();
      bool carry = true;
      while (carry && k > 0) {
        --k;
        if (++idx[k] < axes[k].size())
          carry = false;
        else
          idx[k] = 0;
      }
      if (carry) break;
    }
    deterministic_shuffle(grid_, seed_);
  }
  uint64_t seed_;
  int64_t float_points_;
  std::vector<Json> grid_;
};

// A mixture of truncated normals on [lo, hi] (numeric), or of categorical kernels.
struct Parzen {
  std::vector<double> weights, mus, sigmas;  // numeric
  std::vector<std::vector<double>> cat;      // categorical: one distribution per kernel
  double lo = 0, hi = 1;
  // TpeDensity::kOptuna31: a kernel's density lacks the 1/sigma factor (Optuna <= 3.4).
  bool unscaled = false;

  size_t kernels() const { return weights.size(); }
  double log_component(size_t i, double x) const {
    const double z = (x - mus[i]) / sigmas[i];
    const double mass =
        normal_cdf((hi - mus[i]) / sigmas[i]) - normal_cdf((lo - mus[i]) / sigmas[i]);
    return -0.5 * z * z -
           std::log((unscaled ? 1.0 : sigmas[i]) * std::sqrt(2 * kPi) * std::max(mass, 1e-300));
  }
  // Optuna's rule for stepped (int) values: the kernel's mass over the value's bin
  // [x - q/2, x + q/2] (clipped to the range) instead of its density.
  double log_component_bin(size_t i, double x, double q) const {
    const double a = std::max(x - 0.5 * q, lo), b = std::min(x + 0.5 * q, hi);
    const double bin = normal_cdf((b - mus[i]) / sigmas[i]) - normal_cdf((a - mus[i]) / sigmas[i]);
    const double mass =
        normal_cdf((hi - mus[i]) / sigmas[i]) - normal_cdf((lo - mus[i]) / sigmas[i]);
    return std::log(std::max(bin, 1e-300)) - std::log(std::max(mass, 1e-300));
  }
  double log_bin(double x, double q) const {
    double p = 0;
    for (size_t i = 0; i < mus.size(); ++i) p += weights[i] * std::exp(log_component_bin(i, x, q));
    return std::log(std::max(p, 1e-300));
  }
  double log_category(size_t i, size_t c) const { return std::log(std::max(cat[i][c], 1e-300)); }
  double log_pdf(double x) const {
    double p = 0;
    for (size_t i = 0; i < mus.size(); ++i) p += weights[i] * std::exp(log_component(i, x));
    return std::log(std::max(p, 1e-300));
  }
  double log_pmf(size_t c) const {
    double p = 0;
    for (size_t i = 0; i < cat.size(); ++i) p += weights[i] * cat[i][c];
    return std::log(std::max(p, 1e-300));
  }
  size_t pick(Rng& rng) const {
    double u = rng.uniform(), acc = 0;
    for (size_t i = 0; i < weights.size(); ++i) {
      acc += weights[i];
      if (u < acc) return i;
    }
    return weights.size() - 1;
  }
  double draw_component(size_t i, Rng& rng) const {
    for (int tries = 0; tries < 64; ++tries) {
      const double x = mus[i] + sigmas[i] * normal(rng);
      if (x >= lo && x <= hi) return x;
    }
    return std::clamp(mus[i], lo, hi);
  }
  size_t draw_category_component(size_t i, Rng& rng) const {
    const std::vector<double>& d = cat[i];
    double u = rng.uniform(), acc = 0;
    for (size_t c = 0; c < d.size(); ++c) {
      acc += d[c];
      if (u < acc) return c;
    }
    return d.size() - 1;
  }
  double draw(Rng& rng) const { return draw_component(pick(rng), rng); }
  size_t draw_category(Rng& rng) const { return draw_category_component(pick(rng), rng); }
};

// Observations (internal coordinate or category index) with their weights, oldest first.
// sigma0 > 0: multivariate bandwidth (sigma0 · range for every kernel), else Optuna's univariate
// neighbour-gap rule. The magic clip's floor shrinks as (n + 1)^-clip_exponent over the n
// kernels (the prior's included).
Parzen numeric_parzen(const std::vector<double>& obs, const std::vector<double>& w, Range r,
                      const TpeOptions& o, double clip_exponent, double sigma0 = 0) {
  Parzen pz;
  pz.unscaled = o.density == TpeDensity::kOptuna31;
  const double prior_weight = o.prior_weight;
  const bool endpoints = o.consider_endpoints;
  pz.lo = r.lo;
  pz.hi = r.hi;
  std::vector<double> mus = obs, weights = w;
  const double prior_mu = 0.5 * (r.lo + r.hi), prior_sigma = r.hi - r.lo;
  mus.push_back(prior_mu);
  weights.push_back(prior_weight);
  const size_t n = mus.size();
  std::vector<double> sigmas(n, sigma0 * (r.hi - r.lo));
  if (sigma0 <= 0) {
    // The larger gap to the sorted neighbours (endpoints lo/hi), no endpoints for the extremes.
    std::vector<size_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return mus[a] < mus[b]; });
    std::vector<double> sorted(n + 2);
    sorted[0] = r.lo;
    for (size_t i = 0; i < n; ++i) sorted[i + 1] = mus[order[i]];
    sorted[n + 1] = r.hi;
    for (size_t i = 0; i < n; ++i) {
      double s = std::max(sorted[i + 1] - sorted[i], sorted[i + 2] - sorted[i + 1]);
      if (!endpoints && n >= 2 && i == 0) s = sorted[2] - sorted[1];
      if (!endpoints && n >= 2 && i == n - 1) s = sorted[n] - sorted[n - 1];
      sigmas[order[i]] = s;
    }
  }
  const double max_sigma = r.hi - r.lo;
  // The magic clip (n counts the prior kernel): with exponent 1 and factor 0.01 this is
  // Optuna's range / min(100, n + 1).
  const double min_sigma =
      (r.hi - r.lo) *
      std::max(o.min_bandwidth_factor, std::pow(1.0 + static_cast<double>(n), -clip_exponent));
  for (auto& s : sigmas) s = std::clamp(s, min_sigma, max_sigma);
  sigmas[n - 1] = prior_sigma;
  const double total = std::accumulate(weights.begin(), weights.end(), 0.0);
  for (auto& x : weights) x /= total;
  pz.mus = std::move(mus);
  pz.sigmas = std::move(sigmas);
  pz.weights = std::move(weights);
  return pz;
}

// Optuna's rule: every kernel starts from prior_weight / (n + 1) per category, an observation's
// kernel adds 1 at its category, rows are normalised; the prior kernel stays uniform.
Parzen categorical_parzen(const std::vector<double>& obs, const std::vector<double>& w, size_t k,
                          double prior_weight) {
  Parzen pz;
  const double fill = prior_weight / static_cast<double>(obs.size() + 1);
  for (double o : obs) {
    std::vector<double> d(k, fill);
    d[static_cast<size_t>(o)] += 1.0;
    const double s = 1.0 + fill * static_cast<double>(k);
    for (auto& x : d) x /= s;
    pz.cat.push_back(std::move(d));
  }
  pz.cat.emplace_back(k, 1.0 / static_cast<double>(k));
  pz.weights = w;
  pz.weights.push_back(prior_weight);
  const double total = std::accumulate(pz.weights.begin(), pz.weights.end(), 0.0);
  for (auto& x : pz.weights) x /= total;
  return pz;
}

class TpeSampler : public Sampler {
 public:
  TpeSampler(uint64_t seed, bool maximize, TpeOptions o)
      : seed_(seed), maximize_(maximize), o_(o), random_(seed) {}

  Expected<Json> sample(const SearchSpace& space, const std::vector<TrialRecord>& history,
                        int64_t number) override {
    // Finished observations: complete first (best first), then pruned (deeper, then better).
    std::vector<const TrialRecord*> obs;
    for (const auto& t : history)
      if ((t.state == TrialState::kComplete && std::isfinite(t.value)) ||
          (t.state == TrialState::kPruned && !t.intermediate.empty()))
        obs.push_back(&t);
    const int64_t n = static_cast<int64_t>(obs.size());
    if (n < o_.n_startup_trials) return random_.sample(space, history, number);
    auto score = [this](double v) { return maximize_ ? -v : v; };  // smaller is better
    std::stable_sort(obs.begin(), obs.end(), [&](const TrialRecord* a, const TrialRecord* b) {
      const bool ca = a->state == TrialState::kComplete, cb = b->state == TrialState::kComplete;
      if (ca != cb) return ca;
      if (ca) return score(a->value) < score(b->value);
      const auto& la = *a->intermediate.rbegin();
      const auto& lb = *b->intermediate.rbegin();
      if (la.first != lb.first) return la.first > lb.first;
      return score(la.second) < score(lb.second);
    });
    const int64_t n_below = tpe_gamma(n, o_);
    std::vector<const TrialRecord*> below(obs.begin(), obs.begin() + n_below);
    std::vector<const TrialRecord*> above(obs.begin() + n_below, obs.end());
    auto by_number = [](const TrialRecord* a, const TrialRecord* b) {
      return a->number < b->number;
    };
    std::sort(below.begin(), below.end(), by_number);
    std::sort(above.begin(), above.end(), by_number);

    Rng rng(mix_seed(seed_, static_cast<uint64_t>(number), 0x545045));
    Json out = Json::object();
    if (o_.multivariate) sample_joint(space, below, above, rng, &out);
    for (const auto& p : space.params) {
      if (out.contains(p.name) || !SearchSpace::active(p, out)) continue;
      auto collect = [&](const std::vector<const TrialRecord*>& group,
                         std::vector<double>* values) {
        for (const TrialRecord* t : group) {
          auto it = t->params.find(p.name);
          if (it == t->params.end()) continue;
          if (p.type == ParamSpec::Type::kCategorical) {
            for (size_t c = 0; c < p.choices.size(); ++c)
              if (p.choices[c] == *it) values->push_back(static_cast<double>(c));
          } else if (it->is_number()) {
            values->push_back(to_internal(p, it->get<double>()));
          }
        }
      };
      std::vector<double> ob, oa;
      collect(below, &ob);
      collect(above, &oa);
      const std::vector<double> wb = tpe_weights(static_cast<int64_t>(ob.size()));
      const std::vector<double> wa = tpe_weights(static_cast<int64_t>(oa.size()));
      if (p.type == ParamSpec::Type::kCategorical) {
        const size_t k = p.choices.size();
        Parzen l = categorical_parzen(ob, wb, k, o_.prior_weight);
        Parzen g = categorical_parzen(oa, wa, k, o_.prior_weight);
        size_t best = 0;
        double best_score = -INFINITY;
        for (int64_t i = 0; i < o_.n_ei_candidates; ++i) {
          const size_t c = l.draw_category(rng);
          const double s = l.log_pmf(c) - g.log_pmf(c);
          if (s > best_score) best_score = s, best = c;
        }
        out[p.name] = p.choices[best];
      } else {
        const Range r = internal_range(p);
        Parzen l = numeric_parzen(ob, wb, r, o_, o_.clip_exponent_below);
        Parzen g = numeric_parzen(oa, wa, r, o_, o_.clip_exponent_above);
        double best = 0.5 * (r.lo + r.hi), best_score = -INFINITY;
        const double q = bin_width(p);
        for (int64_t i = 0; i < o_.n_ei_candidates; ++i) {
          const double x = snap(p, l.draw(rng));
          const double s = q > 0 ? l.log_bin(x, q) - g.log_bin(x, q) : l.log_pdf(x) - g.log_pdf(x);
          if (s > best_score) best_score = s, best = x;
        }
        out[p.name] = from_internal(p, best);
      }
    }
    return out;
  }

 private:
  // Optuna's multivariate TPE over the unconditional parameters: one product kernel per
  // observation (bandwidth 0.2 · n^(-1/(d+4)) · range, magic clip), candidates drawn jointly.
  void sample_joint(const SearchSpace& space, const std::vector<const TrialRecord*>& below,
                    const std::vector<const TrialRecord*>& above, Rng& rng,
                    Json* out) const {
    std::vector<const ParamSpec*> rel;
    for (const auto& p : space.params)
      if (p.when.empty()) rel.push_back(&p);
    if (rel.empty()) return;
    auto encode = [](const ParamSpec& p, const Json& v, double* x) {
      if (p.type == ParamSpec::Type::kCategorical) {
        for (size_t c = 0; c < p.choices.size(); ++c)
          if (p.choices[c] == v) return *x = static_cast<double>(c), true;
        return false;
      }
      if (!v.is_number()) return false;
      *x = to_internal(p, v.get<double>());
      return true;
    };
    auto build = [&](const std::vector<const TrialRecord*>& group, double clip_exponent) {
      std::vector<std::vector<double>> cols(rel.size());
      for (const TrialRecord* t : group) {
        std::vector<double> row(rel.size());
        bool ok = true;
        for (size_t j = 0; j < rel.size() && ok; ++j) {
          auto it = t->params.find(rel[j]->name);
          ok = it != t->params.end() && encode(*rel[j], *it, &row[j]);
        }
        if (!ok) continue;
        for (size_t j = 0; j < rel.size(); ++j) cols[j].push_back(row[j]);
      }
      const size_t n = cols[0].size();
      const std::vector<double> w = tpe_weights(static_cast<int64_t>(n));
      const double sigma0 = o_.joint_bandwidth == TpeBandwidth::kNeighbour
                                ? 0.0
                                : 0.2 * std::pow(static_cast<double>(std::max<size_t>(n, 1)),
                                                 -1.0 / (static_cast<double>(rel.size()) + 4.0));
      std::vector<Parzen> est;
      for (size_t j = 0; j < rel.size(); ++j) {
        if (rel[j]->type == ParamSpec::Type::kCategorical)
          est.push_back(categorical_parzen(cols[j], w, rel[j]->choices.size(), o_.prior_weight));
        else
          est.push_back(
              numeric_parzen(cols[j], w, internal_range(*rel[j]), o_, clip_exponent, sigma0));
      }
      return est;
    };
    const std::vector<Parzen> l = build(below, o_.clip_exponent_below),
                              g = build(above, o_.clip_exponent_above);
    auto log_mix = [&](const std::vector<Parzen>& e, const std::vector<double>& x) {
      std::vector<double> terms(e[0].kernels());
      double m = -INFINITY;
      for (size_t k = 0; k < terms.size(); ++k) {
        double t = std::log(std::max(e[0].weights[k], 1e-300));
        for (size_t j = 0; j < rel.size(); ++j)
          t += rel[j]->type == ParamSpec::Type::kCategorical
                   ? e[j].log_category(k, static_cast<size_t>(x[j]))
               : bin_width(*rel[j]) > 0 ? e[j].log_component_bin(k, x[j], bin_width(*rel[j]))
                                        : e[j].log_component(k, x[j]);
        terms[k] = t;
        m = std::max(m, t);
      }
      double sum = 0;
      for (double t : terms) sum += std::exp(t - m);
      return m + std::log(sum);
    };
    std::vector<double> best;
    double best_score = -INFINITY;
    for (int64_t i = 0; i < o_.n_ei_candidates; ++i) {
      const size_t k = l[0].pick(rng);
      std::vector<double> x(rel.size());
      for (size_t j = 0; j < rel.size(); ++j)
        x[j] = rel[j]->type == ParamSpec::Type::kCategorical
                   ? static_cast<double>(l[j].draw_category_component(k, rng))
                   : snap(*rel[j], l[j].draw_component(k, rng));
      const double score = log_mix(l, x) - log_mix(g, x);
      if (best.empty() || score > best_score) best_score = score, best = x;
    }
    for (size_t j = 0; j < rel.size(); ++j)
      (*out)[rel[j]->name] = rel[j]->type == ParamSpec::Type::kCategorical
                                 ? rel[j]->choices[static_cast<size_t>(best[j])]
                                 : from_internal(*rel[j], best[j]);
  }

  uint64_t seed_;
  bool maximize_;
  TpeOptions o_;
  RandomSampler random_;
};

}  // namespace

int64_t tpe_gamma(int64_t n, const TpeOptions& o) {
  return std::min(static_cast<int64_t>(std::ceil(o.gamma_fraction * static_cast<double>(n))),
                  o.gamma_cap);
}

std::vector<double> tpe_weights(int64_t n) {
  if (n <= 0) return {};
  if (n < 25) return std::vector<double>(static_cast<size_t>(n), 1.0);
  std::vector<double> w;
  const int64_t ramp = n - 25;
  for (int64_t i = 0; i < ramp; ++i)
    w.push_back(ramp == 1 ? 1.0 / n
                          : 1.0 / n + (1.0 - 1.0 / n) * static_cast<double>(i) / (ramp - 1));
  for (int64_t i = 0; i < 25; ++i) w.push_back(1.0);
  return w;
}

std::vector<double> tpe_log_density(const ParamSpec& p, const std::vector<double>& observations,
                                    const std::vector<double>& points, const TpeOptions& o) {
  std::vector<double> obs;
  for (double v : observations) obs.push_back(to_internal(p, v));
  const Parzen pz = numeric_parzen(obs, tpe_weights(static_cast<int64_t>(obs.size())),
                                   internal_range(p), o, o.clip_exponent_below);
  std::vector<double> out;
  const double q = bin_width(p);
  for (double v : points) {
    const double x = to_internal(p, v);
    out.push_back(q > 0 ? pz.log_bin(x, q) : pz.log_pdf(x));
  }
  return out;
}

std::unique_ptr<Sampler> make_random_sampler(uint64_t seed) {
  return std::make_unique<RandomSampler>(seed);
}
std::unique_ptr<Sampler> make_grid_sampler(uint64_t seed, int64_t float_points) {
  return std::make_unique<GridSampler>(seed, float_points);
}
std::unique_ptr<Sampler> make_tpe_sampler(uint64_t seed, bool maximize, const TpeOptions& o) {
  return std::make_unique<TpeSampler>(seed, maximize, o);
}

Expected<std::unique_ptr<Sampler>> make_sampler(const std::string& name, uint64_t seed,
                                                bool maximize) {
  if (name == "random") return make_random_sampler(seed);
  if (name == "grid") return make_grid_sampler(seed);
  if (name == "tpe") return make_tpe_sampler(seed, maximize);
  return Status::InvalidArgument("--sampler " + name + ": expected random, grid or tpe");
}

}  // namespace kiln::tune
