#include "kiln/rollout/plan.h"

#include <cmath>
#include <cstdlib>

namespace kiln::rollout {

Expected<int64_t> parse_duration_ms(const std::string& text, const std::string& flag) {
  const auto bad = [&] {
    return Status::InvalidArgument(flag + " " + (text.empty() ? "''" : text) +
                                   ": give a number and a unit: 500ms, 30s, 2m");
  };
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  if (text.empty() || end == text.c_str() || !std::isfinite(value) || value <= 0) return bad();
  const std::string unit(end);
  double ms = 0;
  if (unit == "ms")
    ms = value;
  else if (unit == "s")
    ms = value * 1000;
  else if (unit == "m")
    ms = value * 60000;
  else
    return bad();
  if (ms < 1 || ms > 24.0 * 3600 * 1000) return bad();
  return static_cast<int64_t>(std::llround(ms));
}

Expected<std::vector<int>> parse_steps(const std::string& text, const std::string& flag) {
  std::vector<int> steps;
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t comma = std::min(text.find(',', pos), text.size());
    const std::string item = text.substr(pos, comma - pos);
    char* end = nullptr;
    const long v = std::strtol(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || v < 1 || v > 100)
      return Status::InvalidArgument(flag + " " + text + ": '" + item +
                                     "' is not a weight in 1..100");
    if (!steps.empty() && v <= steps.back())
      return Status::InvalidArgument(flag + " " + text + ": steps must increase (" +
                                     std::to_string(steps.back()) + " then " + item + ")");
    steps.push_back(static_cast<int>(v));
    pos = comma + 1;
  }
  if (steps.back() != 100)
    return Status::InvalidArgument(flag + " " + text +
                                   ": the last step must be 100 (the candidate takes all)");
  return steps;
}

Json step_weights(const std::vector<std::string>& targets, const std::string& candidate,
                  int candidate_weight) {
  const int others = static_cast<int>(targets.size()) - 1;
  const int rest = 100 - candidate_weight;
  Json w = Json::object();
  int i = 0;
  for (const auto& t : targets) {
    if (t == candidate) {
      w[t] = candidate_weight;
    } else {
      w[t] = rest / others + (i < rest % others ? 1 : 0);
      ++i;
    }
  }
  return w;
}

Json RolloutOptions::to_json() const {
  return {{"route", route_},
          {"server", server_},
          {"candidate", candidate_},
          {"steps", steps_},
          {"interval_ms", interval_ms_},
          {"max_error_rate", max_error_rate_},
          {"max_p99_ms", max_p99_ms_},
          {"min_live_accuracy", min_live_accuracy_},
          {"min_labelled_rows", min_labelled_rows_},
          {"min_requests", min_requests_},
          {"api_key_file", api_key_file_},
          {"promote", promote_},
          {"reload_timeout_ms", reload_timeout_ms_},
          {"metrics_from", metrics_from_},
          {"follow_timeout_ms", follow_timeout_ms_},
          {"cluster", cluster_}};
}

Expected<RolloutOptions> RolloutOptions::from_json(const Json& j) {
  try {
    RolloutOptions o(j.at("route").get<std::string>(), j.at("server").get<std::string>(),
                     j.at("candidate").get<std::string>());
    o.steps(j.at("steps").get<std::vector<int>>())
        .interval_ms(j.at("interval_ms").get<int64_t>())
        .max_error_rate(j.at("max_error_rate").get<double>())
        .max_p99_ms(j.at("max_p99_ms").get<double>())
        .min_live_accuracy(j.at("min_live_accuracy").get<double>())
        .min_labelled_rows(j.at("min_labelled_rows").get<int64_t>())
        .min_requests(j.at("min_requests").get<int64_t>())
        .api_key_file(j.at("api_key_file").get<std::string>())
        .promote(j.at("promote").get<std::string>())
        .reload_timeout_ms(j.value("reload_timeout_ms", int64_t{120000}))  // older state files
        .metrics_from(j.value("metrics_from", std::vector<std::string>()))
        .follow_timeout_ms(j.value("follow_timeout_ms", int64_t{10000}))
        .cluster(j.value("cluster", std::string()));
    if (o.steps_.empty()) return Status::DataLoss("rollout options: no steps");
    return o;
  } catch (const std::exception& e) {
    return Status::DataLoss(std::string("rollout options: ") + e.what());
  }
}

Expected<PromoteTarget> parse_promote(const std::string& text) {
  const size_t at = text.find('@');
  const size_t eq = text.find('=', at == std::string::npos ? 0 : at);
  const auto bad = [&] {
    return Status::InvalidArgument("--promote " + text + ": give NAME@ALIAS=VERSION");
  };
  if (at == std::string::npos || eq == std::string::npos || at == 0 || eq == at + 1) return bad();
  PromoteTarget p{text.substr(0, at), text.substr(at + 1, eq - at - 1), 0};
  const std::string v = text.substr(eq + 1);
  char* end = nullptr;
  p.version = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || p.version < 1) return bad();
  return p;
}

}  // namespace kiln::rollout
