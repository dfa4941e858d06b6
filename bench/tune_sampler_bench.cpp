// Sampler quality and per-trial overhead of kiln::tune, in process.
//   tune_sampler_bench [--trials 100] [--seeds 10] [--first-seed 0] [--overhead-trials 1000]
//                      [--db DIR] [--samplers tpe,tpe/uni,random] [--functions
//                      branin,hartmann6,...]
// Quality: Branin (2-d, min 0.397887), Hartmann-6 (6-d, min -3.32237), Styblinski-Tang 4-d
// (min -156.66466), Rosenbrock 4-d (min 0) and a mixed log-float/int/categorical toy (min 0),
// minimised (the same functions and spaces as bench/tune_optuna_peer.py); the median over the
// first 10 seeds and over all seeds of the best value after --trials trials. A sampler is random,
// grid, tpe (the default TpeOptions) or tpe/FLAG/FLAG... with FLAG one of uni | joint
// (univariate or joint estimator), scott | nb (joint bandwidth rule), exact | o31
// (kernel density), ep | noep (endpoints), cN (N EI candidates), mE or mE:F (l(x)'s magic clip
// exponent E, "inf" allowed, and the floor F, default 0.01), gE (g(x)'s exponent). Overhead: a
// 6-parameter TPE study stored in SQLite; per trial the time to read the history from the DB,
// sample, create the trial and record its result (the objective itself excluded).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "kiln/core/files.h"
#include "kiln/tune/sampler.h"
#include "kiln/tune/storage.h"

using namespace kiln;
using namespace kiln::tune;

namespace {

double branin(const Json& p) {
  const double x1 = p["x1"], x2 = p["x2"];
  const double pi = 3.14159265358979323846;
  const double b = 5.1 / (4 * pi * pi), c = 5 / pi, t = 1 / (8 * pi);
  const double y = x2 - b * x1 * x1 + c * x1 - 6;
  return y * y + 10 * (1 - t) * std::cos(x1) + 10;
}

double hartmann6(const Json& p) {
  static const double A[4][6] = {{10, 3, 17, 3.5, 1.7, 8},
                                 {0.05, 10, 17, 0.1, 8, 14},
                                 {3, 3.5, 1.7, 10, 17, 8},
                                 {17, 8, 0.05, 10, 0.1, 14}};
  static const double P[4][6] = {{0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886},
                                 {0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991},
                                 {0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650},
                                 {0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381}};
  static const double alpha[4] = {1.0, 1.2, 3.0, 3.2};
  double s = 0;
  for (int i = 0; i < 4; ++i) {
    double e = 0;
    for (int j = 0; j < 6; ++j) {
      const double x = p["x" + std::to_string(j + 1)];
      e += A[i][j] * (x - P[i][j]) * (x - P[i][j]);
    }
    s += alpha[i] * std::exp(-e);
  }
  return -s;
}

double styblinski_tang4(const Json& p) {
  double s = 0;
  for (int j = 1; j <= 4; ++j) {
    const double v = p["x" + std::to_string(j)];
    s += v * v * v * v - 16 * v * v + 5 * v;
  }
  return s / 2;
}

double rosenbrock4(const Json& p) {
  double x[4];
  for (int j = 0; j < 4; ++j) x[j] = p["x" + std::to_string(j + 1)];
  double s = 0;
  for (int j = 0; j < 3; ++j)
    s += 100 * (x[j + 1] - x[j] * x[j]) * (x[j + 1] - x[j] * x[j]) + (1 - x[j]) * (1 - x[j]);
  return s;
}

// A hyperparameter-like toy, min 0 at lr = 1e-3, width = 96, act = relu, dropout = 0.2.
double mixed(const Json& p) {
  const double lr = p["lr"], width = p["width"].get<double>(), dropout = p["dropout"];
  const std::string act = p["act"];
  const double offset = act == "relu" ? 0.0 : act == "gelu" ? 0.15 : act == "tanh" ? 0.5 : 1.0;
  const double a = std::log10(lr) + 3, b = (width - 96) / 64, c = dropout - 0.2;
  return a * a / 4 + b * b + offset + 4 * c * c;
}

Json box(int d, double lo, double hi) {
  Json params = Json::object();
  for (int j = 1; j <= d; ++j)
    params["x" + std::to_string(j)] = {{"type", "float"}, {"low", lo}, {"high", hi}};
  return params;
}

SearchSpace make_space(const std::string& fn) {
  Json params = Json::object();
  if (fn == "hartmann6") {
    params = box(6, 0, 1);
  } else if (fn == "styblinski_tang4") {
    params = box(4, -5, 5);
  } else if (fn == "rosenbrock4") {
    params = box(4, -2, 2);
  } else if (fn == "mixed") {
    params = Json::parse(R"({
      "lr": {"type": "float", "low": 1e-5, "high": 1.0, "log": true},
      "width": {"type": "int", "low": 16, "high": 256, "step": 16},
      "act": {"type": "categorical", "choices": ["relu", "gelu", "tanh", "sigmoid"]},
      "dropout": {"type": "float", "low": 0.0, "high": 0.8}})");
  } else {
    params["x1"] = {{"type", "float"}, {"low", -5.0}, {"high", 10.0}};
    params["x2"] = {{"type", "float"}, {"low", 0.0}, {"high", 15.0}};
  }
  return *parse_space(Json{{"params", params}});
}

std::unique_ptr<Sampler> make_named(const std::string& spec, uint64_t seed) {
  if (spec.rfind("tpe/", 0) != 0) return make_sampler(spec, seed, false).value();
  TpeOptions o;
  size_t at = 4;
  while (at <= spec.size()) {
    size_t end = spec.find('/', at);
    if (end == std::string::npos) end = spec.size();
    const std::string f = spec.substr(at, end - at);
    if (f == "uni") o.joint(false);
    if (f == "joint") o.joint(true);
    if (f == "scott") o.bandwidth(TpeBandwidth::kScott);
    if (f == "nb") o.bandwidth(TpeBandwidth::kNeighbour);
    // mE, mE:F: the magic clip's exponent for l(x) ("inf" allowed) and its floor; gE: for g(x)
    if (f.size() > 1 && f[0] == 'm') {
      const size_t colon = f.find(':');
      o.clip_exponent_below = std::strtod(f.substr(1, colon - 1).c_str(), nullptr);
      if (colon != std::string::npos)
        o.min_bandwidth_factor = std::strtod(f.c_str() + colon + 1, nullptr);
    }
    if (f.size() > 1 && f[0] == 'g') o.clip_exponent_above = std::strtod(f.c_str() + 1, nullptr);
    if (f == "exact") o.kernel_density(TpeDensity::kExact);
    if (f == "o31") o.kernel_density(TpeDensity::kOptuna31);
    if (f == "ep") o.endpoints(true);
    if (f == "noep") o.endpoints(false);
    if (f.size() > 1 && f[0] == 'c') o.ei_candidates(std::atoi(f.c_str() + 1));
    at = end + 1;
  }
  return make_tpe_sampler(seed, false, o);
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  size_t at = 0;
  while (at <= s.size()) {
    size_t end = s.find(',', at);
    if (end == std::string::npos) end = s.size();
    if (end > at) out.push_back(s.substr(at, end - at));
    at = end + 1;
  }
  return out;
}

double run(Sampler& s, const SearchSpace& space, double (*f)(const Json&), int n) {
  std::vector<TrialRecord> trials;
  double best = INFINITY;
  for (int i = 0; i < n; ++i) {
    TrialRecord t;
    t.id = i + 1;
    t.number = i;
    t.params = *s.sample(space, trials, i);
    t.value = f(t.params);
    t.state = TrialState::kComplete;
    best = std::min(best, t.value);
    trials.push_back(std::move(t));
  }
  return best;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace

int main(int argc, char** argv) {
  int trials = 100, seeds = 10, first_seed = 0, overhead_trials = 1000;
  std::string db_dir, samplers = "tpe,tpe/uni,random",
                      functions = "branin,hartmann6,styblinski_tang4,rosenbrock4,mixed";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--trials")) trials = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--seeds")) seeds = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--first-seed")) first_seed = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--overhead-trials")) overhead_trials = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--db")) db_dir = argv[i + 1];
    if (!std::strcmp(argv[i], "--samplers")) samplers = argv[i + 1];
    if (!std::strcmp(argv[i], "--functions")) functions = argv[i + 1];
  }
  struct Fn {
    const char* name;
    double (*f)(const Json&);
  } fns[] = {{"branin", branin},
             {"hartmann6", hartmann6},
             {"styblinski_tang4", styblinski_tang4},
             {"rosenbrock4", rosenbrock4},
             {"mixed", mixed}};
  Json out = Json::object();
  for (const std::string& name : split(functions)) {
    const Fn* fn = nullptr;
    for (const auto& f : fns)
      if (name == f.name) fn = &f;
    if (!fn) {
      std::fprintf(stderr, "unknown function %s\n", name.c_str());
      return 2;
    }
    const SearchSpace space = make_space(name);
    for (const std::string& sampler : split(samplers)) {
      std::vector<double> bests;
      for (int seed = first_seed; seed < first_seed + seeds; ++seed)
        bests.push_back(
            run(*make_named(sampler, static_cast<uint64_t>(seed)), space, fn->f, trials));
      const std::vector<double> first(bests.begin(), bests.begin() + std::min(seeds, 10));
      out[name][sampler] = {
          {"median_best", median(first)}, {"median_best_all", median(bests)}, {"bests", bests}};
      std::printf("%-16s kiln   %-14s median best, seeds %d-%d: %.6f   seeds %d-%d: %.6f\n",
                  name.c_str(), sampler.c_str(), first_seed, first_seed + std::min(seeds, 10) - 1,
                  median(first), first_seed, first_seed + seeds - 1, median(bests));
      std::fflush(stdout);
    }
  }
  if (overhead_trials > 0) {
    fs::path dir = db_dir.empty() ? *make_temp_directory("kiln-tune-bench") : fs::path(db_dir);
    auto db = StudyStorage::Open(dir / "studies.db");
    if (!db.ok()) {
      std::fprintf(stderr, "%s\n", db.status().message().c_str());
      return 1;
    }
    const SearchSpace space = make_space("hartmann6");
    StudyInfo info;
    info.name = "overhead-" + std::to_string(::getpid());
    info.direction = "minimize";
    info.space = space.to_json();
    info.sampler = "tpe";
    info.pruner = "none";
    auto study = (*db)->create_or_load_study(info);
    auto sampler = make_tpe_sampler(0, false);
    std::vector<double> ms;
    for (int i = 0; i < overhead_trials; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      auto history = (*db)->trials(study->id);
      Json params = *sampler->sample(space, *history, i);
      auto trial = (*db)->create_trial(study->id, params, ::getpid(), "");
      const double v = hartmann6(params);
      (void)(*db)->finish(trial->id, TrialState::kComplete, v, "");
      ms.push_back(
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    double mean_all = 0, mean_last = 0;
    for (double m : ms) mean_all += m;
    mean_all /= ms.size();
    const size_t last = std::min<size_t>(100, ms.size());
    for (size_t i = ms.size() - last; i < ms.size(); ++i) mean_last += ms[i];
    mean_last /= last;
    std::printf(
        "overhead: %d trials, mean %.2f ms/trial, mean of the last %zu (history ~%d): %.2f ms\n",
        overhead_trials, mean_all, last, overhead_trials, mean_last);
    out["overhead"] = {
        {"trials", overhead_trials}, {"mean_ms", mean_all}, {"last100_mean_ms", mean_last}};
    if (db_dir.empty()) fs::remove_all(dir);
  }
  std::printf("%s\n", out.dump().c_str());
  return 0;
}
