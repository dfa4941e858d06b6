#pragma once
// Live monitoring of one served model version: the drift of its inputs and predictions over a
// sliding window against the reference profile its bundle recorded at training, the quality of
// its inputs, and its live accuracy from feedback (ground truth joined to logged predictions by
// request id). Torch-free. Results go to /metrics (gauges updated here) and to the JSON endpoint
// GET /v2/models/NAME/monitor.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "kiln/core/expected.h"
#include "kiln/core/json.h"
#include "kiln/monitor/drift.h"
#include "kiln/monitor/metrics.h"
#include "kiln/serve/prediction_memory.h"

namespace kiln::serve {

/// Options of LiveMonitor.
struct LiveMonitorOptions {
  int64_t window = 1000;  ///< rows in the sliding drift window, and labelled rows for accuracy
  /// Drift is recomputed at most this often (and only after new rows): its cost stays off the
  /// request path's budget (about a millisecond per recompute).
  std::chrono::milliseconds recompute_interval{1000};
  int64_t remembered_predictions = 100000;  ///< predictions kept for feedback, oldest dropped
  /// Rows a second whose features enter the drift window; above it the rest of that second's
  /// rows are predicted and remembered for feedback but not profiled, so monitoring costs a
  /// bounded share of a busy server (a few microseconds a 784-pixel image). 0: no limit.
  int64_t max_rows_per_second = 2000;
  /// The drift history the dashboard plots: at most one point per interval, the newest kept.
  std::chrono::milliseconds history_interval{5000};
  int64_t history_points = 360;
};

/// The metric families a LiveMonitor updates (children labelled model, version[, feature|kind]).
/// Owned by the server's registry; the pointers outlive every monitor.
struct LiveMonitorMetrics {
  monitor::GaugeFamily* drift_share = nullptr;
  monitor::GaugeFamily* feature_psi = nullptr;
  monitor::GaugeFamily* prediction_psi = nullptr;
  monitor::GaugeFamily* window_rows = nullptr;
  monitor::GaugeFamily* live_accuracy = nullptr;
  monitor::GaugeFamily* live_labelled_rows = nullptr;
  monitor::GaugeFamily* reference_accuracy = nullptr;
  /// Expected calibration error over the labelled window, and the bundle's on its test split.
  monitor::GaugeFamily* live_calibration_error = nullptr;
  monitor::GaugeFamily* reference_calibration_error = nullptr;
  monitor::CounterFamily* quality_issues = nullptr;
  monitor::CounterFamily* feedback = nullptr;
};

/// One version's monitor. Thread-safe: record() comes from batcher threads, feedback() and
/// report() from IO threads.
class LiveMonitor {
 public:
  /// `reference` may be null (a bundle without a profile: drift "unavailable", feedback and
  /// accuracy still work). `labels` empty for regression. `reference_score`: the bundle's test
  /// accuracy (classification) or test mean absolute error (regression); < 0: unknown.
  /// `reference_calibration_error`: the bundle's test ECE (classification); < 0: unknown.
  LiveMonitor(std::string model, std::string version,
              std::shared_ptr<const monitor::ReferenceProfile> reference,
              std::vector<std::string> labels, double reference_score,
              const LiveMonitorMetrics& metrics, const LiveMonitorOptions& options,
              double reference_calibration_error = -1);

  const std::string& model() const { return model_; }
  const std::string& version() const { return version_; }
  bool has_reference() const { return reference_ != nullptr; }
  /// Whether `rows` more rows may be profiled this second (see max_rows_per_second). Lock-free.
  bool admit(int64_t rows);
  /// The monitored features of raw rows (row-major floats) and, for images, each row's
  /// intensity histogram (rows × bins), for record(). Cheap; no lock.
  void extract(const float* x, int64_t rows, std::vector<double>* features,
               std::vector<double>* intensity) const;
  /// After a forward pass: each row's features and intensity histogram (from extract), and
  /// the model's outputs: classification `predicted` + `confidence`, regression `predictions`;
  /// `id` names the request (its rows are remembered as id, or id#0, id#1, ... for a batch).
  void record(const std::string& id, std::vector<double> features,
              const std::vector<double>& intensity, const std::vector<int64_t>& predicted,
              const std::vector<double>& confidence, const std::vector<double>& predictions);
  /// Counts an input refused or flagged before inference ("nan", "inf").
  void count_quality_issue(const std::string& kind, double n = 1);

  /// Ground truth for a remembered prediction: a class name or index (classification) or a
  /// number (regression). "duplicate" when that id was labelled before (nothing changes);
  /// NotFound for an unknown or forgotten id; InvalidArgument for a truth of the wrong kind.
  Expected<std::string> feedback(const std::string& id, const Json& truth);

  /// The latest drift report, live accuracy (and a classifier's calibration error), counts and the
  /// drift history ("history": per point t, rows_total, drift_share, prediction_psi, live, and
  /// feature_psi per feature), as JSON; recomputes the drift first when rows arrived since (so a
  /// caller sees the current window).
  Json report();

 private:
  void recompute_locked();
  void append_history_locked(const monitor::DriftReport& report);
  /// Live accuracy (classification) or MAE (regression) over the labelled window; NaN: none.
  double live_score_locked() const;
  Json history_json_locked() const;

  const std::string model_, version_;
  const std::shared_ptr<const monitor::ReferenceProfile> reference_;
  const std::vector<std::string> labels_;
  const LiveMonitorOptions options_;
  const LiveMonitorMetrics metrics_;

  std::atomic<int64_t> admit_second_{-1};
  std::atomic<int64_t> admitted_rows_{0};
  std::atomic<int64_t> skipped_rows_{0};

  std::mutex mu_;
  size_t feature_count_ = 0;
  // The sliding window as flat rings of `window` rows (no allocation per row): features
  // (feature_count_ per row), intensity histograms (images, kIntensityBins per row) and outputs.
  std::vector<double> ring_features_, ring_intensity_, ring_confidence_, ring_predictions_;
  std::vector<int64_t> ring_predicted_;
  size_t ring_next_ = 0;    ///< where the next row goes
  size_t ring_filled_ = 0;  ///< rows held (<= window)
  size_t intensity_bins_ = 0;
  int64_t rows_total_ = 0;
  int64_t rows_since_recompute_ = 0;
  std::chrono::steady_clock::time_point last_recompute_{};
  std::optional<monitor::DriftReport> last_report_;
  int64_t out_of_range_total_ = 0, out_of_vocabulary_total_ = 0;
  int64_t missing_total_ = 0;
  int64_t windows_checked_ = 0, windows_drifted_ = 0;

  /// One point of the drift history (wall-clock time, for the dashboard's time axis).
  struct HistoryPoint {
    double unix_seconds = 0;
    int64_t rows_total = 0;
    double drift_share = 0, prediction_psi = 0;
    double live_score = 0;  ///< NaN: no labelled rows yet
    std::vector<double> feature_psi;
  };
  std::deque<HistoryPoint> history_;
  std::chrono::steady_clock::time_point last_history_{};

  PredictionMemory remembered_;
  std::deque<double> labelled_scores_;  ///< 1/0 correct (classification) or |error| (regression)
  /// Classification, the same rows: each one's calibration bin and (right − confidence), and
  /// their sums per bin, kept as rows enter and leave the window (O(1) a feedback).
  std::deque<std::pair<int64_t, double>> labelled_calibration_;
  std::vector<double> calibration_gap_;
  int64_t labelled_total_ = 0;
  double reference_score_ = -1;  ///< test accuracy, or test MAE for regression
  double reference_calibration_error_ = -1;
  /// Expected calibration error over the labelled window (classification); NaN: none.
  double live_calibration_error_locked() const;
};

}  // namespace kiln::serve
