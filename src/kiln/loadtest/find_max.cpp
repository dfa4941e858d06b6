#include "kiln/loadtest/find_max.h"

#include <cmath>
#include <cstdio>

namespace kiln::loadtest {

Expected<FindMaxResult> find_max(const LoadOptions& base, const std::vector<SloTerm>& slo,
                                 const FindMaxOptions& options,
                                 const std::function<void(const FindMaxStage&)>& on_stage) {
  if (!(options.start_rate > 0))
    return Status::InvalidArgument("--rate (the start rate) must be positive");
  if (!(options.factor > 1)) return Status::InvalidArgument("the find-max step factor must be > 1");
  FindMaxResult result;
  auto run_stage = [&](double rate) -> Expected<FindMaxStage> {
    LoadOptions o = base;
    o.rate(rate).duration_s(options.stage_s);
    KILN_ASSIGN_OR_RETURN(LoadResult r, run_load(o));
    FindMaxStage s;
    s.rate = rate;
    s.achieved_rate = r.achieved_rate();
    s.p99_ns = r.latency_ns.value_at_percentile(99);
    const int64_t finished = r.finished() + r.unsent;
    s.error_ratio = finished > 0 ? static_cast<double>(r.errors()) / finished : 0;
    s.checks = check_slo(slo, r.latency_ns, finished, r.errors() + r.unsent);
    s.ok = slo_ok(s.checks);
    for (const auto& c : s.checks)
      if (!c.ok && s.why.empty()) s.why = c.term.text;
    if (s.ok && s.achieved_rate < options.min_achieved_share * rate) {
      s.ok = false;
      char buf[96];
      std::snprintf(buf, sizeof buf, "achieved only %.0f req/s", s.achieved_rate);
      s.why = buf;
    }
    result.stages.push_back(s);
    if (on_stage) on_stage(s);
    return s;
  };

  double good = 0, bad = 0;
  for (double rate = options.start_rate; rate <= options.max_rate; rate *= options.factor) {
    KILN_ASSIGN_OR_RETURN(FindMaxStage s, run_stage(std::round(rate)));
    if (!s.ok) {
      bad = s.rate;
      break;
    }
    good = s.rate;
  }
  if (bad > 0 && good > 0) {
    for (int i = 0; i < options.bisect_steps && bad - good > 0.02 * good; ++i) {
      const double mid = std::round((good + bad) / 2);
      KILN_ASSIGN_OR_RETURN(FindMaxStage s, run_stage(mid));
      (s.ok ? good : bad) = mid;
    }
  }
  result.best_rate = good;
  return result;
}

}  // namespace kiln::loadtest
