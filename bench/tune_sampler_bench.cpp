// Sampler quality and per-trial overhead of kiln::tune, in process.
//   tune_sampler_bench [--trials 100] [--seeds 10] [--overhead-trials 1000] [--db DIR]
// Quality: Branin (2-d, min 0.397887) and Hartmann-6 (6-d, min -3.32237), minimised; the median
// over seeds of the best value after --trials trials, for TPE and random. Overhead: a 6-parameter
// TPE study stored in SQLite; per trial the time to read the history from the DB, sample, create
// the trial and record its result (the objective itself excluded).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
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

SearchSpace make_space(bool six) {
  Json params = Json::object();
  if (six) {
    for (int j = 1; j <= 6; ++j)
      params["x" + std::to_string(j)] = {{"type", "float"}, {"low", 0.0}, {"high", 1.0}};
  } else {
    params["x1"] = {{"type", "float"}, {"low", -5.0}, {"high", 10.0}};
    params["x2"] = {{"type", "float"}, {"low", 0.0}, {"high", 15.0}};
  }
  return *parse_space(Json{{"params", params}});
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
  int trials = 100, seeds = 10, overhead_trials = 1000;
  std::string db_dir;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--trials")) trials = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--seeds")) seeds = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--overhead-trials")) overhead_trials = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--db")) db_dir = argv[i + 1];
  }
  struct Fn {
    const char* name;
    bool six;
    double (*f)(const Json&);
  } fns[] = {{"branin", false, branin}, {"hartmann6", true, hartmann6}};
  Json out = Json::object();
  for (const auto& fn : fns) {
    const SearchSpace space = make_space(fn.six);
    for (std::string sampler : {"tpe", "tpe-univariate", "random"}) {
      std::vector<double> bests;
      for (int seed = 0; seed < seeds; ++seed) {
        std::unique_ptr<Sampler> s =
            sampler == "tpe-univariate"
                ? make_tpe_sampler(static_cast<uint64_t>(seed), false, TpeOptions().joint(false))
                : make_sampler(sampler, static_cast<uint64_t>(seed), false).value();
        bests.push_back(run(*s, space, fn.f, trials));
      }
      out[fn.name][sampler] = {{"median_best", median(bests)}, {"bests", bests}};
      std::printf("%-10s kiln %-14s median best over %d seeds (%d trials): %.6f\n", fn.name,
                  sampler.c_str(), seeds, trials, median(bests));
    }
  }
  if (overhead_trials > 0) {
    fs::path dir = db_dir.empty() ? *make_temp_directory("kiln-tune-bench") : fs::path(db_dir);
    auto db = StudyStorage::Open(dir / "studies.db");
    if (!db.ok()) {
      std::fprintf(stderr, "%s\n", db.status().message().c_str());
      return 1;
    }
    const SearchSpace space = make_space(true);
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
