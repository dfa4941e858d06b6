#include "kiln/tune/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "tune_test_util.h"

namespace kiln::tune {
namespace {

using testing::best_min;
using testing::branin;
using testing::optimise;

SearchSpace mixed_space() {
  auto s = parse_space(Json::parse(R"({"params": {
      "lr": {"type": "float", "low": 1e-5, "high": 1.0, "log": true},
      "width": {"type": "int", "low": 16, "high": 128, "step": 16},
      "opt": {"type": "categorical", "choices": ["sgd", "adam"]},
      "momentum": {"type": "float", "low": 0.5, "high": 0.99, "when": {"opt": "sgd"}}}})"));
  EXPECT_TRUE(s.ok()) << s.status();
  return *s;
}

SearchSpace branin_space() {
  auto s = parse_space(Json::parse(R"({"params": {
      "x1": {"type": "float", "low": -5, "high": 10},
      "x2": {"type": "float", "low": 0, "high": 15}}})"));
  EXPECT_TRUE(s.ok()) << s.status();
  return *s;
}

double branin_of(const Json& p) { return branin(p["x1"].get<double>(), p["x2"].get<double>()); }

void expect_in_space(const SearchSpace& s, const Json& p) {
  for (const auto& spec : s.params) {
    const bool active = SearchSpace::active(spec, p);
    ASSERT_EQ(p.contains(spec.name), active) << p.dump();
    if (!active) continue;
    const Json& v = p[spec.name];
    if (spec.type == ParamSpec::Type::kCategorical) {
      EXPECT_NE(std::find(spec.choices.begin(), spec.choices.end(), v), spec.choices.end());
    } else {
      EXPECT_GE(v.get<double>(), spec.low);
      EXPECT_LE(v.get<double>(), spec.high);
      if (spec.type == ParamSpec::Type::kInt) {
        ASSERT_TRUE(v.is_number_integer());
        EXPECT_EQ((v.get<int64_t>() - 16) % 16, 0);
      }
    }
  }
}

TEST(SamplerTest, RandomIsDeterministicWithASeedAndStaysInTheSpace) {
  const SearchSpace s = mixed_space();
  auto a = make_random_sampler(7), b = make_random_sampler(7), c = make_random_sampler(8);
  std::vector<TrialRecord> none;
  bool differs = false;
  std::set<std::string> opts;
  double min_lr = 1, max_lr = 0;
  for (int i = 0; i < 200; ++i) {
    Json pa = *a->sample(s, none, i), pb = *b->sample(s, none, i), pc = *c->sample(s, none, i);
    EXPECT_EQ(pa, pb);
    differs = differs || pa != pc;
    expect_in_space(s, pa);
    opts.insert(pa["opt"].get<std::string>());
    min_lr = std::min(min_lr, pa["lr"].get<double>());
    max_lr = std::max(max_lr, pa["lr"].get<double>());
  }
  EXPECT_TRUE(differs);
  EXPECT_EQ(opts.size(), 2u);
  // Log-uniform: 200 draws over five decades reach both ends.
  EXPECT_LT(min_lr, 1e-4);
  EXPECT_GT(max_lr, 1e-1);
}

TEST(SamplerTest, GridCoversEveryCombinationOnceThenStops) {
  auto s = parse_space(Json::parse(R"({"params": {
      "a": {"type": "int", "low": 1, "high": 3},
      "b": {"type": "categorical", "choices": ["x", "y"]},
      "c": {"type": "float", "low": 0, "high": 1, "when": {"b": "y"}}}})"));
  ASSERT_TRUE(s.ok()) << s.status();
  auto g = make_grid_sampler(3, 5);
  auto trials = optimise(
      *g, *s, [](const Json&) { return 0.0; }, 100);
  // 3 values of a × (b=x, or b=y × 5 values of c) = 3 × 6 = 18 distinct points.
  EXPECT_EQ(trials.size(), 18u);
  std::set<std::string> seen;
  for (const auto& t : trials) seen.insert(t.params.dump());
  EXPECT_EQ(seen.size(), 18u);
  auto again = optimise(
      *make_grid_sampler(3, 5), *s, [](const Json&) { return 0.0; }, 100);
  for (size_t i = 0; i < trials.size(); ++i) EXPECT_EQ(trials[i].params, again[i].params);
  EXPECT_EQ(g->sample(*s, trials, 18).status().code(), StatusCode::kNotFound);
}

TEST(SamplerTest, TpeDefaultsFollowOptuna) {
  EXPECT_EQ(tpe_gamma(1), 1);
  EXPECT_EQ(tpe_gamma(10), 1);
  EXPECT_EQ(tpe_gamma(11), 2);
  EXPECT_EQ(tpe_gamma(100), 10);
  EXPECT_EQ(tpe_gamma(1000), 25);
  EXPECT_EQ(tpe_weights(10), std::vector<double>(10, 1.0));
  auto w = tpe_weights(35);
  ASSERT_EQ(w.size(), 35u);
  EXPECT_NEAR(w[0], 1.0 / 35, 1e-12);
  EXPECT_NEAR(w[9], 1.0, 1e-12);
  EXPECT_EQ(w[34], 1.0);
}

// Reference numbers from Optuna 3.1's own _ParzenEstimator (Debian python3-optuna: prior weight 1,
// magic clip, default_weights, univariate): its log_pdf for kOptuna31, and the exact truncated
// normal mixture over the same mus/sigmas/weights for kExact; consider_endpoints off and on.
TEST(SamplerTest, TpeDensityMatchesOptunasParzenEstimator) {
  auto spec = [](const char* json) {
    auto s = parse_space(Json::parse(std::string(R"({"params": {"x": )") + json + "}}"));
    EXPECT_TRUE(s.ok()) << s.status();
    return s->params.at(0);
  };
  const ParamSpec lin = spec(R"({"type": "float", "low": -5, "high": 10})");
  const ParamSpec lg = spec(R"({"type": "float", "low": 1e-4, "high": 1.0, "log": true})");
  const std::vector<double> lin_obs = {3.0, -4.5, 0.2, 9.0, 1.0, 1.3};
  const std::vector<double> lin_at = {-5.0, -1.0, 0.5, 1.1, 7.5, 10.0};
  const std::vector<double> log_obs = {1e-3, 2e-3, 0.5, 0.05}, log_at = {1e-4, 1e-3, 0.01, 0.9};
  struct Case {
    const ParamSpec* p;
    const std::vector<double>*obs, *at;
    bool endpoints;
    TpeDensity density;
    std::vector<double> want;
  } cases[] = {
      {&lin,
       &lin_obs,
       &lin_at,
       false,
       TpeDensity::kOptuna31,
       {-1.17264061149, -0.838376822814, -0.722646433705, -0.710166886022, -1.14165710948,
        -1.28163018363}},
      {&lin,
       &lin_obs,
       &lin_at,
       false,
       TpeDensity::kExact,
       {-3.09747014733, -2.45392529954, -2.19572783884, -2.16973410041, -3.20916515741,
        -3.39547510528}},
      {&lg,
       &log_obs,
       &log_at,
       false,
       TpeDensity::kOptuna31,
       {-1.47547230782, -0.949706005148, -0.951879315976, -1.04911978022}},
      {&lg,
       &log_obs,
       &log_at,
       false,
       TpeDensity::kExact,
       {-3.03304091011, -2.00368835878, -2.16153901221, -2.38717990775}},
      {&lg,
       &log_obs,
       &log_at,
       true,
       TpeDensity::kOptuna31,
       {-1.35276257604, -0.925480925144, -0.877384306425, -1.04568652059}},
      {&lg,
       &log_obs,
       &log_at,
       true,
       TpeDensity::kExact,
       {-2.89847951239, -2.11701466518, -2.10303137628, -2.38151388867}},
  };
  for (const Case& c : cases) {
    const std::vector<double> got = tpe_log_density(
        *c.p, *c.obs, *c.at,
        TpeOptions().endpoints(c.endpoints).kernel_density(c.density).magic_clip(1.0, 1.0, 0.01));
    ASSERT_EQ(got.size(), c.want.size());
    for (size_t i = 0; i < got.size(); ++i)
      EXPECT_NEAR(got[i], c.want[i], 1e-7)
          << c.p->name << " endpoints " << c.endpoints << " #" << i;
  }
}

// Five observations at 2 on [0, 10] plus the prior kernel: the neighbour rule gives the three
// inner copies a bandwidth of 0, so the magic clip sets it. With n = 6 kernels the floor is
// 10 * max(f, 7^-e): Optuna's (e = 1, f = 0.01) 1.4286, Kiln's default (e = 1.5) 0.5399, and a
// fixed floor (e = infinity, f = 0.05) 0.5. The outer copies keep 2 (gap to 0) and 3 (gap to
// the prior's centre 5); the prior kernel is N(5, 10). All six weigh 1/6.
TEST(SamplerTest, TpeMagicClipSetsTheFloorOfCrowdedKernels) {
  auto s =
      parse_space(Json::parse(R"({"params": {"x": {"type": "float", "low": 0, "high": 10}}})"));
  ASSERT_TRUE(s.ok()) << s.status();
  const ParamSpec& p = s->params.at(0);
  auto truncated_normal = [](double x, double mu, double sigma) {
    const double phi =
        std::exp(-0.5 * (x - mu) * (x - mu) / (sigma * sigma)) / (sigma * std::sqrt(2 * M_PI));
    auto cdf = [&](double v) { return 0.5 * std::erfc(-(v - mu) / (sigma * std::sqrt(2.0))); };
    return phi / (cdf(10) - cdf(0));
  };
  auto want = [&](double x, double floor) {
    const double d = truncated_normal(x, 2, 2) + 3 * truncated_normal(x, 2, floor) +
                     truncated_normal(x, 2, 3) + truncated_normal(x, 5, 10);
    return std::log(d / 6);
  };
  const std::vector<double> obs(5, 2.0), at = {2.0, 2.4, 6.0};
  struct Case {
    TpeOptions options;
    double floor;
  } cases[] = {{TpeOptions().magic_clip(1.0, 1.0, 0.01), 10.0 / 7},
               {TpeOptions(), 10.0 * std::pow(7.0, -1.5)},
               {TpeOptions().magic_clip(INFINITY, 1.0, 0.05), 0.5}};
  for (const Case& c : cases) {
    const std::vector<double> got = tpe_log_density(p, obs, at, c.options);
    ASSERT_EQ(got.size(), at.size());
    for (size_t i = 0; i < at.size(); ++i)
      EXPECT_NEAR(got[i], want(at[i], c.floor), 1e-9) << "floor " << c.floor << " at " << at[i];
  }
  // A narrower floor puts more density on the crowded point.
  EXPECT_GT(tpe_log_density(p, obs, {2.0})[0],
            tpe_log_density(p, obs, {2.0}, TpeOptions().magic_clip(1.0, 1.0, 0.01))[0] + 0.5);
}

TEST(SamplerTest, TpeIsDeterministicAndUsesRandomStartup) {
  const SearchSpace s = mixed_space();
  auto f = [](const Json& p) {
    return std::fabs(std::log10(p["lr"].get<double>()) + 2) + p["width"].get<double>() / 128 +
           (p["opt"] == "sgd" ? 0.0 : 0.5);
  };
  auto a = optimise(*make_tpe_sampler(5, false), s, f, 40);
  auto b = optimise(*make_tpe_sampler(5, false), s, f, 40);
  auto r = optimise(*make_random_sampler(5), s, f, 10);
  ASSERT_EQ(a.size(), 40u);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].params, b[i].params);
    expect_in_space(s, a[i].params);
  }
  for (size_t i = 0; i < 10; ++i) EXPECT_EQ(a[i].params, r[i].params);  // start-up = random
}

TEST(SamplerTest, TpeBeatsRandomOnBranin) {
  const SearchSpace s = branin_space();
  std::vector<double> tpe, rnd;
  for (uint64_t seed = 0; seed < 7; ++seed) {
    tpe.push_back(best_min(optimise(*make_tpe_sampler(seed, false), s, branin_of, 60)));
    rnd.push_back(best_min(optimise(*make_random_sampler(seed), s, branin_of, 60)));
  }
  std::sort(tpe.begin(), tpe.end());
  std::sort(rnd.begin(), rnd.end());
  EXPECT_LT(tpe[3], rnd[3]) << "median best: tpe " << tpe[3] << " random " << rnd[3];
  EXPECT_LT(tpe[3], 1.0);  // global minimum 0.398
}

TEST(SamplerTest, TpeFindsTheOptimumOfSteppedIntegers) {
  auto s = parse_space(Json::parse(R"({"params": {
      "k": {"type": "int", "low": 0, "high": 200},
      "w": {"type": "int", "low": 16, "high": 512, "step": 16}}})"));
  ASSERT_TRUE(s.ok()) << s.status();
  auto f = [](const Json& p) {
    const double k = p["k"].get<double>(), w = p["w"].get<double>();
    return std::fabs(k - 137) + std::fabs(w - 256) / 16;
  };
  std::vector<double> tpe;
  for (uint64_t seed = 0; seed < 5; ++seed) {
    auto t = optimise(*make_tpe_sampler(seed, false), *s, f, 60);
    for (const auto& x : t) {
      ASSERT_TRUE(x.params["k"].is_number_integer());
      EXPECT_EQ(x.params["w"].get<int64_t>() % 16, 0);
    }
    tpe.push_back(best_min(t));
  }
  std::sort(tpe.begin(), tpe.end());
  EXPECT_LE(tpe[2], 4.0);
}

TEST(SamplerTest, TpeMaximisesWhenAsked) {
  const SearchSpace s = branin_space();
  auto neg = [](const Json& p) { return -branin_of(p); };
  std::vector<TrialRecord> t = optimise(*make_tpe_sampler(1, true), s, neg, 60);
  double best = -INFINITY;
  for (const auto& x : t) best = std::max(best, x.value);
  EXPECT_GT(best, -1.0);
}

}  // namespace
}  // namespace kiln::tune
