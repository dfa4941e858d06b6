#pragma once

// Prometheus alerting rules for `kiln serve`, and a `promtool test rules` file that proves them.
//
// The alerts (group "kiln-serve"; labels are those left by the aggregation in each expression):
//   KilnHighErrorRate      {model, version}  page     Share of non-success inference requests
//                          (client_error, timeout, server_error) over the rate window is above
//                          error_rate.
//   KilnHighLatencyP99     {model, version}  page     p99 of
//   kiln_inference_request_duration_seconds,
//                          from the histogram buckets over the rate window, is above slo_p99_ms
//                          (compared in seconds; interpolated inside a bucket, as
//                          histogram_quantile does).
//   KilnDataDrift          {model, version}  ticket   kiln_drift_share (share of input features
//                          flagged as drifted in the latest window) is above drift_share.
//   KilnFeatureDrift       {model, version, feature}  ticket   kiln_feature_psi of a feature is
//                          above psi.
//   KilnPredictionDrift    {model, version}  ticket   kiln_prediction_psi (predicted classes vs
//                          the reference) is above prediction_psi.
//   KilnLiveAccuracyDrop   {model, version}  warning  kiln_live_accuracy is more than
//                          accuracy_margin (absolute) below kiln_reference_accuracy, over at
//                          least min_labelled_rows labelled rows.
//   KilnCalibrationDrift   {model, version}  warning  kiln_live_calibration_error (a classifier's
//                          expected calibration error over the labelled rows) is more than
//                          calibration_margin above kiln_reference_calibration_error, over at
//                          least min_labelled_rows labelled rows (for accuracy_for_minutes).
//   KilnModelLoadFailures  {model}           warning  A model version failed to load within the
//                          last load_failure_window_minutes (a hot reload: the previous version
//                          keeps serving). Also fires when the failure counter first appears (its
//                          first value is already 1, which increase() alone cannot see).
//   KilnNoTraffic          {model}           warning  A model served now and at least
//                          no_traffic_minutes ago answered no successful request in the last
//                          no_traffic_minutes (models loaded more recently never fire).
//   KilnHighMemory         {instance, job}   warning  Only when memory_bytes > 0: resident memory
//                          of a `kiln serve` process (a target exporting kiln_model_loads_total)
//                          is above memory_bytes.
// Every alert carries annotations `summary` and `description`.

#include <cstdint>
#include <string>

#include "kiln/core/json.h"
#include "kiln/core/status.h"

namespace kiln::monitor {

/// Thresholds and durations of the alerting rules. Every value has a default; durations are
/// whole minutes (a `for` of 0 fires at the first evaluation that matches).
///
///   auto opts = AlertRulesOptions().slo_p99_ms(100).error_rate(0.02);
///   KILN_RETURN_IF_ERROR(opts.validate());
///   std::string rules = alert_rules_yaml(opts);
///   std::string tests = alert_rules_test_yaml(opts, "kiln-alerts.yml");
struct AlertRulesOptions {
  /// p99 latency objective in milliseconds. Must lie within the server's histogram buckets
  /// (0.05 ms .. 1638.4 ms): above the top finite bucket histogram_quantile cannot tell.
  AlertRulesOptions& slo_p99_ms(double v) {
    slo_p99_ms_ = v;
    return *this;
  }
  /// Share (0..1, exclusive) of non-success requests that fires KilnHighErrorRate.
  AlertRulesOptions& error_rate(double v) {
    error_rate_ = v;
    return *this;
  }
  /// Share (0..1, exclusive) of drifted input features that fires KilnDataDrift.
  AlertRulesOptions& drift_share(double v) {
    drift_share_ = v;
    return *this;
  }
  /// PSI of one feature above which KilnFeatureDrift fires.
  AlertRulesOptions& psi(double v) {
    psi_ = v;
    return *this;
  }
  /// PSI of the predicted-class distribution above which KilnPredictionDrift fires.
  AlertRulesOptions& prediction_psi(double v) {
    prediction_psi_ = v;
    return *this;
  }
  /// Absolute accuracy drop below the bundle's test accuracy that fires KilnLiveAccuracyDrop
  /// (0 .. 0.5).
  AlertRulesOptions& accuracy_margin(double v) {
    accuracy_margin_ = v;
    return *this;
  }
  /// Rise of the live expected calibration error above the bundle's test one that fires
  /// KilnCalibrationDrift (0 .. 0.5).
  AlertRulesOptions& calibration_margin(double v) {
    calibration_margin_ = v;
    return *this;
  }
  /// Fewest labelled rows behind kiln_live_accuracy for KilnLiveAccuracyDrop to fire.
  AlertRulesOptions& min_labelled_rows(int64_t v) {
    min_labelled_rows_ = v;
    return *this;
  }
  /// Minutes without a successful request that fire KilnNoTraffic.
  AlertRulesOptions& no_traffic_minutes(int v) {
    no_traffic_minutes_ = v;
    return *this;
  }
  /// Window of rate() in the error-rate and latency alerts, in minutes.
  AlertRulesOptions& rate_window_minutes(int v) {
    rate_window_minutes_ = v;
    return *this;
  }
  /// Window in which a load failure keeps KilnModelLoadFailures firing, in minutes.
  AlertRulesOptions& load_failure_window_minutes(int v) {
    load_failure_window_minutes_ = v;
    return *this;
  }
  /// Resident memory (bytes) of a kiln serve process that fires KilnHighMemory; 0: no such rule.
  AlertRulesOptions& memory_bytes(double v) {
    memory_bytes_ = v;
    return *this;
  }
  /// `for` of KilnHighErrorRate, in minutes.
  AlertRulesOptions& error_for_minutes(int v) {
    error_for_minutes_ = v;
    return *this;
  }
  /// `for` of KilnHighLatencyP99, in minutes.
  AlertRulesOptions& latency_for_minutes(int v) {
    latency_for_minutes_ = v;
    return *this;
  }
  /// `for` of KilnDataDrift, KilnFeatureDrift and KilnPredictionDrift, in minutes.
  AlertRulesOptions& drift_for_minutes(int v) {
    drift_for_minutes_ = v;
    return *this;
  }
  /// `for` of KilnLiveAccuracyDrop, in minutes.
  AlertRulesOptions& accuracy_for_minutes(int v) {
    accuracy_for_minutes_ = v;
    return *this;
  }
  /// `for` of KilnHighMemory, in minutes.
  AlertRulesOptions& memory_for_minutes(int v) {
    memory_for_minutes_ = v;
    return *this;
  }

  /// InvalidArgument naming the field for a value out of its range (see each setter).
  Status validate() const;
  /// Every field, for run records.
  Json to_json() const;
  std::string to_string() const;

  double slo_p99_ms_ = 50;
  double error_rate_ = 0.01;
  double drift_share_ = 0.3;
  double psi_ = 0.2;
  double prediction_psi_ = 0.2;
  double accuracy_margin_ = 0.05;
  double calibration_margin_ = 0.05;
  int64_t min_labelled_rows_ = 100;
  int no_traffic_minutes_ = 10;
  int rate_window_minutes_ = 5;
  int load_failure_window_minutes_ = 10;
  double memory_bytes_ = 0;
  int error_for_minutes_ = 5;
  int latency_for_minutes_ = 10;
  int drift_for_minutes_ = 15;
  int accuracy_for_minutes_ = 15;
  int memory_for_minutes_ = 10;
};

/// The alerting rules file (YAML, one group "kiln-serve"), accepted by `promtool check rules`.
/// Deterministic: the same options give the same bytes. Throws std::logic_error (KILN_CHECK) when
/// `options` fail validate(): callers validate user input first.
std::string alert_rules_yaml(const AlertRulesOptions& options);

/// A `promtool test rules` file for the rules alert_rules_yaml(options) gives, read from
/// `rules_file_name` (resolved by promtool relative to the test file's directory). One test group
/// plants a healthy server and expects every alert silent; then, for each alert, a group plants
/// a faulty model beside healthy ones and expects exactly the faulty alert(s), with their labels
/// and annotations, and silence before the fault. Planted values derive from the options, so the
/// file passes for any valid options and fails for rules built with other thresholds.
/// Throws like alert_rules_yaml.
std::string alert_rules_test_yaml(const AlertRulesOptions& options,
                                  const std::string& rules_file_name);

}  // namespace kiln::monitor
