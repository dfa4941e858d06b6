#include "kiln/monitor/alert_rules.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <functional>
#include <stdexcept>
#include <utility>
#include <vector>

#include "kiln/monitor/metrics.h"

namespace kiln::monitor {
namespace {

// The buckets of kiln_inference_request_duration_seconds (serve/server.cpp init_metrics).
std::vector<double> latency_bounds() { return exponential_buckets(0.00005, 2, 16); }

// Shortest text that reads back as `v`, never in exponent form (promtool's series notation and
// PromQL both read it).
std::string num(double v) {
  char buf[400];
  auto r = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::fixed);
  return std::string(buf, r.ptr);
}

// Shortest round-trip text, exponent allowed (label values such as le="5e-05").
std::string short_num(double v) {
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, r.ptr);
}

// Go's fmt "%.<prec>g", which matches C's for finite values (both strip trailing zeros).
std::string go_g(double v, int prec) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*g", prec, v);
  return buf;
}

// The Prometheus template functions the annotations use, for the values the tests plant.
std::string humanize_percentage(double v) { return go_g(v * 100, 4) + "%"; }

std::string humanize_duration(double v) {
  KILN_CHECK(v > 0 && v < 60, "planted latencies stay under a minute");
  if (v >= 1) return go_g(v, 4) + "s";
  std::string prefix;
  for (const char* p : {"m", "u", "n", "p", "f", "a", "z", "y"}) {
    if (std::fabs(v) >= 1) break;
    prefix = p;
    v *= 1000;
  }
  return go_g(v, 4) + prefix + "s";
}

std::string go_printf_3g(double v) { return go_g(v, 3); }

std::string minutes(int m) { return std::to_string(m) + "m"; }

// A YAML single-quoted scalar.
std::string sq(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += '\'';
    out += c;
  }
  return out + "'";
}

// x rounded up (below: down) to two significant digits, exact as a decimal: planted values whose
// annotations print the same in Go and here.
double nice(double x, bool up) {
  if (x <= 0) return 0;
  const int k = 1 - static_cast<int>(std::floor(std::log10(x)));  // x * 10^k in [10, 100)
  const double scale = std::pow(10.0, k);
  double m = x * scale;
  m = up ? std::ceil(m - 1e-9) : std::floor(m + 1e-9);
  return k >= 0 ? m / scale : m * std::pow(10.0, -k);
}
double nice_above(double x) { return nice(x, true); }
double nice_below(double x) { return nice(x, false); }
double round3(double x) { return std::round(x * 1000) / 1000; }

const char* const kModel = "{{ $labels.model }}";
const char* const kVersion = "{{ $labels.version }}";
const char* const kFeature = "{{ $labels.feature }}";
const char* const kInstance = "{{ $labels.instance }}";
const char* const kJob = "{{ $labels.job }}";

struct Texts {
  std::string summary, description;
};

// Annotation texts: called with template placeholders for the rules and with the planted label
// values and the value as Prometheus prints it for the tests, so both come from one place.
Texts error_rate_texts(const AlertRulesOptions& o, const std::string& model,
                       const std::string& version, const std::string& value) {
  return {model + " v" + version + ": " + value + " of inference requests failed",
          "More than " + humanize_percentage(o.error_rate_) + " of inference requests to " + model +
              " version " + version +
              " ended in client_error, timeout or server_error over the last " +
              minutes(o.rate_window_minutes_) + " (kiln_inference_requests_total by outcome)."};
}

Texts latency_texts(const AlertRulesOptions& o, const std::string& model,
                    const std::string& version, const std::string& value) {
  return {model + " v" + version + ": p99 latency " + value,
          "The p99 of kiln_inference_request_duration_seconds of " + model + " version " + version +
              " over the last " + minutes(o.rate_window_minutes_) + " is above the " +
              go_g(o.slo_p99_ms_, 6) +
              " ms objective (estimated from the histogram buckets, server side)."};
}

Texts data_drift_texts(const AlertRulesOptions& o, const std::string& model,
                       const std::string& version, const std::string& value) {
  return {model + " v" + version + ": " + value + " of input features drifted",
          "More than " + humanize_percentage(o.drift_share_) + " of the input features of " +
              model + " version " + version +
              " are flagged as drifted from the bundle's reference profile (kiln_drift_share); "
              "see kiln_feature_psi for which ones."};
}

Texts feature_drift_texts(const AlertRulesOptions& o, const std::string& model,
                          const std::string& version, const std::string& feature,
                          const std::string& value) {
  return {model + " v" + version + ": feature " + feature + " drifted (PSI " + value + ")",
          "The PSI of feature " + feature + " of " + model + " version " + version +
              " against the bundle's reference profile is above " + go_g(o.psi_, 6) +
              " (kiln_feature_psi)."};
}

Texts prediction_drift_texts(const AlertRulesOptions& o, const std::string& model,
                             const std::string& version, const std::string& value) {
  return {model + " v" + version + ": predicted classes drifted (PSI " + value + ")",
          "The PSI of the predicted-class distribution of " + model + " version " + version +
              " against the bundle's reference is above " + go_g(o.prediction_psi_, 6) +
              " (kiln_prediction_psi): the model answers differently than on its reference "
              "data."};
}

Texts accuracy_texts(const AlertRulesOptions& o, const std::string& model,
                     const std::string& version, const std::string& value) {
  return {model + " v" + version + ": live accuracy " + value,
          "Accuracy of " + model + " version " + version +
              " over the latest labelled rows (at least " + std::to_string(o.min_labelled_rows_) +
              ") is more than " + go_g(o.accuracy_margin_ * 100, 4) +
              " points below the bundle's test accuracy (kiln_live_accuracy vs "
              "kiln_reference_accuracy)."};
}

Texts calibration_texts(const AlertRulesOptions& o, const std::string& model,
                        const std::string& version, const std::string& value) {
  return {model + " v" + version + ": live calibration error " + value,
          "The expected calibration error of " + model + " version " + version +
              " over the latest labelled rows (at least " + std::to_string(o.min_labelled_rows_) +
              ") is more than " + go_g(o.calibration_margin_, 4) +
              " above the bundle's test calibration error (kiln_live_calibration_error vs "
              "kiln_reference_calibration_error): its confidence no longer matches how often it "
              "is right."};
}

Texts load_failure_texts(const AlertRulesOptions& o, const std::string& model) {
  return {model + ": a model version failed to load",
          "kiln serve failed to load a version of " + model + " in the last " +
              minutes(o.load_failure_window_minutes_) +
              "; the previous version keeps serving. The server log names the reason."};
}

Texts no_traffic_texts(const AlertRulesOptions& o, const std::string& model) {
  return {model + ": no successful requests for " + minutes(o.no_traffic_minutes_),
          model + " is served but answered no request successfully in the last " +
              minutes(o.no_traffic_minutes_) +
              " (kiln_inference_requests_total{outcome=\"success\"}). Check clients, routing and "
              "the error rate."};
}

std::string gib(double bytes) { return go_g(bytes / (1024.0 * 1024 * 1024), 4) + " GiB"; }

Texts memory_texts(const AlertRulesOptions& o, const std::string& instance,
                   const std::string& job) {
  return {instance + ": kiln serve uses more than " + gib(o.memory_bytes_),
          "Resident memory of the kiln serve process " + instance + " (job " + job + ") is above " +
              gib(o.memory_bytes_) + " (process_resident_memory_bytes)."};
}

struct Rule {
  std::string alert;
  std::string expr;
  int for_minutes = 0;
  std::string severity;
  Texts texts;
};

std::vector<Rule> make_rules(const AlertRulesOptions& o) {
  const std::string w = "[" + minutes(o.rate_window_minutes_) + "]";
  const std::string lw = minutes(o.load_failure_window_minutes_);
  const std::string nw = minutes(o.no_traffic_minutes_);
  std::vector<Rule> rules;
  rules.push_back(
      {"KilnHighErrorRate",
       "sum by (model, version) (rate(kiln_inference_requests_total{outcome!=\"success\"}" + w +
           "))\n  / sum by (model, version) (rate(kiln_inference_requests_total" + w + "))\n> " +
           num(o.error_rate_),
       o.error_for_minutes_, "page",
       error_rate_texts(o, kModel, kVersion, "{{ $value | humanizePercentage }}")});
  rules.push_back({"KilnHighLatencyP99",
                   "histogram_quantile(0.99,\n  sum by (model, version, le) "
                   "(rate(kiln_inference_request_duration_seconds_bucket" +
                       w + ")))\n> " + num(o.slo_p99_ms_ / 1000),
                   o.latency_for_minutes_, "page",
                   latency_texts(o, kModel, kVersion, "{{ $value | humanizeDuration }}")});
  rules.push_back({"KilnDataDrift",
                   "max by (model, version) (kiln_drift_share) > " + num(o.drift_share_),
                   o.drift_for_minutes_, "ticket",
                   data_drift_texts(o, kModel, kVersion, "{{ $value | humanizePercentage }}")});
  rules.push_back(
      {"KilnFeatureDrift", "max by (model, version, feature) (kiln_feature_psi) > " + num(o.psi_),
       o.drift_for_minutes_, "ticket",
       feature_drift_texts(o, kModel, kVersion, kFeature, "{{ $value | printf \"%.3g\" }}")});
  rules.push_back({"KilnPredictionDrift",
                   "max by (model, version) (kiln_prediction_psi) > " + num(o.prediction_psi_),
                   o.drift_for_minutes_, "ticket",
                   prediction_drift_texts(o, kModel, kVersion, "{{ $value | printf \"%.3g\" }}")});
  rules.push_back({"KilnLiveAccuracyDrop",
                   "(\n  max by (model, version) (kiln_live_accuracy)\n    < on (model, version) "
                   "max by (model, version) (kiln_reference_accuracy) - " +
                       num(o.accuracy_margin_) +
                       "\n)\nand on (model, version)\n  (max by (model, version) "
                       "(kiln_live_labelled_rows) >= " +
                       std::to_string(o.min_labelled_rows_) + ")",
                   o.accuracy_for_minutes_, "warning",
                   accuracy_texts(o, kModel, kVersion, "{{ $value | humanizePercentage }}")});
  rules.push_back({"KilnCalibrationDrift",
                   "(\n  max by (model, version) (kiln_live_calibration_error)\n    > on (model, "
                   "version) max by (model, version) (kiln_reference_calibration_error) + " +
                       num(o.calibration_margin_) +
                       "\n)\nand on (model, version)\n  (max by (model, version) "
                       "(kiln_live_labelled_rows) >= " +
                       std::to_string(o.min_labelled_rows_) + ")",
                   o.accuracy_for_minutes_, "warning",
                   calibration_texts(o, kModel, kVersion, "{{ $value | printf \"%.3g\" }}")});
  // A failure counter appears with its first value already 1, which increase() cannot see: the
  // second term catches series that did not exist one window ago.
  rules.push_back(
      {"KilnModelLoadFailures",
       "sum by (model) (increase(kiln_model_load_failures_total[" + lw +
           "])) > 0\nor\nsum by (model) (\n  kiln_model_load_failures_total\n    unless "
           "kiln_model_load_failures_total offset " +
           lw + "\n) > 0",
       0, "warning", load_failure_texts(o, kModel)});
  // Served now and N minutes ago (so a model loaded moments ago, or one no longer served, stays
  // quiet), without a single successful request in the last N minutes (also when the success
  // series does not exist at all).
  rules.push_back({"KilnNoTraffic",
                   "(\n  sum by (model) (kiln_model_loads_total)\n    and on (model) sum by "
                   "(model) (kiln_model_loads_total offset " +
                       nw +
                       ")\n)\nunless on (model)\n  (sum by (model) "
                       "(increase(kiln_inference_requests_total{outcome=\"success\"}[" +
                       nw + "])) > 0)",
                   0, "warning", no_traffic_texts(o, kModel)});
  if (o.memory_bytes_ > 0) {
    // process_* metrics carry no kiln label: keep the targets that export a kiln metric.
    rules.push_back({"KilnHighMemory",
                     "max by (instance, job) (\n  process_resident_memory_bytes\n    and on "
                     "(instance, job) group by (instance, job) (kiln_model_loads_total)\n) > " +
                         num(o.memory_bytes_),
                     o.memory_for_minutes_, "warning", memory_texts(o, kInstance, kJob)});
  }
  return rules;
}

void check_valid(const AlertRulesOptions& o) {
  Status s = o.validate();
  KILN_CHECK(s.ok(), s.to_string());
}

// ---------------------------------------------------------------------------------------------
// The test file

// promtool's expanding notation for series sampled every minute from t=0.
class Values {
 public:
  /// A counter at 0 at t=0 (first call only) rising by `inc` each minute for `n` minutes.
  Values& rise(double inc, int n) {
    if (n <= 0) return *this;
    if (!started_) {
      tokens_.push_back("0+" + num(inc) + "x" + std::to_string(n));
      started_ = true;
      value_ = inc * n;
    } else {
      const double first = value_ + inc;
      tokens_.push_back(num(first) + "+" + num(inc) + "x" + std::to_string(n - 1));
      value_ += inc * n;
    }
    return *this;
  }
  /// A gauge holding `v` for `n` samples.
  Values& hold(double v, int n) {
    if (n <= 0) return *this;
    tokens_.push_back(num(v) + "x" + std::to_string(n - 1));
    started_ = true;
    value_ = v;
    return *this;
  }
  /// `n` missing samples.
  Values& absent(int n) {
    if (n <= 0) return *this;
    tokens_.push_back("_x" + std::to_string(n));
    return *this;
  }
  std::string str() const {
    std::string out;
    for (const auto& t : tokens_) out += (out.empty() ? "" : " ") + t;
    return out;
  }

 private:
  std::vector<std::string> tokens_;
  bool started_ = false;
  double value_ = 0;
};

using Labels = std::vector<std::pair<std::string, std::string>>;

std::string series_name(const std::string& metric, const Labels& labels) {
  std::string out = metric + "{";
  for (size_t i = 0; i < labels.size(); ++i)
    out += (i ? "," : "") + labels[i].first + "=\"" + labels[i].second + "\"";
  return out + "}";
}

struct Expected {
  Labels labels;  // without alertname
  Texts texts;
};

struct Check {
  int eval_minute;
  std::string alert;
  std::vector<Expected> alerts;  // empty: must stay silent
};

struct TestGroup {
  std::string name;
  int length = 0;                                           // minutes of samples (t = 0..length)
  std::vector<std::pair<std::string, std::string>> series;  // name{labels}, values
  std::vector<Check> checks;

  void add(const std::string& metric, const Labels& labels, const Values& v) {
    series.emplace_back(series_name(metric, labels), v.str());
  }
};

constexpr int kFaultAt = 20;  // minute at which the faulty model goes wrong
constexpr double kRequestsPerMinute = 1000;
const char* const kFaultyVersion = "7";
const char* const kHealthyVersion = "3";

// The planted series of one alert for one model, healthy or faulty from kFaultAt on.
struct Planter {
  const AlertRulesOptions& o;
  TestGroup& g;

  void requests(const std::string& model, const std::string& version, bool faulty) {
    const int L = g.length;
    const double healthy_share = nice_below(o.error_rate_ / 2);
    const double faulty_share = std::min(1.0, nice_above(o.error_rate_ * 1.5));
    const double n = kRequestsPerMinute;
    auto labels = [&](const char* outcome) {
      return Labels{{"model", model}, {"version", version}, {"outcome", outcome}};
    };
    const std::string metric = "kiln_inference_requests_total";
    if (faulty) {
      g.add(metric, labels("success"),
            Values().rise(n, kFaultAt).rise(n * (1 - faulty_share), L - kFaultAt));
      g.add(metric, labels("client_error"), Values().rise(0, L));
      g.add(metric, labels("timeout"), Values().rise(0, L));
      g.add(metric, labels("server_error"),
            Values().rise(0, kFaultAt).rise(n * faulty_share, L - kFaultAt));
    } else {
      g.add(metric, labels("success"), Values().rise(n * (1 - healthy_share), L));
      g.add(metric, labels("client_error"), Values().rise(n * healthy_share, L));
      g.add(metric, labels("timeout"), Values().rise(0, L));
      g.add(metric, labels("server_error"), Values().rise(0, L));
    }
  }
  static double faulty_error_share(const AlertRulesOptions& o) {
    return std::min(1.0, nice_above(o.error_rate_ * 1.5));
  }

  // Healthy: 99.5% of requests in the highest bucket at or under the SLO, 0.5% just above.
  // Faulty: 5% in the first bucket whose lower bound is at or above the SLO.
  struct LatencyPlan {
    int fast = 0;  // bucket index (0..16, 16 = +Inf) of the requests under the SLO
    int slow = 0;  // bucket index of the faulty model's slow requests
  };
  static LatencyPlan latency_plan(const AlertRulesOptions& o) {
    const auto b = latency_bounds();
    const double slo = o.slo_p99_ms_ / 1000;
    LatencyPlan p;
    for (int i = 0; i < static_cast<int>(b.size()); ++i)
      if (b[i] <= slo) p.fast = i;
    p.slow = static_cast<int>(b.size());
    for (int i = 1; i <= static_cast<int>(b.size()); ++i)
      if (b[i - 1] >= slo) {
        p.slow = i;
        break;
      }
    return p;
  }
  // histogram_quantile(0.99) of the faulty mix (950 fast, 50 slow per 1000), as Prometheus
  // interpolates it.
  static double faulty_p99(const AlertRulesOptions& o) {
    const auto b = latency_bounds();
    const LatencyPlan p = latency_plan(o);
    if (p.slow == static_cast<int>(b.size())) return b.back();
    const double start = b[p.slow - 1], end = b[p.slow];
    return start + (end - start) * ((0.99 * 1000 - 950) / 50);
  }

  void latency(const std::string& model, const std::string& version, bool faulty) {
    const auto b = latency_bounds();
    const LatencyPlan p = latency_plan(o);
    const int L = g.length;
    for (int i = 0; i <= static_cast<int>(b.size()); ++i) {
      // Cumulative count per minute of bucket le=b[i] (i == size: +Inf).
      auto cum = [&](double fast, int slow_idx, double slow) {
        return (i >= p.fast ? fast : 0) + (i >= slow_idx ? slow : 0);
      };
      const double healthy = cum(995, p.fast + 1, 5);
      const double bad = cum(950, p.slow, 50);
      const std::string le = i == static_cast<int>(b.size()) ? "+Inf" : short_num(b[i]);
      Labels labels{{"model", model}, {"version", version}, {"le", le}};
      Values v;
      if (faulty)
        v.rise(healthy, kFaultAt).rise(bad, L - kFaultAt);
      else
        v.rise(healthy, L);
      g.add("kiln_inference_request_duration_seconds_bucket", labels, v);
    }
  }

  void gauge(const std::string& metric, const Labels& labels, double healthy, double bad,
             bool faulty) {
    Values v;
    if (faulty)
      v.hold(healthy, kFaultAt + 1).hold(bad, g.length - kFaultAt);
    else
      v.hold(healthy, g.length + 1);
    g.add(metric, labels, v);
  }

  static double drift_share_bad(const AlertRulesOptions& o) {
    return std::min(1.0, nice_above(o.drift_share_ * 1.5));
  }
  void drift_share(const std::string& model, const std::string& version, bool faulty) {
    gauge("kiln_drift_share", {{"model", model}, {"version", version}},
          nice_below(o.drift_share_ / 2), drift_share_bad(o), faulty);
  }
  static double psi_bad(double threshold) { return nice_above(threshold * 1.5); }
  void feature_psi(const std::string& model, const std::string& version, bool faulty) {
    const double ok = nice_below(o.psi_ / 2);
    gauge("kiln_feature_psi", {{"model", model}, {"version", version}, {"feature", "age"}}, ok, ok,
          false);
    gauge("kiln_feature_psi", {{"model", model}, {"version", version}, {"feature", "income"}}, ok,
          psi_bad(o.psi_), faulty);
  }
  void prediction_psi(const std::string& model, const std::string& version, bool faulty) {
    gauge("kiln_prediction_psi", {{"model", model}, {"version", version}},
          nice_below(o.prediction_psi_ / 2), psi_bad(o.prediction_psi_), faulty);
  }

  static constexpr double kReferenceAccuracy = 0.95;
  static double accuracy_bad(const AlertRulesOptions& o) {
    return round3(kReferenceAccuracy - o.accuracy_margin_ - 0.1);
  }
  void accuracy(const std::string& model, const std::string& version, bool faulty, int64_t rows) {
    const Labels labels{{"model", model}, {"version", version}};
    gauge("kiln_reference_accuracy", labels, kReferenceAccuracy, kReferenceAccuracy, false);
    gauge("kiln_live_accuracy", labels, kReferenceAccuracy - nice_below(o.accuracy_margin_ / 2),
          accuracy_bad(o), faulty);
    labelled_rows(model, version, rows);
  }
  void labelled_rows(const std::string& model, const std::string& version, int64_t rows) {
    gauge("kiln_live_labelled_rows", {{"model", model}, {"version", version}},
          static_cast<double>(rows), static_cast<double>(rows), false);
  }

  static constexpr double kReferenceCalibrationError = 0.03;
  static double calibration_bad(const AlertRulesOptions& o) {
    return round3(kReferenceCalibrationError + o.calibration_margin_ + 0.1);
  }
  /// The calibration errors only: the labelled rows come from accuracy() or labelled_rows().
  void calibration(const std::string& model, const std::string& version, bool faulty) {
    const Labels labels{{"model", model}, {"version", version}};
    gauge("kiln_reference_calibration_error", labels, kReferenceCalibrationError,
          kReferenceCalibrationError, false);
    gauge("kiln_live_calibration_error", labels,
          round3(kReferenceCalibrationError + nice_below(o.calibration_margin_ / 2)),
          calibration_bad(o), faulty);
  }

  void loaded(const std::string& model, int from_minute = 0) {
    g.add("kiln_model_loads_total", {{"model", model}},
          Values().absent(from_minute).hold(1, g.length - from_minute + 1));
  }
  void no_load_failures(const std::string& model) {
    g.add("kiln_model_load_failures_total", {{"model", model}}, Values().hold(0, g.length + 1));
  }

  void memory(const std::string& instance, const std::string& job, bool faulty, bool kiln) {
    const Labels labels{{"instance", instance}, {"job", job}};
    gauge("process_resident_memory_bytes", labels, std::round(o.memory_bytes_ / 2),
          std::round(o.memory_bytes_ * 2), faulty);
    if (kiln)
      g.add("kiln_model_loads_total", {{"instance", instance}, {"job", job}, {"model", "healthy"}},
            Values().hold(1, g.length + 1));
  }
};

Labels mv(const std::string& severity, const std::string& model, const std::string& version) {
  return {{"severity", severity}, {"model", model}, {"version", version}};
}

std::vector<TestGroup> make_tests(const AlertRulesOptions& o) {
  const int w = o.rate_window_minutes_;
  std::vector<TestGroup> groups;
  const std::string healthy = "healthy", faulty = "faulty";
  const std::string hv = kHealthyVersion, fv = kFaultyVersion;

  // Fire times: the whole window inside the fault, then `for`, then a margin.
  const int t_error = kFaultAt + w + o.error_for_minutes_ + 5;
  const int t_latency = kFaultAt + w + o.latency_for_minutes_ + 5;
  const int t_drift = kFaultAt + o.drift_for_minutes_ + 5;
  const int t_accuracy = kFaultAt + o.accuracy_for_minutes_ + 5;
  const int lw = o.load_failure_window_minutes_;
  const int t_load = kFaultAt + 1 + (lw - 1) / 2;
  const int t_load_over = kFaultAt + 1 + lw + 1;
  const int t_idle = kFaultAt + o.no_traffic_minutes_ + 5;
  const int t_memory = kFaultAt + o.memory_for_minutes_ + 5;
  const bool memory = o.memory_bytes_ > 0;
  const std::vector<std::string> all_alerts = [&] {
    std::vector<std::string> names;
    for (const Rule& r : make_rules(o)) names.push_back(r.alert);
    return names;
  }();

  {
    TestGroup g;
    g.name = "healthy server: no alert fires";
    const int t_end =
        std::max({t_error, t_latency, t_drift, t_accuracy, t_load_over, t_idle, t_memory});
    g.length = t_end + 5;
    Planter p{o, g};
    p.requests(healthy, hv, false);
    p.latency(healthy, hv, false);
    p.drift_share(healthy, hv, false);
    p.feature_psi(healthy, hv, false);
    p.prediction_psi(healthy, hv, false);
    p.accuracy(healthy, hv, false, o.min_labelled_rows_ * 3);
    p.calibration(healthy, hv, false);
    p.loaded(healthy);
    p.no_load_failures(healthy);
    if (memory) p.memory("10.0.0.1:8080", "kiln", false, true);
    for (int t : {kFaultAt, t_end})
      for (const auto& a : all_alerts) g.checks.push_back({t, a, {}});
    groups.push_back(std::move(g));
  }
  {
    TestGroup g;
    g.name = "KilnHighErrorRate: " + humanize_percentage(Planter::faulty_error_share(o)) +
             " errors fire, " + humanize_percentage(nice_below(o.error_rate_ / 2)) + " do not";
    g.length = t_error + 5;
    Planter p{o, g};
    p.requests(healthy, hv, false);
    p.requests(faulty, fv, true);
    g.checks.push_back({kFaultAt, "KilnHighErrorRate", {}});
    g.checks.push_back(
        {t_error,
         "KilnHighErrorRate",
         {{mv("page", faulty, fv),
           error_rate_texts(o, faulty, fv, humanize_percentage(Planter::faulty_error_share(o)))}}});
    groups.push_back(std::move(g));
  }
  {
    TestGroup g;
    g.name = "KilnHighLatencyP99: 5% slow requests fire, 0.5% do not";
    g.length = t_latency + 5;
    Planter p{o, g};
    p.latency(healthy, hv, false);
    p.latency(faulty, fv, true);
    g.checks.push_back({kFaultAt, "KilnHighLatencyP99", {}});
    g.checks.push_back(
        {t_latency,
         "KilnHighLatencyP99",
         {{mv("page", faulty, fv),
           latency_texts(o, faulty, fv, humanize_duration(Planter::faulty_p99(o)))}}});
    groups.push_back(std::move(g));
  }
  {
    TestGroup g;
    g.name = "KilnDataDrift: drift share " + humanize_percentage(Planter::drift_share_bad(o)) +
             " fires, " + humanize_percentage(nice_below(o.drift_share_ / 2)) + " does not";
    g.length = t_drift + 5;
    Planter p{o, g};
    p.drift_share(healthy, hv, false);
    p.drift_share(faulty, fv, true);
    g.checks.push_back({kFaultAt, "KilnDataDrift", {}});
    g.checks.push_back(
        {t_drift,
         "KilnDataDrift",
         {{mv("ticket", faulty, fv),
           data_drift_texts(o, faulty, fv, humanize_percentage(Planter::drift_share_bad(o)))}}});
    groups.push_back(std::move(g));
  }
  {
    TestGroup g;
    g.name = "KilnFeatureDrift: one feature's PSI " + go_printf_3g(Planter::psi_bad(o.psi_)) +
             " fires, " + go_printf_3g(nice_below(o.psi_ / 2)) + " does not";
    g.length = t_drift + 5;
    Planter p{o, g};
    p.feature_psi(healthy, hv, false);
    p.feature_psi(faulty, fv, true);
    Labels labels = mv("ticket", faulty, fv);
    labels.emplace_back("feature", "income");
    g.checks.push_back({kFaultAt, "KilnFeatureDrift", {}});
    g.checks.push_back({t_drift,
                        "KilnFeatureDrift",
                        {{labels, feature_drift_texts(o, faulty, fv, "income",
                                                      go_printf_3g(Planter::psi_bad(o.psi_)))}}});
    groups.push_back(std::move(g));
  }
  {
    TestGroup g;
    g.name = "KilnPredictionDrift: prediction PSI " +
             go_printf_3g(Planter::psi_bad(o.prediction_psi_)) + " fires, " +
             go_printf_3g(nice_below(o.prediction_psi_ / 2)) + " does not";
    g.length = t_drift + 5;
    Planter p{o, g};
    p.prediction_psi(healthy, hv, false);
    p.prediction_psi(faulty, fv, true);
    g.checks.push_back({kFaultAt, "KilnPredictionDrift", {}});
    g.checks.push_back({t_drift,
                        "KilnPredictionDrift",
                        {{mv("ticket", faulty, fv),
                          prediction_drift_texts(
                              o, faulty, fv, go_printf_3g(Planter::psi_bad(o.prediction_psi_)))}}});
    groups.push_back(std::move(g));
  }
  {
    TestGroup g;
    g.name =
        "KilnLiveAccuracyDrop: a drop over enough labelled rows fires; a small drop, or "
        "one over too few rows, does not";
    g.length = t_accuracy + 5;
    Planter p{o, g};
    p.accuracy(healthy, hv, false, o.min_labelled_rows_ * 3);
    p.accuracy(faulty, fv, true, o.min_labelled_rows_);
    if (o.min_labelled_rows_ > 0) p.accuracy("few_labels", fv, true, o.min_labelled_rows_ - 1);
    g.checks.push_back({kFaultAt, "KilnLiveAccuracyDrop", {}});
    g.checks.push_back(
        {t_accuracy,
         "KilnLiveAccuracyDrop",
         {{mv("warning", faulty, fv),
           accuracy_texts(o, faulty, fv, humanize_percentage(Planter::accuracy_bad(o)))}}});
    groups.push_back(std::move(g));
  }
  {
    TestGroup g;
    g.name =
        "KilnCalibrationDrift: a calibration error over enough labelled rows fires; a small "
        "one, or one over too few rows, does not";
    g.length = t_accuracy + 5;
    Planter p{o, g};
    p.labelled_rows(healthy, hv, o.min_labelled_rows_ * 3);
    p.calibration(healthy, hv, false);
    p.labelled_rows(faulty, fv, o.min_labelled_rows_);
    p.calibration(faulty, fv, true);
    if (o.min_labelled_rows_ > 0) {
      p.labelled_rows("few_labels", fv, o.min_labelled_rows_ - 1);
      p.calibration("few_labels", fv, true);
    }
    g.checks.push_back({kFaultAt, "KilnCalibrationDrift", {}});
    g.checks.push_back(
        {t_accuracy,
         "KilnCalibrationDrift",
         {{mv("warning", faulty, fv),
           calibration_texts(o, faulty, fv, go_printf_3g(Planter::calibration_bad(o)))}}});
    groups.push_back(std::move(g));
  }
  {
    TestGroup g;
    g.name = "KilnModelLoadFailures: a failure fires (new counter or increase) for " + minutes(lw) +
             "; old failures do not";
    g.length = t_load_over + 5;
    Planter p{o, g};
    const std::string metric = "kiln_model_load_failures_total";
    p.no_load_failures(healthy);
    // The first failure of a model creates its counter at 1.
    g.add(metric, {{"model", faulty}}, Values().absent(kFaultAt + 1).hold(1, g.length - kFaultAt));
    // A counter that already existed goes from 0 to 1.
    g.add(metric, {{"model", "reloaded"}},
          Values().hold(0, kFaultAt + 1).hold(1, g.length - kFaultAt));
    // A failure from before the window.
    g.add(metric, {{"model", "old_failure"}}, Values().hold(1, g.length + 1));
    g.checks.push_back({kFaultAt, "KilnModelLoadFailures", {}});
    g.checks.push_back(
        {t_load,
         "KilnModelLoadFailures",
         {{{{"severity", "warning"}, {"model", faulty}}, load_failure_texts(o, faulty)},
          {{{"severity", "warning"}, {"model", "reloaded"}}, load_failure_texts(o, "reloaded")}}});
    g.checks.push_back({t_load_over, "KilnModelLoadFailures", {}});
    groups.push_back(std::move(g));
  }
  {
    TestGroup g;
    g.name = "KilnNoTraffic: a model idle for " + minutes(o.no_traffic_minutes_) +
             " fires; a busy one, or one loaded less long ago, does not";
    g.length = t_idle + 5;
    Planter p{o, g};
    const std::string metric = "kiln_inference_requests_total";
    const double n = kRequestsPerMinute;
    p.loaded(healthy);
    g.add(metric, {{"model", healthy}, {"version", hv}, {"outcome", "success"}},
          Values().rise(n, g.length));
    p.loaded("idle");
    g.add(metric, {{"model", "idle"}, {"version", fv}, {"outcome", "success"}},
          Values().rise(n, kFaultAt).rise(0, g.length - kFaultAt));
    // Loaded no_traffic_minutes - 1 before the check, never asked anything (no success series).
    p.loaded("new", t_idle - (o.no_traffic_minutes_ - 1));
    g.checks.push_back({kFaultAt, "KilnNoTraffic", {}});
    g.checks.push_back(
        {t_idle,
         "KilnNoTraffic",
         {{{{"severity", "warning"}, {"model", "idle"}}, no_traffic_texts(o, "idle")}}});
    groups.push_back(std::move(g));
  }
  if (memory) {
    TestGroup g;
    g.name = "KilnHighMemory: a kiln serve process over " + gib(o.memory_bytes_) +
             " fires; another process does not";
    g.length = t_memory + 5;
    Planter p{o, g};
    p.memory("10.0.0.1:8080", "kiln", false, true);
    p.memory("10.0.0.2:8080", "kiln", true, true);
    p.memory("10.0.0.9:9100", "node", true, false);
    g.checks.push_back({kFaultAt, "KilnHighMemory", {}});
    g.checks.push_back({t_memory,
                        "KilnHighMemory",
                        {{{{"severity", "warning"}, {"instance", "10.0.0.2:8080"}, {"job", "kiln"}},
                          memory_texts(o, "10.0.0.2:8080", "kiln")}}});
    groups.push_back(std::move(g));
  }
  return groups;
}

}  // namespace

Status AlertRulesOptions::validate() const {
  auto bad = [](const std::string& field, const std::string& why) {
    return Status::InvalidArgument("alert rules: " + field + " " + why);
  };
  auto in_open01 = [](double v) { return std::isfinite(v) && v > 0 && v < 1; };
  const auto b = latency_bounds();
  if (!(slo_p99_ms_ >= b.front() * 1000 && slo_p99_ms_ < b.back() * 1000))
    return bad("slo_p99_ms " + go_g(slo_p99_ms_, 6),
               "must be in [" + go_g(b.front() * 1000, 6) + ", " + go_g(b.back() * 1000, 6) +
                   ") ms, the range of kiln_inference_request_duration_seconds' buckets");
  if (!in_open01(error_rate_))
    return bad("error_rate " + go_g(error_rate_, 6), "must be in (0, 1)");
  if (!in_open01(drift_share_))
    return bad("drift_share " + go_g(drift_share_, 6), "must be in (0, 1)");
  if (!(std::isfinite(psi_) && psi_ > 0)) return bad("psi " + go_g(psi_, 6), "must be > 0");
  if (!(std::isfinite(prediction_psi_) && prediction_psi_ > 0))
    return bad("prediction_psi " + go_g(prediction_psi_, 6), "must be > 0");
  if (!(accuracy_margin_ >= 0 && accuracy_margin_ <= 0.5))
    return bad("accuracy_margin " + go_g(accuracy_margin_, 6), "must be in [0, 0.5]");
  if (!(calibration_margin_ >= 0 && calibration_margin_ <= 0.5))
    return bad("calibration_margin " + go_g(calibration_margin_, 6), "must be in [0, 0.5]");
  if (min_labelled_rows_ < 0)
    return bad("min_labelled_rows " + std::to_string(min_labelled_rows_), "must be >= 0");
  if (!(std::isfinite(memory_bytes_) && memory_bytes_ >= 0))
    return bad("memory_bytes " + go_g(memory_bytes_, 6), "must be >= 0 (0: no memory alert)");
  constexpr int kDay = 24 * 60;
  const std::pair<const char*, int> windows[] = {
      {"no_traffic_minutes", no_traffic_minutes_},
      {"rate_window_minutes", rate_window_minutes_},
      {"load_failure_window_minutes", load_failure_window_minutes_}};
  for (const auto& [name, v] : windows)
    if (v < 1 || v > kDay)
      return bad(std::string(name) + " " + std::to_string(v), "must be in [1, 1440]");
  const std::pair<const char*, int> fors[] = {{"error_for_minutes", error_for_minutes_},
                                              {"latency_for_minutes", latency_for_minutes_},
                                              {"drift_for_minutes", drift_for_minutes_},
                                              {"accuracy_for_minutes", accuracy_for_minutes_},
                                              {"memory_for_minutes", memory_for_minutes_}};
  for (const auto& [name, v] : fors)
    if (v < 0 || v > kDay)
      return bad(std::string(name) + " " + std::to_string(v), "must be in [0, 1440]");
  return Status::Ok();
}

Json AlertRulesOptions::to_json() const {
  Json j;
  j["slo_p99_ms"] = slo_p99_ms_;
  j["error_rate"] = error_rate_;
  j["drift_share"] = drift_share_;
  j["psi"] = psi_;
  j["prediction_psi"] = prediction_psi_;
  j["accuracy_margin"] = accuracy_margin_;
  j["calibration_margin"] = calibration_margin_;
  j["min_labelled_rows"] = min_labelled_rows_;
  j["no_traffic_minutes"] = no_traffic_minutes_;
  j["rate_window_minutes"] = rate_window_minutes_;
  j["load_failure_window_minutes"] = load_failure_window_minutes_;
  j["memory_bytes"] = memory_bytes_;
  j["error_for_minutes"] = error_for_minutes_;
  j["latency_for_minutes"] = latency_for_minutes_;
  j["drift_for_minutes"] = drift_for_minutes_;
  j["accuracy_for_minutes"] = accuracy_for_minutes_;
  j["memory_for_minutes"] = memory_for_minutes_;
  return j;
}

std::string AlertRulesOptions::to_string() const { return to_json().dump(); }

std::string alert_rules_yaml(const AlertRulesOptions& options) {
  check_valid(options);
  std::string out;
  out += "# Prometheus alerting rules for kiln serve, generated by kiln (alert_rules_yaml).\n";
  out += "# Check: promtool check rules FILE. Options: " + options.to_string() + "\n";
  out += "groups:\n  - name: kiln-serve\n    rules:\n";
  for (const Rule& r : make_rules(options)) {
    out += "      - alert: " + r.alert + "\n";
    out += "        expr: |-\n";
    size_t start = 0;
    while (start <= r.expr.size()) {
      size_t end = r.expr.find('\n', start);
      if (end == std::string::npos) end = r.expr.size();
      out += "          " + r.expr.substr(start, end - start) + "\n";
      start = end + 1;
    }
    if (r.for_minutes > 0) out += "        for: " + minutes(r.for_minutes) + "\n";
    out += "        labels:\n          severity: " + r.severity + "\n";
    out += "        annotations:\n";
    out += "          summary: " + sq(r.texts.summary) + "\n";
    out += "          description: " + sq(r.texts.description) + "\n";
  }
  return out;
}

std::string alert_rules_test_yaml(const AlertRulesOptions& options,
                                  const std::string& rules_file_name) {
  check_valid(options);
  std::string out;
  out += "# promtool unit tests for the kiln serve alerting rules, generated by kiln\n";
  out +=
      "# (alert_rules_test_yaml). Run: promtool test rules FILE. Options: " + options.to_string() +
      "\n";
  out += "rule_files:\n  - " + sq(rules_file_name) + "\n";
  out += "evaluation_interval: 1m\n";
  out += "tests:\n";
  for (const TestGroup& g : make_tests(options)) {
    out += "  - name: " + sq(g.name) + "\n";
    out += "    interval: 1m\n";
    out += "    input_series:\n";
    for (const auto& [series, values] : g.series) {
      out += "      - series: " + sq(series) + "\n";
      out += "        values: " + sq(values) + "\n";
    }
    out += "    alert_rule_test:\n";
    for (const Check& c : g.checks) {
      out += "      - eval_time: " + minutes(c.eval_minute) + "\n";
      out += "        alertname: " + c.alert + "\n";
      if (c.alerts.empty()) {
        out += "        exp_alerts: []\n";
        continue;
      }
      out += "        exp_alerts:\n";
      for (const Expected& e : c.alerts) {
        out += "          - exp_labels:\n";
        for (const auto& [k, v] : e.labels) out += "              " + k + ": " + sq(v) + "\n";
        out += "            exp_annotations:\n";
        out += "              summary: " + sq(e.texts.summary) + "\n";
        out += "              description: " + sq(e.texts.description) + "\n";
      }
    }
  }
  return out;
}

}  // namespace kiln::monitor
