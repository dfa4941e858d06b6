#include "kiln/tune/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <set>

#include "kiln/core/files.h"
#include "kiln/core/xml.h"
#include "kiln/train/plots.h"
#include "kiln/tune/study.h"

namespace kiln::tune {
namespace {

Json number_or_null(double v) { return std::isfinite(v) ? Json(v) : Json(nullptr); }

std::string fmt(double v, int prec = 4) {
  char b[48];
  std::snprintf(b, sizeof b, "%.*g", prec, v);
  return b;
}

}  // namespace

Json study_json(const StudyInfo& study, const std::vector<TrialRecord>& trials) {
  Json out;
  out["study"] = study.name;
  out["direction"] = study.direction;
  const TrialRecord* best = best_trial(trials, study.maximize());
  out["best"] =
      best ? Json{{"number", best->number}, {"value", best->value}, {"params", best->params}}
           : Json(nullptr);
  out["trials"] = Json::array();
  for (const auto& t : trials) {
    Json j = {{"number", t.number},
              {"state", trial_state_name(t.state)},
              {"value", number_or_null(t.value)},
              {"params", t.params},
              {"duration", number_or_null(t.duration)}};
    if (!t.intermediate.empty()) {
      Json inter = Json::object();
      for (const auto& [s, v] : t.intermediate) inter[std::to_string(s)] = number_or_null(v);
      j["intermediate"] = inter;
    }
    if (t.orphaned) j["orphaned"] = true;
    if (!t.note.empty()) j["note"] = t.note;
    out["trials"].push_back(j);
  }
  Expected<SearchSpace> space = parse_space(study.space);
  Json imp = Json::object();
  if (space.ok())
    for (const auto& [name, v] : param_importance(*space, trials)) imp[name] = v;
  out["importance"] = imp;
  out["sampler"] = study.sampler;
  out["pruner"] = study.pruner;
  if (!study.metric.empty()) out["metric"] = study.metric;
  return out;
}

std::vector<std::pair<std::string, double>> param_importance(
    const SearchSpace& space, const std::vector<TrialRecord>& trials) {
  std::vector<const TrialRecord*> done;
  for (const auto& t : trials)
    if (t.state == TrialState::kComplete && std::isfinite(t.value)) done.push_back(&t);
  std::vector<std::pair<std::string, double>> out;
  if (done.size() < kMinTrialsForImportance) return out;
  double mean = 0;
  for (auto* t : done) mean += t->value;
  mean /= static_cast<double>(done.size());
  double total = 0;
  for (auto* t : done) total += (t->value - mean) * (t->value - mean);
  for (const auto& p : space.params) {
    std::vector<int> group(done.size(), -1);
    if (p.type == ParamSpec::Type::kCategorical) {
      for (size_t i = 0; i < done.size(); ++i) {
        auto it = done[i]->params.find(p.name);
        if (it == done[i]->params.end()) continue;
        for (size_t c = 0; c < p.choices.size(); ++c)
          if (p.choices[c] == *it) group[i] = static_cast<int>(c);
      }
    } else {
      std::vector<double> xs;
      for (auto* t : done) {
        auto it = t->params.find(p.name);
        if (it != t->params.end() && it->is_number()) xs.push_back(it->get<double>());
      }
      std::sort(xs.begin(), xs.end());
      // At least two bins, so that numeric parameters can explain variance as categorical ones do.
      const size_t bins = std::min<size_t>(5, std::max<size_t>(2, xs.size() / 3));
      std::vector<double> edges;
      for (size_t b = 1; b < bins; ++b) edges.push_back(xs[b * xs.size() / bins]);
      for (size_t i = 0; i < done.size(); ++i) {
        auto it = done[i]->params.find(p.name);
        if (it == done[i]->params.end() || !it->is_number()) continue;
        const double x = it->get<double>();
        group[i] =
            static_cast<int>(std::upper_bound(edges.begin(), edges.end(), x) - edges.begin());
      }
    }
    std::map<int, std::pair<double, int>> sums;
    for (size_t i = 0; i < done.size(); ++i) {
      sums[group[i]].first += done[i]->value;
      sums[group[i]].second += 1;
    }
    double between = 0;
    for (const auto& [g, s] : sums) {
      const double m = s.first / s.second;
      between += s.second * (m - mean) * (m - mean);
    }
    out.emplace_back(p.name, total > 0 ? between / total : 0.0);
  }
  double sum = 0;
  for (const auto& [n, v] : out) sum += v;
  if (sum > 0)
    for (auto& [n, v] : out) v /= sum;
  std::stable_sort(out.begin(), out.end(),
                   [](const auto& a, const auto& b) { return a.second > b.second; });
  return out;
}

std::string study_table(const StudyInfo& study, const std::vector<TrialRecord>& trials) {
  std::string s = "study " + study.name + " (" + study.direction +
                  (study.metric.empty() ? "" : " " + study.metric) + ", sampler " + study.sampler +
                  ", pruner " + study.pruner + ")\n";
  char line[512];
  std::snprintf(line, sizeof line, "%6s  %-9s  %12s  %9s  %s\n", "trial", "state", "value",
                "seconds", "params");
  s += line;
  for (const auto& t : trials) {
    std::string params;
    for (auto it = t.params.begin(); it != t.params.end(); ++it)
      params += (params.empty() ? "" : " ") + it.key() + "=" + value_text(it.value());
    std::snprintf(line, sizeof line, "%6lld  %-9s  %12s  %9s  %s%s\n",
                  static_cast<long long>(t.number), trial_state_name(t.state),
                  std::isfinite(t.value) ? fmt(t.value, 6).c_str() : "-",
                  std::isfinite(t.duration) && t.finished() ? fmt(t.duration, 4).c_str() : "-",
                  params.c_str(), t.orphaned ? " (orphaned, re-run)" : "");
    s += line;
  }
  const TrialRecord* best = best_trial(trials, study.maximize());
  if (best) {
    s += "best: trial " + std::to_string(best->number) + " value " + fmt(best->value, 6) + " " +
         best->params.dump() + "\n";
  } else {
    s += "best: none (no complete trial)\n";
  }
  Expected<SearchSpace> space = parse_space(study.space);
  if (space.ok()) {
    const auto complete = std::count_if(trials.begin(), trials.end(), [](const TrialRecord& t) {
      return t.state == TrialState::kComplete && std::isfinite(t.value);
    });
    auto imp = param_importance(*space, trials);
    if (!imp.empty()) {
      s += "importance (variance explained, normalised, " + std::to_string(complete) +
           " complete trials):";
      for (const auto& [n, v] : imp) s += " " + n + " " + fmt(v, 3);
      s += "\n";
    } else {
      s += "importance: needs " + std::to_string(kMinTrialsForImportance) +
           " complete trials (have " + std::to_string(complete) + ")\n";
    }
  }
  return s;
}

Status write_study_plots(const StudyInfo& study, const std::vector<TrialRecord>& trials,
                         const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  // Optimisation history.
  train::Series values{"objective", {}}, best{"best so far", {}};
  double b = NAN;
  for (const auto& t : trials) {
    if (t.state != TrialState::kComplete || !std::isfinite(t.value)) continue;
    values.points.emplace_back(static_cast<double>(t.number), t.value);
    if (!std::isfinite(b) || (study.maximize() ? t.value > b : t.value < b)) b = t.value;
    best.points.emplace_back(static_cast<double>(t.number), b);
  }
  KILN_RETURN_IF_ERROR(write_file_atomic(
      dir / "history.svg",
      train::line_chart_svg("Optimisation history: " + study.name, "trial", {values, best})));

  Expected<SearchSpace> space_or = parse_space(study.space);
  if (!space_or.ok()) return space_or.status();
  const SearchSpace& space = *space_or;

  // Parallel coordinates: one axis per parameter plus the objective; lines coloured by value.
  std::vector<const TrialRecord*> done;
  for (const auto& t : trials)
    if (t.state == TrialState::kComplete && std::isfinite(t.value)) done.push_back(&t);
  const int axes = static_cast<int>(space.params.size()) + 1;
  const double W = 140.0 * axes + 80, H = 420, top = 50, bottom = 360;
  double vmin = INFINITY, vmax = -INFINITY;
  for (auto* t : done) vmin = std::min(vmin, t->value), vmax = std::max(vmax, t->value);
  std::string svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + fmt(W, 6) +
                    "\" height=\"" + fmt(H, 6) +
                    "\" font-family=\"sans-serif\" font-size=\"11\">\n";
  svg += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  svg +=
      "<text x=\"10\" y=\"20\" font-size=\"14\">Parallel coordinates: " + xml_escape(study.name) +
      "</text>\n";
  auto axis_x = [&](int i) { return 60.0 + 140.0 * i; };
  auto norm = [&](const ParamSpec& p, const Json& v) -> double {
    if (p.type == ParamSpec::Type::kCategorical) {
      for (size_t c = 0; c < p.choices.size(); ++c)
        if (p.choices[c] == v)
          return p.choices.size() == 1 ? 0.5 : static_cast<double>(c) / (p.choices.size() - 1);
      return 0.5;
    }
    if (!v.is_number()) return 0.5;
    const double x = v.get<double>();
    return p.log ? (std::log(x) - std::log(p.low)) / (std::log(p.high) - std::log(p.low))
                 : (x - p.low) / (p.high - p.low);
  };
  for (auto* t : done) {
    const double f = vmax > vmin ? (t->value - vmin) / (vmax - vmin) : 1.0;
    const double good = study.maximize() ? f : 1 - f;
    char colour[32];
    std::snprintf(colour, sizeof colour, "rgb(%d,%d,%d)", static_cast<int>(220 * (1 - good)), 80,
                  static_cast<int>(60 + 180 * good));
    std::string pts;
    for (int i = 0; i < axes - 1; ++i) {
      const ParamSpec& p = space.params[i];
      auto it = t->params.find(p.name);
      if (it == t->params.end()) continue;
      const double y = bottom - (bottom - top) * norm(p, *it);
      pts += fmt(axis_x(i), 6) + "," + fmt(y, 6) + " ";
    }
    pts += fmt(axis_x(axes - 1), 6) + "," + fmt(bottom - (bottom - top) * f, 6);
    svg += "<polyline fill=\"none\" stroke=\"" + std::string(colour) +
           "\" stroke-opacity=\"0.6\" points=\"" + pts + "\"/>\n";
  }
  for (int i = 0; i < axes; ++i) {
    const std::string x = fmt(axis_x(i), 6);
    svg += "<line x1=\"" + x + "\" y1=\"" + fmt(top, 6) + "\" x2=\"" + x + "\" y2=\"" +
           fmt(bottom, 6) + "\" stroke=\"black\"/>\n";
    std::string name = i < axes - 1 ? space.params[i].name : "objective";
    std::string lo, hi;
    if (i == axes - 1) {
      lo = done.empty() ? "" : fmt(vmin);
      hi = done.empty() ? "" : fmt(vmax);
    } else if (space.params[i].type == ParamSpec::Type::kCategorical) {
      lo = value_text(space.params[i].choices.front());
      hi = value_text(space.params[i].choices.back());
    } else {
      lo = fmt(space.params[i].low);
      hi = fmt(space.params[i].high);
    }
    svg += "<text x=\"" + x + "\" y=\"" + fmt(bottom + 30, 6) + "\" text-anchor=\"middle\">" +
           xml_escape(name) + "</text>\n";
    svg += "<text x=\"" + x + "\" y=\"" + fmt(bottom + 14, 6) + "\" text-anchor=\"middle\">" +
           xml_escape(lo) + "</text>\n";
    svg += "<text x=\"" + x + "\" y=\"" + fmt(top - 6, 6) + "\" text-anchor=\"middle\">" +
           xml_escape(hi) + "</text>\n";
  }
  svg += "</svg>\n";
  KILN_RETURN_IF_ERROR(write_file_atomic(dir / "parallel_coordinates.svg", svg));

  // Importance: horizontal bars.
  auto imp = param_importance(space, trials);
  const double ih = 60 + 28.0 * std::max<size_t>(1, imp.size());
  std::string bars = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"560\" height=\"" +
                     fmt(ih, 6) + "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  bars += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  bars +=
      "<text x=\"10\" y=\"20\" font-size=\"14\">Parameter importance (variance explained)</text>\n";
  if (imp.empty()) bars += "<text x=\"10\" y=\"50\">fewer than 3 complete trials</text>\n";
  for (size_t i = 0; i < imp.size(); ++i) {
    const double y = 40 + 28.0 * i;
    bars += "<text x=\"190\" y=\"" + fmt(y + 15, 6) + "\" text-anchor=\"end\">" +
            xml_escape(imp[i].first) + "</text>\n";
    bars += "<rect x=\"200\" y=\"" + fmt(y, 6) + "\" width=\"" + fmt(300 * imp[i].second, 6) +
            "\" height=\"20\" fill=\"steelblue\"/>\n";
    bars += "<text x=\"" + fmt(205 + 300 * imp[i].second, 6) + "\" y=\"" + fmt(y + 15, 6) + "\">" +
            fmt(imp[i].second, 3) + "</text>\n";
  }
  bars += "</svg>\n";
  return write_file_atomic(dir / "importance.svg", bars);
}

}  // namespace kiln::tune
