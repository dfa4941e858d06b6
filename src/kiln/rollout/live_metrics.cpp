#include "kiln/rollout/live_metrics.h"

#include <cmath>
#include <cstdlib>
#include <limits>
#include <sstream>
#include <vector>

namespace kiln::rollout {
namespace {

struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

double parse_value(const std::string& s, bool* ok) {
  if (s == "+Inf" || s == "Inf") return std::numeric_limits<double>::infinity();
  if (s == "-Inf") return -std::numeric_limits<double>::infinity();
  if (s == "NaN") return std::numeric_limits<double>::quiet_NaN();
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  *ok = !s.empty() && *end == '\0';
  return v;
}

/// `name{k="v",...} value [timestamp]`; false if the line is not a sample.
bool parse_sample(const std::string& line, Sample* out) {
  size_t i = 0;
  while (i < line.size() && line[i] != '{' && line[i] != ' ') ++i;
  out->name = line.substr(0, i);
  out->labels.clear();
  if (out->name.empty()) return false;
  if (i < line.size() && line[i] == '{') {
    ++i;
    while (i < line.size() && line[i] != '}') {
      const size_t eq = line.find('=', i);
      if (eq == std::string::npos || eq + 1 >= line.size() || line[eq + 1] != '"') return false;
      const std::string key = line.substr(i, eq - i);
      std::string value;
      size_t j = eq + 2;
      for (; j < line.size() && line[j] != '"'; ++j) {
        if (line[j] == '\\' && j + 1 < line.size()) {
          ++j;
          value += line[j] == 'n' ? '\n' : line[j];
        } else {
          value += line[j];
        }
      }
      if (j >= line.size()) return false;
      out->labels[key] = value;
      i = j + 1;
      if (i < line.size() && line[i] == ',') ++i;
    }
    if (i >= line.size()) return false;
    ++i;
  }
  while (i < line.size() && line[i] == ' ') ++i;
  const size_t end = line.find(' ', i);
  bool ok = true;
  out->value = parse_value(line.substr(i, end == std::string::npos ? end : end - i), &ok);
  return ok;
}

}  // namespace

Expected<ModelSnapshot> parse_model_snapshot(const std::string& text, const std::string& model) {
  ModelSnapshot snap;
  double accuracy_rows = -1;
  std::map<std::string, double> accuracy_by_version, rows_by_version;
  std::istringstream in(text);
  std::string line;
  int line_no = 0;
  Sample s;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    if (!parse_sample(line, &s))
      return Status::InvalidArgument("/metrics line " + std::to_string(line_no) +
                                     ": not a Prometheus sample: " + line.substr(0, 120));
    auto m = s.labels.find("model");
    if (m == s.labels.end() || m->second != model) continue;
    if (s.name == "kiln_inference_requests_total") {
      snap.requests_by_outcome[s.labels["outcome"]] += s.value;
    } else if (s.name == "kiln_inference_request_duration_seconds_bucket") {
      bool ok = true;
      const double le = parse_value(s.labels["le"], &ok);
      if (!ok)
        return Status::InvalidArgument("/metrics line " + std::to_string(line_no) + ": bad le=\"" +
                                       s.labels["le"] + "\"");
      snap.duration_buckets[le] += s.value;
    } else if (s.name == "kiln_live_accuracy") {
      accuracy_by_version[s.labels["version"]] = s.value;
    } else if (s.name == "kiln_live_labelled_rows") {
      rows_by_version[s.labels["version"]] = s.value;
    }
  }
  // Several versions (a reload): the accuracy of the one with the most labelled rows.
  for (const auto& [version, accuracy] : accuracy_by_version) {
    const double rows = rows_by_version.count(version) ? rows_by_version[version] : 0;
    if (rows > accuracy_rows) {
      accuracy_rows = rows;
      snap.live_accuracy = accuracy;
      snap.labelled_rows = rows;
    }
  }
  return snap;
}

double histogram_quantile(double q, const std::map<double, double>& cumulative) {
  if (cumulative.empty()) return std::numeric_limits<double>::quiet_NaN();
  const double total = cumulative.rbegin()->second;
  if (total <= 0) return std::numeric_limits<double>::quiet_NaN();
  const double rank = q * total;
  double prev_bound = 0, prev_count = 0;
  bool first = true;
  for (const auto& [bound, count] : cumulative) {
    if (count >= rank) {
      if (std::isinf(bound)) return prev_bound;  // the highest finite bound
      const double start = first && bound <= 0 ? bound : prev_bound;
      if (count == prev_count) return bound;
      return start + (bound - start) * (rank - prev_count) / (count - prev_count);
    }
    prev_bound = bound;
    prev_count = count;
    first = false;
  }
  return prev_bound;
}

ModelSnapshot sum_snapshots(const std::vector<ModelSnapshot>& snapshots) {
  ModelSnapshot sum;
  double weighted = 0, weight = 0;
  for (const ModelSnapshot& s : snapshots) {
    for (const auto& [outcome, count] : s.requests_by_outcome)
      sum.requests_by_outcome[outcome] += count;
    for (const auto& [le, count] : s.duration_buckets) sum.duration_buckets[le] += count;
    sum.labelled_rows += s.labelled_rows;
    if (s.live_accuracy >= 0) {
      weighted += s.live_accuracy * s.labelled_rows;
      weight += s.labelled_rows;
    }
  }
  if (weight > 0) sum.live_accuracy = weighted / weight;
  return sum;
}

WindowStats diff_window(const ModelSnapshot& start, const ModelSnapshot& end) {
  WindowStats w;
  for (const auto& [outcome, count] : end.requests_by_outcome) {
    auto s = start.requests_by_outcome.find(outcome);
    const double delta = count - (s == start.requests_by_outcome.end() ? 0 : s->second);
    w.requests += delta;
    if (outcome == "server_error" || outcome == "timeout") w.errors += delta;
  }
  w.error_rate = w.requests > 0 ? w.errors / w.requests : 0;
  std::map<double, double> buckets;
  for (const auto& [le, count] : end.duration_buckets) {
    auto s = start.duration_buckets.find(le);
    buckets[le] = count - (s == start.duration_buckets.end() ? 0 : s->second);
  }
  const double p99 = histogram_quantile(0.99, buckets);
  w.p99_ms = std::isnan(p99) ? -1 : p99 * 1000;
  w.live_accuracy = end.live_accuracy;
  w.labelled_rows = end.labelled_rows;
  return w;
}

}  // namespace kiln::rollout
